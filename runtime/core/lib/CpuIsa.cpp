//===- CpuIsa.cpp - x86-64 ISA classes of CPU kernels ---------------------===//

#include "tilt/CpuIsa.h"
#include "tilt/KernelCompiler.h"

#include <algorithm>
#include <cpuid.h>
#include <cstdlib>
#include <map>

namespace tilt {

namespace {

struct ClassInfo {
  CpuClass cls;
  std::string_view name;
  std::string_view llvmCpu;
  /// What this class adds to the one below it.
  std::vector<std::string_view> adds;
};

const std::vector<ClassInfo> &classTable() {
  static const std::vector<ClassInfo> table = {
      {CpuClass::X86_64_V3,
       "x86-64-v3",
       "x86-64-v3",
       {"avx", "avx2", "fma", "f16c", "bmi", "bmi2", "lzcnt", "movbe"}},
      {CpuClass::X86_64_V4,
       "x86-64-v4",
       "x86-64-v4",
       {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}},
      {CpuClass::X86_64_V4_BF16, "x86-64-v4-bf16", "x86-64-v4", {"avx512bf16"}},
      {CpuClass::X86_64_V4_AMX,
       "x86-64-v4-amx",
       "x86-64-v4",
       {"amx-tile", "amx-bf16"}},
  };
  return table;
}

const ClassInfo &info(CpuClass c) { return classTable()[size_t(c)]; }

/// The features cpuid reports and the OS has enabled (XCR0), by LLVM name.
std::map<std::string_view, bool> cpuidFeatures() {
  std::map<std::string_view, bool> f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d))
    return f;
  const bool osxsave = c >> 27 & 1;
  f["fma"] = c >> 12 & 1;
  f["movbe"] = c >> 22 & 1;
  f["avx"] = c >> 28 & 1;
  f["f16c"] = c >> 29 & 1;
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (unsigned long long)hi << 32 | lo;
  }
  // Register state the OS saves: YMM (bits 1-2), ZMM (5-7), AMX (17-18).
  const bool ymmState = (xcr0 & 0x6) == 0x6;
  const bool zmmState = ymmState && (xcr0 & 0xe0) == 0xe0;
  const bool tileState = (xcr0 & 0x60000) == 0x60000;
  if (!ymmState)
    f["avx"] = f["fma"] = f["f16c"] = false;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f["bmi"] = b >> 3 & 1;
    f["avx2"] = ymmState && (b >> 5 & 1);
    f["bmi2"] = b >> 8 & 1;
    f["avx512f"] = zmmState && (b >> 16 & 1);
    f["avx512dq"] = zmmState && (b >> 17 & 1);
    f["avx512cd"] = zmmState && (b >> 28 & 1);
    f["avx512bw"] = zmmState && (b >> 30 & 1);
    f["avx512vl"] = zmmState && (b >> 31 & 1);
    f["amx-bf16"] = tileState && (d >> 22 & 1);
    f["amx-tile"] = tileState && (d >> 24 & 1);
    const unsigned maxSub = a;
    if (maxSub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
      f["avx512bf16"] = zmmState && (a >> 5 & 1);
  }
  if (__get_cpuid(0x80000001, &a, &b, &c, &d))
    f["lzcnt"] = c >> 5 & 1;
  return f;
}

} // namespace

std::string_view toString(CpuClass c) { return info(c).name; }

std::optional<CpuClass> parseCpuClass(std::string_view s) {
  for (const ClassInfo &i : classTable())
    if (i.name == s)
      return i.cls;
  return std::nullopt;
}

std::string cpuClassNames() {
  std::string out;
  const auto &t = classTable();
  for (size_t i = 0; i < t.size(); ++i)
    out += std::string(i == 0              ? ""
                       : i + 1 == t.size() ? " or "
                                           : ", ") +
           std::string(t[i].name);
  return out;
}

std::vector<std::string_view> cpuClassFeatures(CpuClass c) {
  std::vector<std::string_view> out;
  for (const ClassInfo &i : classTable()) {
    out.insert(out.end(), i.adds.begin(), i.adds.end());
    if (i.cls == c)
      break;
  }
  return out;
}

std::string_view cpuClassLlvmCpu(CpuClass c) { return info(c).llvmCpu; }

std::string cpuClassLlvmFeatures(CpuClass c) {
  // x86-64-v4 names the AVX-512 part; what lies above it is spelled out.
  std::string out;
  for (const ClassInfo &i : classTable()) {
    if (i.cls > CpuClass::X86_64_V4 && i.cls <= c)
      for (std::string_view f : i.adds)
        out += (out.empty() ? "+" : ",+") + std::string(f);
  }
  return out;
}

std::optional<CpuClass> cpuClassOf(const HasFeature &has) {
  std::optional<CpuClass> best;
  for (const ClassInfo &i : classTable()) {
    if (!std::all_of(i.adds.begin(), i.adds.end(), has))
      break;
    best = i.cls;
  }
  return best;
}

std::string missingFeatures(CpuClass c, const HasFeature &has) {
  std::string out;
  for (std::string_view f : cpuClassFeatures(c))
    if (!has(f))
      out += (out.empty() ? "" : ", ") + std::string(f);
  return out;
}

std::optional<CpuClass> variantCpuClass(std::string_view variant) {
  switch (parseKernelVariant(variant).value_or(KernelVariant::GpuSm80)) {
  case KernelVariant::CpuAvx2:
  case KernelVariant::CpuDecodeAvx2:
  case KernelVariant::CpuBwdAvx2:
    return CpuClass::X86_64_V3;
  case KernelVariant::CpuAvx512:
  case KernelVariant::CpuAvx512Bf16: // (portable dot products below v4-bf16)
  case KernelVariant::CpuDecodeAvx512:
  case KernelVariant::CpuBwdAvx512:
  case KernelVariant::CpuBwdAvx512Bf16: // (portable below v4-bf16)
    return CpuClass::X86_64_V4;
  case KernelVariant::CpuAmx:
    return CpuClass::X86_64_V4_AMX;
  default:
    return std::nullopt; // GPU variants and unknown names
  }
}

std::string checkVariantRuns(std::string_view variant, const HasFeature &has,
                             std::string_view target) {
  std::optional<CpuClass> need = variantCpuClass(variant);
  if (!need)
    return {};
  std::string missing = missingFeatures(*need, has);
  if (missing.empty())
    return {};
  return "variant " + std::string(variant) + " needs " +
         std::string(toString(*need)) + "; " + std::string(target) + " lacks " +
         missing;
}

std::string HostCpu::describe() const {
  if (!cls)
    return "below x86-64-v3 (lacks " +
           missingFeatures(CpuClass::X86_64_V3,
                           [&](std::string_view f) { return has(f); }) +
           ")";
  std::string s(toString(*cls));
  if (detected && *detected != *cls)
    s += " (TILT_CPU_CLASS; detected " + std::string(toString(*detected)) + ")";
  return s;
}

bool HostCpu::has(std::string_view feature) const {
  if (cls) {
    auto f = cpuClassFeatures(*cls);
    return std::find(f.begin(), f.end(), feature) != f.end();
  }
  static const std::map<std::string_view, bool> raw = cpuidFeatures();
  auto it = raw.find(feature);
  return it != raw.end() && it->second;
}

HostCpu detectHostCpu() {
  static const std::map<std::string_view, bool> raw = cpuidFeatures();
  HostCpu host;
  host.detected = cpuClassOf([&](std::string_view f) {
    auto it = raw.find(f);
    return it != raw.end() && it->second;
  });
  host.cls = host.detected;
  const char *env = std::getenv("TILT_CPU_CLASS");
  if (!env || !*env)
    return host;
  std::optional<CpuClass> want = parseCpuClass(env);
  if (!want) {
    host.error =
        "TILT_CPU_CLASS must be " + cpuClassNames() + ", got '" + env + "'";
    return host;
  }
  if (!host.detected || *want > *host.detected) {
    host.error = "TILT_CPU_CLASS=" + std::string(env) +
                 " can only lower this CPU's class, which is " +
                 host.describe();
    return host;
  }
  host.cls = want;
  return host;
}

const HostCpu &hostCpu() {
  static const HostCpu host = detectHostCpu();
  return host;
}

} // namespace tilt
