// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=cpu_avx2 | FileCheck %s --check-prefix=AVX2
// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config="variant=cpu_avx512 block-n=128" | FileCheck %s --check-prefix=AVX512
// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=gpu_sm80 | FileCheck %s --check-prefix=SM80
// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config="variant=gpu_sm90a num-stages=3" | FileCheck %s --check-prefix=SM90A

// The one place a tile configuration is chosen: the variant from the option,
// every size the options leave open from the tile policy (TilePolicy.h), the
// GPU defaults by head dim. An op's own configuration is kept.

// AVX2-LABEL: func.func @plain
// AVX2: config = #tilt.tile_config<variant = cpu_avx2, block_m = 32, block_n = 32>
// AVX512-LABEL: func.func @plain
// AVX512: config = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 128>
// SM80-LABEL: func.func @plain
// SM80: config = #tilt.tile_config<variant = gpu_sm80, block_m = 128, block_n = 32, num_warps = 8, num_stages = 3>
// SM90A-LABEL: func.func @plain
// SM90A: config = #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 64, num_warps = 8, num_stages = 3>
func.func @plain(%q: tensor<1x4x8x128xbf16>) -> tensor<1x4x8x128xbf16> {
  %o = tilt.attention q(%q : tensor<1x4x8x128xbf16>) k(%q : tensor<1x4x8x128xbf16>) v(%q : tensor<1x4x8x128xbf16>) {bias = #tilt.bias<alibi>, causal} -> tensor<1x4x8x128xbf16>
  return %o : tensor<1x4x8x128xbf16>
}

// -----

// AVX2-LABEL: func.func @small_head
// AVX2: config = #tilt.tile_config<variant = cpu_avx2, block_m = 32, block_n = 32>
// SM80-LABEL: func.func @small_head
// SM80: config = #tilt.tile_config<variant = gpu_sm80, block_m = 128, block_n = 64, num_warps = 8, num_stages = 2>
func.func @small_head(%q: tensor<1x4x8x64xf16>) -> tensor<1x4x8x64xf16> {
  %o = tilt.attention q(%q : tensor<1x4x8x64xf16>) k(%q : tensor<1x4x8x64xf16>) v(%q : tensor<1x4x8x64xf16>) -> tensor<1x4x8x64xf16>
  return %o : tensor<1x4x8x64xf16>
}

// -----

// AVX2-LABEL: func.func @kept
// AVX2: config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 256>
// SM80-LABEL: func.func @kept
// SM80: config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 256>
func.func @kept(%q: tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32> {
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) {config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 256>} -> tensor<1x4x8x64xf32>
  return %o : tensor<1x4x8x64xf32>
}
