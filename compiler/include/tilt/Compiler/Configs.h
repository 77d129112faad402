//===- Configs.h - Default tile configurations ------------------*- C++ -*-===//

#ifndef TILT_COMPILER_CONFIGS_H
#define TILT_COMPILER_CONFIGS_H

#include "tilt/Dialect/Tilt/IR/Tilt.h"

namespace mlir::tilt {

/// The configuration a CPU variant uses when neither the IR nor the tuner
/// picked one. Block sizes keep one query block's working set (Q, K^T, V,
/// scores, accumulator) within L2 at D = 128.
TileConfigAttr getDefaultCpuConfig(MLIRContext *ctx, KernelVariant variant);

/// The CPU variant the host should use for `spec`: cpu_amx for bf16 with a
/// head dim that is a multiple of 32 where the CPU has AMX-BF16, else
/// cpu_avx512 where it has AVX-512F, else cpu_avx2.
KernelVariant pickCpuVariant(const ::tilt::AttentionSpec &spec,
                             bool hasAmxBf16, bool hasAvx512);

} // namespace mlir::tilt

#endif // TILT_COMPILER_CONFIGS_H
