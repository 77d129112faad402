//===- GpuEmuTest.cpp - Tilt's GPU kernels, emulated, vs float64 ----------===//
//
// Compiles specs with convert-tilt-to-gpu (both variants), runs the kernel's
// IR in the CTA emulator (GpuEmulator.h) on random inputs and holds the
// result to ALIBI.md's rule against the float64 reference, as the CPU
// numerics suite does. Small shapes and tile configurations keep the
// interpreter fast; they still cover partial and fully masked blocks, every
// bias form and layout, and the pipelines' buffer rotation.
//
//===----------------------------------------------------------------------===//

#include "GpuEmulator.h"

#include "tilt/Compiler/Pipelines.h"
#include "tilt/Compiler/SpecBuilder.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/Half.h"
#include "tilt/Reference.h"

#include "../common/TestInputs.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include <cmath>
#include <gtest/gtest.h>
#include <algorithm>
#include <random>

using namespace tilt;

namespace {

struct EmuCase {
  std::string name;
  AttentionSpec spec;
  std::string variant; ///< gpu_sm80 | gpu_sm90a
  int64_t blockM, blockN, warps, stages;
  int64_t batch, seqQ, seqK;
  bool padding = false;        ///< key padding mask (last batch all padded)
  bool slopesPerBatch = false; ///< custom slopes [B,H] rather than [H]
  int64_t qOffset = 0, kOffset = 0; ///< with spec.positionOffsets
  /// Only these query blocks / heads are run and checked (empty: all).
  std::vector<int64_t> onlyBlocks, onlyHeads;
};

std::ostream &operator<<(std::ostream &os, const EmuCase &c) {
  return os << c.name;
}

AttentionSpec spec(int64_t h, int64_t hkv, int64_t d, DType dt,
                   BiasKind bias) {
  AttentionSpec s;
  s.heads = h;
  s.kvHeads = hkv;
  s.headDim = d;
  s.dtype = dt;
  s.bias = bias;
  return s;
}

std::vector<EmuCase> cases() {
  std::vector<EmuCase> out;
  auto add = [&](std::string name, AttentionSpec s, std::string variant,
                 int64_t bm, int64_t bn, int64_t w, int64_t st, int64_t b,
                 int64_t sq, int64_t sk) -> EmuCase & {
    EmuCase c;
    c.name = std::move(name);
    c.spec = s;
    c.variant = std::move(variant);
    c.blockM = bm, c.blockN = bn, c.warps = w, c.stages = st;
    c.batch = b, c.seqQ = sq, c.seqK = sk;
    out.push_back(std::move(c));
    return out.back();
  };
  using enum BiasKind;
  // sm_80: mma.sync + cp.async.
  {
    AttentionSpec s = spec(2, 2, 64, DType::BF16, Alibi);
    s.causal = true;
    add("sm80_bf16_alibi_causal_tail", s, "gpu_sm80", 64, 32, 4, 2, 1, 100,
        100);
  }
  {
    AttentionSpec s = spec(4, 2, 80, DType::F16, AlibiSymmetric);
    s.window = 37;
    add("sm80_f16_gqa_d80_symmetric_window_sq70_sk130", s, "gpu_sm80", 64,
        32, 4, 2, 1, 70, 130);
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::BF16, AlibiPositions);
    s.keyPaddingMask = true;
    s.causal = true;
    add("sm80_bf16_positions_padding_causal", s, "gpu_sm80", 64, 32, 4, 2, 2,
        90, 90)
        .padding = true;
  }
  {
    AttentionSpec s = spec(2, 1, 64, DType::BF16, Alibi);
    s.slopes = SlopeSource::Custom;
    s.varlen = true;
    add("sm80_bf16_mqa_varlen_custom_slopes_bh", s, "gpu_sm80", 64, 32, 4, 2,
        3, 60, 75)
        .slopesPerBatch = true;
  }
  {
    AttentionSpec s = spec(3, 3, 64, DType::F16, None);
    add("sm80_f16_no_bias_decode_sq1", s, "gpu_sm80", 64, 32, 4, 2, 2, 1, 77);
  }
  {
    AttentionSpec s = spec(3, 3, 64, DType::BF16, Alibi);
    s.headOffset = 2;
    s.totalHeads = 8;
    s.causal = true;
    add("sm80_bf16_head_offset_causal_sq40_sk20_masked_rows", s, "gpu_sm80",
        64, 32, 4, 2, 1, 40, 20);
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::BF16, Alibi);
    add("sm80_bf16_two_mtiles_per_warp_3_stages", s, "gpu_sm80", 128, 32, 4,
        3, 1, 150, 150);
  }
  {
    // The default configurations (getDefaultGpuConfig).
    AttentionSpec s = spec(2, 2, 128, DType::BF16, Alibi);
    s.causal = true;
    add("sm80_default_config_d128", s, "gpu_sm80", 128, 32, 8, 3, 1, 200,
        200);
    AttentionSpec s64 = spec(2, 2, 64, DType::F16, AlibiSymmetric);
    add("sm80_default_config_d64", s64, "gpu_sm80", 128, 64, 8, 2, 1, 150,
        150);
    AttentionSpec s256 = spec(1, 1, 256, DType::F16, Alibi);
    add("sm80_default_config_d256", s256, "gpu_sm80", 64, 32, 4, 2, 1, 70,
        90);
  }
  // sm_90a: TMA + mbarriers + wgmma.
  {
    AttentionSpec s = spec(2, 2, 128, DType::BF16, Alibi);
    s.causal = true;
    add("sm90a_default_config_d128", s, "gpu_sm90a", 128, 64, 8, 2, 1, 300,
        300);
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::BF16, Alibi);
    s.causal = true;
    add("sm90a_bf16_alibi_causal", s, "gpu_sm90a", 64, 64, 4, 2, 1, 150,
        150);
  }
  {
    AttentionSpec s = spec(4, 2, 128, DType::F16, AlibiSymmetric);
    s.window = 50;
    add("sm90a_f16_gqa_d128_symmetric_window_two_warpgroups", s,
        "gpu_sm90a", 128, 64, 8, 2, 1, 80, 200);
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::BF16, AlibiPositions);
    s.keyPaddingMask = true;
    add("sm90a_bf16_positions_padding", s, "gpu_sm90a", 64, 64, 4, 2, 2, 70,
        130)
        .padding = true;
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::BF16, Alibi);
    s.slopes = SlopeSource::Custom;
    s.varlen = true;
    s.causal = true;
    add("sm90a_bf16_varlen_causal_custom_slopes", s, "gpu_sm90a", 64, 64, 4,
        3, 3, 70, 90);
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::F16, Alibi);
    add("sm90a_f16_block_n_128", s, "gpu_sm90a", 64, 128, 4, 2, 1, 100, 300);
  }
  // ALIBI.md's sizes, on a sample of CTAs: heads past the largest power of
  // two (H = 112: slopes of the odd half-steps), 71 (prime, MQA), 40, 56,
  // D 96, sequences 17, 127-129, 2048 and 8192.
  {
    AttentionSpec s = spec(112, 112, 64, DType::BF16, Alibi);
    s.causal = true;
    EmuCase &c = add("sm80_h112_seq129", s, "gpu_sm80", 64, 32, 4, 2, 1, 129,
                     129);
    c.onlyHeads = {0, 1, 63, 64, 65, 111};
    EmuCase &h = add("sm90a_h112_seq129", s, "gpu_sm90a", 64, 64, 4, 2, 1,
                     129, 129);
    h.onlyHeads = {0, 63, 64, 111};
  }
  {
    AttentionSpec s = spec(71, 1, 80, DType::F16, AlibiSymmetric);
    add("sm80_h71_mqa_d80_seq127", s, "gpu_sm80", 64, 32, 4, 2, 1, 127, 127)
        .onlyHeads = {0, 35, 70};
  }
  {
    AttentionSpec s = spec(40, 8, 96, DType::BF16, Alibi);
    s.window = 100;
    add("sm80_h40_gqa_d96_seq128_window", s, "gpu_sm80", 64, 32, 4, 2, 2, 128,
        128)
        .onlyHeads = {0, 17, 39};
  }
  {
    AttentionSpec s = spec(56, 56, 128, DType::BF16, Alibi);
    s.causal = true;
    add("sm90a_h56_d128_seq17", s, "gpu_sm90a", 128, 64, 8, 2, 2, 17, 17)
        .onlyHeads = {0, 31, 32, 55};
  }
  {
    AttentionSpec s = spec(2, 2, 128, DType::BF16, Alibi);
    s.causal = true;
    EmuCase &c = add("sm90a_seq2048_causal", s, "gpu_sm90a", 128, 64, 8, 2, 1,
                     2048, 2048);
    c.onlyBlocks = {0, 7, 15};
    EmuCase &d = add("sm80_seq2048_causal", s, "gpu_sm80", 128, 64, 8, 2, 1,
                     2048, 2048);
    d.onlyBlocks = {0, 15};
  }
  {
    AttentionSpec s = spec(1, 1, 64, DType::F16, Alibi);
    s.window = 300;
    add("sm90a_seq8192_window", s, "gpu_sm90a", 64, 64, 4, 2, 1, 8192, 8192)
        .onlyBlocks = {0, 5, 127};
    AttentionSpec d = spec(2, 2, 64, DType::BF16, Alibi);
    add("sm90a_decode_sq1_sk8192", d, "gpu_sm90a", 64, 128, 4, 2, 1, 1, 8192);
  }
  // Position offsets (context parallelism): a query chunk after its keys
  // (far: the anchors keep the distances exact), one before them (causal
  // rows see nothing), overlapping chunks with a window.
  auto offsets = [](EmuCase &c, int64_t qOffset, int64_t kOffset) {
    c.spec.positionOffsets = true;
    c.qOffset = qOffset;
    c.kOffset = kOffset;
  };
  {
    AttentionSpec s = spec(4, 2, 64, DType::BF16, Alibi);
    s.causal = true;
    offsets(add("sm80_offsets_causal_far_chunk", s, "gpu_sm80", 64, 32, 4, 2, 1,
                100, 130),
            50000, 20000);
    offsets(add("sm80_offsets_causal_future_keys", s, "gpu_sm80", 64, 32, 4, 2,
                1, 70, 90),
            100, 150);
    offsets(add("sm90a_offsets_causal_overlap", s, "gpu_sm90a", 64, 64, 4, 2, 1,
                100, 200),
            1000, 950);
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::F16, AlibiSymmetric);
    s.window = 40;
    s.varlen = true;
    offsets(add("sm80_offsets_symmetric_window_varlen", s, "gpu_sm80", 64, 32,
                4, 2, 3, 60, 80),
            300, 280);
    AttentionSpec far = spec(2, 2, 128, DType::BF16, AlibiSymmetric);
    offsets(add("sm90a_offsets_symmetric_far", far, "gpu_sm90a", 128, 64, 8, 2,
                1, 20, 300),
            0, 3000000);
  }
  return out;
}

class GpuEmu : public ::testing::TestWithParam<EmuCase> {};

TEST_P(GpuEmu, MatchesFloat64Reference) {
  const EmuCase &c = GetParam();
  const AttentionSpec &s = c.spec;
  ASSERT_EQ(s.validate(), "");
  const int64_t H = s.heads, Hkv = s.kvHeads, D = s.headDim, B = c.batch;
  const int64_t e = byteWidth(s.dtype);

  // Compile to the kernel stage.
  mlir::DialectRegistry registry;
  mlir::tilt::registerGpuPipelineDependencies(registry);
  mlir::MLIRContext ctx(registry);
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
    diagnostics += d.str() + "; ";
    return mlir::success();
  });
  SpecModuleOptions opts;
  opts.extents = {0, 0, 0};
  opts.withLse = true;
  opts.slopesPerBatch = true;
  mlir::OwningOpRef<mlir::ModuleOp> module = buildSpecModule(ctx, s, opts);
  ASSERT_TRUE(module) << diagnostics;
  auto variant = mlir::tilt::symbolizeKernelVariant(c.variant);
  ASSERT_TRUE(variant);
  auto config = mlir::tilt::TileConfigAttr::get(&ctx, *variant, c.blockM,
                                                c.blockN, c.warps, c.stages);
  module->walk([&](mlir::tilt::AttentionOp op) { op.setConfigAttr(config); });
  mlir::PassManager pm(&ctx);
  mlir::tilt::GpuPipelineOptions pipeline;
  mlir::tilt::getGpuPipelineStages(pipeline).front().addPasses(pm);
  ASSERT_TRUE(succeeded(pm.run(*module))) << diagnostics;
  mlir::gpu::GPUFuncOp kernel;
  module->walk([&](mlir::gpu::GPUFuncOp f) { kernel = f; });
  ASSERT_TRUE(kernel);
  auto smemAttr = kernel->getAttrOfType<mlir::IntegerAttr>("tilt.smem");
  ASSERT_TRUE(smemAttr);

  // Inputs, as the CPU numerics suite makes them.
  std::mt19937 rng(4321);
  std::vector<int32_t> cuQ{0}, cuK{0};
  int64_t totalQ = B * c.seqQ, totalK = B * c.seqK, maxSq = c.seqQ;
  if (s.varlen) {
    // One short sequence, one with no keys at all (fully masked rows).
    for (int64_t b = 0; b < B; ++b) {
      cuQ.push_back(cuQ.back() + int32_t(b == 1 ? c.seqQ / 3 : c.seqQ));
      cuK.push_back(cuK.back() + int32_t(b == 2 ? 0 : c.seqK - 7 * b));
    }
    totalQ = cuQ.back();
    totalK = cuK.back();
  }
  auto fill = [&](int64_t n) {
    return test_inputs::normalBuffer(s.dtype, n, rng);
  };
  TypedBuffer q = fill(totalQ * H * D), k = fill(totalK * Hkv * D),
              v = fill(totalK * Hkv * D);
  TypedBuffer o(s.dtype, totalQ * H * D);
  for (int64_t i = 0; i < totalQ * H * D; ++i)
    o.set(i, 12345.0f); // every element must be written
  std::vector<float> lse(size_t(totalQ * H), 777.0f);
  std::vector<float> slopes;
  if (s.hasAlibi() && s.slopes == SlopeSource::Custom)
    slopes = test_inputs::customSlopes((c.slopesPerBatch ? B : 1) * H, 6, rng);
  std::vector<uint8_t> kpm;
  if (c.padding)
    kpm = test_inputs::paddingMask(B, c.seqK);

  // The kernel's arguments (KernelABI.h order), row-major.
  emu::Launch launch;
  auto contiguous = [](void *data, std::vector<int64_t> sizes) {
    emu::MemRefArg m;
    m.data = data;
    m.sizes = sizes;
    m.strides.assign(sizes.size(), 1);
    for (int d = int(sizes.size()) - 2; d >= 0; --d)
      m.strides[d] = m.strides[d + 1] * sizes[d + 1];
    return m;
  };
  if (s.varlen) {
    launch.memrefs = {contiguous(q.data(), {totalQ, H, D}),
                      contiguous(k.data(), {totalK, Hkv, D}),
                      contiguous(v.data(), {totalK, Hkv, D}),
                      contiguous(o.data(), {totalQ, H, D}),
                      contiguous(lse.data(), {H, totalQ})};
  } else {
    launch.memrefs = {contiguous(q.data(), {B, H, c.seqQ, D}),
                      contiguous(k.data(), {B, Hkv, c.seqK, D}),
                      contiguous(v.data(), {B, Hkv, c.seqK, D}),
                      contiguous(o.data(), {B, H, c.seqQ, D}),
                      contiguous(lse.data(), {B, H, c.seqQ})};
  }
  if (!slopes.empty()) {
    emu::MemRefArg m = contiguous(slopes.data(), {B, H});
    if (!c.slopesPerBatch)
      m.strides[0] = 0;
    launch.memrefs.push_back(m);
  }
  if (!kpm.empty())
    launch.memrefs.push_back(contiguous(kpm.data(), {B, c.seqK}));
  if (s.varlen) {
    launch.memrefs.push_back(contiguous(cuQ.data(), {B + 1}));
    launch.memrefs.push_back(contiguous(cuK.data(), {B + 1}));
    maxSq = 0;
    for (int64_t b = 0; b < B; ++b)
      maxSq = std::max<int64_t>(maxSq, cuQ[b + 1] - cuQ[b]);
  }
  if (s.positionOffsets)
    launch.scalars = {c.qOffset, c.kOffset};
  if (c.variant == "gpu_sm90a") {
    auto map = [&](TypedBuffer &t, int64_t rows, int64_t hx,
                   int64_t seq, int64_t box) {
      emu::TensorMapArg m;
      m.data = t.data();
      m.elementBytes = e;
      m.boxRows = box;
      if (s.varlen) {
        m.dims[0] = D, m.dims[1] = rows, m.dims[2] = hx;
        m.strides[0] = hx * D * e, m.strides[1] = D * e;
      } else {
        m.dims[0] = D, m.dims[1] = seq, m.dims[2] = B * hx;
        m.strides[0] = D * e, m.strides[1] = seq * D * e;
      }
      return m;
    };
    launch.maps = {map(q, totalQ, H, c.seqQ, c.blockM),
                   map(k, totalK, Hkv, c.seqK, c.blockN),
                   map(v, totalK, Hkv, c.seqK, c.blockN)};
  }
  launch.grid[0] = std::max<int64_t>(1, (maxSq + c.blockM - 1) / c.blockM);
  launch.grid[1] = H;
  launch.grid[2] = B;
  launch.threads = 32 * c.warps;
  launch.smemBytes = smemAttr.getInt();
  launch.onlyX = c.onlyBlocks;
  launch.onlyY = c.onlyHeads;
  ASSERT_EQ(emu::run(kernel, launch), "") << c.name;

  // Against the float64 reference, ALIBI.md's rule.
  reference::RoundedInputs rounded = reference::fromBuffers(
      q, k, v, slopes, c.slopesPerBatch, kpm, s.varlen, cuQ, cuK);
  rounded.in.qOffset = c.qOffset;
  rounded.in.kOffset = c.kOffset;
  const reference::Inputs &in = rounded.in;
  Extents ext{B, s.varlen ? totalQ : c.seqQ, s.varlen ? totalK : c.seqK};
  reference::Outputs ref = reference::attention(s, ext, in);
  std::vector<double> naive = reference::naiveSameDtype(s, ext, in);

  double err = 0, naiveErr = 0, lseErr = 0, lseExcess = 0;
  int64_t emptyRows = 0;
  auto sampled = [](const std::vector<int64_t> &only, int64_t i) {
    return only.empty() || std::find(only.begin(), only.end(), i) != only.end();
  };
  int64_t checked = 0;
  for (int64_t row = 0; row < totalQ * H; ++row) {
    // Dense rows are [B,H,Sq] (varlen: [totalQ,H]); skip unsampled CTAs.
    int64_t head = s.varlen ? row % H : (row / c.seqQ) % H;
    int64_t qi = s.varlen ? -1 : row % c.seqQ;
    if (!sampled(c.onlyHeads, head) ||
        (qi >= 0 && !sampled(c.onlyBlocks, qi / c.blockM)))
      continue;
    ++checked;
    int64_t lseIdx = s.varlen ? (row % H) * totalQ + row / H : row;
    double r = ref.lse[size_t(lseIdx)];
    if (std::isinf(r)) {
      ++emptyRows;
      EXPECT_TRUE(std::isinf(lse[size_t(lseIdx)]) && lse[size_t(lseIdx)] < 0)
          << "lse of fully masked row " << row << " is " << lse[size_t(lseIdx)];
      for (int64_t d = 0; d < D; ++d)
        ASSERT_EQ(o.get(size_t(row * D + d)), 0.0f)
            << "fully masked row " << row;
      continue;
    }
    // Beyond the absolute bound, 4 ulps of the lse's own magnitude (far
    // position offsets make it large).
    const double e = std::abs(double(lse[size_t(lseIdx)]) - r);
    lseErr = std::max(lseErr, e);
    lseExcess = std::max(lseExcess, e - std::ldexp(std::abs(r), -21));
    for (int64_t d = 0; d < D; ++d) {
      size_t i = size_t(row * D + d);
      float x = o.get(i);
      ASSERT_TRUE(std::isfinite(x)) << "row " << row << " d " << d;
      err = std::max(err, std::abs(double(x) - ref.o[i]));
      naiveErr = std::max(naiveErr, std::abs(naive[i] - ref.o[i]));
    }
  }
  const double bound = reference::errorBound(s.dtype, naiveErr);
  EXPECT_GT(checked, 0) << c.name;
  EXPECT_LE(err, bound) << c.name;
  EXPECT_LE(lseExcess, 1e-3) << c.name;
  std::printf("    %-50s %6lld rows: err %.2e (bound %.2e) lse err %.2e, "
              "%lld empty rows\n",
              c.name.c_str(), (long long)checked, err, bound, lseErr,
              (long long)emptyRows);
}

INSTANTIATE_TEST_SUITE_P(Kernels, GpuEmu, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

} // namespace
