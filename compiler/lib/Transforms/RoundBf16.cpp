//===- RoundBf16.cpp - f32 -> bf16 vector rounding in 32-bit lanes --------===//
//
// arith.truncf vector<N x f32> -> vector<N x bf16>, for CPUs without
// AVX512_BF16, as
//
//   bits    = bitcast(x) : i32
//   rounded = bits + 0x7fff + ((bits >> 16) & 1)     round to nearest even
//   kept    = isnan(x) ? bits | 0x00400000 : rounded  a NaN stays a NaN
//   result  = bitcast(trunci(kept >> 16)) : bf16
//
// Neither arm of the select is a constant, so LLVM has nothing to fold it
// with and it stays a 32-bit blend; the upstream expansion's constant NaN
// arm is folded through the shift and truncation into a select of bfloat
// vectors, which the x86 backend scalarizes lane by lane.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Passes.h"

#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::tilt {
#define GEN_PASS_DEF_TILTROUNDBF16
#include "tilt/Compiler/Passes.h.inc"
} // namespace mlir::tilt

using namespace mlir;

namespace {

Value roundToBf16(ImplicitLocOpBuilder &b, Value x, VectorType to) {
  auto i32 = VectorType::get(to.getShape(), b.getI32Type());
  auto c = [&](int64_t v) {
    return arith::ConstantOp::create(
        b, DenseElementsAttr::get(i32, b.getI32IntegerAttr(v)));
  };
  Value sixteen = c(16);
  Value bits = arith::BitcastOp::create(b, i32, x);
  Value lsb =
      arith::AndIOp::create(b, arith::ShRUIOp::create(b, bits, sixteen), c(1));
  Value rounded =
      arith::AddIOp::create(b, bits, arith::AddIOp::create(b, lsb, c(0x7fff)));
  Value isNan = arith::CmpFOp::create(b, arith::CmpFPredicate::UNO, x, x);
  Value quiet = arith::OrIOp::create(b, bits, c(0x00400000));
  Value kept = arith::SelectOp::create(b, isNan, quiet, rounded);
  Value half =
      arith::TruncIOp::create(b, VectorType::get(to.getShape(), b.getI16Type()),
                              arith::ShRUIOp::create(b, kept, sixteen));
  return arith::BitcastOp::create(b, to, half);
}

struct TiltRoundBf16 : mlir::tilt::impl::TiltRoundBf16Base<TiltRoundBf16> {
  void runOnOperation() override {
    SmallVector<arith::TruncFOp> truncs;
    getOperation().walk([&](arith::TruncFOp op) {
      auto from = dyn_cast<VectorType>(op.getIn().getType());
      auto to = dyn_cast<VectorType>(op.getType());
      // An explicit rounding mode is left to arith-expand-ops.
      if (from && to && from.getElementType().isF32() &&
          to.getElementType().isBF16() && !op.getRoundingmodeAttr())
        truncs.push_back(op);
    });
    for (arith::TruncFOp op : truncs) {
      ImplicitLocOpBuilder b(op.getLoc(), op);
      op.replaceAllUsesWith(
          roundToBf16(b, op.getIn(), cast<VectorType>(op.getType())));
      op.erase();
    }
  }
};

} // namespace
