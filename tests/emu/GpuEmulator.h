//===- GpuEmulator.h - Run a Tilt GPU kernel's IR on the CPU ----*- C++ -*-===//
//
// An interpreter for the kernel that convert-tilt-to-gpu emits (the IR of
// the pipeline's "kernel" stage: gpu/nvgpu/nvvm/scf/arith/vector/memref/llvm
// ops), executing one CTA at a time with all of its threads in lockstep.
// It gives CI, which has no GPU, a numerical check of everything the
// compiler decides: index math, masks, the online softmax, the pipeline's
// buffer slots, fragment and shared-memory layouts, tensor-map coordinates.
//
// The warp- and warpgroup-level instructions follow the PTX ISA's
// definitions as this file implements them: ldmatrix (x4, optionally .trans),
// mma.sync m16n8k16 fragments, wgmma m64nNk16 with shared-memory matrix
// descriptors (K-major and MN-major, 128-byte swizzle) and its accumulator
// layout, TMA tiles with 128-byte swizzle and zero fill, shfl.bfly, vote
// ballot. Asynchronous copies land only when the kernel waits for them:
// cp.async groups at cp.async.wait_group, TMA boxes at the wait on their
// mbarrier phase (a wait for a phase that never completes is reported as a
// hang); until then their destinations read as NaN. So reading a buffer
// too early, waiting for the wrong group or phase, or refilling a buffer
// still in use fails the check. Threads run in lockstep, so CTA barriers are
// no-ops and races between threads are not found. It is a check of the
// kernel's logic against the documented instruction semantics, not a
// substitute for running on a GPU.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_EMU_GPUEMULATOR_H
#define TILT_TESTS_EMU_GPUEMULATOR_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tilt::emu {

/// A memref argument: host memory with its sizes and strides in elements.
struct MemRefArg {
  void *data = nullptr;
  std::vector<int64_t> sizes, strides;
};

/// A rank-4 tensor map (KernelABI.h): element (c0, c1, c2, c3) at data +
/// c0*e + c1*strides[0] + c2*strides[1] + c3*strides[2] bytes, box {64,
/// boxRows, 1, 1}.
struct TensorMapArg {
  const void *data = nullptr;
  int64_t dims[4] = {0, 0, 0, 0};
  int64_t strides[3] = {0, 0, 0};
  int64_t elementBytes = 2;
  int64_t boxRows = 0;
};

struct Launch {
  int64_t grid[3] = {1, 1, 1};
  int64_t threads = 0;
  int64_t smemBytes = 0;
  std::vector<MemRefArg> memrefs;    ///< the kernel's memref arguments
  std::vector<TensorMapArg> maps;    ///< its !llvm.ptr (tensor map) arguments
  std::vector<int64_t> scalars;      ///< its index / i64 arguments, in order
  /// When non-empty, only these blockIdx.x / blockIdx.y values run (long
  /// sequences and many heads are checked on a sample of their CTAs).
  std::vector<int64_t> onlyX, onlyY;
};

/// Runs every CTA of the grid. "" or what went wrong (an unsupported op, an
/// out-of-bounds access, a misaligned swizzled tile...).
std::string run(mlir::gpu::GPUFuncOp kernel, const Launch &launch);

} // namespace tilt::emu

#endif // TILT_TESTS_EMU_GPUEMULATOR_H
