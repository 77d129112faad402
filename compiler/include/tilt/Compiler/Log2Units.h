//===- Log2Units.h - Constants of the exp2-based softmax --------*- C++ -*-===//
//
// Every lowering keeps scores in log2 units (scale and slopes multiplied by
// log2(e), softmax by exp2) and turns lse back into natural log units.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_COMPILER_LOG2UNITS_H
#define TILT_COMPILER_LOG2UNITS_H

namespace mlir::tilt {

inline constexpr double kLog2E = 1.4426950408889634;
inline constexpr double kLn2 = 0.6931471805599453;

} // namespace mlir::tilt

#endif // TILT_COMPILER_LOG2UNITS_H
