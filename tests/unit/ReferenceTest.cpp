//===- ReferenceTest.cpp - The float64 reference on hand-computed cases ----===//
//
// Every case puts the signal in dimension 0 of D = 16 (the rest is zero), so
// dot products are products of scalars and the expected values can be written
// out by hand from ALIBI.md's formulas.
//
//===----------------------------------------------------------------------===//

#include "tilt/Half.h"
#include "tilt/Reference.h"
#include "tilt/Slopes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr int64_t D = 16;
const double inf = std::numeric_limits<double>::infinity();

/// Rows of a [rows, D] block with `values` in column 0.
std::vector<float> rows(std::initializer_list<double> values) {
  std::vector<float> out(values.size() * D, 0.0f);
  int64_t r = 0;
  for (double x : values)
    out[r++ * D] = static_cast<float>(x);
  return out;
}

tilt::AttentionSpec spec1(tilt::BiasKind bias) {
  tilt::AttentionSpec s;
  s.heads = s.kvHeads = 1;
  s.headDim = D;
  s.scale = 1.0;
  s.bias = bias;
  if (bias != tilt::BiasKind::None)
    s.slopes = tilt::SlopeSource::Custom;
  return s;
}

/// softmax-weighted average of `v` over scores `s`, and log-sum-exp.
std::pair<double, double> expected(std::vector<double> s,
                                   std::vector<double> v) {
  double sum = 0, acc = 0;
  for (size_t j = 0; j < s.size(); ++j) {
    sum += std::exp(s[j]);
    acc += std::exp(s[j]) * v[j];
  }
  return {acc / sum, std::log(sum)};
}

struct RefRun {
  tilt::reference::Outputs out;
  double o(int64_t row) const { return out.o[row * D]; }
  double lse(int64_t row) const { return out.lse[row]; }
};

RefRun run(const tilt::AttentionSpec &s, tilt::Extents e,
        const std::vector<float> &q, const std::vector<float> &k,
        const std::vector<float> &v, const float *slopes = nullptr,
        const uint8_t *kpm = nullptr) {
  tilt::reference::Inputs in;
  in.q = q.data();
  in.k = k.data();
  in.v = v.data();
  in.slopes = slopes;
  in.keyPaddingMask = kpm;
  return {tilt::reference::attention(s, e, in)};
}

const std::vector<float> kQ = rows({1, 1}), kK = rows({1, 2}),
                         kV = rows({10, 20});
const float kHalf = 0.5f;

TEST(Reference, RelativeAlibi) {
  RefRun r = run(spec1(tilt::BiasKind::Alibi), {1, 2, 2}, kQ, kK, kV, &kHalf);
  // Row 0 (i' = 0): s = [1 + 0, 2 + 0.5]; row 1 (i' = 1): [1 - 0.5, 2 + 0].
  auto [o0, l0] = expected({1.0, 2.5}, {10, 20});
  auto [o1, l1] = expected({0.5, 2.0}, {10, 20});
  EXPECT_NEAR(r.o(0), o0, 1e-12);
  EXPECT_NEAR(r.lse(0), l0, 1e-12);
  EXPECT_NEAR(r.o(1), o1, 1e-12);
  EXPECT_NEAR(r.lse(1), l1, 1e-12);
  // Only column 0 carries signal.
  for (int64_t d = 1; d < D; ++d)
    EXPECT_EQ(r.out.o[d], 0.0);
}

TEST(Reference, SymmetricAlibi) {
  RefRun r = run(spec1(tilt::BiasKind::AlibiSymmetric), {1, 2, 2}, kQ, kK, kV,
              &kHalf);
  auto [o0, l0] = expected({1.0, 2.0 - 0.5}, {10, 20});
  auto [o1, l1] = expected({1.0 - 0.5, 2.0}, {10, 20});
  EXPECT_NEAR(r.o(0), o0, 1e-12);
  EXPECT_NEAR(r.lse(0), l0, 1e-12);
  EXPECT_NEAR(r.o(1), o1, 1e-12);
  EXPECT_NEAR(r.lse(1), l1, 1e-12);
}

TEST(Reference, CausalMask) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::Alibi);
  s.causal = true;
  RefRun r = run(s, {1, 2, 2}, kQ, kK, kV, &kHalf);
  EXPECT_NEAR(r.o(0), 10.0, 1e-12); // only key 0 is visible
  EXPECT_NEAR(r.lse(0), 1.0, 1e-12);
  auto [o1, l1] = expected({0.5, 2.0}, {10, 20});
  EXPECT_NEAR(r.o(1), o1, 1e-12);
  EXPECT_NEAR(r.lse(1), l1, 1e-12);
}

TEST(Reference, PositionsFromPaddingMask) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::AlibiPositions);
  s.keyPaddingMask = true;
  const uint8_t kpm[] = {1, 0, 1};
  // pos = cumsum([1,0,1]) - 1 = [0, 0, 1]; key 1 is padded.
  RefRun r = run(s, {1, 1, 3}, rows({1}), rows({1, 5, 2}), rows({10, 99, 20}),
              &kHalf, kpm);
  auto [o, l] = expected({1.0 + 0.0, 2.0 + 0.5}, {10, 20});
  EXPECT_NEAR(r.o(0), o, 1e-12);
  EXPECT_NEAR(r.lse(0), l, 1e-12);
}

TEST(Reference, BottomRightAlignmentAndWindow) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::Alibi);
  s.causal = true;
  // Sq = 1, Sk = 3: the single row sits at i' = 2 and sees every key.
  std::vector<float> k = rows({1, 2, 3}), v = rows({10, 20, 30});
  RefRun all = run(s, {1, 1, 3}, rows({1}), k, v, &kHalf);
  auto [o, l] = expected({1 - 1.0, 2 - 0.5, 3 + 0.0}, {10, 20, 30});
  EXPECT_NEAR(all.o(0), o, 1e-12);
  EXPECT_NEAR(all.lse(0), l, 1e-12);
  // A window of 2 keeps keys with i' - j < 2: j = 1, 2.
  s.window = 2;
  RefRun win = run(s, {1, 1, 3}, rows({1}), k, v, &kHalf);
  auto [ow, lw] = expected({2 - 0.5, 3 + 0.0}, {20, 30});
  EXPECT_NEAR(win.o(0), ow, 1e-12);
  EXPECT_NEAR(win.lse(0), lw, 1e-12);
}

TEST(Reference, FullyMaskedRowsAreZeroWithMinusInfLse) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::Alibi);
  s.causal = true;
  // Sq = 3, Sk = 1: rows 0 and 1 sit at i' = -2, -1 and see nothing.
  RefRun r = run(s, {1, 3, 1}, rows({1, 1, 1}), rows({1}), rows({10}), &kHalf);
  for (int64_t row = 0; row < 2; ++row) {
    for (int64_t d = 0; d < D; ++d)
      EXPECT_EQ(r.out.o[row * D + d], 0.0);
    EXPECT_EQ(r.lse(row), -inf);
  }
  EXPECT_NEAR(r.o(2), 10.0, 1e-12);
  EXPECT_NEAR(r.lse(2), 1.0, 1e-12);
  // Every key padded: the same, never NaN.
  tilt::AttentionSpec p = spec1(tilt::BiasKind::None);
  p.keyPaddingMask = true;
  const uint8_t none[] = {0, 0};
  RefRun q = run(p, {1, 2, 2}, kQ, kK, kV, nullptr, none);
  EXPECT_EQ(q.o(0), 0.0);
  EXPECT_EQ(q.lse(1), -inf);
}

TEST(Reference, GroupedQueryHeadsShareKvAndUseTheirOwnSlopes) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::Alibi);
  s.heads = 2; // Hkv = 1: both heads read kv head 0
  const float slopes[] = {0.5f, 0.25f};
  std::vector<float> q = rows({1, 1, 1, 1}); // [1, 2 heads, 2 rows, D]
  RefRun r = run(s, {1, 2, 2}, q, kK, kV, slopes);
  auto [h0, l0] = expected({1.0, 2.5}, {10, 20});
  auto [h1, l1] = expected({1.0, 2.25}, {10, 20});
  EXPECT_NEAR(r.o(0), h0, 1e-12);
  EXPECT_NEAR(r.o(2), h1, 1e-12); // head 1, row 0
  EXPECT_NEAR(r.lse(0), l0, 1e-12);
  EXPECT_NEAR(r.lse(2), l1, 1e-12);
}

TEST(Reference, CustomSlopesPerBatch) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::Alibi);
  const float slopes[] = {0.5f, 1.0f}; // [B = 2, H = 1]
  std::vector<float> q = rows({1, 1}), k = rows({1, 2, 1, 2}),
                     v = rows({10, 20, 10, 20});
  tilt::reference::Inputs in;
  in.q = q.data();
  in.k = k.data();
  in.v = v.data();
  in.slopes = slopes;
  in.slopesPerBatch = true;
  auto out = tilt::reference::attention(s, {2, 1, 2}, in);
  // Sq = 1 < Sk = 2: the row sits at i' = 1.
  EXPECT_NEAR(out.o[0], expected({1 - 0.5, 2.0}, {10, 20}).first, 1e-12);
  EXPECT_NEAR(out.o[D], expected({1 - 1.0, 2.0}, {10, 20}).first, 1e-12);
}

TEST(Reference, StandardSlopesWithHeadOffset) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::Alibi);
  s.slopes = tilt::SlopeSource::Standard;
  s.headOffset = 3;
  s.totalHeads = 8; // head 3 of 8: m = 2^-4
  tilt::reference::Inputs in;
  EXPECT_EQ(tilt::reference::slopeFor(s, in, 0, 0), 1.0f / 16);
  RefRun r = run(s, {1, 2, 2}, kQ, kK, kV);
  EXPECT_NEAR(r.o(0), expected({1.0, 2.0 + 1.0 / 16}, {10, 20}).first, 1e-12);
}

TEST(Reference, DefaultScaleIsInverseSqrtHeadDim) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::None);
  s.scale.reset();
  RefRun r = run(s, {1, 2, 2}, kQ, kK, kV);
  EXPECT_NEAR(r.o(0), expected({0.25, 0.5}, {10, 20}).first, 1e-12);
}

TEST(Reference, VarlenMatchesEachSequenceAlone) {
  tilt::AttentionSpec s = spec1(tilt::BiasKind::Alibi);
  s.causal = true;
  // Sequence 0: Sq = 2, Sk = 2; sequence 1: Sq = 1, Sk = 3. Packed [T, 1, D].
  std::vector<float> q = rows({1, 1, 2}), k = rows({1, 2, 3, 1, 2}),
                     v = rows({10, 20, 5, 6, 7});
  const int32_t cuQ[] = {0, 2, 3}, cuK[] = {0, 2, 5};
  tilt::AttentionSpec packed = s;
  packed.varlen = true;
  tilt::reference::Inputs in;
  in.q = q.data();
  in.k = k.data();
  in.v = v.data();
  in.slopes = &kHalf;
  in.cuSeqlensQ = cuQ;
  in.cuSeqlensK = cuK;
  auto out = tilt::reference::attention(packed, {2, 3, 5}, in);

  RefRun first = run(s, {1, 2, 2}, rows({1, 1}), rows({1, 2}), rows({10, 20}),
                  &kHalf);
  RefRun second = run(s, {1, 1, 3}, rows({2}), rows({3, 1, 2}), rows({5, 6, 7}),
                   &kHalf);
  EXPECT_NEAR(out.o[0], first.o(0), 1e-12);
  EXPECT_NEAR(out.o[D], first.o(1), 1e-12);
  EXPECT_NEAR(out.o[2 * D], second.o(0), 1e-12);
  // lse is [H, totalQ].
  EXPECT_NEAR(out.lse[1], first.lse(1), 1e-12);
  EXPECT_NEAR(out.lse[2], second.lse(0), 1e-12);
}

//===----------------------------------------------------------------------===//
// The naive same-dtype yardstick
//===----------------------------------------------------------------------===//

/// Three query rows over two keys with ALiBi, causal: row 0 sees no key.
struct NaiveCase {
  tilt::AttentionSpec spec = spec1(tilt::BiasKind::Alibi);
  std::vector<float> q = rows({1, 1, 3}), k = rows({1, 2}), v = rows({10, 20});
  tilt::reference::Inputs in;
  explicit NaiveCase(tilt::DType dtype) {
    spec.dtype = dtype;
    spec.causal = true;
    in.q = q.data();
    in.k = k.data();
    in.v = v.data();
    in.slopes = &kHalf;
  }
};

TEST(NaiveSameDtype, F32FollowsTheReference) {
  NaiveCase c(tilt::DType::F32);
  const tilt::Extents e{1, 3, 2};
  auto ref = tilt::reference::attention(c.spec, e, c.in);
  std::vector<double> naive = tilt::reference::naiveSameDtype(c.spec, e, c.in);
  ASSERT_EQ(naive.size(), ref.o.size());
  EXPECT_EQ(naive[0], 0.0);
  for (size_t i = 0; i < naive.size(); ++i)
    EXPECT_NEAR(naive[i], ref.o[i], 1e-5) << i;
}

TEST(NaiveSameDtype, Bf16OutputsAreBf16WithARoundingSizedError) {
  NaiveCase c(tilt::DType::BF16);
  tilt::Extents e{1, 3, 2};
  auto ref = tilt::reference::attention(c.spec, e, c.in);
  std::vector<double> naive = tilt::reference::naiveSameDtype(c.spec, e, c.in);
  double err = 0;
  for (size_t i = 0; i < naive.size(); ++i) {
    EXPECT_EQ(naive[i], tilt::roundTo(tilt::DType::BF16, float(naive[i])));
    err = std::max(err, std::abs(naive[i] - ref.o[i]));
  }
  // bf16 keeps 8 bits: outputs between 10 and 20 are off by up to ~0.1.
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 0.25);
}

TEST(NaiveSameDtype, ErrorBoundFollowsAlibiMd) {
  EXPECT_EQ(tilt::reference::errorBound(tilt::DType::F32, 0.5), 1e-4);
  EXPECT_EQ(tilt::reference::errorBound(tilt::DType::F16, 0.25), 0.5 + 1e-6);
  EXPECT_EQ(tilt::reference::errorBound(tilt::DType::BF16, 0.0), 1e-6);
}

} // namespace

//===----------------------------------------------------------------------===//
// Gradients: the float64 backward against central finite differences of
// L = sum(dO * o), for every bias form, GQA, masks and [B, H] slopes.
//===----------------------------------------------------------------------===//

namespace {

struct Problem {
  tilt::AttentionSpec spec;
  tilt::Extents ext{2, 5, 7};
  std::vector<float> q, k, v, slopes, dO;
  std::vector<uint8_t> kpm;

  tilt::reference::Inputs inputs() const {
    tilt::reference::Inputs in;
    in.q = q.data();
    in.k = k.data();
    in.v = v.data();
    in.slopes = slopes.empty() ? nullptr : slopes.data();
    in.slopesPerBatch = slopes.size() > size_t(spec.heads);
    in.keyPaddingMask = kpm.empty() ? nullptr : kpm.data();
    return in;
  }
  /// L = sum(dO * o) in float64.
  double loss() const {
    auto out = tilt::reference::attention(spec, ext, inputs());
    double l = 0;
    for (size_t i = 0; i < out.o.size(); ++i)
      l += double(dO[i]) * out.o[i];
    return l;
  }
};

Problem make(tilt::BiasKind bias, bool causal, bool perBatch, bool mask) {
  Problem p;
  p.spec.heads = 4;
  p.spec.kvHeads = 2;
  p.spec.headDim = D;
  p.spec.bias = bias;
  p.spec.causal = causal;
  p.spec.window = causal ? std::optional<int64_t>(4) : std::nullopt;
  p.spec.keyPaddingMask = mask;
  if (bias != tilt::BiasKind::None)
    p.spec.slopes = tilt::SlopeSource::Custom;
  const tilt::Extents &e = p.ext;
  uint32_t state = 12345;
  auto uniform = [&] {
    state = state * 1664525u + 1013904223u;
    return float(state >> 8) / float(1 << 24) * 2.0f - 1.0f;
  };
  auto fill = [&](std::vector<float> &t, int64_t n) {
    t.resize(n);
    for (float &x : t)
      x = uniform();
  };
  fill(p.q, e.batch * 4 * e.seqQ * D);
  fill(p.k, e.batch * 2 * e.seqK * D);
  fill(p.v, e.batch * 2 * e.seqK * D);
  fill(p.dO, e.batch * 4 * e.seqQ * D);
  if (bias != tilt::BiasKind::None) {
    fill(p.slopes, perBatch ? e.batch * 4 : 4);
    for (float &m : p.slopes)
      m = 0.3f + 0.5f * m; // positive and negative-free slopes
  }
  if (mask) {
    p.kpm.assign(e.batch * e.seqK, 1);
    p.kpm[1] = p.kpm[e.seqK + 4] = p.kpm[e.seqK + 5] = 0;
  }
  return p;
}

/// Central difference of the loss in one float input.
double numeric(Problem &p, float &x) {
  const float h = 1.0f / 512; // exact in f32, so x +- h is exact too
  const float saved = x;
  x = saved + h;
  const double up = p.loss();
  x = saved - h;
  const double down = p.loss();
  x = saved;
  return (up - down) / (2.0 * h);
}

void checkAgainstFiniteDifferences(Problem p) {
  auto g = tilt::reference::attentionBackward(p.spec, p.ext, p.inputs(),
                                              p.dO.data());
  ASSERT_EQ(g.dq.size(), p.q.size());
  ASSERT_EQ(g.dk.size(), p.k.size());
  ASSERT_EQ(g.dslopes.size(), p.slopes.size());
  // Central differences are exact to O(h^2 * L''') ~ 1e-6 here.
  const double tol = 2e-4;
  double largest = 0;
  for (size_t i = 0; i < p.q.size(); i += 7) {
    EXPECT_NEAR(g.dq[i], numeric(p, p.q[i]), tol) << "dq " << i;
    largest = std::max(largest, std::abs(g.dq[i]));
  }
  for (size_t i = 0; i < p.k.size(); i += 5) {
    EXPECT_NEAR(g.dk[i], numeric(p, p.k[i]), tol) << "dk " << i;
    EXPECT_NEAR(g.dv[i], numeric(p, p.v[i]), tol) << "dv " << i;
  }
  for (size_t i = 0; i < p.slopes.size(); ++i) {
    EXPECT_NEAR(g.dslopes[i], numeric(p, p.slopes[i]), tol) << "dslopes " << i;
    largest = std::max(largest, std::abs(g.dslopes[i]));
  }
  // The comparisons above must have had something to compare.
  EXPECT_GT(largest, 1e-2);
}

TEST(ReferenceGradients, AlibiCausalWindowGqaMatchesFiniteDifferences) {
  checkAgainstFiniteDifferences(
      make(tilt::BiasKind::Alibi, true, false, false));
}
TEST(ReferenceGradients, SymmetricPerBatchSlopesMatchFiniteDifferences) {
  checkAgainstFiniteDifferences(
      make(tilt::BiasKind::AlibiSymmetric, false, true, false));
}
TEST(ReferenceGradients, PositionsFormMatchesFiniteDifferences) {
  checkAgainstFiniteDifferences(
      make(tilt::BiasKind::AlibiPositions, false, true, true));
}
TEST(ReferenceGradients, NoBiasWithPaddingMatchesFiniteDifferences) {
  checkAgainstFiniteDifferences(make(tilt::BiasKind::None, true, false, true));
}

TEST(ReferenceGradients, FullyMaskedRowsContributeNothing) {
  // Causal with Sq > Sk: the first Sq - Sk rows see no key.
  Problem p = make(tilt::BiasKind::Alibi, true, false, false);
  p.ext = {2, 9, 7};
  p.spec.window.reset();
  p.q.resize(p.ext.batch * 4 * p.ext.seqQ * D, 0.5f);
  p.dO.resize(p.q.size(), 1.0f);
  auto g = tilt::reference::attentionBackward(p.spec, p.ext, p.inputs(),
                                              p.dO.data());
  for (int64_t row = 0; row < 2; ++row)
    for (int64_t d = 0; d < D; ++d)
      EXPECT_EQ(g.dq[row * D + d], 0.0);
  checkAgainstFiniteDifferences(p);
}

TEST(ReferenceGradients, NaiveSameDtypeIsCloseAndBoundFollowsAlibiMd) {
  Problem p = make(tilt::BiasKind::Alibi, true, false, false);
  p.spec.dtype = tilt::DType::BF16;
  for (auto *t : {&p.q, &p.k, &p.v})
    for (float &x : *t)
      x = tilt::roundTo(tilt::DType::BF16, x);
  auto exact = tilt::reference::attentionBackward(p.spec, p.ext, p.inputs(),
                                                  p.dO.data());
  auto naive = tilt::reference::naiveBackwardSameDtype(p.spec, p.ext,
                                                       p.inputs(), p.dO.data());
  double err = 0;
  for (size_t i = 0; i < exact.dq.size(); ++i)
    err = std::max(err, std::abs(exact.dq[i] - naive.dq[i]));
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 0.05);
  EXPECT_EQ(tilt::reference::gradientErrorBound(tilt::DType::BF16, 0.25, 9.0),
            0.5 + 1e-6);
  EXPECT_EQ(tilt::reference::gradientErrorBound(tilt::DType::F32, 0.25, 2.0),
            2e-4 + 1e-6);
  EXPECT_EQ(tilt::reference::gradientErrorBound(tilt::DType::F32, 1e-7, 2.0),
            2e-7 + 1e-6);
}

} // namespace
