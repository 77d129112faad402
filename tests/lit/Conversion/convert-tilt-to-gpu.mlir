// RUN: tilt-opt %s -split-input-file -convert-tilt-to-gpu -canonicalize | FileCheck %s

// ALiBi, causal, bf16, default sm_80 config (128 x 64, 8 warps, 2 stages):
// one gpu.func with the memref ABI, known block size, cp.async staging,
// ldmatrix fragments and bf16 mma.sync through nvvm.

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention(%[[Q:.*]]: memref<?x16x?x128xbf16>, %[[K:.*]]: memref<?x16x?x128xbf16>, %[[V:.*]]: memref<?x16x?x128xbf16>, %[[O:.*]]: memref<?x16x?x128xbf16>, %[[LSE:.*]]: memref<?x16x?xf32>) kernel
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK-SAME: nvvm.minctasm = 1
// CHECK-SAME: tilt.config = #tilt.tile_config<variant = gpu_sm80, block_m = 128, block_n = 64, num_warps = 8, num_stages = 2>
// CHECK-SAME: tilt.smem = 104448
// CHECK: gpu.dynamic_shared_memory
// CHECK: nvgpu.device_async_copy %[[Q]]{{.*}}, 8, %{{.*}} {bypassL1}
// CHECK: nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 0 : i32}
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = false} : memref<128x136xbf16, #gpu.address_space<workgroup>> -> vector<4x2xbf16>
// The key loop: the next block's copies, then wait for all but one group.
// CHECK: scf.for
// CHECK: nvgpu.device_async_copy %[[K]]
// CHECK: nvgpu.device_async_copy %[[V]]
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 1 : i32}
// Blocks wholly visible skip the per-element masks.
// CHECK: scf.if
// CHECK: nvvm.mma.sync {{.*}}multiplicandAPtxType = #nvvm.mma_type<bf16>{{.*}}shape = #nvvm.shape<m = 16, n = 8, k = 16>
// Scores in log2 units: the bias is slope * log2(e) * (j - i').
// CHECK: gpu.shuffle xor
// CHECK: llvm.inline_asm asm_dialect = att "ex2.approx.ftz.f32 $0, $1;"
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true}
// CHECK: } else {
// CHECK: arith.cmpi sle
// CHECK: arith.select
// CHECK: llvm.inline_asm asm_dialect = att "lg2.approx.ftz.f32 $0, $1;"
func.func @alibi_causal(%q: tensor<?x16x?x128xbf16>, %k: tensor<?x16x?x128xbf16>,
                        %v: tensor<?x16x?x128xbf16>) -> (tensor<?x16x?x128xbf16>, tensor<?x16x?xf32>) {
  %o, %lse = tilt.attention q(%q : tensor<?x16x?x128xbf16>) k(%k : tensor<?x16x?x128xbf16>)
      v(%v : tensor<?x16x?x128xbf16>) {bias = #tilt.bias<alibi>, causal}
      -> tensor<?x16x?x128xbf16>, tensor<?x16x?xf32>
  return %o, %lse : tensor<?x16x?x128xbf16>, tensor<?x16x?xf32>
}

// -----

// f16 goes through nvgpu.mma.sync; GQA reads kv head h / (H / Hkv); the
// explicit config is kept.

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK-SAME: #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 32, num_warps = 4, num_stages = 3>
// CHECK: %[[HEAD:.*]] = gpu.block_id  y
// CHECK: arith.divui %[[HEAD]], %c3
// CHECK: nvgpu.mma.sync({{.*}}) {mmaShape = [16, 8, 16]} : (vector<4x2xf16>, vector<2x2xf16>, vector<2x2xf32>) -> vector<2x2xf32>
func.func @gqa_f16(%q: tensor<?x12x?x64xf16>, %k: tensor<?x4x?x64xf16>,
                   %v: tensor<?x4x?x64xf16>) -> tensor<?x12x?x64xf16> {
  %o = tilt.attention q(%q : tensor<?x12x?x64xf16>) k(%k : tensor<?x4x?x64xf16>) v(%v : tensor<?x4x?x64xf16>)
      {config = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 32, num_warps = 4, num_stages = 3>}
      -> tensor<?x12x?x64xf16>
  return %o : tensor<?x12x?x64xf16>
}

// -----

// Positions from a padding mask: the key mask is staged per block (ballot
// prefix counts), varlen is not involved; window limits the first block.

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention({{.*}}, %[[KPM:.*]]: memref<?x?xi8>)
// CHECK: memref.load %[[KPM]]
// CHECK: nvvm.vote.sync ballot
// CHECK: llvm.intr.ctpop
func.func @positions(%q: tensor<?x8x?x64xbf16>, %k: tensor<?x8x?x64xbf16>,
                     %v: tensor<?x8x?x64xbf16>, %m: tensor<?x?xi8>) -> tensor<?x8x?x64xbf16> {
  %o = tilt.attention q(%q : tensor<?x8x?x64xbf16>) k(%k : tensor<?x8x?x64xbf16>) v(%v : tensor<?x8x?x64xbf16>)
      key_padding_mask(%m : tensor<?x?xi8>) {bias = #tilt.bias<alibi_positions>, window = 256 : i64}
      -> tensor<?x8x?x64xbf16>
  return %o : tensor<?x8x?x64xbf16>
}
