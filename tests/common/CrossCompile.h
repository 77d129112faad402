//===- CrossCompile.h - Variants this CPU cannot run ------------*- C++ -*-===//
//
// A test of a kernel variant whose ISA class this CPU lacks still compiles
// the kernel (cross-compiled for that class), checks its machine code uses
// the class's instructions and, given a runtime, that the runtime refuses to
// load it here; only the run is skipped, with the reason.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_CROSSCOMPILE_H
#define TILT_TESTS_COMMON_CROSSCOMPILE_H

#include "tilt/Compiler/Compiler.h"
#include "tilt/CpuIsa.h"
#include "tilt/Runtime.h"

#include <gtest/gtest.h>

#include <string>

namespace tilt::test {

/// `config`'s kernel for `spec` compiled for class `cls`, as assembly (a
/// failure is reported to gtest).
inline std::string crossCompiledAssembly(const AttentionSpec &spec,
                                         const TileConfig &config,
                                         CpuClass cls) {
  CompilerOptions cross;
  cross.machine = CpuMachine::forClass(cls);
  Compiler crossCompiler(cross);
  std::string text;
  EXPECT_EQ(
      crossCompiler.compileTo(spec, config, Target::CPU, Emit::Assembly, text),
      "");
  return text;
}

/// "" when this CPU runs `config`'s variant (or it names none); else the
/// checks above, failures reported to gtest, and the reason to skip the run.
/// `runtime`: also expect it to refuse the kernel (null: not checked).
inline std::string crossCompiledSkipReason(const AttentionSpec &spec,
                                           const TileConfig &config,
                                           Runtime *runtime) {
  std::optional<CpuClass> need = variantCpuClass(config.variant);
  const HostCpu &host = hostCpu();
  if (!need || (host.cls && *host.cls >= *need))
    return {};
  const std::string text = crossCompiledAssembly(spec, config, *need);
  const char *marker = *need == CpuClass::X86_64_V4_AMX ? "tdpbf16ps"
                       : *need >= CpuClass::X86_64_V4   ? "%zmm"
                                                        : "%ymm";
  EXPECT_NE(text.find(marker), std::string::npos)
      << config.variant << " kernel without " << marker;
  std::string reason =
      "skipped: this CPU (" + host.describe() + ") lacks " +
      missingFeatures(*need, [&](std::string_view f) { return host.has(f); }) +
      "; the " + config.variant + " kernel was cross-compiled for " +
      std::string(toString(*need)) + " (" + marker + " present)";
  if (runtime) {
    std::string refused = runtime->prepare(spec, Target::CPU, config);
    EXPECT_NE(refused.find("variant " + config.variant + " needs"),
              std::string::npos)
        << refused;
    reason += " and refused here: " + refused;
  }
  return reason;
}

/// cpu_avx512bf16 and cpu_bwd_avx512bf16 run on any x86-64-v4 CPU, with
/// vdpbf16ps only where the CPU has AVX512_BF16 (elsewhere their portable
/// lowering, the same arithmetic). "" where this CPU has it; else the
/// kernel cross-compiled for x86-64-v4-bf16, its machine code checked for
/// vdpbf16ps, and a note that the native instruction was not run here.
inline std::string nativeBf16DotNote(const AttentionSpec &spec,
                                     const TileConfig &config) {
  const HostCpu &host = hostCpu();
  if (!(config.is(KernelVariant::CpuAvx512Bf16) ||
        config.is(KernelVariant::CpuBwdAvx512Bf16)) ||
      host.has("avx512bf16"))
    return {};
  const std::string text =
      crossCompiledAssembly(spec, config, CpuClass::X86_64_V4_BF16);
  EXPECT_NE(text.find("vdpbf16ps"), std::string::npos)
      << config.variant << " kernel for x86-64-v4-bf16 without vdpbf16ps";
  return "vdpbf16ps not run: this CPU (" + host.describe() +
         ") lacks avx512bf16; cross-compiled for x86-64-v4-bf16 (vdpbf16ps "
         "present), ran the portable dot products (two f32 FMAs a pair)";
}

} // namespace tilt::test

#endif // TILT_TESTS_COMMON_CROSSCOMPILE_H
