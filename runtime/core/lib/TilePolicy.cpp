//===- TilePolicy.cpp - The one owner of tile-configuration decisions -----===//

#include "tilt/TilePolicy.h"

#include <algorithm>
#include <bit>

namespace tilt {

namespace {

TileConfig config(KernelVariant variant, int64_t m, int64_t n,
                  int64_t warps = 0, int64_t stages = 0) {
  TileConfig c;
  c.variant = std::string(toString(variant));
  c.blockM = m;
  c.blockN = n;
  c.numWarps = warps;
  c.numStages = stages;
  return c;
}

} // namespace

KernelVariant defaultCpuVariant(const AttentionSpec &spec,
                                const HasFeature &has) {
  auto hasClass = [&](CpuClass c) { return missingFeatures(c, has).empty(); };
  if (spec.dtype == DType::BF16 && spec.headDim % 32 == 0 &&
      hasClass(CpuClass::X86_64_V4_AMX))
    return KernelVariant::CpuAmx;
  if (spec.dtype == DType::BF16 && hasClass(CpuClass::X86_64_V4_BF16))
    return KernelVariant::CpuAvx512Bf16;
  return hasClass(CpuClass::X86_64_V4) ? KernelVariant::CpuAvx512
                                       : KernelVariant::CpuAvx2;
}

TileConfig defaultCpuConfig(KernelVariant variant) {
  if (variant == KernelVariant::CpuAvx2)
    return config(variant, 32, 32);
  if (isBackwardVariant(variant))
    // 32 query rows x 64 keys: one key block's K^T, V^T, dK^T and dV^T
    // (128 KiB at D = 128) stay in L2 while every query row streams by.
    return config(variant, 32, 64);
  if (isDecodeVariant(variant))
    // 16 query rows (a GQA group's heads x Sq) share each 16-key block.
    return config(variant, 16, 16);
  if (variant == KernelVariant::CpuAmx)
    // Larger blocks amortize the per-block cost of packing K/V and of moving
    // scores between tiles and vectors. Measured on Sapphire Rapids, 2
    // threads, H=32 D=128 causal: 128x128 gives 1031 GFLOP/s at S=2048
    // (64x64: 851) and stays best at S=128 and 512; 128x256 wins only for
    // long sequences, which is the tuner's call.
    return config(variant, 128, 128);
  if (variant == KernelVariant::CpuAvx512Bf16)
    return config(variant, 64, 64); // (within 2% of the tuned best at
                                    // H 32 S 2048 on a Zen 4)
  return config(KernelVariant::CpuAvx512, 64, 64);
}

int64_t cpuScratchBytes(const AttentionSpec &spec, const TileConfig &c) {
  const int64_t m = c.blockM, n = c.blockN, d = spec.headDim;
  int64_t rows = 4 * m * 4; // m, l, alpha, positions' references
  if (c.is(KernelVariant::CpuBwdAvx512Bf16))
    // bf16 pairs: K^T2, V^T2, Kp; Q^T2, dO^T2, Qp, dOp; P2, dS2, dS^T2 and
    // the fused items' dS. f32: dK, dV, dQ; S, dP and their transposes.
    return 3 * n * d * 2 + 4 * m * d * 2 + 4 * m * n * 2 + 2 * n * d * 4 +
           m * d * 4 + 4 * m * n * 4 + rows;
  if (c.kind() && isBackwardVariant(*c.kind()))
    // K^T, V^T, dK^T, dV^T of a key block (dK/dV pass) or Q^T, dO^T, dQ of
    // a query block (dQ pass), and P and dS of a block pair.
    // 16-bit inputs add their widened Q, dO, K and V rows.
    return 4 * std::max(m, n) * d * 4 + 2 * m * n * 4 + rows +
           (spec.dtype == DType::F32 ? 0 : 2 * (m + n) * d * 4);
  if (c.kind() && isDecodeVariant(*c.kind())) {
    if (!decodeTokenRows(spec, *c.kind()))
      return 2 * m * d * 4 + rows; // staged Q rows and their accumulators
    // The row state holds a row per head if that is more, and the token
    // rows a block's partial sums [H][BN / 4 x 16] and P [H][BN].
    const int64_t r = std::max(m, spec.heads);
    return 2 * r * d * 4 + 4 * r * 4 + spec.heads * n * (16 / 4 + 1) * 4;
  }
  if (c.is(KernelVariant::CpuAmx))
    return m * d * 2                   // Q rows
           + 2 * (d / 2) * (2 * n) * 2 // packed K^T, double-buffered
           + 2 * (n / 2) * (2 * d) * 2 // packed V
           + 2 * m * n * 4             // scores
           + 2 * m * n * 2             // P
           + 2 * m * 4                 // alphas
           + 2 * m * d * 4             // P.V and Acc
           + rows;
  if (c.is(KernelVariant::CpuAvx512Bf16))
    return d * m * 2   // Qt2
           + n * d * 2 // V pairs
           + n * m * 4 // scores
           + n * m * 2 // P pairs
           + m * d * 4 // Acc
           + rows;
  int64_t staged = spec.dtype == DType::F32 ? 0 : 2 * n * d * 4;
  return d * m * 4 + staged + n * m * 4 + m * d * 4 + rows;
}

std::vector<TileConfig> cpuSearchSpace(const AttentionSpec &spec,
                                       const HasFeature &has) {
  std::vector<TileConfig> out;
  auto add = [&](KernelVariant variant, int64_t m, int64_t n) {
    TileConfig c = config(variant, m, n);
    if (cpuScratchBytes(spec, c) <= kMaxCpuScratchBytes)
      out.push_back(c);
  };
  const bool avx512 = missingFeatures(CpuClass::X86_64_V4, has).empty();
  const KernelVariant vector =
      avx512 ? KernelVariant::CpuAvx512 : KernelVariant::CpuAvx2;
  const std::vector<int64_t> rows = avx512 ? std::vector<int64_t>{32, 64, 128}
                                           : std::vector<int64_t>{16, 32, 64};
  std::vector<KernelVariant> variants{vector};
  if (spec.dtype == DType::BF16 &&
      missingFeatures(CpuClass::X86_64_V4_BF16, has).empty())
    variants.push_back(KernelVariant::CpuAvx512Bf16);
  for (KernelVariant v : variants)
    for (int64_t m : rows)
      for (int64_t n : {32, 64, 128})
        add(v, m, n);
  if (spec.dtype == DType::BF16 && spec.headDim % 32 == 0 &&
      missingFeatures(CpuClass::X86_64_V4_AMX, has).empty())
    for (int64_t m : {64, 128})
      for (int64_t n : {64, 128, 256})
        add(KernelVariant::CpuAmx, m, n);
  return out;
}

std::vector<TileConfig> decodeSearchSpace(const AttentionSpec &spec,
                                          const HasFeature &has) {
  std::vector<TileConfig> out;
  const KernelVariant variant = decodeCpuVariant(has);
  for (int64_t m : {16, 32, 64})
    for (int64_t n : {16, 32, 64})
      for (int64_t stages = 0; stages <= kCpuDecodeMaxStages; ++stages) {
        TileConfig c = config(variant, m, n, 0, stages);
        if (cpuScratchBytes(spec, c) <= kMaxCpuScratchBytes)
          out.push_back(c);
      }
  return out;
}

KernelVariant decodeCpuVariant(const HasFeature &has) {
  return missingFeatures(CpuClass::X86_64_V4, has).empty()
             ? KernelVariant::CpuDecodeAvx512
             : KernelVariant::CpuDecodeAvx2;
}

KernelVariant backwardCpuVariant(DType dtype, const HasFeature &has) {
  if (dtype == DType::BF16 &&
      missingFeatures(CpuClass::X86_64_V4_BF16, has).empty())
    return KernelVariant::CpuBwdAvx512Bf16;
  return missingFeatures(CpuClass::X86_64_V4, has).empty()
             ? KernelVariant::CpuBwdAvx512
             : KernelVariant::CpuBwdAvx2;
}

bool useDecodeFamily(const AttentionSpec &spec, int64_t maxSq) {
  return spec.bias != BiasKind::AlibiPositions && maxSq <= kDecodeMaxSq;
}

bool useGpuDecodeFamily(const AttentionSpec &spec, int64_t maxSq) {
  return spec.pageSize ||
         (!spec.varlen && maxSq > 0 && useDecodeFamily(spec, maxSq));
}

bool decodeTokenRows(const AttentionSpec &spec, KernelVariant variant) {
  const int64_t maxGroup =
      variant == KernelVariant::CpuDecodeAvx2 ? 2 : kDecodeTokenRowsMaxGroup;
  return spec.pageSize > 0 && spec.kvHeads > 0 &&
         spec.heads <= maxGroup * spec.kvHeads;
}

bool fusedBackward(int64_t kvItems, int threads, int64_t heapBytes) {
  return kvItems >= 2 * int64_t(std::max(threads, 1)) &&
         heapBytes <= kFusedBackwardMaxHeapBytes;
}

int64_t fusedBackwardHeapBytes(const AttentionSpec &spec, int64_t blockM,
                               int64_t blockN, int64_t maxSk) {
  const int64_t n = std::max<int64_t>(blockN, 1);
  const int64_t keys = (maxSk + n - 1) / n * n, d = spec.headDim;
  // K^T, V^T and K's rows (f32 at most), dK and dV (f32), P and dS (f32).
  return keys * d * 4 * 3 + keys * d * 4 * 2 + keys * blockM * 4 * 2;
}

int64_t decodeSplits(int64_t items, int64_t keys, int threads) {
  if (threads <= 1 || items <= 0 || items % threads == 0 ||
      items >= 4 * int64_t(threads))
    return 1;
  const int64_t wanted = (4 * int64_t(threads) + items - 1) / items;
  const int64_t fit = std::max<int64_t>(1, keys / kDecodeMinSplitKeys);
  return std::min({wanted, fit, kDecodeMaxSplits});
}

int64_t gpuDecodeSplits(int64_t ctas, int64_t keys, int smCount) {
  const int64_t wanted = 2 * int64_t(std::max(smCount, 1));
  if (ctas <= 0 || ctas >= wanted)
    return 0;
  const int64_t parts = std::min(
      {(wanted + ctas - 1) / ctas,
       std::max<int64_t>(1, keys / kGpuDecodeMinSplitKeys), kDecodeMaxSplits});
  return parts > 1 ? parts : 0;
}

KernelVariant defaultGpuVariant(const AttentionSpec &spec,
                                std::string_view arch) {
  if (spec.pageSize)
    return KernelVariant::GpuDecodeSm80; // the one that reads a paged cache
  const bool sm90aServes =
      spec.dtype != DType::F32 && (spec.headDim == 64 || spec.headDim == 128);
  return arch == "sm_90a" && sm90aServes ? KernelVariant::GpuSm90a
                                         : KernelVariant::GpuSm80;
}

TileConfig defaultGpuConfig(KernelVariant variant, int64_t headDim) {
  if (variant == KernelVariant::GpuBwdSm80)
    // The backward's two kernels: 64 query rows (dQ) and 64 keys (dK/dV)
    // per CTA on four warps, inside the 99 KiB of sm_86 / sm_89: two stages
    // up to D = 64 (56 KiB), one up to D = 128 (69 KiB; two would need 104).
    // D > 128: 32 x 32 on two warps, one stage (67 KiB at D = 256; dK and
    // dV of 16 keys x D in a warp's registers spill there). Not yet tuned on
    // a GPU.
    return headDim <= 64    ? config(variant, 64, 64, 4, 2)
           : headDim <= 128 ? config(variant, 64, 64, 4, 1)
                            : config(variant, 32, 32, 2, 1);
  if (variant == KernelVariant::GpuDecodeSm80)
    // One warp of 16 rows (a GQA group's heads x Sq, one m16 tile) against
    // key blocks double-buffered: 64 keys up to D = 128 (72.25 KiB of
    // shared memory at D = 128: two CTAs an SM on an A100, three on an
    // H100), 32 above (75.25 KiB at D = 256, inside the 99 KiB of sm_86 /
    // sm_89). Not yet tuned on a GPU.
    return config(variant, 16, headDim <= 128 ? 64 : 32, 1, 2);
  if (variant == KernelVariant::GpuSm90a)
    // Two warpgroups of 64 query rows; 64-key blocks keep the scores, P and
    // O of a thread inside the register file for every bias form at D <= 128
    // (128-key blocks spill with a window: ptxas reports 255 registers).
    return config(variant, 128, 64, 8, 2);
  // sm_80: 16 query rows per warp, 8 warps x 16 = 128 rows. The defaults
  // fit the 99 KiB of shared memory a block may opt into on sm_86/sm_89 as
  // well as the 163 KiB of an A100: D <= 64 streams 64-key blocks double-
  // buffered (55 KiB at D = 64); D <= 128 streams 32-key blocks three deep
  // (87 KiB at D = 128). D > 128: half the rows and 32-key blocks so the O
  // accumulators (D/2 registers a thread) fit; 101 KiB at D = 256, which
  // needs an A100/H100-class part (a smaller tile config elsewhere).
  if (headDim <= 64)
    return config(variant, 128, 64, 8, 2);
  if (headDim <= 128)
    return config(variant, 128, 32, 8, 3);
  return config(variant, 64, 32, 4, 2);
}

TileConfig fitQueryBlock(TileConfig c, int64_t maxSq) {
  const std::optional<KernelVariant> v = c.kind();
  if (!v || isGpuVariant(*v) || isDecodeVariant(*v) || isBackwardVariant(*v) ||
      maxSq <= 0 || 2 * maxSq > c.blockM)
    return c;
  // cpu_amx takes blocks of whole pairs of 16-row tiles (Amx.cpp).
  const int64_t least = *v == KernelVariant::CpuAmx ? 32 : 16;
  c.blockM = std::max<int64_t>(least, int64_t(std::bit_ceil(uint64_t(maxSq))));
  return c;
}

TileConfig completeCpuConfig(TileConfig c) {
  std::optional<KernelVariant> v = c.kind();
  if (!v || isGpuVariant(*v))
    return c; // reported by whoever compiles it
  const TileConfig d = defaultCpuConfig(*v);
  if (!c.blockM)
    c.blockM = d.blockM;
  if (!c.blockN)
    c.blockN = d.blockN;
  return c;
}

TileConfig completeGpuConfig(const AttentionSpec &spec, TileConfig c,
                             std::string_view arch) {
  if (c.variant.empty())
    c.variant = std::string(
        toString(defaultGpuVariant(spec, arch.empty() ? "sm_80" : arch)));
  std::optional<KernelVariant> v = c.kind();
  if (!v || !isGpuVariant(*v))
    return c; // reported by whoever compiles it
  const TileConfig d = defaultGpuConfig(*v, spec.headDim);
  if (!c.blockM)
    c.blockM = d.blockM;
  if (!c.blockN)
    c.blockN = d.blockN;
  if (!c.numWarps)
    c.numWarps = d.numWarps;
  if (!c.numStages)
    c.numStages = d.numStages;
  return c;
}

int64_t maxGpuSharedMemory(KernelVariant variant) {
  return variant == KernelVariant::GpuSm90a ? 227 * 1024 : 163 * 1024;
}

} // namespace tilt
