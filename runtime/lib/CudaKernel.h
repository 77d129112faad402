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
  // 9 memrefs of rank <= 4 (3 + 2 * 4 words each), 2 position offsets and 3
  // tensor maps.
  static constexpr int kMax = 9 * 11 + 2 + 3;
  uint64_t values[kMax];
  void *pointers[kMax];
  int count = 0;

  KernelParams() = default;
  KernelParams(const KernelParams &) = delete;
  KernelParams &operator=(const KernelParams &) = delete;
};

/// Packs the parameters of KernelABI.h in order: q, k, v, o, lse (present:
/// the runtime substitutes a scratch), then slopes as [batch, H] (batch
/// stride 0 for [H]) when the spec has custom slopes, the key padding mask,
/// cu_seqlens_q/k when varlen, each as allocated, aligned, offset, sizes,
/// strides (contiguous row-major); then `tmaMaps` (device addresses).
void packKernelParams(const AttentionSpec &spec, const AttentionArgs &args,
                      int64_t batch, const uint64_t *tmaMaps, int numTma,
                      KernelParams &out);

/// The arguments of cuTensorMapEncodeTiled for one operand (KernelABI.h).
struct TensorMapGeometry {
  uint64_t dims[3];    ///< elements, innermost first
  uint64_t strides[2]; ///< bytes, of dims 1 and 2
  uint32_t box[3];
};
/// `t` is q, k or v as the runtime received it; `rows` is block_m for q and
/// block_n for k and v.
TensorMapGeometry tensorMapGeometry(const AttentionSpec &spec,
                                    const TensorRef &t, int64_t rows);

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

  /// Enqueues one launch on the default stream. `args` hold device pointers
  /// and a present lse; `maxSq` is the longest query sequence. "" or an
  /// error (nothing was launched).
  std::string launch(const AttentionSpec &spec, const AttentionArgs &args,
                     int64_t batch, int64_t maxSq);

  const CudaArtifact &info() const { return header; }
  bool loadedFromCubin() const { return fromCubin; }

private:
  CudaKernel() = default;

  CudaArtifact header; ///< without the images, once loaded
  void *module = nullptr;
  void *function = nullptr;
  bool fromCubin = false;
  /// The tensor maps of the last launch, on the device and on the host: a
  /// launch whose maps are unchanged (same tensors) copies nothing.
  cuda::DeviceBuffer tmaBuffer;
  std::string tmaUploaded;
};

} // namespace tilt::detail

#endif // TILT_RUNTIME_CUDAKERNEL_H
