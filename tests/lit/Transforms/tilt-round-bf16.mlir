// RUN: tilt-opt %s --tilt-round-bf16 --canonicalize | FileCheck %s

// Vector f32 -> bf16: round to nearest even on 32-bit lanes; a NaN keeps
// its bits with the quiet bit set. The select's arms are both computed.
// CHECK-LABEL: func.func @vector(
// CHECK-SAME: %[[X:.*]]: vector<8xf32>)
// CHECK-DAG: %[[C16:.*]] = arith.constant dense<16> : vector<8xi32>
// CHECK-DAG: %[[ONE:.*]] = arith.constant dense<1> : vector<8xi32>
// CHECK-DAG: %[[HALF:.*]] = arith.constant dense<32767> : vector<8xi32>
// CHECK-DAG: %[[QUIET:.*]] = arith.constant dense<4194304> : vector<8xi32>
// CHECK: %[[BITS:.*]] = arith.bitcast %[[X]] : vector<8xf32> to vector<8xi32>
// CHECK: %[[HI:.*]] = arith.shrui %[[BITS]], %[[C16]]
// CHECK: %[[LSB:.*]] = arith.andi %[[HI]], %[[ONE]]
// CHECK: %[[INC:.*]] = arith.addi %[[LSB]], %[[HALF]]
// CHECK: %[[ROUNDED:.*]] = arith.addi %[[BITS]], %[[INC]]
// CHECK: %[[NAN:.*]] = arith.cmpf uno, %[[X]], %[[X]] : vector<8xf32>
// CHECK: %[[Q:.*]] = arith.ori %[[BITS]], %[[QUIET]]
// CHECK: %[[KEPT:.*]] = arith.select %[[NAN]], %[[Q]], %[[ROUNDED]] : vector<8xi1>, vector<8xi32>
// CHECK: %[[TOP:.*]] = arith.shrui %[[KEPT]], %[[C16]]
// CHECK: %[[T:.*]] = arith.trunci %[[TOP]] : vector<8xi32> to vector<8xi16>
// CHECK: %[[R:.*]] = arith.bitcast %[[T]] : vector<8xi16> to vector<8xbf16>
// CHECK: return %[[R]]
// CHECK-NOT: arith.truncf
func.func @vector(%x: vector<8xf32>) -> vector<8xbf16> {
  %r = arith.truncf %x : vector<8xf32> to vector<8xbf16>
  return %r : vector<8xbf16>
}

// Scalars, f16 targets and explicit rounding modes are left alone.
// CHECK-LABEL: func.func @untouched(
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: arith.truncf %{{.*}} : vector<8xf32> to vector<8xf16>
// CHECK: arith.truncf %{{.*}} toward_zero : vector<8xf32> to vector<8xbf16>
// CHECK-NOT: arith.trunci
func.func @untouched(%s: f32, %x: vector<8xf32>) -> (bf16, vector<8xf16>, vector<8xbf16>) {
  %a = arith.truncf %s : f32 to bf16
  %b = arith.truncf %x : vector<8xf32> to vector<8xf16>
  %c = arith.truncf %x toward_zero : vector<8xf32> to vector<8xbf16>
  return %a, %b, %c : bf16, vector<8xf16>, vector<8xbf16>
}
