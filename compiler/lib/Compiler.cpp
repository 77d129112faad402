//===- Compiler.cpp - The compiler API ------------------------------------===//

#include "tilt/Compiler/Compiler.h"
#include "tilt/Artifacts.h"
#include "tilt/Compiler/Configs.h"
#include "tilt/Compiler/GpuTarget.h"
#include "tilt/Compiler/Pipelines.h"
#include "tilt/Compiler/SpecBuilder.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/KernelABI.h"
#include "tilt/TilePolicy.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

namespace tilt {

std::optional<Emit> parseEmit(std::string_view s) {
  static const std::pair<const char *, Emit> names[] = {
      {"spec", Emit::Spec},
      {"mlir", Emit::Mlir},
      {"llvm", Emit::LLVMIR},
      {"asm", Emit::Assembly},
      {"obj", Emit::Object},
      {"so", Emit::SharedObject},
      {"ptx", Emit::Ptx},
      {"cubin", Emit::Cubin},
      {"artifact", Emit::CudaArtifact}};
  for (auto [name, e] : names)
    if (s == name)
      return e;
  return std::nullopt;
}

Compiler::Compiler(CompilerOptions opts)
    : options(std::move(opts)),
      cpu(options.machine.cpu.empty() ? CpuMachine::host() : options.machine) {
  if (options.machine.cpu.empty())
    machineError = hostCpu().error;
  else
    machineError = cpu.validate();
}

std::string Compiler::fingerprint(Target target) const {
  if (target == Target::CUDA)
    return fmt::format("tilt={};abi={};llvm={};arch={};ptxas={}", TILT_VERSION,
                       kKernelAbiVersion, LLVM_VERSION_STRING, options.cudaArch,
                       ptxasVersion());
  return fmt::format("tilt={};abi={};llvm={};{}", TILT_VERSION,
                     kKernelAbiVersion, LLVM_VERSION_STRING, cpu.str());
}

TileConfig Compiler::defaultConfig(const AttentionSpec &spec,
                                   Target target) const {
  if (target == Target::CUDA)
    return completeGpuConfig(spec, TileConfig(), options.cudaArch);
  return defaultCpuConfig(
      defaultCpuVariant(spec, [&](std::string_view f) { return cpu.has(f); }));
}

std::string Compiler::compile(const AttentionSpec &spec,
                              const TileConfig &config, Target target,
                              std::string &artifact) {
  return compileTo(spec, config, target,
                   target == Target::CUDA ? Emit::CudaArtifact
                                          : Emit::SharedObject,
                   artifact);
}

namespace {

/// One compile: the MLIR context and module of a spec with its pinned
/// configuration, the stage runner and the per-target finishers that
/// Compiler::compileTo drives.
class CompileJob {
public:
  CompileJob(const AttentionSpec &spec, const TileConfig &config, bool cuda,
             const CompilerOptions &options)
      : spec(spec), config(config), cuda(cuda), dumpDir(options.dumpStagesDir),
        verifyEachPass(options.verifyEachPass), onPhase(options.onPhase),
        clock(onPhase), ctx(registry(cuda)),
        handler(&ctx, [this](mlir::Diagnostic &d) {
          if (d.getSeverity() == mlir::DiagnosticSeverity::Error)
            diagnostics += (diagnostics.empty() ? "" : "; ") + d.str();
          return mlir::success();
        }) {
    ctx.loadDialect<mlir::LLVM::LLVMDialect>();
  }

  /// The spec module with the configuration pinned on its op (the IR carries
  /// the tuning decision), checked against the target before any codegen.
  std::string buildAndPin(const CpuMachine &cpu);
  /// Writes the spec module as the 00 stage; `out` too when it is all that
  /// was asked for.
  std::string specStage(bool stop, std::string &out);
  std::string finishCuda(const std::string &archOption, Emit emit,
                         std::string &out);
  std::string finishCpu(const CpuMachine &cpu, Emit emit, std::string &out);

private:
  static mlir::DialectRegistry registry(bool cuda) {
    mlir::DialectRegistry r;
    if (cuda)
      mlir::tilt::registerGpuPipelineDependencies(r);
    return r;
  }
  std::string print() {
    std::string s;
    llvm::raw_string_ostream os(s);
    module->print(os);
    return s;
  }
  /// With --dump-stages, writes `text` as stage file `name`.
  std::string dump(const std::string &name, const std::string &text) const;
  /// Runs `stages` in order, dumping the IR after each; after the one named
  /// `stopAfter` the module's text is the output and `stopped` is set.
  std::string runStages(const std::vector<mlir::tilt::PipelineStage> &stages,
                        std::string_view stopAfter, bool &stopped,
                        std::string &out);

  const AttentionSpec &spec;
  const TileConfig &config;
  bool cuda;
  std::string dumpDir;
  bool verifyEachPass;
  const PhaseTimer &onPhase;
  PhaseClock clock;
  mlir::MLIRContext ctx;
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  mlir::tilt::TileConfigAttr attr;
  int stageNo = 0;
};

std::string CompileJob::dump(const std::string &name,
                             const std::string &text) const {
  if (dumpDir.empty())
    return {};
  llvm::sys::fs::create_directories(dumpDir);
  llvm::SmallString<128> path(dumpDir);
  llvm::sys::path::append(path, name);
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec)
    return fmt::format("--dump-stages: cannot write {}: {}", path.str().str(),
                       ec.message());
  os << text;
  return {};
}

std::string CompileJob::buildAndPin(const CpuMachine &cpu) {
  // Kernels are specialized on the spec, not on batch or sequence lengths.
  SpecModuleOptions modOpts;
  modOpts.extents = {0, 0, 0};
  modOpts.withLse = true;
  modOpts.slopesPerBatch = true;
  std::optional<KernelVariant> variant = config.kind();
  if (!variant)
    return fmt::format("tile config: unknown variant '{}'", config.variant);
  modOpts.backward = isBackwardVariant(*variant);
  module = buildSpecModule(ctx, spec, modOpts);
  if (!module)
    return "the spec did not verify: " + diagnostics;

  if (!cuda && isGpuVariant(*variant))
    return fmt::format("tile config: variant {} is for target cuda",
                       config.variant);
  auto emitError = [&] { return mlir::emitError(mlir::UnknownLoc::get(&ctx)); };
  // The pass tilt-pin-tile-config would pin the same way; the JIT calls the
  // shared chooser directly, with the tuned or requested values.
  mlir::FailureOr<mlir::tilt::TileConfigAttr> pinned = mlir::failure();
  module->walk([&](mlir::tilt::AttentionOp op) {
    pinned = mlir::tilt::pinTileConfig(op, config, emitError);
  });
  module->walk([&](mlir::tilt::AttentionBackwardOp op) {
    pinned = mlir::tilt::pinTileConfig(op, config, emitError);
  });
  if (failed(pinned))
    return "tile config: " + diagnostics;
  attr = *pinned;
  clock.lap("spec");
  if (cuda)
    return {};
  // Before any code generation: LLVM aborts on an intrinsic the target lacks
  // (AMX tile ops without amx-tile), it does not return an error.
  if (std::string err = checkVariantRuns(
          config.variant, [&](std::string_view f) { return cpu.has(f); },
          "target CPU " + cpu.describe());
      !err.empty())
    return "tile config: " + err;
  return {};
}

std::string CompileJob::specStage(bool stop, std::string &out) {
  std::string text = print();
  if (std::string err = dump("00-spec.mlir", text); !err.empty())
    return err;
  if (stop)
    out = std::move(text);
  return {};
}

std::string
CompileJob::runStages(const std::vector<mlir::tilt::PipelineStage> &stages,
                      std::string_view stopAfter, bool &stopped,
                      std::string &out) {
  for (const mlir::tilt::PipelineStage &stage : stages) {
    mlir::PassManager pm(&ctx);
    pm.enableVerifier(verifyEachPass);
    stage.addPasses(pm);
    if (failed(pm.run(*module)))
      return fmt::format("stage {} failed: {}", stage.name, diagnostics);
    if (!verifyEachPass && failed(mlir::verify(*module)))
      return fmt::format("stage {} produced IR that does not verify: {}",
                         stage.name, diagnostics);
    clock.lap(stage.name);
    if (std::string err =
            dump(fmt::format("{:02}-{}.mlir", ++stageNo, stage.name), print());
        !err.empty())
      return err;
    if (stage.name == stopAfter) {
      out = print();
      stopped = true;
      return {};
    }
  }
  return {};
}

std::string CompileJob::finishCuda(const std::string &archOption, Emit emit,
                                   std::string &out) {
  mlir::tilt::GpuPipelineOptions pipeline;
  const std::string arch = !archOption.empty() ? archOption
                           : config.is(KernelVariant::GpuSm90a)
                               ? std::string("sm_90a")
                               : std::string("sm_80");
  pipeline.chip = arch;
  // --emit mlir stops after the NVVM stage (the PTX stage only wraps it).
  bool stopped = false;
  if (std::string err =
          runStages(mlir::tilt::getGpuPipelineStages(pipeline),
                    emit == Emit::Mlir ? "nvvm" : "", stopped, out);
      !err.empty() || stopped)
    return err;
  std::string ptx;
  if (std::string err = extractPtx(*module, ptx); !err.empty())
    return err;
  if (std::string err = dump(fmt::format("{:02}-kernel.ptx", ++stageNo), ptx);
      !err.empty())
    return err;
  if (emit == Emit::Ptx) {
    out = std::move(ptx);
    return {};
  }
  std::string cubin;
  PtxasReport report;
  std::string ptxasError = runPtxas(ptx, arch, cubin, report);
  if (emit == Emit::Cubin) {
    if (!ptxasError.empty())
      return ptxasError;
    out = std::move(cubin);
    return {};
  }
  // The artifact: without ptxas it carries the PTX alone (the driver
  // compiles it at load time); a PTX that ptxas rejects is an error.
  if (!ptxasError.empty() && !findPtxas().empty())
    return ptxasError;
  CudaArtifact artifact;
  artifact.abi = kKernelAbiVersion;
  artifact.variant = config.variant;
  artifact.arch = arch;
  artifact.kernel = config.is(KernelVariant::GpuBwdSm80) ? kCudaBwdDqKernelName
                                                         : kCudaKernelName;
  artifact.blockM = config.blockM;
  artifact.blockN = config.blockN;
  artifact.numWarps = config.numWarps;
  artifact.numStages = config.numStages;
  artifact.threads = 32 * config.numWarps;
  artifact.smem = mlir::tilt::gpuSharedMemoryBytes(spec, attr);
  if (config.is(KernelVariant::GpuSm90a))
    std::fill_n(artifact.tma, 3, true);
  artifact.ptxas =
      ptxasError.empty() ? report.summary() : "not run: ptxas not found";
  artifact.spec = spec.canonical();
  artifact.cubin = std::move(cubin);
  artifact.ptx = std::move(ptx);
  out = writeCudaArtifact(artifact);
  return {};
}

std::string CompileJob::finishCpu(const CpuMachine &cpu, Emit emit,
                                  std::string &out) {
  mlir::tilt::CpuPipelineOptions pipeline;
  pipeline.expandBf16 = spec.dtype == DType::BF16 && !cpu.has("avx512bf16");
  pipeline.nativeBf16Dot = cpu.has("avx512bf16");
  bool stopped = false;
  if (std::string err =
          runStages(mlir::tilt::getCpuPipelineStages(pipeline),
                    emit == Emit::Mlir ? "llvm" : "", stopped, out);
      !err.empty() || stopped)
    return err;

  // Checked by buildAndPin: every CPU variant needs x86-64-v3 or better.
  const std::string info = formatKernelInfo(
      config, cpu.cpuClass().value_or(CpuClass::X86_64_V3), spec);
  // KernelABI.h's descriptor lists: the backward has six more tensors
  // (grad_o, grad_lse, dq, dk, dv, row_scale) and, with custom slopes,
  // dslopes; the decode family takes its split-KV parts.
  const bool backward = isBackwardVariant(*config.kind());
  const unsigned customSlopes =
      spec.hasAlibi() && spec.slopes == SlopeSource::Custom;
  unsigned numMemrefs = (backward ? 11 + 2 * customSlopes : 5 + customSlopes) +
                        spec.keyPaddingMask + 2 * spec.varlen +
                        (backward ? 0 : 2 * (spec.pageSize != 0)) +
                        2 * isDecodeVariant(*config.kind());
  unsigned numIndexArgs = spec.positionOffsets ? 2 : 0;
  CpuEmit cpuEmit = emit == Emit::LLVMIR     ? CpuEmit::LLVMIR
                    : emit == Emit::Assembly ? CpuEmit::Assembly
                    : emit == Emit::Object   ? CpuEmit::Object
                                             : CpuEmit::SharedObject;
  if (!dumpDir.empty() && cpuEmit != CpuEmit::LLVMIR) {
    std::string ir;
    if (std::string err =
            emitCpuArtifact(*module, pipeline.kernelName, numMemrefs,
                            numIndexArgs, info, cpu, CpuEmit::LLVMIR, ir);
        !err.empty())
      return err;
    if (std::string err = dump(fmt::format("{:02}-llvm.ll", ++stageNo), ir);
        !err.empty())
      return err;
  }
  return emitCpuArtifact(*module, pipeline.kernelName, numMemrefs, numIndexArgs,
                         info, cpu, cpuEmit, out, onPhase);
}

} // namespace

std::string Compiler::compileTo(const AttentionSpec &spec,
                                const TileConfig &requested, Target target,
                                Emit emit, std::string &out) {
  const bool cuda = target == Target::CUDA;
  const bool cpuOnly = emit == Emit::LLVMIR || emit == Emit::Assembly ||
                       emit == Emit::Object || emit == Emit::SharedObject;
  const bool cudaOnly =
      emit == Emit::Ptx || emit == Emit::Cubin || emit == Emit::CudaArtifact;
  if ((cuda && cpuOnly) || (!cuda && cudaOnly))
    return fmt::format("--emit: target {} emits {}", toString(target),
                       cuda ? "spec, mlir, ptx, cubin or artifact"
                            : "spec, mlir, llvm, asm, obj or so");
  if (std::string err = spec.validate(); !err.empty())
    return "invalid spec: " + err;
  if (!cuda && !machineError.empty())
    return machineError;
  // The tile policy completes what the caller left open.
  const TileConfig config =
      cuda ? completeGpuConfig(spec, requested, options.cudaArch)
      : requested.isDefault() ? defaultConfig(spec, target)
                              : requested;

  CompileJob job(spec, config, cuda, options);
  if (std::string err = job.buildAndPin(cpu); !err.empty())
    return err;
  if (std::string err = job.specStage(emit == Emit::Spec, out);
      !err.empty() || emit == Emit::Spec)
    return err;
  return cuda ? job.finishCuda(options.cudaArch, emit, out)
              : job.finishCpu(cpu, emit, out);
}

} // namespace tilt
