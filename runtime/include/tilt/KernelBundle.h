//===- KernelBundle.h - Ahead-of-time compiled kernels ----------*- C++ -*-===//
//
// The build turns the tuning databases of kernels/ into a bundle directory:
// for each CPU ISA class (CpuIsa.h), one shared object per tuned (spec, tile
// configuration) cross-compiled for that class, and the class's tuning
// database. A class without a database of its own gets the nearest class's
// configurations (see tilt-bundle). A runtime pointed at the bundle uses the
// best class this CPU executes (the highest one not above the host's class),
// whichever machine built the bundle, so tuned shapes run without compiling
// on any x86-64-v3 or better CPU.
//
// CUDA kernels (tilt-bundle --target cuda) are artifacts of KernelABI.h for
// one GPU architecture, named by a `cuda` line; they are used on devices
// that can load them (sm_80: sm_80 and newer, sm_90a: sm_90), wherever the
// bundle was built.
//
// Index (text):
//   tilt-bundle 2
//   tilt <version>
//   class <cpu class> <tuning database file> [<what it was tuned on>]
//                                         (one per CPU class it holds)
//   cuda <arch: sm_80 | sm_90a>           (when it has CUDA kernels)
//   <file>\t<AttentionSpec::canonical()>\t<TileConfig::str()>\t<class|cuda>
//
//===----------------------------------------------------------------------===//

#ifndef TILT_KERNELBUNDLE_H
#define TILT_KERNELBUNDLE_H

#include "tilt/CpuIsa.h"
#include "tilt/Runtime.h"

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace tilt {

struct KernelBundle {
  static constexpr int kFormat = 2;
  std::string dir;
  /// Every CPU class the bundle holds, in index order.
  std::vector<CpuClass> classes;
  /// The class serving this CPU (the highest of `classes` not above the
  /// host's), and its tuning database's path ("" when it has none).
  std::optional<CpuClass> cpuClass;
  std::string tuningDb;
  /// Which class serves and why, or why none does, in one line.
  std::string status;
  /// canonical spec + '\t' + config -> file name in `dir`: the kernels of
  /// `cpuClass`.
  std::unordered_map<std::string, std::string> files;
  /// The same for CUDA kernels, all built for `cudaArch`.
  std::unordered_map<std::string, std::string> cudaFiles;
  std::string cudaArch;

  /// Reads `dir`/index for a CPU of class `host` (none: below x86-64-v3).
  /// A missing index leaves the bundle empty and returns ""; a malformed
  /// index is an error.
  static std::string load(const std::string &dir, KernelBundle &out,
                          std::optional<CpuClass> host);
  /// The same for this CPU (hostCpu()).
  static std::string load(const std::string &dir, KernelBundle &out);
  /// The path of the kernel for (spec, config, target), or "". Whether a
  /// CUDA kernel runs on the device is the caller's question (cudaArch).
  std::string find(const std::string &canonicalSpec, const TileConfig &config,
                   Target target = Target::CPU) const;
};

} // namespace tilt

#endif // TILT_KERNELBUNDLE_H
