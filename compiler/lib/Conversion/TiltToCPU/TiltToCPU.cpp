//===- TiltToCPU.cpp - tilt.attention -> tiled streaming softmax on CPU ---===//
//
// Lowers the kernel form of tilt.attention (memrefs + work items + a CPU tile
// configuration) to scf/vector/memref/arith. One work item is one query block
// of one (batch, head); vectors run along the block's query rows:
//
//   Qt   = (q[rows] * scale * log2(e))^T                  (f32, staged once)
//   for each key block inside the visible range:
//     St = K . Qt             K rows broadcast from memory, register tiles
//     per query vector: St += bias; mask; m' = max(m, max_j St);
//                       Pt = exp2(St - m'); alpha = exp2(m - m');
//                       l = l * alpha + sum_j Pt      (all vertical ops)
//     Acc = Acc * alpha + Pt^T . V                          (register tiles)
//   o = Acc / l;  lse = (m + log2 l) * ln 2
//
// Transposing Q once per item (instead of K once per key block) keeps every
// key block's work free of shuffles, and makes the softmax's row reductions
// plain element-wise max/add across keys. Scores live in log2 units so the
// softmax needs exp2 only. The bias uses (j - i') exactly (an integer, exact
// in f32) times the slope, so no large row constant ever costs precision.
//
// This file is the pass; the emitter is CpuEmitter.h (shared phases in
// CpuEmitter.cpp, the vector path in Vector.cpp, the AMX path in Amx.cpp,
// the decode family in Decode.cpp).
//
//===----------------------------------------------------------------------===//

#include "CpuEmitter.h"
#include "tilt/Compiler/Passes.h"

namespace mlir::tilt {
#define GEN_PASS_DEF_CONVERTTILTTOCPU
#include "tilt/Compiler/Passes.h.inc"
} // namespace mlir::tilt

using namespace mlir;
using namespace mlir::tilt;

namespace {

struct ConvertTiltToCPU
    : mlir::tilt::impl::ConvertTiltToCPUBase<ConvertTiltToCPU> {
  using ConvertTiltToCPUBase::ConvertTiltToCPUBase;

  /// The kernel form (memrefs with items) and a CPU tile_config, or an error.
  template <typename OpT> LogicalResult checkKernelForm(OpT op) {
    if (!op.hasBufferSemantics() || !op.getItemBegin())
      return op.emitOpError("convert-tilt-to-cpu needs the kernel form "
                            "(memrefs with items); run tilt-cpu-entry first");
    TileConfigAttr config = op.getConfigAttr();
    if (config.isGpu())
      return op.emitOpError("convert-tilt-to-cpu needs a CPU tile_config, "
                            "got ")
             << stringifyKernelVariant(config.getVariant());
    return success();
  }

  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (isa<AttentionOp, AttentionBackwardOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      ImplicitLocOpBuilder b(op->getLoc(), op);
      std::unique_ptr<CpuKernelBuilder> emitter;
      if (auto fwd = dyn_cast<AttentionOp>(op)) {
        if (failed(checkKernelForm(fwd)))
          return signalPassFailure();
        emitter = makeCpuEmitter(fwd, b, nativeBf16Dot);
      } else {
        auto bwd = cast<AttentionBackwardOp>(op);
        if (failed(checkKernelForm(bwd)))
          return signalPassFailure();
        emitter = makeBackwardEmitter(bwd, b, nativeBf16Dot);
      }
      if (failed(emitter->emit()))
        return signalPassFailure();
      op->erase();
    }
  }
};

} // namespace
