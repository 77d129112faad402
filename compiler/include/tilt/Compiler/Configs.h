//===- Configs.h - Default tile configurations ------------------*- C++ -*-===//

#ifndef TILT_COMPILER_CONFIGS_H
#define TILT_COMPILER_CONFIGS_H

#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/KernelCompiler.h"

namespace mlir::tilt {

/// The dialect's variant enum mirrors the core's (tilt/KernelCompiler.h)
/// value for value; TiltDialect.cpp checks that at compile time.
inline ::tilt::KernelVariant toCore(KernelVariant v) {
  return static_cast<::tilt::KernelVariant>(static_cast<int>(v));
}

/// A configuration of the tile policy (tilt/TilePolicy.h, which owns every
/// default) as the IR attribute; null for an unknown variant.
TileConfigAttr toTileConfigAttr(MLIRContext *ctx,
                                const ::tilt::TileConfig &config);

/// The policy's default configuration of a CPU variant, as an attribute.
TileConfigAttr getDefaultCpuConfig(MLIRContext *ctx, KernelVariant variant);

/// The memref types of the kernel ABI (KernelABI.h) for a tensor-form op: q,
/// k, v, o, lse, then the optional slopes ([B,H], free batch stride), key
/// padding mask (i8) and cu_seqlens. Shared by the CPU and GPU entries. The
/// data tensors (q, k, v, o and, in the backward, grad_o, dq, dk, dv) take
/// any element strides with a unit innermost one, read from the
/// descriptors, so that [B, S, H, D] tensors and slices of a fused QKV
/// tensor run in place; every other tensor is row-major.
SmallVector<Type> kernelAbiMemRefTypes(AttentionOp op);
/// The backward's: q, k, v, o, grad_o, lse, dq, dk, dv, then the optional
/// slopes and dslopes (both [B,H]; slopes with a free batch stride), key
/// padding mask (i8) and cu_seqlens (KernelABI.h).
SmallVector<Type> kernelAbiMemRefTypes(AttentionBackwardOp op);

/// The policy's default configuration of a GPU variant for a head dim.
TileConfigAttr getDefaultGpuConfig(MLIRContext *ctx, KernelVariant variant,
                                   int64_t headDim);

/// Dynamic shared memory (bytes) a GPU kernel of `config` takes.
int64_t gpuSharedMemoryBytes(const ::tilt::AttentionSpec &spec,
                             TileConfigAttr config);

/// The one chooser of an op's #tilt.tile_config (the tilt-pin-tile-config
/// pass and the JIT compiler both call it): `requested` names the variant;
/// its zero block sizes, warps and stages come from the tile policy. The
/// result is checked against the op's spec and set on the op; errors go to
/// `emitError`.
FailureOr<TileConfigAttr>
pinTileConfig(AttentionOp op, ::tilt::TileConfig requested,
              function_ref<InFlightDiagnostic()> emitError);
/// The same for the backward op: a backward variant (cpu_bwd_*) only.
FailureOr<TileConfigAttr>
pinTileConfig(AttentionBackwardOp op, ::tilt::TileConfig requested,
              function_ref<InFlightDiagnostic()> emitError);

/// "" when `config` (a GPU variant) can compile `spec`, else one line.
std::string checkGpuConfig(const ::tilt::AttentionSpec &spec,
                           TileConfigAttr config);

} // namespace mlir::tilt

#endif // TILT_COMPILER_CONFIGS_H
