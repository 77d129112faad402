// RUN: tilt-opt %s --tilt-cpu-pipeline | FileCheck %s
// RUN: tilt-opt %s --tilt-cpu-pipeline="kernel-name=attn variant=cpu_avx2" | FileCheck %s --check-prefix=AVX2

// The whole CPU pipeline, from the spec on tensors down to the LLVM dialect:
// nothing of tilt, scf, vector or memref survives.

// CHECK-NOT: tilt.attention
// CHECK-LABEL: llvm.func @tilt_kernel(
// CHECK: llvm.intr.fma(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
// CHECK: llvm.intr.floor(%{{.*}}) : (vector<16xf32>) -> vector<16xf32>
// CHECK: llvm.intr.log2
// CHECK-LABEL: llvm.func @_mlir_ciface_tilt_kernel(
// CHECK-SAME: %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: i64, %{{.*}}: i64)
// CHECK-NOT: scf.
// CHECK-NOT: vector.
// CHECK-NOT: memref.

// AVX2-LABEL: llvm.func @attn(
// AVX2: llvm.intr.fma(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<8xf32>, vector<8xf32>, vector<8xf32>) -> vector<8xf32>
// AVX2-LABEL: llvm.func @_mlir_ciface_attn(
func.func @tilt_attention(%q: tensor<?x12x?x128xf32>, %k: tensor<?x4x?x128xf32>, %v: tensor<?x4x?x128xf32>) -> tensor<?x12x?x128xf32> {
  %o = tilt.attention q(%q : tensor<?x12x?x128xf32>) k(%k : tensor<?x4x?x128xf32>) v(%v : tensor<?x4x?x128xf32>) {bias = #tilt.bias<alibi>, causal} -> tensor<?x12x?x128xf32>
  return %o : tensor<?x12x?x128xf32>
}
