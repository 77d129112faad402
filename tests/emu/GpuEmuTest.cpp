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

#include "CudaKernel.h"

#include "tilt/Compiler/Pipelines.h"
#include "tilt/Compiler/SpecBuilder.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/Half.h"
#include "tilt/KernelABI.h"
#include "tilt/Reference.h"

#include "../common/ForwardCheck.h"
#include "../common/GradientCheck.h"
#include "../common/Strided.h"
#include "../common/TestInputs.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <gtest/gtest.h>
#include <numeric>
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
  /// Run again on strided copies of q, k, v, o (StridedCopy): the same bits.
  bool strided = false;
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
    add("sm80_bf16_alibi_causal_tail", s, "gpu_sm80", 64, 32, 4, 2, 1, 100, 100)
        .strided = true;
  }
  {
    AttentionSpec s = spec(4, 2, 80, DType::F16, AlibiSymmetric);
    s.window = 37;
    add("sm80_f16_gqa_d80_symmetric_window_sq70_sk130", s, "gpu_sm80", 64, 32,
        4, 2, 2, 70, 130)
        .strided = true;
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
    EmuCase &c = add("sm80_bf16_mqa_varlen_custom_slopes_bh", s, "gpu_sm80", 64,
                     32, 4, 2, 3, 60, 75);
    c.slopesPerBatch = true;
    c.strided = true;
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
    add("sm90a_bf16_alibi_causal", s, "gpu_sm90a", 64, 64, 4, 2, 2, 150, 150)
        .strided = true;
  }
  {
    AttentionSpec s = spec(4, 2, 128, DType::F16, AlibiSymmetric);
    s.window = 50;
    add("sm90a_f16_gqa_d128_symmetric_window_two_warpgroups", s, "gpu_sm90a",
        128, 64, 8, 2, 1, 80, 200)
        .strided = true;
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
    add("sm90a_bf16_varlen_causal_custom_slopes", s, "gpu_sm90a", 64, 64, 4, 3,
        3, 70, 90)
        .strided = true;
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

/// A spec compiled to the GPU pipeline's kernel stage with a pinned tile
/// config: the gpu.func and its dynamic shared memory, or what failed.
struct CompiledKernel {
  mlir::MLIRContext ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  mlir::gpu::GPUFuncOp kernel;
  mlir::gpu::GPUFuncOp merge; ///< gpu_decode_sm80's tilt_merge
  int64_t smem = 0;
  /// gpu_bwd_sm80: `kernel` is tilt_attention_bwd_dq, this the second.
  mlir::gpu::GPUFuncOp dkdv;
  int64_t dkdvSmem = 0;
  std::string error;

  CompiledKernel(const AttentionSpec &s, const std::string &variantName,
                 int64_t bm, int64_t bn, int64_t warps, int64_t stages)
      : ctx(registry()) {
    std::string diagnostics;
    mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
      diagnostics += d.str() + "; ";
      return mlir::success();
    });
    SpecModuleOptions opts;
    opts.extents = {0, 0, 0};
    opts.withLse = true;
    opts.slopesPerBatch = true;
    auto variant = mlir::tilt::symbolizeKernelVariant(variantName);
    opts.backward = variant && mlir::tilt::isBackwardVariant(*variant);
    module = buildSpecModule(ctx, s, opts);
    if (!module || !variant) {
      error = "spec module or variant: " + diagnostics;
      return;
    }
    auto config =
        mlir::tilt::TileConfigAttr::get(&ctx, *variant, bm, bn, warps, stages);
    module->walk([&](mlir::tilt::AttentionOp op) { op.setConfigAttr(config); });
    module->walk(
        [&](mlir::tilt::AttentionBackwardOp op) { op.setConfigAttr(config); });
    mlir::PassManager pm(&ctx);
    mlir::tilt::GpuPipelineOptions pipeline;
    mlir::tilt::getGpuPipelineStages(pipeline).front().addPasses(pm);
    if (failed(pm.run(*module))) {
      error = "kernel stage: " + diagnostics;
      return;
    }
    module->walk([&](mlir::gpu::GPUFuncOp f) {
      if (f.getName() == kCudaKernelName || f.getName() == kCudaBwdDqKernelName)
        kernel = f;
      else if (f.getName() == kCudaBwdDkDvKernelName)
        dkdv = f;
      else if (f.getName() == kCudaMergeKernelName)
        merge = f;
    });
    auto smemAttr = kernel
                        ? kernel->getAttrOfType<mlir::IntegerAttr>("tilt.smem")
                        : nullptr;
    if (!smemAttr) {
      error = "no kernel with tilt.smem";
      return;
    }
    smem = smemAttr.getInt();
    if (dkdv)
      dkdvSmem = dkdv->getAttrOfType<mlir::IntegerAttr>("tilt.smem").getInt();
  }

private:
  static mlir::DialectRegistry registry() {
    mlir::DialectRegistry r;
    mlir::tilt::registerGpuPipelineDependencies(r);
    return r;
  }
};

/// A row-major memref argument over `data`.
emu::MemRefArg contiguous(void *data, std::vector<int64_t> sizes) {
  emu::MemRefArg m;
  m.data = data;
  m.sizes = sizes;
  m.strides.assign(sizes.size(), 1);
  for (int d = int(sizes.size()) - 2; d >= 0; --d)
    m.strides[d] = m.strides[d + 1] * sizes[d + 1];
  return m;
}

/// `t` (a TensorRef, through its strides) as a memref argument.
emu::MemRefArg memrefOf(const TensorRef &t) {
  emu::MemRefArg m;
  m.data = t.data;
  for (int d = 0; d < t.rank; ++d) {
    m.sizes.push_back(t.shape[d]);
    m.strides.push_back(t.stride(d));
  }
  return m;
}

/// The tensor map the runtime makes for `t` (CudaKernel.cpp's
/// tensorMapGeometry) as the emulator's argument; `usedRows`: varlen, the
/// last cu_seqlens entry.
emu::TensorMapArg tensorMapOf(const AttentionSpec &s, const TensorRef &t,
                              int64_t rows, int64_t usedRows) {
  const detail::TensorMapGeometry g =
      detail::tensorMapGeometry(s, t, rows, usedRows);
  EXPECT_EQ(detail::tensorMapError("t", t, g), "");
  emu::TensorMapArg m;
  m.data = t.data;
  m.elementBytes = byteWidth(s.dtype);
  m.boxRows = g.box[1];
  for (int d = 0; d < detail::TensorMapGeometry::kRank; ++d)
    m.dims[d] = int64_t(g.dims[d]);
  for (int d = 0; d + 1 < detail::TensorMapGeometry::kRank; ++d)
    m.strides[d] = int64_t(g.strides[d]);
  return m;
}

/// Varlen sequences of about seqQ / seqK tokens: one short query sequence,
/// one with no keys at all (fully masked rows).
void varlenSequences(int64_t B, int64_t seqQ, int64_t seqK,
                     std::vector<int32_t> &cuQ, std::vector<int32_t> &cuK,
                     int64_t &totalQ, int64_t &totalK) {
  for (int64_t b = 0; b < B; ++b) {
    cuQ.push_back(cuQ.back() + int32_t(b == 1 ? seqQ / 3 : seqQ));
    cuK.push_back(cuK.back() + int32_t(b == 2 ? 0 : seqK - 7 * b));
  }
  totalQ = cuQ.back();
  totalK = cuK.back();
}

/// Custom slopes ([rows, H]) when the spec takes them, else none.
std::vector<float> customSlopesFor(const AttentionSpec &s, int64_t rows,
                                   std::mt19937 &rng) {
  if (!s.hasAlibi() || s.slopes != SlopeSource::Custom)
    return {};
  return test_inputs::customSlopes(rows * s.heads, 6, rng);
}

/// The optional memrefs after lse (KernelABI.h): custom slopes as [B, H]
/// (batch stride 0 when given per head) and the key padding mask [B, Sk].
void pushSlopesAndMask(emu::Launch &launch, std::vector<float> &slopes,
                       bool slopesPerBatch, std::vector<uint8_t> &kpm,
                       int64_t B, int64_t H, int64_t seqK) {
  if (!slopes.empty()) {
    emu::MemRefArg m = contiguous(slopes.data(), {B, H});
    if (!slopesPerBatch)
      m.strides[0] = 0;
    launch.memrefs.push_back(m);
  }
  if (!kpm.empty())
    launch.memrefs.push_back(contiguous(kpm.data(), {B, seqK}));
}

class GpuEmu : public ::testing::TestWithParam<EmuCase> {};

TEST_P(GpuEmu, MatchesFloat64Reference) {
  const EmuCase &c = GetParam();
  const AttentionSpec &s = c.spec;
  ASSERT_EQ(s.validate(), "");
  const int64_t H = s.heads, Hkv = s.kvHeads, D = s.headDim, B = c.batch;

  CompiledKernel compiled(s, c.variant, c.blockM, c.blockN, c.warps, c.stages);
  ASSERT_EQ(compiled.error, "");
  mlir::gpu::GPUFuncOp kernel = compiled.kernel;

  // Inputs, as the CPU numerics suite makes them.
  std::mt19937 rng(4321);
  std::vector<int32_t> cuQ{0}, cuK{0};
  int64_t totalQ = B * c.seqQ, totalK = B * c.seqK, maxSq = c.seqQ;
  if (s.varlen)
    varlenSequences(B, c.seqQ, c.seqK, cuQ, cuK, totalQ, totalK);
  auto fill = [&](int64_t n) {
    return test_inputs::normalBuffer(s.dtype, n, rng);
  };
  TypedBuffer q = fill(totalQ * H * D), k = fill(totalK * Hkv * D),
              v = fill(totalK * Hkv * D);
  TypedBuffer o(s.dtype, totalQ * H * D);
  for (int64_t i = 0; i < totalQ * H * D; ++i)
    o.set(i, 12345.0f); // every element must be written
  std::vector<float> lse(size_t(totalQ * H), 777.0f);
  std::vector<float> slopes = customSlopesFor(s, c.slopesPerBatch ? B : 1, rng);
  std::vector<uint8_t> kpm =
      c.padding ? test_inputs::paddingMask(B, c.seqK) : std::vector<uint8_t>();

  // The kernel's arguments (KernelABI.h order), row-major.
  const TensorRef qRef = s.varlen ? TensorRef(q.data(), {totalQ, H, D})
                                  : TensorRef(q.data(), {B, H, c.seqQ, D});
  const TensorRef kRef = s.varlen ? TensorRef(k.data(), {totalK, Hkv, D})
                                  : TensorRef(k.data(), {B, Hkv, c.seqK, D});
  TensorRef vRef = kRef, oRef = qRef;
  vRef.data = v.data();
  oRef.data = o.data();
  emu::Launch launch;
  // Sets q, k, v, o (the first four memrefs) and their tensor maps.
  auto setData = [&](const TensorRef &tq, const TensorRef &tk,
                     const TensorRef &tv, const TensorRef &to) {
    const TensorRef *refs[4] = {&tq, &tk, &tv, &to};
    for (int i = 0; i < 4; ++i)
      launch.memrefs[size_t(i)] = memrefOf(*refs[i]);
    if (c.variant == "gpu_sm90a")
      launch.maps = {tensorMapOf(s, tq, c.blockM, cuQ.back()),
                     tensorMapOf(s, tk, c.blockN, cuK.back()),
                     tensorMapOf(s, tv, c.blockN, cuK.back())};
  };
  launch.memrefs.resize(4);
  launch.memrefs.push_back(s.varlen ? contiguous(lse.data(), {H, totalQ})
                                    : contiguous(lse.data(), {B, H, c.seqQ}));
  setData(qRef, kRef, vRef, oRef);
  pushSlopesAndMask(launch, slopes, c.slopesPerBatch, kpm, B, H, c.seqK);
  if (s.varlen) {
    launch.memrefs.push_back(contiguous(cuQ.data(), {B + 1}));
    launch.memrefs.push_back(contiguous(cuK.data(), {B + 1}));
    maxSq = 0;
    for (int64_t b = 0; b < B; ++b)
      maxSq = std::max<int64_t>(maxSq, cuQ[b + 1] - cuQ[b]);
  }
  if (s.positionOffsets)
    launch.scalars = {c.qOffset, c.kOffset};
  launch.grid[0] = std::max<int64_t>(1, (maxSq + c.blockM - 1) / c.blockM);
  launch.grid[1] = H;
  launch.grid[2] = B;
  launch.threads = 32 * c.warps;
  launch.smemBytes = compiled.smem;
  launch.onlyX = c.onlyBlocks;
  launch.onlyY = c.onlyHeads;
  ASSERT_EQ(emu::run(kernel, launch), "") << c.name;

  if (c.strided) {
    ASSERT_TRUE(c.onlyBlocks.empty() && c.onlyHeads.empty()) << c.name;
    // [B, S, H + 1, D] memory with NaN gaps (StridedCopy), varlen k and v
    // with NaN rows past cu_seqlens_k's end: only the addresses change, so
    // the bits must not; a gap or tail read shows as NaN.
    const int64_t tail = s.varlen ? test::kVarlenTailRows : 0;
    test::StridedCopy sq(qRef, s.dtype, &q), sk(kRef, s.dtype, &k, tail),
        sv(vRef, s.dtype, &v, tail), so(oRef, s.dtype);
    std::vector<float> slse(lse.size(), 555.0f);
    launch.memrefs[4].data = slse.data();
    setData(sq.ref(), sk.ref(), sv.ref(), so.ref());
    ASSERT_EQ(emu::run(kernel, launch), "") << c.name << " (strided)";
    EXPECT_TRUE(so.sameBitsAs(o)) << c.name << ": strided o differs";
    EXPECT_EQ(std::memcmp(slse.data(), lse.data(), lse.size() * sizeof(float)),
              0)
        << c.name << ": strided lse differs";
  }

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

// --- gpu_decode_sm80 ---------------------------------------------------------
//
// The decode family's GPU kernel (GpuEmitter.cpp): rows are a GQA group's
// heads x queries, split-KV parts merged by the module's second kernel
// (tilt_merge), dense or paged caches. Paged cases run three sequences of Sk,
// about Sk / 2 and 0 keys through a shuffled block table whose entries past
// each sequence's pages are garbage (a copy through one, even of zero
// bytes, fails the emulator's bounds check: without the kernel's clamp of
// masked rows into the sequence three of these cases fail); dense ones two
// of Sk keys. Sq {1, 2, 7, 16}, Sk {1, 17, 1000,
// 8192, 32768}, pages {16, 64, 256}, heads {12, 40, 71, 112} with MHA, GQA
// and MQA, bias none / alibi / alibi_symmetric, causal, windows, custom
// slopes, key padding and position offsets (the CPU decode kernels' set:
// alibi_positions runs on the prefill kernels), fully masked rows included.

struct DecodeCase {
  std::string name;
  AttentionSpec spec;
  int64_t seqQ = 1, seqK = 1;
  int64_t splits = 0; ///< the parts' count S (0: o and lse written directly)
  int64_t blockM = 16, blockN = 64, warps = 1, stages = 2;
  bool slopesPerBatch = false, padding = false;
  int64_t qOffset = 0, kOffset = 0;
  /// Run again on strided copies of q, k, v, o (StridedCopy): the same bits.
  bool strided = false;
};

void PrintTo(const DecodeCase &c, std::ostream *os) { *os << c.name; }

std::vector<DecodeCase> decodeCases() {
  std::vector<DecodeCase> out;
  auto add = [&](std::string name, AttentionSpec s, int64_t sq, int64_t sk,
                 int64_t splits) -> DecodeCase & {
    DecodeCase c;
    c.name = std::move(name);
    c.spec = s;
    c.seqQ = sq;
    c.seqK = sk;
    c.splits = splits;
    out.push_back(std::move(c));
    return out.back();
  };
  using enum BiasKind;
  {
    AttentionSpec s = spec(12, 4, 128, DType::BF16, Alibi);
    s.causal = true;
    add("gqa3_bf16_alibi_causal_sq1_sk1000", s, 1, 1000, 0).strided = true;
    s.pageSize = 16;
    add("gqa3_paged16_sq2_sk1000_split3", s, 2, 1000, 3).strided = true;
  }
  {
    AttentionSpec s = spec(40, 8, 64, DType::F16, AlibiSymmetric);
    s.pageSize = 64;
    s.window = 100;
    s.causal = true;
    // More splits than key blocks: the last parts see nothing.
    add("gqa5_f16_symmetric_window_paged64_sq7_sk17_split4", s, 7, 17, 4);
  }
  {
    AttentionSpec s = spec(71, 1, 128, DType::BF16, Alibi);
    s.causal = true;
    s.pageSize = 256;
    // 71 rows: five row blocks of a group, the last one partial.
    add("mqa71_paged256_sq1_sk8192_split4", s, 1, 8192, 4);
  }
  {
    AttentionSpec s = spec(112, 112, 64, DType::BF16, Alibi);
    s.causal = true;
    // Sq 16 > Sk 1: rows before the only key see nothing.
    add("mha112_sq16_sk1_masked_rows", s, 16, 1, 0);
  }
  {
    AttentionSpec s = spec(112, 56, 64, DType::BF16, None);
    s.pageSize = 16;
    add("gqa2_h112_no_bias_paged16_sq16_sk1000_split2", s, 16, 1000, 2).blockM =
        32;
  }
  {
    AttentionSpec s = spec(12, 12, 128, DType::F16, Alibi);
    s.slopes = SlopeSource::Custom;
    s.causal = true;
    s.pageSize = 64;
    add("mha12_custom_slopes_bh_paged64_sq1_sk32768_split8", s, 1, 32768, 8)
        .slopesPerBatch = true;
  }
  {
    AttentionSpec s = spec(40, 10, 128, DType::BF16, Alibi);
    s.slopes = SlopeSource::Custom;
    s.keyPaddingMask = true;
    DecodeCase &c =
        add("gqa4_custom_slopes_key_padding_sq2_sk1000_split3", s, 2, 1000, 3);
    c.padding = true;
  }
  {
    AttentionSpec s = spec(12, 4, 64, DType::BF16, Alibi);
    s.causal = true;
    s.positionOffsets = true;
    // Context parallelism: a query chunk far after its keys (anchors), and
    // the same with splits.
    DecodeCase &far = add("gqa3_offsets_far_sq7_sk1000", s, 7, 1000, 0);
    far.qOffset = 50000, far.kOffset = 20000;
    DecodeCase &split =
        add("gqa3_offsets_far_sq7_sk1000_split3", s, 7, 1000, 3);
    split.qOffset = 50000, split.kOffset = 20000;
    AttentionSpec w = spec(12, 4, 64, DType::F16, AlibiSymmetric);
    w.window = 40;
    w.positionOffsets = true;
    DecodeCase &sym =
        add("gqa3_offsets_symmetric_window_sq16_sk17_split2", w, 16, 17, 2);
    sym.qOffset = 300, sym.kOffset = 290;
  }
  {
    // Paged without splits; D 80, whose merge stores a partial column pair
    // run (40 pairs over 32 lanes).
    AttentionSpec p = spec(40, 10, 80, DType::F16, Alibi);
    p.causal = true;
    p.pageSize = 16;
    add("gqa4_f16_d80_paged16_sq1_sk1000", p, 1, 1000, 0).strided = true;
    AttentionSpec m = spec(12, 1, 80, DType::BF16, AlibiSymmetric);
    add("mqa12_d80_sq2_sk2048_split3", m, 2, 2048, 3).strided = true;
  }
  {
    AttentionSpec s = spec(40, 40, 128, DType::BF16, AlibiSymmetric);
    s.window = 300;
    add("mha40_symmetric_window_sq1_sk8192_split2_4warps", s, 1, 8192, 2)
        .warps = 4;
    out.back().blockM = 64;
  }
  return out;
}

class GpuDecodeEmu : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(GpuDecodeEmu, MatchesFloat64Reference) {
  const DecodeCase &c = GetParam();
  const AttentionSpec &s = c.spec;
  ASSERT_EQ(s.validate(), "");
  CompiledKernel compiled(s, "gpu_decode_sm80", c.blockM, c.blockN, c.warps,
                          c.stages);
  ASSERT_EQ(compiled.error, "");
  const int64_t H = s.heads, Hkv = s.kvHeads, D = s.headDim, Sq = c.seqQ;
  const int64_t ps = s.pageSize;
  std::mt19937 rng(2468);

  // Sequences: paged Sk, ~Sk/2, 0 keys; dense two of Sk.
  std::vector<int32_t> lens =
      ps ? std::vector<int32_t>{int32_t(c.seqK), int32_t((c.seqK + 1) / 2), 0}
         : std::vector<int32_t>{int32_t(c.seqK), int32_t(c.seqK)};
  const int64_t B = int64_t(lens.size());
  std::vector<int32_t> table;
  int64_t maxPages = 0, cacheRows = B * c.seqK;
  if (ps) {
    maxPages = (c.seqK + ps - 1) / ps + 2;
    int64_t used = 0;
    for (int32_t len : lens)
      used += (len + ps - 1) / ps;
    const int64_t numPages = used + 3;
    std::vector<int32_t> ids(static_cast<size_t>(numPages));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    const int32_t garbage[] = {-1, int32_t(numPages + 7), INT32_MAX, INT32_MIN};
    table.resize(size_t(B * maxPages));
    for (int64_t b = 0, next = 0; b < B; ++b)
      for (int64_t p = 0; p < maxPages; ++p)
        table[size_t(b * maxPages + p)] = p < (lens[size_t(b)] + ps - 1) / ps
                                              ? ids[size_t(next++)]
                                              : garbage[(b + p) % 4];
    cacheRows = numPages * ps;
  }
  auto fill = [&](int64_t n) {
    return test_inputs::normalBuffer(s.dtype, n, rng);
  };
  TypedBuffer q = fill(B * H * Sq * D), k = fill(cacheRows * Hkv * D),
              v = fill(cacheRows * Hkv * D);
  const int64_t rows = B * H * Sq;
  TypedBuffer o(s.dtype, size_t(rows * D));
  for (int64_t i = 0; i < rows * D; ++i)
    o.set(size_t(i), 12345.0f);     // every element must be written
  const float untouched = o.get(0); // 12345 in the dtype
  std::vector<float> lse(size_t(rows), 777.0f);
  const int64_t parts = std::max<int64_t>(1, c.splits);
  std::vector<float> oParts(size_t(parts * rows * D), 999.0f),
      lseParts(size_t(parts * rows), 999.0f);
  std::vector<float> slopes = customSlopesFor(s, c.slopesPerBatch ? B : 1, rng);
  std::vector<uint8_t> kpm =
      c.padding ? test_inputs::paddingMask(B, c.seqK) : std::vector<uint8_t>();

  emu::Launch launch;
  const TensorRef qRef(q.data(), {B, H, Sq, D}),
      kRef = ps ? TensorRef(k.data(), {cacheRows / ps, ps, Hkv, D})
                : TensorRef(k.data(), {B, Hkv, c.seqK, D});
  TensorRef vRef = kRef, oRef = qRef;
  vRef.data = v.data();
  oRef.data = o.data();
  for (const TensorRef &t : {qRef, kRef, vRef, oRef})
    launch.memrefs.push_back(memrefOf(t));
  launch.memrefs.push_back(contiguous(lse.data(), {B, H, Sq}));
  pushSlopesAndMask(launch, slopes, c.slopesPerBatch, kpm, B, H, c.seqK);
  if (ps) {
    launch.memrefs.push_back(contiguous(table.data(), {B, maxPages}));
    launch.memrefs.push_back(contiguous(lens.data(), {B}));
  }
  launch.memrefs.push_back(contiguous(oParts.data(), {c.splits, B, H, Sq, D}));
  launch.memrefs.push_back(contiguous(lseParts.data(), {c.splits, B, H, Sq}));
  if (s.positionOffsets)
    launch.scalars = {c.qOffset, c.kOffset};
  const int64_t groupRows = (H / Hkv) * Sq;
  launch.grid[0] = parts * ((groupRows + c.blockM - 1) / c.blockM);
  launch.grid[1] = Hkv;
  launch.grid[2] = B;
  launch.threads = 32 * c.warps;
  launch.smemBytes = compiled.smem;
  ASSERT_EQ(emu::run(compiled.kernel, launch), "") << c.name;

  // Split-KV: o is left to the merge kernel, which combines the parts and
  // adds the row constants split 0 left in lse (grid (Sq, H, B), one warp).
  auto runMerge = [&] {
    emu::Launch merge;
    merge.memrefs = {launch.memrefs[launch.memrefs.size() - 2],
                     launch.memrefs.back(), launch.memrefs[3],
                     launch.memrefs[4]};
    merge.grid[0] = Sq;
    merge.grid[1] = H;
    merge.grid[2] = B;
    merge.threads = 32;
    return emu::run(compiled.merge, merge);
  };
  if (c.splits > 0) {
    for (int64_t i = 0; i < rows * D; ++i)
      ASSERT_EQ(o.get(size_t(i)), untouched) << "o element " << i;
    ASSERT_TRUE(compiled.merge) << "no " << kCudaMergeKernelName;
    ASSERT_EQ(runMerge(), "") << c.name << " merge";
  }
  if (c.strided) {
    // As GpuEmu's strided cases: the same bits through other addresses
    // (a paged cache seen as [P, ps, Hkv, D] over [P, Hkv, ps + 1, D]).
    test::StridedCopy sq(qRef, s.dtype, &q), sk(kRef, s.dtype, &k),
        sv(vRef, s.dtype, &v), so(oRef, s.dtype);
    std::vector<float> slse(lse.size(), 555.0f);
    const TensorRef refs[4] = {sq.ref(), sk.ref(), sv.ref(), so.ref()};
    for (int i = 0; i < 4; ++i)
      launch.memrefs[size_t(i)] = memrefOf(refs[i]);
    launch.memrefs[4].data = slse.data();
    ASSERT_EQ(emu::run(compiled.kernel, launch), "") << c.name << " (strided)";
    if (c.splits > 0) {
      ASSERT_EQ(runMerge(), "") << c.name << " merge (strided)";
    }
    EXPECT_TRUE(so.sameBitsAs(o)) << c.name << ": strided o differs";
    EXPECT_EQ(std::memcmp(slse.data(), lse.data(), lse.size() * sizeof(float)),
              0)
        << c.name << ": strided lse differs";
  }

  reference::RoundedInputs rounded = reference::fromBuffers(
      q, k, v, slopes, c.slopesPerBatch, kpm, false, {}, {});
  rounded.in.qOffset = c.qOffset;
  rounded.in.kOffset = c.kOffset;
  if (ps) {
    rounded.in.blockTable = table.data();
    rounded.in.maxPages = maxPages;
    rounded.in.contextLens = lens.data();
  }
  const Extents ext{B, Sq, ps ? 0 : c.seqK};
  const reference::Outputs ref = reference::attention(s, ext, rounded.in);
  const test::ForwardComparison cmp = test::compareWithReference(
      s, ext, rounded.in, ref, o, lse, rows, [](int64_t r) { return r; });
  EXPECT_LE(cmp.err, cmp.bound) << c.name;
  EXPECT_LE(cmp.lseExcess, 1e-3) << c.name;
  // An empty sequence, an all-padded batch or causal rows before the first
  // key: fully masked rows must be among those checked.
  if (ps || c.padding || (s.causal && !s.positionOffsets && Sq > c.seqK)) {
    EXPECT_GT(cmp.emptyRows, 0) << c.name << ": no fully masked row checked";
  }
  std::printf("    %-52s %6lld rows: err %.2e (bound %.2e) lse err %.2e, "
              "%lld empty rows\n",
              c.name.c_str(), (long long)rows, cmp.err, cmp.bound, cmp.lseErr,
              (long long)cmp.emptyRows);
}

INSTANTIATE_TEST_SUITE_P(Kernels, GpuDecodeEmu,
                         ::testing::ValuesIn(decodeCases()),
                         [](const auto &info) { return info.param.name; });

} // namespace

// --- gpu_bwd_sm80 ------------------------------------------------------------
//
// The backward's two kernels (GpuBackward.cpp) run in order, the dQ kernel
// then the dK/dV kernel (which reads the row state and the slope gradient's
// parts the first wrote), on the forward's o (float64, rounded to the dtype)
// and lse (with an upstream gradient of lse as well as of o), and are held to
// ALIBI.md's gradient rule against the float64 reference as the CPU backward is
// (tests/numerics/BackwardTest.cpp): max abs error <= 2 x a naive same-dtype
// backward's + 1e-6; rows that see no key leave dq exactly 0; every element of
// dq, dk and dv is written.

struct BwdCase {
  std::string name;
  AttentionSpec spec;
  int64_t batch = 1, seqQ = 0, seqK = 0;
  int64_t blockM = 64, blockN = 64, warps = 4, stages = 2;
  bool slopesPerBatch = false, padding = false;
  int64_t qOffset = 0, kOffset = 0;
  /// Run again with q, k, v, o, grad_o, dq, dk, dv strided (StridedCopy):
  /// the same bits.
  bool strided = false;
};

void PrintTo(const BwdCase &c, std::ostream *os) { *os << c.name; }

std::vector<BwdCase> bwdCases() {
  std::vector<BwdCase> out;
  auto add = [&](std::string name, AttentionSpec s, int64_t b, int64_t sq,
                 int64_t sk) -> BwdCase & {
    BwdCase c;
    c.name = std::move(name);
    c.spec = s;
    c.batch = b;
    c.seqQ = sq;
    c.seqK = sk;
    out.push_back(std::move(c));
    return out.back();
  };
  auto tiles = [](BwdCase &c, int64_t bm, int64_t bn, int64_t w, int64_t st) {
    c.blockM = bm, c.blockN = bn, c.warps = w, c.stages = st;
  };
  using enum BiasKind;
  {
    AttentionSpec s = spec(4, 2, 64, DType::BF16, Alibi);
    s.causal = true;
    add("gqa2_bf16_alibi_causal_tail", s, 2, 100, 100).strided = true;
  }
  {
    AttentionSpec s = spec(2, 2, 80, DType::F16, AlibiSymmetric);
    s.window = 37;
    tiles(add("f16_d80_symmetric_window_sq70_sk130", s, 1, 70, 130), 32, 32, 2,
          2);
  }
  {
    AttentionSpec s = spec(2, 1, 64, DType::BF16, Alibi);
    s.slopes = SlopeSource::Custom;
    s.keyPaddingMask = true;
    s.causal = true;
    BwdCase &c =
        add("mqa_bf16_trainable_slopes_bh_padding_causal", s, 2, 90, 90);
    c.slopesPerBatch = true;
    c.padding = true;
    c.strided = true;
  }
  {
    AttentionSpec s = spec(3, 1, 64, DType::BF16, Alibi);
    s.slopes = SlopeSource::Custom;
    s.varlen = true;
    add("mqa_bf16_varlen_trainable_slopes_h", s, 3, 60, 75).strided = true;
  }
  {
    AttentionSpec s = spec(4, 2, 64, DType::BF16, Alibi);
    s.slopes = SlopeSource::Custom;
    s.causal = true;
    s.positionOffsets = true;
    BwdCase &c =
        add("offsets_far_chunk_causal_trainable_slopes", s, 1, 100, 130);
    c.qOffset = 50000;
    c.kOffset = 20000;
    AttentionSpec w = spec(2, 2, 64, DType::F16, AlibiSymmetric);
    w.slopes = SlopeSource::Custom;
    w.window = 40;
    w.positionOffsets = true;
    BwdCase &o = add("offsets_overlap_symmetric_window_slopes", w, 1, 80, 120);
    o.qOffset = 1000;
    o.kOffset = 950;
  }
  {
    // Bottom-right causal with Sq > Sk: the first 60 rows see no key.
    AttentionSpec s = spec(2, 2, 128, DType::F16, None);
    s.causal = true;
    add("f16_d128_no_bias_causal_masked_rows", s, 1, 130, 70);
  }
  {
    AttentionSpec s = spec(2, 2, 64, DType::BF16, Alibi);
    tiles(add("two_mtiles_per_warp_3_stages", s, 1, 150, 150), 128, 128, 4, 3);
  }
  {
    AttentionSpec s = spec(1, 1, 256, DType::BF16, Alibi);
    s.causal = true;
    tiles(add("d256_default_config", s, 1, 70, 90), 32, 32, 2, 1);
  }
  {
    // ALIBI.md's head counts at short sequences: 71 (MQA: one dK/dV CTA
    // runs the whole group, and its 64 threads sum the slope gradients of
    // 71 heads), 12 and 40 (GQA; the D = 128 default's one stage).
    AttentionSpec m = spec(71, 1, 64, DType::BF16, AlibiSymmetric);
    m.slopes = SlopeSource::Custom;
    tiles(add("h71_mqa_seq17_trainable_slopes_64_threads", m, 2, 17, 17), 32,
          32, 2, 1);
    AttentionSpec g = spec(40, 8, 128, DType::BF16, Alibi);
    g.causal = true;
    tiles(add("h40_gqa5_d128_seq17_one_stage", g, 1, 17, 17), 64, 64, 4, 1);
    AttentionSpec h = spec(12, 12, 64, DType::F16, Alibi);
    h.causal = true;
    add("h12_seq129_sq1_decode_row", h, 2, 1, 129);
  }
  {
    // alibi_positions: positions count the valid keys (every third key
    // padded; the last sequence wholly, so its rows see no key). A window
    // puts later query blocks' first visible block past key 0 (the dQ
    // kernel's base); 128-key blocks on 64 threads stage their positions
    // in two chunks.
    AttentionSpec p = spec(4, 2, 64, DType::BF16, AlibiPositions);
    p.keyPaddingMask = true;
    p.causal = true;
    add("positions_gqa2_bf16_padding_causal", p, 3, 100, 100).padding = true;
    AttentionSpec w = spec(2, 1, 64, DType::F16, AlibiPositions);
    w.keyPaddingMask = true;
    w.slopes = SlopeSource::Custom;
    w.window = 40;
    BwdCase &c =
        add("positions_mqa_f16_window_trainable_slopes_bh", w, 3, 70, 130);
    c.padding = true;
    c.slopesPerBatch = true;
    tiles(c, 32, 32, 2, 2);
    AttentionSpec t = spec(2, 2, 64, DType::BF16, AlibiPositions);
    t.keyPaddingMask = true;
    t.slopes = SlopeSource::Custom;
    t.causal = true;
    BwdCase &k = add("positions_trainable_slopes_h_two_chunks", t, 2, 150, 150);
    k.padding = true;
    tiles(k, 64, 128, 2, 1);
  }
  return out;
}

class GpuBwdEmu : public ::testing::TestWithParam<BwdCase> {};

TEST_P(GpuBwdEmu, GradientsMatchFloat64Reference) {
  const BwdCase &c = GetParam();
  const AttentionSpec &s = c.spec;
  ASSERT_EQ(s.validate(), "");
  const int64_t H = s.heads, Hkv = s.kvHeads, D = s.headDim, B = c.batch;
  CompiledKernel compiled(s, "gpu_bwd_sm80", c.blockM, c.blockN, c.warps,
                          c.stages);
  ASSERT_EQ(compiled.error, "");
  ASSERT_TRUE(compiled.dkdv) << "no " << kCudaBwdDkDvKernelName;

  std::mt19937 rng(2024);
  std::vector<int32_t> cuQ{0}, cuK{0};
  int64_t totalQ = B * c.seqQ, totalK = B * c.seqK;
  int64_t maxSq = c.seqQ, maxSk = c.seqK;
  if (s.varlen)
    varlenSequences(B, c.seqQ, c.seqK, cuQ, cuK, totalQ, totalK);
  auto fill = [&](int64_t n) {
    return test_inputs::normalBuffer(s.dtype, n, rng);
  };
  TypedBuffer q = fill(totalQ * H * D), k = fill(totalK * Hkv * D),
              v = fill(totalK * Hkv * D), dO = fill(totalQ * H * D);
  std::vector<float> slopes = customSlopesFor(s, c.slopesPerBatch ? B : 1, rng);
  std::vector<uint8_t> kpm =
      c.padding ? test_inputs::paddingMask(B, c.seqK) : std::vector<uint8_t>();
  reference::RoundedInputs rounded = reference::fromBuffers(
      q, k, v, slopes, c.slopesPerBatch, kpm, s.varlen, cuQ, cuK);
  rounded.in.qOffset = c.qOffset;
  rounded.in.kOffset = c.kOffset;
  const reference::Inputs &in = rounded.in;
  Extents ext{B, s.varlen ? totalQ : c.seqQ, s.varlen ? totalK : c.seqK};

  // The forward the backward reads: o in the dtype, lse in f32.
  reference::Outputs fwd = reference::attention(s, ext, in);
  TypedBuffer o(s.dtype, fwd.o.size());
  for (size_t i = 0; i < fwd.o.size(); ++i)
    o.set(i, float(fwd.o[i]));
  std::vector<float> lse(fwd.lse.begin(), fwd.lse.end());
  // An upstream gradient of lse too (as when a loss reads lse): it joins
  // D_i, and the rows of dS then sum to it.
  std::vector<float> gradLse(lse.size());
  std::normal_distribution<float> unit(0.0f, 1.0f);
  for (float &x : gradLse)
    x = unit(rng);
  TypedBuffer dq(s.dtype, q.size()), dk(s.dtype, k.size()),
      dv(s.dtype, v.size());
  for (TypedBuffer *t : {&dq, &dk, &dv})
    for (size_t i = 0; i < t->size(); ++i)
      t->set(i, 12345.0f); // every element must be written
  std::vector<float> rowState(lse.size() * 4, 777.0f);
  const int64_t queryBlocks =
      std::max<int64_t>(1, (maxSq + c.blockM - 1) / c.blockM);
  std::vector<float> dslopes, parts;
  // dslopes [B, H], or [1, H] for per-head slopes (the kernel sums over
  // the batch).
  const int64_t slopeRows = c.slopesPerBatch ? B : 1;
  if (!slopes.empty()) {
    dslopes.assign(size_t(slopeRows * H), -1.0f);
    parts.assign(size_t(B * H * queryBlocks), 0.0f);
  }

  // The parameters (KernelABI.h's backward order), row-major.
  emu::Launch launch;
  std::vector<int64_t> qShape = {B, H, c.seqQ, D}, kShape = {B, Hkv, c.seqK, D},
                       lseShape = {B, H, c.seqQ};
  if (s.varlen) {
    qShape = {totalQ, H, D};
    kShape = {totalK, Hkv, D};
    lseShape = {H, totalQ};
  }
  std::vector<int64_t> stateShape = lseShape;
  stateShape.push_back(4);
  launch.memrefs = {
      contiguous(q.data(), qShape),           contiguous(k.data(), kShape),
      contiguous(v.data(), kShape),           contiguous(o.data(), qShape),
      contiguous(dO.data(), qShape),          contiguous(lse.data(), lseShape),
      contiguous(gradLse.data(), lseShape),   contiguous(dq.data(), qShape),
      contiguous(dk.data(), kShape),          contiguous(dv.data(), kShape),
      contiguous(rowState.data(), stateShape)};
  // The launch's memrefs that are strided tensors (KernelABI.h), with the
  // row-major buffers they hold.
  const std::pair<size_t, TypedBuffer *> dataArgs[] = {
      {0, &q},  {1, &k},  {2, &v},  {3, &o},
      {4, &dO}, {7, &dq}, {8, &dk}, {9, &dv}};
  const size_t dslopesArg = launch.memrefs.size() + 1;
  if (!slopes.empty()) {
    emu::MemRefArg m = contiguous(slopes.data(), {B, H});
    if (!c.slopesPerBatch)
      m.strides[0] = 0;
    launch.memrefs.push_back(m);
    launch.memrefs.push_back(contiguous(dslopes.data(), {slopeRows, H}));
  }
  if (!kpm.empty())
    launch.memrefs.push_back(contiguous(kpm.data(), {B, c.seqK}));
  if (s.varlen) {
    launch.memrefs.push_back(contiguous(cuQ.data(), {B + 1}));
    launch.memrefs.push_back(contiguous(cuK.data(), {B + 1}));
    maxSq = maxSk = 0;
    for (int64_t b = 0; b < B; ++b) {
      maxSq = std::max<int64_t>(maxSq, cuQ[b + 1] - cuQ[b]);
      maxSk = std::max<int64_t>(maxSk, cuK[b + 1] - cuK[b]);
    }
  }
  if (!slopes.empty())
    launch.memrefs.push_back(contiguous(parts.data(), {B, H, queryBlocks}));
  if (s.positionOffsets)
    launch.scalars = {c.qOffset, c.kOffset};
  launch.threads = 32 * c.warps;
  launch.grid[2] = B;
  auto runBoth = [&](const char *label) {
    launch.grid[0] = queryBlocks;
    launch.grid[1] = H;
    launch.smemBytes = compiled.smem;
    ASSERT_EQ(emu::run(compiled.kernel, launch), "")
        << c.name << label << " (dq)";
    launch.grid[0] = std::max<int64_t>(1, (maxSk + c.blockN - 1) / c.blockN);
    launch.grid[1] = Hkv;
    launch.smemBytes = compiled.dkdvSmem;
    ASSERT_EQ(emu::run(compiled.dkdv, launch), "")
        << c.name << label << " (dk, dv)";
  };
  runBoth("");
  if (c.strided) {
    // [B, S, H + 1, D] memory with NaN gaps (StridedCopy), fresh scratch:
    // only the addresses change, so the gradients' bits must not.
    std::vector<test::StridedCopy> copies;
    copies.reserve(std::size(dataArgs));
    for (auto [arg, buffer] : dataArgs) {
      TensorRef like(buffer->data(), {});
      like.rank = int(launch.memrefs[arg].sizes.size());
      std::copy(launch.memrefs[arg].sizes.begin(),
                launch.memrefs[arg].sizes.end(), like.shape);
      const bool input = arg < 7;
      // Varlen k, v, dk, dv: NaN rows past cu_seqlens_k's end too.
      const bool keys = arg == 1 || arg == 2 || arg == 8 || arg == 9;
      copies.emplace_back(like, s.dtype, input ? buffer : nullptr,
                          s.varlen && keys ? test::kVarlenTailRows : 0);
      launch.memrefs[arg] = memrefOf(copies.back().ref());
    }
    std::vector<float> state2(rowState.size(), 777.0f),
        dslopes2(dslopes.size(), -1.0f), parts2(parts.size(), 0.0f);
    launch.memrefs[10].data = state2.data();
    if (!slopes.empty()) {
      launch.memrefs[dslopesArg].data = dslopes2.data();
      launch.memrefs.back().data = parts2.data();
    }
    runBoth(" (strided)");
    for (size_t i = 5; i < 8; ++i)
      EXPECT_TRUE(copies[i].sameBitsAs(*dataArgs[i].second))
          << c.name << ": strided "
          << (i == 5   ? "dq"
              : i == 6 ? "dk"
                       : "dv")
          << " differs";
    EXPECT_EQ(dslopes2, dslopes) << c.name << ": strided dslopes differ";
  }

  std::vector<float> dOf(dO.size());
  for (size_t i = 0; i < dOf.size(); ++i)
    dOf[i] = dO.get(i);
  reference::Gradients ref =
      reference::attentionBackward(s, ext, in, dOf.data(), gradLse.data());
  reference::Gradients naive =
      reference::naiveBackwardSameDtype(s, ext, in, dOf.data(), gradLse.data());
  std::printf("  %s\n", c.name.c_str());
  const double worst =
      test::checkGradients(c.name, s.dtype, dq, dk, dv, dslopes, ref, naive,
                           /*unwritten=*/12345.0);
  int64_t emptyRows = 0;
  for (int64_t row = 0; row < totalQ * H; ++row) {
    const int64_t lseIdx = s.varlen ? (row % H) * totalQ + row / H : row;
    if (!std::isinf(lse[size_t(lseIdx)]))
      continue;
    ++emptyRows;
    for (int64_t d = 0; d < D; ++d)
      ASSERT_EQ(dq.get(size_t(row * D + d)), 0.0f)
          << "fully masked row " << row;
  }
  std::printf("    worst error/bound %.3f, %lld empty rows\n", worst,
              (long long)emptyRows);
}

INSTANTIATE_TEST_SUITE_P(Kernels, GpuBwdEmu, ::testing::ValuesIn(bwdCases()),
                         [](const auto &info) { return info.param.name; });
