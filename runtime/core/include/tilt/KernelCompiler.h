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
#include <optional>
#include <string>
#include <string_view>

namespace tilt {

enum class Target { CPU, CUDA };
std::string_view toString(Target t);

/// The kernel variants: how a kernel is built for a target. The dialect's
/// #tilt.tile_config variant enum mirrors it value for value (checked there).
enum class KernelVariant {
  CpuAvx2 = 0,   ///< cpu_avx2: 8-lane vectors (x86-64-v3)
  CpuAvx512 = 1, ///< cpu_avx512: 16-lane vectors (x86-64-v4)
  CpuAmx = 2,    ///< cpu_amx: AMX tile products, bf16 (x86-64-v4-amx)
  GpuSm80 = 3,   ///< gpu_sm80: cp.async + ldmatrix + mma.sync (sm_80+)
  GpuSm90a = 4,  ///< gpu_sm90a: TMA + mbarrier + wgmma (sm_90a)
  /// The decode family (few query rows against many keys): one work item
  /// per (batch, kv head), all query rows of the GQA group sharing each K/V
  /// load, vectorized along keys and head dim. 8 lanes (x86-64-v3) / 16.
  CpuDecodeAvx2 = 5,
  CpuDecodeAvx512 = 6,
  /// The backward family (ALIBI.md "Backward"): dQ, dK, dV and the fused
  /// slope gradient, deterministic (no atomics). 8 lanes (x86-64-v3) / 16.
  CpuBwdAvx2 = 7,
  CpuBwdAvx512 = 8,
  /// The decode family on the GPU (sm_80+: cp.async + ldmatrix + mma.sync):
  /// one CTA per (row block, split, kv head, batch), the rows every query
  /// head of the GQA group times every query, split-KV partials merged
  /// exactly.
  GpuDecodeSm80 = 9,
  /// The backward family on the GPU (sm_80+: cp.async + ldmatrix +
  /// mma.sync): a dQ kernel per query block, then a dK/dV kernel per key
  /// block (the group's heads summed in order), deterministic.
  GpuBwdSm80 = 10,
  /// cpu_avx512's path with bf16 dot products (vdpbf16ps, AVX512_BF16) for
  /// Q K^T and P V and the f32 softmax between them; bf16 inputs only. On a
  /// target without AVX512_BF16 each dot product is two f32 FMAs of the
  /// widened pairs (the same arithmetic), so it runs on any x86-64-v4.
  CpuAvx512Bf16 = 11,
  /// cpu_bwd_avx512's item space with bf16 pair dot products (vdpbf16ps)
  /// for its five products, P and dS rounded to bf16 as their operands;
  /// bf16 inputs only, portable to any x86-64-v4 as cpu_avx512bf16 is.
  CpuBwdAvx512Bf16 = 12,
};
inline constexpr KernelVariant kKernelVariants[] = {
    KernelVariant::CpuAvx2,         KernelVariant::CpuAvx512,
    KernelVariant::CpuAmx,          KernelVariant::GpuSm80,
    KernelVariant::GpuSm90a,        KernelVariant::CpuDecodeAvx2,
    KernelVariant::CpuDecodeAvx512, KernelVariant::CpuBwdAvx2,
    KernelVariant::CpuBwdAvx512,    KernelVariant::GpuDecodeSm80,
    KernelVariant::GpuBwdSm80,      KernelVariant::CpuAvx512Bf16,
    KernelVariant::CpuBwdAvx512Bf16};
/// The variant's name as configs, tools and the IR spell it ("cpu_amx").
std::string_view toString(KernelVariant v);
std::optional<KernelVariant> parseKernelVariant(std::string_view s);
/// "cpu_avx2, cpu_avx512, cpu_amx, gpu_sm80 or gpu_sm90a", for messages.
std::string kernelVariantNames();
bool isGpuVariant(KernelVariant v);
/// cpu_decode_avx2, cpu_decode_avx512 (work items are (batch, split, kv
/// head)) and gpu_decode_sm80.
bool isDecodeVariant(KernelVariant v);
/// The kernels of the backward pass, in the order messages name them.
inline constexpr KernelVariant kBackwardVariants[] = {
    KernelVariant::CpuBwdAvx2, KernelVariant::CpuBwdAvx512,
    KernelVariant::CpuBwdAvx512Bf16, KernelVariant::GpuBwdSm80};
/// One of kBackwardVariants.
bool isBackwardVariant(KernelVariant v);
/// "cpu_bwd_avx2, cpu_bwd_avx512, cpu_bwd_avx512bf16 or gpu_bwd_sm80", for
/// messages.
std::string backwardVariantNames();

/// How a kernel is tiled (mirrors #tilt.tile_config). The variant is kept
/// by name, as tuning databases, bundles and cache keys write it; an empty
/// one asks for the compiler's default.
struct TileConfig {
  std::string variant; ///< toString(KernelVariant), or empty
  int64_t blockM = 0, blockN = 0, numWarps = 0, numStages = 0;
  bool isDefault() const { return variant.empty(); }
  /// The variant as the enum; none when empty or not a variant's name.
  std::optional<KernelVariant> kind() const {
    return parseKernelVariant(variant);
  }
  bool is(KernelVariant v) const { return variant == toString(v); }
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
