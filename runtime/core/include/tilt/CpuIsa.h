//===- CpuIsa.h - x86-64 ISA classes of CPU kernels -------------*- C++ -*-===//
//
// A CPU kernel is compiled for an ISA class, the feature set its code may
// use, never for one CPU model: a kernel (and a bundle of them) built for a
// class runs on every CPU of that class or above, whichever machine built
// it. The classes are totally ordered:
//
//   x86-64-v3        AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE (Haswell, Zen 1+)
//   x86-64-v4        + AVX-512 F/BW/CD/DQ/VL (Skylake-X, Ice Lake, Zen 4+)
//   x86-64-v4-bf16   + AVX512_BF16 (Cooper Lake, Zen 4/5)
//   x86-64-v4-amx    + AMX-TILE, AMX-BF16 (Sapphire/Granite Rapids)
//
// Each kernel variant needs a class (cpu_avx2: v3, cpu_avx512: v4, cpu_amx:
// v4-amx). Compile requests, kernel loads and bundle lookups are all checked
// against a class here, so that no code the CPU cannot execute is ever
// generated or run. The host's class comes from cpuid and the OS's enabled
// register state, and $TILT_CPU_CLASS may lower it (never raise it): with
// TILT_CPU_CLASS=x86-64-v3 the compiler and the runtime treat an AMX machine
// as an AVX2 one. No LLVM dependency: the runtime uses this too.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_CPUISA_H
#define TILT_CPUISA_H

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tilt {

enum class CpuClass { X86_64_V3, X86_64_V4, X86_64_V4_BF16, X86_64_V4_AMX };
inline constexpr CpuClass kCpuClasses[] = {
    CpuClass::X86_64_V3, CpuClass::X86_64_V4, CpuClass::X86_64_V4_BF16,
    CpuClass::X86_64_V4_AMX};

std::string_view toString(CpuClass c);
std::optional<CpuClass> parseCpuClass(std::string_view s);
/// "x86-64-v3, x86-64-v4, x86-64-v4-bf16 or x86-64-v4-amx", for messages.
std::string cpuClassNames();

/// Every LLVM feature name (no '+') a class needs, its own and those of the
/// classes below it.
std::vector<std::string_view> cpuClassFeatures(CpuClass c);
/// The LLVM CPU name and feature string that generate code for exactly the
/// class: "x86-64-v3" / "x86-64-v4", plus "+avx512bf16,..." above v4.
std::string_view cpuClassLlvmCpu(CpuClass c);
std::string cpuClassLlvmFeatures(CpuClass c);

/// Answers whether a CPU has one LLVM feature ("avx512f", "amx-bf16").
using HasFeature = std::function<bool(std::string_view)>;

/// The best class whose features `has` all reports, or none (below v3).
std::optional<CpuClass> cpuClassOf(const HasFeature &has);
/// The features of `c` that `has` lacks, comma-separated ("" when none).
std::string missingFeatures(CpuClass c, const HasFeature &has);

/// The class a CPU kernel variant needs: cpu_avx2 -> x86-64-v3, cpu_avx512
/// -> x86-64-v4, cpu_amx -> x86-64-v4-amx; none for other (GPU) variants.
std::optional<CpuClass> variantCpuClass(std::string_view variant);

/// "" when a CPU with features `has` runs `variant`, else one line naming
/// the variant, the class it needs, `target` and the features it lacks.
std::string checkVariantRuns(std::string_view variant, const HasFeature &has,
                             std::string_view target);

/// What this machine executes.
struct HostCpu {
  /// The class, after $TILT_CPU_CLASS; none below x86-64-v3 (no CPU kernel
  /// runs then).
  std::optional<CpuClass> cls;
  /// The class cpuid and the OS allow, before the override.
  std::optional<CpuClass> detected;
  /// A malformed $TILT_CPU_CLASS or one above the detected class: every
  /// CPU compile and run reports it, nothing runs until it is fixed.
  std::string error;
  /// "x86-64-v3", "x86-64-v3 (TILT_CPU_CLASS; detected x86-64-v4-amx)" or
  /// "below x86-64-v3 (lacks avx2)", for messages.
  std::string describe() const;
  /// Whether the host (as restricted by the override) has an LLVM feature
  /// of the classes: one of cpuClassFeatures(X86_64_V4_AMX).
  bool has(std::string_view feature) const;
};
/// Read once per process (cpuid, xgetbv, $TILT_CPU_CLASS).
const HostCpu &hostCpu();
/// The same, computed now: tests change $TILT_CPU_CLASS between calls.
HostCpu detectHostCpu();

} // namespace tilt

#endif // TILT_CPUISA_H
