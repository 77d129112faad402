//===- JitRuntimeTest.h - A test suite's JIT runtime ------------*- C++ -*-===//
//
// One Compiler and one Runtime per test suite, with a disk cache of the
// suite's own (removed at the end), for suites that JIT-compile kernels.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_JITRUNTIMETEST_H
#define TILT_TESTS_COMMON_JITRUNTIMETEST_H

#include "tilt/Compiler/Compiler.h"
#include "tilt/Half.h"
#include "tilt/Runtime.h"
#include "tilt/TilePolicy.h"

#include "Strided.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace tilt::test {

template <typename Param>
class JitRuntimeTest : public ::testing::TestWithParam<Param> {
protected:
  static void SetUpTestSuite() {
    cacheDir = (std::filesystem::temp_directory_path() /
                ("tilt-jit-test-" + std::to_string(::getpid())))
                   .string();
    compiler = new Compiler();
    RuntimeOptions options;
    options.cacheDir = cacheDir;
    options.compiler = compiler;
    runtime = new Runtime(options);
  }
  static void TearDownTestSuite() {
    splitting.clear();
    scheduled.clear();
    delete runtime;
    delete compiler;
    std::filesystem::remove_all(cacheDir);
  }
  /// A runtime sharing the suite's compiler and cache whose decode-family
  /// calls cut each (batch, kv head)'s keys into `splits` parts
  /// (RuntimeOptions::decodeSplits), merged exactly.
  static Runtime *splittingRuntime(int splits) {
    return sharedRuntime(splitting[splits],
                         [&](RuntimeOptions &o) { o.decodeSplits = splits; });
  }
  /// A runtime sharing the suite's compiler and cache whose CPU backward
  /// always takes `schedule` (RuntimeOptions::backwardSchedule).
  static Runtime *scheduledRuntime(BackwardSchedule schedule) {
    return sharedRuntime(scheduled[schedule], [&](RuntimeOptions &o) {
      o.backwardSchedule = schedule;
    });
  }
  /// `slot`'s runtime, made on first use with the suite's compiler and
  /// cache and the options `edit` sets.
  template <typename Edit>
  static Runtime *sharedRuntime(std::unique_ptr<Runtime> &slot, Edit edit) {
    if (!slot) {
      RuntimeOptions options;
      options.cacheDir = cacheDir;
      options.compiler = compiler;
      edit(options);
      slot = std::make_unique<Runtime>(options);
    }
    return slot.get();
  }
  /// The split counts the decode cases run again with: uneven chunks, and
  /// more splits than most sequences have key blocks (empty parts).
  static constexpr int kSplitCounts[] = {3, 64};

  /// Whether a CPU call with `config` and query sequences of `seqQ` runs the
  /// decode family (the only one split-KV cuts): a decode variant named, or
  /// none and TilePolicy's rule.
  static bool runsDecodeFamily(const AttentionSpec &spec,
                               const TileConfig &config, int64_t seqQ) {
    return config.variant.starts_with("cpu_decode") ||
           (config.variant.empty() && useDecodeFamily(spec, seqQ));
  }
  /// One split-KV run of a call: its o (the spec's dtype) and lse.
  using SplitRun = std::pair<TypedBuffer, std::vector<float>>;
  /// The call `args` describes once per kSplitCounts entry through the
  /// splitting runtimes, o and lse shaped like args' (present); "" or the
  /// first error.
  static std::string runSplits(const AttentionSpec &spec,
                               const AttentionArgs &args,
                               const TileConfig &config,
                               std::vector<SplitRun> &out) {
    for (int splits : kSplitCounts) {
      SplitRun run{TypedBuffer(spec.dtype, size_t(args.o.numElements())),
                   std::vector<float>(size_t(args.lse.numElements()), 0.0f)};
      AttentionArgs split = args;
      split.o.data = run.first.data();
      split.lse.data = run.second.data();
      if (std::string err =
              splittingRuntime(splits)->run(spec, split, Target::CPU, config);
          !err.empty())
        return err;
      out.push_back(std::move(run));
    }
    return {};
  }
  /// Strided.h's rerunStridedWithSplit for the suite's runtime and, when
  /// `splitRuns` has any, the first split run.
  static std::string
  rerunStridedWithSplits(const AttentionSpec &spec, const AttentionArgs &args,
                         const TileConfig &config, const TypedBuffer &q,
                         const TypedBuffer &k, const TypedBuffer &v,
                         const TypedBuffer &o, const std::vector<float> &lse,
                         const std::vector<SplitRun> &splitRuns) {
    const bool split = !splitRuns.empty();
    return rerunStridedWithSplit(
        *runtime, split ? splittingRuntime(kSplitCounts[0]) : nullptr, spec,
        args, config, q, k, v, o, lse, split ? &splitRuns[0].first : nullptr,
        split ? &splitRuns[0].second : nullptr);
  }

  static inline std::map<int, std::unique_ptr<Runtime>> splitting;
  static inline std::map<BackwardSchedule, std::unique_ptr<Runtime>> scheduled;
  static inline std::string cacheDir;
  static inline Compiler *compiler = nullptr;
  static inline Runtime *runtime = nullptr;
};

} // namespace tilt::test

#endif // TILT_TESTS_COMMON_JITRUNTIMETEST_H
