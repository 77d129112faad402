// RUN: tilt-opt %s -split-input-file -tilt-pin-tile-config=variant=gpu_sm80 -convert-tilt-to-gpu -canonicalize | FileCheck %s

// ALiBi, causal, bf16, default sm_80 config at D = 128 (128 x 32, 8 warps,
// 3 stages):
// one gpu.func with the memref ABI (q, k, v, o through their strides),
// known block size, cp.async staging, ldmatrix fragments and bf16 mma.sync
// through nvvm.

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention(%[[Q:.*]]: memref<?x16x?x128xbf16, strided<[?, ?, ?, 1]>>, %[[K:.*]]: memref<?x16x?x128xbf16, strided<[?, ?, ?, 1]>>, %[[V:.*]]: memref<?x16x?x128xbf16, strided<[?, ?, ?, 1]>>, %[[O:.*]]: memref<?x16x?x128xbf16, strided<[?, ?, ?, 1]>>, %[[LSE:.*]]: memref<?x16x?xf32>) kernel
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK-SAME: nvvm.minctasm = 1
// CHECK-SAME: tilt.config = #tilt.tile_config<variant = gpu_sm80, block_m = 128, block_n = 32, num_warps = 8, num_stages = 3>
// CHECK-SAME: tilt.smem = 87040
// CHECK: gpu.dynamic_shared_memory
// CHECK: nvgpu.device_async_copy %[[Q]]{{.*}}, 8, %{{.*}} {bypassL1}
// CHECK: nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 0 : i32}
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = false} : memref<128x136xbf16, #gpu.address_space<workgroup>> -> vector<4x2xbf16>
// The key loop: the next block's copies, then wait for all but the two
// newest groups.
// CHECK: scf.for
// CHECK: nvgpu.device_async_copy %[[K]]
// CHECK: nvgpu.device_async_copy %[[V]]
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 2 : i32}
// Blocks wholly visible skip the per-element masks.
// CHECK: scf.if
// CHECK: nvvm.mma.sync {{.*}}multiplicandAPtxType = #nvvm.mma_type<bf16>{{.*}}shape = #nvvm.shape<m = 16, n = 8, k = 16>
// Scores in log2 units: the bias is slope * log2(e) * (j - i').
// CHECK: gpu.shuffle xor
// CHECK: llvm.inline_asm asm_dialect = att "ex2.approx.ftz.f32 $0, $1;"
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true}
// CHECK: } else {
// CHECK: arith.cmpi sge, %{{.*}}, %c{{[0-9]+}}_i32 : i32
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

// -----

// sm_90a: the tensor maps follow the memrefs as pointers; Q and the K/V
// stages arrive by TMA on mbarriers (0: Q, 1 + s: stage s); scores are a
// warpgroup MMA from two 128-byte-swizzle descriptors; P V takes P from
// registers (inline PTX: the MLIR ops have no register-A form).

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention({{.*}}, %[[TQ:[a-z0-9]+]]: !llvm.ptr, %[[TK:[a-z0-9]+]]: !llvm.ptr, %[[TV:[a-z0-9]+]]: !llvm.ptr) kernel
// CHECK-SAME: #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 64, num_warps = 8, num_stages = 2>
// CHECK: builtin.unrealized_conversion_cast %[[TQ]] : !llvm.ptr to !nvgpu.tensormap.descriptor<tensor = memref<1x1x128x64xbf16, #gpu.address_space<workgroup>>, swizzle = swizzle_128b
// CHECK: nvgpu.mbarrier.create -> <memorySpace = #gpu.address_space<workgroup>, num_barriers = 3>
// CHECK: nvgpu.mbarrier.init
// CHECK: nvgpu.mbarrier.arrive.expect_tx %{{.*}}[%c0], %c32768
// CHECK: nvgpu.tma.async.load
// CHECK: nvgpu.mbarrier.try_wait.parity
// CHECK: scf.for
// CHECK: nvgpu.mbarrier.try_wait.parity
// CHECK: nvvm.wgmma.fence.aligned
// CHECK: nvvm.wgmma.mma_async {{.*}}, <m = 64, n = 64, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK: nvvm.wgmma.commit.group.sync.aligned
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: nvvm.wgmma.fence.aligned
// CHECK: llvm.inline_asm has_side_effects asm_dialect = att "{\0A.reg .pred p;\0Asetp.ne.b32 p, 1, 0;\0Awgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {$0, $1,
// CHECK-SAME: }, {$128, $129, $130, $131}, $132, p, 1, 1, 1;\0A}", "=f,=f,
// CHECK: nvvm.wgmma.commit.group.sync.aligned
func.func @hopper(%q: tensor<?x16x?x128xbf16>, %k: tensor<?x16x?x128xbf16>,
                  %v: tensor<?x16x?x128xbf16>) -> tensor<?x16x?x128xbf16> {
  %o = tilt.attention q(%q : tensor<?x16x?x128xbf16>) k(%k : tensor<?x16x?x128xbf16>) v(%v : tensor<?x16x?x128xbf16>)
      {bias = #tilt.bias<alibi>, causal,
       config = #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 64, num_warps = 8, num_stages = 2>}
      -> tensor<?x16x?x128xbf16>
  return %o : tensor<?x16x?x128xbf16>
}

// -----

// Position offsets: q_offset and k_offset become two index parameters after
// the memrefs (i64 in the CUDA ABI), and i' = i + (q_offset - k_offset).

// CHECK-LABEL: gpu.module @tilt_kernels
// CHECK: gpu.func @tilt_attention({{.*}}, %{{.*}}: memref<?x4x?xf32>, %[[QO:.*]]: index, %[[KO:.*]]: index)
// CHECK-SAME: offsets=1
// CHECK: arith.subi %[[QO]], %[[KO]] : index
func.func @offsets(%q: tensor<?x4x?x64xbf16>, %k: tensor<?x4x?x64xbf16>,
                   %v: tensor<?x4x?x64xbf16>, %qo: index, %ko: index) -> (tensor<?x4x?x64xbf16>, tensor<?x4x?xf32>) {
  %o, %lse = tilt.attention q(%q : tensor<?x4x?x64xbf16>) k(%k : tensor<?x4x?x64xbf16>) v(%v : tensor<?x4x?x64xbf16>) offsets(%qo, %ko) {bias = #tilt.bias<alibi>, causal} -> tensor<?x4x?x64xbf16>, tensor<?x4x?xf32>
  return %o, %lse : tensor<?x4x?x64xbf16>, tensor<?x4x?xf32>
}
