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

/// The memref types of the kernel ABI (KernelABI.h) for a tensor-form op: q,
/// k, v, o, lse, then the optional slopes ([B,H], free batch stride), key
/// padding mask (i8) and cu_seqlens. Shared by the CPU and GPU entries.
SmallVector<Type> kernelAbiMemRefTypes(AttentionOp op);

/// The default tile configuration of a GPU variant for a head dim.
TileConfigAttr getDefaultGpuConfig(MLIRContext *ctx, KernelVariant variant,
                                   int64_t headDim);

/// Dynamic shared memory (bytes) a GPU kernel of `config` takes.
int64_t gpuSharedMemoryBytes(const ::tilt::AttentionSpec &spec,
                             TileConfigAttr config);

/// Most dynamic shared memory per CTA a variant's kernels may take: 163 KiB
/// (A100) for gpu_sm80, 227 KiB (H100/H200) for gpu_sm90a.
int64_t maxGpuSharedMemory(KernelVariant variant);

/// "" when `config` (a GPU variant) can compile `spec`, else one line.
std::string checkGpuConfig(const ::tilt::AttentionSpec &spec,
                           TileConfigAttr config);

} // namespace mlir::tilt

#endif // TILT_COMPILER_CONFIGS_H
