//===- KernelABI.h - What a compiled CPU artifact exports -------*- C++ -*-===//
//
// The contract between the compiler (which generates CPU kernels) and the
// runtime (which loads and launches them). Plain C layout, no dependencies.
//
// A CPU artifact is a shared object exporting:
//
//   void tilt_cpu_entry(void **descriptors, int64_t itemBegin,
//                       int64_t itemEnd);
//   const char tilt_kernel_info[];
//
// `descriptors` points to the memref descriptors (MemRefDescriptor<N>, the
// layout MLIR uses for strided memrefs) of, in this order:
//   q, k, v, o, lse,
//   then, only when the spec has them: slopes, key_padding_mask (i8),
//   cu_seqlens_q, cu_seqlens_k.
// Dense: q/o [B,H,Sq,D], k/v [B,Hkv,Sk,D], lse [B,H,Sq].
// Varlen: q/o [totalQ,H,D], k/v [totalK,Hkv,D], lse [H,totalQ].
// Elements of f16/bf16 tensors are 16-bit storage; lse is always f32.
//
// Work items: the kernel computes items [itemBegin, itemEnd) of the flattened
// row-major space (batch, head, query block), query blocks being `block_m`
// rows; the number of query blocks per (batch, head) is ceil(maxSq / block_m)
// where maxSq is Sq (dense) or the longest query sequence (varlen). Items past
// the end of a shorter varlen sequence do nothing. Items are independent, so
// the runtime may hand them to threads in any order.
//
// `tilt_kernel_info` is a ';'-separated "key=value" list with at least
// `abi`, `block_m`, `block_n`, `variant` and `spec` (AttentionSpec::canonical).
//
//===----------------------------------------------------------------------===//

#ifndef TILT_KERNELABI_H
#define TILT_KERNELABI_H

#include <cstdint>

namespace tilt {

inline constexpr int kKernelAbiVersion = 1;
inline constexpr const char *kCpuEntrySymbol = "tilt_cpu_entry";
inline constexpr const char *kKernelInfoSymbol = "tilt_kernel_info";

template <int Rank> struct MemRefDescriptor {
  void *allocated;
  void *aligned;
  int64_t offset;
  int64_t sizes[Rank];
  int64_t strides[Rank];
};

using CpuEntryFn = void (*)(void **descriptors, int64_t itemBegin,
                            int64_t itemEnd);

} // namespace tilt

#endif // TILT_KERNELABI_H
