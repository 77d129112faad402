//===- CudaKernel.h - A loaded CUDA kernel artifact -------------*- C++ -*-===//
//
// Parses a CUDA artifact (KernelABI.h), loads its module into the primary
// context and launches it. The parts that need no GPU -- the header parser,
// the variant and architecture rules, the parameter packing and the tensor
// map geometry -- are free functions, tested without a device.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_RUNTIME_CUDAKERNEL_H
#define TILT_RUNTIME_CUDAKERNEL_H

#include "tilt/Artifacts.h"
#include "tilt/Cuda.h"
#include "tilt/Runtime.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace tilt::detail {

/// Whether a cubin built for `arch` runs on a device of compute capability
/// major.minor (KernelABI.h: sm_80 on any sm_8x, sm_90a on sm_90 only).
bool cubinRunsOn(std::string_view arch, int ccMajor, int ccMinor);

/// Whether an artifact built for `arch` loads on the device at all, from its
/// cubin or by JIT-compiling its PTX (sm_80 PTX: any sm_80 or newer).
bool artifactRunsOn(std::string_view arch, int ccMajor, int ccMinor);

/// The kernel parameters of one launch: every parameter is 8 bytes (a
/// pointer or an i64), `pointers[i]` points at `values[i]` as cuLaunchKernel
/// wants. Not copyable: the pointers point into the object.
struct KernelParams {
  // 17 memrefs of rank <= 5 (3 + 2 * 5 words each; the backward has 17 of
  // rank <= 4), 2 position offsets and 3 tensor maps.
  static constexpr int kMax = 17 * 13 + 2 + 3;
  uint64_t values[kMax];
  void *pointers[kMax];
  int count = 0;

  KernelParams() = default;
  KernelParams(const KernelParams &) = delete;
  KernelParams &operator=(const KernelParams &) = delete;
};

/// gpu_decode_sm80's split-KV parts (KernelABI.h): f32 o_parts [S, B, H,
/// Sq, D] and lse_parts [S, B, H, Sq] in device memory; S = 0: none (the
/// kernel writes o and lse, the pointers may be null).
struct DecodeParts {
  void *o = nullptr;
  void *lse = nullptr;
  int64_t splits = 0;
};

/// Packs the parameters of KernelABI.h in order: q, k, v, o, lse (present:
/// the runtime substitutes a scratch), then slopes as [batch, H] (batch
/// stride 0 for [H]) when the spec has custom slopes, the key padding mask,
/// cu_seqlens_q/k when varlen, block_table and context_lens when paged, the
/// split-KV parts when `parts` is given (gpu_decode_sm80), each as
/// allocated, aligned, offset, sizes, strides (q, k, v, o through their
/// strides, the others row-major); then the position offsets and `tmaMaps`
/// (device addresses).
void packKernelParams(const AttentionSpec &spec, const AttentionArgs &args,
                      int64_t batch, const uint64_t *tmaMaps, int numTma,
                      KernelParams &out, const DecodeParts *parts = nullptr);
/// The parameters of gpu_decode_sm80's tilt_merge: o_parts, lse_parts, o,
/// lse (q's Sq and D give the parts' shapes).
void packMergeParams(const AttentionSpec &spec, const AttentionArgs &args,
                     const DecodeParts &parts, KernelParams &out);

/// gpu_bwd_sm80's scratch (KernelABI.h) in device memory: the row state
/// (f32, lse's shape x 4) and, with custom slopes, the slope gradient's
/// parts (f32 [B, H, queryBlocks]).
struct BackwardScratch {
  void *rowState = nullptr;
  void *parts = nullptr;
  int64_t queryBlocks = 0;
};

/// Packs gpu_bwd_sm80's parameters (KernelABI.h): q, k, v, o, grad_o, lse,
/// grad_lse (present: the runtime substitutes zeros), dq, dk, dv, the row
/// state, then with custom slopes slopes [B, H] (batch stride 0 for [H])
/// and dslopes ([B, H], or [1, H] for [H] slopes: the kernel sums over the
/// batch), the key padding mask, cu_seqlens, the parts; then the position
/// offsets. q, k, v, o, grad_o, dq, dk, dv through their strides, the
/// others row-major.
void packBackwardParams(const AttentionSpec &spec, const AttentionArgs &args,
                        const BackwardArgs &grads, int64_t batch,
                        const BackwardScratch &scratch, KernelParams &out);

/// The arguments of cuTensorMapEncodeTiled for one operand (KernelABI.h).
struct TensorMapGeometry {
  static constexpr int kRank = 4;
  uint64_t dims[kRank];        ///< elements, innermost first
  uint64_t strides[kRank - 1]; ///< bytes, of dims 1 to 3
  uint32_t box[kRank];
};
/// `t` is q, k or v as the runtime received it (through its strides);
/// `rows` is block_m for q and block_n for k and v. Varlen: the map covers
/// only the `usedRows` rows cu_seqlens reach (its last entry), so a box
/// running past them reads zeros (TMA's out-of-bounds fill) rather than
/// whatever the caller left in the rest of the tensor (ignored when dense).
TensorMapGeometry tensorMapGeometry(const AttentionSpec &spec,
                                    const TensorRef &t, int64_t rows,
                                    int64_t usedRows);
/// "" or why TMA cannot read `t` (`name`) through `g`: its address and
/// strides must be multiples of 16 bytes.
std::string tensorMapError(const char *name, const TensorRef &t,
                           const TensorMapGeometry &g);

class CudaKernel {
public:
  /// Parses `bytes`, checks the ABI and `expectedSpec`, loads the module
  /// (the cubin when it runs on this device, else the PTX) and finds the
  /// entry. "" and sets `out`, or a one-line error naming the kernel by
  /// `label`.
  static std::string load(std::string_view bytes,
                          const std::string &expectedSpec,
                          std::unique_ptr<CudaKernel> &out,
                          std::string_view label);
  ~CudaKernel();
  CudaKernel(const CudaKernel &) = delete;
  CudaKernel &operator=(const CudaKernel &) = delete;

  /// What the runtime's checks learnt of one call's shapes.
  struct Extents {
    int64_t batch;
    int64_t maxSq, maxSk; ///< the longest query and key sequences
    /// varlen: the rows of q and k that cu_seqlens cover (their last entries)
    int64_t usedQ, usedK;
  };
  /// Enqueues one launch on the caller's stream (gpu_decode_sm80 with
  /// split-KV: the decode kernel, then tilt_merge). `args` hold device
  /// pointers and a present lse. "" or an error (nothing was launched).
  std::string launch(const AttentionSpec &spec, const AttentionArgs &args,
                     const Extents &x);

  /// gpu_bwd_sm80: enqueues tilt_attention_bwd_dq, then
  /// tilt_attention_bwd_dkdv, on the caller's stream. `args` and `grads`
  /// hold device pointers, lse and grad_lse present. "" or an error.
  std::string launchBackward(const AttentionSpec &spec,
                             const AttentionArgs &args,
                             const BackwardArgs &grads, int64_t batch,
                             int64_t maxSq, int64_t maxSk);

  const CudaArtifact &info() const { return header; }
  bool loadedFromCubin() const { return fromCubin; }

private:
  CudaKernel() = default;

  CudaArtifact header; ///< without the images, once loaded
  void *module = nullptr;
  void *function = nullptr;
  void *mergeFunction = nullptr; ///< gpu_decode_sm80's tilt_merge
  void *dkdvFunction = nullptr;  ///< gpu_bwd_sm80's second kernel
  /// Reserves `bytes` of partsBuffer for a launch on `stream`, waiting for
  /// launches that may still use it when it is replaced or was last used on
  /// another stream.
  std::string reserveScratch(size_t bytes, void *stream);
  /// gpu_decode_sm80: the split-KV parts (o_parts, then lse_parts);
  /// gpu_bwd_sm80: the row state and the slope gradient's parts. Grown as
  /// calls need.
  cuda::DeviceBuffer partsBuffer;
  void *partsStream = nullptr; ///< the stream of the last split launch
  bool fromCubin = false;
  /// The tensor maps of the last launch, on the device and on the host: a
  /// launch whose maps are unchanged (same tensors) copies nothing.
  cuda::DeviceBuffer tmaBuffer;
  std::string tmaUploaded;
};

} // namespace tilt::detail

#endif // TILT_RUNTIME_CUDAKERNEL_H
