//===- KernelCompiler.cpp - Targets, tile configs, the compiler seam ------===//

#include "tilt/KernelCompiler.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <span>

namespace tilt {

std::string_view toString(Target t) {
  return t == Target::CPU ? "cpu" : "cuda";
}

std::string TileConfig::str() const {
  return fmt::format("variant={};block_m={};block_n={};num_warps={};"
                     "num_stages={}",
                     variant, blockM, blockN, numWarps, numStages);
}

std::string_view toString(KernelVariant v) {
  switch (v) {
  case KernelVariant::CpuAvx2:
    return "cpu_avx2";
  case KernelVariant::CpuAvx512:
    return "cpu_avx512";
  case KernelVariant::CpuAmx:
    return "cpu_amx";
  case KernelVariant::GpuSm80:
    return "gpu_sm80";
  case KernelVariant::GpuSm90a:
    return "gpu_sm90a";
  case KernelVariant::CpuDecodeAvx2:
    return "cpu_decode_avx2";
  case KernelVariant::CpuDecodeAvx512:
    return "cpu_decode_avx512";
  case KernelVariant::CpuBwdAvx2:
    return "cpu_bwd_avx2";
  case KernelVariant::CpuBwdAvx512:
    return "cpu_bwd_avx512";
  case KernelVariant::GpuDecodeSm80:
    return "gpu_decode_sm80";
  case KernelVariant::GpuBwdSm80:
    return "gpu_bwd_sm80";
  case KernelVariant::CpuAvx512Bf16:
    return "cpu_avx512bf16";
  case KernelVariant::CpuBwdAvx512Bf16:
    return "cpu_bwd_avx512bf16";
  }
  return "unknown";
}

std::optional<KernelVariant> parseKernelVariant(std::string_view s) {
  for (KernelVariant v : kKernelVariants)
    if (s == toString(v))
      return v;
  return std::nullopt;
}

/// "a, b or c" of the variants' names.
static std::string listNames(std::span<const KernelVariant> variants) {
  std::string out;
  const size_t n = variants.size();
  for (size_t i = 0; i < n; ++i)
    out += std::string(i == 0       ? ""
                       : i + 1 == n ? " or "
                                    : ", ") +
           std::string(toString(variants[i]));
  return out;
}

std::string kernelVariantNames() { return listNames(kKernelVariants); }

std::string backwardVariantNames() { return listNames(kBackwardVariants); }

bool isGpuVariant(KernelVariant v) {
  return v == KernelVariant::GpuSm80 || v == KernelVariant::GpuSm90a ||
         v == KernelVariant::GpuDecodeSm80 || v == KernelVariant::GpuBwdSm80;
}

bool isDecodeVariant(KernelVariant v) {
  return v == KernelVariant::CpuDecodeAvx2 ||
         v == KernelVariant::CpuDecodeAvx512 ||
         v == KernelVariant::GpuDecodeSm80;
}

bool isBackwardVariant(KernelVariant v) {
  return std::find(std::begin(kBackwardVariants), std::end(kBackwardVariants),
                   v) != std::end(kBackwardVariants);
}

KernelCompiler::~KernelCompiler() = default;

} // namespace tilt
