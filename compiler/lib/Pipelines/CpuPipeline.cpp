//===- CpuPipeline.cpp - spec -> LLVM dialect for x86-64 ------------------===//

#include "tilt/Compiler/Pipelines.h"
#include "tilt/Compiler/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVMPass.h"
#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::tilt;

std::vector<PipelineStage>
mlir::tilt::getCpuPipelineStages(const CpuPipelineOptions &options) {
  std::string name = options.kernelName, variant = options.variant;
  bool expandBf16 = options.expandBf16, nativeBf16Dot = options.nativeBf16Dot;
  return {
      {"entry",
       [=](OpPassManager &pm) {
         TiltPinTileConfigOptions pin;
         pin.variant = variant;
         pm.addPass(createTiltPinTileConfig(pin));
         TiltCpuEntryOptions entry;
         entry.kernelName = name;
         pm.addPass(createTiltCpuEntry(entry));
       }},
      {"loops",
       [=](OpPassManager &pm) {
         ConvertTiltToCPUOptions lower;
         lower.nativeBf16Dot = nativeBf16Dot;
         pm.addPass(createConvertTiltToCPU(lower));
         pm.addPass(createCanonicalizerPass());
         pm.addPass(createCSEPass());
       }},
      {"llvm",
       [=](OpPassManager &pm) {
         if (expandBf16) {
           pm.addPass(createTiltRoundBf16());
           arith::ArithExpandOpsPassOptions expand;
           expand.includeBf16 = true;
           pm.addPass(arith::createArithExpandOpsPass(expand));
         }
         ConvertVectorToLLVMPassOptions vectorOptions;
         vectorOptions.amx = true; // tile ops of the cpu_amx variant
         vectorOptions.x86Vector = true; // cpu_avx512bf16's dot products
         pm.addPass(createConvertVectorToLLVMPass(vectorOptions));
         pm.addPass(memref::createExpandStridedMetadataPass());
         pm.addPass(createLowerAffinePass());
         pm.addPass(createSCFToControlFlowPass());
         pm.addPass(createConvertMathToLLVMPass());
         pm.addPass(createArithToLLVMConversionPass());
         pm.addPass(createConvertIndexToLLVMPass());
         pm.addPass(createFinalizeMemRefToLLVMConversionPass());
         pm.addPass(createConvertFuncToLLVMPass());
         pm.addPass(createConvertControlFlowToLLVMPass());
         pm.addPass(createReconcileUnrealizedCastsPass());
         pm.addPass(createCanonicalizerPass());
       }},
  };
}

void mlir::tilt::buildCpuPipeline(OpPassManager &pm,
                                  const CpuPipelineOptions &options) {
  for (const PipelineStage &stage : getCpuPipelineStages(options))
    stage.addPasses(pm);
}

void mlir::tilt::registerTiltPipelines() {
  PassPipelineRegistration<CpuPipelineOptions>(
      "tilt-cpu-pipeline",
      "Lower a tilt spec module to the LLVM dialect for x86-64 CPUs",
      buildCpuPipeline);
  PassPipelineRegistration<GpuPipelineOptions>(
      "tilt-gpu-pipeline",
      "Lower a tilt spec module to a gpu.binary holding the kernel's PTX",
      buildGpuPipeline);
}
