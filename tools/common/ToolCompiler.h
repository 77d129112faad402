//===- ToolCompiler.h - The compiler a tool gives its runtime ---*- C++ -*-===//
//
// tilt-run and tilt-bench are also built runtime-only (tilt-run-rt,
// tilt-bench-rt, with TILT_RUNTIME_ONLY defined) for machines without
// LLVM/MLIR, such as the GPU machine of tests/gpu. Those builds have no
// compiler: kernels come from the bundle or the disk cache, and a missing one
// is the runtime's "no cached kernel" error. This is the one place that
// differs between the two builds.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TOOLS_TOOLCOMPILER_H
#define TILT_TOOLS_TOOLCOMPILER_H

#include "tilt/Cuda.h"
#include "tilt/Runtime.h"

#include <memory>

#ifndef TILT_RUNTIME_ONLY
#include "tilt/Compiler/Compiler.h"
#endif

namespace tilt::tools {

/// Tilt's compiler for kernels running on `device` (none given: the CPU), or
/// null in the runtime-only builds.
inline std::unique_ptr<KernelCompiler>
makeToolCompiler(const cuda::DeviceInfo &device = {}) {
#ifdef TILT_RUNTIME_ONLY
  (void)device;
  return nullptr;
#else
  // An sm_90 device runs sm_90a cubins of every variant; elsewhere the
  // variant's own architecture is right (or its PTX is JIT-compiled).
  CompilerOptions options;
  if (device.ccMajor == 9 && device.ccMinor == 0)
    options.cudaArch = "sm_90a";
  return std::make_unique<Compiler>(options);
#endif
}

} // namespace tilt::tools

#endif // TILT_TOOLS_TOOLCOMPILER_H
