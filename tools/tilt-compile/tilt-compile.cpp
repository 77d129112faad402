//===- tilt-compile.cpp - spec (+ config + target) -> artifact ------------===//
//
// Reads a spec from the shared command-line flags, builds the `tilt` dialect
// module for it, verifies it and writes the requested stage.
//
//===----------------------------------------------------------------------===//

#include "Args.h"
#include "Npy.h"

#include "tilt/Compiler/Compiler.h"
#include "tilt/Compiler/SpecBuilder.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

#include <cstdio>

using namespace tilt;
using namespace tilt::tools;

namespace {

int fail(const std::string &msg) { return toolError("tilt-compile", msg); }

struct CompileOptions {
  SpecFlags flags;
  SpecModuleOptions modOpts;
  TileConfig config;
  CompilerOptions compiler;
  std::optional<CpuClass> cpuClass;
  std::string emit = "spec", output = "-", target = "cpu";
  bool timing = false;
};

std::vector<Option> compileOptions(CompileOptions &o) {
  std::vector<Option> options;
  addSpecOptions(options, o.flags);
  addTileConfigOptions(options, o.config);
  SpecModuleOptions &mod = o.modOpts;
  options.push_back({"batch", "N",
                     "batch size of the spec module (default: dynamic)",
                     [&mod](auto v) {
                       return parseInt("batch", v, mod.extents.batch, 1);
                     }});
  options.push_back({"seq", "N", "query and key length of the spec module",
                     [&mod](auto v) {
                       std::string err =
                           parseInt("seq", v, mod.extents.seqQ, 1);
                       mod.extents.seqK = mod.extents.seqQ;
                       return err;
                     }});
  options.push_back({"seq-k", "N", "key length when it differs from --seq",
                     [&mod](auto v) {
                       return parseInt("seq-k", v, mod.extents.seqK, 1);
                     }});
  options.push_back({"page-size", "N",
                     "k and v are a paged KV cache of this page size (a "
                     "power of two from 8 to 256; on the CPU the prefill "
                     "kernel unless --variant names a decode one, on the GPU "
                     "gpu_decode_sm80)",
                     [&o](auto v) {
                       return parseInt("page-size", v, o.flags.spec.pageSize,
                                       1);
                     }});
  options.push_back({"lse", "", "the spec module also returns lse",
                     [&mod](auto) {
                       mod.withLse = true;
                       return std::string();
                     }});
  options.push_back(
      targetOption("code generation target (default cpu)", o.target));
  options.push_back(archOption("CUDA architecture with --target cuda "
                               "(default: the variant's)",
                               o.compiler.cudaArch));
  options.push_back(cpuClassOption(
      "ISA class to generate for: " + cpuClassNames() +
          " (default: this machine's)",
      o.cpuClass));
  options.push_back(stringOption(
      "cpu", "NAME",
      "LLVM CPU to generate for, e.g. sapphirerapids (default: this "
      "machine's class)",
      o.compiler.machine.cpu));
  options.push_back(stringOption("cpu-features", "LIST",
                                 "LLVM features with --cpu, e.g. "
                                 "+avx512f,+fma",
                                 o.compiler.machine.features));
  options.push_back(
      {"emit", "KIND",
       "spec|mlir, then cpu: llvm|asm|obj|so, cuda: ptx|cubin|artifact "
       "(default spec)",
       [&o](std::string_view v) {
         o.emit = v;
         return parseEmit(v) ? std::string()
                             : fmt::format("--emit must be one of spec, mlir, "
                                           "llvm, asm, obj, so, ptx, cubin, "
                                           "artifact; got '{}'",
                                           v);
       }});
  options.push_back(stringOption("dump-stages", "DIR",
                                 "write the IR after every stage",
                                 o.compiler.dumpStagesDir));
  options.push_back(boolOption(
      "timing", "print each compile phase's wall time to stderr", o.timing));
  options.push_back(boolOption("verify-each-pass",
                               "verify the IR after every pass (default: "
                               "after every stage, as the JIT does)",
                               o.compiler.verifyEachPass));
  options.push_back(
      stringOption("o", "FILE", "output file (default: stdout)", o.output));
  return options;
}

/// The machine to generate for: --cpu-class's, or --cpu with its features.
std::string finishMachine(CompileOptions &o) {
  CpuMachine &machine = o.compiler.machine;
  if (!o.compiler.cudaArch.empty() && o.target != "cuda")
    return "--arch needs --target cuda";
  if (o.cpuClass) {
    if (!machine.cpu.empty())
      return "--cpu-class and --cpu exclude each other";
    std::string extra = machine.features;
    machine = CpuMachine::forClass(*o.cpuClass);
    if (!extra.empty())
      machine.features += (machine.features.empty() ? "" : ",") + extra;
  }
  if (!machine.features.empty() && machine.cpu.empty())
    return "--cpu-features needs --cpu or --cpu-class";
  return {};
}

/// Custom slopes decide between an [H] and a [B,H] operand.
std::string finishSlopes(CompileOptions &o) {
  if (o.flags.slopesFile.empty())
    return {};
  NpyArray slopes;
  if (std::string err = readNpy(o.flags.slopesFile, slopes); !err.empty())
    return err;
  const int64_t heads = o.flags.spec.heads, batch = o.modOpts.extents.batch;
  bool perHead = slopes.shape.size() == 1 && slopes.shape[0] == heads;
  bool perBatch = slopes.shape.size() == 2 && slopes.shape[1] == heads &&
                  (batch == 0 || slopes.shape[0] == batch);
  if (!perHead && !perBatch)
    return fmt::format("--slopes: {} has shape {}, expected [H] or [B, H] "
                       "with H = {}",
                       o.flags.slopesFile, slopes.shapeString(), heads);
  o.modOpts.slopesPerBatch = perBatch;
  return {};
}

std::optional<int> parseCompileOptions(int argc, char **argv,
                                       CompileOptions &o) {
  std::vector<Option> options = compileOptions(o);
  std::vector<std::string> positional;
  if (std::optional<int> exit = parseCommandLine(
          argc, argv, options, "tilt-compile",
          "tilt-compile [spec flags] [tile config] [--emit KIND] "
          "[--dump-stages DIR] [--timing] [--verify-each-pass] [-o FILE]",
          positional))
    return exit;
  if (!positional.empty())
    return fail(fmt::format("unexpected argument '{}'", positional.front()));
  // In order: each step may rely on the ones before it.
  for (auto finish :
       {+[](CompileOptions &c) { return finishSpecFlags(c.flags); },
        +[](CompileOptions &c) { return finishTileConfig(c.config); },
        &finishMachine, &finishSlopes})
    if (std::string err = finish(o); !err.empty())
      return fail(err);
  return std::nullopt;
}

/// The spec as stated, with the sizes given on the command line.
std::string printSpec(const CompileOptions &o, std::string &text) {
  mlir::MLIRContext ctx;
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
    diagnostics += d.str();
    return mlir::success();
  });
  mlir::OwningOpRef<mlir::ModuleOp> module =
      buildSpecModule(ctx, o.flags.spec, o.modOpts);
  if (!module)
    return "the spec did not verify: " + diagnostics;
  llvm::raw_string_ostream os(text);
  module->print(os);
  os << '\n';
  return {};
}

} // namespace

int main(int argc, char **argv) {
  CompileOptions o;
  o.modOpts.extents = {0, 0, 0};
  if (std::optional<int> exit = parseCompileOptions(argc, argv, o))
    return *exit;
  std::string text;
  const Emit what = *parseEmit(o.emit);
  if (what == Emit::Spec && o.compiler.dumpStagesDir.empty()) {
    if (std::string err = printSpec(o, text); !err.empty())
      return fail(err);
  } else {
    double total = 0;
    if (o.timing)
      o.compiler.onPhase = [&total](std::string_view phase, double ms) {
        total += ms;
        fmt::print(stderr, "timing {:<10} {:8.1f} ms\n", phase, ms);
      };
    Compiler compiler(o.compiler);
    if (std::string err = compiler.compileTo(
            o.flags.spec, o.config,
            o.target == "cuda" ? Target::CUDA : Target::CPU, what, text);
        !err.empty())
      return fail(err);
    if (o.timing)
      fmt::print(stderr, "timing {:<10} {:8.1f} ms\n", "total", total);
  }
  std::error_code ec;
  llvm::raw_fd_ostream os(o.output, ec);
  if (ec)
    return fail(fmt::format("-o {}: {}", o.output, ec.message()));
  os << text;
  return 0;
}
