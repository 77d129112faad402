//===- Cuda.h - The CUDA device, as tools and tests need it -----*- C++ -*-===//
//
// Runtime::run() with Target::CUDA takes device pointers. This header gives
// callers without a CUDA toolkit what they need around that: what the device
// is, device memory, and event timing. The driver (libcuda.so.1) is loaded on
// first use; without it, or without a device, every call returns the same
// one-line error ("cuda: no driver (libcuda.so.1 not found)", "cuda: no
// device"). Everything works on device 0 of the process (CUDA_VISIBLE_DEVICES
// picks it) through its primary context, which other CUDA libraries of the
// process share.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_CUDA_H
#define TILT_CUDA_H

#include "tilt/Spec.h"

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace tilt::cuda {

struct DeviceInfo {
  std::string name;  ///< "NVIDIA H100 80GB HBM3"
  int ccMajor = 0;   ///< compute capability
  int ccMinor = 0;
  int smCount = 0;
  /// Most shared memory one block may use after opting in (bytes).
  int maxSharedPerBlock = 0;
  int driverVersion = 0; ///< e.g. 12040 for CUDA 12.4
  std::string arch;      ///< "sm_" + major + minor: "sm_90"
};

/// Loads the driver (once) and describes device 0; "" or a one-line error.
std::string probe(DeviceInfo &info);

/// The kernel variant Runtime::run() picks on `device` when the caller gives
/// no configuration: TilePolicy.h's defaultGpuVariant for the architecture
/// whose cubins the device runs (sm_90a on sm_90, else sm_80). "" or the
/// error naming a device older than sm_80.
std::string defaultVariant(const AttentionSpec &spec, const DeviceInfo &device,
                           std::string &variant);

/// Device memory, freed on destruction. Synchronous copies: when they return,
/// the data is where it was sent (work already launched on the default
/// stream is finished first).
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&other) noexcept;
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer();

  /// Replaces the buffer by `bytes` of new device memory (at least 256-byte
  /// aligned; 0 bytes: none). "" or an error.
  std::string allocate(size_t bytes);
  void *data() const { return ptr; }
  size_t size() const { return bytes; }

  /// Host -> device, `n` bytes at byte `offset`; "" or an error.
  std::string upload(const void *src, size_t n, size_t offset = 0);
  /// Device -> host.
  std::string download(void *dst, size_t n, size_t offset = 0) const;
  /// Sets every byte to `value`.
  std::string fill(unsigned char value);

private:
  void reset();
  void *ptr = nullptr;
  size_t bytes = 0;
};

/// Copies between the host and any device pointer (synchronous).
std::string copyToDevice(void *deviceDst, const void *hostSrc, size_t bytes);
std::string copyToHost(void *hostDst, const void *deviceSrc, size_t bytes);

/// Waits for all work on the device (launches are asynchronous: errors of a
/// kernel surface here).
std::string synchronize();

/// Times `launch` (which enqueues work on the default stream and returns ""
/// or an error) with events: `repeats` times, appending each run's
/// milliseconds to `msOut`. "" or the first error.
std::string timeKernel(const std::function<std::string()> &launch, int repeats,
                       std::vector<double> &msOut);

} // namespace tilt::cuda

#endif // TILT_CUDA_H
