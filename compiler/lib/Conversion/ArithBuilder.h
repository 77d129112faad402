//===- ArithBuilder.h - Terse arith builders for the emitters ---*- C++ -*-===//
//
// The scalar integer and float builders the CPU and GPU kernel emitters
// both use, over one ImplicitLocOpBuilder. Emitters derive from it.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_CONVERSION_ARITHBUILDER_H
#define TILT_CONVERSION_ARITHBUILDER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::tilt {

class ArithBuilder {
protected:
  explicit ArithBuilder(ImplicitLocOpBuilder &b) : b(b) {}

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value f32c(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(float(v)));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value minI(Value x, Value y) { return arith::MinSIOp::create(b, x, y); }
  Value maxI(Value x, Value y) { return arith::MaxSIOp::create(b, x, y); }
  /// An index as f32 (through i64: exact for every index a kernel sees).
  Value indexToF32(Value i) {
    Value i64 = arith::IndexCastOp::create(b, b.getI64Type(), i);
    return arith::SIToFPOp::create(b, b.getF32Type(), i64);
  }

  ImplicitLocOpBuilder &b;
};

} // namespace mlir::tilt

#endif // TILT_CONVERSION_ARITHBUILDER_H
