//===- FuzzBundleIndex.cpp - The kernel bundle index reader ---------------===//

#include "FuzzSupport.h"
#include "tilt/KernelBundle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tilt::fuzz::writeScratch("index", data, size);
  for (auto host : {std::optional<tilt::CpuClass>(),
                    std::optional(tilt::CpuClass::X86_64_V3),
                    std::optional(tilt::CpuClass::X86_64_V4_AMX)}) {
    tilt::KernelBundle bundle;
    if (!tilt::KernelBundle::load(tilt::fuzz::scratchDir(), bundle, host)
             .empty())
      return 0;
    // The serving class is one the bundle holds, never above the host.
    if (bundle.cpuClass && (!host || *bundle.cpuClass > *host))
      __builtin_trap();
  }
  return 0;
}
