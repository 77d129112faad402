//===- Tilt.h - The tilt dialect --------------------------------*- C++ -*-===//

#ifndef TILT_DIALECT_TILT_IR_TILT_H
#define TILT_DIALECT_TILT_IR_TILT_H

#include "tilt/Spec.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "tilt/Dialect/Tilt/IR/TiltOpsDialect.h.inc"
#include "tilt/Dialect/Tilt/IR/TiltEnums.h.inc"

namespace mlir::tilt {
/// cpu_bwd_avx2, cpu_bwd_avx512, cpu_bwd_avx512bf16, gpu_bwd_sm80: kernels
/// of tilt.attention_backward.
bool isBackwardVariant(KernelVariant v);
/// cpu_decode_avx2, cpu_decode_avx512, gpu_decode_sm80: the decode family
/// (few query rows against long caches, split-KV parts).
bool isDecodeVariant(KernelVariant v);
} // namespace mlir::tilt

#define GET_ATTRDEF_CLASSES
#include "tilt/Dialect/Tilt/IR/TiltAttrs.h.inc"

#define GET_OP_CLASSES
#include "tilt/Dialect/Tilt/IR/TiltOps.h.inc"

#endif // TILT_DIALECT_TILT_IR_TILT_H
