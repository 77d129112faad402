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
//   cu_seqlens_q, cu_seqlens_k, block_table and context_lens (i32, a paged
//   KV cache);
// then, for the decode family (cpu_decode_*) only, its split-KV parts:
//   o_parts (f32 [S] + o's shape) and lse_parts (f32 [S] + lse's shape),
//   S >= 0 their leading extent;
// then, only when the spec has position offsets, one more slot: a pointer to
// two int64_t, {q_offset, k_offset}.
// Dense: q/o [B,H,Sq,D], k/v [B,Hkv,Sk,D], lse [B,H,Sq].
// Varlen: q/o [totalQ,H,D], k/v [totalK,Hkv,D], lse [H,totalQ].
// Paged (the CPU kernels and gpu_decode_sm80): q/o/lse dense, k/v [num_pages,
// page_size, Hkv, D], block_table [B, max_pages], context_lens [B]; the kernel
// reads only the table entries of each sequence's ceil(context_lens /
// page_size) pages, which the runtime has checked lie in [0, num_pages).
// Elements of f16/bf16 tensors are 16-bit storage; lse is always f32.
// Strides: the data tensors (q, k, v, o; the backward's grad_o, dq, dk, dv)
// take any element strides their descriptors give, the innermost 1 (a
// [B, S, H, D] tensor is the view [B, H, S, D] with strides {S*H*D, D,
// H*D, 1}); every other tensor is row-major. Descriptor offsets are 0.
//
// Work items: the kernel computes items [itemBegin, itemEnd) of the flattened
// row-major space (batch, split, kv head) for the decode family
// (cpu_decode_*; splits = max(1, S)), else (batch, head, query block), query
// blocks being `block_m` rows; the
// number of query blocks per (batch, head) is ceil(maxSq / block_m) where maxSq
// is Sq (dense) or the longest query sequence (varlen). Items past the end of a
// shorter varlen sequence do nothing. Split-KV (S > 0): split s of a
// (batch, kv head) sees the s-th of S chunks of its visible keys (whole
// block_n blocks; trailing chunks may be empty) and writes its partial
// result, normalized over that chunk (o = 0, lse = -inf when it saw no key),
// to o_parts[s] and lse_parts[s] instead of o; the parts' lse leave out the
// row's constant (what the position offsets' anchors took out of the
// scores, 0 without offsets), which split 0 writes to lse. The caller
// merges the parts exactly (ALIBI.md, "Merge") and adds that constant.
// With S = 0 the kernel writes o and lse (the parts' pointers may then be
// null). Items are independent, so the
// runtime may hand them to threads in any order and in ranges of any length
// (the decode kernels do a range's items of one (batch, split) together; the
// runtime gives paged ones ranges of up to 8 items).
//
// Backward kernels (variants cpu_bwd_*, tilt.attention_backward) take, in
// this order: q, k, v, o, grad_o, lse, grad_lse (f32 like lse: the upstream
// gradient of lse, zeros when there is none), dq, dk, dv, row_scale (f32
// scratch shaped like lse, written by the (batch, head) items and read by
// the key-block items), then with custom slopes
// slopes ([B,H], free batch stride) and dslopes (f32 [B,H], written: one
// value per (sequence, head)), then key_padding_mask, cu_seqlens_q/k and the
// offsets slot as above. Their work items are, first, the key blocks
// (`block_n` keys) of every (batch, kv head) -- B * Hkv * ceil(maxSk /
// block_n) items, maxSk the longest key sequence; each writes the dk and dv
// rows of its keys -- then one item per (batch, head), writing that head's dq
// rows, dslopes entry and row_scale rows -- then, fused, one item per
// (batch, kv head) (B * Hkv), each doing all three for its kv head and the
// query heads of its group in one pass. A call runs either the first two
// parts or the third. No two items write the same element; every (batch,
// head) item must finish before the first key-block item starts (they read
// row_scale), and within each part the items may run in any order without
// changing the result.
//
// `tilt_kernel_info` is a ';'-separated "key=value" list with at least
// `abi`, `block_m`, `block_n`, `variant`, `isa` (the ISA class its code
// needs, CpuIsa.h: the runtime refuses to load it on a CPU below that class)
// and `spec` (AttentionSpec::canonical, last).
//
// A CUDA artifact is a text header followed by the module images:
//
//   TILTCUDA1\n
//   key=value\n ...            (one per line; order not significant)
//   \n                         (an empty line ends the header)
//   <cubin_bytes bytes of cubin (ELF)><ptx_bytes bytes of PTX text>
//
// Header keys: abi, variant (gpu_sm80 | gpu_sm90a | gpu_decode_sm80 |
// gpu_bwd_sm80),
// arch (the cubin's: sm_80 | sm_90a), kernel (entry symbol), block_m, block_n,
// num_warps, num_stages, threads (per CTA), smem (dynamic shared memory bytes),
// cubin_bytes (0: none, the driver JITs the PTX), ptx_bytes, tma (empty, or
// a ','-separated list of operand names among q,k,v; see below), ptxas
// (ptxas -v's one-line summary: registers, spills, shared memory), spec
// (AttentionSpec::canonical, last: it may contain anything but '\n').
// A cubin for sm_80 runs on any sm_8x device; an sm_90a cubin only on sm_90.
// Elsewhere the launcher loads the PTX (the driver compiles it).
//
// Launch: grid (ceil(maxSq / block_m), H, B) -- blockIdx.z is the batch
// (varlen: the sequence) and maxSq the longest query sequence -- block
// (threads, 1, 1), `smem` bytes of dynamic shared memory.
// gpu_decode_sm80 (dense or paged k/v, not varlen): rows are a GQA group's
// heads x queries (row r: head kv_head * H/Hkv + r / Sq, query r % Sq), grid
// (max(1, S) * ceil(H/Hkv * Sq / block_m), Hkv, B), blockIdx.x = split *
// row blocks + row block; with S > 0 split-KV parts as for the CPU decode
// family (split s: the s-th of S runs of the visible key blocks), after
// which the module's second kernel `tilt_merge` (parameters o_parts,
// lse_parts, o, lse; grid (Sq, H, B), 32 threads, no shared memory)
// merges them into o and lse, adding the row constant split 0 left in lse.
// Parameters, in order: for each memref of the CPU order above (q, k, v, o,
// lse, [slopes as [B,H] with a free batch stride], [kpm i8], [cu_seqlens_q,
// cu_seqlens_k], [block_table, context_lens], [o_parts, lse_parts:
// gpu_decode_sm80]), its descriptor expanded into separate parameters:
// allocated ptr, aligned ptr, offset (i64), sizes[rank] (i64 each),
// strides[rank] (i64 each) -- pointers are device addresses; strides as
// for the CPU kernels (q, k, v, o any with a unit innermost one, every other
// tensor row-major).
// Then, with position offsets, q_offset and k_offset (i64 each).
// gpu_bwd_sm80 (the backward, dense or varlen, every bias form): the
// module has two kernels, `tilt_attention_bwd_dq` (the artifact's `kernel`;
// grid (ceil(maxSq / block_m), H, B)) and `tilt_attention_bwd_dkdv` (grid
// (ceil(maxSk / block_n), Hkv, B)), with the same parameters, launched in
// that order on one stream (the second reads what the first writes; its
// grid x is at least 1, so dslopes is written even without keys), each
// with `threads` threads and `smem` (the larger of the two) bytes. The
// parameters are the CPU backward's memrefs (q, k, v, o, grad_o, lse,
// grad_lse, dq, dk, dv, row_scale, [slopes, dslopes], [kpm], [cu_seqlens_q,
// cu_seqlens_k]) with two differences: row_scale is the row state, f32 of
// lse's shape x 4 (per query row: lse in log2 units less its anchor
// constant, D_i - grad_lse_i, 1 / sum_j P, the anchor; scratch written by
// the dQ kernel), and dslopes is [B, H], or [1, H] for per-head slopes (the
// kernel then sums over the batch); then, with custom slopes, the slope
// gradient's parts, f32 [B, H, ceil(maxSq / block_m)] (scratch); then the
// offsets.
// Then, for each operand named by `tma`, one pointer (8 bytes) to a
// CUtensorMap (128 bytes, 64-byte aligned) in device global memory, made by
// cuTensorMapEncodeTiled over the operand seen as a rank-4 tensor
// {D, S, Hx, B} (dense [B,Hx,S,D] with element strides s: strides in bytes
// {s[2]*e, s[1]*e, s[0]*e}) or {D, used, Hx, 1} (varlen [total,Hx,D]:
// {s[0]*e, s[1]*e, any}, used = the last cu_seqlens entry or 1 if that is
// 0, so that rows past it read as zeros), e the element size, box
// {64, rows, 1, 1} with rows = block_m for q and block_n for k and v,
// 128-byte swizzle, no interleave, zero fill out of bounds. TMA needs those
// strides and the operand's address to be multiples of 16 bytes.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_KERNELABI_H
#define TILT_KERNELABI_H

#include <cstdint>

namespace tilt {

inline constexpr int kKernelAbiVersion = 5;
inline constexpr const char *kCpuEntrySymbol = "tilt_cpu_entry";
inline constexpr const char *kKernelInfoSymbol = "tilt_kernel_info";
inline constexpr const char *kCudaArtifactMagic = "TILTCUDA1\n";
inline constexpr const char *kCudaKernelName = "tilt_attention";
inline constexpr const char *kCudaMergeKernelName = "tilt_merge";
/// gpu_bwd_sm80's kernels, launched in this order.
inline constexpr const char *kCudaBwdDqKernelName = "tilt_attention_bwd_dq";
inline constexpr const char *kCudaBwdDkDvKernelName = "tilt_attention_bwd_dkdv";

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
