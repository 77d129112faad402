// RUN: tilt-opt %s | tilt-opt | FileCheck %s
// RUN: tilt-opt %s --mlir-print-op-generic | tilt-opt | FileCheck %s

// Every form of tilt.attention parses, prints, and parses again to the same
// text (the first RUN), also through the generic form (the second RUN).

// CHECK-LABEL: func.func @plain
// CHECK: %[[O:.*]] = tilt.attention q(%{{.*}} : tensor<1x12x128x64xf32>) k(%{{.*}} : tensor<1x12x128x64xf32>) v(%{{.*}} : tensor<1x12x128x64xf32>) -> tensor<1x12x128x64xf32>
// CHECK: return %[[O]]
func.func @plain(%q: tensor<1x12x128x64xf32>, %k: tensor<1x12x128x64xf32>,
                 %v: tensor<1x12x128x64xf32>) -> tensor<1x12x128x64xf32> {
  %o = tilt.attention q(%q : tensor<1x12x128x64xf32>) k(%k : tensor<1x12x128x64xf32>) v(%v : tensor<1x12x128x64xf32>) -> tensor<1x12x128x64xf32>
  return %o : tensor<1x12x128x64xf32>
}

// CHECK-LABEL: func.func @alibi_causal_gqa_lse
// CHECK: %[[O:.*]], %[[LSE:.*]] = tilt.attention
// CHECK-SAME: {bias = #tilt.bias<alibi>, causal}
// CHECK-SAME: -> tensor<2x12x100x128xbf16>, tensor<2x12x100xf32>
// CHECK: return %[[O]], %[[LSE]]
func.func @alibi_causal_gqa_lse(%q: tensor<2x12x100x128xbf16>, %k: tensor<2x4x300x128xbf16>,
                                %v: tensor<2x4x300x128xbf16>) -> (tensor<2x12x100x128xbf16>, tensor<2x12x100xf32>) {
  %o, %lse = tilt.attention q(%q : tensor<2x12x100x128xbf16>) k(%k : tensor<2x4x300x128xbf16>) v(%v : tensor<2x4x300x128xbf16>) {bias = #tilt.bias<alibi>, causal} -> tensor<2x12x100x128xbf16>, tensor<2x12x100xf32>
  return %o, %lse : tensor<2x12x100x128xbf16>, tensor<2x12x100xf32>
}

// CHECK-LABEL: func.func @symmetric_window_scale_mqa
// CHECK: tilt.attention
// CHECK-SAME: {bias = #tilt.bias<alibi_symmetric, max_bias = 4.000000e+00>, scale = 1.000000e-01 : f64, window = 256 : i64}
func.func @symmetric_window_scale_mqa(%q: tensor<1x40x?x80xf16>, %k: tensor<1x1x?x80xf16>,
                                      %v: tensor<1x1x?x80xf16>) -> tensor<1x40x?x80xf16> {
  %o = tilt.attention q(%q : tensor<1x40x?x80xf16>) k(%k : tensor<1x1x?x80xf16>) v(%v : tensor<1x1x?x80xf16>) {bias = #tilt.bias<alibi_symmetric, max_bias = 4.0>, window = 256, scale = 0.1 : f64} -> tensor<1x40x?x80xf16>
  return %o : tensor<1x40x?x80xf16>
}

// CHECK-LABEL: func.func @custom_slopes_per_head
// CHECK: tilt.attention {{.*}} slopes(%{{.*}} : tensor<71xf32>)
// CHECK-SAME: {bias = #tilt.bias<alibi, slopes = custom>}
func.func @custom_slopes_per_head(%q: tensor<1x71x17x64xf32>, %k: tensor<1x71x17x64xf32>,
                                  %v: tensor<1x71x17x64xf32>, %s: tensor<71xf32>) -> tensor<1x71x17x64xf32> {
  %o = tilt.attention q(%q : tensor<1x71x17x64xf32>) k(%k : tensor<1x71x17x64xf32>) v(%v : tensor<1x71x17x64xf32>) slopes(%s : tensor<71xf32>) {bias = #tilt.bias<alibi, slopes = custom>} -> tensor<1x71x17x64xf32>
  return %o : tensor<1x71x17x64xf32>
}

// CHECK-LABEL: func.func @custom_slopes_per_batch
// CHECK: slopes(%{{.*}} : tensor<3x8xf32>)
func.func @custom_slopes_per_batch(%q: tensor<3x8x17x64xf32>, %k: tensor<3x8x17x64xf32>,
                                   %v: tensor<3x8x17x64xf32>, %s: tensor<3x8xf32>) -> tensor<3x8x17x64xf32> {
  %o = tilt.attention q(%q : tensor<3x8x17x64xf32>) k(%k : tensor<3x8x17x64xf32>) v(%v : tensor<3x8x17x64xf32>) slopes(%s : tensor<3x8xf32>) {bias = #tilt.bias<alibi_symmetric, slopes = custom>} -> tensor<3x8x17x64xf32>
  return %o : tensor<3x8x17x64xf32>
}

// CHECK-LABEL: func.func @positions_from_padding_mask
// CHECK: key_padding_mask(%{{.*}} : tensor<2x129xi8>)
// CHECK-SAME: {bias = #tilt.bias<alibi_positions, head_offset = 16, total_heads = 32>}
func.func @positions_from_padding_mask(%q: tensor<2x16x1x96xbf16>, %k: tensor<2x16x129x96xbf16>,
                                       %v: tensor<2x16x129x96xbf16>, %m: tensor<2x129xi8>) -> tensor<2x16x1x96xbf16> {
  %o = tilt.attention q(%q : tensor<2x16x1x96xbf16>) k(%k : tensor<2x16x129x96xbf16>) v(%v : tensor<2x16x129x96xbf16>) key_padding_mask(%m : tensor<2x129xi8>) {bias = #tilt.bias<alibi_positions, head_offset = 16, total_heads = 32>} -> tensor<2x16x1x96xbf16>
  return %o : tensor<2x16x1x96xbf16>
}

// CHECK-LABEL: func.func @padding_mask_without_bias
// CHECK: key_padding_mask(%{{.*}} : tensor<1x64xi1>)
// CHECK-SAME: {bias = #tilt.bias<none>}
func.func @padding_mask_without_bias(%q: tensor<1x2x64x256xf32>, %k: tensor<1x2x64x256xf32>,
                                     %v: tensor<1x2x64x256xf32>, %m: tensor<1x64xi1>) -> tensor<1x2x64x256xf32> {
  %o = tilt.attention q(%q : tensor<1x2x64x256xf32>) k(%k : tensor<1x2x64x256xf32>) v(%v : tensor<1x2x64x256xf32>) key_padding_mask(%m : tensor<1x64xi1>) {bias = #tilt.bias<none>} -> tensor<1x2x64x256xf32>
  return %o : tensor<1x2x64x256xf32>
}

// CHECK-LABEL: func.func @varlen
// CHECK: cu_seqlens_q(%{{.*}} : tensor<5xi32>) cu_seqlens_k(%{{.*}} : tensor<5xi32>)
// CHECK-SAME: -> tensor<?x12x64xf16>, tensor<12x?xf32>
func.func @varlen(%q: tensor<?x12x64xf16>, %k: tensor<?x4x64xf16>, %v: tensor<?x4x64xf16>,
                  %cq: tensor<5xi32>, %ck: tensor<5xi32>) -> (tensor<?x12x64xf16>, tensor<12x?xf32>) {
  %o, %lse = tilt.attention q(%q : tensor<?x12x64xf16>) k(%k : tensor<?x4x64xf16>) v(%v : tensor<?x4x64xf16>) cu_seqlens_q(%cq : tensor<5xi32>) cu_seqlens_k(%ck : tensor<5xi32>) {bias = #tilt.bias<alibi>, causal} -> tensor<?x12x64xf16>, tensor<12x?xf32>
  return %o, %lse : tensor<?x12x64xf16>, tensor<12x?xf32>
}

// CHECK-LABEL: func.func @memref_form
// CHECK: tilt.attention {{.*}} out(%{{.*}} : memref<1x12x?x64xf32>) lse_out(%{{.*}} : memref<1x12x?xf32>)
// CHECK-SAME: {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 64>}
// CHECK-NOT: ->
func.func @memref_form(%q: memref<1x12x?x64xf32>, %k: memref<1x12x?x64xf32>, %v: memref<1x12x?x64xf32>,
                       %o: memref<1x12x?x64xf32>, %lse: memref<1x12x?xf32>) {
  tilt.attention q(%q : memref<1x12x?x64xf32>) k(%k : memref<1x12x?x64xf32>) v(%v : memref<1x12x?x64xf32>) out(%o : memref<1x12x?x64xf32>) lse_out(%lse : memref<1x12x?xf32>) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 64>}
  return
}

// CHECK-LABEL: func.func @gpu_config
// CHECK: config = #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 128, num_warps = 8, num_stages = 2>
func.func @gpu_config(%q: tensor<2x32x4096x128xbf16>, %k: tensor<2x32x4096x128xbf16>,
                      %v: tensor<2x32x4096x128xbf16>) -> tensor<2x32x4096x128xbf16> {
  %o = tilt.attention q(%q : tensor<2x32x4096x128xbf16>) k(%k : tensor<2x32x4096x128xbf16>) v(%v : tensor<2x32x4096x128xbf16>) {bias = #tilt.bias<alibi>, config = #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 128, num_warps = 8, num_stages = 2>} -> tensor<2x32x4096x128xbf16>
  return %o : tensor<2x32x4096x128xbf16>
}

// CHECK-LABEL: func.func @position_offsets
// CHECK: tilt.attention q(%{{.*}}) k(%{{.*}}) v(%{{.*}}) offsets(%[[QO:.*]], %[[KO:.*]]) {bias = #tilt.bias<alibi>, causal}
func.func @position_offsets(%q: tensor<1x8x?x64xbf16>, %k: tensor<1x8x?x64xbf16>, %v: tensor<1x8x?x64xbf16>,
                            %qo: index, %ko: index) -> (tensor<1x8x?x64xbf16>, tensor<1x8x?xf32>) {
  %o, %lse = tilt.attention q(%q : tensor<1x8x?x64xbf16>) k(%k : tensor<1x8x?x64xbf16>) v(%v : tensor<1x8x?x64xbf16>) offsets(%qo, %ko) {bias = #tilt.bias<alibi>, causal} -> tensor<1x8x?x64xbf16>, tensor<1x8x?xf32>
  return %o, %lse : tensor<1x8x?x64xbf16>, tensor<1x8x?xf32>
}

// A paged KV cache: pages of 16 tokens of 2 kv heads.
// CHECK-LABEL: func.func @paged_decode
// CHECK: tilt.attention q(%{{.*}} : tensor<4x8x1x64xbf16>) k(%{{.*}} : tensor<?x16x2x64xbf16>) v(%{{.*}} : tensor<?x16x2x64xbf16>) paged(%{{.*}} : tensor<4x?xi32>, %{{.*}} : tensor<4xi32>) {bias = #tilt.bias<alibi>, causal}
func.func @paged_decode(%q: tensor<4x8x1x64xbf16>, %k: tensor<?x16x2x64xbf16>, %v: tensor<?x16x2x64xbf16>,
                        %bt: tensor<4x?xi32>, %cl: tensor<4xi32>) -> tensor<4x8x1x64xbf16> {
  %o = tilt.attention q(%q : tensor<4x8x1x64xbf16>) k(%k : tensor<?x16x2x64xbf16>) v(%v : tensor<?x16x2x64xbf16>) paged(%bt : tensor<4x?xi32>, %cl : tensor<4xi32>) {bias = #tilt.bias<alibi>, causal} -> tensor<4x8x1x64xbf16>
  return %o : tensor<4x8x1x64xbf16>
}

// CHECK-LABEL: func.func @backward_gqa_trainable_slopes
// CHECK: %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]], %[[DS:.*]] = tilt.attention_backward q(%{{.*}} : tensor<2x8x100x64xbf16>) k(%{{.*}} : tensor<2x2x100x64xbf16>) v(%{{.*}} : tensor<2x2x100x64xbf16>) o(%{{.*}} : tensor<2x8x100x64xbf16>) grad_o(%{{.*}} : tensor<2x8x100x64xbf16>) lse(%{{.*}} : tensor<2x8x100xf32>) slopes(%{{.*}} : tensor<8xf32>)
// CHECK-SAME: {bias = #tilt.bias<alibi, slopes = custom>, causal}
// CHECK-SAME: -> tensor<2x8x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x8xf32>
// CHECK: return %[[DQ]], %[[DK]], %[[DV]], %[[DS]]
func.func @backward_gqa_trainable_slopes(%q: tensor<2x8x100x64xbf16>, %k: tensor<2x2x100x64xbf16>, %v: tensor<2x2x100x64xbf16>, %o: tensor<2x8x100x64xbf16>, %do: tensor<2x8x100x64xbf16>, %lse: tensor<2x8x100xf32>, %s: tensor<8xf32>)
    -> (tensor<2x8x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x8xf32>) {
  %dq, %dk, %dv, %ds = tilt.attention_backward q(%q : tensor<2x8x100x64xbf16>) k(%k : tensor<2x2x100x64xbf16>) v(%v : tensor<2x2x100x64xbf16>) o(%o : tensor<2x8x100x64xbf16>) grad_o(%do : tensor<2x8x100x64xbf16>) lse(%lse : tensor<2x8x100xf32>) slopes(%s : tensor<8xf32>) {bias = #tilt.bias<alibi, slopes = custom>, causal} -> tensor<2x8x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x8xf32>
  return %dq, %dk, %dv, %ds : tensor<2x8x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x2x100x64xbf16>, tensor<2x8xf32>
}

// CHECK-LABEL: func.func @backward_kernel_form
// CHECK: tilt.attention_backward
// CHECK-SAME: grads(%{{.*}}, %{{.*}}, %{{.*}} : memref<?x4x?x64xf32>, memref<?x4x?x64xf32>, memref<?x4x?x64xf32>) items(%{{.*}}, %{{.*}})
// CHECK-SAME: config = #tilt.tile_config<variant = cpu_bwd_avx2, block_m = 32, block_n = 64>
func.func @backward_kernel_form(%t: memref<?x4x?x64xf32>, %lse: memref<?x4x?xf32>, %b: index, %e: index) {
  tilt.attention_backward q(%t : memref<?x4x?x64xf32>) k(%t : memref<?x4x?x64xf32>) v(%t : memref<?x4x?x64xf32>) o(%t : memref<?x4x?x64xf32>) grad_o(%t : memref<?x4x?x64xf32>) lse(%lse : memref<?x4x?xf32>) grads(%t, %t, %t : memref<?x4x?x64xf32>, memref<?x4x?x64xf32>, memref<?x4x?x64xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_bwd_avx2, block_m = 32, block_n = 64>, window = 64 : i64}
  return
}
