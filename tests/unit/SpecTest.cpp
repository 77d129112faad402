//===- SpecTest.cpp - Spec validation and canonical form -------------------===//

#include "tilt/Spec.h"

#include <gtest/gtest.h>

namespace {

tilt::AttentionSpec valid() {
  tilt::AttentionSpec s;
  s.heads = 12;
  s.kvHeads = 4;
  s.headDim = 64;
  s.bias = tilt::BiasKind::Alibi;
  return s;
}

struct Case {
  const char *what;
  void (*mutate)(tilt::AttentionSpec &);
  const char *message;
};

TEST(Spec, ValidSpecHasNoError) { EXPECT_EQ(valid().validate(), ""); }

TEST(Spec, EveryRuleNamesItsField) {
  const Case cases[] = {
      {"heads", [](auto &s) { s.heads = 0; },
       "heads must be in [1, 65535], got 0"},
      {"too many heads",
       [](auto &s) {
         s.heads = 65536;
         s.kvHeads = 1;
       },
       "heads must be in [1, 65535], got 65536"},
      {"kv heads", [](auto &s) { s.kvHeads = 0; },
       "kv_heads must be >= 1, got 0"},
      {"gqa", [](auto &s) { s.kvHeads = 5; },
       "kv_heads (5) must divide heads (12)"},
      {"head dim", [](auto &s) { s.headDim = 72; },
       "head_dim must be a multiple of 16 from 16 to 256, got 72"},
      {"big head dim", [](auto &s) { s.headDim = 512; },
       "head_dim must be a multiple of 16 from 16 to 256, got 512"},
      {"scale", [](auto &s) { s.scale = -1.0; },
       "scale must be a finite number > 0, got -1"},
      {"huge scale", [](auto &s) { s.scale = 1e39; },
       "scale must be below 2^126 (the kernels hold it in f32), got 1e+39"},
      {"window", [](auto &s) { s.window = 0; },
       "window must be >= 1 when given, got 0"},
      {"custom without bias",
       [](auto &s) {
         s.bias = tilt::BiasKind::None;
         s.slopes = tilt::SlopeSource::Custom;
       },
       "slopes = custom needs an ALiBi bias (bias is none)"},
      {"max bias without bias",
       [](auto &s) {
         s.bias = tilt::BiasKind::None;
         s.maxBias = 4;
       },
       "max_bias applies to ALiBi slopes only (bias is none)"},
      {"offset without bias",
       [](auto &s) {
         s.bias = tilt::BiasKind::None;
         s.headOffset = 2;
       },
       "head_offset and total_heads apply to ALiBi slopes only (bias is "
       "none)"},
      {"max bias with custom",
       [](auto &s) {
         s.slopes = tilt::SlopeSource::Custom;
         s.maxBias = 4;
       },
       "max_bias applies to standard slopes only (slopes are custom)"},
      {"offset with custom",
       [](auto &s) {
         s.slopes = tilt::SlopeSource::Custom;
         s.totalHeads = 24;
       },
       "head_offset and total_heads apply to standard slopes only (slopes "
       "are custom: give each rank its own)"},
      {"max bias", [](auto &s) { s.maxBias = 0; },
       "max_bias must be a finite number > 0, got 0"},
      {"negative offset", [](auto &s) { s.headOffset = -1; },
       "head_offset must be >= 0, got -1"},
      {"negative total", [](auto &s) { s.totalHeads = -4; },
       "total_heads must be in [1, 65535] when given, got -4"},
      {"huge total", [](auto &s) { s.totalHeads = int64_t(1) << 40; },
       "total_heads must be in [1, 65535] when given, got 1099511627776"},
      {"offset without total", [](auto &s) { s.headOffset = 12; },
       "head_offset needs total_heads (the model's head count)"},
      {"offset past total",
       [](auto &s) {
         s.headOffset = 16;
         s.totalHeads = 24;
       },
       "head_offset (16) + heads (12) exceeds total_heads (24)"},
      {"positions without mask",
       [](auto &s) { s.bias = tilt::BiasKind::AlibiPositions; },
       "bias alibi_positions needs a key_padding_mask"},
      {"mask with varlen",
       [](auto &s) {
         s.keyPaddingMask = true;
         s.varlen = true;
       },
       "key_padding_mask cannot be combined with varlen cu_seqlens (give the "
       "unpadded lengths instead)"},
      {"offsets with mask positions",
       [](auto &s) {
         s.bias = tilt::BiasKind::AlibiPositions;
         s.keyPaddingMask = true;
         s.positionOffsets = true;
       },
       "position offsets cannot be combined with bias alibi_positions (its "
       "positions come from the key_padding_mask)"},
      {"page size not a power of two", [](auto &s) { s.pageSize = 48; },
       "page_size must be 0 (dense k/v) or a power of two from 8 to 256, got "
       "48"},
      {"page size too small", [](auto &s) { s.pageSize = 4; },
       "page_size must be 0 (dense k/v) or a power of two from 8 to 256, got "
       "4"},
      {"page size too large", [](auto &s) { s.pageSize = 512; },
       "page_size must be 0 (dense k/v) or a power of two from 8 to 256, got "
       "512"},
      {"paged with varlen",
       [](auto &s) {
         s.pageSize = 16;
         s.varlen = true;
       },
       "page_size cannot be combined with varlen cu_seqlens (a paged cache "
       "takes its lengths from context_lens)"},
      {"paged with offsets",
       [](auto &s) {
         s.pageSize = 16;
         s.positionOffsets = true;
       },
       "page_size cannot be combined with position offsets (a paged cache "
       "places queries bottom-right of context_lens)"},
  };
  for (const Case &c : cases) {
    tilt::AttentionSpec s = valid();
    c.mutate(s);
    EXPECT_EQ(s.validate(), c.message) << c.what;
  }
}

TEST(Spec, TensorParallelRankIsValid) {
  tilt::AttentionSpec s = valid();
  s.headOffset = 12;
  s.totalHeads = 24;
  EXPECT_EQ(s.validate(), "");
}

TEST(Spec, NamesRoundTrip) {
  for (auto t : {tilt::DType::F32, tilt::DType::F16, tilt::DType::BF16})
    EXPECT_EQ(tilt::parseDType(tilt::toString(t)), t);
  for (auto k : {tilt::BiasKind::None, tilt::BiasKind::Alibi,
                 tilt::BiasKind::AlibiSymmetric, tilt::BiasKind::AlibiPositions})
    EXPECT_EQ(tilt::parseBiasKind(tilt::toString(k)), k);
  EXPECT_EQ(tilt::parseBiasKind("alibi-symmetric"),
            tilt::BiasKind::AlibiSymmetric);
  EXPECT_EQ(tilt::parseBiasKind("alibi-positions"),
            tilt::BiasKind::AlibiPositions);
  EXPECT_FALSE(tilt::parseBiasKind("rope"));
  EXPECT_FALSE(tilt::parseDType("f64"));
}

TEST(Spec, CanonicalFormSeparatesEveryField) {
  tilt::AttentionSpec base = valid();
  std::vector<tilt::AttentionSpec> variants(15, base);
  variants[1].heads = 24;
  variants[2].kvHeads = 12;
  variants[3].headDim = 128;
  variants[4].dtype = tilt::DType::BF16;
  variants[5].scale = 0.2;
  variants[6].causal = true;
  variants[7].window = 256;
  variants[8].bias = tilt::BiasKind::AlibiSymmetric;
  variants[9].maxBias = 4;
  variants[10].headOffset = 12, variants[10].totalHeads = 24;
  variants[11].slopes = tilt::SlopeSource::Custom;
  variants[12].positionOffsets = true;
  variants[13].pageSize = 16;
  variants[14].pageSize = 256;
  for (size_t i = 0; i < variants.size(); ++i)
    for (size_t j = i + 1; j < variants.size(); ++j)
      EXPECT_NE(variants[i].canonical(), variants[j].canonical())
          << i << " vs " << j;
  // The default scale and an explicit 1/sqrt(D) are the same kernel.
  tilt::AttentionSpec explicitScale = base;
  explicitScale.scale = 0.125;
  EXPECT_EQ(base.canonical(), explicitScale.canonical());
}

} // namespace
