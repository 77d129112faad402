//===- RuntimeTest.cpp - Kernel caches and CPU launches -------------------===//
//
// Runs the naive test kernel through the real runtime: resolution (memory,
// disk, compiler), loading, descriptor building and the thread pool, checked
// against the float64 reference.
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestSupport.h"
#include "tilt/Artifacts.h"
#include "tilt/TilePolicy.h"

#include <chrono>
#include <thread>

namespace {

using namespace tilt;
using namespace tilt::test;

//===----------------------------------------------------------------------===//
// Numerics: every launch shape against the reference, on 1, 2 and 4 threads
//===----------------------------------------------------------------------===//

struct NumericsCase {
  const char *name;
  Problem (*make)();
  int64_t blockM;
};

const NumericsCase kNumericsCases[] = {
    {"Plain", [] { return Problem::dense(makeSpec(4, 4, 32), 2, 33, 33); }, 16},
    {"AlibiCausal",
     [] {
       return Problem::dense(makeSpec(12, 12, 64, BiasKind::Alibi, true), 1,
                             128, 128);
     },
     16},
    {"GqaAlibiCausalSqNeSk",
     [] {
       return Problem::dense(makeSpec(12, 4, 64, BiasKind::Alibi, true), 2, 17,
                             129);
     },
     16},
    {"CausalFullyMaskedRows", // Sq > Sk: the top rows see no key
     [] {
       return Problem::dense(makeSpec(8, 2, 16, BiasKind::Alibi, true), 1, 40,
                             20);
     },
     8},
    {"BlockM1",
     [] {
       return Problem::dense(makeSpec(4, 1, 32, BiasKind::Alibi, true), 2, 19,
                             19);
     },
     1},
    {"BlockM7Ragged",
     [] {
       return Problem::dense(makeSpec(4, 2, 32, BiasKind::Alibi, true), 1, 30,
                             45);
     },
     7},
    {"SymmetricWindowFiveHeads",
     [] {
       AttentionSpec s = makeSpec(5, 5, 16, BiasKind::AlibiSymmetric);
       s.window = 8;
       return Problem::dense(s, 2, 24, 24);
     },
     16},
    {"HeadOffset",
     [] {
       AttentionSpec s = makeSpec(4, 4, 16, BiasKind::Alibi, true);
       s.headOffset = 8;
       s.totalHeads = 12;
       return Problem::dense(s, 1, 20, 20);
     },
     16},
    {"CustomSlopesPerHead",
     [] {
       AttentionSpec s = makeSpec(6, 3, 16, BiasKind::Alibi, true);
       s.slopes = SlopeSource::Custom;
       return Problem::dense(s, 3, 21, 21);
     },
     16},
    {"CustomSlopesPerBatch",
     [] {
       AttentionSpec s = makeSpec(6, 3, 16, BiasKind::Alibi, true);
       s.slopes = SlopeSource::Custom;
       Problem p = Problem::dense(s, 3, 21, 21);
       p.setSlopesPerBatch();
       return p;
     },
     16},
    {"PositionsWithPaddingMask",
     [] {
       AttentionSpec s = makeSpec(4, 2, 32, BiasKind::AlibiPositions);
       s.keyPaddingMask = true;
       return Problem::dense(s, 2, 13, 31);
     },
     16},
    {"VarlenCausal",
     [] {
       AttentionSpec s = makeSpec(4, 2, 32, BiasKind::Alibi, true);
       s.varlen = true;
       return Problem::varlen(s, {5, 0, 37, 16}, {9, 3, 37, 20});
     },
     16},
};

class RuntimeNumerics
    : public ::testing::TestWithParam<std::tuple<NumericsCase, int>> {};

TEST_P(RuntimeNumerics, MatchesReference) {
  auto [c, threads] = GetParam();
  FakeCompiler compiler;
  TempDir dir;
  Runtime rt({dir.path(), threads, &compiler});
  ASSERT_EQ(rt.threads(), threads);
  Problem p = c.make();
  AttentionArgs args = p.args();
  ASSERT_EQ(rt.run(p.spec, args, Target::CPU, naiveConfig(c.blockM)), "");
  EXPECT_LE(p.maxError(), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(All, RuntimeNumerics,
                         ::testing::Combine(::testing::ValuesIn(kNumericsCases),
                                            ::testing::Values(1, 2, 4)),
                         [](const auto &info) {
                           return std::string(std::get<0>(info.param).name) +
                                  "_Threads" +
                                  std::to_string(std::get<1>(info.param));
                         });

// Without a caller lse the runtime supplies (and grows) its own scratch.
TEST(Runtime, LseIsOptional) {
  FakeCompiler compiler;
  TempDir dir;
  Runtime rt({dir.path(), 2, &compiler});
  AttentionSpec spec = makeSpec(4, 4, 32, BiasKind::Alibi, true);
  for (int64_t seq : {8, 64, 16}) {
    Problem p = Problem::dense(spec, 2, seq, seq);
    AttentionArgs args = p.args(/*withLse=*/false);
    ASSERT_EQ(rt.run(p.spec, args), "");
    EXPECT_LE(p.maxError(/*checkLse=*/false), 1e-5) << seq;
  }
}

TEST(Runtime, EmptyQueryIsANoOp) {
  FakeCompiler compiler;
  TempDir dir;
  Runtime rt({dir.path(), 2, &compiler});
  Problem p = Problem::dense(makeSpec(4, 4, 32), 2, 0, 16);
  AttentionArgs args = p.args();
  // Empty vectors have no storage; the runtime still wants real pointers.
  float none = 0;
  args.q.data = args.o.data = args.lse.data = &none;
  EXPECT_EQ(rt.run(p.spec, args), "");
  EXPECT_EQ(rt.stats().compiles, 1);
}

TEST(Runtime, ThreadsDefaultToEveryCore) {
  TempDir dir;
  Runtime rt({dir.path(), 0, nullptr});
  EXPECT_EQ(rt.threads(),
            int(std::max(1u, std::thread::hardware_concurrency())));
}

//===----------------------------------------------------------------------===//
// Caches
//===----------------------------------------------------------------------===//

TEST(RuntimeCache, MemoryHits) {
  FakeCompiler compiler;
  TempDir dir;
  Runtime rt({dir.path(), 2, &compiler});
  Problem p =
      Problem::dense(makeSpec(4, 2, 32, BiasKind::Alibi, true), 1, 20, 20);
  for (int i = 0; i < 3; ++i) {
    AttentionArgs args = p.args();
    ASSERT_EQ(rt.run(p.spec, args), "");
  }
  EXPECT_EQ(rt.stats().compiles, 1);
  EXPECT_EQ(rt.stats().diskHits, 0);
  EXPECT_EQ(rt.stats().memoryHits, 2);
  EXPECT_GT(rt.stats().seconds, 0);

  // An explicit scale equal to the default is the same kernel.
  AttentionSpec explicitScale = p.spec;
  explicitScale.scale = 1 / std::sqrt(32.0);
  ASSERT_EQ(rt.prepare(explicitScale), "");
  EXPECT_EQ(rt.stats().memoryHits, 3);
  EXPECT_EQ(compiler.compiles, 1);

  rt.resetStats();
  EXPECT_EQ(rt.stats().compiles, 0);
  EXPECT_EQ(rt.stats().memoryHits, 0);
  EXPECT_EQ(rt.stats().seconds, 0);
}

TEST(RuntimeCache, DifferentSpecsConfigsAndTargetsAreDifferentKernels) {
  FakeCompiler compiler;
  TempDir dir;
  Runtime rt({dir.path(), 1, &compiler});
  AttentionSpec a = makeSpec(4, 2, 32, BiasKind::Alibi, true);
  AttentionSpec b = a;
  b.causal = false;
  ASSERT_EQ(rt.prepare(a), "");
  ASSERT_EQ(rt.prepare(b), "");
  ASSERT_EQ(rt.prepare(a, Target::CPU, naiveConfig(16)), "");
  ASSERT_EQ(rt.prepare(a, Target::CPU, naiveConfig(8)), "");
  EXPECT_EQ(compiler.compiles, 4);
  EXPECT_EQ(dir.entries().size(), 4u);
  ASSERT_EQ(rt.prepare(a, Target::CPU, naiveConfig(8)), "");
  EXPECT_EQ(rt.stats().memoryHits, 1);
}

TEST(RuntimeCache, SecondRuntimeHitsTheDisk) {
  TempDir dir;
  Problem p =
      Problem::dense(makeSpec(4, 2, 32, BiasKind::Alibi, true), 2, 20, 20);
  {
    FakeCompiler compiler;
    Runtime rt({dir.path(), 2, &compiler});
    AttentionArgs args = p.args();
    ASSERT_EQ(rt.run(p.spec, args), "");
    EXPECT_EQ(rt.stats().compiles, 1);
  }
  FakeCompiler compiler;
  Runtime rt({dir.path(), 2, &compiler});
  p.o.assign(p.o.size(), NAN);
  AttentionArgs args = p.args();
  ASSERT_EQ(rt.run(p.spec, args), "");
  EXPECT_EQ(rt.stats().compiles, 0);
  EXPECT_EQ(compiler.compiles, 0);
  EXPECT_EQ(rt.stats().diskHits, 1);
  EXPECT_LE(p.maxError(), 1e-5);

  // Dropping the loaded kernels leaves the disk cache.
  rt.clearMemoryCache();
  ASSERT_EQ(rt.prepare(p.spec), "");
  EXPECT_EQ(rt.stats().diskHits, 2);
  EXPECT_EQ(compiler.compiles, 0);
}

TEST(RuntimeCache, CompilerFingerprintIsPartOfTheKey) {
  TempDir dir;
  AttentionSpec spec = makeSpec(4, 2, 32);
  FakeCompiler first;
  ASSERT_EQ(Runtime({dir.path(), 1, &first}).prepare(spec), "");
  struct OtherCompiler : FakeCompiler {
    std::string fingerprint(Target) const override { return "fake-2"; }
  } second;
  Runtime rt({dir.path(), 1, &second});
  ASSERT_EQ(rt.prepare(spec), "");
  EXPECT_EQ(rt.stats().compiles, 1);
  EXPECT_EQ(dir.entries().size(), 2u);
}

TEST(RuntimeCache, CompileFailureLeavesNoFiles) {
  TempDir dir;
  FakeCompiler compiler;
  compiler.failWith = "boom: bad config";
  Runtime rt({dir.path(), 1, &compiler});
  EXPECT_EQ(rt.prepare(makeSpec(4, 2, 32)), "compile: boom: bad config");
  EXPECT_TRUE(dir.list().empty());
}

TEST(RuntimeCache, UnloadableArtifactIsRejectedAndRemoved) {
  TempDir dir;
  struct GarbageCompiler : FakeCompiler {
    std::string compile(const AttentionSpec &, const TileConfig &, Target,
                        std::string &artifact) override {
      ++compiles;
      artifact = "not an ELF file";
      return {};
    }
  } compiler;
  Runtime rt({dir.path(), 1, &compiler});
  std::string err = rt.prepare(makeSpec(4, 2, 32));
  EXPECT_EQ(err.rfind("compiled artifact rejected: kernel ", 0), 0u) << err;
  EXPECT_NE(err.find("cannot load"), std::string::npos) << err;
  EXPECT_TRUE(dir.list().empty());
}

TEST(RuntimeCache, FreshArtifactForAnotherSpecIsRejected) {
  TempDir dir;
  FakeCompiler compiler;
  compiler.stampSpec = makeSpec(8, 8, 32).canonical();
  Runtime rt({dir.path(), 1, &compiler});
  AttentionSpec spec = makeSpec(4, 2, 32);
  std::string err = rt.prepare(spec);
  EXPECT_NE(err.find(fmt::format("built for spec '{}', expected '{}'",
                                 compiler.stampSpec, spec.canonical())),
            std::string::npos)
      << err;
  EXPECT_TRUE(dir.list().empty());
}

TEST(RuntimeCache, NoCompilerAndNoEntry) {
  TempDir dir;
  Runtime rt({dir.path(), 1, nullptr});
  AttentionSpec spec = makeSpec(4, 2, 32);
  std::string err = rt.prepare(spec);
  EXPECT_EQ(err.rfind(fmt::format("no cached kernel for {} and no compiler to "
                                  "build one",
                                  spec.canonical()),
                      0),
            0u)
      << err;
  EXPECT_EQ(rt.stats().compiles, 0);
}

TEST(RuntimeCache, DecodeShapesWithACompilerRunTheDecodeFamily) {
  // Sq = 1 <= 16: TilePolicy's useDecodeFamily.
  TempDir dir;
  FakeCompiler compiler;
  Runtime rt({dir.path(), 1, &compiler});
  Problem p = Problem::dense(makeSpec(4, 2, 32), 2, 1, 40);
  AttentionArgs args = p.args();
  ASSERT_EQ(rt.run(p.spec, args), "");
  // The kernel was built for the decode family's configuration, not the
  // compiler's default (a prepare() of the default compiles again).
  ASSERT_EQ(rt.prepare(p.spec), "");
  EXPECT_EQ(compiler.compiles, 2);
}

// The decode tuner's candidates: every block_m x block_n with num_stages 0
// (requests into L1), 1 (none) and 2 (into L2), on the CPU's variant.
TEST(TilePolicy, DecodeSearchSpaceTriesEachWayOfFetchingTheKeysAhead) {
  const AttentionSpec spec = makeSpec(32, 8, 128);
  auto avx512 = [](std::string_view) { return true; };
  const std::vector<TileConfig> space = decodeSearchSpace(spec, avx512);
  ASSERT_EQ(space.size(), 27u);
  int64_t perStages[3] = {};
  for (const TileConfig &c : space) {
    EXPECT_TRUE(c.is(KernelVariant::CpuDecodeAvx512)) << c.str();
    ASSERT_GE(c.numStages, 0);
    ASSERT_LE(c.numStages, 2);
    ++perStages[c.numStages];
  }
  EXPECT_EQ(perStages[0], 9);
  EXPECT_EQ(perStages[1], 9);
  EXPECT_EQ(perStages[2], 9);
}

TEST(TilePolicy, DecodeSplitsOnlyWhereThreadsWouldIdleOrBeUneven) {
  // decodeSplits(items = batch x kv heads, keys, threads).
  EXPECT_EQ(decodeSplits(1, 8192, 1), 1); // one thread
  EXPECT_EQ(decodeSplits(8, 8192, 2), 1); // even
  EXPECT_EQ(decodeSplits(2, 8192, 2), 1); // even: one item each
  EXPECT_EQ(decodeSplits(9, 8192, 2), 1); // >= 4 a thread
  EXPECT_EQ(decodeSplits(1, 8192, 2), 8); // MQA, B 1: 4 a thread
  EXPECT_EQ(decodeSplits(3, 8192, 2), 3); // 3 x 3 = 9 >= 8
  EXPECT_EQ(decodeSplits(3, 8192, 16), 22);
  EXPECT_EQ(decodeSplits(1, 1000, 2), 3); // chunks >= 256 keys
  EXPECT_EQ(decodeSplits(1, 300, 2), 1);  // too few keys to cut
  EXPECT_EQ(decodeSplits(1, 1 << 20, 64), kDecodeMaxSplits);
}

TEST(TilePolicy, FusedBackwardWhereItsItemsFillTheThreadsAndTheHeapFits) {
  // fusedBackward(items = batch x kv heads, threads, heap bytes an item).
  EXPECT_TRUE(fusedBackward(32, 2, 1 << 20));   // MHA H 32, B 1
  EXPECT_TRUE(fusedBackward(4, 2, 1 << 20));    // two items a thread
  EXPECT_FALSE(fusedBackward(3, 2, 1 << 20));   // a thread would idle
  EXPECT_FALSE(fusedBackward(1, 1, 1 << 20));   // MQA, B 1: key blocks
  EXPECT_TRUE(fusedBackward(2, 1, 1 << 20));    // one thread
  EXPECT_FALSE(fusedBackward(64, 64, 1 << 20)); // one item a thread
  EXPECT_TRUE(fusedBackward(32, 2, kFusedBackwardMaxHeapBytes));
  EXPECT_FALSE(fusedBackward(32, 2, kFusedBackwardMaxHeapBytes + 1));
  // The heap: K^T, V^T, K rows, dK, dV ([Sk][D] f32 each, Sk rounded up to
  // block_n) and P, dS ([Sk][block_m] f32 each).
  AttentionSpec spec = makeSpec(32, 32, 128);
  EXPECT_EQ(fusedBackwardHeapBytes(spec, 32, 64, 2048),
            2048 * 128 * 4 * 5 + 2048 * 32 * 4 * 2);
  EXPECT_EQ(fusedBackwardHeapBytes(spec, 32, 64, 2000),
            fusedBackwardHeapBytes(spec, 32, 64, 2048));
  // 256 MiB holds ~85K keys at D 128, block_m 32.
  EXPECT_FALSE(fusedBackward(
      32, 2, fusedBackwardHeapBytes(spec, 32, 64, int64_t(1) << 17)));
}

// The decode family up to kDecodeMaxSq query rows, paged or not: a chunked
// prefill against a paged cache runs the prefill kernels (which look each
// key's page up); alibi_positions never takes the decode family.
TEST(TilePolicy, DecodeFamilyForShortQueriesPagedOrNot) {
  AttentionSpec dense = makeSpec(32, 8, 128), paged = dense;
  paged.pageSize = 16;
  for (const AttentionSpec &s : {dense, paged}) {
    EXPECT_TRUE(useDecodeFamily(s, 1));
    EXPECT_TRUE(useDecodeFamily(s, kDecodeMaxSq));
    EXPECT_FALSE(useDecodeFamily(s, kDecodeMaxSq + 1));
    EXPECT_FALSE(useDecodeFamily(s, 512));
  }
  AttentionSpec positions = dense;
  positions.bias = BiasKind::AlibiPositions;
  positions.keyPaddingMask = true;
  EXPECT_FALSE(useDecodeFamily(positions, 1));
  // The GPU: every paged call (gpu_decode_sm80 alone reads a cache), dense
  // ones by the same rule unless varlen; an unknown length is a prefill.
  AttentionSpec varlen = dense;
  varlen.varlen = true;
  EXPECT_TRUE(useGpuDecodeFamily(paged, 512));
  EXPECT_TRUE(useGpuDecodeFamily(paged, 0));
  EXPECT_TRUE(useGpuDecodeFamily(dense, 1));
  EXPECT_FALSE(useGpuDecodeFamily(dense, 0));
  EXPECT_FALSE(useGpuDecodeFamily(dense, 512));
  EXPECT_FALSE(useGpuDecodeFamily(varlen, 1));
}

// A prefill configuration's block_m shrinks to the power of two that holds
// the longest query sequence where that is at most half of it.
TEST(TilePolicy, QueryBlocksFitShortQuerySequences) {
  const TileConfig wide = defaultCpuConfig(KernelVariant::CpuAvx512Bf16);
  ASSERT_EQ(wide.blockM, 64);
  EXPECT_EQ(fitQueryBlock(wide, 32).blockM, 32);
  EXPECT_EQ(fitQueryBlock(wide, 20).blockM, 32);
  EXPECT_EQ(fitQueryBlock(wide, 9).blockM, 16);
  EXPECT_EQ(fitQueryBlock(wide, 1).blockM, 16);
  EXPECT_EQ(fitQueryBlock(wide, 33).blockM, 64);
  EXPECT_EQ(fitQueryBlock(wide, 512).blockM, 64);
  EXPECT_EQ(fitQueryBlock(wide, 0).blockM, 64); // unknown length
  EXPECT_EQ(fitQueryBlock(wide, 20).blockN, wide.blockN);
  EXPECT_EQ(fitQueryBlock(wide, 20).variant, wide.variant);
  const TileConfig amx = defaultCpuConfig(KernelVariant::CpuAmx);
  ASSERT_EQ(amx.blockM, 128);
  EXPECT_EQ(fitQueryBlock(amx, 9).blockM, 32); // whole pairs of AMX tiles
  EXPECT_EQ(fitQueryBlock(amx, 64).blockM, 64);
  EXPECT_EQ(fitQueryBlock(amx, 65).blockM, 128);
  // Not a prefill configuration: as given.
  TileConfig gpu;
  gpu.variant = "gpu_sm80";
  gpu.blockM = 128;
  gpu.blockN = 64;
  TileConfig decode = defaultCpuConfig(KernelVariant::CpuDecodeAvx512);
  decode.blockM = 64;
  for (const TileConfig &c :
       {decode, defaultCpuConfig(KernelVariant::CpuBwdAvx512), gpu})
    EXPECT_EQ(fitQueryBlock(c, 1).str(), c.str());
  EXPECT_EQ(fitQueryBlock(TileConfig(), 1).str(), TileConfig().str());
}

TEST(TilePolicy, DecodeTokenRowsForPagedGroupsOfAtMostFour) {
  AttentionSpec mha = makeSpec(32, 32, 128), gqa = makeSpec(32, 8, 128);
  AttentionSpec wide = makeSpec(32, 4, 128);
  EXPECT_FALSE(
      decodeTokenRows(mha, KernelVariant::CpuDecodeAvx512)); // contiguous K/V
  EXPECT_FALSE(decodeTokenRows(gqa, KernelVariant::CpuDecodeAvx512));
  mha.pageSize = gqa.pageSize = wide.pageSize = 16;
  EXPECT_TRUE(decodeTokenRows(mha, KernelVariant::CpuDecodeAvx512));
  EXPECT_TRUE(decodeTokenRows(gqa, KernelVariant::CpuDecodeAvx512));
  EXPECT_FALSE(decodeTokenRows(
      wide, KernelVariant::CpuDecodeAvx512)); // groups of 8 keep the row blocks
  // AVX2's 16 registers: groups of 2 on the token rows, 4 on the row blocks.
  EXPECT_FALSE(decodeTokenRows(gqa, KernelVariant::CpuDecodeAvx2));
  AttentionSpec pair = makeSpec(32, 16, 128);
  pair.pageSize = 16;
  EXPECT_TRUE(decodeTokenRows(pair, KernelVariant::CpuDecodeAvx2));
  // The row state grows to a row per head, plus the partial sums.
  TileConfig c = defaultCpuConfig(KernelVariant::CpuDecodeAvx512);
  EXPECT_GT(cpuScratchBytes(gqa, c), cpuScratchBytes(wide, c));
  EXPECT_EQ(cpuScratchBytes(mha, c), cpuScratchBytes(gqa, c));
  EXPECT_GE(cpuScratchBytes(mha, c),
            2 * 32 * 128 * 4 + 32 * c.blockN / 4 * 16 * 4);
}

TEST(TilePolicy, GpuDecodeSplitsFillTheMultiprocessors) {
  // gpuDecodeSplits(ctas = row blocks x kv heads x batch, keys, SMs).
  EXPECT_EQ(gpuDecodeSplits(264, 8192, 132), 0); // two CTAs an SM already
  EXPECT_EQ(gpuDecodeSplits(500, 8192, 132), 0);
  EXPECT_EQ(gpuDecodeSplits(8, 8192, 132), 16);  // 16 chunks of 512 keys
  EXPECT_EQ(gpuDecodeSplits(8, 32768, 132), 33); // 8 x 33 = 264
  EXPECT_EQ(gpuDecodeSplits(1, 1 << 20, 132), kDecodeMaxSplits);
  EXPECT_EQ(gpuDecodeSplits(4, 1000, 132), 0); // one 512-key chunk: no cut
  EXPECT_EQ(gpuDecodeSplits(4, 1024, 132), 2);
  EXPECT_EQ(gpuDecodeSplits(0, 8192, 132), 0);
  AttentionSpec paged = makeSpec(8, 2, 64);
  paged.pageSize = 16;
  EXPECT_EQ(defaultGpuVariant(paged, "sm_90a"), KernelVariant::GpuDecodeSm80);
  EXPECT_EQ(defaultGpuConfig(KernelVariant::GpuDecodeSm80, 128).str(),
            "variant=gpu_decode_sm80;block_m=16;block_n=64;num_warps=1;"
            "num_stages=2");
  EXPECT_EQ(defaultGpuConfig(KernelVariant::GpuDecodeSm80, 256).blockN, 32);
}

TEST(TilePolicy, GpuBackwardDefaultsFitNinetyNineKiB) {
  // The backward's defaults (gpu_bwd_sm80), and what both of its kernels
  // need of shared memory with them (GpuBackward.cpp): inside the 99 KiB a
  // block may opt into on sm_86 / sm_89 at every head dim.
  EXPECT_EQ(defaultGpuConfig(KernelVariant::GpuBwdSm80, 64).str(),
            "variant=gpu_bwd_sm80;block_m=64;block_n=64;num_warps=4;"
            "num_stages=2");
  EXPECT_EQ(defaultGpuConfig(KernelVariant::GpuBwdSm80, 128).numStages, 1);
  EXPECT_EQ(defaultGpuConfig(KernelVariant::GpuBwdSm80, 256).str(),
            "variant=gpu_bwd_sm80;block_m=32;block_n=32;num_warps=2;"
            "num_stages=1");
  for (int64_t d = 16; d <= 256; d += 16) {
    const TileConfig c = defaultGpuConfig(KernelVariant::GpuBwdSm80, d);
    const int64_t row = (d + 8) * 2;
    const int64_t dq =
        (2 * c.blockM + 2 * c.numStages * c.blockN) * row + 4 * c.numWarps;
    const int64_t dkdv = (2 * c.blockN + 2 * c.numStages * c.blockM) * row +
                         c.numStages * c.blockM * 16;
    EXPECT_LE(std::max(dq, dkdv), 99 * 1024) << "head dim " << d;
  }
}

TEST(RuntimeCache, AVariantNamedWithoutBlocksTakesItsDefaultBlocks) {
  // Blocks of 0 would reach the compiler (and the kernel's info) as they
  // are; the runtime completes them, so the two configs below are one
  // kernel.
  TempDir dir;
  FakeCompiler compiler;
  Runtime rt({dir.path(), 1, &compiler});
  Problem p = Problem::dense(makeSpec(4, 2, 32), 1, 40, 40);
  TileConfig variantOnly;
  variantOnly.variant = "cpu_avx2";
  const std::string err = rt.run(p.spec, p.args(), Target::CPU, variantOnly);
  if (err.rfind("this CPU", 0) == 0)
    GTEST_SKIP() << err;
  ASSERT_EQ(err, "");
  ASSERT_EQ(rt.run(p.spec, p.args(), Target::CPU,
                   defaultCpuConfig(KernelVariant::CpuAvx2)),
            "");
  ASSERT_EQ(rt.prepare(p.spec, Target::CPU, variantOnly), "");
  EXPECT_EQ(compiler.compiles, 1);
}

TEST(RuntimeCache, ShortQuerySequencesGetQueryBlocksToFit) {
  // TilePolicy's fitQueryBlock on the runtime's choice (here the
  // compiler's default, 64-row blocks): Sq 20 (past the decode family's
  // rule) fits in 32 rows; Sq 40 keeps 64; a configuration the caller
  // names is run as named.
  struct WideDefault : FakeCompiler {
    TileConfig defaultConfig(const AttentionSpec &, Target) const override {
      TileConfig c = defaultCpuConfig(KernelVariant::CpuAvx2);
      c.blockM = 64;
      return c;
    }
  };
  TempDir dir;
  WideDefault compiler;
  Runtime rt({dir.path(), 1, &compiler});
  auto blockMOf = [&](int64_t sq, const TileConfig &config) -> int64_t {
    Problem p = Problem::dense(makeSpec(4, 2, 32), 1, sq, 80);
    const std::string err = rt.run(p.spec, p.args(), Target::CPU, config);
    EXPECT_EQ(err, "");
    return err.empty() ? rt.stats().lastKernel.blockM : -1;
  };
  if (std::string err = rt.prepare(makeSpec(4, 2, 32), Target::CPU,
                                   compiler.defaultConfig({}, Target::CPU));
      err.rfind("variant cpu_avx2 needs", 0) == 0)
    GTEST_SKIP() << "skipped: this CPU cannot run the cpu_avx2 kernel this "
                    "test times: "
                 << err;
  EXPECT_EQ(blockMOf(20, TileConfig()), 32);
  EXPECT_EQ(blockMOf(40, TileConfig()), 64);
  EXPECT_EQ(blockMOf(20, compiler.defaultConfig({}, Target::CPU)), 64);
}

TEST(RuntimeCache, KernelOnlyRuntimeKeepsThePrefillKernelForDecodeShapes) {
  // With no compiler and no bundled decode kernel the decode rule does not
  // apply: the runtime looks for the kernel it would have used before.
  TempDir dir;
  Runtime rt({dir.path(), 1, nullptr});
  Problem p = Problem::dense(makeSpec(4, 2, 32), 2, 1, 40);
  AttentionArgs args = p.args();
  const std::string err = rt.run(p.spec, args);
  EXPECT_NE(err.find("(config default, target cpu"), std::string::npos) << err;
}

//===----------------------------------------------------------------------===//
// Cache directory resolution
//===----------------------------------------------------------------------===//

TEST(RuntimeCacheDir, ExplicitDirWins) {
  EnvVar tilt("TILT_CACHE_DIR", "/tmp/from-env");
  EXPECT_EQ(Runtime({"/tmp/explicit", 1, nullptr}).cacheDir(), "/tmp/explicit");
}

TEST(RuntimeCacheDir, TiltCacheDirFirst) {
  EnvVar tilt("TILT_CACHE_DIR", "/tmp/tilt-env");
  EnvVar xdg("XDG_CACHE_HOME", "/tmp/xdg");
  EXPECT_EQ(Runtime({"", 1, nullptr}).cacheDir(), "/tmp/tilt-env");
}

TEST(RuntimeCacheDir, ThenXdgCacheHome) {
  EnvVar tilt("TILT_CACHE_DIR", nullptr);
  EnvVar xdg("XDG_CACHE_HOME", "/tmp/xdg");
  EXPECT_EQ(Runtime({"", 1, nullptr}).cacheDir(), "/tmp/xdg/tilt");
}

TEST(RuntimeCacheDir, ThenHome) {
  EnvVar tilt("TILT_CACHE_DIR", "");
  EnvVar xdg("XDG_CACHE_HOME", "relative/ignored");
  EnvVar home("HOME", "/tmp/home");
  EXPECT_EQ(Runtime({"", 1, nullptr}).cacheDir(), "/tmp/home/.cache/tilt");
}

TEST(RuntimeCacheDir, EnvironmentDirIsUsed) {
  TempDir root;
  EnvVar tilt("TILT_CACHE_DIR", (root / "env-cache").c_str());
  FakeCompiler compiler;
  Runtime rt({"", 1, &compiler});
  ASSERT_EQ(rt.prepare(makeSpec(4, 2, 32)), "");
  EXPECT_EQ(root.entries(root / "env-cache").size(), 1u);
}

//===----------------------------------------------------------------------===//
// Latency of the hot path
//===----------------------------------------------------------------------===//

/// Best mean seconds per call of `fn` over a few batches (the best batch is
/// the least disturbed by other processes).
template <typename Fn> double bestMeanSeconds(int calls, Fn fn) {
  double best = 1e9;
  for (int batch = 0; batch < 5; ++batch) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i)
      fn();
    best = std::min(best, std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - t0)
                                  .count() /
                              calls);
  }
  return best;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kInstrumented = true;
#else
constexpr bool kInstrumented = false;
#endif

TEST(RuntimeLatency, MemoryHitIsWellUnderAMicrosecond) {
  FakeCompiler compiler;
  TempDir dir;
  Runtime rt({dir.path(), 1, &compiler});
  AttentionSpec spec = makeSpec(12, 4, 64, BiasKind::Alibi, true);
  ASSERT_EQ(rt.prepare(spec), "");
  double perCall = bestMeanSeconds(20000, [&] { (void)rt.prepare(spec); });
  std::printf("prepare() memory hit: %.0f ns\n", perCall * 1e9);
  RecordProperty("prepare_memory_hit_ns", int(perCall * 1e9));
  if (kInstrumented)
    GTEST_SKIP() << "skipped: a latency bound means nothing under the "
                    "sanitizers' instrumentation (measured above)";
  EXPECT_LT(perCall, 0.5e-6);
}

TEST(RuntimeLatency, TinyRunOverhead) {
  FakeCompiler compiler;
  TempDir dir;
  Runtime rt({dir.path(), 1, &compiler});
  Problem p = Problem::dense(makeSpec(1, 1, 16), 1, 1, 1);
  AttentionArgs args = p.args();
  ASSERT_EQ(rt.run(p.spec, args), "");
  double perCall = bestMeanSeconds(20000, [&] { (void)rt.run(p.spec, args); });
  std::printf("run() on [1, 1, 1, 16]: %.0f ns\n", perCall * 1e9);
  RecordProperty("tiny_run_ns", int(perCall * 1e9));
  if (kInstrumented)
    GTEST_SKIP() << "skipped: a latency bound means nothing under the "
                    "sanitizers' instrumentation (measured above)";
  EXPECT_LT(perCall, 5e-6);
}

TEST(Runtime, Names) {
  EXPECT_EQ(toString(Target::CPU), "cpu");
  EXPECT_EQ(toString(Target::CUDA), "cuda");
  EXPECT_EQ(naiveConfig(64).str(),
            "variant=cpu_naive;block_m=64;block_n=32;num_warps=0;num_stages=0");
  TensorRef t(nullptr, {1, 12, 128, 64});
  EXPECT_EQ(t.shapeString(), "[1, 12, 128, 64]");
  EXPECT_EQ(t.numElements(), 12 * 128 * 64);
  EXPECT_EQ(TensorRef().shapeString(), "[]");
}

} // namespace

// A CPU kernel's info string names num_stages where it is set (the decode
// kernels' option), so RunStats can say which kernel ran; without it, 0.
TEST(KernelInfo, NumStagesRoundTripsWhereSet) {
  AttentionSpec spec = makeSpec(32, 8, 128);
  TileConfig c = defaultCpuConfig(KernelVariant::CpuDecodeAvx512);
  KernelInfo info;
  ASSERT_EQ(
      parseKernelInfo(formatKernelInfo(c, CpuClass::X86_64_V4, spec), info),
      "");
  EXPECT_EQ(info.numStages, 0);
  EXPECT_EQ(formatKernelInfo(c, CpuClass::X86_64_V4, spec).find("num_stages"),
            std::string::npos);
  c.numStages = 1;
  ASSERT_EQ(
      parseKernelInfo(formatKernelInfo(c, CpuClass::X86_64_V4, spec), info),
      "");
  EXPECT_EQ(info.numStages, 1);
  EXPECT_EQ(info.blockN, c.blockN);
  EXPECT_NE(parseKernelInfo("abi=5;variant=x;block_m=16;block_n=16;"
                            "num_stages=two;isa=x86-64-v4;spec=h=1",
                            info),
            "");
}
