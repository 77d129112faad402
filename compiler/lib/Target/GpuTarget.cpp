//===- GpuTarget.cpp - gpu.binary (PTX) -> cubin ---------------------------===//

#include "tilt/Compiler/GpuTarget.h"
#include "tilt/KernelABI.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <fmt/format.h>
#include <regex>

namespace tilt {

std::string PtxasReport::summary() const {
  return fmt::format("registers {}, stack {} B, spill stores {} B, spill "
                     "loads {} B",
                     registers, stackBytes, spillStoreBytes, spillLoadBytes);
}

std::string extractPtx(mlir::ModuleOp module, std::string &ptx) {
  int found = 0;
  module.walk([&](mlir::gpu::BinaryOp binary) {
    for (mlir::Attribute a : binary.getObjectsAttr()) {
      auto object = llvm::dyn_cast<mlir::gpu::ObjectAttr>(a);
      if (!object)
        continue;
      ptx = object.getObject().getValue().str();
      ++found;
    }
  });
  if (found != 1)
    return fmt::format("expected one PTX object in the gpu.binary, found {}",
                       found);
  // The object may carry a trailing NUL; the artifact's PTX has none.
  while (!ptx.empty() && ptx.back() == '\0')
    ptx.pop_back();
  return {};
}

std::string findPtxas() {
  auto usable = [](const std::string &p) {
    return !p.empty() && llvm::sys::fs::can_execute(p);
  };
  if (const char *env = std::getenv("TILT_PTXAS"); env && usable(env))
    return env;
  if (const char *home = std::getenv("CUDA_HOME")) {
    std::string p = std::string(home) + "/bin/ptxas";
    if (usable(p))
      return p;
  }
  if (auto p = llvm::sys::findProgramByName("ptxas"))
    return *p;
  if (usable("/usr/local/cuda/bin/ptxas"))
    return "/usr/local/cuda/bin/ptxas";
  return {};
}

namespace {

/// Runs `program args...`, stdout and stderr into one string.
int runTool(const std::string &program, llvm::ArrayRef<std::string> args,
            std::string &output, std::string &error) {
  llvm::SmallString<128> log;
  if (llvm::sys::fs::createTemporaryFile("tilt-ptxas", "log", log)) {
    error = "cannot create a temporary file";
    return -1;
  }
  llvm::SmallVector<llvm::StringRef> argv = {program};
  for (const std::string &a : args)
    argv.push_back(a);
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, log.str(),
                                                log.str()};
  int rc = llvm::sys::ExecuteAndWait(program, argv, std::nullopt, redirects,
                                     /*SecondsToWait=*/600, 0, &error);
  if (auto buf = llvm::MemoryBuffer::getFile(log))
    output = (*buf)->getBuffer().str();
  llvm::sys::fs::remove(log);
  return rc;
}

} // namespace

std::string ptxasVersion() {
  static const std::string version = [] {
    std::string ptxas = findPtxas();
    if (ptxas.empty())
      return std::string("none");
    std::string out, err;
    if (runTool(ptxas, {"--version"}, out, err) != 0)
      return std::string("none");
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
      out.pop_back();
    size_t nl = out.rfind('\n');
    return nl == std::string::npos ? out : out.substr(nl + 1);
  }();
  return version;
}

PtxasReport parsePtxasReport(const std::string &log) {
  // One section per entry function. The attention kernel's when the module
  // has a helper (gpu_decode_sm80's tilt_merge); the worst of all when it
  // has several main kernels (gpu_bwd_sm80's two).
  static const std::regex regs(R"(Used (\d+) registers)");
  static const std::regex frame(
      R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  auto parse = [](const std::string &text) {
    PtxasReport r;
    std::smatch m;
    if (std::regex_search(text, m, regs))
      r.registers = std::stoll(m[1]);
    if (std::regex_search(text, m, frame)) {
      r.stackBytes = std::stoll(m[1]);
      r.spillStoreBytes = std::stoll(m[2]);
      r.spillLoadBytes = std::stoll(m[3]);
    }
    return r;
  };
  const std::string marker = "Function properties for ";
  PtxasReport worst;
  bool found = false;
  for (size_t at = log.find(marker); at != std::string::npos;
       at = log.find(marker, at + 1)) {
    const size_t nameEnd = log.find_first_of("\r\n", at);
    const std::string name =
        log.substr(at + marker.size(), nameEnd - at - marker.size());
    const size_t next = log.find("Compiling entry function", at);
    const PtxasReport r =
        parse(log.substr(at, next == std::string::npos ? next : next - at));
    if (name == kCudaKernelName)
      return r;
    if (name == kCudaMergeKernelName)
      continue;
    found = true;
    worst.registers = std::max(worst.registers, r.registers);
    worst.stackBytes = std::max(worst.stackBytes, r.stackBytes);
    worst.spillStoreBytes = std::max(worst.spillStoreBytes, r.spillStoreBytes);
    worst.spillLoadBytes = std::max(worst.spillLoadBytes, r.spillLoadBytes);
  }
  return found ? worst : parse(log);
}

std::string runPtxas(const std::string &ptx, const std::string &arch,
                     std::string &cubin, PtxasReport &report) {
  std::string ptxas = findPtxas();
  if (ptxas.empty())
    return "ptxas not found (set TILT_PTXAS or CUDA_HOME, or put the CUDA "
           "toolkit's bin/ on PATH)";
  llvm::SmallString<128> in, out;
  if (llvm::sys::fs::createTemporaryFile("tilt-kernel", "ptx", in) ||
      llvm::sys::fs::createTemporaryFile("tilt-kernel", "cubin", out))
    return "cannot create temporary files for ptxas";
  auto cleanup = [&] {
    llvm::sys::fs::remove(in);
    llvm::sys::fs::remove(out);
  };
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(in, ec);
    if (ec) {
      cleanup();
      return "cannot write the PTX for ptxas: " + ec.message();
    }
    os << ptx;
  }
  std::string log, error;
  int rc = runTool(ptxas,
                   {"-arch=" + arch, "-O3", "-v", in.str().str(), "-o",
                    out.str().str()},
                   log, error);
  if (rc != 0) {
    cleanup();
    std::string first = log.substr(0, log.find('\n'));
    return fmt::format("ptxas -arch={} failed ({}): {}", arch, rc,
                       first.empty() ? error : first);
  }
  auto buf = llvm::MemoryBuffer::getFile(out);
  if (!buf) {
    cleanup();
    return "ptxas wrote no cubin";
  }
  cubin = (*buf)->getBuffer().str();
  report = parsePtxasReport(log);
  cleanup();
  return {};
}

} // namespace tilt
