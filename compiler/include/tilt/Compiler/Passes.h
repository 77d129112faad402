//===- Passes.h - Tilt's compiler passes ------------------------*- C++ -*-===//

#ifndef TILT_COMPILER_PASSES_H
#define TILT_COMPILER_PASSES_H

#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::tilt {

#define GEN_PASS_DECL
#include "tilt/Compiler/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "tilt/Compiler/Passes.h.inc"

} // namespace mlir::tilt

#endif // TILT_COMPILER_PASSES_H
