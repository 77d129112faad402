//===- FuzzSupport.h - Helpers shared by the libFuzzer targets --*- C++ -*-===//
//
// The loaders under test read files, as they do in use: each target writes
// the input to a private scratch file (one per process, under $TMPDIR) and
// calls the real loader on it.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_FUZZ_FUZZSUPPORT_H
#define TILT_TESTS_FUZZ_FUZZSUPPORT_H

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace tilt::fuzz {

/// A directory of this process's own, created on first use.
inline const std::string &scratchDir() {
  static const std::string dir = [] {
    std::filesystem::path d = std::filesystem::temp_directory_path() /
                              ("tilt-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

/// Writes `data` to scratchDir()/`name` and returns the path.
inline std::string writeScratch(const std::string &name, const uint8_t *data,
                                size_t size) {
  std::string path = scratchDir() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char *>(data), std::streamsize(size));
  return path;
}

} // namespace tilt::fuzz

#endif // TILT_TESTS_FUZZ_FUZZSUPPORT_H
