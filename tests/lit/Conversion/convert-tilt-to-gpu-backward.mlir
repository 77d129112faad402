// RUN: tilt-opt %s -split-input-file -tilt-pin-tile-config=variant=gpu_bwd_sm80 -convert-tilt-to-gpu -canonicalize | FileCheck %s

// gpu_bwd_sm80 (GpuBackward.cpp): two kernels with the backward's GPU
// parameters (KernelABI.h): row_scale as the row state (lse's shape x 4)
// and, with custom slopes, the slope gradient's parts last. The dQ kernel
// (grid: query blocks, heads, batch) writes dq, the row state and the
// parts; the dK/dV kernel (grid: key blocks, kv heads, batch) sums the
// parts into dslopes in CTA 0 and writes dk and dv. Default config: 64 x
// 64, four warps, two stages.

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention_bwd_dq(%[[Q:[^:]*]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[K:[^:]*]]: memref<?x2x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[V:[^:]*]]: memref<?x2x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[O:[^:]*]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[DO:[^:]*]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[LSE:[^:]*]]: memref<?x8x?xf32>, %[[GL:[^:]*]]: memref<?x8x?xf32>, %[[DQ:[^:]*]]: memref<?x8x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[DK:[^:]*]]: memref<?x2x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[DV:[^:]*]]: memref<?x2x?x64xbf16, strided<[?, ?, ?, 1]>>, %[[RS:[^:]*]]: memref<?x8x?x4xf32>, %[[S:[^:]*]]: memref<?x8xf32, strided<[?, 1]>>, %[[DS:[^:]*]]: memref<?x8xf32>, %[[P:[^:]*]]: memref<?x?x?xf32>) kernel
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK-SAME: tilt.config = #tilt.tile_config<variant = gpu_bwd_sm80, block_m = 64, block_n = 64, num_warps = 4, num_stages = 2>
// CHECK: %[[QB:.*]] = gpu.block_id  x
// CHECK: %[[H:.*]] = gpu.block_id  y
// Q and dO rows of the block, then per row lse and grad_lse.
// CHECK: nvgpu.device_async_copy %[[Q]]
// CHECK: nvgpu.device_async_copy %[[DO]]
// CHECK: memref.load %[[LSE]]
// CHECK: memref.load %[[GL]]
// D_i reads o.
// CHECK: memref.load %[[O]]
// The key loop: K and V blocks in flight, S and dP on mma.sync, ex2 of the
// recomputed scores, dQ += dS K through ldmatrix.trans.
// CHECK: scf.for
// CHECK: nvgpu.device_async_copy %[[K]]
// CHECK: nvgpu.device_async_copy %[[V]]
// CHECK: nvvm.mma.sync
// CHECK: ex2.approx.ftz.f32
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true}
// The epilogue: dq, the row state, the CTA's slope-gradient part.
// CHECK: vector.store %{{.*}}, %[[DQ]]
// CHECK: memref.store %{{.*}}, %[[RS]]
// CHECK: memref.store %{{.*}}, %[[P]][%{{.*}}, %[[H]], %[[QB]]]
// CHECK: gpu.func @tilt_attention_bwd_dkdv(
// CHECK-SAME: tilt.config = #tilt.tile_config<variant = gpu_bwd_sm80
// CHECK: %[[KB:.*]] = gpu.block_id  x
// CHECK: %[[KVH:.*]] = gpu.block_id  y
// CTA 0 sums the group's parts into dslopes.
// CHECK: scf.for
// CHECK: memref.load %{{.*}} : memref<?x?x?xf32>
// CHECK: memref.store %{{.*}}, %{{.*}} : memref<?x8xf32>
// K and V of the block, then Q, dO and the row state per query block.
// CHECK: nvgpu.device_async_copy %{{.*}}[%{{.*}}, %[[KVH]], %{{.*}}, %{{.*}}]
// CHECK: scf.for
// CHECK: nvgpu.device_async_copy %{{.*}} : memref<?x8x?x4xf32> to memref<{{.*}}x4xf32
// CHECK: nvvm.mma.sync
// CHECK: vector.store %{{.*}} : memref<?x2x?x64xbf16, strided<[?, ?, ?, 1]>>, vector<2xbf16>
// CHECK: vector.store %{{.*}} : memref<?x2x?x64xbf16, strided<[?, ?, ?, 1]>>, vector<2xbf16>
func.func @bwd(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x2x?x64xbf16>, %v: tensor<?x2x?x64xbf16>, %o: tensor<?x8x?x64xbf16>, %do: tensor<?x8x?x64xbf16>, %lse: tensor<?x8x?xf32>, %s: tensor<8xf32>) -> (tensor<?x8x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x8xf32>) {
  %dq, %dk, %dv, %ds = tilt.attention_backward q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x2x?x64xbf16>) v(%v : tensor<?x2x?x64xbf16>) o(%o : tensor<?x8x?x64xbf16>) grad_o(%do : tensor<?x8x?x64xbf16>) lse(%lse : tensor<?x8x?xf32>) slopes(%s : tensor<8xf32>) {bias = #tilt.bias<alibi, slopes = custom>, causal} -> tensor<?x8x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x8xf32>
  return %dq, %dk, %dv, %ds : tensor<?x8x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x2x?x64xbf16>, tensor<?x8xf32>
}
