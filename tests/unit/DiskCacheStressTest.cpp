//===- DiskCacheStressTest.cpp - The disk cache under fire ----------------===//
//
// A: 16 processes miss the same 8 keys at once, 20 times over.
// B: processes writing entries are killed with SIGKILL at random moments.
// C: entries are truncated and bit-flipped at random.
// No process may ever compute with a bad kernel; B and C also check that
// every bad entry is detected and rebuilt, and A that each key is compiled
// once across all processes.
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestSupport.h"

#include <atomic>
#include <algorithm>
#include <csignal>
#include <fcntl.h>
#include <numeric>
#include <random>
#include <set>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using namespace tilt;
using namespace tilt::test;
using detail::DiskCache;

/// The eight keys the stress tests share.
std::vector<AttentionSpec> eightSpecs() {
  return {makeSpec(1, 1, 16),
          makeSpec(2, 1, 16),
          makeSpec(2, 2, 16, BiasKind::Alibi, true),
          makeSpec(4, 2, 16, BiasKind::Alibi, true),
          makeSpec(4, 4, 32),
          makeSpec(4, 1, 32, BiasKind::Alibi),
          makeSpec(8, 2, 16, BiasKind::Alibi, true),
          makeSpec(3, 3, 16, BiasKind::None, true)};
}

/// Runs `spec` on a small random problem; "" if it matches the reference.
/// Sq = 20 keeps every spec here out of the decode family's rule (Sq <= 16),
/// so run() uses the same default-config kernel that prepare() writes.
std::string runAndCheck(Runtime &rt, const AttentionSpec &spec, unsigned seed) {
  Problem p = Problem::dense(spec, 1, 20, 20, seed);
  AttentionArgs args = p.args();
  if (std::string err = rt.run(p.spec, args); !err.empty())
    return err;
  const double error = p.maxError();
  return error <= 1e-5 ? "" : fmt::format("max error {} vs reference", error);
}

/// A T in memory shared with forked children.
template <typename T> T *sharedObject() {
  void *p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : new (p) T();
}

template <typename T> void freeShared(T *p) {
  p->~T();
  munmap(p, sizeof(T));
}

bool startsWith(const std::string &s, std::string_view prefix) {
  return s.rfind(prefix, 0) == 0;
}

//===----------------------------------------------------------------------===//
// A: concurrent processes
//===----------------------------------------------------------------------===//

struct Totals {
  std::atomic<int64_t> runs{0}, errors{0}, compiles{0}, diskHits{0},
      memoryHits{0};
};

constexpr int kProcesses = 16, kRounds = 20;

[[noreturn]] void concurrentChild(const std::string &dir, int startFd,
                                  int index, Totals *totals) {
  char go;
  // Blocks until the parent closes the pipe: all children start together.
  (void)!read(startFd, &go, 1);
  const std::vector<AttentionSpec> specs = eightSpecs();
  FakeCompiler compiler;
  // A compile that takes a while, so that misses of one key overlap.
  compiler.delay = std::chrono::milliseconds(20);
  std::mt19937 rng{unsigned(index)};
  int failures = 0;
  for (int round = 0; round < kRounds; ++round) {
    // A new runtime each round: every round goes to the disk cache.
    Runtime rt({dir, 1, &compiler});
    std::vector<int> order(specs.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (int k : order) {
      std::string err = runAndCheck(rt, specs[k], unsigned(round * 8 + k + 1));
      ++totals->runs;
      if (!err.empty()) {
        ++totals->errors;
        ++failures;
        std::fprintf(stderr, "process %d, round %d, key %d: %s\n", index, round,
                     k, err.c_str());
      }
    }
    totals->compiles += rt.stats().compiles;
    totals->diskHits += rt.stats().diskHits;
    totals->memoryHits += rt.stats().memoryHits;
  }
  _exit(failures ? 1 : 0);
}

TEST(DiskCacheStress, A_ConcurrentProcessesCompileEachKeyOnce) {
  TempDir dir;
  Totals *totals = sharedObject<Totals>();
  ASSERT_NE(totals, nullptr);
  int start[2];
  ASSERT_EQ(pipe(start), 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<pid_t> children;
  for (int i = 0; i < kProcesses; ++i) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(start[1]);
      concurrentChild(dir.path(), start[0], i, totals);
    }
    children.push_back(pid);
  }
  close(start[0]);
  close(start[1]);
  int failedProcesses = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    failedProcesses += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("stress A: %d processes x %d rounds x %zu keys from an empty "
              "cache in %.2f s: %lld runs, %lld errors (incl. mismatches), "
              "%d failed processes, %lld compiles across processes, %lld disk "
              "hits, %lld memory hits\n",
              kProcesses, kRounds, eightSpecs().size(), seconds,
              (long long)totals->runs.load(), (long long)totals->errors.load(),
              failedProcesses, (long long)totals->compiles.load(),
              (long long)totals->diskHits.load(),
              (long long)totals->memoryHits.load());
  EXPECT_EQ(totals->runs, kProcesses * kRounds * 8);
  EXPECT_EQ(totals->errors, 0);
  EXPECT_EQ(failedProcesses, 0);
  EXPECT_EQ(totals->compiles, 8);
  EXPECT_EQ(dir.entries().size(), 8u);
  freeShared(totals);
}

//===----------------------------------------------------------------------===//
// B: writers killed mid-write
//===----------------------------------------------------------------------===//

/// How many pieces the current writer child has started writing: the parent
/// watches it to kill the child in the middle of its writes, whatever the
/// speed of the build or the machine.
std::atomic<int64_t> *writesStarted = nullptr;

/// Writes in small pieces with pauses, so that a write lasts long enough to
/// be killed in the middle.
ssize_t slowWrite(int fd, const void *data, size_t size) {
  writesStarted->fetch_add(1);
  std::this_thread::sleep_for(std::chrono::microseconds(100));
  return ::write(fd, data, std::min<size_t>(size, 8192));
}

constexpr size_t kBigKernelBytes = 192 << 10;
constexpr int kKills = 110;

/// Cycles through the eight keys with a cap of three entries, so that
/// nearly every lookup compiles, writes and evicts; killed by the parent.
[[noreturn]] void writerChild(const std::string &dir, uint64_t cap,
                              unsigned first) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  detail::cacheFileWrite = slowWrite;
  const std::vector<AttentionSpec> specs = eightSpecs();
  FakeCompiler compiler;
  compiler.padTo = kBigKernelBytes;
  Runtime rt({dir, 1, &compiler, cap});
  for (unsigned i = first; i < first + 10000; ++i) {
    rt.clearMemoryCache();
    (void)rt.prepare(specs[i % specs.size()]);
  }
  _exit(0);
}

TEST(DiskCacheStress, B_WritersKilledMidWriteNeverLeaveABadKernel) {
  TempDir dir;
  const std::vector<AttentionSpec> specs = eightSpecs();
  const uint64_t cap = 3 * (kBigKernelBytes + detail::kEntryHeaderSize) + 100;
  DiskCache inspector(dir.path(), cap);
  std::mt19937 rng(2024);
  std::set<std::string> tempsSeen;
  int killsInEntryWrite = 0, killsInStaging = 0, entriesChecked = 0,
      verified = 0, detected = 0, badLoads = 0;
  int64_t hits = 0, rebuilt = 0;
  const auto t0 = std::chrono::steady_clock::now();
  writesStarted = sharedObject<std::atomic<int64_t>>();
  ASSERT_NE(writesStarted, nullptr);
  int unobserved = 0;
  for (int kill = 0; kill < kKills; ++kill) {
    writesStarted->store(0);
    // A kernel is ~25 pieces: the kill lands at a random piece of the
    // first few entries the child writes or stages.
    const int64_t target = std::uniform_int_distribution<int64_t>(1, 80)(rng);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0)
      writerChild(dir.path(), cap, unsigned(rng()));
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (writesStarted->load() < target &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    unobserved += writesStarted->load() < target;
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);

    // What this kill left: a partial entry, or a staged copy being loaded.
    for (const std::string &name : dir.list())
      if ((startsWith(name, ".tmp-") || startsWith(name, ".load-")) &&
          tempsSeen.insert(name).second)
        ++(startsWith(name, ".tmp-") ? killsInEntryWrite : killsInStaging);

    // Every entry on disk now: verify it directly, then through a runtime,
    // which must either load it and compute right or reject and rebuild it.
    std::vector<AttentionSpec> present;
    int bad = 0;
    for (const AttentionSpec &spec : specs) {
      std::string payload, why;
      switch (inspector.read(cacheKeyFor(spec), payload, why)) {
      case DiskCache::Lookup::Missing:
        continue;
      case DiskCache::Lookup::Hit:
        ++verified;
        break;
      case DiskCache::Lookup::Bad:
        ++detected;
        ++bad;
        break;
      }
      present.push_back(spec);
    }
    entriesChecked += int(present.size());
    FakeCompiler compiler;
    compiler.padTo = kBigKernelBytes;
    Runtime checker({dir.path(), 1, &compiler});
    for (const AttentionSpec &spec : present)
      if (std::string err = runAndCheck(checker, spec, unsigned(kill + 1));
          !err.empty()) {
        ++badLoads;
        ADD_FAILURE() << "after kill " << kill << ": " << err;
      }
    EXPECT_EQ(checker.stats().diskRejected, bad);
    EXPECT_EQ(checker.stats().compiles, bad);
    hits += checker.stats().diskHits;
    rebuilt += checker.stats().compiles;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();

  // What the kills left, and what the next runtime to open the cache does
  // with it once it is old enough to be no live process's.
  int tempsLeft = 0;
  for (const std::string &name : dir.list())
    if (startsWith(name, ".tmp-") || startsWith(name, ".load-")) {
      ++tempsLeft;
      struct timespec old[2] = {
          {time(nullptr) - detail::kStaleTempSeconds - 1, 0},
          {time(nullptr) - detail::kStaleTempSeconds - 1, 0}};
      utimensat(AT_FDCWD, (dir / name).c_str(), old, 0);
    }
  FakeCompiler compiler;
  compiler.padTo = kBigKernelBytes;
  ASSERT_EQ(Runtime({dir.path(), 1, &compiler}).prepare(specs[0]), "");
  int tempsAfter = 0, orphanLocks = 0;
  for (const std::string &name : dir.list()) {
    tempsAfter += startsWith(name, ".tmp-") || startsWith(name, ".load-");
    struct stat st;
    orphanLocks +=
        name.ends_with(".lock") &&
        stat((dir / (name.substr(0, 64) + ".kernel")).c_str(), &st) != 0;
  }

  std::printf("stress B: %d kills in %.2f s, %d in the middle of an entry "
              "write, %d while staging a kernel for dlopen; %d entries found "
              "after the kills: %d verified, %d detected bad; the checking "
              "runtimes' disk hits %lld, rebuilds %lld, bad loads %d; temp "
              "files left by the kills %d, left after the next runtime opened "
              "the cache %d; lock files without an entry %d\n",
              kKills, seconds, killsInEntryWrite, killsInStaging,
              entriesChecked, verified, detected, (long long)hits,
              (long long)rebuilt, badLoads, tempsLeft, tempsAfter, orphanLocks);
  freeShared(writesStarted);
  writesStarted = nullptr;
  EXPECT_EQ(unobserved, 0) << "writers that never reached their kill point";
  EXPECT_EQ(badLoads, 0);
  EXPECT_EQ(hits + rebuilt, entriesChecked);
  EXPECT_GT(killsInEntryWrite, 0) << "no kill landed mid-write";
  EXPECT_EQ(tempsAfter, 0);
  EXPECT_EQ(orphanLocks, 0);
}

//===----------------------------------------------------------------------===//
// C: random truncations and bit flips
//===----------------------------------------------------------------------===//

TEST(DiskCacheStress, C_RandomTruncationsAndBitFlipsAreAllDetected) {
  TempDir dir;
  FakeCompiler compiler;
  const AttentionSpec spec = makeSpec(4, 2, 16, BiasKind::Alibi, true);
  Runtime rt({dir.path(), 1, &compiler});
  ASSERT_EQ(rt.prepare(spec), "");
  const std::string key = cacheKeyFor(spec);
  const std::string path = dir / (key + ".kernel");
  const std::string good = readFile(path);
  ASSERT_GT(good.size(), detail::kEntryHeaderSize);
  rt.resetStats();

  DiskCache inspector(dir.path(), detail::kDefaultCacheMaxBytes);
  std::mt19937_64 rng(7);
  constexpr int kMutations = 1200;
  int truncations = 0, flips = 0, headerFlips = 0, detected = 0, wrong = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kMutations; ++i) {
    std::string bad = good;
    if (i % 2) {
      bad.resize(rng() % good.size());
      ++truncations;
    } else {
      // One flip in four aims at the header, a sliver of the entry.
      const size_t bytes = i % 8 == 0 ? detail::kEntryHeaderSize : good.size();
      const size_t bit = rng() % (bytes * 8);
      bad[bit / 8] = char(bad[bit / 8] ^ (1 << (bit % 8)));
      ++flips;
      headerFlips += bit / 8 < detail::kEntryHeaderSize;
    }
    writeFile(path, bad);
    std::string payload, why;
    detected += inspector.read(key, payload, why) == DiskCache::Lookup::Bad;
    // The runtime must reject it too, rebuild it and compute right.
    rt.clearMemoryCache();
    if (std::string err = runAndCheck(rt, spec, unsigned(i)); !err.empty()) {
      ++wrong;
      ADD_FAILURE() << "mutation " << i << ": " << err;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("stress C: %d mutations in %.2f s (%d truncations, %d bit flips "
              "of which %d in the header): %d detected by verification, %lld "
              "rejected and rebuilt by the runtime, %lld loaded from disk, %d "
              "wrong outputs\n",
              kMutations, seconds, truncations, flips, headerFlips, detected,
              (long long)rt.stats().diskRejected,
              (long long)rt.stats().diskHits, wrong);
  EXPECT_EQ(detected, kMutations);
  EXPECT_EQ(rt.stats().diskRejected, kMutations);
  EXPECT_EQ(rt.stats().compiles, kMutations);
  EXPECT_EQ(rt.stats().diskHits, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(readFile(path), good) << "the last rebuild is a good entry";
}

} // namespace
