//===- CpuTarget.h - LLVM dialect -> native x86-64 artifacts ----*- C++ -*-===//

#ifndef TILT_COMPILER_CPUTARGET_H
#define TILT_COMPILER_CPUTARGET_H

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace tilt {

/// The machine code generation targets: an LLVM CPU name and feature string
/// ("+avx512f,..."). Empty means the host.
struct CpuMachine {
  std::string cpu;
  std::string features;
  static CpuMachine host();
  bool has(const std::string &feature) const; ///< e.g. "avx512f", "amx-bf16"
  std::string str() const; ///< "cpu=...;features=..." for cache keys
};

enum class CpuEmit { LLVMIR, Assembly, Object, SharedObject };

/// Translates an LLVM-dialect module holding the kernel `kernelName` (with
/// llvm.emit_c_interface) to LLVM IR, adds the packed entry point and the
/// info string of KernelABI.h, optimizes at O3 for `machine`, and emits the
/// requested form. `numMemrefArgs` is how many memref descriptors the packed
/// entry forwards. Returns "" or an error.
std::string emitCpuArtifact(mlir::ModuleOp module, const std::string &kernelName,
                            unsigned numMemrefArgs, const std::string &info,
                            const CpuMachine &machine, CpuEmit emit,
                            std::string &out);

} // namespace tilt

#endif // TILT_COMPILER_CPUTARGET_H
