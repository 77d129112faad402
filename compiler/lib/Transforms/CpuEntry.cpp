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

/// The memref of a ranked tensor type: row-major, or (`strided`) with any
/// strides whose innermost is 1 (offset 0: the descriptor's aligned pointer
/// is the first element).
static MemRefType toMemRef(Type t, bool strided = false) {
  auto tensor = cast<RankedTensorType>(t);
  if (!strided)
    return MemRefType::get(tensor.getShape(), tensor.getElementType());
  SmallVector<int64_t> strides(tensor.getRank(), ShapedType::kDynamic);
  strides.back() = 1;
  return MemRefType::get(
      tensor.getShape(), tensor.getElementType(),
      StridedLayoutAttr::get(t.getContext(), /*offset=*/0, strides));
}

SmallVector<Type> mlir::tilt::kernelAbiMemRefTypes(AttentionOp op) {
  const ::tilt::AttentionSpec spec = op.getSpec();
  MLIRContext *ctx = op.getContext();
  // The order: q, k, v, o, lse, [slopes], [kpm], [cu_q, cu_k],
  // [block_table, context_lens], [o_parts, lse_parts] (decode family).
  auto qType = cast<RankedTensorType>(op.getQ().getType());
  SmallVector<int64_t> lseShape =
      spec.varlen ? SmallVector<int64_t>{spec.heads, qType.getDimSize(0)}
                  : SmallVector<int64_t>{qType.getDimSize(0), spec.heads,
                                         qType.getDimSize(2)};
  SmallVector<Type> types = {
      toMemRef(op.getQ().getType(), true), toMemRef(op.getK().getType(), true),
      toMemRef(op.getV().getType(), true), toMemRef(op.getQ().getType(), true),
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
  if (Value table = op.getBlockTable()) {
    types.push_back(toMemRef(table.getType()));
    types.push_back(toMemRef(op.getContextLens().getType()));
  }
  // The decode family's split-KV partials: f32, o's and lse's shapes behind
  // a dynamic count of splits.
  if (TileConfigAttr config = op.getConfigAttr(); config && config.isDecode()) {
    for (Type like : {types[3], types[4]}) {
      SmallVector<int64_t> shape = {ShapedType::kDynamic};
      llvm::append_range(shape, cast<MemRefType>(like).getShape());
      types.push_back(MemRefType::get(shape, Float32Type::get(ctx)));
    }
  }
  return types;
}

SmallVector<Type> mlir::tilt::kernelAbiMemRefTypes(AttentionBackwardOp op) {
  MLIRContext *ctx = op.getContext();
  // The order: q, k, v, o, grad_o, lse, grad_lse, dq, dk, dv, row_scale
  // (grad_lse and row_scale like lse; grad_lse always, zeros when the spec
  // function has none), [slopes, dslopes], [kpm], [cu_q, cu_k].
  SmallVector<Type> types;
  for (Value v : {op.getQ(), op.getK(), op.getV(), op.getO(), op.getGradO()})
    types.push_back(toMemRef(v.getType(), true));
  types.push_back(toMemRef(op.getLse().getType()));
  types.push_back(toMemRef(op.getLse().getType()));
  for (Value v : {op.getQ(), op.getK(), op.getV()})
    types.push_back(toMemRef(v.getType(), true));
  types.push_back(toMemRef(op.getLse().getType()));
  if (op.getSlopes()) {
    int64_t dyn = ShapedType::kDynamic, heads = op.getSpec().heads;
    Type f32 = Float32Type::get(ctx);
    types.push_back(MemRefType::get({dyn, heads}, f32,
                                    StridedLayoutAttr::get(ctx, 0, {dyn, 1})));
    types.push_back(MemRefType::get({dyn, heads}, f32));
  }
  if (Value m = op.getKeyPaddingMask()) {
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
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (auto fwd = dyn_cast<AttentionOp>(op);
          fwd && !fwd.hasBufferSemantics())
        ops.push_back(op);
      if (auto bwd = dyn_cast<AttentionBackwardOp>(op);
          bwd && !bwd.hasBufferSemantics())
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      LogicalResult done = isa<AttentionOp>(op)
                               ? rewrite(cast<AttentionOp>(op))
                               : rewrite(cast<AttentionBackwardOp>(op));
      if (failed(done))
        return signalPassFailure();
    }
  }

  /// The configuration tilt-pin-tile-config pinned; this pass only reads it.
  template <typename OpT> FailureOr<TileConfigAttr> pinnedConfig(OpT op) {
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

  /// The kernel function replacing the op's spec function: the ABI's
  /// memrefs, [q_offset, k_offset], then the item range. Returns its
  /// arguments with the builder at the start of its body.
  template <typename OpT>
  FailureOr<ValueRange> makeKernel(OpT op, SmallVector<Type> argTypes,
                                   OpBuilder &b) {
    auto func = dyn_cast<func::FuncOp>(op->getParentOp());
    if (!func || !func.getBody().hasOneBlock() ||
        !llvm::all_of(op->getOperands(),
                      [&](Value v) { return isa<BlockArgument>(v); }))
      return op.emitOpError("tilt-cpu-entry expects the op alone in a "
                            "function whose arguments it uses directly");
    Type index = IndexType::get(op.getContext());
    if (op.getQOffset())
      argTypes.append({index, index});
    argTypes.append({index, index});
    b.setInsertionPoint(func);
    auto kernel = func::FuncOp::create(b, func.getLoc(), kernelName,
                                       b.getFunctionType(argTypes, {}));
    kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    Block *body = kernel.addEntryBlock();
    b.setInsertionPointToStart(body);
    func::ReturnOp::create(b, op.getLoc());
    b.setInsertionPointToStart(body);
    return ValueRange(body->getArguments());
  }

  LogicalResult rewrite(AttentionOp op) {
    FailureOr<TileConfigAttr> config = pinnedConfig(op);
    if (failed(config))
      return failure();
    OpBuilder b(op.getContext());
    FailureOr<ValueRange> kernelArgs =
        makeKernel(op, kernelAbiMemRefTypes(op), b);
    if (failed(kernelArgs))
      return failure();
    ValueRange args = *kernelArgs;
    unsigned next = 5;
    auto take = [&](Value present) {
      return present ? args[next++] : Value();
    };
    Value slopes = take(op.getSlopes());
    Value kpm = take(op.getKeyPaddingMask());
    Value cuQ = take(op.getCuSeqlensQ());
    Value cuK = take(op.getCuSeqlensK());
    Value blockTable = take(op.getBlockTable());
    Value contextLens = take(op.getContextLens());
    const bool decode = config->isDecode();
    Value outParts = decode ? args[next++] : Value();
    Value lseParts = decode ? args[next++] : Value();
    Value qOffset = take(op.getQOffset());
    Value kOffset = take(op.getKOffset());
    AttentionOp::create(
        b, op.getLoc(), Type(), Type(), args[0], args[1], args[2], slopes, kpm,
        cuQ, cuK, blockTable, contextLens, qOffset, kOffset, args[3], args[4],
        outParts, lseParts, args[next], args[next + 1], op.getBiasAttr(),
        op.getCausalAttr(), op.getWindowAttr(), op.getScaleAttr(), *config);
    op->getParentOp()->erase();
    return success();
  }

  LogicalResult rewrite(AttentionBackwardOp op) {
    FailureOr<TileConfigAttr> config = pinnedConfig(op);
    if (failed(config))
      return failure();
    OpBuilder b(op.getContext());
    FailureOr<ValueRange> kernelArgs =
        makeKernel(op, kernelAbiMemRefTypes(op), b);
    if (failed(kernelArgs))
      return failure();
    ValueRange args = *kernelArgs;
    unsigned next = 11;
    auto take = [&](Value present) { return present ? args[next++] : Value(); };
    Value slopes = take(op.getSlopes());
    Value dslopes = take(op.getSlopes());
    Value kpm = take(op.getKeyPaddingMask());
    Value cuQ = take(op.getCuSeqlensQ());
    Value cuK = take(op.getCuSeqlensK());
    Value qOffset = take(op.getQOffset());
    Value kOffset = take(op.getKOffset());
    AttentionBackwardOp::create(
        b, op.getLoc(), Type(), Type(), Type(), Type(), args[0], args[1],
        args[2], args[3], args[4], args[5], args[6], slopes, kpm, cuQ, cuK,
        qOffset, kOffset, args[7], args[8], args[9], dslopes, args[10],
        args[next], args[next + 1], op.getBiasAttr(), op.getCausalAttr(),
        op.getWindowAttr(), op.getScaleAttr(), *config);
    op->getParentOp()->erase();
    return success();
  }
};

} // namespace
