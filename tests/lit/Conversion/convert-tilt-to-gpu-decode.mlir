// RUN: tilt-opt %s -split-input-file -tilt-pin-tile-config=variant=gpu_decode_sm80 -convert-tilt-to-gpu -canonicalize | FileCheck %s

// gpu_decode_sm80 over a paged cache (GQA 4:1): the kernel ABI's block
// table, context lengths and split-KV parts; grid (splits x row blocks, kv
// head, batch); q rows gathered per group head; K and V copied from the
// page the block table names; the split path writes f32 parts and the
// unsplit one o (KernelABI.h, GpuEmitter.cpp). Default config: one warp of
// 16 rows, 64-key blocks, two stages.

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention(%[[Q:.*]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[K:.*]]: memref<?x32x2x64xbf16, strided<[?, ?, ?, 1]>>, %[[V:.*]]: memref<?x32x2x64xbf16, strided<[?, ?, ?, 1]>>, %[[O:.*]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[LSE:.*]]: memref<?x8x?xf32>, %[[BT:.*]]: memref<?x?xi32>, %[[CL:.*]]: memref<?xi32>, %[[OP:.*]]: memref<?x?x8x?x64xf32>, %[[LP:.*]]: memref<?x?x8x?xf32>) kernel
// CHECK-SAME: known_block_size = array<i32: 32, 1, 1>
// CHECK-SAME: tilt.config = #tilt.tile_config<variant = gpu_decode_sm80, block_m = 16, block_n = 64, num_warps = 1, num_stages = 2>
// CHECK: %[[X:.*]] = gpu.block_id  x
// CHECK: %[[BATCH:.*]] = gpu.block_id  z
// CHECK: %[[KVH:.*]] = gpu.block_id  y
// The sequence's keys are its context length; the parts' count is S.
// CHECK: memref.load %[[CL]][%[[BATCH]]] : memref<?xi32>
// CHECK: memref.dim %[[OP]], %c0
// CHECK: arith.divui %[[X]]
// CHECK: arith.remui %[[X]]
// Q rows: head kvHead * 4 + row / Sq.
// CHECK: arith.muli %[[KVH]], %c4
// CHECK: nvgpu.device_async_copy %[[Q]][%[[BATCH]],
// The key loop: each K/V row from block_table[b, t / 32], slot t % 32.
// CHECK: scf.for
// CHECK: memref.load %[[BT]][%[[BATCH]], %{{.*}}] : memref<?x?xi32>
// CHECK: nvgpu.device_async_copy %[[K]][%{{.*}}, %{{.*}}, %[[KVH]], %{{.*}}]
// CHECK: nvgpu.device_async_copy %[[V]][%{{.*}}, %{{.*}}, %[[KVH]], %{{.*}}]
// CHECK: nvvm.mma.sync
// The epilogue: split parts (f32) or o (bf16).
// CHECK: vector.store %{{.*}}, %[[OP]][%{{.*}}] {alignment = 8 : i64} : memref<?x?x8x?x64xf32>, vector<2xf32>
// CHECK: memref.store %{{.*}}, %[[LP]]
// CHECK: memref.store %{{.*}}, %[[LSE]]
// CHECK: } else {
// CHECK: vector.store %{{.*}}, %[[O]][%{{.*}}] {alignment = 4 : i64} : memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, vector<2xbf16>
func.func @paged(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x32x2x64xbf16>, %v: tensor<?x32x2x64xbf16>, %bt: tensor<?x?xi32>, %cl: tensor<?xi32>) -> (tensor<?x8x?x64xbf16>, tensor<?x8x?xf32>) {
  %o, %lse = tilt.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x32x2x64xbf16>) v(%v : tensor<?x32x2x64xbf16>) paged(%bt : tensor<?x?xi32>, %cl : tensor<?xi32>) {bias = #tilt.bias<alibi>, causal} -> tensor<?x8x?x64xbf16>, tensor<?x8x?xf32>
  return %o, %lse : tensor<?x8x?x64xbf16>, tensor<?x8x?xf32>
}

// -----

// Dense MHA: the kv head is grid y and the key count k's extent.

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention(%[[Q:.*]]: memref<?x4x?x128xf16, strided<[?, ?, ?, 1]>>, %[[K:.*]]: memref<?x4x?x128xf16, strided<[?, ?, ?, 1]>>, %[[V:.*]]: memref<?x4x?x128xf16, strided<[?, ?, ?, 1]>>, %[[O:.*]]: memref<?x4x?x128xf16, strided<[?, ?, ?, 1]>>, %[[LSE:.*]]: memref<?x4x?xf32>, %[[OP:.*]]: memref<?x?x4x?x128xf32>, %[[LP:.*]]: memref<?x?x4x?xf32>) kernel
// CHECK: %[[BATCH:.*]] = gpu.block_id  z
// CHECK: %[[KVH:.*]] = gpu.block_id  y
// CHECK: memref.dim %[[K]], %c2
// CHECK: nvgpu.device_async_copy %[[K]][%[[BATCH]], %[[KVH]],
// CHECK: nvgpu.device_async_copy %[[V]][%[[BATCH]], %[[KVH]],
func.func @dense(%q: tensor<?x4x?x128xf16>, %k: tensor<?x4x?x128xf16>, %v: tensor<?x4x?x128xf16>) -> tensor<?x4x?x128xf16> {
  %o = tilt.attention q(%q : tensor<?x4x?x128xf16>) k(%k : tensor<?x4x?x128xf16>) v(%v : tensor<?x4x?x128xf16>) {bias = #tilt.bias<alibi_symmetric>} -> tensor<?x4x?x128xf16>
  return %o : tensor<?x4x?x128xf16>
}
