//===- Pipelines.h - Tilt's pass pipelines ----------------------*- C++ -*-===//

#ifndef TILT_COMPILER_PIPELINES_H
#define TILT_COMPILER_PIPELINES_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

#include <functional>
#include <string>
#include <vector>

namespace mlir::tilt {

struct CpuPipelineOptions : public PassPipelineOptions<CpuPipelineOptions> {
  Option<std::string> kernelName{*this, "kernel-name",
                                 llvm::cl::desc("entry function name"),
                                 llvm::cl::init("tilt_kernel")};
  Option<std::string> variant{
      *this, "variant",
      llvm::cl::desc("cpu_avx2, cpu_avx512 or cpu_amx when the op has no "
                     "tile_config"),
      llvm::cl::init("cpu_avx512")};
};

/// One named stage of a pipeline; `--dump-stages` writes the IR after each.
struct PipelineStage {
  std::string name;
  std::function<void(OpPassManager &)> addPasses;
};

/// spec module (tensors) -> kernel entry -> loop nest -> LLVM dialect.
std::vector<PipelineStage> getCpuPipelineStages(const CpuPipelineOptions &);
void buildCpuPipeline(OpPassManager &pm, const CpuPipelineOptions &options);

/// Registers `tilt-cpu-pipeline` for tilt-opt.
void registerTiltPipelines();

} // namespace mlir::tilt

#endif // TILT_COMPILER_PIPELINES_H
