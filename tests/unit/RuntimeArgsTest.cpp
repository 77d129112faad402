//===- RuntimeArgsTest.cpp - One test per argument error ------------------===//
//
// Every message run() can give about its arguments, exactly, and that a
// rejected call writes nothing and compiles nothing.
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestSupport.h"

namespace {

using namespace tilt;
using namespace tilt::test;

class RuntimeArgs : public ::testing::Test {
protected:
  RuntimeArgs() : rt({dir.path(), 2, &compiler}) {}

  /// A valid problem: H = 12, Hkv = 4, D = 64, B = 2, Sq = Sk = 16.
  static Problem dense(bool customSlopes = false, bool kpm = false) {
    AttentionSpec s;
    s.heads = 12;
    s.kvHeads = 4;
    s.headDim = 64;
    s.bias = kpm ? BiasKind::AlibiPositions : BiasKind::Alibi;
    s.slopes = customSlopes ? SlopeSource::Custom : SlopeSource::Standard;
    s.keyPaddingMask = kpm;
    return Problem::dense(s, 2, 16, 16);
  }

  /// A valid varlen problem: sequences of 100 and 156 queries (256 in all).
  static Problem varlen() {
    AttentionSpec s;
    s.heads = 12;
    s.kvHeads = 4;
    s.headDim = 64;
    s.varlen = true;
    return Problem::varlen(s, {100, 156}, {100, 156});
  }

  /// Expects run() to fail with exactly `message`, leaving o and lse alone.
  void expectError(Problem &p, const AttentionArgs &args,
                   const std::string &message, Target target = Target::CPU) {
    EXPECT_EQ(rt.run(p.spec, args, target), message);
    for (float x : p.o)
      ASSERT_TRUE(std::isnan(x)) << "o was written";
    for (float x : p.lse)
      ASSERT_TRUE(std::isnan(x)) << "lse was written";
    EXPECT_EQ(compiler.compiles, 0);
  }

  FakeCompiler compiler;
  TempDir dir;
  Runtime rt;
};

TEST_F(RuntimeArgs, ValidProblemsRun) {
  for (Problem p : {dense(), dense(true), dense(false, true), varlen()}) {
    AttentionArgs args = p.args();
    EXPECT_EQ(rt.run(p.spec, args), "") << p.spec.canonical();
  }
}

TEST_F(RuntimeArgs, StatsNameTheLastKernel) {
  Problem p = dense();
  AttentionArgs args = p.args();
  // (What the kernel's own info says: the fake compiler's default.)
  ASSERT_EQ(rt.run(p.spec, args), "");
  EXPECT_EQ(rt.stats().lastKernel.variant, "cpu_naive");
  EXPECT_EQ(rt.stats().lastKernel.blockM, 16);
  ASSERT_EQ(rt.run(p.spec, args, Target::CPU, naiveConfig(32)), "");
  EXPECT_EQ(rt.stats().lastKernel.blockM, 32);
  // A refused call leaves it.
  args.q = TensorRef();
  EXPECT_NE(rt.run(p.spec, args), "");
  EXPECT_EQ(rt.stats().lastKernel.blockM, 32);
}

// Strides (TensorRef): q, k, v, o may be strided, D contiguous, an output
// without overlap; every other tensor row-major.
TEST_F(RuntimeArgs, InnermostStrideMustBeOne) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.q = args.q.withStrides({12288, 64, 768, 2});
  expectError(p, args,
              "q: the innermost stride must be 1 (D elements contiguous), got "
              "strides [12288, 64, 768, 2]");
}

TEST_F(RuntimeArgs, NegativeStride) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.k = args.k.withStrides({4096, 1024, -64, 1});
  expectError(p, args, "k: strides must be >= 0, got [4096, 1024, -64, 1]");
}

TEST_F(RuntimeArgs, StridesReachTooFar) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.v = args.v.withStrides({int64_t(1) << 62, 1024, 64, 1});
  expectError(p, args,
              "v: strides [4611686018427387904, 1024, 64, 1] for shape [2, 4, "
              "16, 64] reach past 2^62 elements");
}

TEST_F(RuntimeArgs, OverlappingOutput) {
  Problem p = dense();
  AttentionArgs args = p.args();
  // Both batches on the same elements: a race, refused. An input may be
  // broadcast so (k, v), an output may not.
  args.k = args.k.withStrides({0, 1024, 64, 1});
  args.v = args.v.withStrides({0, 1024, 64, 1});
  args.o = args.o.withStrides({0, 1024, 64, 1});
  expectError(p, args,
              "o: strides [0, 1024, 64, 1] for shape [2, 12, 16, 64] make "
              "elements overlap; an output needs a distinct element for "
              "every index");
  // Heads and rows interleaved so that rows of one head land on another.
  args.o = args.o.withStrides({12288, 64, 32, 1});
  expectError(p, args,
              "o: strides [12288, 64, 32, 1] for shape [2, 12, 16, 64] make "
              "elements overlap; an output needs a distinct element for "
              "every index");
}

TEST_F(RuntimeArgs, OtherTensorsMustBeRowMajor) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.lse = args.lse.withStrides({192, 1, 12});
  expectError(p, args,
              "lse: must be row-major (strides [192, 16, 1] for shape [2, 12, "
              "16]), got strides [192, 1, 12]");
  // Strides that agree with the row-major ones are fine (size-1 dims'
  // strides do not matter).
  args.lse = args.lse.withStrides({192, 16, 1});
  args.o = args.o.withStrides({12288, 1024, 64, 1});
  EXPECT_EQ(rt.run(p.spec, args), "");
}

TEST_F(RuntimeArgs, IndexTensorsMustBeRowMajorBeforeTheyAreRead) {
  // cu_seqlens are read by the checks, row-major: strided ones are refused
  // before (all-zero strides mean row-major, TensorRef).
  Problem p = varlen();
  AttentionArgs args = p.args();
  args.cuSeqlensQ = args.cuSeqlensQ.withStrides({2});
  expectError(
      p, args,
      "cu_seqlens_q: must be row-major (strides [1] for shape [3]), got "
      "strides [2]");
}

TEST_F(RuntimeArgs, OutputsMustNotOverlapInputs) {
  Problem p = dense();
  AttentionArgs args = p.args();
  AttentionArgs inPlace = args;
  inPlace.o.data = args.q.data;
  expectError(p, inPlace, "o: must not share memory with q");
  AttentionArgs lseOnO = args;
  lseOnO.lse.data = args.o.data;
  expectError(p, lseOnO, "lse: must not share memory with o");
}

TEST(TensorRefStrides, ZeroSizeTensorsAreRowMajorWhateverTheirStrides) {
  float x = 0;
  // PyTorch gives a contiguous [2, 12, 0, 64] tensor strides {768, 64, 64,
  // 1}: no element to place, so nothing to refuse.
  TensorRef t = TensorRef(&x, {2, 12, 0, 64}).withStrides({768, 64, 64, 1});
  EXPECT_TRUE(t.hasStrides());
  EXPECT_TRUE(t.rowMajor());
  EXPECT_FALSE(
      TensorRef(&x, {2, 12, 1, 64}).withStrides({768, 64, 64, 2}).rowMajor());
}

TEST_F(RuntimeArgs, CudaChecksStridesBeforeTheDevice) {
  // The CUDA kernels take q, k, v, o through their strides too; what they
  // cannot take is refused before any device is probed.
  Problem p = dense();
  AttentionArgs args = p.args();
  args.q = args.q.withStrides({12288, 64, 768, 2});
  expectError(p, args,
              "q: the innermost stride must be 1 (D elements contiguous), got "
              "strides [12288, 64, 768, 2]",
              Target::CUDA);
  args = p.args();
  args.lse = args.lse.withStrides({16, 32, 1});
  expectError(p, args,
              "lse: must be row-major (strides [192, 16, 1] for shape [2, 12, "
              "16]), got strides [16, 32, 1]",
              Target::CUDA);
  // The kernels copy 16 bytes at a time: rows 8 bytes off are refused.
  args = p.args();
  args.q = args.q.withStrides({12288, 64, 770, 1});
  expectError(p, args,
              "q: on target cuda its address and strides must be multiples "
              "of 16 bytes, got strides [12288, 64, 770, 1] (elements of 4 "
              "bytes)",
              Target::CUDA);
  // [B, S, H, D] memory passes the stride checks: what stops it here is
  // the missing GPU (or, with one, nothing).
  args = p.args();
  args.q = args.q.withStrides({12288, 64, 768, 1});
  const std::string err = rt.run(p.spec, args, Target::CUDA);
  EXPECT_EQ(err.rfind("q:", 0), std::string::npos) << err;
}

TEST_F(RuntimeArgs, InvalidSpec) {
  Problem p = dense();
  AttentionArgs args = p.args();
  p.spec.kvHeads = 5;
  expectError(p, args, "invalid spec: kv_heads (5) must divide heads (12)");
}

TEST_F(RuntimeArgs, MissingTensor) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.v = TensorRef();
  expectError(p, args, "v: missing (null data pointer)");
}

TEST_F(RuntimeArgs, NullDataWithShape) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.lse.data = nullptr;
  expectError(p, args, "lse: data is null but a shape [2, 12, 16] is given");
}

TEST_F(RuntimeArgs, UnsupportedRank) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.q = TensorRef(p.q.data(), {1, 2, 12, 16, 64});
  expectError(p, args, "q: rank 5 is not supported (1 to 4)");
}

TEST_F(RuntimeArgs, QueryShape) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.q = TensorRef(p.q.data(), {1, 8, 128, 64});
  expectError(p, args,
              "q: expected shape [B, 12, Sq, 64] ([B, H, Sq, D]), got "
              "[1, 8, 128, 64]");
}

TEST_F(RuntimeArgs, NegativeDimension) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.q.shape[2] = -1;
  expectError(p, args,
              "q: expected shape [B, 12, Sq, 64] ([B, H, Sq, D]), got "
              "[2, 12, -1, 64]");
}

TEST_F(RuntimeArgs, KeyBatchDiffersFromQuery) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.k.shape[0] = 1;
  expectError(p, args,
              "k: expected shape [2, 4, Sk, 64] ([B, Hkv, Sk, D], B from q), "
              "got [1, 4, 16, 64]");
}

TEST_F(RuntimeArgs, ValueShapeDiffersFromKey) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.v.shape[2] = 15;
  expectError(p, args,
              "v: expected the shape of k [2, 4, 16, 64], got [2, 4, 15, 64]");
}

TEST_F(RuntimeArgs, OutputShapeDiffersFromQuery) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.o = TensorRef(p.o.data(), {2, 12, 16, 32});
  expectError(
      p, args,
      "o: expected the shape of q [2, 12, 16, 64], got [2, 12, 16, 32]");
}

TEST_F(RuntimeArgs, LseShape) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.lse = TensorRef(p.lse.data(), {2, 12});
  expectError(p, args, "lse: expected [B, H, Sq] = [2, 12, 16], got [2, 12]");
}

TEST_F(RuntimeArgs, SlopesRequired) {
  Problem p = dense(/*customSlopes=*/true);
  AttentionArgs args = p.args();
  args.slopes = TensorRef();
  expectError(p, args,
              "slopes: required by slopes = custom (f32 [H] or [B, H])");
}

TEST_F(RuntimeArgs, SlopesShape) {
  Problem p = dense(/*customSlopes=*/true);
  AttentionArgs args = p.args();
  args.slopes = TensorRef(p.slopes.data(), {4});
  expectError(p, args,
              "slopes: expected f32 [H] = [12] or [B, H] = [2, 12], got [4]");
}

TEST_F(RuntimeArgs, SlopesNotUsed) {
  Problem p = dense();
  AttentionArgs args = p.args();
  std::vector<float> slopes(12, 0.5f);
  args.slopes = TensorRef(slopes.data(), {12});
  expectError(p, args,
              "slopes: given, but the spec's slopes are standard (set slopes "
              "= custom)");
}

TEST_F(RuntimeArgs, SlopesWithoutBias) {
  Problem p = dense();
  p.spec.bias = BiasKind::None;
  AttentionArgs args = p.args();
  std::vector<float> slopes(12, 0.5f);
  args.slopes = TensorRef(slopes.data(), {12});
  expectError(p, args,
              "slopes: given, but the spec's slopes are unused (bias is none)");
}

TEST_F(RuntimeArgs, PaddingMaskRequired) {
  Problem p = dense(false, /*kpm=*/true);
  AttentionArgs args = p.args();
  args.keyPaddingMask = TensorRef();
  expectError(p, args,
              "key_padding_mask: required by the spec (uint8 [B, Sk])");
}

TEST_F(RuntimeArgs, PaddingMaskShape) {
  Problem p = dense(false, /*kpm=*/true);
  AttentionArgs args = p.args();
  args.keyPaddingMask.shape[1] = 15;
  expectError(p, args,
              "key_padding_mask: expected [B, Sk] = [2, 16], got [2, 15]");
}

TEST_F(RuntimeArgs, PaddingMaskNotInSpec) {
  Problem p = dense();
  AttentionArgs args = p.args();
  std::vector<uint8_t> mask(2 * 16, 1);
  args.keyPaddingMask = TensorRef(mask.data(), {2, 16});
  expectError(p, args,
              "key_padding_mask: given, but the spec has no key padding mask "
              "(set key_padding_mask)");
}

TEST_F(RuntimeArgs, OffsetsNotInSpec) {
  Problem p = dense();
  AttentionArgs args = p.args();
  args.kOffset = 7;
  expectError(p, args,
              "k_offset: given (7), but the spec has no position offsets (set "
              "position_offsets)");
}

TEST_F(RuntimeArgs, OffsetsRange) {
  Problem p = dense();
  p.spec.positionOffsets = true;
  AttentionArgs args = p.args();
  args.qOffset = -1;
  expectError(p, args,
              "q_offset: must be in [0, 16777200] so that positions stay below "
              "2^24 for a sequence of 16, got -1");
  args.qOffset = 0;
  args.kOffset = kMaxPosition - 15;
  expectError(p, args,
              "k_offset: must be in [0, 16777200] so that positions stay below "
              "2^24 for a sequence of 16, got 16777201");
}

TEST_F(RuntimeArgs, CuSeqlensWithoutVarlen) {
  Problem p = dense();
  AttentionArgs args = p.args();
  std::vector<int32_t> cu = {0, 16, 32};
  args.cuSeqlensK = TensorRef(cu.data(), {3});
  expectError(p, args, "cu_seqlens_k: given, but the spec is not varlen");
}

TEST_F(RuntimeArgs, VarlenQueryShape) {
  Problem p = varlen();
  AttentionArgs args = p.args();
  args.q = TensorRef(p.q.data(), {1, 256, 12, 64});
  expectError(p, args,
              "q: expected shape [totalQ, 12, 64] ([totalQ, H, D], varlen), "
              "got [1, 256, 12, 64]");
}

TEST_F(RuntimeArgs, VarlenKeyShape) {
  Problem p = varlen();
  AttentionArgs args = p.args();
  args.k.shape[1] = 12;
  expectError(p, args,
              "k: expected shape [totalK, 4, 64] ([totalK, Hkv, D], varlen), "
              "got [256, 12, 64]");
}

TEST_F(RuntimeArgs, VarlenLseShape) {
  Problem p = varlen();
  AttentionArgs args = p.args();
  args.lse = TensorRef(p.lse.data(), {256, 12});
  expectError(p, args,
              "lse: expected [H, totalQ] = [12, 256] (varlen), got [256, 12]");
}

TEST_F(RuntimeArgs, CuSeqlensQRequired) {
  Problem p = varlen();
  AttentionArgs args = p.args();
  args.cuSeqlensQ = TensorRef();
  expectError(p, args, "cu_seqlens_q: required by varlen (int32 [B+1])");
}

TEST_F(RuntimeArgs, CuSeqlensKRequired) {
  Problem p = varlen();
  AttentionArgs args = p.args();
  args.cuSeqlensK = TensorRef();
  expectError(p, args, "cu_seqlens_k: required by varlen (int32 [B+1])");
}

TEST_F(RuntimeArgs, CuSeqlensQShape) {
  Problem p = varlen();
  AttentionArgs args = p.args();
  args.cuSeqlensQ.shape[0] = 1;
  expectError(p, args,
              "cu_seqlens_q: expected int32 [B+1] with B >= 1, got [1]");
}

TEST_F(RuntimeArgs, CuSeqlensKLengthDiffers) {
  Problem p = varlen();
  AttentionArgs args = p.args();
  std::vector<int32_t> cu = {0, 10, 20, 30};
  args.cuSeqlensK = TensorRef(cu.data(), {4});
  expectError(p, args,
              "cu_seqlens_k: expected [B+1] = [3] like cu_seqlens_q, got [4]");
}

TEST_F(RuntimeArgs, CuSeqlensMustStartAtZero) {
  Problem p = varlen();
  p.cuQ = {1, 100, 256};
  AttentionArgs args = p.args();
  expectError(p, args, "cu_seqlens_q: must be non-decreasing and start at 0");
}

TEST_F(RuntimeArgs, CuSeqlensMustNotDecrease) {
  Problem p = varlen();
  p.cuK = {0, 120, 110};
  AttentionArgs args = p.args();
  expectError(p, args, "cu_seqlens_k: must be non-decreasing and start at 0");
}

TEST_F(RuntimeArgs, SlopesMustBeFinite) {
  Problem p = dense(true); // custom [H] slopes
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    p.slopes[3] = bad;
    AttentionArgs args = p.args();
    expectError(
        p, args,
        fmt::format("slopes: element 3 is {}; slopes must be finite", bad));
  }
}

TEST_F(RuntimeArgs, CuSeqlensQExceedsTotal) {
  Problem p = varlen();
  p.cuQ = {0, 100, 300};
  AttentionArgs args = p.args();
  expectError(p, args, "cu_seqlens_q: last offset 300 exceeds q's total 256");
}

TEST_F(RuntimeArgs, CuSeqlensKExceedsTotal) {
  Problem p = varlen();
  p.cuK = {0, 100, 257};
  AttentionArgs args = p.args();
  expectError(p, args, "cu_seqlens_k: last offset 257 exceeds k's total 256");
}

/// A paged cache for dense(): 5 pages of 16 tokens, sequences of 16 and 7
/// keys in pages 3 and 1; table entries past them are garbage.
struct PagedCache {
  std::vector<float> k = std::vector<float>(5 * 16 * 4 * 64, 0.0f);
  std::vector<int32_t> table = {3, -9, 1, 99};
  std::vector<int32_t> lens = {16, 7};
  void into(AttentionArgs &a) {
    a.k = TensorRef(k.data(), {5, 16, 4, 64});
    a.v = a.k;
    a.blockTable = TensorRef(table.data(), {2, 2});
    a.contextLens = TensorRef(lens.data(), {2});
  }
};

TEST_F(RuntimeArgs, PagedCacheArguments) {
  Problem p = dense();
  p.spec.pageSize = 16;
  PagedCache cache;
  AttentionArgs args = p.args();
  cache.into(args);
  args.k = TensorRef(cache.k.data(), {5, 8, 4, 64});
  expectError(p, args,
              "k: expected a paged cache [num_pages, 16, 4, 64] ([num_pages, "
              "page_size, Hkv, D]), got [5, 8, 4, 64]");
  cache.into(args);
  args.blockTable = TensorRef();
  expectError(p, args,
              "block_table: required by a paged KV cache (int32 [B, "
              "max_pages])");
  args.blockTable = TensorRef(cache.table.data(), {4});
  expectError(p, args,
              "block_table: expected int32 [B, max_pages] with B = 2, got [4]");
  cache.into(args);
  args.contextLens = TensorRef(cache.lens.data(), {1});
  expectError(p, args, "context_lens: expected int32 [B] = [2], got [1]");
  cache.into(args);
  cache.lens[1] = 33;
  expectError(p, args,
              "context_lens: entry 1 is 33; it must be in [0, 32] (max_pages 2 "
              "x page_size 16)");
  cache.lens[1] = 17; // now the second page of sequence 1 is used
  expectError(p, args,
              "block_table: entry [1, 1] is 99; sequence 1 uses it (17 "
              "tokens), so it must be in [0, 5) (the cache's pages)");
  cache.lens[1] = 7;
  cache.table[0] = -1;
  expectError(p, args,
              "block_table: entry [0, 0] is -1; sequence 0 uses it (16 "
              "tokens), so it must be in [0, 5) (the cache's pages)");
}

TEST_F(RuntimeArgs, PagedCacheWhereItDoesNotBelong) {
  Problem p = dense();
  PagedCache cache;
  AttentionArgs args = p.args();
  args.blockTable = TensorRef(cache.table.data(), {2, 2});
  expectError(p, args,
              "block_table: given, but the spec has no paged KV cache (set "
              "page_size)");
  p.spec.pageSize = 16;
  cache.into(args);
  TileConfig gpuPrefill;
  gpuPrefill.variant = "gpu_sm80";
  EXPECT_EQ(rt.run(p.spec, args, Target::CUDA, gpuPrefill),
            "config: variant gpu_sm80 cannot read a paged KV cache; on target "
            "cuda gpu_decode_sm80 does");
  EXPECT_EQ(rt.prepare(p.spec, Target::CUDA, gpuPrefill),
            "config: variant gpu_sm80 cannot read a paged KV cache; on target "
            "cuda gpu_decode_sm80 does");
  BackwardArgs grads;
  EXPECT_EQ(rt.backward(p.spec, args, grads),
            "page_size: the backward takes dense k and v (a paged KV cache is "
            "for inference)");
  EXPECT_EQ(compiler.compiles, 0);
}

// f32 is refused before the driver is asked for anything (CudaTest.cpp has
// the rest of the CUDA path).
TEST_F(RuntimeArgs, CudaTargetRefusesF32) {
  Problem p = dense();
  AttentionArgs args = p.args();
  expectError(p, args, "dtype f32: the cuda target supports f16 and bf16",
              Target::CUDA);
}

} // namespace

//===----------------------------------------------------------------------===//
// backward(): its own tensors, each error exactly, nothing written, nothing
// compiled.
//===----------------------------------------------------------------------===//

class BackwardArgsTest : public RuntimeArgs {
protected:
  /// The gradients of a valid dense problem, all NaN until written.
  struct Grads {
    std::vector<float> gradO, dq, dk, dv, dslopes;
    BackwardArgs args;
    explicit Grads(const Problem &p) {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      gradO.assign(p.q.size(), 1.0f);
      dq.assign(p.q.size(), nan);
      dk.assign(p.k.size(), nan);
      dv.assign(p.v.size(), nan);
      dslopes.assign(p.spec.heads, nan);
      const AttentionArgs a = const_cast<Problem &>(p).args();
      args.gradO = a.o;
      args.gradO.data = gradO.data();
      args.dq = a.q;
      args.dq.data = dq.data();
      args.dk = a.k;
      args.dk.data = dk.data();
      args.dv = a.v;
      args.dv.data = dv.data();
    }
  };

  void expectBackwardError(Problem &p, const AttentionArgs &args, Grads &g,
                           const std::string &message,
                           const TileConfig &config = TileConfig(),
                           Target target = Target::CPU) {
    EXPECT_EQ(rt.backward(p.spec, args, g.args, target, config), message);
    for (const std::vector<float> *t : {&g.dq, &g.dk, &g.dv, &g.dslopes})
      for (float x : *t)
        ASSERT_TRUE(std::isnan(x)) << "a gradient was written";
    EXPECT_EQ(compiler.compiles, 0);
  }
};

TEST_F(BackwardArgsTest, LseRequired) {
  Problem p = dense();
  Grads g(p);
  AttentionArgs args = p.args();
  args.lse = TensorRef();
  expectBackwardError(p, args, g,
                      "lse: required by the backward (the forward's f32 lse)");
}

TEST_F(BackwardArgsTest, GradientMissingOrMisshapen) {
  Problem p = dense();
  Grads g(p);
  g.args.dk.data = nullptr;
  g.args.dk.rank = 0;
  expectBackwardError(p, p.args(), g, "dk: missing (null data pointer)");
  Grads h(p);
  h.args.dq.shape[2] = 15;
  expectBackwardError(p, p.args(), h,
                      "dq: expected the shape of q [2, 12, 16, 64], got "
                      "[2, 12, 15, 64]");
  Grads o(p);
  o.args.gradO.shape[1] = 4;
  expectBackwardError(p, p.args(), o,
                      "grad_o: expected the shape of o [2, 12, 16, 64], got "
                      "[2, 4, 16, 64]");
}

TEST_F(BackwardArgsTest, SlopeGradientNeedsCustomSlopesOfTheirShape) {
  Problem p = dense();
  Grads g(p);
  g.args.dslopes = TensorRef(g.dslopes.data(), {12});
  expectBackwardError(p, p.args(), g,
                      "dslopes: given, but the spec has no custom slopes to "
                      "differentiate (set slopes = custom)");
  Problem c = dense(/*customSlopes=*/true);
  Grads h(c);
  h.args.dslopes = TensorRef(h.dslopes.data(), {2, 6});
  expectBackwardError(c, c.args(), h,
                      "dslopes: expected the shape of slopes [12], got [2, 6]");
}

TEST_F(BackwardArgsTest, OutputsMustNotAliasInputs) {
  Problem p = dense();
  Grads g(p);
  AttentionArgs args = p.args();
  g.args.dq.data = args.q.data;
  EXPECT_EQ(rt.backward(p.spec, args, g.args),
            "dq: must not share memory with an input");
  EXPECT_EQ(compiler.compiles, 0);
}

TEST_F(BackwardArgsTest, VariantsStayOnTheirSide) {
  Problem p = dense();
  Grads g(p);
  TileConfig forward;
  forward.variant = "cpu_avx2";
  expectBackwardError(p, p.args(), g,
                      "config: the backward takes variant cpu_bwd_avx2, "
                      "cpu_bwd_avx512, cpu_bwd_avx512bf16 or gpu_bwd_sm80 "
                      "(target cuda), got "
                      "'cpu_avx2'",
                      forward);
  TileConfig backward;
  backward.variant = "cpu_bwd_avx2";
  EXPECT_EQ(rt.run(p.spec, p.args(), Target::CPU, backward),
            "config: variant cpu_bwd_avx2 is a backward kernel; call "
            "backward()");
  // Each target's backward variant on the other, refused before any
  // device is probed or kernel compiled.
  TileConfig gpu;
  gpu.variant = "gpu_bwd_sm80";
  expectBackwardError(p, p.args(), g,
                      "config: variant gpu_bwd_sm80 is for target cuda", gpu);
  expectBackwardError(p, p.args(), g,
                      "config: the backward on target cuda takes variant "
                      "gpu_bwd_sm80, got 'cpu_bwd_avx2'",
                      backward, Target::CUDA);
}

TEST_F(BackwardArgsTest, CudaRefusesBadGradientStridesBeforeTheDevice) {
  // alibi_positions too: the GPU backward takes it, so the strides are
  // what it names.
  Problem p = dense(false, true);
  p.spec.bias = BiasKind::AlibiPositions;
  Grads g(p);
  g.args.dq = g.args.dq.withStrides({12288, 64, 768, 1}); // [B, S, H, D]
  g.args.dk = g.args.dk.withStrides({0, 1024, 64, 1});    // batches overlap
  expectBackwardError(p, p.args(), g,
                      "dk: strides [0, 1024, 64, 1] for shape [2, 4, 16, 64] "
                      "make elements overlap; an output needs a distinct "
                      "element for every index",
                      TileConfig(), Target::CUDA);
}
