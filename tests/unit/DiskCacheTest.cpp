//===- DiskCacheTest.cpp - The on-disk kernel cache, property by property -===//
//
// What the key covers, the entry format and its verification, the directory
// checks, the per-key lock, LRU eviction under the size cap and the cleanup
// of what killed processes leave behind. Bad entries are planted on disk:
// each must be removed and rebuilt, never loaded.
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestSupport.h"
#include "Sha256.h"

#include <chrono>
#include <fcntl.h>
#include <functional>
#include <set>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace {

using namespace tilt;
using namespace tilt::test;
using detail::DiskCache;
using detail::KeyLock;

std::string entryFile(const TempDir &dir, const std::string &key) {
  return dir / (key + ".kernel");
}

std::string lockFile(const TempDir &dir, const std::string &key) {
  return dir / (key + ".lock");
}

bool exists(const std::string &path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

/// Sets a file's mtime (the disk cache's "last used") to `secondsAgo`.
void setAge(const std::string &path, int secondsAgo) {
  struct timespec times[2];
  times[0].tv_sec = times[1].tv_sec = time(nullptr) - secondsAgo;
  times[0].tv_nsec = times[1].tv_nsec = 0;
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

//===----------------------------------------------------------------------===//
// Key
//===----------------------------------------------------------------------===//

TEST(CacheKey, ChangesWithEveryPart) {
  const std::string spec = makeSpec(4, 2, 32).canonical();
  const std::string otherSpec = makeSpec(4, 2, 64).canonical();
  const std::string config = naiveConfig(16).str();
  const detail::CacheKeyParts base{spec,    "default", "cpu", "llvm-22;avx2",
                                   "0.1.0", "abc1234", 1};
  std::vector<detail::CacheKeyParts> variants(7, base);
  variants[0].canonicalSpec = otherSpec;
  variants[1].config = config;
  variants[2].target = "cuda";
  variants[3].compilerFingerprint = "llvm-22;avx512f";
  variants[4].tiltVersion = "0.1.1";
  variants[5].tiltCommit = "def5678";
  variants[6].abiVersion = 2;
  std::set<std::string> keys{detail::cacheKey(base)};
  for (const detail::CacheKeyParts &v : variants)
    keys.insert(detail::cacheKey(v));
  std::printf("key parts varied one at a time: %zu, distinct keys: %zu "
              "(with the base)\n",
              variants.size(), keys.size());
  EXPECT_EQ(keys.size(), variants.size() + 1);
  EXPECT_EQ(detail::cacheKey(base), detail::cacheKey(base));
  EXPECT_EQ(detail::cacheKey(base).size(), 64u);
}

// Whatever a compiler puts in its fingerprint, parts cannot bleed into each
// other: with plain newline-joined parts these two would collide.
TEST(CacheKey, PartsCannotRunIntoEachOther) {
  detail::CacheKeyParts a{"spec", "default", "cpu", "fp\n0.1.0", "x", "c", 1};
  detail::CacheKeyParts b{"spec", "default", "cpu", "fp", "0.1.0\nx", "c", 1};
  EXPECT_NE(detail::cacheKey(a), detail::cacheKey(b));
}

TEST(CacheKey, RuntimeUsesThisBuildsVersionAndCommit) {
  TempDir dir;
  FakeCompiler compiler;
  AttentionSpec spec = makeSpec(4, 2, 32);
  ASSERT_EQ(Runtime({dir.path(), 1, &compiler}).prepare(spec), "");
  std::printf("tilt %s, commit %s\n", TILT_TEST_VERSION, TILT_TEST_COMMIT);
  EXPECT_STRNE(TILT_TEST_COMMIT, "");
  const std::string key = cacheKeyFor(spec);
  EXPECT_EQ(dir.list(),
            (std::vector<std::string>{key + ".kernel", key + ".lock"}));
}

//===----------------------------------------------------------------------===//
// Entry format
//===----------------------------------------------------------------------===//

TEST(CacheEntry, HeaderLayout) {
  const std::string key = detail::sha256Hex("some key");
  const std::string payload = "\x7f"
                              "ELF and the rest";
  const std::string entry = detail::encodeEntry(key, payload);
  ASSERT_EQ(entry.size(), detail::kEntryHeaderSize + payload.size());
  EXPECT_EQ(entry.substr(0, 8), "TILTKERN");
  EXPECT_EQ(entry.substr(8, 4), std::string("\1\0\0\0", 4));
  EXPECT_EQ(entry.substr(12, 8), std::string("\x11\0\0\0\0\0\0\0", 8));
  detail::Sha256 sha;
  sha.update(payload);
  const auto digest = sha.finish();
  EXPECT_EQ(entry.substr(20, 32),
            std::string(reinterpret_cast<const char *>(digest.data()), 32));
  EXPECT_EQ(entry.substr(52, 64), key);
  EXPECT_EQ(entry.substr(116), payload);

  std::string_view decoded;
  EXPECT_EQ(detail::decodeEntry(entry, key, decoded), "");
  EXPECT_EQ(decoded, payload);
}

TEST(CacheEntry, VerificationNamesTheProblem) {
  const std::string key = detail::sha256Hex("some key");
  const std::string payload = "\x7f"
                              "ELF and the rest";
  const std::string good = detail::encodeEntry(key, payload);
  auto flipped = [&](size_t byte) {
    std::string e = good;
    e[byte] ^= 0x10;
    return e;
  };
  std::string otherVersion = good;
  otherVersion[8] = 2;
  const struct {
    const char *name;
    std::string entry;
    std::string why;
  } cases[] = {
      {"empty", "", "truncated: 0 bytes, shorter than the 116-byte header"},
      {"cut in the header", good.substr(0, 50),
       "truncated: 50 bytes, shorter than the 116-byte header"},
      {"cut in the payload", good.substr(0, good.size() - 1),
       "payload of 16 bytes where the header says 17 (truncated or "
       "overwritten)"},
      {"a byte appended", good + "x",
       "payload of 18 bytes where the header says 17 (truncated or "
       "overwritten)"},
      {"magic", flipped(3), "bad magic (not a Tilt cache entry)"},
      {"a bare shared object", payload, "bad magic (not a Tilt cache entry)"},
      {"format version", otherVersion,
       "format version 2, this runtime reads version 1"},
      {"length field", flipped(12),
       "payload of 17 bytes where the header says 1 (truncated or "
       "overwritten)"},
      {"stored digest", flipped(30), "payload SHA-256 mismatch (corrupt)"},
      {"stored key", flipped(60), "written for another key"},
      {"payload", flipped(120), "payload SHA-256 mismatch (corrupt)"},
  };
  for (const auto &c : cases) {
    std::string_view decoded;
    EXPECT_EQ(detail::decodeEntry(c.entry, key, decoded), c.why) << c.name;
  }
  std::string_view decoded;
  EXPECT_EQ(
      detail::decodeEntry(good, detail::sha256Hex("another key"), decoded),
      "written for another key");
}

//===----------------------------------------------------------------------===//
// Bad entries on disk: removed and rebuilt, never loaded
//===----------------------------------------------------------------------===//

struct Corruption {
  const char *name;
  /// Plants a bad entry for `key` at `path`.
  std::function<void(const std::string &path, const std::string &key,
                     const AttentionSpec &spec)>
      plant;
  const char *why; ///< in the runtime's message
};

std::string goodPayload(const AttentionSpec &spec) {
  return stampedKernel(kernelInfo(spec.canonical(), 16, 32));
}

std::string goodEntry(const std::string &key, const AttentionSpec &spec) {
  return detail::encodeEntry(key, goodPayload(spec));
}

/// The runtime's word for a kernel of the next ABI version.
const std::string kOtherAbi =
    "built for ABI " + std::to_string(kKernelAbiVersion + 1);

const Corruption kCorruptions[] = {
    {"Empty", [](auto &path, auto &, auto &) { writeFile(path, ""); },
     "truncated: 0 bytes"},
    {"TruncatedHeader",
     [](auto &path, auto &key, auto &spec) {
       writeFile(path, goodEntry(key, spec).substr(0, 60));
     },
     "truncated: 60 bytes"},
    {"TruncatedPayload",
     [](auto &path, auto &key, auto &spec) {
       std::string e = goodEntry(key, spec);
       writeFile(path, e.substr(0, e.size() / 2));
     },
     "(truncated or overwritten)"},
    {"BitFlipInPayload",
     [](auto &path, auto &key, auto &spec) {
       std::string e = goodEntry(key, spec);
       e[e.size() / 2] ^= 4;
       writeFile(path, e);
     },
     "payload SHA-256 mismatch"},
    {"BitFlipInHeader",
     [](auto &path, auto &key, auto &spec) {
       std::string e = goodEntry(key, spec);
       e[14] ^= 1; // payload length
       writeFile(path, e);
     },
     "where the header says"},
    {"WrongMagic",
     [](auto &path, auto &key, auto &spec) {
       std::string e = goodEntry(key, spec);
       e[0] = 'X';
       writeFile(path, e);
     },
     "bad magic"},
    {"BareSharedObject", // what Tilt stored before entries had a header
     [](auto &path, auto &, auto &spec) { writeFile(path, goodPayload(spec)); },
     "bad magic"},
    {"OtherFormatVersion",
     [](auto &path, auto &key, auto &spec) {
       std::string e = goodEntry(key, spec);
       e[8] = char(detail::kEntryFormatVersion + 1);
       writeFile(path, e);
     },
     "format version 2, this runtime reads version 1"},
    {"AnotherKeysEntry",
     [](auto &path, auto &, auto &spec) {
       writeFile(path, goodEntry(detail::sha256Hex("another key"), spec));
     },
     "written for another key"},
    {"Symlink",
     [](auto &path, auto &key, auto &spec) {
       writeFile(path + ".target", goodEntry(key, spec));
       ASSERT_EQ(symlink((path + ".target").c_str(), path.c_str()), 0);
     },
     "cannot open"},
    // Intact entries whose kernel is not the one asked for (a stale or
    // colliding file): verified, loaded, then refused by the kernel checks.
    {"VerifiedKernelOfAnotherSpec",
     [](auto &path, auto &key, auto &spec) {
       AttentionSpec other = spec;
       other.causal = !spec.causal;
       writeFile(path, detail::encodeEntry(key, goodPayload(other)));
     },
     "built for spec"},
    {"VerifiedKernelOfAnotherAbi",
     [](auto &path, auto &key, auto &spec) {
       writeFile(path, detail::encodeEntry(key, stampedKernel(kernelInfo(
                                                    spec.canonical(), 16, 32,
                                                    kKernelAbiVersion + 1))));
     },
     kOtherAbi.c_str()},
};

class BadEntry : public ::testing::TestWithParam<Corruption> {};

TEST_P(BadEntry, IsRemovedAndRebuiltNeverLoaded) {
  const Corruption &c = GetParam();
  TempDir dir;
  Problem p =
      Problem::dense(makeSpec(4, 2, 32, BiasKind::Alibi, true), 1, 20, 20);

  // Without a compiler (whose fingerprint is then ""), the entry is removed
  // and the error says why.
  {
    const std::string key = cacheKeyFor(p.spec, "");
    c.plant(entryFile(dir, key), key, p.spec);
    Runtime rt({dir.path(), 1, nullptr});
    std::string err = rt.prepare(p.spec);
    EXPECT_NE(err.find(entryFile(dir, key) + ": "), std::string::npos) << err;
    EXPECT_NE(err.find(c.why), std::string::npos) << err;
    EXPECT_NE(err.find("(entry removed; no compiler to rebuild it)"),
              std::string::npos)
        << err;
    EXPECT_EQ(rt.stats().diskRejected, 1);
    EXPECT_EQ(rt.stats().diskHits, 0);
    EXPECT_FALSE(exists(entryFile(dir, key)));
    EXPECT_FALSE(exists(lockFile(dir, key)));
  }

  // With one, it is rebuilt and the result is right.
  const std::string key = cacheKeyFor(p.spec);
  c.plant(entryFile(dir, key), key, p.spec);
  FakeCompiler compiler;
  Runtime rt({dir.path(), 2, &compiler});
  AttentionArgs args = p.args();
  ASSERT_EQ(rt.run(p.spec, args), "");
  EXPECT_EQ(rt.stats().compiles, 1);
  EXPECT_EQ(rt.stats().diskRejected, 1);
  EXPECT_EQ(rt.stats().diskHits, 0);
  EXPECT_LE(p.maxError(), 1e-5);
  // The rebuilt entry verifies and serves the next process.
  std::string_view payload;
  EXPECT_EQ(detail::decodeEntry(readFile(entryFile(dir, key)), key, payload),
            "");
  Runtime next({dir.path(), 1, &compiler});
  ASSERT_EQ(next.prepare(p.spec), "");
  EXPECT_EQ(next.stats().diskHits, 1);
}

INSTANTIATE_TEST_SUITE_P(All, BadEntry, ::testing::ValuesIn(kCorruptions),
                         [](const auto &info) { return info.param.name; });

TEST(DiskCache, NoCompilerLoadsAGoodEntryWithoutLocking) {
  TempDir dir;
  AttentionSpec spec = makeSpec(4, 2, 32);
  const std::string key = cacheKeyFor(spec, "");
  writeFile(entryFile(dir, key), goodEntry(key, spec));
  Runtime rt({dir.path(), 1, nullptr});
  EXPECT_EQ(rt.prepare(spec), "");
  EXPECT_EQ(rt.stats().diskHits, 1);
  EXPECT_EQ(dir.list(), std::vector<std::string>{key + ".kernel"});
}

TEST(DiskCache, DirectoryIs0700FilesAre0600NoTempFiles) {
  TempDir root;
  const std::string cache = root / "a/b/cache";
  FakeCompiler compiler;
  AttentionSpec spec = makeSpec(4, 2, 32);
  ASSERT_EQ(Runtime({cache, 1, &compiler}).prepare(spec), "");
  struct stat st;
  for (const std::string &d : {root / "a", root / "a/b", cache}) {
    ASSERT_EQ(stat(d.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u) << d;
  }
  const std::string key = cacheKeyFor(spec);
  ASSERT_EQ(root.list(cache),
            (std::vector<std::string>{key + ".kernel", key + ".lock"}));
  for (const std::string &f : root.list(cache)) {
    ASSERT_EQ(stat((cache + "/" + f).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
}

//===----------------------------------------------------------------------===//
// Directory checks
//===----------------------------------------------------------------------===//

TEST(CacheDirectory, WritableByGroupOrOthersIsRefused) {
  TempDir dir;
  FakeCompiler compiler;
  Runtime rt({dir.path(), 1, &compiler});
  Problem p = Problem::dense(makeSpec(4, 2, 32), 1, 8, 8);
  AttentionArgs args = p.args();
  const struct {
    mode_t mode;
    const char *who;
  } cases[] = {{0777, "group and others"},
               {0770, "group"},
               {0702, "others"},
               {01777, "group and others"}};
  for (const auto &c : cases) {
    ASSERT_EQ(chmod(dir.path().c_str(), c.mode), 0);
    const std::string want = fmt::format(
        "cache: directory {} is writable by {} (mode {:04o}); the runtime "
        "executes the kernels in it, so only its owner may write it: chmod "
        "go-w it or use another directory (TILT_CACHE_DIR)",
        dir.path(), c.who, c.mode);
    EXPECT_EQ(rt.prepare(p.spec), want);
    EXPECT_EQ(rt.run(p.spec, args), want);
    EXPECT_EQ(Runtime({dir.path(), 1, nullptr}).prepare(p.spec), want)
        << "reads must be refused too";
    if (c.mode == 0777)
      std::printf("%s\n", want.c_str());
  }
  EXPECT_EQ(compiler.compiles, 0);
  EXPECT_TRUE(dir.list().empty());

  // Readable by others is fine; and once fixed, the same runtime proceeds.
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  EXPECT_EQ(rt.run(p.spec, args), "");
  EXPECT_LE(p.maxError(), 1e-5);
}

TEST(CacheDirectory, OwnedByAnotherUserIsRefused) {
  if (geteuid() != 0)
    GTEST_SKIP() << "skipped: needs root";
  TempDir dir;
  ASSERT_EQ(chown(dir.path().c_str(), 65534, 65534), 0);
  FakeCompiler compiler;
  AttentionSpec spec = makeSpec(4, 2, 32);
  const std::string want = fmt::format(
      "cache: directory {} is owned by uid 65534, not by this user (uid 0); "
      "the runtime executes the kernels in it, so it must be yours: change "
      "its owner or use another directory (TILT_CACHE_DIR)",
      dir.path());
  std::printf("%s\n", want.c_str());
  EXPECT_EQ(Runtime({dir.path(), 1, &compiler}).prepare(spec), want);
  EXPECT_EQ(Runtime({dir.path(), 1, nullptr}).prepare(spec), want);
  EXPECT_EQ(compiler.compiles, 0);
  EXPECT_TRUE(dir.list().empty());
}

//===----------------------------------------------------------------------===//
// The per-key lock
//===----------------------------------------------------------------------===//

TEST(CacheLock, ConcurrentMissesCompileOnce) {
  TempDir dir;
  AttentionSpec spec = makeSpec(4, 2, 32);
  FakeCompiler first, second;
  first.delay = std::chrono::milliseconds(300);
  std::thread firstThread([&] {
    EXPECT_EQ(Runtime({dir.path(), 1, &first}).prepare(spec), "");
  });
  // `first` holds the key's lock while it compiles.
  while (!first.started)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Runtime rt({dir.path(), 1, &second});
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(rt.prepare(spec), "");
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  firstThread.join();
  std::printf("the second runtime waited %.0f ms on the lock, then hit the "
              "disk; compiles: %d\n",
              waited * 1e3, first.compiles + second.compiles);
  EXPECT_EQ(first.compiles, 1);
  EXPECT_EQ(second.compiles, 0);
  EXPECT_EQ(rt.stats().diskHits, 1);
}

// A lock file may be deleted by its holder (eviction, a failed compile).
// Whoever was blocked on it must not think it holds the key's lock.
TEST(CacheLock, ADeletedLockFileIsNotTrusted) {
  TempDir dir;
  DiskCache cache(dir.path(), detail::kDefaultCacheMaxBytes);
  ASSERT_EQ(cache.open(), "");
  const std::string key = detail::sha256Hex("key");
  KeyLock first;
  ASSERT_EQ(cache.lock(key, first), "");

  KeyLock second;
  std::atomic<bool> secondHolds{false};
  std::thread waiter([&] {
    EXPECT_EQ(cache.lock(key, second), "");
    secondHolds = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(secondHolds);
  first.removeFile();
  first = KeyLock();
  waiter.join();
  EXPECT_TRUE(second.held());
  EXPECT_TRUE(exists(lockFile(dir, key)));

  // `second` holds the current lock file: a third waits for it.
  KeyLock third;
  std::atomic<bool> thirdHolds{false};
  std::thread other([&] {
    EXPECT_EQ(cache.lock(key, third), "");
    thirdHolds = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(thirdHolds);
  second = KeyLock();
  other.join();
  EXPECT_TRUE(thirdHolds);
}

TEST(CacheLock, FailedCompileLeavesNoLockFile) {
  TempDir dir;
  FakeCompiler compiler;
  compiler.failWith = "boom";
  EXPECT_EQ(Runtime({dir.path(), 1, &compiler}).prepare(makeSpec(4, 2, 32)),
            "compile: boom");
  EXPECT_TRUE(dir.list().empty());
}

//===----------------------------------------------------------------------===//
// Size cap and LRU eviction
//===----------------------------------------------------------------------===//

/// Five specs with entries of equal size (the info slot is fixed).
std::vector<AttentionSpec> fiveSpecs() {
  std::vector<AttentionSpec> specs;
  for (int64_t heads = 1; heads <= 5; ++heads)
    specs.push_back(makeSpec(heads, 1, 32));
  return specs;
}

/// Which of `specs` have an entry in `dir`, as letters ("ACD").
std::string present(const TempDir &dir, const std::vector<AttentionSpec> &s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i)
    if (exists(entryFile(dir, cacheKeyFor(s[i]))))
      out += char('A' + i);
  return out;
}

/// Every lock file belongs to an entry.
void expectNoOrphanLocks(const TempDir &dir) {
  for (const std::string &name : dir.list())
    EXPECT_TRUE(!name.ends_with(".lock") ||
                exists(dir / (name.substr(0, 64) + ".kernel")))
        << name;
}

uint64_t fileSize(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

TEST(CacheEviction, LeastRecentlyUsedGoesFirst) {
  TempDir dir;
  FakeCompiler compiler;
  const std::vector<AttentionSpec> s = fiveSpecs();
  {
    Runtime rt({dir.path(), 1, &compiler});
    for (int i = 0; i < 3; ++i)
      ASSERT_EQ(rt.prepare(s[i]), "");
  }
  const uint64_t entryBytes = fileSize(entryFile(dir, cacheKeyFor(s[0])));
  ASSERT_GT(entryBytes, 0u);
  setAge(entryFile(dir, cacheKeyFor(s[0])), 300);
  setAge(entryFile(dir, cacheKeyFor(s[1])), 200);
  setAge(entryFile(dir, cacheKeyFor(s[2])), 100);

  // Room for three entries.
  Runtime rt({dir.path(), 1, &compiler, 3 * entryBytes + entryBytes / 2});
  ASSERT_EQ(rt.prepare(s[0]), ""); // a disk hit: A is now the newest
  EXPECT_EQ(rt.stats().diskHits, 1);
  ASSERT_EQ(rt.prepare(s[3]), ""); // D in, the oldest (B) out
  EXPECT_EQ(present(dir, s), "ACD");
  ASSERT_EQ(rt.prepare(s[4]), ""); // E in, C out
  EXPECT_EQ(present(dir, s), "ADE");
  expectNoOrphanLocks(dir);
  std::printf("cap %llu bytes (3 entries of %llu): after a hit on A, writing "
              "D evicted B and writing E evicted C; left: %s\n",
              (unsigned long long)rt.cacheMaxBytes(),
              (unsigned long long)entryBytes, present(dir, s).c_str());
}

TEST(CacheEviction, TheNewEntryStaysEvenAboveTheCap) {
  TempDir dir;
  FakeCompiler compiler;
  const std::vector<AttentionSpec> s = fiveSpecs();
  Runtime rt({dir.path(), 1, &compiler, /*cacheMaxBytes=*/1});
  ASSERT_EQ(rt.prepare(s[0]), "");
  EXPECT_EQ(present(dir, s), "A");
  ASSERT_EQ(rt.prepare(s[1]), "");
  EXPECT_EQ(present(dir, s), "B");
  expectNoOrphanLocks(dir);
}

TEST(CacheEviction, EntriesLockedByOthersAreSkipped) {
  TempDir dir;
  FakeCompiler compiler;
  const std::vector<AttentionSpec> s = fiveSpecs();
  {
    Runtime rt({dir.path(), 1, &compiler});
    ASSERT_EQ(rt.prepare(s[0]), "");
    ASSERT_EQ(rt.prepare(s[1]), "");
  }
  const uint64_t entryBytes = fileSize(entryFile(dir, cacheKeyFor(s[0])));
  setAge(entryFile(dir, cacheKeyFor(s[0])), 200);
  setAge(entryFile(dir, cacheKeyFor(s[1])), 100);
  // Another process is rebuilding A.
  DiskCache other(dir.path(), detail::kDefaultCacheMaxBytes);
  KeyLock busy;
  ASSERT_EQ(other.lock(cacheKeyFor(s[0]), busy), "");
  Runtime rt({dir.path(), 1, &compiler, 2 * entryBytes + entryBytes / 2});
  ASSERT_EQ(rt.prepare(s[2]), "");
  EXPECT_EQ(present(dir, s), "AC");
}

// Eviction only unlinks: a process that already loaded the kernel keeps it.
TEST(CacheEviction, LoadedKernelsOutliveTheirEntries) {
  TempDir dir;
  FakeCompiler compiler;
  const std::vector<AttentionSpec> s = fiveSpecs();
  Problem p = Problem::dense(s[0], 2, 9, 9);
  Runtime user({dir.path(), 2, &compiler});
  AttentionArgs args = p.args();
  ASSERT_EQ(user.run(p.spec, args), "");
  ASSERT_EQ(Runtime({dir.path(), 1, &compiler, 1}).prepare(s[1]), "");
  EXPECT_EQ(present(dir, s), "B");
  p.o.assign(p.o.size(), NAN);
  ASSERT_EQ(user.run(p.spec, args), "");
  EXPECT_EQ(user.stats().memoryHits, 1);
  EXPECT_LE(p.maxError(), 1e-5);
}

TEST(CacheCap, OptionThenEnvironmentThenOneGiB) {
  TempDir dir;
  {
    EnvVar cap("TILT_CACHE_MAX_BYTES", nullptr);
    EXPECT_EQ(Runtime({dir.path(), 1, nullptr}).cacheMaxBytes(), uint64_t(1)
                                                                     << 30);
  }
  const std::pair<const char *, uint64_t> cases[] = {
      {"1000", 1000},
      {"64K", uint64_t(64) << 10},
      {"512M", uint64_t(512) << 20},
      {"2g", uint64_t(2) << 30}};
  for (auto [text, bytes] : cases) {
    EnvVar cap("TILT_CACHE_MAX_BYTES", text);
    EXPECT_EQ(Runtime({dir.path(), 1, nullptr}).cacheMaxBytes(), bytes) << text;
    EXPECT_EQ(Runtime({dir.path(), 1, nullptr, 12345}).cacheMaxBytes(), 12345u)
        << "the option wins";
  }
}

TEST(CacheCap, MalformedEnvironmentIsReported) {
  TempDir dir;
  for (const char *text : {"abc", "0", "12X", "-1", "1.5G", "99999999999G"}) {
    EnvVar cap("TILT_CACHE_MAX_BYTES", text);
    FakeCompiler compiler;
    Runtime rt({dir.path(), 1, &compiler});
    EXPECT_EQ(rt.prepare(makeSpec(4, 2, 32)),
              fmt::format("TILT_CACHE_MAX_BYTES: expected a positive size in "
                          "bytes, optionally with a K, M or G suffix (e.g. "
                          "536870912 or 512M), got '{}'",
                          text));
    EXPECT_EQ(compiler.compiles, 0);
  }
}

//===----------------------------------------------------------------------===//
// What killed processes leave behind
//===----------------------------------------------------------------------===//

TEST(CacheLeftovers, StaleTempFilesAndOrphanLocksGoWhenTheCacheOpens) {
  TempDir dir;
  AttentionSpec spec = makeSpec(4, 2, 32);
  FakeCompiler compiler;
  ASSERT_EQ(Runtime({dir.path(), 1, &compiler}).prepare(spec), "");
  const std::string key = cacheKeyFor(spec);
  const int stale = detail::kStaleTempSeconds + 5;
  for (const char *name : {".tmp-old111", ".load-12-0-old222"}) {
    writeFile(dir / name, "half an entry");
    setAge(dir / name, stale);
  }
  writeFile(dir / ".tmp-new333", "being written right now");
  // Lock files without an entry: a compile was killed. One is still held.
  const std::string orphan = detail::sha256Hex("killed compile");
  const std::string held = detail::sha256Hex("running compile");
  writeFile(lockFile(dir, orphan), "");
  DiskCache other(dir.path(), detail::kDefaultCacheMaxBytes);
  KeyLock busy;
  ASSERT_EQ(other.lock(held, busy), "");

  Runtime rt({dir.path(), 1, &compiler});
  ASSERT_EQ(rt.prepare(spec), "");
  EXPECT_EQ(rt.stats().diskHits, 1);
  std::vector<std::string> want = {".tmp-new333", held + ".lock",
                                   key + ".kernel", key + ".lock"};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(dir.list(), want);
}

} // namespace
