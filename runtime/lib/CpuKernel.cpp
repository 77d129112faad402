//===- CpuKernel.cpp - A loaded CPU kernel artifact -----------------------===//

#include "CpuKernel.h"

#include <charconv>
#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fmt/format.h>

namespace tilt::detail {

std::string enableAmx() {
  // Linux hands out AMX tile state per process on request; without it the
  // first tile instruction raises SIGILL.
  static const std::string result = [] {
    constexpr int kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) != 0)
      return std::string("cpu_amx kernel: the OS refused AMX tile data "
                         "(arch_prctl ARCH_REQ_XCOMP_PERM)");
    return std::string();
  }();
  return result;
}

std::string CpuKernel::load(const std::string &path,
                            const std::string &expectedSpec,
                            std::unique_ptr<CpuKernel> &out,
                            std::string_view label) {
  const std::string_view name = label.empty() ? std::string_view(path) : label;
  // RTLD_NOW: an artifact with unresolved symbols fails here, not mid-run.
  // RTLD_LOCAL: kernels must not see each other's symbols.
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    return fmt::format("kernel {}: cannot load: {}", path,
                       why ? why : "unknown dlopen error");
  }
  std::unique_ptr<CpuKernel> kernel(new CpuKernel());
  kernel->handle = handle;
  auto *entry = reinterpret_cast<CpuEntryFn>(dlsym(handle, kCpuEntrySymbol));
  const auto *infoText =
      static_cast<const char *>(dlsym(handle, kKernelInfoSymbol));
  if (!entry || !infoText)
    return fmt::format("kernel {}: missing symbol {}", name,
                       !entry ? kCpuEntrySymbol : kKernelInfoSymbol);
  kernel->entryFn = entry;
  if (std::string err = parseKernelInfo(infoText, kernel->kernelInfo);
      !err.empty())
    return fmt::format("kernel {}: {}", name, err);
  const KernelInfo &info = kernel->kernelInfo;
  if (info.abi != kKernelAbiVersion)
    return fmt::format("kernel {}: built for ABI {}, this runtime needs ABI {}",
                       name, info.abi, kKernelAbiVersion);
  if (info.spec != expectedSpec)
    return fmt::format("kernel {}: built for spec '{}', expected '{}'", name,
                       info.spec, expectedSpec);
  // A kernel has no initializers, so nothing of it has run yet.
  const HostCpu &host = hostCpu();
  if (!host.error.empty())
    return host.error;
  if (!host.cls || *host.cls < info.isa)
    return fmt::format("kernel {}: built for {}; this CPU is {} and lacks {}",
                       name, toString(info.isa), host.describe(),
                       missingFeatures(info.isa, [&](std::string_view f) {
                         return host.has(f);
                       }));
  const std::optional<KernelVariant> variant = parseKernelVariant(info.variant);
  if (variant == KernelVariant::CpuAmx)
    if (std::string err = enableAmx(); !err.empty())
      return fmt::format("kernel {}: {}", name, err);
  kernel->kind = variant.value_or(KernelVariant::CpuAvx2);
  kernel->itemPerKvHead = variant && isDecodeVariant(*variant);
  kernel->backward = variant && isBackwardVariant(*variant);
  out = std::move(kernel);
  return {};
}

CpuKernel::~CpuKernel() {
  if (handle)
    dlclose(handle);
}

} // namespace tilt::detail
