//===- CpuKernel.h - A loaded CPU kernel artifact ---------------*- C++ -*-===//
//
// dlopen()s one artifact, finds the symbols of KernelABI.h and checks that the
// artifact was built for this ABI and for the spec the runtime asked for: a
// cache key collision or a stale file must fail loudly, never compute the
// wrong attention.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_RUNTIME_CPUKERNEL_H
#define TILT_RUNTIME_CPUKERNEL_H

#include "tilt/Artifacts.h"
#include "tilt/CpuIsa.h"
#include "tilt/KernelABI.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace tilt::detail {

/// Asks the OS for AMX tile state (once per process); "" or an error.
std::string enableAmx();

class CpuKernel {
public:
  /// Loads `path` and checks it against `expectedSpec` (a canonical spec)
  /// and against this CPU: a kernel whose ISA class the host (hostCpu())
  /// lacks is refused before any of its code runs.
  /// Returns "" and sets `out`, or a one-line error naming the kernel by
  /// `label` (default: `path`; a staged copy's path means nothing to users).
  static std::string load(const std::string &path,
                          const std::string &expectedSpec,
                          std::unique_ptr<CpuKernel> &out,
                          std::string_view label = {});
  ~CpuKernel();
  CpuKernel(const CpuKernel &) = delete;
  CpuKernel &operator=(const CpuKernel &) = delete;

  CpuEntryFn entry() const { return entryFn; }
  const KernelInfo &info() const { return kernelInfo; }
  /// Work items are (batch, kv head) -- the decode family -- rather than
  /// (batch, head, query block) (KernelABI.h). Known at load.
  bool itemsPerKvHead() const { return itemPerKvHead; }
  /// The variant the kernel info names (parsed at load; cpu_avx2 where it
  /// names none Tilt knows, as for a kernel that is not Tilt's).
  KernelVariant variant() const { return kind; }
  /// A kernel of the backward pass (cpu_bwd_*): its descriptors and work
  /// items are the backward's (KernelABI.h). Known at load.
  bool isBackward() const { return backward; }

private:
  CpuKernel() = default;

  void *handle = nullptr;
  CpuEntryFn entryFn = nullptr;
  KernelInfo kernelInfo;
  bool itemPerKvHead = false;
  KernelVariant kind = KernelVariant::CpuAvx2;
  bool backward = false;
};

} // namespace tilt::detail

#endif // TILT_RUNTIME_CPUKERNEL_H
