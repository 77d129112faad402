//===- DiskCache.h - The on-disk kernel cache -------------------*- C++ -*-===//
//
// Artifacts live in one flat directory that only this user may write, each
// named by the SHA-256 of everything that changes its bytes:
//
//   <key>.kernel   the entry: a header, then the artifact (see encodeEntry)
//   <key>.lock     flock()ed while a process builds, replaces or evicts the
//                  entry; it lives as long as the entry
//   .tmp-*         an entry being written; renamed into place when complete
//   .load-*        a verified artifact being dlopen()ed; unlinked at once
//
// A process killed mid-write leaves a .tmp-* or .load-* file behind; the
// first lookup of a later runtime deletes those older than kStaleTempSeconds,
// and lock files without an entry.
//
// Every entry is verified (magic, format version, key, length, SHA-256 of the
// artifact) before its artifact is loaded, and loaded from a private copy of
// the verified bytes, so a corrupt, truncated or foreign file is never
// executed. Bad entries are removed and rebuilt.
//
// Processes that miss the same key serialize on its lock and re-check the
// cache once they hold it, so a kernel is compiled once, not once per
// process. A size cap evicts the least recently used entries; use is the
// entry's mtime, set when written and refreshed on every disk hit (atime is
// unreliable under noatime/relatime mounts; memory hits never touch the
// disk). Eviction only unlinks: a process that already read or loaded an
// entry keeps its copy.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_RUNTIME_DISKCACHE_H
#define TILT_RUNTIME_DISKCACHE_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace tilt::detail {

/// `explicitDir` if non-empty, else $TILT_CACHE_DIR, else
/// $XDG_CACHE_HOME/tilt, else $HOME/.cache/tilt ("" if none of them is set).
std::string resolveCacheDir(const std::string &explicitDir);

inline constexpr uint64_t kDefaultCacheMaxBytes = uint64_t(1) << 30;

/// The cache size cap: `explicitBytes` if non-zero, else
/// $TILT_CACHE_MAX_BYTES (bytes, or with a K, M or G suffix), else 1 GiB.
/// "" or a one-line error about the environment variable (`out` is then the
/// default).
std::string resolveCacheMaxBytes(uint64_t explicitBytes, uint64_t &out);

/// Creates `dir` and its missing parents with mode 0700 (a kernel cache is
/// code this user will execute: nobody else may write it). "" or an error.
std::string ensureDirectory(const std::string &dir);

/// Everything that changes a kernel's bytes.
struct CacheKeyParts {
  std::string_view canonicalSpec;
  std::string_view config;
  std::string_view target;
  std::string_view compilerFingerprint;
  std::string_view tiltVersion;
  std::string_view tiltCommit;
  int abiVersion = 0;
};

/// Hex SHA-256 over the parts: the entry's name and its key.
std::string cacheKey(const CacheKeyParts &parts);

/// Entry layout (integers little-endian):
///   [0, 8)     magic "TILTKERN"
///   [8, 12)    format version (u32)
///   [12, 20)   payload length (u64)
///   [20, 52)   SHA-256 of the payload
///   [52, 116)  the key (64 hex digits), so a misplaced file is caught
///   [116, ...) the payload: the artifact
inline constexpr char kEntryMagic[8] = {'T', 'I', 'L', 'T', 'K', 'E', 'R', 'N'};
inline constexpr uint32_t kEntryFormatVersion = 1;
inline constexpr size_t kEntryHeaderSize = 116;

/// The bytes of the entry for `key` holding `payload`.
std::string encodeEntry(std::string_view key, std::string_view payload);

/// Checks `entry` as the entry for `key`. Returns "" and points `payload`
/// into `entry`, or says what is wrong in a few words.
std::string decodeEntry(std::string_view entry, std::string_view key,
                        std::string_view &payload);

/// Every cache file is written through this (normally ::write). Tests swap in
/// a slow writer so that they can kill processes in the middle of a write.
extern ssize_t (*cacheFileWrite)(int fd, const void *data, size_t size);

/// How old a .tmp-* or .load-* file must be before DiskCache::open() takes
/// it for the leftover of a killed process and deletes it. Writes and loads
/// take milliseconds; the margin covers stopped or very slow processes.
inline constexpr int kStaleTempSeconds = 600;

/// An exclusive flock() on one key's lock file, released on destruction.
class KeyLock {
public:
  KeyLock() = default;
  KeyLock(KeyLock &&other) noexcept;
  KeyLock &operator=(KeyLock &&other) noexcept;
  ~KeyLock();

  bool held() const { return fd >= 0; }
  /// Deletes the lock file while still holding it: processes blocked on it
  /// notice (see DiskCache::lock) and start over with a fresh file.
  void removeFile();

private:
  friend class DiskCache;
  int fd = -1;
  std::string path;
};

/// A verified artifact copied to a private file for dlopen(), which needs a
/// path; the file is deleted on destruction (a loaded library stays mapped).
class StagedFile {
public:
  StagedFile() = default;
  StagedFile(const StagedFile &) = delete;
  StagedFile &operator=(const StagedFile &) = delete;
  ~StagedFile();
  const std::string &path() const { return filePath; }

private:
  friend class DiskCache;
  std::string filePath;
};

class DiskCache {
public:
  DiskCache(std::string dir, uint64_t maxBytes);

  const std::string &dir() const { return cacheDir; }
  uint64_t maxBytes() const { return capBytes; }
  std::string entryPath(std::string_view key) const;

  /// Creates the directory (0700) if missing, then refuses one owned by
  /// another user or writable by group or others: its files are code this
  /// process would execute. Called before every use, so that a directory
  /// deleted or opened up meanwhile is noticed. The first time it succeeds,
  /// deletes the stale temp files of killed processes and lock files without
  /// an entry. "" or a one-line error naming the directory and the problem.
  std::string open();

  enum class Lookup { Hit, Missing, Bad };
  /// Reads and verifies `key`'s entry. Hit: `payload` is the artifact and the
  /// entry is marked used now. Bad: `why` says what is wrong (the entry stays;
  /// remove it under its lock).
  Lookup read(std::string_view key, std::string &payload,
              std::string &why) const;

  /// Blocks until this process holds `key`'s lock. "" or an error.
  std::string lock(std::string_view key, KeyLock &out) const;

  /// Deletes `key`'s entry; hold its lock.
  void remove(std::string_view key) const;

  /// Writes `key`'s entry atomically (a temp file renamed into place), then
  /// evicts least recently used entries, never this one, until the cache
  /// fits the cap. Hold `key`'s lock. "" or an error.
  std::string write(std::string_view key, std::string_view payload) const;

  /// Copies `payload` to a fresh private file for dlopen(). "" or an error.
  std::string stage(std::string_view payload, StagedFile &out) const;

  /// Deletes least recently used entries other than `keep` until the total
  /// size is at most the cap; entries whose lock is busy are skipped.
  /// Returns how many were deleted.
  int evict(std::string_view keep) const;

private:
  std::string lockPath(std::string_view key) const;
  /// lock() without waiting: false if another process holds it.
  bool tryLock(std::string_view key, KeyLock &out) const;
  std::string lockImpl(std::string_view key, bool wait, KeyLock &out) const;
  void removeLeftovers() const;
  std::string writeTemp(const char *prefix, std::string_view head,
                        std::string_view body, std::string &tempPath) const;

  std::string cacheDir;
  uint64_t capBytes;
  bool cleaned = false;
};

} // namespace tilt::detail

#endif // TILT_RUNTIME_DISKCACHE_H
