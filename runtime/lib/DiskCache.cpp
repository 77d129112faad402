//===- DiskCache.cpp - The on-disk kernel cache ---------------------------===//

#include "DiskCache.h"
#include "Sha256.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace tilt::detail {

ssize_t (*cacheFileWrite)(int fd, const void *data, size_t size) = ::write;

namespace {

constexpr std::string_view kEntrySuffix = ".kernel";
constexpr std::string_view kLockSuffix = ".lock";
constexpr std::string_view kTempPrefix = ".tmp-";
constexpr std::string_view kStagePrefix = ".load-";

const char *nonEmptyEnv(const char *name) {
  const char *v = std::getenv(name);
  return v && *v ? v : nullptr;
}

bool isKey(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

/// The key in a file name "<key><suffix>", or "" for any other name.
std::string_view keyOf(std::string_view name, std::string_view suffix) {
  if (!name.ends_with(suffix))
    return {};
  name.remove_suffix(suffix.size());
  return isKey(name) ? name : std::string_view();
}

void appendLittleEndian(std::string &out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i)
    out += char(uint8_t(value >> (8 * i)));
}

uint64_t readLittleEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i)
    value |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  return value;
}

std::string entryHeader(std::string_view key, std::string_view payload) {
  std::string header(kEntryMagic, sizeof(kEntryMagic));
  appendLittleEndian(header, kEntryFormatVersion, 4);
  appendLittleEndian(header, payload.size(), 8);
  Sha256 sha;
  sha.update(payload);
  const std::array<uint8_t, 32> digest = sha.finish();
  header.append(reinterpret_cast<const char *>(digest.data()), digest.size());
  header += key;
  return header;
}

/// false with errno set on failure.
bool writeAll(int fd, std::string_view bytes) {
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = cacheFileWrite(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    done += size_t(n);
  }
  return true;
}

/// Reads up to `size` bytes (fewer if the file is shorter); false with errno
/// set on failure.
bool readAll(int fd, size_t size, std::string &out) {
  out.resize(size);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, out.data() + done, size - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    if (n == 0)
      break;
    done += size_t(n);
  }
  out.resize(done);
  return true;
}

/// Opens and flock()s `path`, creating it if needed. 0 and `fdOut` set, or an
/// errno value (EWOULDBLOCK: another process holds it and `wait` is false).
int lockFile(const std::string &path, bool wait, int &fdOut) {
  for (;;) {
    int fd =
        ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
      return errno;
    int rc;
    while ((rc = flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB)) != 0 &&
           errno == EINTR) {
    }
    if (rc != 0) {
      int err = errno;
      close(fd);
      return err;
    }
    // Lock files are deleted only by a holder. If that happened while we
    // waited, we hold a lock nobody else will look at: retry on the path's
    // current file.
    struct stat held, current;
    const bool heldOk = fstat(fd, &held) == 0;
    const bool currentOk = heldOk && stat(path.c_str(), &current) == 0;
    if (currentOk && held.st_dev == current.st_dev &&
        held.st_ino == current.st_ino) {
      fdOut = fd;
      return 0;
    }
    const int err = errno;
    close(fd);
    if (!currentOk && err != ENOENT)
      return err;
  }
}

bool olderThan(const struct timespec &t, time_t now, int seconds) {
  return now - t.tv_sec > seconds;
}

} // namespace

std::string resolveCacheDir(const std::string &explicitDir) {
  if (!explicitDir.empty())
    return explicitDir;
  if (const char *dir = nonEmptyEnv("TILT_CACHE_DIR"))
    return dir;
  // The XDG spec says to ignore relative paths here.
  if (const char *xdg = nonEmptyEnv("XDG_CACHE_HOME"); xdg && xdg[0] == '/')
    return std::string(xdg) + "/tilt";
  if (const char *home = nonEmptyEnv("HOME"))
    return std::string(home) + "/.cache/tilt";
  return {};
}

std::string resolveCacheMaxBytes(uint64_t explicitBytes, uint64_t &out) {
  out = explicitBytes ? explicitBytes : kDefaultCacheMaxBytes;
  const char *env =
      explicitBytes ? nullptr : nonEmptyEnv("TILT_CACHE_MAX_BYTES");
  if (!env)
    return {};
  const std::string_view text = env;
  uint64_t value = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  const std::string_view suffix(end, size_t(text.data() + text.size() - end));
  int shift = -1;
  if (suffix.empty())
    shift = 0;
  else if (suffix.size() == 1)
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
    case 'K':
      shift = 10;
      break;
    case 'M':
      shift = 20;
      break;
    case 'G':
      shift = 30;
      break;
    }
  if (ec != std::errc() || shift < 0 || value == 0 ||
      value > (UINT64_MAX >> shift))
    return fmt::format("TILT_CACHE_MAX_BYTES: expected a positive size in "
                       "bytes, optionally with a K, M or G suffix (e.g. "
                       "536870912 or 512M), got '{}'",
                       text);
  out = value << shift;
  return {};
}

std::string ensureDirectory(const std::string &dir) {
  if (dir.empty())
    return "cache: no cache directory (set TILT_CACHE_DIR, XDG_CACHE_HOME or "
           "HOME, or RuntimeOptions::cacheDir)";
  // Walk the path, creating each missing component.
  for (size_t pos = dir.find('/', 1);; pos = dir.find('/', pos + 1)) {
    std::string prefix = dir.substr(0, pos);
    if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST)
      return fmt::format("cache: cannot create directory {}: {}", prefix,
                         std::strerror(errno));
    if (pos == std::string::npos)
      break;
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fmt::format("cache: {} is not a directory", dir);
  return {};
}

std::string cacheKey(const CacheKeyParts &parts) {
  // Length-prefixed parts: no two different part lists give the same text,
  // whatever characters a compiler puts in its fingerprint.
  std::string text;
  auto add = [&](std::string_view part) {
    text += fmt::format("{}:", part.size());
    text += part;
    text += '\n';
  };
  add(parts.canonicalSpec);
  add(parts.config);
  add(parts.target);
  add(parts.compilerFingerprint);
  add(parts.tiltVersion);
  add(parts.tiltCommit);
  add(std::to_string(parts.abiVersion));
  return sha256Hex(text);
}

std::string encodeEntry(std::string_view key, std::string_view payload) {
  std::string entry = entryHeader(key, payload);
  entry += payload;
  return entry;
}

std::string decodeEntry(std::string_view entry, std::string_view key,
                        std::string_view &payload) {
  const std::string_view magic(kEntryMagic, sizeof(kEntryMagic));
  if (!magic.starts_with(entry.substr(0, magic.size())))
    return "bad magic (not a Tilt cache entry)";
  if (entry.size() < kEntryHeaderSize)
    return fmt::format("truncated: {} bytes, shorter than the {}-byte header",
                       entry.size(), kEntryHeaderSize);
  const uint64_t version = readLittleEndian(entry.substr(8, 4));
  if (version != kEntryFormatVersion)
    return fmt::format("format version {}, this runtime reads version {}",
                       version, kEntryFormatVersion);
  if (entry.substr(52, 64) != key)
    return "written for another key";
  const uint64_t length = readLittleEndian(entry.substr(12, 8));
  const std::string_view body = entry.substr(kEntryHeaderSize);
  if (length != body.size())
    return fmt::format("payload of {} bytes where the header says {} "
                       "(truncated or overwritten)",
                       body.size(), length);
  Sha256 sha;
  sha.update(body);
  const std::array<uint8_t, 32> digest = sha.finish();
  if (entry.substr(20, 32) !=
      std::string_view(reinterpret_cast<const char *>(digest.data()),
                       digest.size()))
    return "payload SHA-256 mismatch (corrupt)";
  payload = body;
  return {};
}

//===----------------------------------------------------------------------===//
// KeyLock, StagedFile
//===----------------------------------------------------------------------===//

KeyLock::KeyLock(KeyLock &&other) noexcept
    : fd(std::exchange(other.fd, -1)), path(std::move(other.path)) {}

KeyLock &KeyLock::operator=(KeyLock &&other) noexcept {
  if (this != &other) {
    if (fd >= 0)
      close(fd);
    fd = std::exchange(other.fd, -1);
    path = std::move(other.path);
  }
  return *this;
}

KeyLock::~KeyLock() {
  if (fd >= 0)
    close(fd); // releases the flock
}

void KeyLock::removeFile() {
  if (fd >= 0)
    unlink(path.c_str());
}

StagedFile::~StagedFile() {
  if (!filePath.empty())
    unlink(filePath.c_str());
}

//===----------------------------------------------------------------------===//
// DiskCache
//===----------------------------------------------------------------------===//

DiskCache::DiskCache(std::string dir, uint64_t maxBytes)
    : cacheDir(std::move(dir)), capBytes(maxBytes) {}

std::string DiskCache::entryPath(std::string_view key) const {
  return fmt::format("{}/{}{}", cacheDir, key, kEntrySuffix);
}

std::string DiskCache::lockPath(std::string_view key) const {
  return fmt::format("{}/{}{}", cacheDir, key, kLockSuffix);
}

std::string DiskCache::open() {
  if (std::string err = ensureDirectory(cacheDir); !err.empty())
    return err;
  struct stat st;
  if (stat(cacheDir.c_str(), &st) != 0)
    return fmt::format("cache: cannot stat directory {}: {}", cacheDir,
                       std::strerror(errno));
  if (st.st_uid != geteuid())
    return fmt::format("cache: directory {} is owned by uid {}, not by this "
                       "user (uid {}); the runtime executes the kernels in it, "
                       "so it must be yours: change its owner or use another "
                       "directory (TILT_CACHE_DIR)",
                       cacheDir, st.st_uid, geteuid());
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return fmt::format("cache: directory {} is writable by {} (mode {:04o}); "
                       "the runtime executes the kernels in it, so only its "
                       "owner may write it: chmod go-w it or use another "
                       "directory (TILT_CACHE_DIR)",
                       cacheDir,
                       (st.st_mode & S_IWGRP) && (st.st_mode & S_IWOTH)
                           ? "group and others"
                       : (st.st_mode & S_IWGRP) ? "group"
                                                : "others",
                       st.st_mode & 07777);
  if (!cleaned) {
    removeLeftovers();
    cleaned = true;
  }
  return {};
}

void DiskCache::removeLeftovers() const {
  DIR *dir = opendir(cacheDir.c_str());
  if (!dir)
    return;
  const time_t now = time(nullptr);
  std::vector<std::string> staleTemps, orphanLocks;
  while (const dirent *e = readdir(dir)) {
    const std::string_view name = e->d_name;
    struct stat st;
    if (name.starts_with(kTempPrefix) || name.starts_with(kStagePrefix)) {
      if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          olderThan(st.st_mtim, now, kStaleTempSeconds))
        staleTemps.emplace_back(name);
    } else if (std::string_view key = keyOf(name, kLockSuffix); !key.empty()) {
      if (lstat(entryPath(key).c_str(), &st) != 0)
        orphanLocks.emplace_back(key);
    }
  }
  closedir(dir);
  for (const std::string &name : staleTemps)
    unlink((cacheDir + "/" + name).c_str());
  // A lock file without an entry is left by a compile that failed or was
  // killed. Its key may be being built right now: delete it only if it is
  // free, and only if the entry is still missing once we hold it.
  for (const std::string &key : orphanLocks) {
    KeyLock lock;
    struct stat st;
    if (tryLock(key, lock) && lstat(entryPath(key).c_str(), &st) != 0)
      lock.removeFile();
  }
}

DiskCache::Lookup DiskCache::read(std::string_view key, std::string &payload,
                                  std::string &why) const {
  const std::string path = entryPath(key);
  // O_NONBLOCK: a FIFO planted here must not hang the process.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT)
      return Lookup::Missing;
    why = fmt::format("cannot open: {}", std::strerror(errno));
    return Lookup::Bad;
  }
  Lookup result = Lookup::Bad;
  struct stat st;
  std::string bytes;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (!readAll(fd, size_t(st.st_size), bytes)) {
    why = fmt::format("cannot read: {}", std::strerror(errno));
  } else {
    std::string_view body;
    why = decodeEntry(bytes, key, body);
    if (why.empty()) {
      // Used now: moves to the back of the eviction order.
      futimens(fd, nullptr);
      bytes.erase(0, kEntryHeaderSize);
      payload = std::move(bytes);
      result = Lookup::Hit;
    }
  }
  close(fd);
  return result;
}

std::string DiskCache::lock(std::string_view key, KeyLock &out) const {
  const std::string path = lockPath(key);
  int fd = -1;
  if (int err = lockFile(path, /*wait=*/true, fd))
    return fmt::format("cache: cannot lock {}: {}", path, std::strerror(err));
  out = KeyLock();
  out.fd = fd;
  out.path = path;
  return {};
}

bool DiskCache::tryLock(std::string_view key, KeyLock &out) const {
  std::string path = lockPath(key);
  int fd = -1;
  if (lockFile(path, /*wait=*/false, fd) != 0)
    return false;
  out = KeyLock();
  out.fd = fd;
  out.path = std::move(path);
  return true;
}

void DiskCache::remove(std::string_view key) const {
  unlink(entryPath(key).c_str());
}

std::string DiskCache::writeTemp(const char *prefix, std::string_view head,
                                 std::string_view body,
                                 std::string &tempPath) const {
  std::string path = fmt::format("{}/{}XXXXXX", cacheDir, prefix);
  int fd = mkostemp(path.data(), O_CLOEXEC); // mode 0600
  if (fd < 0)
    return fmt::format("cache: cannot create a file in {}: {}", cacheDir,
                       std::strerror(errno));
  bool ok = writeAll(fd, head) && writeAll(fd, body);
  int err = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    unlink(path.c_str());
    return fmt::format("cache: cannot write {}: {}", path, std::strerror(err));
  }
  tempPath = std::move(path);
  return {};
}

std::string DiskCache::write(std::string_view key,
                             std::string_view payload) const {
  // No fsync: after a power loss a torn entry fails verification and is
  // rebuilt, which is cheaper than syncing every compile.
  std::string temp;
  if (std::string err =
          writeTemp(".tmp-", entryHeader(key, payload), payload, temp);
      !err.empty())
    return err;
  const std::string path = entryPath(key);
  if (rename(temp.c_str(), path.c_str()) != 0) {
    std::string err = fmt::format("cache: cannot rename {} to {}: {}", temp,
                                  path, std::strerror(errno));
    unlink(temp.c_str());
    return err;
  }
  evict(key);
  return {};
}

std::string DiskCache::stage(std::string_view payload, StagedFile &out) const {
  // The dynamic loader hands back an already loaded library when a path
  // matches one it loaded before, so every staged name is new to this
  // process: its pid and a counter (mkostemp's suffix covers a dead process
  // with the same pid).
  static std::atomic<uint64_t> counter{0};
  const std::string prefix =
      fmt::format("{}{}-{}-", kStagePrefix, getpid(), counter++);
  std::string path;
  if (std::string err = writeTemp(prefix.c_str(), {}, payload, path);
      !err.empty())
    return err;
  out.filePath = std::move(path);
  return {};
}

int DiskCache::evict(std::string_view keep) const {
  struct Entry {
    std::string key;
    uint64_t size;
    struct timespec used;
  };
  DIR *dir = opendir(cacheDir.c_str());
  if (!dir)
    return 0;
  std::vector<Entry> entries;
  uint64_t total = 0;
  while (const dirent *e = readdir(dir)) {
    std::string_view key = keyOf(e->d_name, kEntrySuffix);
    struct stat st;
    if (key.empty() ||
        fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      continue;
    entries.push_back({std::string(key), uint64_t(st.st_size), st.st_mtim});
    total += uint64_t(st.st_size);
  }
  closedir(dir);
  if (total <= capBytes)
    return 0;
  std::sort(entries.begin(), entries.end(), [](const Entry &a, const Entry &b) {
    if (a.used.tv_sec != b.used.tv_sec)
      return a.used.tv_sec < b.used.tv_sec;
    if (a.used.tv_nsec != b.used.tv_nsec)
      return a.used.tv_nsec < b.used.tv_nsec;
    return a.key < b.key;
  });
  int evicted = 0;
  for (const Entry &e : entries) {
    if (total <= capBytes)
      break;
    KeyLock lock;
    // A busy key is being rebuilt or evicted by another process: skip it.
    if (e.key == keep || !tryLock(e.key, lock))
      continue;
    if (unlink(entryPath(e.key).c_str()) == 0)
      ++evicted;
    total -= e.size;
    lock.removeFile();
  }
  return evicted;
}

} // namespace tilt::detail
