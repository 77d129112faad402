//===- PagedTest.cpp - Attention over a paged KV cache vs float64 ---------===//
//
// k and v as a paged cache [num_pages, page_size, Hkv, D] (ALIBI.md), read
// through a shuffled block table whose entries past each sequence's used
// pages hold garbage (negative, past the cache, INT32_MAX): the kernel must
// never follow them. Three sequences per case: Sk keys, about half of
// that, and none (every row empty: o = 0, lse = -inf).
//
// The cases cover every pair of values of: Sq {1, 2, 7, 16}, Sk {1, 17,
// 1000, 8192, 32768}, page size {8, 16, 64, 256}, heads {12, 40, 71, 112},
// MHA/GQA/MQA, bias {none, alibi, alibi_symmetric} (alibi_positions needs a
// key padding mask, which a paged cache does not take), dtype, masks
// {none, causal, causal + window 100, window 100}, head dim {64, 128} and
// slopes {standard, custom [H], custom [B, H]}, among cases the float64
// reference can check in about a second; plus a chunked prefill (Sq = 129
// against the cache) and every key-addressing path of the decode family,
// and chunked prefills on the prefill kernels (every CPU variant, the
// runtime's choice past Sq 16 included), which look each key's page up.
//
//===----------------------------------------------------------------------===//

#include "tilt/CpuIsa.h"
#include "tilt/Half.h"
#include "tilt/KernelBundle.h"
#include "tilt/Reference.h"
#include "tilt/Runtime.h"
#include "tilt/TilePolicy.h"
#include "tilt/TuningDb.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "../common/CrossCompile.h"
#include "../common/ForwardCheck.h"
#include "../common/JitRuntimeTest.h"
#include "../common/Pairwise.h"
#include "../common/Strided.h"
#include "../common/TestInputs.h"

namespace {

using namespace tilt;

enum Dim {
  kSq,
  kSk,
  kPage,
  kHeads,
  kGroups,
  kBias,
  kDtype,
  kMask,
  kD,
  kSlopes
};
const std::vector<int> kArity = {4, 5, 4, 4, 3, 3, 3, 4, 2, 3};
constexpr int64_t kSqV[] = {1, 2, 7, 16};
constexpr int64_t kSkV[] = {1, 17, 1000, 8192, 32768};
constexpr int64_t kPageV[] = {8, 16, 64, 256};
constexpr int64_t kHeadsV[] = {12, 40, 71, 112};
constexpr int64_t kWindow = 100;

struct PagedCase {
  AttentionSpec spec;
  TileConfig config; ///< empty: the runtime's choice (TilePolicy.h)
  int64_t seqQ = 1, seqK = 1;
  bool slopesPerBatch = false;
  std::string name;
};

/// The three sequences' key counts: Sk, about half, none.
std::vector<int32_t> contextLens(int64_t seqK) {
  return {int32_t(seqK), int32_t((seqK + 1) / 2), 0};
}

/// Multiply-adds of the float64 reference (twice for 16-bit dtypes, whose
/// naive yardstick runs too) and elements of one cache.
double referenceCost(const PagedCase &c) {
  const AttentionSpec &s = c.spec;
  double keys = 0;
  for (int32_t len : contextLens(c.seqK))
    keys += s.window ? std::min<double>(len, *s.window + c.seqQ) : len;
  return double(s.heads) * c.seqQ * keys * s.headDim *
         (s.dtype == DType::F32 ? 1 : 2);
}
double cacheElements(const PagedCase &c) {
  return double(c.spec.kvHeads) * (2.0 * c.seqK + 4 * c.spec.pageSize) *
         c.spec.headDim;
}

PagedCase makeCase(const test::Choice &c) {
  PagedCase k;
  AttentionSpec &s = k.spec;
  k.seqQ = kSqV[c[kSq]];
  k.seqK = kSkV[c[kSk]];
  s.pageSize = kPageV[c[kPage]];
  s.heads = kHeadsV[c[kHeads]];
  s.kvHeads = c[kGroups] == 0 ? s.heads : 1;
  if (c[kGroups] == 1)
    for (int64_t g : {2, 3, 4})
      if (s.heads % g == 0) {
        s.kvHeads = s.heads / g;
        break;
      } // 71 has no small group: MQA
  s.bias = static_cast<BiasKind>(c[kBias]);
  s.dtype = static_cast<DType>(c[kDtype]);
  s.causal = c[kMask] == 1 || c[kMask] == 2;
  if (c[kMask] >= 2)
    s.window = kWindow;
  s.headDim = c[kD] == 0 ? 64 : 128;
  if (s.hasAlibi() && c[kSlopes] > 0) {
    s.slopes = SlopeSource::Custom;
    k.slopesPerBatch = c[kSlopes] == 2;
  }
  return k;
}

bool affordable(const PagedCase &c) {
  return referenceCost(c) <= 1.2e9 && cacheElements(c) <= 6e7;
}

std::string describe(const PagedCase &c) {
  std::string name = c.spec.canonical() + " Sq=" + std::to_string(c.seqQ) +
                     " Sk=" + std::to_string(c.seqK);
  if (c.slopesPerBatch)
    name += " slopes[B,H]";
  if (!c.config.variant.empty())
    name +=
        " " + c.config.variant + " " + std::to_string(c.config.blockM) + "x" +
        std::to_string(c.config.blockN) +
        (c.config.numStages ? " stages " + std::to_string(c.config.numStages)
                            : std::string());
  return name;
}

std::vector<PagedCase> allCases() {
  std::vector<PagedCase> cases;
  auto feasible = [](const test::Choice &c) { return affordable(makeCase(c)); };
  for (const test::Choice &c : test::pairwiseCover(kArity, 20261203, feasible))
    cases.push_back(makeCase(c));
  // Every addressing path of the decode family: a block in one page, read
  // once (page 64, block_n 16); blocks spanning pages, one entry per key
  // (page 8 < block_n 16, and page 16 < block_n 32); a window, whose blocks
  // start off the block grid (and 27 rows: two row blocks); a chunked
  // prefill (Sq = 129: 25 row blocks of a GQA group); AVX-512 (cross-compiled
  // where this CPU lacks it).
  auto pinned = [](int64_t sq, int64_t sk, int64_t page,
                   std::optional<int64_t> w, const char *variant, int64_t bm,
                   int64_t bn) {
    PagedCase c;
    c.spec.heads = 12;
    c.spec.kvHeads = 4;
    c.spec.headDim = 64;
    c.spec.dtype = DType::BF16;
    c.spec.bias = BiasKind::Alibi;
    c.spec.causal = true;
    c.spec.window = w;
    c.spec.pageSize = page;
    c.seqQ = sq;
    c.seqK = sk;
    c.config.variant = variant;
    c.config.blockM = bm;
    c.config.blockN = bn;
    return c;
  };
  cases.push_back(pinned(3, 1000, 64, {}, "cpu_decode_avx2", 16, 16));
  cases.push_back(pinned(3, 1000, 8, {}, "cpu_decode_avx2", 16, 16));
  cases.push_back(pinned(5, 777, 16, {}, "cpu_decode_avx2", 16, 32));
  cases.push_back(pinned(9, 2000, 32, 300, "cpu_decode_avx2", 16, 16));
  cases.push_back(pinned(129, 1000, 16, {}, "cpu_decode_avx2", 16, 16));
  cases.push_back(pinned(4, 1000, 128, 50, "cpu_decode_avx512", 16, 16));
  // The token-row path (Sq = 1 with groups of at most 4 heads; the runtime
  // hands a call every kv head of one (batch, split)): more kv heads than
  // block_m rows, f32, f16 and bf16 pairs (pair dot products where the CPU
  // has AVX512_BF16), a block in one page and blocks spanning pages, a
  // window, both ISAs; and MHA at Sq = 2 and groups of 8, which take the
  // row blocks instead.
  auto tokenRows = [&](int64_t h, int64_t d, DType t, int64_t sq, int64_t sk,
                       int64_t page, std::optional<int64_t> w,
                       const char *variant, int64_t bm, int64_t bn,
                       int64_t group = 1) {
    PagedCase c = pinned(sq, sk, page, w, variant, bm, bn);
    c.spec.heads = h;
    c.spec.kvHeads = h / group;
    c.spec.headDim = d;
    c.spec.dtype = t;
    return c;
  };
  cases.push_back(
      tokenRows(20, 64, DType::F32, 1, 1000, 8, {}, "cpu_decode_avx2", 16, 16));
  cases.push_back(tokenRows(40, 128, DType::BF16, 1, 2000, 256, 300,
                            "cpu_decode_avx512", 16, 32));
  cases.push_back(tokenRows(12, 128, DType::F16, 1, 8192, 16, {},
                            "cpu_decode_avx512", 16, 16));
  cases.push_back(tokenRows(24, 64, DType::BF16, 1, 777, 32, {},
                            "cpu_decode_avx2", 16, 32));
  cases.push_back(tokenRows(24, 64, DType::BF16, 2, 777, 16, {},
                            "cpu_decode_avx512", 16, 16));
  cases.push_back(tokenRows(32, 128, DType::BF16, 1, 8192, 16, {},
                            "cpu_decode_avx512", 32, 16, 4));
  cases.push_back(tokenRows(40, 64, DType::F32, 1, 1000, 8, {},
                            "cpu_decode_avx2", 16, 16, 2));
  cases.push_back(tokenRows(12, 128, DType::F16, 1, 2000, 256, 300,
                            "cpu_decode_avx512", 16, 32, 4));
  cases.push_back(tokenRows(24, 128, DType::BF16, 1, 777, 32, {},
                            "cpu_decode_avx2", 16, 32, 3));
  cases.push_back(tokenRows(48, 64, DType::BF16, 1, 1000, 64, {},
                            "cpu_decode_avx512", 16, 16, 3));
  cases.push_back(tokenRows(32, 128, DType::BF16, 1, 1000, 16, {},
                            "cpu_decode_avx512", 32, 16, 8));
  // Row blocks without the software requests for the keys ahead.
  cases.push_back(tokenRows(32, 128, DType::BF16, 1, 1000, 16, {},
                            "cpu_decode_avx512", 32, 16, 8));
  cases.back().config.numStages = 1;
  // ... and with them into L2 (num_stages 2), on the row blocks (a group of
  // 8 at Sq 1, MHA at Sq 2) and on the token rows (MHA at Sq 1), which ask
  // for the next block whatever the stages.
  for (auto [sq, group] : {std::pair<int64_t, int64_t>{1, 8}, {2, 1}, {1, 1}}) {
    cases.push_back(tokenRows(32, 128, DType::BF16, sq, 1000, 16, {},
                              "cpu_decode_avx512", 32, 16, group));
    cases.back().config.numStages = 2;
  }
  // Chunked prefill on the prefill kernels (a key block of 64 spans pages
  // of 8 and 16 and lies inside pages of 64 and 256): each variant
  // (cross-compiled where this CPU lacks it; cpu_amx and cpu_avx512bf16
  // take bf16), a window (blocks off the page grid), query blocks past the
  // sequence's end, MHA, GQA and MQA; and the runtime's own choice at Sq 17
  // and 129 (no config: the prefill family past TilePolicy's kDecodeMaxSq).
  auto prefill = [&](int64_t h, int64_t hkv, DType t, int64_t sq, int64_t sk,
                     int64_t page, std::optional<int64_t> w,
                     const char *variant, int64_t bm, int64_t bn) {
    PagedCase c = pinned(sq, sk, page, w, variant, bm, bn);
    c.spec.heads = h;
    c.spec.kvHeads = hkv;
    c.spec.dtype = t;
    return c;
  };
  cases.push_back(
      prefill(12, 4, DType::BF16, 129, 1000, 16, {}, "cpu_avx512bf16", 64, 64));
  cases.push_back(
      prefill(12, 12, DType::F32, 40, 2000, 256, 100, "cpu_avx512", 32, 64));
  cases.push_back(
      prefill(8, 1, DType::F16, 33, 777, 8, {}, "cpu_avx2", 32, 32));
  cases.push_back(
      prefill(12, 4, DType::BF16, 129, 1000, 64, 300, "cpu_amx", 64, 64));
  cases.push_back(prefill(12, 4, DType::BF16, 17, 1000, 32, {}, "", 0, 0));
  cases.push_back(prefill(12, 6, DType::F16, 129, 2000, 16, 100, "", 0, 0));
  cases.back().spec.slopes = SlopeSource::Custom;
  cases.back().slopesPerBatch = true;
  // Fewer keys than queries (100 and 50 against 129: the first rows see
  // no key, Sk - Sq < 0).
  cases.push_back(
      prefill(8, 2, DType::BF16, 129, 100, 16, {}, "cpu_avx512bf16", 64, 64));
  cases.push_back(prefill(8, 8, DType::F32, 129, 100, 8, {}, "", 0, 0));
  for (PagedCase &c : cases)
    c.name = describe(c);
  return cases;
}

void PrintTo(const PagedCase &c, std::ostream *os) { *os << c.name; }

class Paged : public test::JitRuntimeTest<PagedCase> {};

TEST_P(Paged, MatchesFloat64Reference) {
  const PagedCase &c = GetParam();
  const AttentionSpec &spec = c.spec;
  ASSERT_EQ(spec.validate(), "");
  if (std::string skip = test::crossCompiledSkipReason(spec, c.config, runtime);
      !skip.empty())
    GTEST_SKIP() << skip;
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const int64_t ps = spec.pageSize, Sq = c.seqQ;
  const std::vector<int32_t> lens = contextLens(c.seqK);
  const int64_t B = int64_t(lens.size());
  std::mt19937 rng(4321);

  // Pages: those the sequences use plus three spare, in shuffled order.
  const int64_t maxPages = (c.seqK + ps - 1) / ps + 2;
  int64_t used = 0;
  for (int32_t len : lens)
    used += (len + ps - 1) / ps;
  const int64_t numPages = used + 3;
  std::vector<int32_t> ids(numPages);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int32_t garbage[] = {-1, int32_t(numPages + 7), INT32_MAX, INT32_MIN};
  std::vector<int32_t> table(B * maxPages);
  for (int64_t b = 0, next = 0; b < B; ++b)
    for (int64_t p = 0; p < maxPages; ++p)
      table[b * maxPages + p] =
          p < (lens[b] + ps - 1) / ps ? ids[next++] : garbage[(b + p) % 4];

  auto fill = [&](int64_t n) {
    return test_inputs::normalBuffer(spec.dtype, n, rng);
  };
  TypedBuffer q = fill(B * H * Sq * D), k = fill(numPages * ps * Hkv * D),
              v = fill(numPages * ps * Hkv * D);
  TypedBuffer o(spec.dtype, B * H * Sq * D);
  std::vector<float> lse(B * H * Sq, 0.0f);
  std::vector<float> slopes;
  if (spec.hasAlibi() && spec.slopes == SlopeSource::Custom)
    slopes = test_inputs::customSlopes((c.slopesPerBatch ? B : 1) * H, 8, rng);

  AttentionArgs args;
  args.q = TensorRef(q.data(), {B, H, Sq, D});
  args.k = TensorRef(k.data(), {numPages, ps, Hkv, D});
  args.v = TensorRef(v.data(), {numPages, ps, Hkv, D});
  args.o = TensorRef(o.data(), {B, H, Sq, D});
  args.lse = TensorRef(lse.data(), {B, H, Sq});
  args.blockTable = TensorRef(table.data(), {B, maxPages});
  args.contextLens = TensorRef(const_cast<int32_t *>(lens.data()), {B});
  if (!slopes.empty())
    args.slopes = c.slopesPerBatch ? TensorRef(slopes.data(), {B, H})
                                   : TensorRef(slopes.data(), {H});
  ASSERT_EQ(runtime->run(spec, args, Target::CPU, c.config), "");
  // The runtime's own choice follows TilePolicy's rule: the decode family
  // up to kDecodeMaxSq, the prefill kernels past it.
  if (c.config.variant.empty()) {
    EXPECT_EQ(runtime->stats().lastKernel.variant.starts_with("cpu_decode"),
              useDecodeFamily(spec, Sq))
        << c.name << ": ran " << runtime->stats().lastKernel.variant;
  }
  // Split-KV (the decode family): the same call with the keys cut into
  // parts, merged.
  std::vector<SplitRun> splitRuns;
  if (runsDecodeFamily(spec, c.config, Sq)) {
    ASSERT_EQ(runSplits(spec, args, c.config, splitRuns), "");
  }

  // Strided q, o and caches (Strided.h; the caches seen as [num_pages,
  // Hkv, page_size + 1, D] memory), unsplit and split: the same bits.
  EXPECT_EQ(
      rerunStridedWithSplits(spec, args, c.config, q, k, v, o, lse, splitRuns),
      "")
      << c.name;

  reference::RoundedInputs rounded = reference::fromBuffers(
      q, k, v, slopes, c.slopesPerBatch, {}, false, {}, {});
  rounded.in.blockTable = table.data();
  rounded.in.maxPages = maxPages;
  rounded.in.contextLens = lens.data();
  const reference::Inputs &in = rounded.in;
  const Extents ext{B, Sq, 0};
  const reference::Outputs ref = reference::attention(spec, ext, in);

  const test::ForwardComparison cmp = test::compareWithReference(
      spec, ext, in, ref, o, lse, B * H * Sq, [](int64_t row) { return row; });
  const double err = cmp.err, bound = cmp.bound, lseErr = cmp.lseErr;
  const int64_t emptyRows = cmp.emptyRows;
  EXPECT_LE(err, bound) << c.name;
  EXPECT_LE(lseErr, spec.dtype == DType::F32 ? 1e-4 : 1e-3) << c.name;
  // The empty third sequence alone contributes H * Sq empty rows.
  EXPECT_GE(emptyRows, H * Sq);
  std::printf("    %-96s err %.2e (bound %.2e) lse err %.2e, %lld empty rows\n",
              c.name.c_str(), err, bound, lseErr, (long long)emptyRows);
  for (size_t n = 0; n < splitRuns.size(); ++n) {
    const test::ForwardComparison s = test::compareWithReference(
        spec, ext, in, ref, splitRuns[n].first, splitRuns[n].second, B * H * Sq,
        [](int64_t row) { return row; }, bound);
    EXPECT_LE(s.err, s.bound) << c.name << " split " << kSplitCounts[n];
    EXPECT_LE(s.lseErr, spec.dtype == DType::F32 ? 1e-4 : 1e-3)
        << c.name << " split " << kSplitCounts[n];
    EXPECT_EQ(s.emptyRows, emptyRows) << c.name << " split " << kSplitCounts[n];
    std::printf("    %-96s err %.2e (bound %.2e) lse err %.2e\n",
                (c.name + " split " + std::to_string(kSplitCounts[n])).c_str(),
                s.err, s.bound, s.lseErr);
  }
}

INSTANTIATE_TEST_SUITE_P(Cache, Paged, ::testing::ValuesIn(allCases()),
                         [](const ::testing::TestParamInfo<PagedCase> &info) {
                           return "case" + std::to_string(info.index);
                         });

// The runtime's choice for a paged decode call from a bundle's tuning
// database (TuningDb.h): a paged record's blocks even where they span
// pages (block_n 64 over 16-token pages); a record timed on a contiguous
// cache only with blocks inside one page (else the family's default); a
// contiguous call never takes a paged record. The kernels run (their
// numerics: the cases above, blocks spanning pages included).
class PagedTuning : public test::JitRuntimeTest<int> {};

TEST_F(PagedTuning, PagedRecordsServePagedCalls) {
  const HostCpu &host = hostCpu();
  if (!host.cls)
    GTEST_SKIP() << "skipped: this CPU (" << host.describe()
                 << ") runs no CPU class's kernels";
  const KernelVariant variant =
      decodeCpuVariant([&](std::string_view f) { return host.has(f); });
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("tilt-paged-tuning-" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // 32 heads over 8 kv heads, bf16 D 128, ALiBi, causal: the family's spec.
  TuningKey key{DType::BF16, 128, true, 32, 1024, 1, 8, 16};
  TileConfig tuned = defaultCpuConfig(variant);
  tuned.blockM = 16;
  tuned.blockN = 64;
  const TileConfig fallback = defaultCpuConfig(variant);
  ASSERT_NE(fallback.blockN, 64);
  auto runtimeWith = [&](int64_t recordPage) {
    TuningDb db;
    db.machine = "test";
    TuningRecord r;
    r.key = key;
    r.key.pageSize = recordPage;
    r.best = tuned;
    r.fallback = fallback;
    r.bestMs = 1;
    r.fallbackMs = 2;
    db.put(r);
    EXPECT_EQ(db.save(dir + "/t.tune"), "");
    std::ofstream(dir + "/index")
        << "tilt-bundle " << KernelBundle::kFormat << "\nclass "
        << toString(*host.cls) << " t.tune\n";
    RuntimeOptions options;
    options.cacheDir = cacheDir;
    options.compiler = compiler;
    options.kernelsDir = dir;
    return std::make_unique<Runtime>(options);
  };
  AttentionSpec spec = familySpec(key);
  const int64_t B = 2, H = 32, Hkv = 8, D = 128, Sk = 600, ps = 16;
  const int64_t pages = (Sk + ps - 1) / ps;
  std::mt19937 rng(5);
  TypedBuffer q = test_inputs::normalBuffer(spec.dtype, B * H * D, rng),
              k = test_inputs::normalBuffer(spec.dtype,
                                            B * pages * ps * Hkv * D, rng),
              v = test_inputs::normalBuffer(spec.dtype,
                                            B * pages * ps * Hkv * D, rng);
  TypedBuffer o(spec.dtype, B * H * D);
  std::vector<int32_t> table(B * pages), lens(B, int32_t(Sk));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  AttentionArgs paged;
  paged.q = TensorRef(q.data(), {B, H, 1, D});
  paged.o = TensorRef(o.data(), {B, H, 1, D});
  paged.k = TensorRef(k.data(), {B * pages, ps, Hkv, D});
  paged.v = TensorRef(v.data(), {B * pages, ps, Hkv, D});
  paged.blockTable = TensorRef(table.data(), {B, pages});
  paged.contextLens = TensorRef(lens.data(), {B});
  AttentionArgs dense = paged;
  dense.blockTable = dense.contextLens = TensorRef();
  dense.k = TensorRef(k.data(), {B, Hkv, Sk, D});
  dense.v = TensorRef(v.data(), {B, Hkv, Sk, D});
  AttentionSpec contiguous = spec;
  contiguous.pageSize = 0;

  std::unique_ptr<Runtime> rt = runtimeWith(ps);
  ASSERT_EQ(rt->run(spec, paged), "");
  EXPECT_EQ(rt->stats().lastKernel.str(), tuned.str());
  ASSERT_EQ(rt->run(contiguous, dense), "");
  EXPECT_EQ(rt->stats().lastKernel.str(), fallback.str());
  // The same record timed on a contiguous cache: its 64-key blocks would
  // span 16-token pages, so the paged call takes the default; the
  // contiguous call takes the record.
  rt = runtimeWith(0);
  ASSERT_EQ(rt->run(spec, paged), "");
  EXPECT_EQ(rt->stats().lastKernel.str(), fallback.str());
  ASSERT_EQ(rt->run(contiguous, dense), "");
  EXPECT_EQ(rt->stats().lastKernel.str(), tuned.str());
  rt.reset();
  std::filesystem::remove_all(dir);
}

TEST(PagedCover, EveryPairOfValuesIsCovered) {
  std::vector<std::tuple<int, int, int, int>> given_up;
  auto feasible = [](const test::Choice &c) { return affordable(makeCase(c)); };
  std::vector<test::Choice> cases =
      test::pairwiseCover(kArity, 20261203, feasible, &given_up);
  int a, b, x, y;
  EXPECT_TRUE(test::coversEveryPair(cases, kArity, a, b, x, y))
      << "dims " << a << "," << b << " values " << x << "," << y;
  for (auto [da, va, db, vb] : given_up)
    ADD_FAILURE() << "no affordable case holds value " << va << " of dim " << da
                  << " with value " << vb << " of dim " << db;
  std::printf("    %zu cases cover every pair\n", cases.size());
}

} // namespace
