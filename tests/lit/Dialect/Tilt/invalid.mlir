// RUN: tilt-opt %s -split-input-file -verify-diagnostics

// One case for every diagnostic of the tilt dialect's parsers and verifiers.

func.func @f(%q: tensor<?x4x64xf32>, %k: tensor<?x4x64xf32>, %v: tensor<?x4x64xf32>, %c: tensor<3xi32>) {
  // expected-error @+1 {{cu_seqlens_q and cu_seqlens_k must be given together}}
  %o = tilt.attention q(%q : tensor<?x4x64xf32>) k(%k : tensor<?x4x64xf32>) v(%v : tensor<?x4x64xf32>) cu_seqlens_q(%c : tensor<3xi32>) -> tensor<?x4x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: memref<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{operands must all be tensors or all be memrefs}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : memref<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %out: memref<1x4x8x64xf32>) {
  // expected-error @+1 {{out and lse_out belong to the memref form; on tensors the op returns o (and lse)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) out(%out : memref<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{the tensor form must return o}}
  tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>)
  return
}

// -----

func.func @f(%q: memref<1x4x8x64xf32>, %k: memref<1x4x8x64xf32>, %v: memref<1x4x8x64xf32>, %out: memref<1x4x8x64xf32>) {
  // expected-error @+1 {{the memref form returns nothing; write to out (and lse_out) instead}}
  %o = tilt.attention q(%q : memref<1x4x8x64xf32>) k(%k : memref<1x4x8x64xf32>) v(%v : memref<1x4x8x64xf32>) out(%out : memref<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: memref<1x4x8x64xf32>, %k: memref<1x4x8x64xf32>, %v: memref<1x4x8x64xf32>) {
  // expected-error @+1 {{the memref form needs an out operand}}
  tilt.attention q(%q : memref<1x4x8x64xf32>) k(%k : memref<1x4x8x64xf32>) v(%v : memref<1x4x8x64xf32>)
  return
}

// -----

func.func @f(%q: tensor<4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{q must have rank 4 ([B, H, S, D]), got 'tensor<4x8x64xf32>'}}
  %o = tilt.attention q(%q : tensor<4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<?x4x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %c: tensor<3xi32>) {
  // expected-error @+1 {{k must have rank 3 ([total, H, D]) when cu_seqlens are given, got 'tensor<1x4x8x64xf32>'}}
  %o = tilt.attention q(%q : tensor<?x4x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) cu_seqlens_q(%c : tensor<3xi32>) cu_seqlens_k(%c : tensor<3xi32>) -> tensor<?x4x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x?x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{q must have static head count and head dim, got 'tensor<1x?x8x64xf32>'}}
  %o = tilt.attention q(%q : tensor<1x?x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) -> tensor<1x?x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf64>, %k: tensor<1x4x8x64xf64>, %v: tensor<1x4x8x64xf64>) {
  // expected-error @+1 {{element type must be f32, f16 or bf16, got 'f64'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf64>) k(%k : tensor<1x4x8x64xf64>) v(%v : tensor<1x4x8x64xf64>) -> tensor<1x4x8x64xf64>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf16>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{k element type ('f16') must match q's ('f32')}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf16>) v(%v : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x128xf32>) {
  // expected-error @+1 {{head dim must agree: q has 64, k 64, v 128}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x128xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x9x64xf32>) {
  // expected-error @+1 {{v shape must equal k shape, got 'tensor<1x4x9x64xf32>' and 'tensor<1x4x8x64xf32>'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x9x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<2x4x8x64xf32>, %v: tensor<2x4x8x64xf32>) {
  // expected-error @+1 {{batch size must agree: q has 1, k 2}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<2x4x8x64xf32>) v(%v : tensor<2x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x0x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{heads must be in [1, 65535], got 0}}
  %o = tilt.attention q(%q : tensor<1x0x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) -> tensor<1x0x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x0x8x64xf32>, %v: tensor<1x0x8x64xf32>) {
  // expected-error @+1 {{kv_heads must be >= 1, got 0}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x0x8x64xf32>) v(%v : tensor<1x0x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x3x8x64xf32>, %v: tensor<1x3x8x64xf32>) {
  // expected-error @+1 {{kv_heads (3) must divide heads (4)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x3x8x64xf32>) v(%v : tensor<1x3x8x64xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x72xf32>, %k: tensor<1x4x8x72xf32>, %v: tensor<1x4x8x72xf32>) {
  // expected-error @+1 {{head_dim must be a multiple of 16 from 16 to 256, got 72}}
  %o = tilt.attention q(%q : tensor<1x4x8x72xf32>) k(%k : tensor<1x4x8x72xf32>) v(%v : tensor<1x4x8x72xf32>) -> tensor<1x4x8x72xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{scale must be a finite number > 0, got -0.5}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {scale = -0.5 : f64} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{window must be >= 1 when given, got 0}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {window = 0} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{slopes = custom needs an ALiBi bias (bias is none)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<none, slopes = custom>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{max_bias applies to ALiBi slopes only (bias is none)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<none, max_bias = 4.0>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{head_offset and total_heads apply to ALiBi slopes only (bias is none)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<none, total_heads = 8>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %s: tensor<4xf32>) {
  // expected-error @+1 {{max_bias applies to standard slopes only (slopes are custom)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) slopes(%s : tensor<4xf32>) {bias = #tilt.bias<alibi, slopes = custom, max_bias = 4.0>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %s: tensor<4xf32>) {
  // expected-error @+1 {{head_offset and total_heads apply to standard slopes only (slopes are custom: give each rank its own)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) slopes(%s : tensor<4xf32>) {bias = #tilt.bias<alibi, slopes = custom, head_offset = 4, total_heads = 8>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{max_bias must be a finite number > 0, got -1}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<alibi, max_bias = -1.0>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{head_offset must be >= 0, got -2}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<alibi, head_offset = -2, total_heads = 8>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{total_heads must be in [1, 65535] when given, got -8}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<alibi, total_heads = -8>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{head_offset needs total_heads (the model's head count)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<alibi, head_offset = 4>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{head_offset (6) + heads (4) exceeds total_heads (8)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<alibi, head_offset = 6, total_heads = 8>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{bias alibi_positions needs a key_padding_mask}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<alibi_positions>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<?x4x64xf32>, %k: tensor<?x4x64xf32>, %v: tensor<?x4x64xf32>, %m: tensor<2x8xi8>, %c: tensor<3xi32>) {
  // expected-error @+1 {{key_padding_mask cannot be combined with varlen cu_seqlens (give the unpadded lengths instead)}}
  %o = tilt.attention q(%q : tensor<?x4x64xf32>) k(%k : tensor<?x4x64xf32>) v(%v : tensor<?x4x64xf32>) key_padding_mask(%m : tensor<2x8xi8>) cu_seqlens_q(%c : tensor<3xi32>) cu_seqlens_k(%c : tensor<3xi32>) -> tensor<?x4x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{slopes = custom needs a slopes operand}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {bias = #tilt.bias<alibi, slopes = custom>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %s: tensor<4xf32>) {
  // expected-error @+1 {{a slopes operand needs #tilt.bias<..., slopes = custom>; this bias uses standard slopes}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) slopes(%s : tensor<4xf32>) {bias = #tilt.bias<alibi>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %s: tensor<4xf32>) {
  // expected-error @+1 {{a slopes operand needs #tilt.bias<..., slopes = custom>; this bias uses no slopes}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) slopes(%s : tensor<4xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %s: tensor<5xf32>) {
  // expected-error @+1 {{slopes must be f32 [H] or [B, H] with H = 4, got 'tensor<5xf32>'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) slopes(%s : tensor<5xf32>) {bias = #tilt.bias<alibi, slopes = custom>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %s: tensor<2x4xf32>) {
  // expected-error @+1 {{slopes must be f32 [H] or [B, H] with H = 4, got 'tensor<2x4xf32>'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) slopes(%s : tensor<2x4xf32>) {bias = #tilt.bias<alibi, slopes = custom>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %s: tensor<4xf16>) {
  // expected-error @+1 {{slopes must be f32 [H] or [B, H] with H = 4, got 'tensor<4xf16>'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) slopes(%s : tensor<4xf16>) {bias = #tilt.bias<alibi, slopes = custom>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %m: tensor<1x9xi8>) {
  // expected-error @+1 {{key_padding_mask must be [B, Sk] of i1, i8 or i32, got 'tensor<1x9xi8>'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) key_padding_mask(%m : tensor<1x9xi8>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>, %m: tensor<1x8xf32>) {
  // expected-error @+1 {{key_padding_mask must be [B, Sk] of i1, i8 or i32, got 'tensor<1x8xf32>'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) key_padding_mask(%m : tensor<1x8xf32>) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<?x4x64xf32>, %k: tensor<?x4x64xf32>, %v: tensor<?x4x64xf32>, %c: tensor<3xi64>) {
  // expected-error @+1 {{cu_seqlens must be i32 [B+1], got 'tensor<3xi64>'}}
  %o = tilt.attention q(%q : tensor<?x4x64xf32>) k(%k : tensor<?x4x64xf32>) v(%v : tensor<?x4x64xf32>) cu_seqlens_q(%c : tensor<3xi64>) cu_seqlens_k(%c : tensor<3xi64>) -> tensor<?x4x64xf32>
  return
}

// -----

func.func @f(%q: tensor<?x4x64xf32>, %k: tensor<?x4x64xf32>, %v: tensor<?x4x64xf32>, %c: tensor<3xi32>, %d: tensor<4xi32>) {
  // expected-error @+1 {{cu_seqlens_q and cu_seqlens_k must have the same length, got 'tensor<3xi32>' and 'tensor<4xi32>'}}
  %o = tilt.attention q(%q : tensor<?x4x64xf32>) k(%k : tensor<?x4x64xf32>) v(%v : tensor<?x4x64xf32>) cu_seqlens_q(%c : tensor<3xi32>) cu_seqlens_k(%d : tensor<4xi32>) -> tensor<?x4x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{o must have q's shape and element type (tensor<1x4x8x64xf32>), got 'tensor<1x4x8x64xf16>'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf16>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{lse must be f32 [B, H, Sq], got 'tensor<1x4x9xf32>'}}
  %o, %lse = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>, tensor<1x4x9xf32>
  return
}

// -----

func.func @f(%q: tensor<?x4x64xf32>, %k: tensor<?x4x64xf32>, %v: tensor<?x4x64xf32>, %c: tensor<3xi32>) {
  // expected-error @+1 {{lse must be f32 [H, total], got 'tensor<8x?xf32>'}}
  %o, %lse = tilt.attention q(%q : tensor<?x4x64xf32>) k(%k : tensor<?x4x64xf32>) v(%v : tensor<?x4x64xf32>) cu_seqlens_q(%c : tensor<3xi32>) cu_seqlens_k(%c : tensor<3xi32>) -> tensor<?x4x64xf32>, tensor<8x?xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x4x8x64xf32>, %v: tensor<1x4x8x64xf32>) {
  // expected-error @+1 {{tile_config variant cpu_amx needs bf16 inputs, got 'f32'}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x4x8x64xf32>) v(%v : tensor<1x4x8x64xf32>) {config = #tilt.tile_config<variant = cpu_amx, block_m = 32, block_n = 32>} -> tensor<1x4x8x64xf32>
  return
}

// -----

// expected-error @+1 {{unknown bias kind 'rope', expected none, alibi, alibi_symmetric or alibi_positions}}
module attributes {tilt.a = #tilt.bias<rope>} {}

// -----

// expected-error @+1 {{duplicate key 'max_bias' in #tilt.bias}}
module attributes {tilt.a = #tilt.bias<alibi, max_bias = 4.0, max_bias = 2.0>} {}

// -----

// expected-error @+1 {{unknown slopes 'learned', expected standard or custom}}
module attributes {tilt.a = #tilt.bias<alibi, slopes = learned>} {}

// -----

// expected-error @+1 {{unknown key 'slope' in #tilt.bias, expected slopes, max_bias, head_offset or total_heads}}
module attributes {tilt.a = #tilt.bias<alibi, slope = custom>} {}

// -----

// expected-error @+2 {{unexpected decimal integer literal for a floating point value}}
// expected-note @+1 {{add a trailing dot to make the literal a float}}
module attributes {tilt.a = #tilt.bias<alibi, max_bias = 6>} {}

// -----

// expected-error @+1 {{block_m must be a power of two from 16 to 256, got 48}}
module attributes {tilt.a = #tilt.tile_config<variant = cpu_avx512, block_m = 48, block_n = 64>} {}

// -----

// expected-error @+1 {{block_n must be a power of two from 16 to 256, got 512}}
module attributes {tilt.a = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 512>} {}

// -----

// expected-error @+1 {{num_warps and num_stages apply to gpu variants only, not cpu_avx2}}
module attributes {tilt.a = #tilt.tile_config<variant = cpu_avx2, block_m = 64, block_n = 64, num_warps = 4>} {}

// -----

// expected-error @+1 {{num_stages must be 0, 1 or 2 for cpu_decode_avx512, got 3}}
module attributes {tilt.a = #tilt.tile_config<variant = cpu_decode_avx512, block_m = 32, block_n = 16, num_warps = 0, num_stages = 3>} {}

// -----

// expected-error @+1 {{num_warps applies to gpu variants only, not cpu_decode_avx2}}
module attributes {tilt.a = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16, num_warps = 1, num_stages = 1>} {}

// -----

// expected-error @+1 {{num_warps must be 1, 2, 4 or 8 for gpu_sm80, got 3}}
module attributes {tilt.a = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 3, num_stages = 2>} {}

// -----

// expected-error @+1 {{num_warps must be 4 or 8 (whole warpgroups) for gpu_sm90a, got 2}}
module attributes {tilt.a = #tilt.tile_config<variant = gpu_sm90a, block_m = 64, block_n = 64, num_warps = 2, num_stages = 2>} {}

// -----

// expected-error @+1 {{num_stages must be from 1 to 8 for gpu variants, got 0}}
module attributes {tilt.a = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 4>} {}

// -----

// expected-error @+1 {{block_m (64) must be a multiple of 16 * num_warps (128)}}
module attributes {tilt.a = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 8, num_stages = 2>} {}

// -----

// expected-error @+2 {{expected ::mlir::tilt::KernelVariant to be one of: cpu_avx2, cpu_avx512, cpu_amx, gpu_sm80, gpu_sm90a}}
// expected-error @+1 {{failed to parse Tilt_TileConfigAttr parameter 'variant'}}
module attributes {tilt.a = #tilt.tile_config<variant = gpu_sm70, block_m = 64, block_n = 64>} {}

// -----

func.func @f(%q: memref<1x4x8x64xf32>, %o: memref<1x4x8x64xf32>, %b: index) {
  // expected-error @+1 {{items needs both a begin and an end}}
  "tilt.attention"(%q, %q, %q, %o, %b) <{operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0>}> : (memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, index) -> ()
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %b: index, %e: index) {
  // expected-error @+1 {{items belong to the memref (kernel) form}}
  %o = "tilt.attention"(%q, %q, %q, %b, %e) <{operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1>, resultSegmentSizes = array<i32: 1, 0>}> : (tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, index, index) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: memref<1x4x8x64xf32>, %o: memref<1x4x8x64xf32>, %b: index, %e: index) {
  // expected-error @+1 {{items need a tile_config: its blocks define the work items they count}}
  tilt.attention q(%q : memref<1x4x8x64xf32>) k(%q : memref<1x4x8x64xf32>) v(%q : memref<1x4x8x64xf32>) out(%o : memref<1x4x8x64xf32>) items(%b, %e)
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %a: index) {
  // expected-error @+1 {{offsets needs both a q_offset and a k_offset}}
  %o = "tilt.attention"(%q, %q, %q, %a) <{operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0>}> : (tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, index) -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %m: tensor<1x8xi8>, %a: index, %b: index) {
  // expected-error @+1 {{position offsets cannot be combined with bias alibi_positions (its positions come from the key_padding_mask)}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) key_padding_mask(%m : tensor<1x8xi8>) offsets(%a, %b) {bias = #tilt.bias<alibi_positions>} -> tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %lse: tensor<1x4x8xf32>, %s: tensor<4xf32>) {
  // expected-error @+1 {{dslopes needs custom slopes (a slopes operand)}}
  %dq, %dk, %dv, %ds = tilt.attention_backward q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) o(%q : tensor<1x4x8x64xf32>) grad_o(%q : tensor<1x4x8x64xf32>) lse(%lse : tensor<1x4x8xf32>) {bias = #tilt.bias<alibi>} -> tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, tensor<1x4xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %g: tensor<1x4x9x64xf32>, %lse: tensor<1x4x8xf32>) {
  // expected-error @+1 {{grad_o must have the shape and element type tensor<1x4x8x64xf32>, got 'tensor<1x4x9x64xf32>'}}
  %dq, %dk, %dv = tilt.attention_backward q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) o(%q : tensor<1x4x8x64xf32>) grad_o(%g : tensor<1x4x9x64xf32>) lse(%lse : tensor<1x4x8xf32>) -> tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %lse: tensor<1x4x8xf16>) {
  // expected-error @+1 {{lse must be f32 [B, H, Sq], got 'tensor<1x4x8xf16>'}}
  %dq, %dk, %dv = tilt.attention_backward q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) o(%q : tensor<1x4x8x64xf32>) grad_o(%q : tensor<1x4x8x64xf32>) lse(%lse : tensor<1x4x8xf16>) -> tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>
  return
}

// -----

func.func @f(%q: tensor<1x4x8x64xf32>, %k: tensor<1x2x8x64xf32>, %lse: tensor<1x4x8xf32>) {
  // expected-error @+1 {{dk must have the shape and element type tensor<1x2x8x64xf32>, got 'tensor<1x4x8x64xf32>'}}
  %dq, %dk, %dv = tilt.attention_backward q(%q : tensor<1x4x8x64xf32>) k(%k : tensor<1x2x8x64xf32>) v(%k : tensor<1x2x8x64xf32>) o(%q : tensor<1x4x8x64xf32>) grad_o(%q : tensor<1x4x8x64xf32>) lse(%lse : tensor<1x4x8xf32>) -> tensor<1x4x8x64xf32>, tensor<1x4x8x64xf32>, tensor<1x2x8x64xf32>
  return
}

// -----

func.func @f(%t: memref<1x4x8x64xf32>, %lse: memref<1x4x8xf32>, %b: index, %e: index) {
  // expected-error @+1 {{tile_config variant cpu_avx2 is for tilt.attention; the backward takes cpu_bwd_avx2, cpu_bwd_avx512, cpu_bwd_avx512bf16 or gpu_bwd_sm80}}
  tilt.attention_backward q(%t : memref<1x4x8x64xf32>) k(%t : memref<1x4x8x64xf32>) v(%t : memref<1x4x8x64xf32>) o(%t : memref<1x4x8x64xf32>) grad_o(%t : memref<1x4x8x64xf32>) lse(%lse : memref<1x4x8xf32>) grads(%t, %t, %t : memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8x64xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_avx2, block_m = 32, block_n = 32>}
  return
}

// -----

func.func @f(%t: memref<1x4x8x64xf32>, %lse: memref<1x4x8xf32>, %b: index, %e: index) {
  // expected-error @+1 {{tile_config variant cpu_bwd_avx512bf16 needs bf16 inputs, got 'f32'}}
  tilt.attention_backward q(%t : memref<1x4x8x64xf32>) k(%t : memref<1x4x8x64xf32>) v(%t : memref<1x4x8x64xf32>) o(%t : memref<1x4x8x64xf32>) grad_o(%t : memref<1x4x8x64xf32>) lse(%lse : memref<1x4x8xf32>) grads(%t, %t, %t : memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8x64xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_bwd_avx512bf16, block_m = 32, block_n = 32>}
  return
}

// -----

func.func @f(%q: memref<1x4x8x64xf32>, %b: index, %e: index) {
  // expected-error @+1 {{tile_config variant cpu_bwd_avx2 is for tilt.attention_backward}}
  tilt.attention q(%q : memref<1x4x8x64xf32>) k(%q : memref<1x4x8x64xf32>) v(%q : memref<1x4x8x64xf32>) out(%q : memref<1x4x8x64xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_bwd_avx2, block_m = 32, block_n = 32>}
  return
}

// -----

func.func @f(%t: memref<1x4x8x64xf32>, %lse: memref<1x4x8xf32>) {
  // expected-error @+1 {{the memref form needs grads(%dq, %dk, %dv)}}
  "tilt.attention_backward"(%t, %t, %t, %t, %t, %lse) <{operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 0, 0, 0, 0>}> : (memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8x64xf32>, memref<1x4x8xf32>) -> ()
  return
}

// -----

// A paged KV cache: static page size, i32 block table [B, max_pages] and
// context lengths [B], not with cu_seqlens, a padding mask or offsets, and
// only the decode family reads it.

func.func @f(%q: tensor<2x4x1x64xf32>, %k: tensor<?x12x2x64xf32>, %bt: tensor<2x?xi32>, %cl: tensor<2xi32>) {
  // expected-error @+1 {{page_size must be 0 (dense k/v) or a power of two from 8 to 256, got 12}}
  %o = tilt.attention q(%q : tensor<2x4x1x64xf32>) k(%k : tensor<?x12x2x64xf32>) v(%k : tensor<?x12x2x64xf32>) paged(%bt : tensor<2x?xi32>, %cl : tensor<2xi32>) -> tensor<2x4x1x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x4x1x64xf32>, %k: tensor<?x?x2x64xf32>, %bt: tensor<2x?xi32>, %cl: tensor<2xi32>) {
  // expected-error @+1 {{k must have a static page size when paged ([num_pages, page_size, Hkv, D]), got 'tensor<?x?x2x64xf32>'}}
  %o = tilt.attention q(%q : tensor<2x4x1x64xf32>) k(%k : tensor<?x?x2x64xf32>) v(%k : tensor<?x?x2x64xf32>) paged(%bt : tensor<2x?xi32>, %cl : tensor<2xi32>) -> tensor<2x4x1x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x4x1x64xf32>, %k: tensor<?x16x2x64xf32>, %bt: tensor<3x?xi32>, %cl: tensor<2xi32>) {
  // expected-error @+1 {{block_table must be i32 [B, max_pages], got 'tensor<3x?xi32>'}}
  %o = tilt.attention q(%q : tensor<2x4x1x64xf32>) k(%k : tensor<?x16x2x64xf32>) v(%k : tensor<?x16x2x64xf32>) paged(%bt : tensor<3x?xi32>, %cl : tensor<2xi32>) -> tensor<2x4x1x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x4x1x64xf32>, %k: tensor<?x16x2x64xf32>, %bt: tensor<2x?xi32>, %cl: tensor<2xi64>) {
  // expected-error @+1 {{context_lens must be i32 [B], got 'tensor<2xi64>'}}
  %o = tilt.attention q(%q : tensor<2x4x1x64xf32>) k(%k : tensor<?x16x2x64xf32>) v(%k : tensor<?x16x2x64xf32>) paged(%bt : tensor<2x?xi32>, %cl : tensor<2xi64>) -> tensor<2x4x1x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x4x1x64xf32>, %k: tensor<?x16x2x64xf32>, %bt: tensor<2x?xi32>, %cl: tensor<2xi32>, %m: tensor<2x8xi8>) {
  // expected-error @+1 {{page_size cannot be combined with a key_padding_mask (a paged cache's keys are its context_lens first tokens)}}
  %o = tilt.attention q(%q : tensor<2x4x1x64xf32>) k(%k : tensor<?x16x2x64xf32>) v(%k : tensor<?x16x2x64xf32>) key_padding_mask(%m : tensor<2x8xi8>) paged(%bt : tensor<2x?xi32>, %cl : tensor<2xi32>) -> tensor<2x4x1x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x4x1x64xf32>, %k: tensor<?x16x2x64xf32>, %bt: tensor<2x?xi32>, %cl: tensor<2xi32>, %a: index) {
  // expected-error @+1 {{page_size cannot be combined with position offsets (a paged cache places queries bottom-right of context_lens)}}
  %o = tilt.attention q(%q : tensor<2x4x1x64xf32>) k(%k : tensor<?x16x2x64xf32>) v(%k : tensor<?x16x2x64xf32>) paged(%bt : tensor<2x?xi32>, %cl : tensor<2xi32>) offsets(%a, %a) -> tensor<2x4x1x64xf32>
  return
}

// -----

func.func @f(%q: tensor<4x4x64xf32>, %k: tensor<?x16x2x64xf32>, %bt: tensor<2x?xi32>, %cl: tensor<2xi32>, %cu: tensor<3xi32>) {
  // expected-error @+1 {{paged k/v cannot be combined with cu_seqlens}}
  %o = tilt.attention q(%q : tensor<4x4x64xf32>) k(%k : tensor<?x16x2x64xf32>) v(%k : tensor<?x16x2x64xf32>) cu_seqlens_q(%cu : tensor<3xi32>) cu_seqlens_k(%cu : tensor<3xi32>) paged(%bt : tensor<2x?xi32>, %cl : tensor<2xi32>) -> tensor<4x4x64xf32>
  return
}

// -----

func.func @f(%q: memref<2x4x1x64xf32>, %k: memref<?x16x2x64xf32>, %bt: memref<2x?xi32>, %cl: memref<2xi32>, %b: index, %e: index) {
  // expected-error @+1 {{tile_config variant gpu_sm80 cannot read a paged KV cache; on the GPU gpu_decode_sm80 does}}
  tilt.attention q(%q : memref<2x4x1x64xf32>) k(%k : memref<?x16x2x64xf32>) v(%k : memref<?x16x2x64xf32>) paged(%bt : memref<2x?xi32>, %cl : memref<2xi32>) out(%q : memref<2x4x1x64xf32>) items(%b, %e) {config = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 4, num_stages = 2>}
  return
}

// -----

func.func @f(%q: memref<1x4x1x64xf32>, %o: memref<1x4x1x64xf32>, %p: memref<?x1x4x1x64xf32>, %b: index, %e: index) {
  // expected-error @+1 {{splits needs both out_parts and lse_parts}}
  "tilt.attention"(%q, %q, %q, %o, %p, %b, %e) <{config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1>}> : (memref<1x4x1x64xf32>, memref<1x4x1x64xf32>, memref<1x4x1x64xf32>, memref<1x4x1x64xf32>, memref<?x1x4x1x64xf32>, index, index) -> ()
  return
}

// -----

func.func @f(%q: memref<1x4x1x64xbf16>, %o: memref<1x4x1x64xbf16>, %lse: memref<1x4x1xf32>, %p: memref<?x1x4x1x64xbf16>, %l: memref<?x1x4x1xf32>, %b: index, %e: index) {
  // expected-error @+1 {{out_parts must be f32 [S] + out's shape, got 'memref<?x1x4x1x64xbf16>'}}
  tilt.attention q(%q : memref<1x4x1x64xbf16>) k(%q : memref<1x4x1x64xbf16>) v(%q : memref<1x4x1x64xbf16>) out(%o : memref<1x4x1x64xbf16>) lse_out(%lse : memref<1x4x1xf32>) splits(%p : memref<?x1x4x1x64xbf16>, %l : memref<?x1x4x1xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

func.func @f(%q: memref<1x4x1x64xf32>, %o: memref<1x4x1x64xf32>, %lse: memref<1x4x1xf32>, %p: memref<?x1x4x1x64xf32>, %l: memref<?x1x4xf32>, %b: index, %e: index) {
  // expected-error @+1 {{lse_parts must be f32 [S] + lse's shape, got 'memref<?x1x4xf32>'}}
  tilt.attention q(%q : memref<1x4x1x64xf32>) k(%q : memref<1x4x1x64xf32>) v(%q : memref<1x4x1x64xf32>) out(%o : memref<1x4x1x64xf32>) lse_out(%lse : memref<1x4x1xf32>) splits(%p : memref<?x1x4x1x64xf32>, %l : memref<?x1x4xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

func.func @f(%q: memref<1x4x1x64xf32>, %o: memref<1x4x1x64xf32>, %lse: memref<1x4x1xf32>, %p: memref<?x1x4x1x64xf32>, %l: memref<?x1x4x1xf32>, %b: index, %e: index) {
  // expected-error @+1 {{splits need a decode-family tile_config (cpu_decode_avx2, cpu_decode_avx512, gpu_decode_sm80)}}
  tilt.attention q(%q : memref<1x4x1x64xf32>) k(%q : memref<1x4x1x64xf32>) v(%q : memref<1x4x1x64xf32>) out(%o : memref<1x4x1x64xf32>) lse_out(%lse : memref<1x4x1xf32>) splits(%p : memref<?x1x4x1x64xf32>, %l : memref<?x1x4x1xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

func.func @f(%q: memref<1x4x1x64xf32>, %o: memref<1x4x1x64xf32>, %p: memref<?x1x4x1x64xf32>, %l: memref<?x1x4x1xf32>, %b: index, %e: index) {
  // expected-error @+1 {{splits need lse_out: split 0 writes the rows' constants there}}
  tilt.attention q(%q : memref<1x4x1x64xf32>) k(%q : memref<1x4x1x64xf32>) v(%q : memref<1x4x1x64xf32>) out(%o : memref<1x4x1x64xf32>) splits(%p : memref<?x1x4x1x64xf32>, %l : memref<?x1x4x1xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

// Strided data tensors are the kernel ABI's ([B, S, H, D] tensors run in
// place), but D must stay contiguous.
func.func @f(%q: memref<1x4x8x64xf32, strided<[2048, 64, 256, 1]>>, %k: memref<1x4x8x64xf32, strided<[?, ?, ?, 2]>>, %o: memref<1x4x8x64xf32>, %b: index, %e: index) {
  // expected-error @+1 {{k must have a unit innermost stride (its D elements contiguous), got 'memref<1x4x8x64xf32, strided<[?, ?, ?, 2]>>'}}
  tilt.attention q(%q : memref<1x4x8x64xf32, strided<[2048, 64, 256, 1]>>) k(%k : memref<1x4x8x64xf32, strided<[?, ?, ?, 2]>>) v(%q : memref<1x4x8x64xf32, strided<[2048, 64, 256, 1]>>) out(%o : memref<1x4x8x64xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

func.func @f(%q: memref<1x4x8x64xf32>, %o: memref<1x4x8x64xf32, strided<[?, ?, ?, ?]>>, %b: index, %e: index) {
  // expected-error @+1 {{out must have a unit innermost stride (its D elements contiguous), got 'memref<1x4x8x64xf32, strided<[?, ?, ?, ?]>>'}}
  tilt.attention q(%q : memref<1x4x8x64xf32>) k(%q : memref<1x4x8x64xf32>) v(%q : memref<1x4x8x64xf32>) out(%o : memref<1x4x8x64xf32, strided<[?, ?, ?, ?]>>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 16>}
  return
}
