//===- JitRuntimeTest.h - A test suite's JIT runtime ------------*- C++ -*-===//
//
// One Compiler and one Runtime per test suite, with a disk cache of the
// suite's own (removed at the end), for suites that JIT-compile kernels.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_JITRUNTIMETEST_H
#define TILT_TESTS_COMMON_JITRUNTIMETEST_H

#include "tilt/Compiler/Compiler.h"
#include "tilt/Runtime.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>

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
    delete runtime;
    delete compiler;
    std::filesystem::remove_all(cacheDir);
  }
  /// A runtime sharing the suite's compiler and cache whose decode-family
  /// calls cut each (batch, kv head)'s keys into `splits` parts
  /// (RuntimeOptions::decodeSplits), merged exactly.
  static Runtime *splittingRuntime(int splits) {
    std::unique_ptr<Runtime> &r = splitting[splits];
    if (!r) {
      RuntimeOptions options;
      options.cacheDir = cacheDir;
      options.compiler = compiler;
      options.decodeSplits = splits;
      r = std::make_unique<Runtime>(options);
    }
    return r.get();
  }
  /// The split counts the decode cases run again with: uneven chunks, and
  /// more splits than most sequences have key blocks (empty parts).
  static constexpr int kSplitCounts[] = {3, 64};

  static inline std::map<int, std::unique_ptr<Runtime>> splitting;
  static inline std::string cacheDir;
  static inline Compiler *compiler = nullptr;
  static inline Runtime *runtime = nullptr;
};

} // namespace tilt::test

#endif // TILT_TESTS_COMMON_JITRUNTIMETEST_H
