//===- CpuKernel.cpp - A loaded CPU kernel artifact -----------------------===//

#include "CpuKernel.h"

#include <charconv>
#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fmt/format.h>

namespace tilt::detail {

namespace {

std::string parseInt(std::string_view key, std::string_view value,
                     int64_t &out) {
  auto [end, ec] =
      std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || end != value.data() + value.size())
    return fmt::format("kernel info: {} must be an integer, got '{}'", key,
                       value);
  return {};
}

} // namespace

std::string parseKernelInfo(std::string_view text, KernelInfo &info) {
  info = KernelInfo();
  bool haveAbi = false, haveBlockM = false, haveBlockN = false,
       haveSpec = false, haveIsa = false;
  while (!text.empty()) {
    size_t eq = text.find('=');
    if (eq == std::string_view::npos)
      return fmt::format("kernel info: expected key=value, got '{}'", text);
    std::string_view key = text.substr(0, eq);
    text.remove_prefix(eq + 1);
    if (key == "spec") {
      info.spec = std::string(text);
      haveSpec = true;
      break;
    }
    size_t semi = text.find(';');
    std::string_view value = text.substr(0, semi);
    text.remove_prefix(semi == std::string_view::npos ? text.size() : semi + 1);
    std::string err;
    if (key == "abi") {
      err = parseInt(key, value, info.abi);
      haveAbi = true;
    } else if (key == "block_m") {
      err = parseInt(key, value, info.blockM);
      haveBlockM = true;
    } else if (key == "block_n") {
      err = parseInt(key, value, info.blockN);
      haveBlockN = true;
    } else if (key == "variant") {
      info.variant = std::string(value);
    } else if (key == "isa") {
      std::optional<CpuClass> isa = parseCpuClass(value);
      if (!isa)
        err = fmt::format("kernel info: isa must be {}, got '{}'",
                          cpuClassNames(), value);
      else
        info.isa = *isa;
      haveIsa = true;
    }
    // Other keys are informational (tools print them).
    if (!err.empty())
      return err;
  }
  if (!haveAbi || !haveBlockM || !haveBlockN || !haveIsa || !haveSpec)
    return fmt::format("kernel info: missing {}",
                       !haveAbi      ? "abi"
                       : !haveBlockM ? "block_m"
                       : !haveBlockN ? "block_n"
                       : !haveIsa    ? "isa"
                                     : "spec (it must be the last key)");
  if (info.blockM < 1 || info.blockN < 1)
    return fmt::format("kernel info: block_m and block_n must be >= 1, got "
                       "{} and {}",
                       info.blockM, info.blockN);
  return {};
}

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
  if (info.variant == "cpu_amx")
    if (std::string err = enableAmx(); !err.empty())
      return fmt::format("kernel {}: {}", name, err);
  out = std::move(kernel);
  return {};
}

CpuKernel::~CpuKernel() {
  if (handle)
    dlclose(handle);
}

} // namespace tilt::detail
