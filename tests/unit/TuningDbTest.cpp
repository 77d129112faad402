//===- TuningDbTest.cpp - Tuning database and kernel bundle index ---------===//

#include "tilt/KernelBundle.h"
#include "tilt/TuningDb.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;

std::string tempDir(const char *name) {
  fs::path p = fs::temp_directory_path() /
               (std::string("tilt-tuningdb-") + name + "-" +
                std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

tilt::TileConfig config(const char *variant, int64_t m, int64_t n) {
  tilt::TileConfig c;
  c.variant = variant;
  c.blockM = m;
  c.blockN = n;
  return c;
}

tilt::TuningRecord record(tilt::DType t, int64_t d, bool causal, int64_t h,
                          int64_t s, tilt::TileConfig best, double ms) {
  tilt::TuningRecord r;
  r.key = {t, d, causal, h, s};
  r.best = best;
  r.bestMs = ms;
  r.fallback = config("cpu_avx512", 64, 64);
  r.fallbackMs = ms * 1.25;
  return r;
}

tilt::AttentionSpec spec(tilt::DType t, int64_t d, bool causal, int64_t h) {
  tilt::AttentionSpec s;
  s.heads = s.kvHeads = h;
  s.headDim = d;
  s.dtype = t;
  s.causal = causal;
  return s;
}

TEST(TuningDb, SaveLoadRoundTrip) {
  std::string dir = tempDir("roundtrip");
  tilt::TuningDb db;
  db.machine = "x86-64-v4-amx (test)";
  db.tiltVersion = "0.1.0";
  db.family = "alibi";
  db.put(record(tilt::DType::BF16, 128, true, 32, 2048,
                config("cpu_amx", 128, 256), 31.5));
  db.put(record(tilt::DType::F32, 64, false, 8, 128,
                config("cpu_avx512", 32, 64), 0.141));
  ASSERT_EQ(db.save(dir + "/a.tune"), "");
  tilt::TuningDb back;
  ASSERT_EQ(tilt::TuningDb::load(dir + "/a.tune", back), "");
  EXPECT_EQ(back.machine, db.machine);
  EXPECT_EQ(back.family, "alibi");
  ASSERT_EQ(back.records.size(), 2u);
  const tilt::TuningRecord *r =
      back.find({tilt::DType::BF16, 128, true, 32, 2048});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->best.str(), config("cpu_amx", 128, 256).str());
  EXPECT_DOUBLE_EQ(r->bestMs, 31.5);
  EXPECT_DOUBLE_EQ(r->fallbackMs, 39.375);
  // No temp file is left beside the database.
  int files = 0;
  for ([[maybe_unused]] auto &e : fs::directory_iterator(dir))
    ++files;
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(TuningDb, PutReplacesTheSameKey) {
  tilt::TuningDb db;
  db.put(record(tilt::DType::F32, 64, false, 8, 128, config("cpu_avx512", 32, 32), 1));
  db.put(record(tilt::DType::F32, 64, false, 8, 128, config("cpu_avx512", 64, 32), 2));
  ASSERT_EQ(db.records.size(), 1u);
  EXPECT_EQ(db.records[0].best.blockM, 64);
}

TEST(TuningDb, NearestBucketRule) {
  tilt::TuningDb db;
  for (int64_t h : {8, 32, 112})
    for (int64_t s : {128, 512, 2048, 8192})
      db.put(record(tilt::DType::F32, 128, true, h, s,
                    config("cpu_avx512", h, s), 1));
  db.put(record(tilt::DType::F32, 64, true, 8, 128, config("cpu_avx2", 1, 1), 1));
  using Key = std::pair<int64_t, int64_t>;
  auto pick = [&](int64_t heads, int64_t seqK) {
    const tilt::TuningRecord *r =
        db.lookup(spec(tilt::DType::F32, 128, true, heads), seqK);
    return r ? Key(r->key.heads, r->key.seq) : Key(0, 0);
  };
  // Exact keys.
  EXPECT_EQ(pick(32, 2048), Key(32, 2048));
  // Nearest in log2: 12 heads is 0.58 from 8 and 1.42 from 32.
  EXPECT_EQ(pick(12, 2048), Key(8, 2048));
  EXPECT_EQ(pick(40, 3000), Key(32, 2048));
  EXPECT_EQ(pick(71, 6000), Key(112, 8192));
  // Beyond the grid: the closest edge.
  EXPECT_EQ(pick(1, 1), Key(8, 128));
  EXPECT_EQ(pick(512, 100000), Key(112, 8192));
  // A tie (1024 sits exactly between 512 and 2048) goes to the smaller seq.
  EXPECT_EQ(pick(32, 1024), Key(32, 512));
  // dtype, head dim and causality must match exactly.
  EXPECT_EQ(db.lookup(spec(tilt::DType::BF16, 128, true, 32), 2048), nullptr);
  EXPECT_EQ(db.lookup(spec(tilt::DType::F32, 128, false, 32), 2048), nullptr);
  EXPECT_EQ(db.lookup(spec(tilt::DType::F32, 80, true, 32), 2048), nullptr);
  EXPECT_EQ(db.lookup(spec(tilt::DType::F32, 64, true, 32), 2048)->best.variant,
            "cpu_avx2");
}

tilt::TuningRecord decodeRecord(int64_t h, int64_t kv, int64_t sq, int64_t sk,
                                int64_t bm, int64_t bn) {
  tilt::TuningRecord r = record(tilt::DType::BF16, 128, true, h, sk,
                                config("cpu_decode_avx512", bm, bn), 1.0);
  r.key.kvHeads = kv;
  r.key.querySeq = sq;
  r.fallback = config("cpu_decode_avx512", 16, 16);
  return r;
}

// Decode records sit beside prefill ones; each lookup sees only its kind,
// and the decode rule adds the group (heads / kv heads) and Sq.
TEST(TuningDb, DecodeRecordsRoundTripAndTheirOwnRule) {
  std::string dir = tempDir("decode");
  tilt::TuningDb db;
  db.put(record(tilt::DType::BF16, 128, true, 32, 8192,
                config("cpu_avx512", 64, 64), 10));
  for (int64_t kv : {32, 8, 1})
    for (int64_t sq : {1, 16})
      for (int64_t sk : {1024, 32768})
        db.put(decodeRecord(32, kv, sq, sk, sq == 16 ? 64 : 16, kv));
  // The CPU decode kernels' num_stages (1: no software requests ahead).
  tilt::TuningRecord staged = decodeRecord(32, 4, 1, 8192, 32, 16);
  staged.best.numStages = 1;
  db.put(staged);
  ASSERT_EQ(db.save(dir + "/d.tune"), "");
  {
    // No paged record: format 2, which Tilt before paged records reads.
    std::ifstream in(dir + "/d.tune");
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("\ntilt-tuning-db 2\n"), std::string::npos) << text;
  }
  tilt::TuningDb back;
  ASSERT_EQ(tilt::TuningDb::load(dir + "/d.tune", back), "");
  ASSERT_EQ(back.records.size(), 14u);
  ASSERT_TRUE(back.find(staged.key));
  EXPECT_EQ(back.find(staged.key)->best.str(), staged.best.str());
  EXPECT_EQ(back.find(staged.key)->best.numStages, 1);
  tilt::TuningKey key{tilt::DType::BF16, 128, true, 32, 1024, 16, 8};
  ASSERT_TRUE(back.find(key));
  EXPECT_EQ(back.find(key)->best.str(),
            config("cpu_decode_avx512", 64, 8).str());
  EXPECT_EQ(tilt::familySpec(key).kvHeads, 8);

  auto pick = [&](int64_t h, int64_t kv, int64_t sq, int64_t sk) {
    tilt::AttentionSpec s = spec(tilt::DType::BF16, 128, true, h);
    s.kvHeads = kv;
    const tilt::TuningRecord *r = back.lookupDecode(s, sq, sk);
    return r ? std::make_tuple(r->key.kvHeads, r->key.querySeq, r->key.seq)
             : std::make_tuple(int64_t(0), int64_t(0), int64_t(0));
  };
  using T = std::tuple<int64_t, int64_t, int64_t>;
  EXPECT_EQ(pick(32, 8, 16, 32768), T(8, 16, 32768));
  // 64 heads over 16 kv heads: group 4, nearest to 32 / 8.
  EXPECT_EQ(pick(64, 16, 12, 20000), T(8, 16, 32768));
  // MQA with 40 heads: group 40, nearest to 32 / 1.
  EXPECT_EQ(pick(40, 1, 1, 900), T(1, 1, 1024));
  // Sq 4 sits exactly between 1 and 16: the smaller Sq.
  EXPECT_EQ(pick(32, 32, 4, 1024), T(32, 1, 1024));
  // A prefill lookup never returns a decode record, nor the other way.
  EXPECT_FALSE(
      back.lookup(spec(tilt::DType::BF16, 128, true, 32), 1024)->key.decode());
  tilt::TuningDb prefillOnly;
  prefillOnly.put(back.records.front());
  EXPECT_EQ(
      prefillOnly.lookupDecode(spec(tilt::DType::BF16, 128, true, 32), 1, 1024),
      nullptr);
  fs::remove_all(dir);
}

// Paged decode records (format 3, a page size after Sk) serve paged calls
// only, nearest page size included; a paged call falls back to the
// contiguous records where there is no paged one, a contiguous call never
// takes a paged record.
TEST(TuningDb, PagedDecodeRecordsServePagedCalls) {
  std::string dir = tempDir("paged");
  tilt::TuningDb db;
  db.put(decodeRecord(32, 8, 1, 8192, 64, 16));
  db.put(decodeRecord(32, 8, 1, 32768, 16, 16));
  for (int64_t page : {16, 256})
    for (int64_t sk : {8192, 32768}) {
      tilt::TuningRecord r =
          decodeRecord(32, 8, 1, sk, 16, page == 16 ? 64 : 32);
      r.key.pageSize = page;
      db.put(r);
    }
  ASSERT_EQ(db.save(dir + "/p.tune"), "");
  {
    std::ifstream in(dir + "/p.tune");
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("tilt-tuning-db 3\n"), std::string::npos);
    EXPECT_NE(text.find("\ndecode bf16 128 1 32 8 1 32768 16 | "
                        "cpu_decode_avx512 16 64 | "),
              std::string::npos)
        << text;
  }
  tilt::TuningDb back;
  ASSERT_EQ(tilt::TuningDb::load(dir + "/p.tune", back), "");
  ASSERT_EQ(back.records.size(), 6u);
  tilt::TuningKey key{tilt::DType::BF16, 128, true, 32, 8192, 1, 8, 256};
  ASSERT_TRUE(back.find(key));
  EXPECT_EQ(back.find(key)->best.str(),
            config("cpu_decode_avx512", 16, 32).str());
  EXPECT_EQ(tilt::familySpec(key).pageSize, 256);
  EXPECT_EQ(tilt::familySpec(key).kvHeads, 8);

  auto pick = [&](const tilt::TuningDb &from, int64_t page, int64_t sk) {
    tilt::AttentionSpec s = spec(tilt::DType::BF16, 128, true, 32);
    s.kvHeads = 8;
    s.pageSize = page;
    const tilt::TuningRecord *r = from.lookupDecode(s, 1, sk);
    return r ? std::make_pair(r->key.pageSize, r->key.seq)
             : std::make_pair(int64_t(-1), int64_t(-1));
  };
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ(pick(back, 0, 30000), P(0, 32768));
  EXPECT_EQ(pick(back, 16, 30000), P(16, 32768));
  EXPECT_EQ(pick(back, 8, 8192), P(16, 8192));
  EXPECT_EQ(pick(back, 128, 8192), P(256, 8192));
  // Page 64 sits exactly between 16 and 256 (log2 distance 2 each): the
  // smaller page wins the tie.
  EXPECT_EQ(pick(back, 64, 8192), P(16, 8192));
  // Without paged records a paged call takes the contiguous ones; without
  // contiguous ones a contiguous call takes none.
  tilt::TuningDb contiguous, paged;
  for (const tilt::TuningRecord &r : back.records)
    (r.key.pageSize ? paged : contiguous).put(r);
  EXPECT_EQ(pick(contiguous, 16, 8192), P(0, 8192));
  EXPECT_EQ(pick(paged, 0, 8192), P(-1, -1));
  fs::remove_all(dir);
}

TEST(TuningDb, ErrorsNameFileAndLine) {
  std::string dir = tempDir("errors");
  auto loadText = [&](const std::string &text) {
    std::ofstream(dir + "/x.tune") << text;
    tilt::TuningDb db;
    return tilt::TuningDb::load(dir + "/x.tune", db);
  };
  std::string path = dir + "/x.tune";
  EXPECT_EQ(loadText("hello\n"),
            path +
                ":1: not a Tilt tuning database (expected 'tilt-tuning-db 3')");
  // Found by tests/fuzz: a whitespace-only line was read past its end.
  EXPECT_EQ(loadText("tilt-tuning-db 1\n \f\t\nf32 64 0 8 128 | cpu_avx2 32 "
                     "32 | 1 | cpu_avx2 64 64 | 2\n"),
            "");
  EXPECT_EQ(loadText("tilt-tuning-db 4\n"),
            path + ":1: format 4 is not supported (this Tilt reads formats 1 "
                   "to 3)");
  EXPECT_EQ(loadText("tilt-tuning-db 0\n"),
            path + ":1: format 0 is not supported (this Tilt reads formats 1 "
                   "to 3)");
  EXPECT_EQ(loadText("tilt-tuning-db 2\ndecode f32 64 1 8 2 1 1024 16 | "
                     "cpu_decode_avx512 16 16 | 1 | cpu_decode_avx512 16 16 | "
                     "2\n"),
            path + ":2: paged decode records need format 3 ('tilt-tuning-db "
                   "3')");
  EXPECT_EQ(loadText("tilt-tuning-db 1\ndecode f32 64 1 8 2 1 1024 | "
                     "cpu_decode_avx512 16 16 | 1 | cpu_decode_avx512 16 16 | "
                     "2\n"),
            path + ":2: decode records need format 2 ('tilt-tuning-db 2')");
  EXPECT_EQ(loadText("tilt-tuning-db 2\ndecode f32 64 1 8 2 1 1024 | "
                     "cpu_avx512 16 16 | 1 | cpu_decode_avx512 16 16 | 2\n"),
            path + ":2: variant cpu_avx512 does not serve a decode record");
  EXPECT_EQ(loadText("tilt-tuning-db 2\nf32 64 0 8 128 | cpu_decode_avx2 16 "
                     "16 | 1 | cpu_avx2 32 32 | 2\n"),
            path +
                ":2: variant cpu_decode_avx2 does not serve a prefill record");
  EXPECT_EQ(loadText("tilt-tuning-db 2\nf32 64 0 8 128 | cpu_avx512 -32 32 | "
                     "1 | cpu_avx512 64 64 | 2\n"),
            path + ":2: bad tile configuration");
  // num_warps and num_stages as the dialect's verifier takes them for CPU
  // variants: decode kernels' stages 0 to 2, no warps; none on the others.
  EXPECT_EQ(loadText("tilt-tuning-db 2\ndecode f32 64 1 8 2 1 1024 | "
                     "cpu_decode_avx512 16 16 0 3 | 1 | cpu_decode_avx512 16 "
                     "16 | 2\n"),
            path + ":2: num_stages 3 on cpu_decode_avx512: allowed 0, 1 or 2");
  EXPECT_EQ(loadText("tilt-tuning-db 2\ndecode f32 64 1 8 2 1 1024 | "
                     "cpu_decode_avx512 16 16 | 1 | cpu_decode_avx2 16 16 4 1 "
                     "| 2\n"),
            path + ":2: num_warps 4 on cpu_decode_avx2: CPU variants take 0");
  EXPECT_EQ(loadText("tilt-tuning-db 2\nf32 64 0 8 128 | cpu_avx512 32 32 0 2 "
                     "| 1 | cpu_avx512 64 64 | 2\n"),
            path + ":2: num_stages 2 on cpu_avx512: allowed 0");
  EXPECT_EQ(loadText("tilt-tuning-db 2\ndecode f32 64 1 8 2 1 1024 | "
                     "cpu_decode_avx512 16 16 0 2 | 1 | cpu_decode_avx512 16 "
                     "16 | 2\n"),
            "");
  // Decode keys: "decode" dtype head_dim causal heads kv_heads sq sk, kv
  // heads dividing heads, Sq in [1, 16].
  for (const char *key :
       {"decode f32 64 1 8 3 1 1024",
        "decode f32 64 1 8 2 "
        "17 1024",
        "decode f32 64 1 8 2 0 1024", "decode f32 64 1 8 2 1",
        // A page size: a power of two from 8 to 256.
        "decode f32 64 1 8 2 1 1024 24", "decode f32 64 1 8 2 1 1024 4",
        "decode f32 64 1 8 2 1 1024 512", "decode f32 64 1 8 2 1 1024 0",
        "decode f32 64 1 8 2 1 1024 16 16"})
    EXPECT_NE(loadText(std::string("tilt-tuning-db 3\n") + key +
                       " | cpu_decode_avx512 16 16 | 1 | cpu_decode_avx512 "
                       "16 16 | 2\n")
                  .find(":2: bad key 'decode"),
              std::string::npos)
        << key;
  EXPECT_EQ(loadText("tilt-tuning-db 1\nf64 64 0 8 128 | cpu_avx512 32 32 | 1 | "
                     "cpu_avx512 64 64 | 2\n"),
            path + ":2: bad key 'f64 64 0 8 128 '");
  EXPECT_EQ(loadText("tilt-tuning-db 1\nf32 64 0 8 128 | cpu_avx512 x 32 | 1 | "
                     "cpu_avx512 64 64 | 2\n"),
            path + ":2: bad tile configuration");
  EXPECT_EQ(loadText("tilt-tuning-db 1\nf32 64 0 8 128 | cpu_avx512 32 32 | "
                     "fast | cpu_avx512 64 64 | 2\n"),
            path + ":2: bad time");
  EXPECT_EQ(loadText("tilt-tuning-db 1\nf32 64 0 8 128 | cpu_avx512 32 32\n"),
            path + ":2: expected 'dtype head_dim causal heads seq | best config "
                   "| ms | default config | ms'");
  EXPECT_EQ(loadText(""), path + ": empty tuning database");
  tilt::TuningDb db;
  EXPECT_EQ(tilt::TuningDb::load(dir + "/missing.tune", db),
            dir + "/missing.tune: cannot open the tuning database");
  fs::remove_all(dir);
}

TEST(KernelBundle, TheBestClassNotAboveTheHostServes) {
  using tilt::CpuClass;
  std::string dir = tempDir("bundle");
  tilt::TileConfig avx2 = config("cpu_avx2", 32, 64),
                   avx512 = config("cpu_avx512", 64, 64);
  std::ofstream(dir + "/index")
      << "tilt-bundle 2\ntilt 0.1.0\n"
      << "class x86-64-v3 tuning-x86-64-v3.db tuned on x86-64-v3 (znver3)\n"
      << "class x86-64-v4-bf16 tuning-x86-64-v4-bf16.db borrowed\n"
      << "a.so\tSPEC\t" << avx2.str() << "\tx86-64-v3\n"
      << "b.so\tSPEC\t" << avx512.str() << "\tx86-64-v4-bf16\n";
  tilt::KernelBundle b;
  ASSERT_EQ(tilt::KernelBundle::load(dir, b, CpuClass::X86_64_V3), "");
  EXPECT_EQ(b.cpuClass, CpuClass::X86_64_V3);
  EXPECT_EQ(b.tuningDb, dir + "/tuning-x86-64-v3.db");
  EXPECT_EQ(b.find("SPEC", avx2), dir + "/a.so");
  EXPECT_EQ(b.find("SPEC", avx512), "") << "a v4 kernel on a v3 CPU";
  EXPECT_EQ(b.find("OTHER", avx2), "");

  // An AMX machine takes the highest class it runs: x86-64-v4-bf16.
  ASSERT_EQ(tilt::KernelBundle::load(dir, b, CpuClass::X86_64_V4_AMX), "");
  EXPECT_EQ(b.cpuClass, CpuClass::X86_64_V4_BF16);
  EXPECT_EQ(b.find("SPEC", avx512), dir + "/b.so");
  EXPECT_EQ(b.find("SPEC", avx2), "");
  EXPECT_NE(b.status.find("bundle class x86-64-v4-bf16 serves this CPU "
                          "(x86-64-v4-amx"),
            std::string::npos)
      << b.status;

  // A CPU below every class: no kernels, and the status says why.
  ASSERT_EQ(tilt::KernelBundle::load(dir, b, std::nullopt), "");
  EXPECT_FALSE(b.cpuClass);
  EXPECT_TRUE(b.files.empty());
  EXPECT_NE(b.status.find("runs on this CPU (below x86-64-v3)"),
            std::string::npos)
      << b.status;
  fs::remove_all(dir);
}

TEST(KernelBundle, MalformedIndexesNameTheLine) {
  std::string dir = tempDir("bundle-bad");
  auto load = [&](const std::string &text) {
    std::ofstream(dir + "/index") << text;
    tilt::KernelBundle b;
    return tilt::KernelBundle::load(dir, b, tilt::CpuClass::X86_64_V4);
  };
  EXPECT_EQ(load("something else\n"),
            dir + "/index:1: not a Tilt kernel bundle index of format 2");
  EXPECT_EQ(load("tilt-bundle 1\ncpu 0000\n"),
            dir + "/index:1: not a Tilt kernel bundle index of format 2");
  EXPECT_EQ(load("tilt-bundle 2\nclass x86-64-v9 t.db\n"),
            dir + "/index:2: class must be x86-64-v3, x86-64-v4, "
                  "x86-64-v4-bf16 or x86-64-v4-amx, got 'x86-64-v9'");
  EXPECT_EQ(load("tilt-bundle 2\nclass x86-64-v3\n"),
            dir + "/index:2: expected 'class <cpu class> <tuning database "
                  "file>'");
  EXPECT_EQ(load("tilt-bundle 2\nk.so\tSPEC\tCONFIG\tx86-64-v3\n"),
            dir + "/index:2: kernel of class 'x86-64-v3', which no 'class' "
                  "line names before it");
  EXPECT_EQ(load("tilt-bundle 2\nk.so\tSPEC\n"),
            dir + "/index:2: expected 'file<TAB>spec<TAB>config<TAB>class or "
                  "cuda'");
  fs::remove(dir + "/index");
  tilt::KernelBundle b;
  EXPECT_EQ(tilt::KernelBundle::load(dir, b), "") << "no index: empty bundle";
  EXPECT_TRUE(b.files.empty());
  fs::remove_all(dir);
}

} // namespace
