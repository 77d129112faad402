// RUN: tilt-opt %s | tilt-opt | FileCheck %s

// Every attribute form round-trips; defaults are elided when printed. The
// module prints its attributes sorted, hence CHECK-DAG.

// CHECK-DAG: tilt.none = #tilt.bias<none>
// CHECK-DAG: tilt.relative = #tilt.bias<alibi>
// CHECK-DAG: tilt.relative_default_max_bias = #tilt.bias<alibi>
// CHECK-DAG: tilt.relative_standard = #tilt.bias<alibi>
// CHECK-DAG: tilt.symmetric = #tilt.bias<alibi_symmetric, max_bias = 4.000000e+00>
// CHECK-DAG: tilt.positions = #tilt.bias<alibi_positions, slopes = custom>
// CHECK-DAG: tilt.tensor_parallel = #tilt.bias<alibi, max_bias = 1.600000e+01, head_offset = 8, total_heads = 32>
// CHECK-DAG: tilt.cpu_avx2 = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 16>
// CHECK-DAG: tilt.cpu_avx512 = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 128>
// CHECK-DAG: tilt.cpu_amx = #tilt.tile_config<variant = cpu_amx, block_m = 32, block_n = 64>
// CHECK-DAG: tilt.sm80 = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 4, num_stages = 3>
// CHECK-DAG: tilt.sm90a = #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 256, num_warps = 8, num_stages = 2>
module attributes {
  tilt.none = #tilt.bias<none>,
  tilt.relative = #tilt.bias<alibi>,
  tilt.relative_default_max_bias = #tilt.bias<alibi, max_bias = 8.0>,
  tilt.relative_standard = #tilt.bias<alibi, slopes = standard>,
  tilt.symmetric = #tilt.bias<alibi_symmetric, max_bias = 4.0>,
  tilt.positions = #tilt.bias<alibi_positions, slopes = custom>,
  tilt.tensor_parallel = #tilt.bias<alibi, total_heads = 32, head_offset = 8, max_bias = 16.0>,
  tilt.cpu_avx2 = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 16>,
  tilt.cpu_avx512 = #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 128>,
  tilt.cpu_amx = #tilt.tile_config<variant = cpu_amx, block_m = 32, block_n = 64>,
  tilt.sm80 = #tilt.tile_config<variant = gpu_sm80, block_m = 64, block_n = 64, num_warps = 4, num_stages = 3>,
  tilt.sm90a = #tilt.tile_config<variant = gpu_sm90a, block_m = 128, block_n = 256, num_warps = 8, num_stages = 2>
} {}
