//===- MergeTest.cpp - Chunks of keys merged equal the whole --------------===//
//
// ALIBI.md's merge: attention over disjoint key sets, combined by
// tilt::mergeAttentionStates (and the C API's tilt_merge_states), equals
// attention over all keys. The key sets are chosen with key padding masks,
// which mask keys without moving them, so every part is a real kernel run
// with the keys' true positions: contiguous chunks as context parallelism
// makes them, and an interleaved split. Causal and sliding-window masks
// leave rows with no visible key in some parts (lse = -inf there) and, with
// Sq > Sk, in every part.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Compiler.h"
#include "tilt/Merge.h"
#include "tilt/Reference.h"
#include "tilt/Runtime.h"
#include "tilt/tilt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>

#include "../common/JitRuntimeTest.h"
#include "../common/TestInputs.h"

namespace {

using namespace tilt;

struct MergeCase {
  const char *name;
  int64_t heads, kvHeads, headDim, sq, sk;
  DType dtype;
  BiasKind bias;
  bool causal;
  int64_t window; // 0: none
  int parts;
  bool interleaved; // key j goes to part j % parts, else contiguous chunks
};

/// The spec a case states (MergeCase and OffsetCase share these fields).
template <typename Case> AttentionSpec specOf(const Case &c) {
  AttentionSpec spec;
  spec.heads = c.heads;
  spec.kvHeads = c.kvHeads;
  spec.headDim = c.headDim;
  spec.dtype = c.dtype;
  spec.bias = c.bias;
  spec.causal = c.causal;
  if (c.window)
    spec.window = c.window;
  return spec;
}

class MergeTest : public test::JitRuntimeTest<MergeCase> {};

TEST_P(MergeTest, ChunksOfKeysMergeToTheWhole) {
  const MergeCase &c = GetParam();
  AttentionSpec spec = specOf(c);
  spec.keyPaddingMask = true;
  ASSERT_EQ(spec.validate(), "");
  const int64_t B = 2, H = c.heads, D = c.headDim;
  std::mt19937 rng(11);
  TypedBuffer q = test_inputs::normalBuffer(c.dtype, B * H * c.sq * D, rng);
  TypedBuffer k =
      test_inputs::normalBuffer(c.dtype, B * c.kvHeads * c.sk * D, rng);
  TypedBuffer v =
      test_inputs::normalBuffer(c.dtype, B * c.kvHeads * c.sk * D, rng);

  // One run per key set; the whole is the key set of everything.
  auto run = [&](int part, TypedBuffer &o, std::vector<float> &lse) {
    std::vector<uint8_t> kpm(size_t(B * c.sk));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < c.sk; ++j) {
        const int owner = c.interleaved
                              ? int(j % c.parts)
                              : int(j * c.parts / c.sk); // contiguous chunks
        kpm[size_t(b * c.sk + j)] = part < 0 || owner == part;
      }
    o = TypedBuffer(c.dtype, size_t(B * H * c.sq * D));
    lse.assign(size_t(B * H * c.sq), 0.0f);
    AttentionArgs args;
    args.q = TensorRef(q.data(), {B, H, c.sq, D});
    args.k = TensorRef(k.data(), {B, c.kvHeads, c.sk, D});
    args.v = TensorRef(v.data(), {B, c.kvHeads, c.sk, D});
    args.o = TensorRef(o.data(), {B, H, c.sq, D});
    args.lse = TensorRef(lse.data(), {B, H, c.sq});
    args.keyPaddingMask = TensorRef(kpm.data(), {B, c.sk});
    return runtime->run(spec, args);
  };
  TypedBuffer whole;
  std::vector<float> wholeLse;
  ASSERT_EQ(run(-1, whole, wholeLse), "");

  std::vector<TypedBuffer> po(size_t(c.parts));
  std::vector<std::vector<float>> pl(size_t(c.parts));
  std::vector<AttentionState> states;
  int64_t emptyInSomePart = 0;
  for (int n = 0; n < c.parts; ++n) {
    ASSERT_EQ(run(n, po[size_t(n)], pl[size_t(n)]), "") << "part " << n;
    for (float l : pl[size_t(n)])
      emptyInSomePart += std::isinf(l);
    states.push_back({TensorRef(po[size_t(n)].data(), {B, H, c.sq, D}),
                      TensorRef(pl[size_t(n)].data(), {B, H, c.sq})});
  }
  TypedBuffer merged(c.dtype, size_t(B * H * c.sq * D));
  std::vector<float> mergedLse(size_t(B * H * c.sq));
  ASSERT_EQ(mergeAttentionStates(c.dtype, states,
                                 TensorRef(merged.data(), {B, H, c.sq, D}),
                                 TensorRef(mergedLse.data(), {B, H, c.sq})),
            "");
  if ((c.causal || c.window) && c.sq >= c.sk / c.parts) {
    EXPECT_GT(emptyInSomePart, 0) << "the case should leave rows empty in "
                                     "some part";
  }

  // lse: -inf exactly where the whole is -inf, else equal to float rounding.
  double lseErr = 0;
  for (size_t r = 0; r < wholeLse.size(); ++r) {
    ASSERT_EQ(std::isinf(mergedLse[r]), std::isinf(wholeLse[r])) << "row " << r;
    if (!std::isinf(wholeLse[r]))
      lseErr = std::max(lseErr, double(std::abs(mergedLse[r] - wholeLse[r])));
  }
  EXPECT_LE(lseErr, 1e-4) << "lse";
  // o: f32 equal to the whole run up to float rounding; 16-bit parts are
  // rounded once more, so the merge is held to ALIBI.md's bound against the
  // float64 reference, like any kernel.
  double err = 0, vsRef = 0;
  for (size_t i = 0; i < merged.size(); ++i)
    err = std::max(err, double(std::abs(merged.get(i) - whole.get(i))));
  std::vector<float> qf(q.size()), kf(k.size()), vf(v.size());
  for (size_t i = 0; i < q.size(); ++i)
    qf[i] = q.get(i);
  for (size_t i = 0; i < k.size(); ++i) {
    kf[i] = k.get(i);
    vf[i] = v.get(i);
  }
  std::vector<uint8_t> ones(size_t(B * c.sk), 1);
  reference::Inputs in;
  in.q = qf.data();
  in.k = kf.data();
  in.v = vf.data();
  in.keyPaddingMask = ones.data();
  const Extents ext{B, c.sq, c.sk};
  reference::Outputs want = reference::attention(spec, ext, in);
  double naive = 0;
  const std::vector<double> n = reference::naiveSameDtype(spec, ext, in);
  for (size_t i = 0; i < n.size(); ++i) {
    naive = std::max(naive, std::abs(n[i] - want.o[i]));
    vsRef = std::max(vsRef, std::abs(double(merged.get(i)) - want.o[i]));
  }
  const double bound = reference::errorBound(c.dtype, naive);
  std::printf("%s: merged vs whole run %.3g, vs float64 %.3g (bound %.3g), "
              "lse %.3g, %lld row-parts empty\n",
              c.name, err, vsRef, bound, lseErr, (long long)emptyInSomePart);
  if (c.dtype == DType::F32) {
    EXPECT_LE(err, 1e-5);
  }
  EXPECT_LE(vsRef, bound);
}

INSTANTIATE_TEST_SUITE_P(
    Parts, MergeTest,
    ::testing::Values(
        MergeCase{"gqa_causal_3_chunks", 12, 4, 64, 300, 300, DType::F32,
                  BiasKind::Alibi, true, 0, 3, false},
        MergeCase{"window_3_chunks", 8, 8, 64, 129, 129, DType::F32,
                  BiasKind::Alibi, false, 20, 3, false},
        MergeCase{"symmetric_bf16_interleaved", 12, 12, 128, 40, 257,
                  DType::BF16, BiasKind::AlibiSymmetric, false, 0, 4, true},
        MergeCase{"causal_sq_gt_sk", 4, 1, 64, 100, 40, DType::F32,
                  BiasKind::Alibi, true, 0, 2, false},
        MergeCase{"decode_rows_f16", 40, 8, 64, 17, 1000, DType::F16,
                  BiasKind::None, true, 0, 5, false},
        MergeCase{"causal_f16_5_chunks", 8, 2, 64, 200, 200, DType::F16,
                  BiasKind::Alibi, true, 0, 5, false}),
    [](const auto &info) { return std::string(info.param.name); });

//===----------------------------------------------------------------------===//
// Context parallelism: chunks with position offsets
//===----------------------------------------------------------------------===//

struct OffsetCase {
  const char *name;
  int64_t heads, kvHeads, headDim, sq, sk;
  DType dtype;
  BiasKind bias;
  bool causal;
  int64_t window; // 0: none
  int qChunks, kChunks;
};

void PrintTo(const OffsetCase &c, std::ostream *os) { *os << c.name; }

class OffsetMergeTest : public test::JitRuntimeTest<OffsetCase> {};

/// Rows [begin, begin + len) of the sequence dim of a [B, Hx, S, D] tensor.
TypedBuffer sliceSeq(const TypedBuffer &t, int64_t bh, int64_t seq, int64_t d,
                     int64_t begin, int64_t len) {
  TypedBuffer out(t.dtype, size_t(bh * len * d));
  for (int64_t x = 0; x < bh; ++x)
    for (int64_t i = 0; i < len * d; ++i)
      out.set(size_t(x * len * d + i),
              t.get(size_t((x * seq + begin) * d + i)));
  return out;
}

// The whole attention runs once with the bottom-right rule. Then the queries
// and the keys are cut into contiguous chunks, as ring attention cuts a long
// sequence across devices; every (query chunk, key chunk) pair runs on its
// own tensors with q_offset = Sk - Sq + (first query) and k_offset = (first
// key), and each query chunk merges its parts. The merged rows must equal
// the whole run's.
TEST_P(OffsetMergeTest, ChunksWithOffsetsMergeToTheWhole) {
  const OffsetCase &c = GetParam();
  AttentionSpec spec = specOf(c);
  ASSERT_EQ(spec.validate(), "");
  AttentionSpec chunkSpec = spec;
  chunkSpec.positionOffsets = true;
  ASSERT_EQ(chunkSpec.validate(), "");
  const int64_t B = 2, H = c.heads, Hkv = c.kvHeads, D = c.headDim;
  std::mt19937 rng(29);
  TypedBuffer q = test_inputs::normalBuffer(c.dtype, B * H * c.sq * D, rng);
  TypedBuffer k = test_inputs::normalBuffer(c.dtype, B * Hkv * c.sk * D, rng);
  TypedBuffer v = test_inputs::normalBuffer(c.dtype, B * Hkv * c.sk * D, rng);

  TypedBuffer whole(c.dtype, size_t(B * H * c.sq * D));
  std::vector<float> wholeLse(size_t(B * H * c.sq));
  {
    AttentionArgs args;
    args.q = TensorRef(q.data(), {B, H, c.sq, D});
    args.k = TensorRef(k.data(), {B, Hkv, c.sk, D});
    args.v = TensorRef(v.data(), {B, Hkv, c.sk, D});
    args.o = TensorRef(whole.data(), {B, H, c.sq, D});
    args.lse = TensorRef(wholeLse.data(), {B, H, c.sq});
    ASSERT_EQ(runtime->run(spec, args), "");
  }

  // The float64 reference of the whole and the naive same-dtype error that
  // sets ALIBI.md's bound for 16-bit results.
  reference::RoundedInputs rounded =
      reference::fromBuffers(q, k, v, {}, false, {}, false, {}, {});
  const Extents ext{B, c.sq, c.sk};
  const reference::Outputs ref = reference::attention(spec, ext, rounded.in);
  double naive = 0;
  const std::vector<double> n =
      reference::naiveSameDtype(spec, ext, rounded.in);
  for (size_t i = 0; i < n.size(); ++i)
    naive = std::max(naive, std::abs(n[i] - ref.o[i]));
  const double bound = reference::errorBound(c.dtype, naive);

  double err = 0, lseErr = 0, vsRef = 0;
  int64_t emptyParts = 0;
  for (int qc = 0; qc < c.qChunks; ++qc) {
    const int64_t q0 = qc * c.sq / c.qChunks,
                  qLen = (qc + 1) * c.sq / c.qChunks - q0;
    TypedBuffer qPart = sliceSeq(q, B * H, c.sq, D, q0, qLen);
    std::vector<TypedBuffer> po(size_t(c.kChunks));
    std::vector<std::vector<float>> pl(size_t(c.kChunks));
    std::vector<AttentionState> states;
    for (int kc = 0; kc < c.kChunks; ++kc) {
      const int64_t k0 = kc * c.sk / c.kChunks,
                    kLen = (kc + 1) * c.sk / c.kChunks - k0;
      TypedBuffer kPart = sliceSeq(k, B * Hkv, c.sk, D, k0, kLen);
      TypedBuffer vPart = sliceSeq(v, B * Hkv, c.sk, D, k0, kLen);
      TypedBuffer &o = po[size_t(kc)];
      std::vector<float> &lse = pl[size_t(kc)];
      o = TypedBuffer(c.dtype, size_t(B * H * qLen * D));
      lse.assign(size_t(B * H * qLen), 0.0f);
      AttentionArgs args;
      args.q = TensorRef(qPart.data(), {B, H, qLen, D});
      args.k = TensorRef(kPart.data(), {B, Hkv, kLen, D});
      args.v = TensorRef(vPart.data(), {B, Hkv, kLen, D});
      args.o = TensorRef(o.data(), {B, H, qLen, D});
      args.lse = TensorRef(lse.data(), {B, H, qLen});
      args.qOffset = c.sk - c.sq + q0;
      args.kOffset = k0;
      ASSERT_EQ(runtime->run(chunkSpec, args), "")
          << "query chunk " << qc << ", key chunk " << kc;
      for (float l : lse)
        emptyParts += std::isinf(l);
      states.push_back({TensorRef(o.data(), {B, H, qLen, D}),
                        TensorRef(lse.data(), {B, H, qLen})});
    }
    TypedBuffer merged(c.dtype, size_t(B * H * qLen * D));
    std::vector<float> mergedLse(size_t(B * H * qLen));
    ASSERT_EQ(mergeAttentionStates(c.dtype, states,
                                   TensorRef(merged.data(), {B, H, qLen, D}),
                                   TensorRef(mergedLse.data(), {B, H, qLen})),
              "");
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t i = 0; i < qLen; ++i) {
        const float want = wholeLse[size_t(bh * c.sq + q0 + i)];
        const float got = mergedLse[size_t(bh * qLen + i)];
        ASSERT_EQ(std::isinf(got), std::isinf(want))
            << "row " << q0 + i << " of (batch, head) " << bh;
        if (!std::isinf(want))
          lseErr = std::max(lseErr, double(std::abs(got - want)));
        for (int64_t x = 0; x < D; ++x) {
          const size_t w = size_t((bh * c.sq + q0 + i) * D + x);
          const double m = merged.get(size_t((bh * qLen + i) * D + x));
          err = std::max(err, std::abs(m - double(whole.get(w))));
          vsRef = std::max(vsRef, std::abs(m - ref.o[w]));
        }
      }
  }
  std::printf("%s: merged chunks vs whole run %.3g, vs float64 %.3g (bound "
              "%.3g), lse %.3g, %lld row-parts empty\n",
              c.name, err, vsRef, bound, lseErr, (long long)emptyParts);
  if ((c.causal || c.window) && c.sq >= c.sk / c.kChunks) {
    EXPECT_GT(emptyParts, 0) << "the case should leave rows empty in some "
                                "part";
  }
  EXPECT_LE(lseErr, 1e-4) << "lse";
  // f32: equal to the whole run up to float rounding. 16-bit parts are
  // rounded once more, so the merge is held to ALIBI.md's bound.
  if (c.dtype == DType::F32) {
    EXPECT_LE(err, 1e-5);
  }
  EXPECT_LE(vsRef, bound);
}

INSTANTIATE_TEST_SUITE_P(
    Chunks, OffsetMergeTest,
    ::testing::Values(OffsetCase{"causal_4x4", 8, 2, 64, 256, 256, DType::F32,
                                 BiasKind::Alibi, true, 0, 4, 4},
                      OffsetCase{"window_3x5", 4, 4, 64, 300, 300, DType::F32,
                                 BiasKind::Alibi, true, 50, 3, 5},
                      OffsetCase{"symmetric_sq_lt_sk", 12, 3, 128, 100, 700,
                                 DType::F32, BiasKind::AlibiSymmetric, false, 0,
                                 2, 4},
                      OffsetCase{"bf16_causal_decode_rows", 16, 4, 128, 8, 3000,
                                 DType::BF16, BiasKind::Alibi, true, 0, 1, 6},
                      OffsetCase{"f16_window_no_bias", 4, 1, 64, 200, 200,
                                 DType::F16, BiasKind::None, false, 64, 2, 3}),
    [](const auto &info) { return std::string(info.param.name); });

TEST(Merge, EveryPartEmptyGivesZeroAndMinusInf) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> o1{1, 2, 3, 4}, o2{5, 6, 7, 8}, l1{-inf, 0.5f},
      l2{-inf, -inf}, o(4, 9), l(2, 9);
  std::vector<AttentionState> parts{
      {TensorRef(o1.data(), {2, 2}), TensorRef(l1.data(), {2})},
      {TensorRef(o2.data(), {2, 2}), TensorRef(l2.data(), {2})}};
  ASSERT_EQ(mergeAttentionStates(DType::F32, parts, TensorRef(o.data(), {2, 2}),
                                 TensorRef(l.data(), {2})),
            "");
  EXPECT_EQ(o, (std::vector<float>{0, 0, 3, 4}));
  EXPECT_TRUE(std::isinf(l[0]) && l[0] < 0);
  EXPECT_FLOAT_EQ(l[1], 0.5f);
}

TEST(Merge, TwoEqualPartsKeepOAndAddLog2) {
  std::vector<float> o{0.25f, -1.5f}, l{3.0f};
  std::vector<AttentionState> parts{
      {TensorRef(o.data(), {1, 2}), TensorRef(l.data(), {1})},
      {TensorRef(o.data(), {1, 2}), TensorRef(l.data(), {1})}};
  // In place: the output aliases the parts.
  ASSERT_EQ(mergeAttentionStates(DType::F32, parts, TensorRef(o.data(), {1, 2}),
                                 TensorRef(l.data(), {1})),
            "");
  EXPECT_EQ(o, (std::vector<float>{0.25f, -1.5f}));
  EXPECT_FLOAT_EQ(l[0], float(3.0 + std::log(2.0)));
}

TEST(Merge, BadInputsAreOneLineErrorsAndWriteNothing) {
  std::vector<float> o(8, 1), l(4, 0), out(8, 7), outL(4, 7);
  auto merge = [&](std::vector<AttentionState> parts, TensorRef so,
                   TensorRef sl) {
    return mergeAttentionStates(DType::F32, parts, so, sl);
  };
  const TensorRef O(o.data(), {2, 2, 2}), L(l.data(), {2, 2}),
      OUT(out.data(), {2, 2, 2}), OUTL(outL.data(), {2, 2});
  EXPECT_EQ(merge({}, OUT, OUTL), "merge: no partial results given");
  EXPECT_NE(merge({{O, TensorRef(l.data(), {4})}}, OUT, OUTL)
                .find("part 1: lse must be o's shape without its last"),
            std::string::npos);
  EXPECT_NE(merge({{TensorRef(o.data(), {4, 2}), TensorRef(l.data(), {4})}},
                  OUT, OUTL)
                .find("part 1: o is [4, 2], the output [2, 2, 2]"),
            std::string::npos);
  l[3] = std::nanf("");
  EXPECT_NE(merge({{O, L}}, OUT, OUTL).find("part 1: lse is nan at row 3"),
            std::string::npos);
  EXPECT_EQ(out, std::vector<float>(8, 7)); // nothing written
  EXPECT_EQ(outL, std::vector<float>(4, 7));
}

TEST(Merge, CApiMergesAndReportsErrors) {
  std::vector<float> o1{1, 1}, o2{3, 3}, l1{0}, l2{0}, o(2), l(1);
  tilt_tensor ops[2] = {{o1.data(), 2, {1, 2, 0, 0}, {}},
                        {o2.data(), 2, {1, 2, 0, 0}, {}}};
  tilt_tensor lps[2] = {{l1.data(), 1, {1, 0, 0, 0}, {}},
                        {l2.data(), 1, {1, 0, 0, 0}, {}}};
  char error[256] = "x";
  ASSERT_EQ(tilt_merge_states(
                TILT_DTYPE_F32, 2, ops, lps, {o.data(), 2, {1, 2, 0, 0}, {}},
                {l.data(), 1, {1, 0, 0, 0}, {}}, error, sizeof error),
            0)
      << error;
  EXPECT_STREQ(error, "");
  EXPECT_FLOAT_EQ(o[0], 2.0f);
  EXPECT_FLOAT_EQ(l[0], float(std::log(2.0)));
  EXPECT_NE(tilt_merge_states(7, 2, ops, lps, {o.data(), 2, {1, 2, 0, 0}, {}},
                              {l.data(), 1, {1, 0, 0, 0}, {}}, error,
                              sizeof error),
            0);
  EXPECT_STREQ(error, "dtype: expected 0 (f32), 1 (f16) or 2 (bf16), got 7");
  ops[1].rank = 9;
  EXPECT_NE(tilt_merge_states(TILT_DTYPE_F32, 2, ops, lps,
                              {o.data(), 2, {1, 2, 0, 0}, {}},
                              {l.data(), 1, {1, 0, 0, 0}, {}}, error, 8),
            0);
  EXPECT_STREQ(error, "part 2:"); // truncated to the buffer, NUL-terminated
  ops[1].rank = 2;
  // The merge reads and writes row-major tensors only; strides are named.
  ops[1].strides[0] = 2;
  ops[1].strides[1] = 2;
  EXPECT_NE(tilt_merge_states(
                TILT_DTYPE_F32, 2, ops, lps, {o.data(), 2, {1, 2, 0, 0}, {}},
                {l.data(), 1, {1, 0, 0, 0}, {}}, error, sizeof error),
            0);
  EXPECT_STREQ(error, "part 2: o must be row-major, got strides [2, 2] for "
                      "shape [1, 2]");
}

} // namespace
