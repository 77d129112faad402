//===- DiskCache.cpp - The on-disk kernel cache ---------------------------===//

#include "DiskCache.h"
#include "Sha256.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tilt::detail {

namespace {

const char *nonEmptyEnv(const char *name) {
  const char *v = std::getenv(name);
  return v && *v ? v : nullptr;
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

std::string cacheFileName(std::string_view canonicalSpec,
                          std::string_view config, std::string_view target,
                          std::string_view compilerFingerprint,
                          std::string_view tiltVersion, int abiVersion) {
  // Newlines separate the parts so that no two different keys concatenate to
  // the same text (none of the parts contains a newline).
  std::string text =
      fmt::format("{}\n{}\n{}\n{}\n{}\n{}", canonicalSpec, config, target,
                  compilerFingerprint, tiltVersion, abiVersion);
  return sha256Hex(text) + ".so";
}

std::string writeFileAtomically(const std::string &path,
                                std::string_view bytes) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  // A dot name: listings and globs for "*.so" never see a temp file.
  std::string temp = dir + "/.tmp-XXXXXX";
  int fd = mkstemp(temp.data()); // mode 0600
  if (fd < 0)
    return fmt::format("cache: cannot create a file in {}: {}", dir,
                       std::strerror(errno));
  auto fail = [&](const char *what) {
    std::string err = fmt::format("cache: cannot {} {}: {}", what, path,
                                  std::strerror(errno));
    if (fd >= 0)
      close(fd);
    unlink(temp.c_str());
    return err;
  };
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return fail("write");
    }
    done += size_t(n);
  }
  int rc = close(fd);
  fd = -1;
  if (rc != 0)
    return fail("write");
  if (rename(temp.c_str(), path.c_str()) != 0)
    return fail("rename a temp file to");
  return {};
}

} // namespace tilt::detail
