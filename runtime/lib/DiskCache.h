//===- DiskCache.h - The on-disk kernel cache -------------------*- C++ -*-===//
//
// Artifacts live in one flat directory, each named by the SHA-256 of
// everything that changes its bytes. Files appear atomically (a private temp
// file renamed into place), so concurrent processes sharing the directory
// never load half-written kernels.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_RUNTIME_DISKCACHE_H
#define TILT_RUNTIME_DISKCACHE_H

#include <string>
#include <string_view>

namespace tilt::detail {

/// `explicitDir` if non-empty, else $TILT_CACHE_DIR, else
/// $XDG_CACHE_HOME/tilt, else $HOME/.cache/tilt ("" if none of them is set).
std::string resolveCacheDir(const std::string &explicitDir);

/// Creates `dir` and its missing parents with mode 0700 (a kernel cache is
/// code this user will execute: nobody else may write it). "" or an error.
std::string ensureDirectory(const std::string &dir);

/// The cache file name for one kernel: hex SHA-256 of the key parts, ".so".
std::string cacheFileName(std::string_view canonicalSpec,
                          std::string_view config, std::string_view target,
                          std::string_view compilerFingerprint,
                          std::string_view tiltVersion, int abiVersion);

/// Writes `bytes` to `path` (mode 0600) atomically: a temp file in the same
/// directory, then rename(). Removes the temp file on any failure.
std::string writeFileAtomically(const std::string &path,
                                std::string_view bytes);

} // namespace tilt::detail

#endif // TILT_RUNTIME_DISKCACHE_H
