//===- KernelBundle.h - Ahead-of-time compiled kernels ----------*- C++ -*-===//
//
// The build turns kernels/<class>.tune into a bundle directory: one shared
// object per tuned (spec, tile configuration), an index, and a copy of the
// tuning database. A runtime pointed at the bundle runs every tuned shape
// without compiling. A bundle holds native code for the machine that built
// it, so it is used only where the CPU matches (same /proc/cpuinfo model and
// flags); elsewhere the runtime ignores it and compiles as usual.
//
// CUDA kernels (tilt-bundle --target cuda) are artifacts of KernelABI.h for
// one GPU architecture, named by a `cuda` line; they are used on devices
// that can load them (sm_80: sm_80 and newer, sm_90a: sm_90), wherever the
// bundle was built.
//
// Index (text):
//   tilt-bundle 1
//   cpu <hostCpuDigest() of the building machine>   (when it has CPU kernels)
//   cuda <arch: sm_80 | sm_90a>                     (when it has CUDA kernels)
//   tilt <version>
//   <file>\t<AttentionSpec::canonical()>\t<TileConfig::str()>[\tcuda]
//
//===----------------------------------------------------------------------===//

#ifndef TILT_KERNELBUNDLE_H
#define TILT_KERNELBUNDLE_H

#include "tilt/Runtime.h"

#include <string>
#include <unordered_map>

namespace tilt {

/// The tuning class of this CPU: "x86_64-amx" (AMX-BF16 and AVX-512),
/// "x86_64-avx512", "x86_64-avx2" or "x86_64". Tuning databases are named
/// kernels/cpu-<class>.tune.
std::string hostTuningClass();

/// SHA-256 of this CPU's model name and feature flags (/proc/cpuinfo).
std::string hostCpuDigest();

struct KernelBundle {
  static constexpr int kFormat = 1;
  std::string dir;
  /// canonical spec + '\t' + config -> file name in `dir`; CPU kernels, only
  /// when this CPU built the bundle
  std::unordered_map<std::string, std::string> files;
  /// The same for CUDA kernels, all built for `cudaArch`.
  std::unordered_map<std::string, std::string> cudaFiles;
  std::string cudaArch;

  /// Reads `dir`/index. A missing index or another CPU's bundle leaves the
  /// bundle empty and returns ""; a malformed index is an error.
  static std::string load(const std::string &dir, KernelBundle &out);
  /// The path of the kernel for (spec, config, target), or "". Whether a
  /// CUDA kernel runs on the device is the caller's question (cudaArch).
  std::string find(const std::string &canonicalSpec, const TileConfig &config,
                   Target target = Target::CPU) const;
};

} // namespace tilt

#endif // TILT_KERNELBUNDLE_H
