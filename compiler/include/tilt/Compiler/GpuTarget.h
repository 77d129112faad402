//===- GpuTarget.h - gpu.binary (PTX) -> cubin and CUDA artifacts -*- C++ -*-=//
//
// The last steps of the CUDA target: the PTX that the GPU pipeline leaves in
// its gpu.binary, ptxas (from the CUDA toolkit, found at run time) for the
// cubin and its resource report, and the CUDA artifact of KernelABI.h.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_COMPILER_GPUTARGET_H
#define TILT_COMPILER_GPUTARGET_H

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace tilt {

/// What ptxas said about the kernel (`ptxas -v`).
struct PtxasReport {
  int64_t registers = -1;
  int64_t stackBytes = -1;
  int64_t spillStoreBytes = -1;
  int64_t spillLoadBytes = -1;
  std::string summary() const; ///< "registers 168, stack 0 B, spills 0/0 B"
};

/// The PTX text of the (single) gpu.binary in `module`; "" or an error.
std::string extractPtx(mlir::ModuleOp module, std::string &ptx);

/// ptxas: $TILT_PTXAS, else $CUDA_HOME/bin/ptxas, else ptxas on PATH, else
/// /usr/local/cuda/bin/ptxas. Empty when none is found.
std::string findPtxas();
/// `ptxas --version`'s last line, or "none"; part of the cache key.
std::string ptxasVersion();

/// Assembles `ptx` for `arch` (sm_80, sm_90a, ...) at -O3; fills the cubin
/// and the report. "" or an error (ptxas's own message).
std::string runPtxas(const std::string &ptx, const std::string &arch,
                     std::string &cubin, PtxasReport &report);

/// Parses the text `ptxas -v` prints.
PtxasReport parsePtxasReport(const std::string &text);

} // namespace tilt

#endif // TILT_COMPILER_GPUTARGET_H
