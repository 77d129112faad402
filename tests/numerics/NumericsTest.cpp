//===- NumericsTest.cpp - Kernels vs the float64 reference ----------------===//
//
// Every case JIT-compiles a kernel through the runtime, runs it, and compares
// o and lse with tilt::reference (float64) under ALIBI.md's rule:
//   f32:      max |o - ref| <= 1e-4 (unit-normal inputs);
//   f16/bf16: max |o - ref| <= 2 * (error of a naive same-dtype
//             implementation) + 1e-6.
// Rows that see no key must give exactly 0 and lse = -inf.
//
// The cases cover every pair of parameter values (bias form, causal, window,
// head grouping, slopes source, dtype, heads, head dim, Sq, Sk, layout),
// chosen greedily from seeded random candidates.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Compiler.h"
#include "tilt/CpuIsa.h"
#include "tilt/Half.h"
#include "tilt/Reference.h"
#include "tilt/Runtime.h"
#include "tilt/Slopes.h"
#include "tilt/TilePolicy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>

#include "../common/CrossCompile.h"
#include "../common/ForwardCheck.h"
#include "../common/JitRuntimeTest.h"
#include "../common/Pairwise.h"
#include "../common/Strided.h"
#include "../common/TestInputs.h"
#include <set>
#include <thread>

namespace {

using namespace tilt;

//===----------------------------------------------------------------------===//
// The case space and its pairwise cover
//===----------------------------------------------------------------------===//

enum Dim {
  kBias,    // none, alibi, symmetric, positions
  kCausal,  // no, yes
  kWindow,  // none, 7, 100
  kGroups,  // MHA, GQA, MQA
  kSlopes,  // standard, custom [H], custom [B,H], head offset
  kDtype,   // f32, f16, bf16
  kHeads,   // 1, 12, 40, 71
  kHeadDim, // 64, 80, 96, 128, 256
  kSeqQ,    // 1, 17, 127, 128, 129, 1000
  kSeqK,    // 1, 17, 127, 128, 129, 1000
  kLayout,  // dense, dense with padding mask, varlen
  kNumDims
};
constexpr int kArity[kNumDims] = {4, 2, 3, 3, 4, 3, 4, 5, 6, 6, 3};
constexpr int64_t kHeadsV[] = {1, 12, 40, 71};
constexpr int64_t kHeadDimV[] = {64, 80, 96, 128, 256};
constexpr int64_t kSeqV[] = {1, 17, 127, 128, 129, 1000};

using test::Choice;
const std::vector<int> kArities(std::begin(kArity), std::end(kArity));

std::vector<Choice> pairwiseCover(uint32_t seed) {
  return test::pairwiseCover(kArities, seed);
}

//===----------------------------------------------------------------------===//
// One case, concretely
//===----------------------------------------------------------------------===//

struct Case {
  AttentionSpec spec;
  TileConfig config; ///< empty: the compiler's choice for this machine
  int64_t batch = 2, seqQ = 0, seqK = 0;
  bool slopesPerBatch = false;
  bool padding = false;
  int64_t qOffset = 0, kOffset = 0; ///< with spec.positionOffsets
  std::string name;
};

Case makeCase(const Choice &c) {
  Case k;
  AttentionSpec &s = k.spec;
  s.heads = kHeadsV[c[kHeads]];
  s.headDim = kHeadDimV[c[kHeadDim]];
  // MHA; GQA with the smallest group (2, 3 or 4) that divides H; MQA. A
  // prime H > 4 (71) has no such group and runs as MQA.
  s.kvHeads = s.heads;
  if (c[kGroups] == 1) {
    s.kvHeads = 1;
    for (int64_t g : {2, 3, 4})
      if (s.heads % g == 0 && s.heads > g) {
        s.kvHeads = s.heads / g;
        break;
      }
  }
  if (c[kGroups] == 2)
    s.kvHeads = 1;
  s.dtype = static_cast<DType>(c[kDtype]);
  s.causal = c[kCausal] == 1;
  if (c[kWindow])
    s.window = c[kWindow] == 1 ? 7 : 100;
  s.bias = static_cast<BiasKind>(c[kBias]);
  k.seqQ = kSeqV[c[kSeqQ]];
  k.seqK = kSeqV[c[kSeqK]];
  k.padding = c[kLayout] == 1 || s.bias == BiasKind::AlibiPositions;
  s.varlen = c[kLayout] == 2 && !k.padding;
  s.keyPaddingMask = k.padding;
  if (s.hasAlibi()) {
    switch (c[kSlopes]) {
    case 1:
      s.slopes = SlopeSource::Custom;
      break;
    case 2:
      s.slopes = SlopeSource::Custom;
      k.slopesPerBatch = true;
      break;
    case 3:
      s.headOffset = s.heads;
      s.totalHeads = 3 * s.heads;
      break;
    default:
      s.maxBias = s.heads % 2 ? 8.0 : 4.0;
      break;
    }
  }
  // Keep the float64 reference affordable: the largest cases run one batch.
  if (s.heads * k.seqQ * k.seqK * s.headDim > 40'000'000)
    k.batch = 1;
  k.name = s.canonical() +
           " B=" + std::to_string(k.batch) + " Sq=" + std::to_string(k.seqQ) +
           " Sk=" + std::to_string(k.seqK) +
           (k.slopesPerBatch ? " slopes[B,H]" : "");
  return k;
}

void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

//===----------------------------------------------------------------------===//
// The test
//===----------------------------------------------------------------------===//

class Numerics : public test::JitRuntimeTest<Case> {};

TEST_P(Numerics, MatchesFloat64Reference) {
  const Case &c = GetParam();
  const AttentionSpec &spec = c.spec;
  ASSERT_EQ(spec.validate(), "");

  // A variant this CPU cannot execute: its kernel is still cross-compiled
  // for the class it needs and its machine code checked, the runtime must
  // refuse it with a one-line error, and only the run is skipped.
  if (std::string skip = test::crossCompiledSkipReason(spec, c.config, runtime);
      !skip.empty())
    GTEST_SKIP() << skip;
  if (std::string note = test::nativeBf16DotNote(spec, c.config); !note.empty())
    std::cout << "  " << c.name << ": " << note << "\n";
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const int64_t B = c.batch;
  std::mt19937 rng(1234);

  // Varlen packs B sequences of lengths around Sq/Sk (one of them empty when
  // B > 1 and the lengths allow) into [total, H, D].
  std::vector<int32_t> cuQ{0}, cuK{0};
  int64_t totalQ = B * c.seqQ, totalK = B * c.seqK;
  if (spec.varlen) {
    for (int64_t b = 0; b < B; ++b) {
      cuQ.push_back(cuQ.back() + int32_t(b == 1 ? c.seqQ / 2 : c.seqQ));
      cuK.push_back(cuK.back() + int32_t(b == 1 ? (c.seqK + 1) / 2 : c.seqK));
    }
    totalQ = cuQ.back();
    totalK = cuK.back();
  }
  auto fill = [&](int64_t n) {
    return test_inputs::normalBuffer(spec.dtype, n, rng);
  };
  TypedBuffer q = fill(totalQ * H * D), k = fill(totalK * Hkv * D),
              v = fill(totalK * Hkv * D);
  TypedBuffer o(spec.dtype, totalQ * H * D);
  std::vector<float> lse(totalQ * H, 0.0f);

  std::vector<float> slopes;
  if (spec.hasAlibi() && spec.slopes == SlopeSource::Custom)
    slopes = test_inputs::customSlopes((c.slopesPerBatch ? B : 1) * H, 8, rng);
  std::vector<uint8_t> kpm;
  if (c.padding)
    kpm = test_inputs::paddingMask(B, c.seqK);

  AttentionArgs args;
  if (spec.varlen) {
    args.q = TensorRef(q.data(), {totalQ, H, D});
    args.k = TensorRef(k.data(), {totalK, Hkv, D});
    args.v = TensorRef(v.data(), {totalK, Hkv, D});
    args.o = TensorRef(o.data(), {totalQ, H, D});
    args.lse = TensorRef(lse.data(), {H, totalQ});
    args.cuSeqlensQ = TensorRef(cuQ.data(), {B + 1});
    args.cuSeqlensK = TensorRef(cuK.data(), {B + 1});
  } else {
    args.q = TensorRef(q.data(), {B, H, c.seqQ, D});
    args.k = TensorRef(k.data(), {B, Hkv, c.seqK, D});
    args.v = TensorRef(v.data(), {B, Hkv, c.seqK, D});
    args.o = TensorRef(o.data(), {B, H, c.seqQ, D});
    args.lse = TensorRef(lse.data(), {B, H, c.seqQ});
  }
  if (!slopes.empty())
    args.slopes = c.slopesPerBatch ? TensorRef(slopes.data(), {B, H})
                                   : TensorRef(slopes.data(), {H});
  if (!kpm.empty())
    args.keyPaddingMask = TensorRef(kpm.data(), {B, c.seqK});
  args.qOffset = c.qOffset;
  args.kOffset = c.kOffset;
  ASSERT_EQ(runtime->run(spec, args, Target::CPU, c.config), "");
  // Split-KV: a decode-family call again with the keys cut into parts,
  // merged (the runtime's rule splits only where threads would idle).
  std::vector<SplitRun> splitRuns;
  if (runsDecodeFamily(spec, c.config, c.seqQ)) {
    ASSERT_EQ(runSplits(spec, args, c.config, splitRuns), "");
  }

  // The same calls on strided q, k, v, o ([B, S, H, D] memory with gaps,
  // Strided.h) give the same bits; the decode family's also through the
  // split-KV merge, which writes o on the host.
  EXPECT_EQ(
      rerunStridedWithSplits(spec, args, c.config, q, k, v, o, lse, splitRuns),
      "")
      << c.name;

  // The reference sees exactly the rounded inputs the kernel saw.
  reference::RoundedInputs rounded = reference::fromBuffers(
      q, k, v, slopes, c.slopesPerBatch, kpm, spec.varlen, cuQ, cuK);
  rounded.in.qOffset = c.qOffset;
  rounded.in.kOffset = c.kOffset;
  const reference::Inputs &in = rounded.in;
  Extents ext{B, spec.varlen ? totalQ : c.seqQ, spec.varlen ? totalK : c.seqK};
  reference::Outputs ref = reference::attention(spec, ext, in);

  // lse index of an o row: dense [B,H,Sq] is o's row order; varlen lse is
  // [H, totalQ] while o is [totalQ, H].
  auto lseIndex = [&](int64_t row) {
    return spec.varlen ? (row % H) * totalQ + row / H : row;
  };
  const test::ForwardComparison cmp = test::compareWithReference(
      spec, ext, in, ref, o, lse, totalQ * H, lseIndex);
  const double err = cmp.err, bound = cmp.bound, lseErr = cmp.lseErr;
  const double lseExcess = cmp.lseExcess;
  const int64_t emptyRows = cmp.emptyRows;
  // lse is f32 from f32 arithmetic on rounded inputs whatever the dtype.
  const double lseBound = spec.dtype == DType::F32 ? 1e-4 : 1e-3;
  EXPECT_LE(err, bound) << c.name;
  EXPECT_LE(lseExcess, lseBound) << c.name;
  RecordProperty("max_abs_err", std::to_string(err));
  RecordProperty("bound", std::to_string(bound));
  RecordProperty("empty_rows", std::to_string(emptyRows));
  std::printf("    %-100s err %.2e (bound %.2e) lse err %.2e, %lld empty rows\n",
              c.name.c_str(), err, bound, lseErr, (long long)emptyRows);
  for (size_t n = 0; n < splitRuns.size(); ++n) {
    const std::string name =
        c.name + " split " + std::to_string(kSplitCounts[n]);
    const test::ForwardComparison s = test::compareWithReference(
        spec, ext, in, ref, splitRuns[n].first, splitRuns[n].second, totalQ * H,
        lseIndex, bound);
    EXPECT_LE(s.err, bound) << name;
    EXPECT_LE(s.lseExcess, lseBound) << name;
    EXPECT_EQ(s.emptyRows, emptyRows) << name;
    std::printf("    %-100s err %.2e (bound %.2e) lse err %.2e\n", name.c_str(),
                s.err, bound, s.lseErr);
  }
}

/// Sizes ALIBI.md asks for beyond the pairwise grid: H = 56 and 112 and
/// sequences of 2048.
std::vector<Case> extraCases() {
  auto make = [](int64_t h, int64_t hkv, int64_t d, DType t, BiasKind bias,
                 bool causal, std::optional<int64_t> window, int64_t sq,
                 int64_t sk) {
    Case c;
    c.spec.heads = h;
    c.spec.kvHeads = hkv;
    c.spec.headDim = d;
    c.spec.dtype = t;
    c.spec.bias = bias;
    c.spec.causal = causal;
    c.spec.window = window;
    c.batch = 1;
    c.seqQ = sq;
    c.seqK = sk;
    return c;
  };
  // Every CPU variant, whatever this machine would pick: AVX2 and AVX-512
  // on 16-bit inputs, AMX with one, two and many key blocks (the pipeline's
  // prologue and steady state) and a query block shorter than a tile pair.
  auto with = [](Case c, const char *variant, int64_t bm, int64_t bn) {
    c.config.variant = variant;
    c.config.blockM = bm;
    c.config.blockN = bn;
    return c;
  };
  // Position offsets (context parallelism): a query chunk after its key
  // chunk, before it (causal rows see nothing), overlapping, and far out
  // (distances beyond any sequence length), under every bias form that
  // takes them.
  auto offsets = [](Case c, int64_t qOffset, int64_t kOffset) {
    c.spec.positionOffsets = true;
    c.qOffset = qOffset;
    c.kOffset = kOffset;
    return c;
  };
  auto stages = [](Case c, int64_t numStages) {
    c.config.numStages = numStages;
    return c;
  };
  auto varlen = [](Case c) {
    c.spec.varlen = true;
    c.batch = 3;
    return c;
  };
  // The decode family, pinned (the runtime also picks it by itself for the
  // pairwise cases with Sq <= 16): Sq 1, 2, 7, 16 against
  // Sk 1 to 32768; MHA, GQA and MQA, so that a (batch, kv head) has 1 to
  // 1792 query rows (row blocks of 16 and 32); every bias form it takes;
  // rows that see no key (Sq > Sk causal); padding masks, custom [B, H]
  // slopes, varlen and position offsets.
  auto decode = [&](Case c, int64_t rows = 16, int64_t keys = 16) {
    return with(std::move(c), "cpu_decode_avx2", rows, keys);
  };
  auto padded = [](Case c) {
    c.spec.keyPaddingMask = true;
    c.padding = true;
    c.batch = 2;
    return c;
  };
  auto perBatchSlopes = [](Case c) {
    c.spec.slopes = SlopeSource::Custom;
    c.slopesPerBatch = true;
    c.batch = 2;
    return c;
  };
  return {
      with(make(12, 4, 64, DType::F32, BiasKind::Alibi, true, {}, 200, 300),
           "cpu_avx2", 32, 32),
      with(make(6, 6, 80, DType::F16, BiasKind::AlibiSymmetric, false, 40, 77,
                129),
           "cpu_avx2", 16, 64),
      with(make(8, 2, 128, DType::BF16, BiasKind::Alibi, true, {}, 129, 300),
           "cpu_avx512", 64, 64),
      with(make(4, 4, 64, DType::BF16, BiasKind::Alibi, true, {}, 100, 100),
           "cpu_amx", 64, 128),
      // cpu_avx512bf16: odd key counts in a block (P and V paired with
      // zeros), a window, D 80 and 96, Sq 1, GQA and MQA, every block
      // shape's micro-kernels.
      with(make(8, 2, 128, DType::BF16, BiasKind::Alibi, true, {}, 129, 301),
           "cpu_avx512bf16", 64, 64),
      with(make(6, 6, 80, DType::BF16, BiasKind::AlibiSymmetric, false, 40, 77,
                129),
           "cpu_avx512bf16", 32, 32),
      with(make(2, 1, 64, DType::BF16, BiasKind::Alibi, true, {}, 1, 700),
           "cpu_avx512bf16", 16, 128),
      with(make(12, 4, 96, DType::BF16, BiasKind::None, false, {}, 200, 333),
           "cpu_avx512bf16", 128, 32),
      with(padded(make(4, 2, 64, DType::BF16, BiasKind::AlibiPositions, true,
                       {}, 50, 97)),
           "cpu_avx512bf16", 32, 64),
      with(perBatchSlopes(make(4, 4, 128, DType::BF16, BiasKind::Alibi, false,
                               {}, 64, 2048)),
           "cpu_avx512bf16", 64, 128),
      with(varlen(make(12, 3, 96, DType::BF16, BiasKind::Alibi, true, {}, 127,
                       260)),
           "cpu_avx512bf16", 64, 32),
      with(make(4, 2, 96, DType::BF16, BiasKind::AlibiSymmetric, false, {}, 33,
                200),
           "cpu_amx", 32, 64),
      with(
          make(4, 4, 128, DType::BF16, BiasKind::Alibi, false, 300, 1000, 1000),
          "cpu_amx", 128, 256),
      with(make(2, 1, 64, DType::BF16, BiasKind::Alibi, true, {}, 1, 700),
           "cpu_amx", 128, 128),
      make(56, 8, 128, DType::BF16, BiasKind::Alibi, true, {}, 129, 2048),
      make(112, 112, 64, DType::F16, BiasKind::AlibiSymmetric, false, {}, 17,
           1000),
      make(112, 16, 80, DType::F32, BiasKind::Alibi, true, 64, 128, 129),
      make(12, 12, 128, DType::F32, BiasKind::Alibi, true, {}, 2048, 2048),
      make(8, 2, 96, DType::BF16, BiasKind::Alibi, false, 256, 2048, 2048),
      offsets(make(12, 4, 64, DType::F32, BiasKind::Alibi, true, {}, 129, 300),
              1000, 800),
      offsets(make(12, 4, 64, DType::F32, BiasKind::Alibi, true, {}, 128, 200),
              500, 550),
      offsets(make(8, 8, 128, DType::BF16, BiasKind::AlibiSymmetric, false, 100,
                   200, 129),
              4000, 4100),
      offsets(make(40, 8, 80, DType::F16, BiasKind::None, true, 64, 17, 1000),
              70000, 69500),
      offsets(make(71, 71, 64, DType::F32, BiasKind::AlibiSymmetric, false, {},
                   1, 1000),
              16000000, 0),
      offsets(varlen(make(12, 3, 96, DType::BF16, BiasKind::Alibi, true, {},
                          127, 260)),
              300, 100),
      offsets(with(make(8, 2, 128, DType::BF16, BiasKind::Alibi, true, {}, 129,
                        300),
                   "cpu_avx512", 64, 64),
              2000, 1900),
      offsets(with(make(4, 4, 64, DType::BF16, BiasKind::Alibi, true, 300, 100,
                        600),
                   "cpu_amx", 64, 128),
              1000, 700),
      offsets(with(make(8, 2, 128, DType::BF16, BiasKind::AlibiSymmetric, true,
                        {}, 129, 300),
                   "cpu_avx512bf16", 64, 64),
              2000, 1900),
      decode(
          make(12, 12, 128, DType::BF16, BiasKind::Alibi, true, {}, 1, 32768)),
      decode(
          make(40, 8, 128, DType::BF16, BiasKind::Alibi, true, {}, 16, 8192)),
      decode(make(71, 1, 64, DType::F32, BiasKind::AlibiSymmetric, false, {}, 7,
                  1000)),
      decode(make(112, 16, 80, DType::F16, BiasKind::None, true, 100, 2, 1000)),
      decode(make(12, 4, 64, DType::F32, BiasKind::Alibi, true, {}, 16, 17), 32,
             32),
      decode(make(40, 40, 64, DType::F32, BiasKind::Alibi, true, {}, 16, 1)),
      decode(make(112, 112, 128, DType::BF16, BiasKind::AlibiSymmetric, true,
                  64, 2, 8192)),
      decode(make(12, 3, 96, DType::F16, BiasKind::Alibi, false, {}, 1, 1)),
      decode(varlen(
          make(12, 3, 128, DType::BF16, BiasKind::Alibi, true, {}, 7, 1000))),
      decode(padded(make(8, 2, 64, DType::F32, BiasKind::AlibiSymmetric, false,
                         {}, 1, 300))),
      decode(perBatchSlopes(
          make(16, 4, 128, DType::F32, BiasKind::Alibi, true, {}, 2, 500))),
      offsets(decode(make(12, 4, 64, DType::F32, BiasKind::Alibi, true, {}, 1,
                          1000)),
              5000, 0),
      with(make(32, 8, 128, DType::BF16, BiasKind::Alibi, true, {}, 1, 8192),
           "cpu_decode_avx512", 16, 16),
      // num_stages 2: the keys ahead asked for into L2, 32 keys ahead (the
      // Zen 4's tuned MHA records; split-KV at B 1), and on AVX2 with a
      // window and a sequence shorter than the distance.
      stages(with(make(32, 32, 128, DType::BF16, BiasKind::Alibi, true, {}, 1,
                       8192),
                  "cpu_decode_avx512", 64, 16),
             2),
      stages(decode(make(12, 4, 64, DType::F16, BiasKind::AlibiSymmetric, false,
                         50, 3, 40)),
             2),
  };
}

/// An extra case's name, from everything that was set on it.
std::string describe(const Case &c) {
  std::string name = c.spec.canonical() + " B=" + std::to_string(c.batch) +
                     " Sq=" + std::to_string(c.seqQ) +
                     " Sk=" + std::to_string(c.seqK);
  if (c.slopesPerBatch)
    name += " slopes[B,H]";
  if (c.spec.positionOffsets)
    name += " q_offset=" + std::to_string(c.qOffset) +
            " k_offset=" + std::to_string(c.kOffset);
  if (!c.config.variant.empty())
    name += " " + c.config.variant + " " + std::to_string(c.config.blockM) +
            "x" + std::to_string(c.config.blockN);
  if (c.config.numStages)
    name += " stages " + std::to_string(c.config.numStages);
  return name;
}

std::vector<Case> allCases() {
  std::vector<Case> cases;
  for (const Choice &c : pairwiseCover(20261125))
    cases.push_back(makeCase(c));
  for (Case c : extraCases()) {
    c.name = describe(c);
    cases.push_back(c);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Pairwise, Numerics, ::testing::ValuesIn(allCases()),
                         [](const ::testing::TestParamInfo<Case> &info) {
                           return "case" + std::to_string(info.index);
                         });

class SplitKv : public test::JitRuntimeTest<int> {};

// Varlen q may hold tokens past cu_seqlens_q[B] that no sequence covers; no
// work item writes them, so a split-KV merge must not either (it would
// write whatever its scratch held). The covered rows equal the unsplit run.
TEST_P(SplitKv, VarlenRowsNoSequenceCoversAreLeftAlone) {
  AttentionSpec spec;
  spec.heads = 4;
  spec.kvHeads = 1;
  spec.headDim = 64;
  spec.bias = BiasKind::Alibi;
  spec.causal = true;
  spec.varlen = true;
  const int64_t H = 4, D = 64, totalQ = 5, totalK = 500;
  std::vector<int32_t> cuQ = {0, 1, 2}, cuK = {0, 300, 500};
  std::mt19937 rng(99);
  TypedBuffer q = test_inputs::normalBuffer(spec.dtype, totalQ * H * D, rng);
  TypedBuffer k = test_inputs::normalBuffer(spec.dtype, totalK * D, rng);
  TypedBuffer v = test_inputs::normalBuffer(spec.dtype, totalK * D, rng);
  auto run = [&](Runtime *rt, std::vector<float> &o, std::vector<float> &lse) {
    o.assign(totalQ * H * D, 7.0f);
    lse.assign(totalQ * H, 7.0f);
    AttentionArgs args;
    args.q = TensorRef(q.data(), {totalQ, H, D});
    args.k = TensorRef(k.data(), {totalK, 1, D});
    args.v = TensorRef(v.data(), {totalK, 1, D});
    args.o = TensorRef(o.data(), {totalQ, H, D});
    args.lse = TensorRef(lse.data(), {H, totalQ});
    args.cuSeqlensQ = TensorRef(cuQ.data(), {3});
    args.cuSeqlensK = TensorRef(cuK.data(), {3});
    return rt->run(spec, args);
  };
  std::vector<float> o1, lse1, o3, lse3;
  ASSERT_EQ(run(splittingRuntime(1), o1, lse1), "");
  ASSERT_EQ(run(splittingRuntime(3), o3, lse3), "");
  for (int64_t t = 0; t < totalQ; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const float l1 = lse1[h * totalQ + t], l3 = lse3[h * totalQ + t];
      if (t >= cuQ.back()) {
        EXPECT_EQ(l3, 7.0f) << "lse of uncovered token " << t;
      } else {
        EXPECT_NEAR(l3, l1, 1e-5) << "token " << t << " head " << h;
      }
      for (int64_t d = 0; d < D; ++d) {
        const float x1 = o1[(t * H + h) * D + d], x3 = o3[(t * H + h) * D + d];
        if (t >= cuQ.back())
          ASSERT_EQ(x3, 7.0f) << "o of uncovered token " << t;
        else
          ASSERT_NEAR(x3, x1, 1e-5) << "token " << t << " head " << h;
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Runtime, SplitKv, ::testing::Values(0));

TEST(NumericsCover, EveryPairOfValuesIsCovered) {
  std::vector<Choice> cases = pairwiseCover(20261125);
  int a, b, x, y;
  EXPECT_TRUE(test::coversEveryPair(cases, kArities, a, b, x, y))
      << "dims " << a << "," << b << " values " << x << "," << y;
  std::printf("    %zu cases cover every pair\n", cases.size());
}

} // namespace
