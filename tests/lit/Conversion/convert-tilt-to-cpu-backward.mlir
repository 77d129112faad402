// RUN: tilt-opt %s -split-input-file --convert-tilt-to-cpu --canonicalize --cse -verify-diagnostics | FileCheck %s

// The backward's loop nest: the two-pass item space (key blocks of every
// (batch, kv head), then one item per (batch, head)) and the fused one (one
// item per (batch, kv head)), P recomputed from lse, dS = P * (dP - D), and
// the slope gradient accumulated as sum(dS * dist).
// H = 4, Hkv = 2, D = 16, block_m = 16, block_n = 16, AVX2 (8 lanes).

// CHECK-LABEL: func.func @backward(
// CHECK-SAME: %[[Q:[a-z0-9]+]]: memref<?x4x?x16xf32>, %[[K:[a-z0-9]+]]: memref<?x2x?x16xf32>, %{{.*}}: memref<?x2x?x16xf32>, %{{.*}}: memref<?x4x?x16xf32>, %[[G:[a-z0-9]+]]: memref<?x4x?x16xf32>, %[[LSE:[a-z0-9]+]]: memref<?x4x?xf32>, %[[DQ:[a-z0-9]+]]: memref<?x4x?x16xf32>, %[[DK:[a-z0-9]+]]: memref<?x2x?x16xf32>, %[[DV:[a-z0-9]+]]: memref<?x2x?x16xf32>, %[[S:[a-z0-9]+]]: memref<?x4xf32, strided<[?, 1]>>, %[[DS:[a-z0-9]+]]: memref<?x4xf32>, %[[RS:[a-z0-9]+]]: memref<?x4x?xf32>, %[[BEGIN:[a-z0-9]+]]: index, %[[END:[a-z0-9]+]]: index)
// Scratch: K^T, V^T, dK^T, dV^T [D][BN] and the rest.
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<16x16xf32>
// Key blocks per (batch, kv head) against the keys, and their count.
// CHECK: %[[SK:.*]] = memref.dim %[[K]], %c2
// CHECK: %[[NKB:.*]] = arith.ceildivsi %[[SK]], %c16
// CHECK: %[[KEYITEMS:.*]] = arith.muli %{{.*}}, %[[NKB]]
// Then B * H dq items: the fused items start past both parts.
// CHECK: %[[HEADITEMS:.*]] = arith.muli %{{.*}}, %c4
// CHECK: %[[TWOPASS:.*]] = arith.addi %[[KEYITEMS]], %[[HEADITEMS]]
// CHECK: scf.for %[[ITEM:.*]] = %[[BEGIN]] to %[[END]]
// CHECK: %[[ISKEY:.*]] = arith.cmpi slt, %[[ITEM]], %[[KEYITEMS]]
// CHECK: scf.if %[[ISKEY]] {
// dK/dV part: the group's query heads in turn, rows in blocks.
// CHECK: arith.remsi %[[ITEM]], %[[NKB]]
// D_i = rowsum(dO * O) per staged row, and the dQ items' row_scale.
// CHECK: vector.reduction <add>
// CHECK: memref.load %[[RS]]
// P = exp2(S * scale * log2e - lse2 + slope2 * dist) on visible lanes, dS = P * (dP - D).
// CHECK: math.floor
// CHECK: arith.select
// CHECK: arith.subf
// CHECK: arith.mulf
// dV^T and dK^T accumulate in register tiles: FMAs over the rows.
// CHECK: math.fma
// dk = scale * dK^T transposed back, dv = dV^T.
// CHECK: memref.store %{{.*}}, %[[DK]]
// CHECK: memref.store %{{.*}}, %[[DV]]
// CHECK: } else {
// dQ part: item - keyItems = (batch, head).
// CHECK: %[[QI:.*]] = arith.subi %[[ITEM]], %[[KEYITEMS]]
// CHECK: arith.remsi %[[QI]], %c4
// r = 1 / sum(P) per row: to row_scale (read by the dK/dV items), and dq.
// CHECK: memref.store %{{.*}}, %[[RS]]
// CHECK: vector.store %{{.*}}, %[[DQ]]
// The slope gradient: one reduction of the running vector, one store.
// CHECK: vector.reduction <add>
// CHECK: memref.store %{{.*}}, %[[DS]]
// CHECK: } else {
// Fused part: item - (keyItems + headItems) = (batch, kv head); the kv
// head's K^T, V^T, its dK^T, dV^T and a row block's P and dS against every
// key block on the heap.
// CHECK: %[[FI:.*]] = arith.subi %[[ITEM]], %[[TWOPASS]]
// CHECK: arith.remsi %[[FI]], %c2
// CHECK-COUNT-6: memref.alloc(%{{.*}}) {alignment = 64 : i64} : memref<?x16xf32>
// Per query head and row block: the walk, then r, row_scale and dq, then
// dK and dV from the kept P and dS.
// CHECK: memref.store %{{.*}}, %[[RS]]
// CHECK: vector.store %{{.*}}, %[[DQ]]
// CHECK: math.fma
// CHECK: memref.store %{{.*}}, %[[DS]]
// CHECK: memref.store %{{.*}}, %[[DK]]
// CHECK-COUNT-6: memref.dealloc
func.func @backward(%q: memref<?x4x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x4x?x16xf32>, %do: memref<?x4x?x16xf32>, %lse: memref<?x4x?xf32>, %dq: memref<?x4x?x16xf32>, %dk: memref<?x2x?x16xf32>, %dv: memref<?x2x?x16xf32>, %s: memref<?x4xf32, strided<[?, 1]>>, %ds: memref<?x4xf32>, %rs: memref<?x4x?xf32>, %b: index, %e: index) {
  tilt.attention_backward q(%q : memref<?x4x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) o(%o : memref<?x4x?x16xf32>) grad_o(%do : memref<?x4x?x16xf32>) lse(%lse : memref<?x4x?xf32>) slopes(%s : memref<?x4xf32, strided<[?, 1]>>) grads(%dq, %dk, %dv : memref<?x4x?x16xf32>, memref<?x2x?x16xf32>, memref<?x2x?x16xf32>) dslopes_out(%ds : memref<?x4xf32>) row_scale(%rs : memref<?x4x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi, slopes = custom>, causal, config = #tilt.tile_config<variant = cpu_bwd_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

// The tensor form is refused: tilt-cpu-entry makes the kernel form first.
func.func @tensor_form(%t: tensor<1x4x8x16xf32>, %lse: tensor<1x4x8xf32>) {
  // expected-error @+1 {{convert-tilt-to-cpu needs the kernel form (memrefs with items); run tilt-cpu-entry first}}
  %dq, %dk, %dv = tilt.attention_backward q(%t : tensor<1x4x8x16xf32>) k(%t : tensor<1x4x8x16xf32>) v(%t : tensor<1x4x8x16xf32>) o(%t : tensor<1x4x8x16xf32>) grad_o(%t : tensor<1x4x8x16xf32>) lse(%lse : tensor<1x4x8xf32>) {config = #tilt.tile_config<variant = cpu_bwd_avx2, block_m = 16, block_n = 16>} -> tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>
  return
}
