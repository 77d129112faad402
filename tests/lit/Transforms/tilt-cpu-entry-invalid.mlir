// RUN: tilt-opt %s -split-input-file --tilt-cpu-entry -verify-diagnostics
// RUN: not tilt-opt %s -split-input-file --tilt-cpu-entry="variant=gpu_sm80" 2>&1 | FileCheck %s --check-prefix=VARIANT
// RUN: not tilt-opt %s -split-input-file --tilt-cpu-entry="block-m=48" 2>&1 | FileCheck %s --check-prefix=BLOCK

// VARIANT: error: 'tilt.attention' op tilt-cpu-entry: variant must be cpu_avx2, cpu_avx512 or cpu_amx, got 'gpu_sm80'
// BLOCK: error: 'tilt.attention' op block_m must be a power of two from 16 to 256, got 48

func.func @gpu_config(%q: tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32> {
  // expected-error @+1 {{tilt-cpu-entry needs a CPU tile_config, got gpu_sm80}}
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) {config = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 4, num_stages = 2>} -> tensor<1x4x8x64xf32>
  return %o : tensor<1x4x8x64xf32>
}

// -----

func.func @not_alone(%q: tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32> {
  %e = tensor.empty() : tensor<1x4x8x64xf32>
  // expected-error @+1 {{tilt-cpu-entry expects the op alone in a function whose arguments it uses directly}}
  %o = tilt.attention q(%e : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return %o : tensor<1x4x8x64xf32>
}

// -----

// Valid for the first RUN; the option errors of the other RUN lines fire here.
func.func @plain(%q: tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32> {
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return %o : tensor<1x4x8x64xf32>
}
