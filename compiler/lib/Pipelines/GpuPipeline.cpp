//===- GpuPipeline.cpp - spec -> NVVM -> PTX in a gpu.binary --------------===//

#include "tilt/Compiler/Passes.h"
#include "tilt/Compiler/Pipelines.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::tilt;

std::vector<PipelineStage>
mlir::tilt::getGpuPipelineStages(const GpuPipelineOptions &options) {
  std::string variant = options.variant, chip = options.chip;
  int64_t blockM = options.blockM, blockN = options.blockN,
          numWarps = options.numWarps, numStages = options.numStages;
  return {
      {"kernel",
       [=](OpPassManager &pm) {
         TiltPinTileConfigOptions pin;
         pin.variant = variant;
         pin.blockM = blockM;
         pin.blockN = blockN;
         pin.numWarps = numWarps;
         pin.numStages = numStages;
         pm.addPass(createTiltPinTileConfig(pin));
         pm.addPass(createConvertTiltToGPU());
         pm.addPass(createCanonicalizerPass());
         pm.addPass(createCSEPass());
       }},
      {"nvvm",
       [=](OpPassManager &pm) {
         pm.addPass(createConvertNVGPUToNVVMPass());
         pm.addPass(createConvertVectorToSCFPass());
         pm.addPass(createSCFToControlFlowPass());
         pm.addPass(createConvertNVVMToLLVMPass());
         pm.addPass(createConvertFuncToLLVMPass());
         pm.addPass(memref::createExpandStridedMetadataPass());
         GpuNVVMAttachTargetOptions target;
         target.chip = chip;
         // PTX ISA 8.0 (CUDA 12.0): the oldest with every instruction the
         // kernels use (wgmma, TMA) and accepted by ptxas of CUDA 12 and 13.
         target.features = "+ptx80";
         target.optLevel = 3;
         pm.addPass(createGpuNVVMAttachTarget(target));
         pm.addPass(createLowerAffinePass());
         pm.addPass(createArithToLLVMConversionPass());
         pm.addPass(createConvertIndexToLLVMPass());
         pm.addPass(createCanonicalizerPass());
         pm.addPass(createCSEPass());
         OpPassManager &gpu = pm.nest<gpu::GPUModuleOp>();
         gpu.addPass(createConvertGpuOpsToNVVMOps());
         gpu.addPass(createCanonicalizerPass());
         gpu.addPass(createCSEPass());
         gpu.addPass(createReconcileUnrealizedCastsPass());
       }},
      {"ptx",
       [](OpPassManager &pm) {
         GpuModuleToBinaryPassOptions binary;
         binary.compilationTarget = "isa"; // PTX; ptxas makes the cubin
         pm.addPass(createGpuModuleToBinaryPass(binary));
       }},
  };
}

void mlir::tilt::buildGpuPipeline(OpPassManager &pm,
                                  const GpuPipelineOptions &options) {
  for (const PipelineStage &stage : getGpuPipelineStages(options))
    stage.addPasses(pm);
}

void mlir::tilt::registerGpuPipelineDependencies(DialectRegistry &registry) {
  // Conversion interfaces (convert-gpu-to-nvvm lowers every dialect through
  // them), the NVVM target attribute and LLVM IR translations for
  // gpu-module-to-binary.
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
}
