// RUN: tilt-opt %s -split-input-file --tilt-pin-tile-config=variant=cpu_avx512 --tilt-cpu-entry -verify-diagnostics
// RUN: not tilt-opt %s -split-input-file --tilt-cpu-entry 2>&1 | FileCheck %s --check-prefix=UNPINNED

// The entry only reads the configuration; it never chooses one.
// UNPINNED: error: 'tilt.attention' op has no tile_config; run tilt-pin-tile-config first

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

// Valid once pinned (first RUN); unpinned for the second.
func.func @plain(%q: tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32> {
  %o = tilt.attention q(%q : tensor<1x4x8x64xf32>) k(%q : tensor<1x4x8x64xf32>) v(%q : tensor<1x4x8x64xf32>) -> tensor<1x4x8x64xf32>
  return %o : tensor<1x4x8x64xf32>
}
