// RUN: tilt-opt %s -split-input-file -tilt-pin-tile-config=variant=gpu_sm80 -convert-tilt-to-gpu -verify-diagnostics
// RUN: not tilt-opt %s -split-input-file -convert-tilt-to-gpu 2>&1 | FileCheck %s --check-prefix=UNPINNED

// UNPINNED: error: 'tilt.attention' op has no tile_config; run tilt-pin-tile-config first

func.func @f32(%q: tensor<1x4x?x64xf32>, %k: tensor<1x4x?x64xf32>, %v: tensor<1x4x?x64xf32>) -> tensor<1x4x?x64xf32> {
  // expected-error @+1 {{dtype f32: the GPU variants take f16 or bf16 (tensor cores)}}
  %o = tilt.attention q(%q : tensor<1x4x?x64xf32>) k(%k : tensor<1x4x?x64xf32>) v(%v : tensor<1x4x?x64xf32>) -> tensor<1x4x?x64xf32>
  return %o : tensor<1x4x?x64xf32>
}

// -----

func.func @cpu_config(%q: tensor<1x4x?x64xbf16>, %k: tensor<1x4x?x64xbf16>, %v: tensor<1x4x?x64xbf16>) -> tensor<1x4x?x64xbf16> {
  // expected-error @+1 {{convert-tilt-to-gpu needs a GPU tile_config, got cpu_avx512}}
  %o = tilt.attention q(%q : tensor<1x4x?x64xbf16>) k(%k : tensor<1x4x?x64xbf16>) v(%v : tensor<1x4x?x64xbf16>)
      {config = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 64>} -> tensor<1x4x?x64xbf16>
  return %o : tensor<1x4x?x64xbf16>
}

// -----

func.func @too_much_smem(%q: tensor<1x4x?x256xbf16>, %k: tensor<1x4x?x256xbf16>, %v: tensor<1x4x?x256xbf16>) -> tensor<1x4x?x256xbf16> {
  // expected-error @+1 {{tile config needs 1216512 bytes of shared memory; at most 166912 fit}}
  %o = tilt.attention q(%q : tensor<1x4x?x256xbf16>) k(%k : tensor<1x4x?x256xbf16>) v(%v : tensor<1x4x?x256xbf16>)
      {config = #tilt.tile_config<variant = gpu_sm80, block_m = 256, block_n = 256, num_warps = 8, num_stages = 4>} -> tensor<1x4x?x256xbf16>
  return %o : tensor<1x4x?x256xbf16>
}

// -----

func.func @hopper_head_dim(%q: tensor<1x4x?x96xbf16>, %k: tensor<1x4x?x96xbf16>, %v: tensor<1x4x?x96xbf16>) -> tensor<1x4x?x96xbf16> {
  // expected-error @+1 {{variant gpu_sm90a needs head_dim a multiple of 64 (64, 128, 192, 256); use gpu_sm80}}
  %o = tilt.attention q(%q : tensor<1x4x?x96xbf16>) k(%k : tensor<1x4x?x96xbf16>) v(%v : tensor<1x4x?x96xbf16>)
      {config = #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 64, num_warps = 8, num_stages = 2>} -> tensor<1x4x?x96xbf16>
  return %o : tensor<1x4x?x96xbf16>
}

// -----

func.func @hopper_rows(%q: tensor<1x4x?x64xbf16>, %k: tensor<1x4x?x64xbf16>, %v: tensor<1x4x?x64xbf16>) -> tensor<1x4x?x64xbf16> {
  // expected-error @+1 {{variant gpu_sm90a needs block_m = 16 * num_warps (64 rows per warpgroup)}}
  %o = tilt.attention q(%q : tensor<1x4x?x64xbf16>) k(%k : tensor<1x4x?x64xbf16>) v(%v : tensor<1x4x?x64xbf16>)
      {config = #tilt.tile_config<variant = gpu_sm90a, block_m = 256, block_n = 64, num_warps = 8, num_stages = 2>} -> tensor<1x4x?x64xbf16>
  return %o : tensor<1x4x?x64xbf16>
}

// -----

func.func @hopper_keys(%q: tensor<1x4x?x64xbf16>, %k: tensor<1x4x?x64xbf16>, %v: tensor<1x4x?x64xbf16>) -> tensor<1x4x?x64xbf16> {
  // expected-error @+1 {{variant gpu_sm90a needs block_n of 64, 128 or 256}}
  %o = tilt.attention q(%q : tensor<1x4x?x64xbf16>) k(%k : tensor<1x4x?x64xbf16>) v(%v : tensor<1x4x?x64xbf16>)
      {config = #tilt.tile_config<variant = gpu_sm90a, block_m = 64, block_n = 32, num_warps = 4, num_stages = 2>} -> tensor<1x4x?x64xbf16>
  return %o : tensor<1x4x?x64xbf16>
}

// -----

func.func @decode_varlen(%q: tensor<?x4x64xbf16>, %k: tensor<?x4x64xbf16>, %v: tensor<?x4x64xbf16>, %cq: tensor<3xi32>, %ck: tensor<3xi32>) -> tensor<?x4x64xbf16> {
  // expected-error @+1 {{variant gpu_decode_sm80 takes dense or paged k/v, not varlen cu_seqlens; use gpu_sm80}}
  %o = tilt.attention q(%q : tensor<?x4x64xbf16>) k(%k : tensor<?x4x64xbf16>) v(%v : tensor<?x4x64xbf16>) cu_seqlens_q(%cq : tensor<3xi32>) cu_seqlens_k(%ck : tensor<3xi32>)
      {config = #tilt.tile_config<variant = gpu_decode_sm80, block_m = 16, block_n = 64, num_warps = 1, num_stages = 2>} -> tensor<?x4x64xbf16>
  return %o : tensor<?x4x64xbf16>
}

// -----

func.func @decode_positions(%q: tensor<1x4x?x64xbf16>, %k: tensor<1x4x?x64xbf16>, %v: tensor<1x4x?x64xbf16>, %m: tensor<1x?xi8>) -> tensor<1x4x?x64xbf16> {
  // expected-error @+1 {{variant gpu_decode_sm80 does not take bias alibi_positions; use gpu_sm80}}
  %o = tilt.attention q(%q : tensor<1x4x?x64xbf16>) k(%k : tensor<1x4x?x64xbf16>) v(%v : tensor<1x4x?x64xbf16>) key_padding_mask(%m : tensor<1x?xi8>)
      {bias = #tilt.bias<alibi_positions>, config = #tilt.tile_config<variant = gpu_decode_sm80, block_m = 16, block_n = 64, num_warps = 1, num_stages = 2>} -> tensor<1x4x?x64xbf16>
  return %o : tensor<1x4x?x64xbf16>
}

// -----

func.func @bwd_block_n(%t: tensor<1x4x?x64xbf16>, %lse: tensor<1x4x?xf32>) -> tensor<1x4x?x64xbf16> {
  // expected-error @+1 {{variant gpu_bwd_sm80 needs block_n a multiple of 16 * num_warps (the dK/dV kernel's keys are its rows)}}
  %dq, %dk, %dv = tilt.attention_backward q(%t : tensor<1x4x?x64xbf16>) k(%t : tensor<1x4x?x64xbf16>) v(%t : tensor<1x4x?x64xbf16>) o(%t : tensor<1x4x?x64xbf16>) grad_o(%t : tensor<1x4x?x64xbf16>) lse(%lse : tensor<1x4x?xf32>)
      {config = #tilt.tile_config<variant = gpu_bwd_sm80, block_m = 64, block_n = 32, num_warps = 4, num_stages = 2>} -> tensor<1x4x?x64xbf16>, tensor<1x4x?x64xbf16>, tensor<1x4x?x64xbf16>
  return %dq : tensor<1x4x?x64xbf16>
}
