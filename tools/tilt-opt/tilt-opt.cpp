//===- tilt-opt.cpp - The lit/FileCheck driver of Tilt --------------------===//
//
// Registers the tilt dialect and only the upstream dialects and passes that
// Tilt's pipelines use, so lit tests exercise exactly what ships.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Passes.h"
#include "tilt/Compiler/Pipelines.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"

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
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  mlir::tilt::registerTiltPasses();
  mlir::tilt::registerTiltPipelines();

  mlir::DialectRegistry registry;
  registry.insert<mlir::tilt::TiltDialect, mlir::amx::AMXDialect,
                  mlir::x86vector::X86VectorDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::math::MathDialect,
                  mlir::memref::MemRefDialect, mlir::LLVM::LLVMDialect,
                  mlir::scf::SCFDialect, mlir::tensor::TensorDialect,
                  mlir::vector::VectorDialect, mlir::gpu::GPUDialect,
                  mlir::nvgpu::NVGPUDialect, mlir::NVVM::NVVMDialect>();
  mlir::tilt::registerGpuPipelineDependencies(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Tilt optimizer driver\n", registry));
}
