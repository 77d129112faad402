//===- RuntimeTestSupport.h - Fixtures for the runtime tests ----*- C++ -*-===//
//
// A FakeCompiler that "compiles" by stamping kernel info into a copy of the
// naive test kernel (testkernel/NaiveKernel.cpp), temporary cache
// directories, and random problems checked against the float64 reference.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_RUNTIMETESTSUPPORT_H
#define TILT_TESTS_RUNTIMETESTSUPPORT_H

#include "DiskCache.h"
#include "testkernel/NaiveKernel.h"
#include "tilt/KernelABI.h"
#include "tilt/Reference.h"
#include "tilt/Runtime.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace tilt::test {

inline AttentionSpec makeSpec(int64_t heads, int64_t kvHeads, int64_t headDim,
                              BiasKind bias = BiasKind::None,
                              bool causal = false) {
  AttentionSpec s;
  s.heads = heads;
  s.kvHeads = kvHeads;
  s.headDim = headDim;
  s.bias = bias;
  s.causal = causal;
  return s;
}

inline TileConfig naiveConfig(int64_t blockM) {
  TileConfig c;
  c.variant = "cpu_naive";
  c.blockM = blockM;
  c.blockN = 32;
  return c;
}

inline std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

/// Sets (or, with nullptr, unsets) an environment variable for a scope.
class EnvVar {
public:
  EnvVar(const char *name, const char *value) : name(name) {
    if (const char *old = std::getenv(name))
      saved = old;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~EnvVar() { saved ? setenv(name, saved->c_str(), 1) : unsetenv(name); }

private:
  const char *name;
  std::optional<std::string> saved;
};

/// The kernel info the compiler would embed.
inline std::string kernelInfo(const std::string &canonicalSpec, int64_t blockM,
                              int64_t blockN, int abi = kKernelAbiVersion,
                              std::string_view isa = "x86-64-v3") {
  return fmt::format(
      "abi={};variant=cpu_naive;block_m={};block_n={};isa={};spec={}", abi,
      blockM, blockN, isa, canonicalSpec);
}

/// The naive kernel's bytes with `info` written into its info slot.
inline std::string stampedKernel(const std::string &info) {
  std::ifstream in(TILT_TEST_KERNEL_PATH, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  const std::string marker = TILT_TEST_INFO_SLOT_MARKER;
  size_t at = bytes.find(marker);
  if (at == std::string::npos ||
      bytes.find(marker, at + 1) != std::string::npos ||
      info.size() >= kInfoSlotSize || at + kInfoSlotSize > bytes.size()) {
    ADD_FAILURE() << "cannot stamp " << TILT_TEST_KERNEL_PATH;
    return {};
  }
  std::fill_n(bytes.begin() + at, kInfoSlotSize, '\0');
  std::copy(info.begin(), info.end(), bytes.begin() + at);
  return bytes;
}

class FakeCompiler : public KernelCompiler {
public:
  std::string fingerprint(Target target) const override {
    return "fake-compiler-1";
  }
  TileConfig defaultConfig(const AttentionSpec &, Target) const override {
    TileConfig c;
    c.variant = "cpu_naive";
    c.blockM = 16;
    c.blockN = 32;
    return c;
  }
  std::string compile(const AttentionSpec &spec, const TileConfig &config,
                      Target target, std::string &artifact) override {
    ++compiles;
    started = true;
    std::this_thread::sleep_for(delay);
    if (!failWith.empty())
      return failWith;
    if (config.isDefault())
      return "the runtime must pass a concrete config";
    artifact = stampedKernel(
        kernelInfo(stampSpec.empty() ? spec.canonical() : stampSpec,
                   config.blockM, config.blockN, abi, isa));
    // The loader maps segments by their offsets and ignores trailing bytes.
    if (artifact.size() < padTo)
      artifact.resize(padTo, '\0');
    return {};
  }

  std::atomic<int> compiles{0};
  std::atomic<bool> started{false}; ///< compile() was entered
  std::string failWith;             ///< non-empty: compile() fails with this
  std::string stampSpec;            ///< non-empty: claim this spec instead
  int abi = kKernelAbiVersion;
  std::string isa = "x86-64-v3";    ///< the ISA class the kernel claims
  std::chrono::milliseconds delay{0}; ///< how long a compile takes
  size_t padTo = 0;                   ///< artifacts grow to this many bytes
};

#ifdef TILT_TEST_COMMIT
/// The disk cache key of `spec` (TILT_TEST_COMMIT is defined only for the
/// disk cache tests, so that a commit recompiles no other test).
inline std::string cacheKeyFor(const AttentionSpec &spec,
                               std::string_view fingerprint = "fake-compiler-1",
                               std::string_view config = "default") {
  return detail::cacheKey({spec.canonical(), config, "cpu", fingerprint,
                           TILT_TEST_VERSION, TILT_TEST_COMMIT,
                           kKernelAbiVersion});
}
#endif

/// A fresh directory, removed with everything in it at scope exit.
class TempDir {
public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "tilt-rt-test-XXXXXX")
            .string();
    if (!mkdtemp(pattern.data()))
      ADD_FAILURE() << "mkdtemp failed";
    dir = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  const std::string &path() const { return dir; }
  std::string operator/(const std::string &name) const {
    return dir + "/" + name;
  }
  /// Names of the entries of `sub` (default: the directory itself).
  std::vector<std::string> list(const std::string &sub = "") const {
    std::vector<std::string> names;
    std::error_code ec;
    for (auto &e :
         std::filesystem::directory_iterator(sub.empty() ? dir : sub, ec))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  /// The disk cache entries (*.kernel, not their lock files) in list(sub).
  std::vector<std::string> entries(const std::string &sub = "") const {
    std::vector<std::string> names = list(sub);
    std::erase_if(names,
                  [](const std::string &n) { return !n.ends_with(".kernel"); });
    return names;
  }

private:
  std::string dir;
};

/// One attention problem with random unit-normal f32 inputs.
struct Problem {
  AttentionSpec spec;
  int64_t batch = 1, seqQ = 0, seqK = 0; ///< varlen: the totals
  std::vector<int32_t> cuQ, cuK;         ///< varlen only
  std::vector<float> q, k, v, o, lse, slopes;
  std::vector<uint8_t> kpm;
  bool slopesPerBatch = false;

  /// Dense problem [B, H, Sq, D] x [B, Hkv, Sk, D].
  static Problem dense(const AttentionSpec &spec, int64_t batch, int64_t seqQ,
                       int64_t seqK, unsigned seed = 1) {
    Problem p;
    p.spec = spec;
    p.batch = batch;
    p.seqQ = seqQ;
    p.seqK = seqK;
    p.fill(seed);
    return p;
  }

  /// Varlen problem from per-sequence lengths.
  static Problem varlen(const AttentionSpec &spec,
                        const std::vector<int32_t> &lensQ,
                        const std::vector<int32_t> &lensK, unsigned seed = 1) {
    Problem p;
    p.spec = spec;
    p.batch = int64_t(lensQ.size());
    p.cuQ = {0};
    p.cuK = {0};
    for (size_t i = 0; i < lensQ.size(); ++i) {
      p.cuQ.push_back(p.cuQ.back() + lensQ[i]);
      p.cuK.push_back(p.cuK.back() + lensK[i]);
    }
    p.seqQ = p.cuQ.back();
    p.seqK = p.cuK.back();
    p.fill(seed);
    return p;
  }

  void fill(unsigned seed) {
    const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
    const int64_t B = spec.varlen ? 1 : batch;
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    auto random = [&](int64_t n) {
      std::vector<float> x(n);
      for (float &e : x)
        e = normal(rng);
      return x;
    };
    q = random(B * H * seqQ * D);
    k = random(B * Hkv * seqK * D);
    v = random(B * Hkv * seqK * D);
    o.assign(q.size(), NAN);
    lse.assign(B * H * seqQ, NAN);
    if (spec.keyPaddingMask) {
      kpm.resize(batch * seqK);
      for (uint8_t &m : kpm)
        m = rng() % 4 != 0;
    }
    if (spec.hasAlibi() && spec.slopes == SlopeSource::Custom) {
      std::uniform_real_distribution<float> u(0.01f, 1.0f);
      slopes.resize(slopesPerBatch ? batch * H : H);
      for (float &m : slopes)
        m = u(rng);
    }
  }

  void setSlopesPerBatch() {
    slopesPerBatch = true;
    fill(7);
  }

  AttentionArgs args(bool withLse = true) {
    const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
    AttentionArgs a;
    if (spec.varlen) {
      a.q = TensorRef(q.data(), {seqQ, H, D});
      a.k = TensorRef(k.data(), {seqK, Hkv, D});
      a.v = TensorRef(v.data(), {seqK, Hkv, D});
      a.o = TensorRef(o.data(), {seqQ, H, D});
      if (withLse)
        a.lse = TensorRef(lse.data(), {H, seqQ});
      a.cuSeqlensQ = TensorRef(cuQ.data(), {int64_t(cuQ.size())});
      a.cuSeqlensK = TensorRef(cuK.data(), {int64_t(cuK.size())});
    } else {
      a.q = TensorRef(q.data(), {batch, H, seqQ, D});
      a.k = TensorRef(k.data(), {batch, Hkv, seqK, D});
      a.v = TensorRef(v.data(), {batch, Hkv, seqK, D});
      a.o = TensorRef(o.data(), {batch, H, seqQ, D});
      if (withLse)
        a.lse = TensorRef(lse.data(), {batch, H, seqQ});
    }
    if (!slopes.empty())
      a.slopes = slopesPerBatch ? TensorRef(slopes.data(), {batch, H})
                                : TensorRef(slopes.data(), {H});
    if (!kpm.empty())
      a.keyPaddingMask = TensorRef(kpm.data(), {batch, seqK});
    return a;
  }

  reference::Outputs expected() const {
    reference::Inputs in;
    in.q = q.data();
    in.k = k.data();
    in.v = v.data();
    in.slopes = slopes.empty() ? nullptr : slopes.data();
    in.slopesPerBatch = slopesPerBatch;
    in.keyPaddingMask = kpm.empty() ? nullptr : kpm.data();
    in.cuSeqlensQ = cuQ.empty() ? nullptr : cuQ.data();
    in.cuSeqlensK = cuK.empty() ? nullptr : cuK.data();
    return reference::attention(spec, {batch, seqQ, seqK}, in);
  }

  /// Max abs difference of o and lse from the reference; +inf when an
  /// infinity or NaN does not match.
  double maxError(bool checkLse = true) const {
    reference::Outputs ref = expected();
    double worst = 0;
    auto compare = [&](const std::vector<float> &got,
                       const std::vector<double> &want) {
      for (size_t i = 0; i < got.size(); ++i) {
        if (std::isinf(want[i]) && got[i] == want[i])
          continue;
        double err = std::fabs(double(got[i]) - want[i]);
        worst = std::isnan(err) ? INFINITY : std::max(worst, err);
      }
    };
    compare(o, ref.o);
    if (checkLse)
      compare(lse, ref.lse);
    return worst;
  }
};

} // namespace tilt::test

#endif // TILT_TESTS_RUNTIMETESTSUPPORT_H
