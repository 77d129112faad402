//===- CApiTest.cpp - The C API round trip --------------------------------===//

#include "RuntimeTestSupport.h"
#include "tilt/tilt.h"

#include <cstring>

namespace {

using namespace tilt;
using namespace tilt::test;

tilt_tensor cTensor(void *data, std::initializer_list<int64_t> dims) {
  tilt_tensor t{};
  t.data = data;
  t.rank = int32_t(dims.size());
  std::copy(dims.begin(), dims.end(), t.shape);
  return t;
}

TEST(CApi, RoundTrip) {
  TempDir dir;
  FakeCompiler compiler;
  tilt_runtime *rt =
      tilt_runtime_create(dir.path().c_str(), 2,
                          reinterpret_cast<tilt_compiler *>(
                              static_cast<KernelCompiler *>(&compiler)));
  ASSERT_NE(rt, nullptr);

  tilt_spec spec;
  std::memset(&spec, 0, sizeof(spec));
  spec.heads = 6;
  spec.kv_heads = 2;
  spec.head_dim = 32;
  spec.bias = TILT_BIAS_ALIBI;
  spec.slopes = TILT_SLOPES_CUSTOM;
  spec.causal = 1;

  AttentionSpec cpp;
  cpp.heads = 6;
  cpp.kvHeads = 2;
  cpp.headDim = 32;
  cpp.bias = BiasKind::Alibi;
  cpp.slopes = SlopeSource::Custom;
  cpp.causal = true;
  Problem p = Problem::dense(cpp, 2, 19, 23);

  tilt_attention_args args;
  std::memset(&args, 0, sizeof(args));
  args.q = cTensor(p.q.data(), {2, 6, 19, 32});
  args.k = cTensor(p.k.data(), {2, 2, 23, 32});
  args.v = cTensor(p.v.data(), {2, 2, 23, 32});
  args.o = cTensor(p.o.data(), {2, 6, 19, 32});
  args.lse = cTensor(p.lse.data(), {2, 6, 19});
  args.slopes = cTensor(p.slopes.data(), {6});

  ASSERT_EQ(tilt_attention(rt, &spec, &args), 0) << tilt_runtime_last_error(rt);
  EXPECT_STREQ(tilt_runtime_last_error(rt), "");
  EXPECT_LE(p.maxError(), 1e-5);
  EXPECT_EQ(compiler.compiles, 1);

  // Errors come back as nonzero plus the runtime's message.
  args.q.shape[1] = 8;
  EXPECT_NE(tilt_attention(rt, &spec, &args), 0);
  EXPECT_STREQ(tilt_runtime_last_error(rt),
               "q: expected shape [B, 6, Sq, 32] ([B, H, Sq, D]), got "
               "[2, 8, 19, 32]");
  args.q.shape[1] = 6;
  spec.dtype = 7;
  EXPECT_NE(tilt_attention(rt, &spec, &args), 0);
  EXPECT_STREQ(tilt_runtime_last_error(rt),
               "spec.dtype: expected 0 (f32), 1 (f16) or 2 (bf16), got 7");
  spec.dtype = TILT_DTYPE_F32;
  spec.max_bias = 4;
  EXPECT_NE(tilt_attention(rt, &spec, &args), 0);
  EXPECT_STREQ(tilt_runtime_last_error(rt),
               "invalid spec: max_bias applies to standard slopes only "
               "(slopes are custom)");

  spec.max_bias = 0;
  // The position offsets reach the runtime's checks.
  args.q_offset = 3;
  EXPECT_NE(tilt_attention(rt, &spec, &args), 0);
  EXPECT_STREQ(tilt_runtime_last_error(rt),
               "q_offset: given (3), but the spec has no position offsets "
               "(set position_offsets)");
  spec.position_offsets = 1;
  args.k_offset = -2;
  EXPECT_NE(tilt_attention(rt, &spec, &args), 0);
  EXPECT_STREQ(tilt_runtime_last_error(rt),
               "k_offset: must be in [0, 16777193] so that positions stay "
               "below 2^24 for a sequence of 23, got -2");
  spec.position_offsets = 0;
  args.q_offset = args.k_offset = 0;

  // A success clears the error; the kernel is now a memory hit.
  EXPECT_EQ(tilt_attention(rt, &spec, &args), 0);
  EXPECT_STREQ(tilt_runtime_last_error(rt), "");
  EXPECT_EQ(compiler.compiles, 1);
  tilt_runtime_destroy(rt);
}

TEST(CApi, NullHandles) {
  EXPECT_NE(tilt_attention(nullptr, nullptr, nullptr), 0);
  EXPECT_STREQ(tilt_runtime_last_error(nullptr), "tilt: null runtime");
  tilt_runtime_destroy(nullptr);

  TempDir dir;
  tilt_runtime *rt = tilt_runtime_create(dir.path().c_str(), 1, nullptr);
  ASSERT_NE(rt, nullptr);
  EXPECT_NE(tilt_attention(rt, nullptr, nullptr), 0);
  EXPECT_STREQ(tilt_runtime_last_error(rt), "spec: null pointer");
  tilt_runtime_destroy(rt);
}

TEST(CApi, NoCompilerMeansCachedOnly) {
  TempDir dir;
  tilt_runtime *rt = tilt_runtime_create(dir.path().c_str(), 1, nullptr);
  tilt_spec spec{};
  spec.heads = spec.kv_heads = 2;
  spec.head_dim = 16;
  std::vector<float> x(2 * 4 * 16), o(x.size());
  tilt_attention_args args{};
  args.q = args.k = args.v = cTensor(x.data(), {1, 2, 4, 16});
  args.o = cTensor(o.data(), {1, 2, 4, 16});
  EXPECT_NE(tilt_attention(rt, &spec, &args), 0);
  EXPECT_EQ(std::string(tilt_runtime_last_error(rt))
                .rfind("no cached kernel for ", 0),
            0u);
  tilt_runtime_destroy(rt);
}

} // namespace
