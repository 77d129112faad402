//===- CpuTarget.h - LLVM dialect -> native x86-64 artifacts ----*- C++ -*-===//

#ifndef TILT_COMPILER_CPUTARGET_H
#define TILT_COMPILER_CPUTARGET_H

#include "tilt/CpuIsa.h"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mlir {
class ModuleOp;
} // namespace mlir

namespace tilt {

/// The machine code generation targets: an LLVM CPU name, explicit
/// features ("+avx512bf16,-avx512f,...") on top of that CPU's own, and the
/// CPU whose scheduling model tunes the code (empty: `cpu`'s). The host is
/// the host's ISA class (CpuIsa.h) tuned for the host's model, so that a
/// kernel runs on every CPU of its class.
struct CpuMachine {
  std::string cpu;
  std::string features;
  std::string tuneCpu;
  /// The host's class (after $TILT_CPU_CLASS), tuned for this CPU model; a
  /// host below x86-64-v3 gets x86-64-v3, whose kernels it then refuses.
  static CpuMachine host();
  /// Code for exactly `cls`, tuned for `tune` ("" = generic).
  static CpuMachine forClass(CpuClass cls, std::string tune = {});
  /// Whether code for this machine may use an LLVM feature ("avx512f",
  /// "amx-bf16"): the CPU's features with the explicit ones applied, implied
  /// features included ("-avx512f" also drops avx512bw and the rest).
  bool has(std::string_view feature) const;
  /// The best ISA class this machine's code may use; none below x86-64-v3.
  std::optional<CpuClass> cpuClass() const;
  /// "" when the CPU name and every feature are known to LLVM, else one line
  /// naming the bad one.
  std::string validate() const;
  std::string str() const; ///< "cpu=...;features=...;tune=..." for cache keys
  /// "znver3 (x86-64-v3)", for messages.
  std::string describe() const;
};

/// Receives a compile phase's name and its wall time in milliseconds
/// (tilt-compile --timing; the profile behind the cold-JIT figures).
using PhaseTimer = std::function<void(std::string_view phase, double ms)>;

/// Times consecutive phases for a PhaseTimer; does nothing without one.
class PhaseClock {
public:
  explicit PhaseClock(const PhaseTimer &timer)
      : timer(timer), start(std::chrono::steady_clock::now()) {}
  /// Reports the time since the last lap (or construction) as `phase`.
  void lap(std::string_view phase) {
    if (!timer)
      return;
    auto now = std::chrono::steady_clock::now();
    timer(phase,
          std::chrono::duration<double, std::milli>(now - start).count());
    start = now;
  }

private:
  const PhaseTimer &timer;
  std::chrono::steady_clock::time_point start;
};

enum class CpuEmit { LLVMIR, Assembly, Object, SharedObject };

/// Translates an LLVM-dialect module holding the kernel `kernelName` (with
/// llvm.emit_c_interface) to LLVM IR, adds the packed entry point and the
/// info string of KernelABI.h, optimizes at O3 for `machine`, and emits the
/// requested form. `numMemrefArgs` is how many memref descriptors the packed
/// entry forwards; then, when `numIndexArgs` > 0, the next slot of its
/// descriptor array points to that many int64 values, passed as the kernel's
/// index arguments (KernelABI.h: the position offsets). Returns "" or an
/// error.
/// `onPhase`, when set, is called after each phase (translate, optimize,
/// codegen, link) with its name and wall time in milliseconds.
std::string emitCpuArtifact(mlir::ModuleOp module,
                            const std::string &kernelName,
                            unsigned numMemrefArgs, unsigned numIndexArgs,
                            const std::string &info, const CpuMachine &machine,
                            CpuEmit emit, std::string &out,
                            const PhaseTimer &onPhase = {});

} // namespace tilt

#endif // TILT_COMPILER_CPUTARGET_H
