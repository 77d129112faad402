//===- CpuEntry.cpp - Spec function -> CPU kernel entry point -------------===//

#include "tilt/Compiler/Configs.h"
#include "tilt/Compiler/Passes.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"

#include "mlir/IR/Builders.h"

namespace mlir::tilt {
#define GEN_PASS_DEF_TILTCPUENTRY
#include "tilt/Compiler/Passes.h.inc"
} // namespace mlir::tilt

using namespace mlir;
using namespace mlir::tilt;

SmallVector<Type> mlir::tilt::kernelAbiMemRefTypes(AttentionOp op) {
  const ::tilt::AttentionSpec spec = op.getSpec();
  MLIRContext *ctx = op.getContext();
  auto toMemRef = [](Type t) {
    auto tensor = cast<RankedTensorType>(t);
    return MemRefType::get(tensor.getShape(), tensor.getElementType());
  };
  // The order: q, k, v, o, lse, [slopes], [kpm], [cu_q, cu_k].
  auto qType = cast<RankedTensorType>(op.getQ().getType());
  SmallVector<int64_t> lseShape =
      spec.varlen ? SmallVector<int64_t>{spec.heads, qType.getDimSize(0)}
                  : SmallVector<int64_t>{qType.getDimSize(0), spec.heads,
                                         qType.getDimSize(2)};
  SmallVector<Type> types = {toMemRef(op.getQ().getType()),
                             toMemRef(op.getK().getType()),
                             toMemRef(op.getV().getType()),
                             toMemRef(op.getQ().getType()),
                             MemRefType::get(lseShape, Float32Type::get(ctx))};
  if (op.getSlopes()) {
    // Always [B, H] with a dynamic batch stride: the runtime passes per-head
    // slopes ([H]) with batch stride 0, so one kernel serves both.
    int64_t dyn = ShapedType::kDynamic;
    types.push_back(MemRefType::get(
        {dyn, spec.heads}, Float32Type::get(ctx),
        StridedLayoutAttr::get(ctx, /*offset=*/0, {dyn, 1})));
  }
  if (Value m = op.getKeyPaddingMask()) {
    // The runtime always passes the mask as bytes.
    auto shape = cast<RankedTensorType>(m.getType()).getShape();
    types.push_back(MemRefType::get(shape, IntegerType::get(ctx, 8)));
  }
  if (Value cu = op.getCuSeqlensQ()) {
    types.push_back(toMemRef(cu.getType()));
    types.push_back(toMemRef(op.getCuSeqlensK().getType()));
  }
  return types;
}

namespace {

struct TiltCpuEntry : mlir::tilt::impl::TiltCpuEntryBase<TiltCpuEntry> {
  using Base::Base;

  void runOnOperation() override {
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) {
      if (!op.hasBufferSemantics())
        ops.push_back(op);
    });
    for (AttentionOp op : ops)
      if (failed(rewrite(op)))
        return signalPassFailure();
  }

  /// The configuration tilt-pin-tile-config pinned; this pass only reads it.
  FailureOr<TileConfigAttr> pinnedConfig(AttentionOp op) {
    TileConfigAttr config = op.getConfigAttr();
    if (!config) {
      op.emitOpError("has no tile_config; run tilt-pin-tile-config first");
      return failure();
    }
    if (config.isGpu()) {
      op.emitOpError("tilt-cpu-entry needs a CPU tile_config, got ")
          << stringifyKernelVariant(config.getVariant());
      return failure();
    }
    return config;
  }

  LogicalResult rewrite(AttentionOp op) {
    auto func = dyn_cast<func::FuncOp>(op->getParentOp());
    if (!func || !func.getBody().hasOneBlock() ||
        !llvm::all_of(op->getOperands(),
                      [&](Value v) { return isa<BlockArgument>(v); }))
      return op.emitOpError("tilt-cpu-entry expects the op alone in a "
                            "function whose arguments it uses directly");
    FailureOr<TileConfigAttr> config = pinnedConfig(op);
    if (failed(config))
      return failure();

    MLIRContext *ctx = op.getContext();
    SmallVector<Type> argTypes = kernelAbiMemRefTypes(op);
    Type index = IndexType::get(ctx);
    // [q_offset, k_offset], then the item range.
    if (op.getQOffset())
      argTypes.append({index, index});
    argTypes.append({index, index});

    OpBuilder b(func);
    auto kernel = func::FuncOp::create(b, func.getLoc(), kernelName,
                                       b.getFunctionType(argTypes, {}));
    kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    Block *body = kernel.addEntryBlock();
    b.setInsertionPointToStart(body);
    ValueRange args = body->getArguments();
    unsigned next = 5;
    auto take = [&](Value present) {
      return present ? args[next++] : Value();
    };
    Value slopes = take(op.getSlopes());
    Value kpm = take(op.getKeyPaddingMask());
    Value cuQ = take(op.getCuSeqlensQ());
    Value cuK = take(op.getCuSeqlensK());
    Value qOffset = take(op.getQOffset());
    Value kOffset = take(op.getKOffset());
    AttentionOp::create(b, op.getLoc(), Type(), Type(), args[0], args[1],
                        args[2], slopes, kpm, cuQ, cuK, qOffset, kOffset,
                        args[3], args[4], args[next], args[next + 1],
                        op.getBiasAttr(), op.getCausalAttr(),
                        op.getWindowAttr(), op.getScaleAttr(), *config);
    func::ReturnOp::create(b, op.getLoc());
    func.erase();
    return success();
  }
};

} // namespace
