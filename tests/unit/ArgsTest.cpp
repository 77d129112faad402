//===- ArgsTest.cpp - The shared spec flags --------------------------------===//

#include "Args.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

struct Parsed {
  std::string error;
  tilt::tools::SpecFlags flags;
  std::vector<std::string> positional;
};

Parsed parse(std::vector<std::string> args) {
  Parsed p;
  std::vector<tilt::tools::Option> options;
  tilt::tools::addSpecOptions(options, p.flags);
  std::vector<char *> argv{const_cast<char *>("tool")};
  for (std::string &a : args)
    argv.push_back(a.data());
  p.error = tilt::tools::parseArgs(static_cast<int>(argv.size()), argv.data(),
                                   options, p.positional);
  if (p.error.empty())
    p.error = tilt::tools::finishSpecFlags(p.flags);
  return p;
}

TEST(Args, BloomLikeSpec) {
  Parsed p = parse({"--heads", "32", "--kv-heads=8", "--head-dim", "128",
                    "--dtype", "bf16", "--causal", "--bias", "alibi-symmetric",
                    "--max-bias", "4", "--window", "512", "--scale", "0.1",
                    "--head-offset", "8", "--total-heads", "64", "q.npy"});
  ASSERT_EQ(p.error, "");
  const tilt::AttentionSpec &s = p.flags.spec;
  EXPECT_EQ(s.heads, 32);
  EXPECT_EQ(s.kvHeads, 8);
  EXPECT_EQ(s.headDim, 128);
  EXPECT_EQ(s.dtype, tilt::DType::BF16);
  EXPECT_TRUE(s.causal);
  EXPECT_EQ(s.bias, tilt::BiasKind::AlibiSymmetric);
  EXPECT_EQ(s.maxBias, 4.0);
  EXPECT_EQ(s.window, 512);
  EXPECT_EQ(s.scale, 0.1);
  EXPECT_EQ(s.headOffset, 8);
  EXPECT_EQ(s.totalHeads, 64);
  EXPECT_EQ(p.positional, std::vector<std::string>{"q.npy"});
}

TEST(Args, DefaultsKvHeadsToHeads) {
  Parsed p = parse({"--heads", "12", "--head-dim", "64"});
  ASSERT_EQ(p.error, "");
  EXPECT_EQ(p.flags.spec.kvHeads, 12);
  EXPECT_EQ(p.flags.spec.bias, tilt::BiasKind::None);
}

TEST(Args, FilesSetTheirSpecFields) {
  Parsed p = parse({"--heads", "4", "--head-dim", "64", "--bias",
                    "alibi-positions", "--slopes", "s.npy",
                    "--key-padding-mask", "m.npy"});
  ASSERT_EQ(p.error, "");
  EXPECT_EQ(p.flags.spec.slopes, tilt::SlopeSource::Custom);
  EXPECT_TRUE(p.flags.spec.keyPaddingMask);
  EXPECT_EQ(p.flags.slopesFile, "s.npy");
  EXPECT_EQ(p.flags.keyPaddingMaskFile, "m.npy");
}

TEST(Args, BadFlagsGiveOneLineErrors) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--heads", "x"}, "--heads expects an integer, got 'x'"},
      {{"--heads", "0"}, "--heads must be >= 1, got 0"},
      {{"--heads"}, "--heads needs a value (N)"},
      {{"--dtype", "f64"}, "--dtype must be f32, f16 or bf16, got 'f64'"},
      {{"--bias", "rope"},
       "--bias must be none, alibi, alibi-symmetric or alibi-positions, got "
       "'rope'"},
      {{"--causal=1"}, "--causal takes no value"},
      {{"--window", "-3"}, "--window must be >= 1, got -3"},
      {{"--scale", "nan"}, "--scale expects a finite number, got 'nan'"},
      {{"--frobnicate"}, "unknown flag --frobnicate (see --help)"},
      {{"--head-dim", "64"}, "--heads is required"},
      {{"--heads", "8"}, "--head-dim is required"},
      {{"--heads", "12", "--kv-heads", "5", "--head-dim", "64"},
       "invalid spec: kv_heads (5) must divide heads (12)"},
      {{"--heads", "12", "--head-dim", "72"},
       "invalid spec: head_dim must be a multiple of 16 from 16 to 256, got "
       "72"},
      {{"--heads", "8", "--head-dim", "64", "--bias", "alibi",
        "--head-offset", "4", "--total-heads", "8"},
       "invalid spec: head_offset (4) + heads (8) exceeds total_heads (8)"},
  };
  for (const auto &[args, message] : cases) {
    Parsed p = parse(args);
    EXPECT_EQ(p.error, message) << args.front();
    EXPECT_EQ(p.error.find('\n'), std::string::npos);
  }
}

} // namespace
