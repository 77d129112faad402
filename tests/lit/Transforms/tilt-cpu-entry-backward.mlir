// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=cpu_bwd_avx2 --tilt-cpu-entry | FileCheck %s

// tilt.attention_backward's kernel ABI (KernelABI.h): q, k, v, o, grad_o,
// lse, dq, dk, dv, row_scale, then slopes and dslopes, the mask,
// cu_seqlens, the offsets and the work range.

// CHECK-LABEL: func.func @tilt_kernel(
// CHECK-SAME: %[[Q:[a-z0-9]+]]: memref<?x8x?x64xf32, strided<[?, ?, ?, 1]>>, %[[K:[a-z0-9]+]]: memref<?x2x?x64xf32, strided<[?, ?, ?, 1]>>, %[[V:[a-z0-9]+]]: memref<?x2x?x64xf32, strided<[?, ?, ?, 1]>>,
// CHECK-SAME: %[[O:[a-z0-9]+]]: memref<?x8x?x64xf32, strided<[?, ?, ?, 1]>>, %[[G:[a-z0-9]+]]: memref<?x8x?x64xf32, strided<[?, ?, ?, 1]>>, %[[LSE:[a-z0-9]+]]: memref<?x8x?xf32>,
// CHECK-SAME: %[[DQ:[a-z0-9]+]]: memref<?x8x?x64xf32, strided<[?, ?, ?, 1]>>, %[[DK:[a-z0-9]+]]: memref<?x2x?x64xf32, strided<[?, ?, ?, 1]>>, %[[DV:[a-z0-9]+]]: memref<?x2x?x64xf32, strided<[?, ?, ?, 1]>>, %[[RS:[a-z0-9]+]]: memref<?x8x?xf32>,
// CHECK-SAME: %[[S:[a-z0-9]+]]: memref<?x8xf32, strided<[?, 1]>>, %[[DS:[a-z0-9]+]]: memref<?x8xf32>,
// CHECK-SAME: %[[QO:[a-z0-9]+]]: index, %[[KO:[a-z0-9]+]]: index, %[[B:[a-z0-9]+]]: index, %[[E:[a-z0-9]+]]: index)
// CHECK-NEXT: tilt.attention_backward q(%[[Q]] : {{.*}}) k(%[[K]] : {{.*}}) v(%[[V]] : {{.*}}) o(%[[O]] : {{.*}}) grad_o(%[[G]] : {{.*}}) lse(%[[LSE]] : {{.*}}) slopes(%[[S]] : {{.*}}) offsets(%[[QO]], %[[KO]]) grads(%[[DQ]], %[[DK]], %[[DV]] : {{.*}}) dslopes_out(%[[DS]] : memref<?x8xf32>) row_scale(%[[RS]] : memref<?x8x?xf32>) items(%[[B]], %[[E]])
// CHECK-SAME: config = #tilt.tile_config<variant = cpu_bwd_avx2, block_m = 32, block_n = 64>
// CHECK-NEXT: return
func.func @tilt_attention(%q: tensor<?x8x?x64xf32>, %k: tensor<?x2x?x64xf32>, %v: tensor<?x2x?x64xf32>, %o: tensor<?x8x?x64xf32>, %do: tensor<?x8x?x64xf32>, %lse: tensor<?x8x?xf32>, %s: tensor<?x8xf32>, %qo: index, %ko: index)
    -> (tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x8xf32>) {
  %dq, %dk, %dv, %ds = tilt.attention_backward q(%q : tensor<?x8x?x64xf32>) k(%k : tensor<?x2x?x64xf32>) v(%v : tensor<?x2x?x64xf32>) o(%o : tensor<?x8x?x64xf32>) grad_o(%do : tensor<?x8x?x64xf32>) lse(%lse : tensor<?x8x?xf32>) slopes(%s : tensor<?x8xf32>) offsets(%qo, %ko) {bias = #tilt.bias<alibi, slopes = custom>, causal} -> tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x8xf32>
  return %dq, %dk, %dv, %ds : tensor<?x8x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x2x?x64xf32>, tensor<?x8xf32>
}
