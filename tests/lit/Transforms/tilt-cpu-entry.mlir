// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=cpu_avx512 --tilt-cpu-entry | FileCheck %s
// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config="variant=cpu_avx2 block-m=32 block-n=128" --tilt-cpu-entry="kernel-name=k" | FileCheck %s --check-prefix=OPTS

// The spec function becomes the kernel ABI of KernelABI.h: q, k, v, o, lse,
// the optional operands, then the work range; the op switches to its memref
// form with the tile configuration tilt-pin-tile-config pinned.

// CHECK-LABEL: func.func @tilt_kernel(
// CHECK-SAME: %[[Q:.*]]: memref<?x8x?x64xf32, strided<[?, ?, ?, 1]>>, %[[K:.*]]: memref<?x2x?x64xf32, strided<[?, ?, ?, 1]>>, %[[V:.*]]: memref<?x2x?x64xf32, strided<[?, ?, ?, 1]>>,
// CHECK-SAME: %[[O:.*]]: memref<?x8x?x64xf32, strided<[?, ?, ?, 1]>>, %[[LSE:.*]]: memref<?x8x?xf32>,
// CHECK-SAME: %[[S:.*]]: memref<?x8xf32, strided<[?, 1]>>, %[[B:.*]]: index, %[[E:.*]]: index)
// CHECK-SAME: attributes {llvm.emit_c_interface}
// CHECK-NEXT: tilt.attention q(%[[Q]] : {{.*}}) k(%[[K]] : {{.*}}) v(%[[V]] : {{.*}}) slopes(%[[S]] : {{.*}}) out(%[[O]] : {{.*}}) lse_out(%[[LSE]] : {{.*}}) items(%[[B]], %[[E]])
// CHECK-SAME: {bias = #tilt.bias<alibi, slopes = custom>, causal, config = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 64>}
// CHECK-NEXT: return
// CHECK-NOT: @tilt_attention

// OPTS-LABEL: func.func @k(
// OPTS: config = #tilt.tile_config<variant = cpu_avx2, block_m = 32, block_n = 128>
func.func @tilt_attention(%q: tensor<?x8x?x64xf32>, %k: tensor<?x2x?x64xf32>, %v: tensor<?x2x?x64xf32>, %s: tensor<?x8xf32>) -> (tensor<?x8x?x64xf32>, tensor<?x8x?xf32>) {
  %o, %lse = tilt.attention q(%q : tensor<?x8x?x64xf32>) k(%k : tensor<?x2x?x64xf32>) v(%v : tensor<?x2x?x64xf32>) slopes(%s : tensor<?x8xf32>) {bias = #tilt.bias<alibi, slopes = custom>, causal} -> tensor<?x8x?x64xf32>, tensor<?x8x?xf32>
  return %o, %lse : tensor<?x8x?x64xf32>, tensor<?x8x?xf32>
}

// -----

// A spec without lse still gets the lse argument (the ABI always has one),
// the padding mask becomes bytes, and a config already on the op is kept.

// CHECK-LABEL: func.func @tilt_kernel(
// CHECK-SAME: memref<?x4x?xf32>, %[[M:.*]]: memref<?x?xi8>, %{{.*}}: index, %{{.*}}: index)
// CHECK: key_padding_mask(%[[M]] : memref<?x?xi8>)
// CHECK-SAME: config = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 32>
// OPTS: config = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 32>
func.func @positions(%q: tensor<?x4x?x128xbf16>, %k: tensor<?x4x?x128xbf16>, %v: tensor<?x4x?x128xbf16>, %m: tensor<?x?xi8>) -> tensor<?x4x?x128xbf16> {
  %o = tilt.attention q(%q : tensor<?x4x?x128xbf16>) k(%k : tensor<?x4x?x128xbf16>) v(%v : tensor<?x4x?x128xbf16>) key_padding_mask(%m : tensor<?x?xi8>) {bias = #tilt.bias<alibi_positions>, config = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 32>} -> tensor<?x4x?x128xbf16>
  return %o : tensor<?x4x?x128xbf16>
}

// -----

// Ragged batches: q/k/v packed [total, H, D], lse [H, total], cu_seqlens last.

// CHECK-LABEL: func.func @tilt_kernel(
// CHECK-SAME: memref<?x12x80xf16, strided<[?, ?, 1]>>, %{{.*}}: memref<?x4x80xf16, strided<[?, ?, 1]>>, %{{.*}}: memref<?x4x80xf16, strided<[?, ?, 1]>>, %{{.*}}: memref<?x12x80xf16, strided<[?, ?, 1]>>, %{{.*}}: memref<12x?xf32>, %[[CQ:.*]]: memref<?xi32>, %[[CK:.*]]: memref<?xi32>, %{{.*}}: index, %{{.*}}: index)
// CHECK: cu_seqlens_q(%[[CQ]] : memref<?xi32>) cu_seqlens_k(%[[CK]] : memref<?xi32>)
func.func @varlen(%q: tensor<?x12x80xf16>, %k: tensor<?x4x80xf16>, %v: tensor<?x4x80xf16>, %cq: tensor<?xi32>, %ck: tensor<?xi32>) -> tensor<?x12x80xf16> {
  %o = tilt.attention q(%q : tensor<?x12x80xf16>) k(%k : tensor<?x4x80xf16>) v(%v : tensor<?x4x80xf16>) cu_seqlens_q(%cq : tensor<?xi32>) cu_seqlens_k(%ck : tensor<?xi32>) {bias = #tilt.bias<alibi>} -> tensor<?x12x80xf16>
  return %o : tensor<?x12x80xf16>
}

// -----

// Position offsets: two index arguments after the memrefs, before the work
// range (the packed entry point reads them from the slot after the
// descriptors).

// CHECK-LABEL: func.func @tilt_kernel(
// CHECK-SAME: %{{.*}}: memref<?x4x?xf32>, %[[QO:.*]]: index, %[[KO:.*]]: index, %[[B:.*]]: index, %[[E:.*]]: index)
// CHECK: offsets(%[[QO]], %[[KO]]) out(
// CHECK-SAME: items(%[[B]], %[[E]])
func.func @offsets(%q: tensor<?x4x?x64xf32>, %k: tensor<?x4x?x64xf32>, %v: tensor<?x4x?x64xf32>, %qo: index, %ko: index) -> tensor<?x4x?x64xf32> {
  %o = tilt.attention q(%q : tensor<?x4x?x64xf32>) k(%k : tensor<?x4x?x64xf32>) v(%v : tensor<?x4x?x64xf32>) offsets(%qo, %ko) {bias = #tilt.bias<alibi_symmetric>} -> tensor<?x4x?x64xf32>
  return %o : tensor<?x4x?x64xf32>
}
