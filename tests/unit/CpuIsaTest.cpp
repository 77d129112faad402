//===- CpuIsaTest.cpp - ISA classes, variant requirements, host view ------===//

#include "tilt/CpuIsa.h"
#include "tilt/TilePolicy.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <set>
#include <string>

namespace {

using namespace tilt;

HasFeature featureSet(std::set<std::string> on) {
  return [on](std::string_view f) { return on.count(std::string(f)) > 0; };
}

TEST(CpuIsa, NamesRoundTripAndClassesAreOrdered) {
  for (CpuClass c : kCpuClasses)
    EXPECT_EQ(parseCpuClass(toString(c)), c);
  EXPECT_FALSE(parseCpuClass("x86_64-amx"));
  EXPECT_EQ(cpuClassNames(),
            "x86-64-v3, x86-64-v4, x86-64-v4-bf16 or x86-64-v4-amx");
  // Each class needs everything the one below it needs.
  for (size_t i = 1; i < std::size(kCpuClasses); ++i) {
    auto lower = cpuClassFeatures(kCpuClasses[i - 1]);
    auto higher = cpuClassFeatures(kCpuClasses[i]);
    ASSERT_GT(higher.size(), lower.size());
    EXPECT_TRUE(std::equal(lower.begin(), lower.end(), higher.begin()));
  }
  EXPECT_EQ(cpuClassLlvmCpu(CpuClass::X86_64_V3), "x86-64-v3");
  EXPECT_EQ(cpuClassLlvmFeatures(CpuClass::X86_64_V4), "");
  EXPECT_EQ(cpuClassLlvmFeatures(CpuClass::X86_64_V4_AMX),
            "+avx512bf16,+amx-tile,+amx-bf16");
}

TEST(CpuIsa, ClassOfAFeatureSet) {
  std::set<std::string> v3{"avx", "avx2", "fma",   "f16c",
                           "bmi", "bmi2", "lzcnt", "movbe"};
  EXPECT_EQ(cpuClassOf(featureSet(v3)), CpuClass::X86_64_V3);
  std::set<std::string> v4 = v3;
  v4.insert({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"});
  EXPECT_EQ(cpuClassOf(featureSet(v4)), CpuClass::X86_64_V4);
  // AMX without AVX512_BF16 is no AMX class: the classes are cumulative.
  std::set<std::string> amxNoBf16 = v4;
  amxNoBf16.insert({"amx-tile", "amx-bf16"});
  EXPECT_EQ(cpuClassOf(featureSet(amxNoBf16)), CpuClass::X86_64_V4);
  std::set<std::string> noFma = v3;
  noFma.erase("fma");
  EXPECT_FALSE(cpuClassOf(featureSet(noFma)));
  EXPECT_EQ(missingFeatures(CpuClass::X86_64_V3, featureSet(noFma)), "fma");
}

TEST(CpuIsa, Bf16InputsGetTheBestDotProductTheClassHas) {
  auto features = [](std::initializer_list<CpuClass> classes) {
    std::set<std::string> out;
    for (CpuClass c : classes)
      for (auto f : cpuClassFeatures(c))
        out.insert(std::string(f));
    return out;
  };
  using C = CpuClass;
  const auto v4 = features({C::X86_64_V3, C::X86_64_V4});
  const auto bf16 = features({C::X86_64_V3, C::X86_64_V4, C::X86_64_V4_BF16});
  const auto amx = features(
      {C::X86_64_V3, C::X86_64_V4, C::X86_64_V4_BF16, C::X86_64_V4_AMX});
  AttentionSpec s;
  s.heads = s.kvHeads = 8;
  s.headDim = 128;
  s.dtype = DType::BF16;
  EXPECT_EQ(defaultCpuVariant(s, featureSet(v4)), KernelVariant::CpuAvx512);
  EXPECT_EQ(defaultCpuVariant(s, featureSet(bf16)),
            KernelVariant::CpuAvx512Bf16);
  EXPECT_EQ(defaultCpuVariant(s, featureSet(amx)), KernelVariant::CpuAmx);
  auto offers = [&](const std::set<std::string> &f) {
    for (const TileConfig &c : cpuSearchSpace(s, featureSet(f)))
      if (c.is(KernelVariant::CpuAvx512Bf16))
        return true;
    return false;
  };
  EXPECT_FALSE(offers(v4)); // portable only: not worth tuning
  EXPECT_TRUE(offers(bf16));
  s.dtype = DType::F32;
  EXPECT_EQ(defaultCpuVariant(s, featureSet(bf16)), KernelVariant::CpuAvx512);
  EXPECT_FALSE(offers(bf16));
}

TEST(CpuIsa, VariantsNeedTheirClassAndRefusalsNameTheMissingFeatures) {
  EXPECT_EQ(variantCpuClass("cpu_avx2"), CpuClass::X86_64_V3);
  EXPECT_EQ(variantCpuClass("cpu_avx512"), CpuClass::X86_64_V4);
  EXPECT_EQ(variantCpuClass("cpu_amx"), CpuClass::X86_64_V4_AMX);
  // (vdpbf16ps where the target has AVX512_BF16, else its portable form.)
  EXPECT_EQ(variantCpuClass("cpu_avx512bf16"), CpuClass::X86_64_V4);
  EXPECT_FALSE(variantCpuClass("gpu_sm80"));
  std::set<std::string> bf16;
  for (auto f : cpuClassFeatures(CpuClass::X86_64_V4_BF16))
    bf16.insert(std::string(f));
  EXPECT_EQ(checkVariantRuns("cpu_avx512", featureSet(bf16), "this CPU"), "");
  EXPECT_EQ(checkVariantRuns("cpu_amx", featureSet(bf16), "this CPU (zen5)"),
            "variant cpu_amx needs x86-64-v4-amx; this CPU (zen5) lacks "
            "amx-tile, amx-bf16");
  EXPECT_EQ(checkVariantRuns("gpu_sm90a", featureSet({}), "x"), "");
}

/// Sets an environment variable for one scope.
struct Env {
  Env(const char *name, const char *value) : name(name) {
    if (const char *old = std::getenv(name))
      saved = old;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~Env() { saved ? setenv(name, saved->c_str(), 1) : unsetenv(name); }
  const char *name;
  std::optional<std::string> saved;
};

TEST(CpuIsa, TheOverrideOnlyLowersTheHostsClass) {
  HostCpu plain;
  {
    Env unset("TILT_CPU_CLASS", nullptr);
    plain = detectHostCpu();
  }
  EXPECT_EQ(plain.error, "");
  EXPECT_EQ(plain.cls, plain.detected);
  if (!plain.detected)
    GTEST_SKIP() << "skipped: this CPU is " << plain.describe()
                 << ", below every class the override could pick";
  {
    Env lower("TILT_CPU_CLASS", "x86-64-v3");
    HostCpu h = detectHostCpu();
    EXPECT_EQ(h.error, "");
    EXPECT_EQ(h.cls, CpuClass::X86_64_V3);
    EXPECT_EQ(h.detected, plain.detected);
    EXPECT_TRUE(h.has("avx2"));
    EXPECT_FALSE(h.has("avx512f")) << "the override hides what it removes";
  }
  {
    Env bad("TILT_CPU_CLASS", "avx2");
    EXPECT_EQ(detectHostCpu().error,
              "TILT_CPU_CLASS must be x86-64-v3, x86-64-v4, x86-64-v4-bf16 "
              "or x86-64-v4-amx, got 'avx2'");
  }
  if (*plain.detected < CpuClass::X86_64_V4_AMX) {
    Env raise("TILT_CPU_CLASS", "x86-64-v4-amx");
    HostCpu h = detectHostCpu();
    EXPECT_NE(h.error.find("TILT_CPU_CLASS=x86-64-v4-amx can only lower this "
                           "CPU's class, which is"),
              std::string::npos)
        << h.error;
  }
}

} // namespace
