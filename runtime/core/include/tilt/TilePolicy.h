//===- TilePolicy.h - The one owner of tile-configuration decisions -*- C++
//-*-===//
//
// Every decision about how a kernel is tiled, in plain C++ that the runtime,
// the tuner, the bundler and the compiler all call: the default variant for
// a spec on a CPU class or a GPU architecture, each variant's default block
// sizes, the limits a configuration must respect and the search space the
// tuner times. The compiler pins the result on the IR as #tilt.tile_config
// (tilt-cpu-entry for the CPU, convert-tilt-to-gpu's config step for the
// GPU); the lowerings only read it. Nothing else chooses or completes a
// configuration.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TILEPOLICY_H
#define TILT_TILEPOLICY_H

#include "tilt/CpuIsa.h"
#include "tilt/KernelCompiler.h"
#include "tilt/Spec.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tilt {

//===----------------------------------------------------------------------===//
// CPU
//===----------------------------------------------------------------------===//

/// The CPU prefill variant for `spec` (a paged cache too) on a CPU with
/// features `has`: cpu_amx for bf16
/// with a head dim that is a multiple of 32 where the CPU has the AMX class,
/// cpu_avx512bf16 for bf16 where it has AVX512_BF16 (x86-64-v4-bf16), else
/// cpu_avx512 where it has AVX-512 (x86-64-v4), else cpu_avx2.
KernelVariant defaultCpuVariant(const AttentionSpec &spec,
                                const HasFeature &has);

/// A CPU variant's default block sizes (block_m x block_n): they keep one
/// query block's working set (Q, K^T, V, scores, accumulator) within L2 at
/// D = 128. GPU variants get cpu_avx512's.
TileConfig defaultCpuConfig(KernelVariant variant);
/// `config` (a CPU variant) with its zero block sizes from the defaults.
TileConfig completeCpuConfig(TileConfig config);
/// A CPU prefill configuration fitted to query sequences of at most
/// `maxSq` rows: where maxSq <= block_m / 2, block_m becomes the smallest
/// power of two >= maxSq (at least 16; 32 for cpu_amx). One query block still
/// covers each sequence, so K and V are read as often, and the empty rows are
/// not computed: the tuned records come from square problems, and a chunked
/// prefill of 32 tokens against 8192 keys ran 64-row blocks half empty.
/// Measured on a 2-core Zen 4 (cpu_avx512bf16, H 32 over Hkv 8, D 128,
/// Sk 8192, causal): Sq 32 30.6 / 31.4 -> 16.6 / 22.8 ms (64 -> 32 rows,
/// two runs), Sq 20 26.2 / 31.2 -> 19.2 / 21.1. Other configurations
/// (decode, backward, GPU variants) are returned as given.
TileConfig fitQueryBlock(TileConfig config, int64_t maxSq);

/// Bytes of per-thread scratch (stack) a CPU kernel of `config` uses.
int64_t cpuScratchBytes(const AttentionSpec &spec, const TileConfig &config);

/// The most scratch a configuration may use: worker threads have 8 MiB
/// stacks, and a working set beyond L2 (2 MiB a core here) never wins.
inline constexpr int64_t kMaxCpuScratchBytes = 2 << 20;

/// The decode family's variant on a CPU with features `has`:
/// cpu_decode_avx512 on x86-64-v4, else cpu_decode_avx2.
KernelVariant decodeCpuVariant(const HasFeature &has);
/// The backward family's variant for inputs of `dtype` on a CPU with
/// features `has`: cpu_bwd_avx512bf16 for bf16 on x86-64-v4-bf16 (AVX512_BF16;
/// AMX CPUs have it too), else cpu_bwd_avx512 on x86-64-v4, else
/// cpu_bwd_avx2.
KernelVariant backwardCpuVariant(DType dtype, const HasFeature &has);
/// The CPU decode kernels' num_stages, how the row blocks fetch the keys
/// ahead: 0 (the default) asks for them into L1, 1 leaves them to the
/// hardware prefetchers (a contiguous cache), 2 asks for them into L2
/// (Decode.cpp). The dialect's verifier, the tools' flags, the tuning
/// database and the tuner's search space take 0 to this.
inline constexpr int64_t kCpuDecodeMaxStages = 2;
/// The longest query sequence for which the runtime picks the decode family.
inline constexpr int64_t kDecodeMaxSq = 16;
/// The runtime's rule: a CPU call with no tile configuration of its own runs
/// the decode family when its query sequences are short (maxSq <=
/// kDecodeMaxSq: decode and short speculative or chunked steps), whatever
/// the GQA group, and the bias is not alibi_positions (which the decode
/// kernels do not take). There the prefill kernels, which vectorize across
/// query rows, leave most lanes empty and read K/V once per query head; the
/// decode kernels read it once per block_m rows of a kv head's group.
/// Measured on a 2-core Xeon (AVX-512), bf16 D 128 Sk 8192 B 1 causal, when
/// the rule still asked group x Sq <= 16: H 32 over Hkv 1 at Sq 1 36.5 ->
/// 1.3 ms; H 32 over Hkv 4 at Sq 4 35.2 -> 4.9 ms, at Sq 16 41.2 -> 23.9 ms.
/// A paged KV cache follows the same rule: every CPU family reads one (the
/// prefill kernels look each key's page up), so a chunked prefill against
/// the cache runs the prefill kernels. (On the GPU only the decode family
/// reads a paged cache: Runtime.cpp's cudaConfig.)
bool useDecodeFamily(const AttentionSpec &spec, int64_t maxSq);
/// The GPU's rule (Runtime.cpp's cudaConfig, and the tools that build or
/// time what it picks): gpu_decode_sm80 for every paged cache, the only GPU
/// kernel that reads one, and for dense calls that are not varlen where
/// useDecodeFamily holds; `maxSq` 0 (unknown) assumes a prefill.
bool useGpuDecodeFamily(const AttentionSpec &spec, int64_t maxSq);
/// The decode kernels' token-row path (paged, groups of at most
/// kDecodeTokenRowsMaxGroup heads, 2 for `variant` cpu_decode_avx2;
/// Decode.cpp): at Sq = 1, a call holding
/// every kv head of one (batch, split) reads each cache token row whole,
/// every kv head's K (then V) side by side, instead of a kv head at a time.
/// The runtime then hands out whole (batch, split)s and splits by batches
/// alone (decodeSplits with items = B).
bool decodeTokenRows(const AttentionSpec &spec, KernelVariant variant);
/// The largest GQA group (heads / kv heads) on the token-row path: a K or
/// V chunk of 4 keys is shared by the group's rows in registers, a sum per
/// (row, key) (the AVX2 kernels, with 16 registers, take groups of 2 and
/// leave larger ones to the row blocks).
inline constexpr int64_t kDecodeTokenRowsMaxGroup = 4;
/// Split-KV for the decode family: how many chunks to cut each (batch, kv
/// head)'s keys into when `items` (batch x kv heads) would leave some of
/// `threads` idle or uneven. 1 (no split) when there is one thread, when
/// every thread gets the same number of items, or when there are at least
/// four items a thread (at most a quarter of a thread's work uneven); else
/// enough chunks for four items a thread, each of at least
/// kDecodeMinSplitKeys of the `keys` (the longest key sequence), at most
/// kDecodeMaxSplits. The parts are merged exactly (ALIBI.md, "Merge").
int64_t decodeSplits(int64_t items, int64_t keys, int threads);
inline constexpr int64_t kDecodeMinSplitKeys = 256;
/// The CPU backward's schedule by shape: the fused one (an item per (batch,
/// kv head), five products) where there are at least two such items per
/// thread and an item's heap (fusedBackwardHeapBytes) is at most
/// kFusedBackwardMaxHeapBytes; else two passes (seven products), whose
/// key-block items keep every thread busy at any B x Hkv and need no heap.
bool fusedBackward(int64_t kvItems, int threads, int64_t heapBytes);
/// A fused backward item's heap for `maxSk` keys: the kv head's K and V
/// staged, its dK and dV, and a row block's P and dS against every key
/// block.
int64_t fusedBackwardHeapBytes(const AttentionSpec &spec, int64_t blockM,
                               int64_t blockN, int64_t maxSk);
inline constexpr int64_t kFusedBackwardMaxHeapBytes = int64_t(256) << 20;
inline constexpr int64_t kDecodeMaxSplits = 64;
/// The same on the GPU (gpu_decode_sm80): `ctas` (row blocks x kv heads x
/// batch) against the device's `smCount` multiprocessors. 0 (no split, no
/// merge kernel) when there are at least two CTAs an SM; else enough parts
/// for two CTAs an SM, each of at least kGpuDecodeMinSplitKeys keys, at most
/// kDecodeMaxSplits. Not yet tuned on a GPU.
int64_t gpuDecodeSplits(int64_t ctas, int64_t keys, int smCount);
inline constexpr int64_t kGpuDecodeMinSplitKeys = 512;

/// Strided K/V (a [B, S, Hkv, D] layout, rows Hkv * D elements apart): the
/// prefill kernels reread a head's K/V rows once per query block, and rows
/// a few KiB apart share few cache sets, so they cannot stay in L2 between
/// blocks. The runtime copies dense K and V to row-major scratch once per
/// call where a head has at least this many query blocks of block_m rows.
/// Measured, tilt-bench --layout bshd, f32 H 32 D 128 ALiBi causal, 2
/// threads on a 2-core Xeon (AVX-512), strided in place vs copied: S 512
/// (8 blocks) 13.4-13.7 vs 13.2-14.2 ms (no gain: the copy costs what it
/// saves), S 1024 48.8 vs 46.6, S 2048 181-184 vs 150, S 8192 2845 vs 2078
/// (row-major [B, H, S, D]: 10.3, 37.3, 131, 2008).
inline constexpr int64_t kGatherKvMinQueryBlocks = 16;

/// CPU candidates for `spec` on a CPU with features `has`: the widest vector
/// ISA's block sizes, plus for bf16 cpu_avx512bf16 ones where the CPU has
/// AVX512_BF16 and AMX ones where it has AMX-BF16,
/// pruned by divisibility and scratch size. Non-empty on x86-64-v3 and up.
std::vector<TileConfig> cpuSearchSpace(const AttentionSpec &spec,
                                       const HasFeature &has);
/// The decode family's candidates on a CPU with features `has`: its
/// variant (decodeCpuVariant) with 16, 32 or 64 query rows per tile block
/// (block_m), 16, 32 or 64 keys per block (block_n), and num_stages 0 (the
/// keys ahead asked for by software into L1), 1 (left to the hardware
/// prefetchers) or 2 (asked for into L2; Decode.cpp).
std::vector<TileConfig> decodeSearchSpace(const AttentionSpec &spec,
                                          const HasFeature &has);

//===----------------------------------------------------------------------===//
// GPU
//===----------------------------------------------------------------------===//

/// The GPU variant for `spec` compiled for `arch` ("sm_80", "sm_90a"; a
/// device's compute capability maps to it through cuda::defaultVariant):
/// gpu_sm90a on sm_90a for f16/bf16 with head_dim 64 or 128, else gpu_sm80.
/// Above D = 128 the sm_90a kernel's O accumulator alone takes 128 registers
/// a thread and ptxas spills for some bias/mask forms, so the sm_80 kernels
/// (which do not spill there) serve those head dims unless a caller asks.
KernelVariant defaultGpuVariant(const AttentionSpec &spec,
                                std::string_view arch);

/// A GPU variant's default configuration for a head dim.
TileConfig defaultGpuConfig(KernelVariant variant, int64_t headDim);

/// `config` with its zero fields (or, when it names no variant, all of it:
/// the default variant for `arch`) filled from the defaults.
TileConfig completeGpuConfig(const AttentionSpec &spec, TileConfig config,
                             std::string_view arch);

/// Most dynamic shared memory per CTA a variant's kernels may take: 163 KiB
/// (A100) for gpu_sm80, 227 KiB (H100/H200) for gpu_sm90a.
int64_t maxGpuSharedMemory(KernelVariant variant);

} // namespace tilt

#endif // TILT_TILEPOLICY_H
