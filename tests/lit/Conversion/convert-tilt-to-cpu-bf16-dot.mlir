// RUN: tilt-opt %s --convert-tilt-to-cpu --canonicalize --cse | FileCheck %s --check-prefix=NATIVE
// RUN: tilt-opt %s --convert-tilt-to-cpu=native-bf16-dot=false --canonicalize --cse | FileCheck %s --check-prefix=PORTABLE

// cpu_avx512bf16: q staged as bf16 pairs of columns, unscaled; the scores
// are pair dot products of a broadcast K pair (read in place) and 32 bf16
// of Qt2, scaled afterwards; V is staged in pairs of keys (interleaved rows)
// and P rounded to bf16 pairs before P.V, again pair dot products.

// NATIVE-LABEL: func.func @pairs(
// NATIVE-COUNT-3: memref.alloca() {alignment = 64 : i64} : memref<16x64xbf16>
// NATIVE: vector.interleave %{{.*}}, %{{.*}} : vector<16xbf16> -> vector<32xbf16>
// NATIVE: vector.load %{{.*}} : memref<?x2x?x32xbf16>, vector<2xbf16>
// NATIVE: vector.bitcast %{{.*}} : vector<16xi32> to vector<32xbf16>
// NATIVE: x86vector.avx512.dot %{{.*}} : vector<32xbf16> -> vector<16xf32>
// NATIVE: arith.mulf
// NATIVE: vector.interleave %{{.*}}, %{{.*}} : vector<16xf32> -> vector<32xf32>
// NATIVE: arith.truncf %{{.*}} : vector<32xf32> to vector<32xbf16>
// NATIVE: x86vector.avx512.dot %{{.*}} : vector<32xbf16> -> vector<16xf32>

// PORTABLE-LABEL: func.func @pairs(
// PORTABLE-NOT: x86vector
// PORTABLE: arith.andi %{{.*}}, %{{.*}} : vector<16xi32>
// PORTABLE: arith.shli %{{.*}}, %{{.*}} : vector<16xi32>
// PORTABLE: vector.fma
// PORTABLE-NOT: x86vector
func.func @pairs(%q: memref<?x2x?x32xbf16>, %k: memref<?x2x?x32xbf16>, %v: memref<?x2x?x32xbf16>, %o: memref<?x2x?x32xbf16>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x32xbf16>) k(%k : memref<?x2x?x32xbf16>) v(%v : memref<?x2x?x32xbf16>) out(%o : memref<?x2x?x32xbf16>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_avx512bf16, block_m = 32, block_n = 32>}
  return
}
