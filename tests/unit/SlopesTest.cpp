//===- SlopesTest.cpp - Standard ALiBi slopes ------------------------------===//

#include "tilt/Slopes.h"
#include "tilt/Spec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace {

// The ALiBi paper's construction, written independently of Slopes.cpp: a
// geometric sequence starting at 2^(-maxBias/n) for a power of two n, and for
// other n the closest power of two's list followed by every other slope of
// twice that power.
std::vector<double> paperSlopes(int n, double maxBias) {
  auto powerOfTwo = [maxBias](int m) {
    std::vector<double> out;
    double start = std::pow(2.0, -maxBias / m);
    for (int i = 0; i < m; ++i)
      out.push_back(start * std::pow(start, i));
    return out;
  };
  int closest = 1 << static_cast<int>(std::floor(std::log2(n)));
  if (closest == n)
    return powerOfTwo(n);
  std::vector<double> out = powerOfTwo(closest);
  std::vector<double> twice = paperSlopes(2 * closest, maxBias);
  for (int i = 0; static_cast<int>(out.size()) < n; i += 2)
    out.push_back(twice[i]);
  return out;
}

// MPT's construction (ALIBI.md): 2^ceil(log2 H) slopes 1/2^(k*maxBias/n'),
// then for non-powers of two the odd-indexed ones before the even-indexed
// ones, truncated to H.
std::vector<double> mptSlopes(int n, double maxBias) {
  int np = 1 << static_cast<int>(std::ceil(std::log2(n)));
  std::vector<double> s;
  for (int k = 1; k <= np; ++k)
    s.push_back(1.0 / std::pow(2.0, k * maxBias / np));
  if (np == n)
    return s;
  std::vector<double> out;
  for (int i = 1; i < np; i += 2)
    out.push_back(s[i]);
  for (int i = 0; i < np; i += 2)
    out.push_back(s[i]);
  out.resize(n);
  return out;
}

class StandardSlopes
    : public ::testing::TestWithParam<std::tuple<int, double>> {};

TEST_P(StandardSlopes, MatchThePapersConstruction) {
  auto [heads, maxBias] = GetParam();
  std::vector<float> got = tilt::standardSlopes(heads, maxBias);
  std::vector<double> want = paperSlopes(heads, maxBias);
  ASSERT_EQ(got.size(), want.size());
  for (int h = 0; h < heads; ++h)
    EXPECT_FLOAT_EQ(got[h], static_cast<float>(want[h])) << "head " << h;
}

INSTANTIATE_TEST_SUITE_P(
    Heads, StandardSlopes,
    ::testing::Combine(::testing::Values(1, 2, 8, 12, 16, 40, 56, 64, 71, 112,
                                         128),
                       ::testing::Values(8.0, 4.0)));

TEST(Slopes, AlibiMdExamples) {
  std::vector<float> h8 = tilt::standardSlopes(8, 8.0);
  for (int k = 0; k < 8; ++k)
    EXPECT_EQ(h8[k], std::ldexp(1.0f, -(k + 1)));
  std::vector<float> h12 = tilt::standardSlopes(12, 8.0);
  for (int k = 0; k < 8; ++k)
    EXPECT_EQ(h12[k], std::ldexp(1.0f, -(k + 1)));
  const double tail[] = {-0.5, -1.5, -2.5, -3.5};
  for (int j = 0; j < 4; ++j)
    EXPECT_EQ(h12[8 + j], static_cast<float>(std::exp2(tail[j])));
}

TEST(Slopes, MptConstructionIsTheSameList) {
  for (double maxBias : {8.0, 4.0})
    for (int heads = 1; heads <= 256; ++heads) {
      std::vector<float> got = tilt::standardSlopes(heads, maxBias);
      std::vector<double> mpt = mptSlopes(heads, maxBias);
      for (int h = 0; h < heads; ++h)
        ASSERT_FLOAT_EQ(got[h], static_cast<float>(mpt[h]))
            << "H=" << heads << " head " << h << " max_bias " << maxBias;
    }
}

TEST(Slopes, HeadOffsetTakesTheModelsSlopes) {
  std::vector<float> all = tilt::standardSlopes(40, 8.0);
  for (int rank = 0; rank < 4; ++rank) {
    std::vector<float> local = tilt::standardSlopes(40, 8.0, rank * 10, 10);
    ASSERT_EQ(local.size(), 10u);
    for (int h = 0; h < 10; ++h)
      EXPECT_EQ(local[h], all[rank * 10 + h]);
  }
  // Never the slopes of the local head count.
  EXPECT_NE(tilt::standardSlopes(40, 8.0, 0, 10)[0],
            tilt::standardSlopes(10, 8.0)[0]);

  tilt::AttentionSpec spec;
  spec.heads = 8;
  spec.bias = tilt::BiasKind::Alibi;
  spec.headOffset = 24;
  spec.totalHeads = 32;
  std::vector<float> fromSpec = tilt::standardSlopes(spec);
  std::vector<float> model = tilt::standardSlopes(32, 8.0);
  EXPECT_EQ(fromSpec, std::vector<float>(model.begin() + 24, model.end()));
}

} // namespace
