// RUN: tilt-opt %s -split-input-file --convert-tilt-to-cpu -verify-diagnostics

func.func @tensor_form(%q: tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32> {
  // expected-error @+1 {{convert-tilt-to-cpu needs the kernel form (memrefs with items); run tilt-cpu-entry first}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return %o : tensor<1x4x8x64xf32>
}

// -----

func.func @gpu(%q: memref<?x2x?x16xf32>, %o: memref<?x2x?x16xf32>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  // expected-error @+1 {{convert-tilt-to-cpu needs a CPU tile_config, got gpu_sm80}}
  tilt.attention q(%q : memref<?x2x?x16xf32>) k(%q : memref<?x2x?x16xf32>) v(%q : memref<?x2x?x16xf32>) out(%o : memref<?x2x?x16xf32>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {config = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 4, num_stages = 2>}
  return
}

// -----

func.func @amx_head_dim(%q: memref<?x2x?x80xbf16>, %o: memref<?x2x?x80xbf16>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  // expected-error @+1 {{cpu_amx needs bf16 inputs and a head dim, block_m and block_n that are multiples of 32}}
  tilt.attention q(%q : memref<?x2x?x80xbf16>) k(%q : memref<?x2x?x80xbf16>) v(%q : memref<?x2x?x80xbf16>) out(%o : memref<?x2x?x80xbf16>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_amx, block_m = 64, block_n = 64>}
  return
}

// -----

func.func @decode_positions(%q: memref<?x2x?x64xf32>, %m: memref<?x?xi8>, %o: memref<?x2x?x64xf32>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  // expected-error @+1 {{the decode kernels do not take bias alibi_positions; use cpu_avx2 or cpu_avx512}}
  tilt.attention q(%q : memref<?x2x?x64xf32>) k(%q : memref<?x2x?x64xf32>) v(%q : memref<?x2x?x64xf32>) key_padding_mask(%m : memref<?x?xi8>) out(%o : memref<?x2x?x64xf32>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi_positions>, config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}
