// RUN: not tilt-opt %s -split-input-file --tilt-pin-tile-config 2>&1 | FileCheck %s --check-prefix=NONE
// RUN: not tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=cpu_avx1024 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// RUN: not tilt-opt %s -split-input-file --tilt-pin-tile-config="variant=cpu_avx2 block-m=48" 2>&1 | FileCheck %s --check-prefix=BLOCK
// RUN: not tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=cpu_amx 2>&1 | FileCheck %s --check-prefix=AMX
// RUN: not tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=gpu_sm80 2>&1 | FileCheck %s --check-prefix=F32
// RUN: not tilt-opt %s -split-input-file --tilt-pin-tile-config="variant=gpu_sm80 block-m=256 block-n=256 num-stages=4" 2>&1 | FileCheck %s --check-prefix=SMEM

// NONE: error: 'tilt.attention' op has no tile_config and tilt-pin-tile-config was given no variant
// UNKNOWN: error: 'tilt.attention' op variant must be one of cpu_avx2, cpu_avx512, cpu_amx, gpu_sm80, gpu_sm90a, cpu_decode_avx2, cpu_decode_avx512, cpu_bwd_avx2, cpu_bwd_avx512, gpu_decode_sm80, gpu_bwd_sm80, cpu_avx512bf16 or cpu_bwd_avx512bf16, got 'cpu_avx1024'
// BLOCK: error: 'tilt.attention' op block_m must be a power of two from 16 to 256, got 48
// AMX: error: 'tilt.attention' op variant cpu_amx needs bf16 inputs
// F32: error: 'tilt.attention' op dtype f32: the GPU variants take f16 or bf16 (tensor cores)
// SMEM: error: 'tilt.attention' op tile config needs {{[0-9]+}} bytes of shared memory; at most 166912 fit

func.func @f32(%q: tensor<1x4x8x256xf32>) -> tensor<1x4x8x256xf32> {
  %o = tilt.attention q(%q : tensor<1x4x8x256xf32>) k(%q : tensor<1x4x8x256xf32>) v(%q : tensor<1x4x8x256xf32>) -> tensor<1x4x8x256xf32>
  return %o : tensor<1x4x8x256xf32>
}

// -----

func.func @bf16(%q: tensor<1x4x8x256xbf16>) -> tensor<1x4x8x256xbf16> {
  %o = tilt.attention q(%q : tensor<1x4x8x256xbf16>) k(%q : tensor<1x4x8x256xbf16>) v(%q : tensor<1x4x8x256xbf16>) -> tensor<1x4x8x256xbf16>
  return %o : tensor<1x4x8x256xbf16>
}
