//===- Pipelines.h - Tilt's pass pipelines ----------------------*- C++ -*-===//

#ifndef TILT_COMPILER_PIPELINES_H
#define TILT_COMPILER_PIPELINES_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "tilt/KernelCompiler.h"

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
      llvm::cl::init(
          std::string(::tilt::toString(::tilt::KernelVariant::CpuAvx512)))};
  Option<bool> expandBf16{
      *this, "expand-bf16",
      llvm::cl::desc("convert between f32 and bf16 with integer ops, for "
                     "CPUs without AVX512_BF16 (LLVM would otherwise call a "
                     "runtime library routine the kernel cannot link)"),
      llvm::cl::init(false)};
  Option<bool> nativeBf16Dot{
      *this, "native-bf16-dot",
      llvm::cl::desc("cpu_avx512bf16: vdpbf16ps (the target has "
                     "AVX512_BF16); false: two f32 FMAs per bf16 pair"),
      llvm::cl::init(true)};
};

/// One named stage of a pipeline; `--dump-stages` writes the IR after each.
struct GpuPipelineOptions : public PassPipelineOptions<GpuPipelineOptions> {
  Option<std::string> variant{
      *this, "variant",
      llvm::cl::desc("gpu_sm80 or gpu_sm90a when the op has no tile_config"),
      llvm::cl::init(
          std::string(::tilt::toString(::tilt::KernelVariant::GpuSm80)))};
  Option<std::string> chip{*this, "chip",
                           llvm::cl::desc("PTX target: sm_80, sm_90a, ..."),
                           llvm::cl::init("sm_80")};
  Option<int64_t> blockM{*this, "block-m", llvm::cl::desc("0: default"),
                         llvm::cl::init(0)};
  Option<int64_t> blockN{*this, "block-n", llvm::cl::desc("0: default"),
                         llvm::cl::init(0)};
  Option<int64_t> numWarps{*this, "num-warps", llvm::cl::desc("0: default"),
                           llvm::cl::init(0)};
  Option<int64_t> numStages{*this, "num-stages", llvm::cl::desc("0: default"),
                            llvm::cl::init(0)};
};

struct PipelineStage {
  std::string name;
  std::function<void(OpPassManager &)> addPasses;
};

/// spec module (tensors) -> kernel entry -> loop nest -> LLVM dialect.
std::vector<PipelineStage> getCpuPipelineStages(const CpuPipelineOptions &);
void buildCpuPipeline(OpPassManager &pm, const CpuPipelineOptions &options);

/// Registers `tilt-cpu-pipeline` for tilt-opt.
/// kernel (convert-tilt-to-gpu), nvvm (everything in NVVM/LLVM dialects,
/// the target attached), ptx (gpu.binary holding the PTX).
std::vector<PipelineStage> getGpuPipelineStages(const GpuPipelineOptions &);
void buildGpuPipeline(OpPassManager &pm, const GpuPipelineOptions &options);

void registerTiltPipelines();

/// What a context running the GPU pipeline needs registered.
void registerGpuPipelineDependencies(DialectRegistry &registry);

} // namespace mlir::tilt

#endif // TILT_COMPILER_PIPELINES_H
