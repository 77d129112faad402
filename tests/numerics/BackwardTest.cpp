//===- BackwardTest.cpp - Backward kernels vs the float64 reference -------===//
//
// Each case runs the forward (o, lse) and then the backward through the
// runtime, and compares dq, dk, dv and dslopes with the float64 reference
// under ALIBI.md's gradient rule: max abs error <= 2 x the error of a naive
// same-dtype backward + 1e-6, and for f32 also <= 1e-4 x max |reference| +
// 1e-6. Rows that see no key must leave dq exactly 0.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Compiler.h"
#include "tilt/CpuIsa.h"
#include "tilt/Half.h"
#include "tilt/Reference.h"
#include "tilt/Runtime.h"
#include "tilt/TilePolicy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "../common/CrossCompile.h"
#include "../common/GradientCheck.h"
#include "../common/JitRuntimeTest.h"
#include "../common/Strided.h"
#include "../common/TestInputs.h"

namespace {

using namespace tilt;

struct GradCase {
  AttentionSpec spec;
  int64_t batch = 2, seqQ = 0, seqK = 0;
  bool slopesPerBatch = false;
  bool padding = false;
  int64_t qOffset = 0, kOffset = 0;
  TileConfig config; ///< empty: the runtime's backward default
  std::string name;
};

void PrintTo(const GradCase &c, std::ostream *os) { *os << c.name; }

GradCase make(int64_t h, int64_t hkv, int64_t d, DType t, BiasKind bias,
              int64_t sq, int64_t sk) {
  GradCase c;
  c.spec.heads = h;
  c.spec.kvHeads = hkv;
  c.spec.headDim = d;
  c.spec.dtype = t;
  c.spec.bias = bias;
  c.seqQ = sq;
  c.seqK = sk;
  return c;
}

/// Every bias form and slope source, causal and window, MHA/GQA/MQA, the
/// three dtypes, heads {1, 12, 40, 71}, D {64, 128, 256}, sequences {1, 17,
/// 129, 1000, 2048}, dense, padded and varlen, offsets, fully masked rows.
std::vector<GradCase> cases() {
  std::vector<GradCase> out;
  auto add = [&](GradCase c, std::function<void(GradCase &)> edit = {}) {
    if (edit)
      edit(c);
    AttentionSpec &s = c.spec;
    if (s.bias == BiasKind::AlibiPositions) {
      s.keyPaddingMask = c.padding = true;
      s.slopes = SlopeSource::Custom;
    }
    if (s.hasAlibi() && s.slopes == SlopeSource::Standard && !c.slopesPerBatch)
      s.maxBias = 8.0;
    c.name = s.canonical() + " B=" + std::to_string(c.batch) +
             " Sq=" + std::to_string(c.seqQ) + " Sk=" + std::to_string(c.seqK) +
             (c.slopesPerBatch ? " slopes[B,H]" : "") +
             (c.qOffset || c.kOffset ? " offsets " + std::to_string(c.qOffset) +
                                           "/" + std::to_string(c.kOffset)
                                     : "") +
             (c.config.isDefault() ? "" : " " + c.config.variant);
    out.push_back(c);
  };
  auto custom = [](GradCase &c) { c.spec.slopes = SlopeSource::Custom; };
  auto perBatch = [](GradCase &c) {
    c.spec.slopes = SlopeSource::Custom;
    c.slopesPerBatch = true;
  };
  add(make(12, 4, 64, DType::F32, BiasKind::Alibi, 129, 129), [&](GradCase &c) {
    custom(c);
    c.spec.causal = true;
  });
  add(make(1, 1, 128, DType::F32, BiasKind::AlibiSymmetric, 17, 1000),
      perBatch);
  add(make(40, 8, 128, DType::BF16, BiasKind::Alibi, 17, 129),
      [&](GradCase &c) {
        perBatch(c);
        c.spec.causal = true;
        c.spec.window = 7;
      });
  add(make(71, 1, 64, DType::F16, BiasKind::Alibi, 1, 1000),
      [&](GradCase &c) { c.spec.causal = true; });
  add(make(12, 12, 256, DType::BF16, BiasKind::None, 129, 17),
      [&](GradCase &c) { c.spec.causal = true; }); // 112 empty rows
  add(make(12, 3, 128, DType::F32, BiasKind::AlibiPositions, 129, 200),
      [&](GradCase &c) { c.spec.causal = true; });
  add(make(4, 2, 64, DType::BF16, BiasKind::AlibiSymmetric, 200, 200),
      [&](GradCase &c) {
        custom(c);
        c.spec.window = 100;
        c.padding = c.spec.keyPaddingMask = true; // the last batch all padded
      });
  add(make(12, 4, 64, DType::F32, BiasKind::Alibi, 129, 300), [&](GradCase &c) {
    perBatch(c);
    c.spec.varlen = true;
    c.spec.causal = true;
  });
  add(make(12, 4, 80, DType::F16, BiasKind::AlibiSymmetric, 100, 100),
      [&](GradCase &c) {
        custom(c);
        c.spec.varlen = true;
        c.spec.window = 33;
      });
  add(make(8, 2, 64, DType::F32, BiasKind::Alibi, 100, 150), [&](GradCase &c) {
    custom(c);
    c.spec.causal = true;
    c.spec.positionOffsets = true;
    c.qOffset = 5000;
    c.kOffset = 4900;
  });
  add(make(8, 8, 64, DType::F32, BiasKind::AlibiSymmetric, 64, 64),
      [&](GradCase &c) {
        perBatch(c);
        c.spec.positionOffsets = true;
        // Positions near 10^5, rows past the last key: anchors carry the
        // bias. (A row whose every key is ~10^4 / slope positions away has
        // an lse so large that its f32 ulp, not the kernel, bounds P; a
        // context-parallel backward passes the merged lse, which is not.)
        c.qOffset = 100000;
        c.kOffset = 99970;
      });
  add(make(40, 40, 64, DType::BF16, BiasKind::Alibi, 1000, 1000),
      [&](GradCase &c) {
        custom(c);
        c.batch = 1;
        c.spec.causal = true;
      });
  add(make(12, 4, 128, DType::F32, BiasKind::Alibi, 129, 129),
      [&](GradCase &c) {
        custom(c);
        c.spec.causal = true;
        c.config.variant = "cpu_bwd_avx512";
      });
  // cpu_bwd_avx512bf16 (the default for bf16 where the CPU has AVX512_BF16;
  // named here so every AVX-512 CPU runs it): odd row and key counts in a
  // block (pairs with zeros), GQA and MQA, D 64/80/128/256, every bias form,
  // trainable [H] and [B, H] slopes, window, padding, varlen, offsets,
  // blocks from 16 to 128; and cpu_bwd_avx512 on bf16, which the default
  // no longer reaches on such a CPU.
  auto pairs = [](int64_t m, int64_t n) {
    return [m, n](GradCase &c) {
      c.config.variant = "cpu_bwd_avx512bf16";
      c.config.blockM = m;
      c.config.blockN = n;
    };
  };
  auto both = [](std::function<void(GradCase &)> x,
                 std::function<void(GradCase &)> y) {
    return [x, y](GradCase &c) {
      x(c);
      y(c);
    };
  };
  add(make(12, 4, 128, DType::BF16, BiasKind::Alibi, 129, 301),
      both(pairs(32, 64), [&](GradCase &c) {
        custom(c);
        c.spec.causal = true;
      }));
  add(make(40, 8, 64, DType::BF16, BiasKind::AlibiSymmetric, 17, 1000),
      both(pairs(16, 128), perBatch));
  add(make(71, 1, 80, DType::BF16, BiasKind::Alibi, 1, 77),
      both(pairs(64, 32), [&](GradCase &c) { c.spec.causal = true; }));
  add(make(12, 3, 128, DType::BF16, BiasKind::AlibiPositions, 129, 200),
      both(pairs(32, 32), [&](GradCase &c) { c.spec.causal = true; }));
  add(make(4, 2, 64, DType::BF16, BiasKind::Alibi, 200, 200),
      both(pairs(64, 64), [&](GradCase &c) {
        custom(c);
        c.spec.window = 100;
        c.padding = c.spec.keyPaddingMask = true; // the last batch all padded
      }));
  add(make(12, 4, 96, DType::BF16, BiasKind::Alibi, 129, 300),
      both(pairs(128, 16), [&](GradCase &c) {
        perBatch(c);
        c.spec.varlen = true;
        c.spec.causal = true;
      }));
  add(make(8, 2, 256, DType::BF16, BiasKind::None, 100, 150),
      both(pairs(32, 64), [&](GradCase &c) {
        c.spec.causal = true;
        c.spec.positionOffsets = true;
        c.qOffset = 5000;
        c.kOffset = 4900;
      }));
  add(make(1, 1, 128, DType::BF16, BiasKind::Alibi, 2048, 2048),
      both(pairs(32, 64), [&](GradCase &c) {
        custom(c);
        c.batch = 1;
        c.spec.causal = true;
      }));
  add(make(8, 2, 128, DType::BF16, BiasKind::Alibi, 129, 301),
      [&](GradCase &c) {
        custom(c);
        c.spec.causal = true;
        c.config.variant = "cpu_bwd_avx512";
      });
  // A variant named without blocks (the runtime completes them).
  add(make(4, 2, 64, DType::F32, BiasKind::Alibi, 40, 40),
      [&](GradCase &c) { c.config.variant = "cpu_bwd_avx2"; });
  add(make(2, 1, 64, DType::F32, BiasKind::Alibi, 2048, 2048),
      [&](GradCase &c) {
        perBatch(c);
        c.batch = 1;
        c.spec.causal = true;
      });
  return out;
}

class Backward : public test::JitRuntimeTest<GradCase> {};

TEST_P(Backward, GradientsMatchFloat64Reference) {
  const GradCase &c = GetParam();
  const AttentionSpec &spec = c.spec;
  ASSERT_EQ(spec.validate(), "");
  if (std::string skip =
          test::crossCompiledSkipReason(spec, c.config, /*runtime=*/nullptr);
      !skip.empty())
    GTEST_SKIP() << skip;
  if (std::string note = test::nativeBf16DotNote(spec, c.config); !note.empty())
    std::cout << "  " << c.name << ": " << note << "\n";
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const int64_t B = c.batch;
  std::mt19937 rng(99);
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
              v = fill(totalK * Hkv * D), dO = fill(totalQ * H * D);
  TypedBuffer o(spec.dtype, totalQ * H * D);
  TypedBuffer dq(spec.dtype, q.size()), dk(spec.dtype, k.size()),
      dv(spec.dtype, v.size());
  std::vector<float> lse(totalQ * H);
  std::vector<float> slopes;
  if (spec.hasAlibi() && spec.slopes == SlopeSource::Custom)
    slopes = test_inputs::customSlopes((c.slopesPerBatch ? B : 1) * H, 8, rng);
  std::vector<float> dslopes(slopes.size(), -1.0f);
  std::vector<uint8_t> kpm;
  if (c.padding)
    kpm = test_inputs::paddingMask(B, c.seqK);

  AttentionArgs args;
  BackwardArgs grads;
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
  if (!slopes.empty()) {
    args.slopes = c.slopesPerBatch ? TensorRef(slopes.data(), {B, H})
                                   : TensorRef(slopes.data(), {H});
    grads.dslopes = c.slopesPerBatch ? TensorRef(dslopes.data(), {B, H})
                                     : TensorRef(dslopes.data(), {H});
  }
  if (!kpm.empty())
    args.keyPaddingMask = TensorRef(kpm.data(), {B, c.seqK});
  args.qOffset = c.qOffset;
  args.kOffset = c.kOffset;
  auto like = [](TypedBuffer &t, const TensorRef &shape) {
    TensorRef r = shape;
    r.data = t.data();
    return r;
  };
  grads.gradO = like(dO, args.o);
  // An upstream gradient of lse too (a loss that reads lse): it joins D_i,
  // and the rows of dS then sum to it.
  std::vector<float> gradLse(lse.size());
  std::normal_distribution<float> unit(0.0f, 1.0f);
  for (float &x : gradLse)
    x = unit(rng);
  grads.gradLse = args.lse;
  grads.gradLse.data = gradLse.data();
  grads.dq = like(dq, args.q);
  grads.dk = like(dk, args.k);
  grads.dv = like(dv, args.v);

  ASSERT_EQ(runtime->run(spec, args), "");
  // Both CPU schedules (KernelABI.h), each against the reference.
  for (BackwardSchedule schedule :
       {BackwardSchedule::TwoPass, BackwardSchedule::Fused}) {
    SCOPED_TRACE(schedule == BackwardSchedule::Fused ? "fused" : "two passes");
    Runtime *rt = scheduledRuntime(schedule);
    for (TypedBuffer *t : {&dq, &dk, &dv})
      for (size_t i = 0; i < t->size(); ++i)
        t->set(i, -7.0f);
    std::fill(dslopes.begin(), dslopes.end(), -1.0f);
    ASSERT_EQ(rt->backward(spec, args, grads, Target::CPU, c.config), "");

    // The backward on strided q, k, v, o, grad_o, dq, dk, dv (Strided.h):
    // the same bits.
    {
      // (Varlen k, v, dk, dv with NaN rows past cu_seqlens_k's end.)
      const int64_t tail = spec.varlen ? test::kVarlenTailRows : 0;
      test::StridedCopy sq(args.q, spec.dtype, &q),
          sk(args.k, spec.dtype, &k, tail), sv(args.v, spec.dtype, &v, tail),
          so(args.o, spec.dtype, &o), sg(args.o, spec.dtype, &dO),
          sdq(args.q, spec.dtype), sdk(args.k, spec.dtype, nullptr, tail),
          sdv(args.v, spec.dtype, nullptr, tail);
      AttentionArgs strided = args;
      strided.q = sq.ref();
      strided.k = sk.ref();
      strided.v = sv.ref();
      strided.o = so.ref();
      BackwardArgs sgrads = grads;
      std::vector<float> sdslopes(dslopes.size(), -1.0f);
      if (!slopes.empty())
        sgrads.dslopes.data = sdslopes.data();
      sgrads.gradO = sg.ref();
      sgrads.dq = sdq.ref();
      sgrads.dk = sdk.ref();
      sgrads.dv = sdv.ref();
      ASSERT_EQ(rt->backward(spec, strided, sgrads, Target::CPU, c.config), "");
      EXPECT_TRUE(sdq.sameBitsAs(dq)) << c.name << ": strided dq";
      EXPECT_TRUE(sdk.sameBitsAs(dk)) << c.name << ": strided dk";
      EXPECT_TRUE(sdv.sameBitsAs(dv)) << c.name << ": strided dv";
      EXPECT_EQ(sdslopes, dslopes) << c.name << ": dslopes of the strided run";
    }

    reference::RoundedInputs rounded = reference::fromBuffers(
        q, k, v, slopes, c.slopesPerBatch, kpm, spec.varlen, cuQ, cuK);
    rounded.in.qOffset = c.qOffset;
    rounded.in.kOffset = c.kOffset;
    std::vector<float> dOf(dO.size());
    for (size_t i = 0; i < dOf.size(); ++i)
      dOf[i] = dO.get(i);
    Extents ext{B, spec.varlen ? totalQ : c.seqQ,
                spec.varlen ? totalK : c.seqK};
    reference::Gradients ref = reference::attentionBackward(
        spec, ext, rounded.in, dOf.data(), gradLse.data());
    reference::Gradients naive = reference::naiveBackwardSameDtype(
        spec, ext, rounded.in, dOf.data(), gradLse.data());

    std::printf("  %s (%s)\n", c.name.c_str(),
                schedule == BackwardSchedule::Fused ? "fused" : "two passes");
    const double worst = test::checkGradients(c.name, spec.dtype, dq, dk, dv,
                                              dslopes, ref, naive);
    RecordProperty("worst_error_ratio", std::to_string(worst));

    // Rows that see no key: dq exactly 0.
    int64_t emptyRows = 0;
    for (int64_t row = 0; row < totalQ * H; ++row) {
      const int64_t lseIdx = spec.varlen ? (row % H) * totalQ + row / H : row;
      if (!std::isinf(lse[lseIdx]))
        continue;
      ++emptyRows;
      for (int64_t d = 0; d < D; ++d)
        ASSERT_EQ(dq.get(row * D + d), 0.0f) << "fully masked row " << row;
    }
    std::printf("    worst error/bound %.3f, %lld empty rows\n", worst,
                (long long)emptyRows);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Backward, ::testing::ValuesIn(cases()));

/// The same call on one thread and on two gives the same bits, under each
/// schedule: every output element has one writer and a fixed summation
/// order.
TEST(BackwardDeterminism, OneThreadAndTwoThreadsAgreeBitForBit) {
  AttentionSpec spec;
  spec.heads = 8;
  spec.kvHeads = 2;
  spec.headDim = 64;
  spec.bias = BiasKind::Alibi;
  spec.slopes = SlopeSource::Custom;
  spec.causal = true;
  const int64_t B = 2, S = 300, H = 8, Hkv = 2, D = 64;
  std::mt19937 rng(7);
  TypedBuffer q = test_inputs::normalBuffer(DType::F32, B * H * S * D, rng),
              k = test_inputs::normalBuffer(DType::F32, B * Hkv * S * D, rng),
              v = test_inputs::normalBuffer(DType::F32, B * Hkv * S * D, rng),
              dO = test_inputs::normalBuffer(DType::F32, B * H * S * D, rng);
  std::vector<float> slopes = test_inputs::customSlopes(H, 8, rng);
  TypedBuffer o(DType::F32, q.size());
  std::vector<float> lse(B * H * S);
  AttentionArgs args;
  args.q = TensorRef(q.data(), {B, H, S, D});
  args.k = TensorRef(k.data(), {B, Hkv, S, D});
  args.v = TensorRef(v.data(), {B, Hkv, S, D});
  args.o = TensorRef(o.data(), {B, H, S, D});
  args.lse = TensorRef(lse.data(), {B, H, S});
  args.slopes = TensorRef(slopes.data(), {H});
  Compiler compiler;
  std::string cache = (std::filesystem::temp_directory_path() /
                       ("tilt-bwd-det-" + std::to_string(::getpid())))
                          .string();
  for (BackwardSchedule schedule :
       {BackwardSchedule::TwoPass, BackwardSchedule::Fused}) {
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2}) {
      RuntimeOptions options;
      options.cacheDir = cache;
      options.compiler = &compiler;
      options.threads = threads;
      options.backwardSchedule = schedule;
      Runtime rt(options);
      ASSERT_EQ(rt.run(spec, args), "");
      TypedBuffer dq(DType::F32, q.size()), dk(DType::F32, k.size()),
          dv(DType::F32, v.size());
      std::vector<float> ds(H);
      BackwardArgs g;
      g.gradO = TensorRef(dO.data(), {B, H, S, D});
      g.dq = TensorRef(dq.data(), {B, H, S, D});
      g.dk = TensorRef(dk.data(), {B, Hkv, S, D});
      g.dv = TensorRef(dv.data(), {B, Hkv, S, D});
      g.dslopes = TensorRef(ds.data(), {H});
      ASSERT_EQ(rt.backward(spec, args, g), "");
      std::vector<float> all = dq.f32;
      all.insert(all.end(), dk.f32.begin(), dk.f32.end());
      all.insert(all.end(), dv.f32.begin(), dv.f32.end());
      all.insert(all.end(), ds.begin(), ds.end());
      results.push_back(all);
      EXPECT_EQ(rt.stats().lastBackwardSchedule, schedule);
    }
    ASSERT_EQ(results[0].size(), results[1].size());
    EXPECT_EQ(std::memcmp(results[0].data(), results[1].data(),
                          results[0].size() * sizeof(float)),
              0)
        << (schedule == BackwardSchedule::Fused ? "fused" : "two passes");
  }
  std::filesystem::remove_all(cache);
}

/// A fused item whose heap would pass kFusedBackwardMaxHeapBytes runs two
/// passes even where the options ask for the fused schedule.
TEST(BackwardSchedule, FusedAskedForBeyondItsHeapBoundRunsTwoPasses) {
  AttentionSpec spec;
  spec.heads = spec.kvHeads = 1;
  spec.headDim = 128;
  spec.bias = BiasKind::Alibi;
  const int64_t Sk = int64_t(1) << 17, D = 128;
  ASSERT_GT(fusedBackwardHeapBytes(spec, 32, 64, Sk),
            kFusedBackwardMaxHeapBytes);
  std::mt19937 rng(5);
  TypedBuffer q = test_inputs::normalBuffer(DType::F32, D, rng),
              k = test_inputs::normalBuffer(DType::F32, Sk * D, rng),
              v = test_inputs::normalBuffer(DType::F32, Sk * D, rng),
              dO = test_inputs::normalBuffer(DType::F32, D, rng);
  TypedBuffer o(DType::F32, D), dq(DType::F32, D), dk(DType::F32, Sk * D),
      dv(DType::F32, Sk * D);
  std::vector<float> lse(1);
  AttentionArgs args;
  args.q = TensorRef(q.data(), {1, 1, 1, D});
  args.k = TensorRef(k.data(), {1, 1, Sk, D});
  args.v = TensorRef(v.data(), {1, 1, Sk, D});
  args.o = TensorRef(o.data(), {1, 1, 1, D});
  args.lse = TensorRef(lse.data(), {1, 1, 1});
  BackwardArgs g;
  g.gradO = TensorRef(dO.data(), {1, 1, 1, D});
  g.dq = TensorRef(dq.data(), {1, 1, 1, D});
  g.dk = TensorRef(dk.data(), {1, 1, Sk, D});
  g.dv = TensorRef(dv.data(), {1, 1, Sk, D});
  Compiler compiler;
  std::string cache = (std::filesystem::temp_directory_path() /
                       ("tilt-bwd-heap-" + std::to_string(::getpid())))
                          .string();
  {
    RuntimeOptions options;
    options.cacheDir = cache;
    options.compiler = &compiler;
    options.threads = 1;
    options.backwardSchedule = BackwardSchedule::Fused;
    Runtime rt(options);
    ASSERT_EQ(rt.run(spec, args), "");
    ASSERT_EQ(rt.backward(spec, args, g, Target::CPU,
                          TileConfig{"cpu_bwd_avx2", 32, 64}),
              "");
    EXPECT_EQ(rt.stats().lastBackwardSchedule, BackwardSchedule::TwoPass);
    // One query row: dv is P (a probability per key) times dO, so its
    // entries sum over the keys to dO.
    for (int64_t c = 0; c < D; c += 37) {
      double sum = 0;
      for (int64_t j = 0; j < Sk; ++j)
        sum += dv.get(size_t(j * D + c));
      EXPECT_NEAR(sum, dO.get(size_t(c)), 1e-3) << "column " << c;
    }
  }
  std::filesystem::remove_all(cache);
}

} // namespace
