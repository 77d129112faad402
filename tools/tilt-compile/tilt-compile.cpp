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

static int fail(const std::string &msg) {
  return toolError("tilt-compile", msg);
}

int main(int argc, char **argv) {
  SpecFlags flags;
  SpecModuleOptions modOpts;
  modOpts.extents = {0, 0, 0};
  TileConfig config;
  CompilerOptions compilerOptions;
  std::string emit = "spec", output = "-", target = "cpu";

  std::vector<Option> options;
  addSpecOptions(options, flags);
  addTileConfigOptions(options, config);
  options.push_back({"batch", "N", "batch size of the spec module (default: dynamic)",
                     [&](auto v) {
                       return parseInt("batch", v, modOpts.extents.batch, 1);
                     }});
  options.push_back({"seq", "N", "query and key length of the spec module",
                     [&](auto v) {
                       std::string err =
                           parseInt("seq", v, modOpts.extents.seqQ, 1);
                       modOpts.extents.seqK = modOpts.extents.seqQ;
                       return err;
                     }});
  options.push_back({"seq-k", "N", "key length when it differs from --seq",
                     [&](auto v) {
                       return parseInt("seq-k", v, modOpts.extents.seqK, 1);
                     }});
  options.push_back({"lse", "", "the spec module also returns lse",
                     [&](auto) {
                       modOpts.withLse = true;
                       return std::string();
                     }});
  options.push_back(
      targetOption("code generation target (default cpu)", target));
  options.push_back(archOption("CUDA architecture with --target cuda "
                               "(default: the variant's)",
                               compilerOptions.cudaArch));
  std::optional<CpuClass> cpuClass;
  options.push_back(cpuClassOption(
      "ISA class to generate for: " + cpuClassNames() +
          " (default: this machine's)",
      cpuClass));
  options.push_back(
      {"cpu", "NAME",
       "LLVM CPU to generate for, e.g. sapphirerapids (default: this "
       "machine's class)",
       [&](std::string_view v) {
         compilerOptions.machine.cpu = v;
         return std::string();
       }});
  options.push_back({"cpu-features", "LIST",
                     "LLVM features with --cpu, e.g. +avx512f,+fma",
                     [&](std::string_view v) {
                       compilerOptions.machine.features = v;
                       return std::string();
                     }});
  options.push_back(
      {"emit", "KIND",
       "spec|mlir, then cpu: llvm|asm|obj|so, cuda: ptx|cubin|artifact "
       "(default spec)",
       [&](std::string_view v) {
         emit = v;
         return parseEmit(v) ? std::string()
                             : fmt::format("--emit must be one of spec, mlir, "
                                           "llvm, asm, obj, so, ptx, cubin, "
                                           "artifact; got '{}'",
                                           v);
       }});
  options.push_back({"dump-stages", "DIR", "write the IR after every stage",
                     [&](std::string_view v) {
                       compilerOptions.dumpStagesDir = v;
                       return std::string();
                     }});
  options.push_back({"o", "FILE", "output file (default: stdout)",
                     [&](std::string_view v) {
                       output = v;
                       return std::string();
                     }});
  std::vector<std::string> positional;
  if (std::optional<int> exit = parseCommandLine(
          argc, argv, options, "tilt-compile",
          "tilt-compile [spec flags] [tile config] [--emit KIND] "
          "[--dump-stages DIR] [-o FILE]",
          positional))
    return *exit;
  if (!positional.empty())
    return fail(fmt::format("unexpected argument '{}'", positional.front()));
  if (std::string err = finishSpecFlags(flags); !err.empty())
    return fail(err);
  if (std::string err = finishTileConfig(config); !err.empty())
    return fail(err);
  if (!compilerOptions.cudaArch.empty() && target != "cuda")
    return fail("--arch needs --target cuda");
  if (cpuClass) {
    if (!compilerOptions.machine.cpu.empty())
      return fail("--cpu-class and --cpu exclude each other");
    std::string extra = compilerOptions.machine.features;
    compilerOptions.machine = CpuMachine::forClass(*cpuClass);
    if (!extra.empty())
      compilerOptions.machine.features +=
          (compilerOptions.machine.features.empty() ? "" : ",") + extra;
  }
  if (!compilerOptions.machine.features.empty() &&
      compilerOptions.machine.cpu.empty())
    return fail("--cpu-features needs --cpu or --cpu-class");

  // Custom slopes decide between an [H] and a [B,H] operand.
  if (!flags.slopesFile.empty()) {
    NpyArray slopes;
    if (std::string err = readNpy(flags.slopesFile, slopes); !err.empty())
      return fail(err);
    bool perHead = slopes.shape.size() == 1 &&
                   slopes.shape[0] == flags.spec.heads;
    bool perBatch = slopes.shape.size() == 2 &&
                    slopes.shape[1] == flags.spec.heads &&
                    (modOpts.extents.batch == 0 ||
                     slopes.shape[0] == modOpts.extents.batch);
    if (!perHead && !perBatch)
      return fail(fmt::format("--slopes: {} has shape {}, expected [H] or "
                              "[B, H] with H = {}",
                              flags.slopesFile, slopes.shapeString(),
                              flags.spec.heads));
    modOpts.slopesPerBatch = perBatch;
  }

  std::string text;
  Emit what = *parseEmit(emit);
  if (what == Emit::Spec && compilerOptions.dumpStagesDir.empty()) {
    // The spec as stated, with the sizes given on the command line.
    mlir::MLIRContext ctx;
    std::string diagnostics;
    mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
      diagnostics += d.str();
      return mlir::success();
    });
    mlir::OwningOpRef<mlir::ModuleOp> module =
        buildSpecModule(ctx, flags.spec, modOpts);
    if (!module)
      return fail("the spec did not verify: " + diagnostics);
    llvm::raw_string_ostream os(text);
    module->print(os);
    os << '\n';
  } else {
    Compiler compiler(compilerOptions);
    if (std::string err =
            compiler.compileTo(flags.spec, config,
                               target == "cuda" ? Target::CUDA : Target::CPU,
                               what, text);
        !err.empty())
      return fail(err);
  }

  std::error_code ec;
  llvm::raw_fd_ostream os(output, ec);
  if (ec)
    return fail(fmt::format("-o {}: {}", output, ec.message()));
  os << text;
  return 0;
}
