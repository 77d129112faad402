// RUN: tilt-opt %s --tilt-pin-tile-config=variant=cpu_decode_avx2 --tilt-cpu-entry | FileCheck %s
// RUN: tilt-opt %s --tilt-pin-tile-config=variant=cpu_avx2 --tilt-cpu-entry | FileCheck %s --check-prefix=PREFILL

// A paged KV cache in the kernel ABI: q, k, v, o, lse, then the block table
// and the context lengths, then the decode family's split-KV parts (f32, o's
// and lse's shapes behind a dynamic count), then the work range
// (KernelABI.h). The prefill kernels (a chunked prefill against the cache)
// take the same operands without the parts.

// CHECK-LABEL: func.func @tilt_kernel(
// CHECK-SAME: %[[Q:[a-z0-9]+]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[K:[a-z0-9]+]]: memref<?x32x2x64xbf16, strided<[?, ?, ?, 1]>>, %[[V:[a-z0-9]+]]: memref<?x32x2x64xbf16, strided<[?, ?, ?, 1]>>, %[[O:[a-z0-9]+]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[LSE:[a-z0-9]+]]: memref<?x8x?xf32>, %[[BT:[a-z0-9]+]]: memref<?x?xi32>, %[[CL:[a-z0-9]+]]: memref<?xi32>, %[[OP:[a-z0-9]+]]: memref<?x?x8x?x64xf32>, %[[LP:[a-z0-9]+]]: memref<?x?x8x?xf32>, %[[B:[a-z0-9]+]]: index, %[[E:[a-z0-9]+]]: index)
// CHECK: tilt.attention q(%[[Q]] : memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>) k(%[[K]] : memref<?x32x2x64xbf16, strided<[?, ?, ?, 1]>>) v(%[[V]] : memref<?x32x2x64xbf16, strided<[?, ?, ?, 1]>>) paged(%[[BT]] : memref<?x?xi32>, %[[CL]] : memref<?xi32>) out(%[[O]] : memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>) lse_out(%[[LSE]] : memref<?x8x?xf32>) splits(%[[OP]] : memref<?x?x8x?x64xf32>, %[[LP]] : memref<?x?x8x?xf32>) items(%[[B]], %[[E]])
// CHECK-SAME: variant = cpu_decode_avx2, block_m = 16, block_n = 16

// PREFILL-LABEL: func.func @tilt_kernel(
// PREFILL-SAME: %[[LSE:[a-z0-9]+]]: memref<?x8x?xf32>, %[[BT:[a-z0-9]+]]: memref<?x?xi32>, %[[CL:[a-z0-9]+]]: memref<?xi32>, %[[B:[a-z0-9]+]]: index, %[[E:[a-z0-9]+]]: index)
// PREFILL: paged(%[[BT]] : memref<?x?xi32>, %[[CL]] : memref<?xi32>) out(%{{.*}}) lse_out(%[[LSE]] : memref<?x8x?xf32>) items(%[[B]], %[[E]])
// PREFILL-SAME: variant = cpu_avx2, block_m = 32, block_n = 32
func.func @paged(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x32x2x64xbf16>, %v: tensor<?x32x2x64xbf16>, %bt: tensor<?x?xi32>, %cl: tensor<?xi32>) -> tensor<?x8x?x64xbf16> {
  %o = tilt.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x32x2x64xbf16>) v(%v : tensor<?x32x2x64xbf16>) paged(%bt : tensor<?x?xi32>, %cl : tensor<?xi32>) {bias = #tilt.bias<alibi>, causal} -> tensor<?x8x?x64xbf16>
  return %o : tensor<?x8x?x64xbf16>
}
