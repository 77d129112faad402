// RUN: tilt-opt %s --convert-tilt-to-cpu --canonicalize --cse | FileCheck %s --check-prefix=NATIVE
// RUN: tilt-opt %s --convert-tilt-to-cpu=native-bf16-dot=false --canonicalize --cse | FileCheck %s --check-prefix=PORTABLE

// cpu_bwd_avx512bf16: ten bf16 pair scratches (K^T2, V^T2, Qp, dOp, P2, dS2,
// Q^T2, dO^T2, Kp, dS^T2: [16][64] at D = 32 and 32 x 32 blocks). K and V
// column pairs are moved as 32-bit words; every product is a pair dot
// product of a broadcast pair and 32 bf16; P and dS reach the products as
// bf16 row pairs, interleaved from their f32 rows and rounded.

// NATIVE-LABEL: func.func @pairs(
// NATIVE-COUNT-10: memref.alloca() {alignment = 64 : i64} : memref<16x64xbf16>
// NATIVE: vector.load %{{.*}} : memref<?x2x?x32xbf16>, vector<2xbf16>
// NATIVE: vector.interleave %{{.*}}, %{{.*}} : vector<16xbf16> -> vector<32xbf16>
// NATIVE: vector.bitcast %{{.*}} : vector<16xi32> to vector<32xbf16>
// NATIVE: x86vector.avx512.dot %{{.*}} : vector<32xbf16> -> vector<16xf32>
// NATIVE: vector.interleave %{{.*}}, %{{.*}} : vector<16xf32> -> vector<32xf32>
// NATIVE: arith.truncf %{{.*}} : vector<32xf32> to vector<32xbf16>
// NATIVE: x86vector.avx512.dot %{{.*}} : vector<32xbf16> -> vector<16xf32>

// PORTABLE-LABEL: func.func @pairs(
// PORTABLE-NOT: x86vector
// PORTABLE: arith.andi %{{.*}}, %{{.*}} : vector<16xi32>
// PORTABLE: arith.shli %{{.*}}, %{{.*}} : vector<16xi32>
// PORTABLE: vector.fma
// PORTABLE-NOT: x86vector
func.func @pairs(%q: memref<?x2x?x32xbf16>, %k: memref<?x1x?x32xbf16>, %v: memref<?x1x?x32xbf16>, %o: memref<?x2x?x32xbf16>, %do: memref<?x2x?x32xbf16>, %lse: memref<?x2x?xf32>, %s: memref<?x2xf32>, %dq: memref<?x2x?x32xbf16>, %dk: memref<?x1x?x32xbf16>, %dv: memref<?x1x?x32xbf16>, %ds: memref<?x2xf32>, %rs: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention_backward q(%q : memref<?x2x?x32xbf16>) k(%k : memref<?x1x?x32xbf16>) v(%v : memref<?x1x?x32xbf16>) o(%o : memref<?x2x?x32xbf16>) grad_o(%do : memref<?x2x?x32xbf16>) lse(%lse : memref<?x2x?xf32>) slopes(%s : memref<?x2xf32>) grads(%dq, %dk, %dv : memref<?x2x?x32xbf16>, memref<?x1x?x32xbf16>, memref<?x1x?x32xbf16>) dslopes_out(%ds : memref<?x2xf32>) row_scale(%rs : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi, slopes = custom>, causal, config = #tilt.tile_config<variant = cpu_bwd_avx512bf16, block_m = 32, block_n = 32>}
  return
}
