//===- CpuTarget.cpp - LLVM dialect -> native x86-64 artifacts ------------===//

#include "tilt/Compiler/CpuTarget.h"
#include "tilt/KernelABI.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "lld/Common/Driver.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/X86TargetParser.h"

#include <mutex>

LLD_HAS_DRIVER(elf)

namespace tilt {

namespace {

void initializeLLVMOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

} // namespace

CpuMachine CpuMachine::host() {
  return forClass(hostCpu().cls.value_or(CpuClass::X86_64_V3),
                  llvm::sys::getHostCPUName().str());
}

CpuMachine CpuMachine::forClass(CpuClass cls, std::string tune) {
  CpuMachine m;
  m.cpu = std::string(cpuClassLlvmCpu(cls));
  m.features = cpuClassLlvmFeatures(cls);
  m.tuneCpu = std::move(tune);
  return m;
}

bool CpuMachine::has(std::string_view feature) const {
  llvm::StringMap<bool> on;
  llvm::SmallVector<llvm::StringRef> cpuFeatures;
  llvm::X86::getFeaturesForCPU(cpu, cpuFeatures);
  // updateImpliedFeatures sets what a feature implies (or, when disabling,
  // what implies it), not the feature itself.
  auto set = [&](llvm::StringRef f, bool enabled) {
    llvm::X86::updateImpliedFeatures(f, enabled, on);
    on[f] = enabled;
  };
  for (llvm::StringRef f : cpuFeatures)
    set(f, true);
  llvm::SmallVector<llvm::StringRef> parts;
  llvm::StringRef(features).split(parts, ',', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef p : parts) {
    p = p.trim();
    if (p.size() > 1 && (p[0] == '+' || p[0] == '-'))
      set(p.drop_front(), p[0] == '+');
  }
  auto it = on.find(llvm::StringRef(feature.data(), feature.size()));
  return it != on.end() && it->second;
}

std::optional<CpuClass> CpuMachine::cpuClass() const {
  return cpuClassOf([&](std::string_view f) { return has(f); });
}

std::string CpuMachine::validate() const {
  initializeLLVMOnce();
  std::string error;
  llvm::Triple triple(llvm::sys::getDefaultTargetTriple());
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return "no LLVM target for " + triple.str() + ": " + error;
  std::unique_ptr<llvm::MCSubtargetInfo> sti(
      target->createMCSubtargetInfo(triple, "", ""));
  auto knownCpu = [&](llvm::StringRef name) {
    return sti->isCPUStringValid(name);
  };
  if (!knownCpu(cpu))
    return "--cpu: '" + cpu +
           "' is not an x86-64 CPU LLVM knows (e.g. x86-64-v3, znver4, "
           "sapphirerapids)";
  if (!tuneCpu.empty() && !knownCpu(tuneCpu))
    return "tune cpu: '" + tuneCpu + "' is not an x86-64 CPU LLVM knows";
  llvm::SmallVector<llvm::StringRef> parts;
  llvm::StringRef(features).split(parts, ',', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef p : parts) {
    p = p.trim();
    if (p.size() < 2 || (p[0] != '+' && p[0] != '-'))
      return "--cpu-features: each feature is +NAME or -NAME, got '" +
             p.str() + "'";
    llvm::StringRef name = p.drop_front();
    auto all = sti->getAllProcessorFeatures();
    if (std::none_of(all.begin(), all.end(),
                     [&](const llvm::SubtargetFeatureKV &kv) {
                       return name == kv.Key;
                     }))
      // Not in the MC table: could be a typo that LLVM would only warn about.
      return "--cpu-features: '" + p.drop_front().str() +
             "' is not an x86-64 feature LLVM knows (e.g. avx512f, "
             "avx512bf16, amx-bf16)";
  }
  return {};
}

std::string CpuMachine::str() const {
  return (llvm::Twine("cpu=") + cpu + ";features=" + features +
          ";tune=" + tuneCpu)
      .str();
}

std::string CpuMachine::describe() const {
  std::optional<CpuClass> cls = cpuClass();
  std::string tune = tuneCpu.empty() ? "" : ", tuned for " + tuneCpu;
  if (cls && cpu == toString(*cls))
    return cpu + (tune.empty() ? "" : " (" + tune.substr(2) + ")");
  return cpu + " (" +
         (cls ? std::string(toString(*cls)) : std::string("below x86-64-v3")) +
         tune + ")";
}

namespace {

/// void tilt_cpu_entry(void **descriptors, i64 begin, i64 end): forwards the
/// descriptors, and the int64 values the slot after them points to, to the C
/// interface wrapper MLIR generated for the kernel.
void addPackedEntry(llvm::Module &m, llvm::Function *ciface,
                    unsigned numMemrefs, unsigned numIndexArgs) {
  llvm::LLVMContext &ctx = m.getContext();
  auto *ptr = llvm::PointerType::getUnqual(ctx);
  auto *i64 = llvm::Type::getInt64Ty(ctx);
  auto *type =
      llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), {ptr, i64, i64}, false);
  auto *entry = llvm::Function::Create(type, llvm::GlobalValue::ExternalLinkage,
                                       tilt::kCpuEntrySymbol, m);
  llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", entry));
  llvm::SmallVector<llvm::Value *> args;
  for (unsigned i = 0; i < numMemrefs; ++i) {
    llvm::Value *slot = b.CreateConstGEP1_64(ptr, entry->getArg(0), i);
    args.push_back(b.CreateLoad(ptr, slot));
  }
  if (numIndexArgs > 0) {
    llvm::Value *slot = b.CreateConstGEP1_64(ptr, entry->getArg(0), numMemrefs);
    llvm::Value *values = b.CreateLoad(ptr, slot);
    for (unsigned i = 0; i < numIndexArgs; ++i)
      args.push_back(b.CreateLoad(i64, b.CreateConstGEP1_64(i64, values, i)));
  }
  args.push_back(entry->getArg(1));
  args.push_back(entry->getArg(2));
  b.CreateCall(ciface, args);
  b.CreateRetVoid();
}

std::string linkSharedObject(llvm::StringRef object, std::string &out) {
  // lld reads and writes files; keep them in a private temp directory.
  llvm::SmallString<128> dir;
  if (std::error_code ec =
          llvm::sys::fs::createUniqueDirectory("tilt-link", dir))
    return "cannot create a temp directory: " + ec.message();
  llvm::SmallString<128> obj(dir), so(dir);
  llvm::sys::path::append(obj, "kernel.o");
  llvm::sys::path::append(so, "kernel.so");
  auto cleanup = [&] {
    llvm::sys::fs::remove(obj);
    llvm::sys::fs::remove(so);
    llvm::sys::fs::remove(dir);
  };
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(obj, ec);
    if (ec) {
      cleanup();
      return "cannot write " + obj.str().str() + ": " + ec.message();
    }
    os << object;
  }
  std::string diag;
  llvm::raw_string_ostream diagOS(diag);
  const char *args[] = {"ld.lld", "-shared", "--hash-style=gnu", "-O1",
                        obj.c_str(), "-o", so.c_str()};
  // lld keeps global state per link; one link at a time.
  static std::mutex lldMutex;
  lld::Result result;
  {
    std::lock_guard<std::mutex> lock(lldMutex);
    result = lld::lldMain(args, diagOS, diagOS, {{lld::Gnu, &lld::elf::link}});
  }
  if (result.retCode != 0) {
    cleanup();
    return "lld failed: " + diag;
  }
  auto buffer = llvm::MemoryBuffer::getFile(so);
  if (!buffer) {
    cleanup();
    return "cannot read the linked shared object";
  }
  out = (*buffer)->getBuffer().str();
  cleanup();
  return {};
}

} // namespace

std::string emitCpuArtifact(mlir::ModuleOp module,
                            const std::string &kernelName,
                            unsigned numMemrefArgs, unsigned numIndexArgs,
                            const std::string &info,
                            const CpuMachine &machineIn, CpuEmit emit,
                            std::string &out, const PhaseTimer &onPhase) {
  PhaseClock clock(onPhase);
  initializeLLVMOnce();
  CpuMachine machine = machineIn.cpu.empty() ? CpuMachine::host() : machineIn;

  mlir::registerBuiltinDialectTranslation(*module->getContext());
  mlir::registerLLVMDialectTranslation(*module->getContext());
  llvm::LLVMContext ctx;
  std::unique_ptr<llvm::Module> m = mlir::translateModuleToLLVMIR(module, ctx);
  if (!m)
    return "translation to LLVM IR failed";
  clock.lap("translate");

  llvm::Triple triple(llvm::sys::getDefaultTargetTriple());
  std::string error;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return "no LLVM target for " + triple.str() + ": " + error;
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      triple, machine.cpu, machine.features, options, llvm::Reloc::PIC_,
      std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  if (!tm)
    return "cannot create a target machine for cpu " + machine.cpu;
  m->setTargetTriple(triple);
  m->setDataLayout(tm->createDataLayout());

  llvm::Function *ciface = m->getFunction("_mlir_ciface_" + kernelName);
  if (!ciface)
    return "the module has no C interface for " + kernelName;
  addPackedEntry(*m, ciface, numMemrefArgs, numIndexArgs);
  auto *infoInit = llvm::ConstantDataArray::getString(ctx, info);
  new llvm::GlobalVariable(*m, infoInit->getType(), /*isConstant=*/true,
                           llvm::GlobalValue::ExternalLinkage, infoInit,
                           tilt::kKernelInfoSymbol);

  // Explicit 512-bit vector ops must stay 512-bit: without this the x86
  // backend splits them for CPUs tuned to prefer 256-bit vectors.
  for (llvm::Function &f : *m) {
    if (f.isDeclaration())
      continue;
    f.addFnAttr("target-cpu", machine.cpu);
    f.addFnAttr("target-features", machine.features);
    if (!machine.tuneCpu.empty())
      f.addFnAttr("tune-cpu", machine.tuneCpu);
    if (machine.has("avx512f")) {
      f.addFnAttr("prefer-vector-width", "512");
      f.addFnAttr("min-legal-vector-width", "512");
    }
  }

  {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    // The kernels arrive register-tiled and vectorized, their loops unrolled
    // where it pays; LLVM's own unrolling and interleaving only copy the
    // micro-kernels again. Off, a default cpu_avx2 kernel compiles in about
    // half the time (tilt-compile --timing: 370 -> 186 ms) and runs as fast.
    // O2 rather than O3 for the same reason: what O3 adds found nothing to
    // speed up in A/B runs of prefill, decode and backward kernels, and
    // costs about a tenth of the compile.
    llvm::PipelineTuningOptions tuning;
    tuning.LoopUnrolling = false;
    tuning.LoopInterleaving = false;
    llvm::PassBuilder pb(tm.get(), tuning);
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    llvm::ModulePassManager mpm =
        pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O2);
    mpm.run(*m, mam);
  }
  clock.lap("optimize");

  if (emit == CpuEmit::LLVMIR) {
    llvm::raw_string_ostream os(out);
    m->print(os, nullptr);
    return {};
  }
  llvm::SmallString<0> buffer;
  {
    llvm::raw_svector_ostream os(buffer);
    llvm::legacy::PassManager pm;
    auto type = emit == CpuEmit::Assembly ? llvm::CodeGenFileType::AssemblyFile
                                          : llvm::CodeGenFileType::ObjectFile;
    if (tm->addPassesToEmitFile(pm, os, nullptr, type))
      return "the target cannot emit this file type";
    pm.run(*m);
  }
  clock.lap("codegen");
  if (emit != CpuEmit::SharedObject) {
    out = buffer.str().str();
    return {};
  }
  std::string err = linkSharedObject(buffer.str(), out);
  clock.lap("link");
  return err;
}

} // namespace tilt
