//===- Compiler.h - The compiler API: spec + config + target -> artifact -===//
//
// What tools and the runtime call. Builds the spec module, runs the target's
// pipeline (optionally writing the IR after each stage) and emits the
// requested form. Implements the runtime's KernelCompiler interface, so a
// Runtime JIT-compiles through it on a cache miss.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_COMPILER_COMPILER_H
#define TILT_COMPILER_COMPILER_H

#include "tilt/Compiler/CpuTarget.h"
#include "tilt/KernelCompiler.h"

#include <string>

namespace tilt {

/// What to produce: the spec module in the tilt dialect, the IR after the
/// whole MLIR pipeline (LLVM dialect; for CUDA the NVVM dialect, before PTX),
/// and then per target: CPU -- optimized LLVM IR, assembly, an object file,
/// the loadable shared object; CUDA -- PTX, the cubin, the runtime's artifact
/// (KernelABI.h: header + cubin + PTX).
enum class Emit {
  Spec,
  Mlir,
  LLVMIR,
  Assembly,
  Object,
  SharedObject,
  Ptx,
  Cubin,
  CudaArtifact
};
std::optional<Emit> parseEmit(std::string_view s);

struct CompilerOptions {
  /// Empty: the host's ISA class (CpuIsa.h, after $TILT_CPU_CLASS), tuned
  /// for the host; CpuMachine::forClass() cross-compiles for a class.
  CpuMachine machine;
  std::string dumpStagesDir; ///< non-empty: write the IR after every stage
  /// CUDA: the architecture to generate for (sm_80, sm_90a, ...). Empty:
  /// the variant's own (gpu_sm80 -> sm_80, gpu_sm90a -> sm_90a).
  std::string cudaArch;
  /// Set: called after every phase of a compile (building the spec module,
  /// each MLIR stage, then the CPU target's translate, optimize, codegen and
  /// link) with its wall time, on the compiling thread.
  PhaseTimer onPhase;
  /// Verify the IR after every pass, not only after every stage. Off in the
  /// JIT: the verifier ran after each of the CPU pipeline's ~20 passes and
  /// took about a tenth of a cold compile.
  bool verifyEachPass = false;
};

class Compiler final : public KernelCompiler {
public:
  explicit Compiler(CompilerOptions options = {});

  std::string fingerprint(Target target) const override;
  TileConfig defaultConfig(const AttentionSpec &spec,
                           Target target) const override;
  std::string compile(const AttentionSpec &spec, const TileConfig &config,
                      Target target, std::string &artifact) override;

  /// Like compile(), stopping at (and returning) any stage.
  std::string compileTo(const AttentionSpec &spec, const TileConfig &config,
                        Target target, Emit emit, std::string &out);

  const CpuMachine &machine() const { return cpu; }

private:
  CompilerOptions options;
  CpuMachine cpu;
  /// A bad machine or $TILT_CPU_CLASS: every CPU compile returns it.
  std::string machineError;
};

} // namespace tilt

#endif // TILT_COMPILER_COMPILER_H
