//===- SpecBuilder.cpp - From a user's spec to the tilt dialect -----------===//

#include "tilt/Compiler/SpecBuilder.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

using namespace mlir;

namespace tilt {

void loadSpecDialects(MLIRContext &ctx) {
  ctx.loadDialect<mlir::tilt::TiltDialect, func::FuncDialect>();
}

static Type elementType(MLIRContext &ctx, DType t) {
  switch (t) {
  case DType::F32:
    return Float32Type::get(&ctx);
  case DType::F16:
    return Float16Type::get(&ctx);
  case DType::BF16:
    return BFloat16Type::get(&ctx);
  }
  return {};
}

OwningOpRef<ModuleOp> buildSpecModule(MLIRContext &ctx,
                                      const AttentionSpec &spec,
                                      const SpecModuleOptions &options) {
  loadSpecDialects(ctx);
  auto dyn = [](int64_t n) { return n > 0 ? n : ShapedType::kDynamic; };
  const Extents &e = options.extents;
  int64_t B = dyn(e.batch), Sq = dyn(e.seqQ), Sk = dyn(e.seqK);
  Type elt = elementType(ctx, spec.dtype);
  Type f32 = Float32Type::get(&ctx), i32 = IntegerType::get(&ctx, 32),
       i8 = IntegerType::get(&ctx, 8);
  auto tensor = [](ArrayRef<int64_t> shape, Type t) -> Type {
    return RankedTensorType::get(shape, t);
  };

  OpBuilder b(&ctx);
  SmallVector<Type> args;
  Type qType, kvType, lseType;
  if (spec.varlen) {
    qType = tensor({Sq, spec.heads, spec.headDim}, elt);
    kvType = tensor({Sk, spec.kvHeads, spec.headDim}, elt);
    lseType = tensor({spec.heads, Sq}, f32);
  } else if (spec.pageSize && !options.backward) {
    // A paged KV cache: any number of pages of spec.pageSize tokens.
    qType = tensor({B, spec.heads, Sq, spec.headDim}, elt);
    kvType = tensor(
        {ShapedType::kDynamic, spec.pageSize, spec.kvHeads, spec.headDim}, elt);
    lseType = tensor({B, spec.heads, Sq}, f32);
  } else {
    qType = tensor({B, spec.heads, Sq, spec.headDim}, elt);
    kvType = tensor({B, spec.kvHeads, Sk, spec.headDim}, elt);
    lseType = tensor({B, spec.heads, Sq}, f32);
  }
  args = {qType, kvType, kvType};
  if (options.backward)
    args.append({qType, qType, lseType});
  bool customSlopes = spec.hasAlibi() && spec.slopes == SlopeSource::Custom;
  if (customSlopes)
    args.push_back(options.slopesPerBatch ? tensor({B, spec.heads}, f32)
                                          : tensor({spec.heads}, f32));
  if (spec.keyPaddingMask)
    args.push_back(tensor({B, Sk}, i8));
  if (spec.varlen) {
    Type cu = tensor({e.batch > 0 ? e.batch + 1 : ShapedType::kDynamic}, i32);
    args.append({cu, cu});
  }
  const bool paged = spec.pageSize && !options.backward;
  if (paged)
    args.append({tensor({B, ShapedType::kDynamic}, i32), tensor({B}, i32)});
  if (spec.positionOffsets)
    args.append({b.getIndexType(), b.getIndexType()});
  SmallVector<Type> results{qType};
  Type dslopesType = tensor({B, spec.heads}, f32);
  if (options.backward) {
    results.append({kvType, kvType});
    if (customSlopes)
      results.push_back(dslopesType);
  } else if (options.withLse) {
    results.push_back(lseType);
  }

  Location loc = UnknownLoc::get(&ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  auto func = func::FuncOp::create(b, loc, options.funcName,
                                   b.getFunctionType(args, results));
  Block *body = func.addEntryBlock();
  b.setInsertionPointToStart(body);

  unsigned next = options.backward ? 6 : 3;
  auto take = [&](bool present) -> Value {
    return present ? body->getArgument(next++) : Value();
  };
  Value slopes = take(customSlopes);
  Value kpm = take(spec.keyPaddingMask);
  Value cuQ = take(spec.varlen);
  Value cuK = take(spec.varlen);
  Value blockTable = take(paged);
  Value contextLens = take(paged);
  Value qOffset = take(spec.positionOffsets);
  Value kOffset = take(spec.positionOffsets);

  mlir::tilt::BiasAttr bias;
  if (spec.hasAlibi())
    bias = mlir::tilt::BiasAttr::get(&ctx, spec.bias, spec.slopes,
                                     APFloat(spec.maxBias), spec.headOffset,
                                     spec.totalHeads);
  auto causal = spec.causal ? b.getUnitAttr() : UnitAttr();
  auto window = spec.window ? b.getI64IntegerAttr(*spec.window) : IntegerAttr();
  auto scale = spec.scale ? b.getF64FloatAttr(*spec.scale) : FloatAttr();
  if (options.backward) {
    auto op = mlir::tilt::AttentionBackwardOp::create(
        b, loc, qType, kvType, kvType, slopes ? dslopesType : Type(),
        body->getArgument(0), body->getArgument(1), body->getArgument(2),
        body->getArgument(3), body->getArgument(4), body->getArgument(5),
        /*grad_lse=*/Value(), slopes, kpm, cuQ, cuK, qOffset, kOffset,
        /*dq_out=*/Value(),
        /*dk_out=*/Value(), /*dv_out=*/Value(), /*dslopes_out=*/Value(),
        /*row_scale=*/Value(),
        /*item_begin=*/Value(), /*item_end=*/Value(), bias, causal, window,
        scale, /*config=*/mlir::tilt::TileConfigAttr());
    func::ReturnOp::create(b, loc, op->getResults());
    if (failed(verify(*module)))
      return nullptr;
    return module;
  }
  auto op = mlir::tilt::AttentionOp::create(
      b, loc, qType, options.withLse ? lseType : Type(), body->getArgument(0),
      body->getArgument(1), body->getArgument(2), slopes, kpm, cuQ, cuK,
      blockTable, contextLens, qOffset, kOffset, /*out=*/Value(),
      /*lse_out=*/Value(), /*out_parts=*/Value(), /*lse_parts=*/Value(),
      /*item_begin=*/Value(),
      /*item_end=*/Value(), bias, causal, window, scale,
      /*config=*/mlir::tilt::TileConfigAttr());
  func::ReturnOp::create(b, loc, op->getResults());

  if (failed(verify(*module)))
    return nullptr;
  return module;
}

} // namespace tilt
