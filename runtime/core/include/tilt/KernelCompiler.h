//===- KernelCompiler.h - Targets, tile configs, the compiler seam -*- C++
//-*-===//
//
// The vocabulary the runtime, the tools and the compiler share about *how* a
// kernel is built: the target, the tile configuration (mirrored by the
// dialect's #tilt.tile_config) and the interface through which the runtime
// reaches a compiler on a cache miss. No LLVM/MLIR dependency.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_KERNELCOMPILER_H
#define TILT_KERNELCOMPILER_H

#include "tilt/Spec.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace tilt {

enum class Target { CPU, CUDA };
std::string_view toString(Target t);

/// How a kernel is tiled (mirrors #tilt.tile_config). An empty variant asks
/// for the compiler's default.
struct TileConfig {
  std::string
      variant; ///< cpu_avx2 | cpu_avx512 | cpu_amx | gpu_sm80 | gpu_sm90a
  int64_t blockM = 0, blockN = 0, numWarps = 0, numStages = 0;
  bool isDefault() const { return variant.empty(); }
  std::string str() const; ///< canonical "variant=..;block_m=..;..."
};

/// The compiler as the runtime sees it. Implemented in compiler/.
class KernelCompiler {
public:
  virtual ~KernelCompiler();
  /// Everything about the compiler and target that changes the binary
  /// (versions, CPU features, ...); part of every cache key.
  virtual std::string fingerprint(Target target) const = 0;
  /// The configuration used when the caller gives none.
  virtual TileConfig defaultConfig(const AttentionSpec &spec,
                                   Target target) const = 0;
  /// Compiles; on success fills `artifact` (a shared object for CPU) and
  /// returns "", else a one-line error.
  virtual std::string compile(const AttentionSpec &spec,
                              const TileConfig &config, Target target,
                              std::string &artifact) = 0;
};

} // namespace tilt

#endif // TILT_KERNELCOMPILER_H
