//===- tilt-bench.cpp - How fast is Tilt on this machine? -----------------===//
//
//   tilt-bench [spec flags] --batch B --seq S [--seq-k S] [--threads N]
//              [--repeats R] [--json] [--target cpu|cuda]
//              [--backward [--trainable-slopes]] [--page-size N]
//              [--splits N] [--layout bhsd|bshd]
//              [--bwd-schedule auto|two-pass|fused]
//
// Times one attention shape through the runtime (warm-up excluded, median of
// repeats) and puts the number next to what this machine can do: its FP32
// FMA and AMX peaks, measured here with the same thread count, and a naive
// unfused implementation (the [Sq, Sk] score matrix materialized) run in the
// same process. Also reports JIT latencies: a cold compile, a disk-cache hit
// and a memory-cache hit. With --target cuda the kernel runs on the GPU and
// is timed with events (TFLOP/s and the K/V read rate, kv_read_gbps); there
// is no peak or naive comparison; --page-size works there too
// (gpu_decode_sm80; not yet run on a GPU).
// The timed runs go through a runtime with the kernel bundle (--kernels-dir,
// by default tilt-run's: $TILT_KERNELS_DIR, the installed one, else this
// build's), so a spec given without a configuration runs what run() picks
// for a user: the bundle's tuned record for the shape, else the default;
// the `kernel` line (and the JSON's variant, block_m, block_n) names it.
// The JIT figures come from runtimes without the bundle, so that the cold
// compile compiles. tilt-bench-rt, built without the compiler, only loads
// kernels (the bundle) and reports no JIT figures (0 in the JSON).
// --backward also times the backward pass (CPU and CUDA: gpu_bwd_sm80):
// forward + backward and the
// backward alone, its FLOPs counted as 2.5x the forward's (FlashAttention's
// convention); --trainable-slopes makes the slopes a custom [H] tensor (the
// standard values) whose gradient the backward computes too.
// --page-size N reads K/V from a paged KV cache (ALIBI.md) of that page size
// through a shuffled block table, every sequence --seq-k keys long (the
// decode family up to --seq 16, on the CPU the prefill kernels past it);
// kv_read_gbps then counts the cache's K and V once.
// --splits N fixes the decode family's split-KV parts (RuntimeOptions::
// decodeSplits; 1: none); by default the runtime's rule picks them.
// --bwd-schedule fixes the CPU backward's schedule (RuntimeOptions::
// backwardSchedule); the JSON's bwd_schedule names the one that ran.
// --layout bshd hands q, k, v, o (and the gradients) over as
// [B, S, H, D] memory through their strides (TensorRef), as a model's
// projections leave them; a paged cache keeps its own layout.
//
//===----------------------------------------------------------------------===//

#include "Args.h"
#include "Peak.h"
#include "ToolCompiler.h"

#include "tilt/CpuIsa.h"
#include "tilt/Cuda.h"
#include "tilt/Half.h"
#include "tilt/Runtime.h"
#include "tilt/Slopes.h"
#include "tilt/TilePolicy.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#include <random>
#include <thread>
#include <unistd.h>

using namespace tilt;
using namespace tilt::tools;
using Clock = std::chrono::steady_clock;

namespace {

int fail(const std::string &msg) { return toolError("tilt-bench", msg); }

/// This CPU's model as /proc/cpuinfo names it.
std::string cpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos)
      return line.substr(line.find_first_not_of(" \t", line.find(':') + 1));
  return "unknown CPU";
}

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// The unfused baseline: per (batch, head), S = scale * Q K^T + bias is
/// materialized, softmaxed row by row and multiplied by V. Loops are written
/// in the axpy order a compiler vectorizes; no fusion, no blocking.
struct Naive {
  const AttentionSpec &spec;
  int64_t B, Sq, Sk;
  std::vector<float> q, k, v; ///< f32 copies of the inputs
  std::vector<float> o;

  __attribute__((target_clones("avx512f", "avx2", "default"))) void
  head(int64_t b, int64_t h, std::vector<float> &s, std::vector<float> &kt,
       const std::vector<float> &slopes) {
    const int64_t D = spec.headDim, hk = h / (spec.heads / spec.kvHeads);
    const float *qh = q.data() + (b * spec.heads + h) * Sq * D;
    const float *kh = k.data() + (b * spec.kvHeads + hk) * Sk * D;
    const float *vh = v.data() + (b * spec.kvHeads + hk) * Sk * D;
    float *oh = o.data() + (b * spec.heads + h) * Sq * D;
    const float scale = static_cast<float>(spec.effectiveScale());
    for (int64_t j = 0; j < Sk; ++j)
      for (int64_t d = 0; d < D; ++d)
        kt[d * Sk + j] = kh[j * D + d];
    for (int64_t i = 0; i < Sq; ++i) {
      float *row = s.data();
      std::fill(row, row + Sk, 0.0f);
      for (int64_t d = 0; d < D; ++d) {
        float x = qh[i * D + d] * scale;
        for (int64_t j = 0; j < Sk; ++j)
          row[j] += x * kt[d * Sk + j];
      }
      const int64_t ip = i + Sk - Sq;
      float mx = -INFINITY;
      for (int64_t j = 0; j < Sk; ++j) {
        float bias = spec.hasAlibi() ? slopes[h] * float(j - ip) : 0.0f;
        bool visible = !(spec.causal && j > ip) &&
                       !(spec.window && ip - j >= *spec.window);
        row[j] = visible ? row[j] + bias : -INFINITY;
        mx = std::max(mx, row[j]);
      }
      float sum = 0;
      for (int64_t j = 0; j < Sk; ++j) {
        row[j] = mx == -INFINITY ? 0.0f : std::exp(row[j] - mx);
        sum += row[j];
      }
      float *orow = oh + i * D;
      std::fill(orow, orow + D, 0.0f);
      for (int64_t j = 0; j < Sk; ++j) {
        float p = sum > 0 ? row[j] / sum : 0.0f;
        for (int64_t d = 0; d < D; ++d)
          orow[d] += p * vh[j * D + d];
      }
    }
  }

  void run(int threads) {
    std::vector<float> slopes =
        spec.hasAlibi() ? standardSlopes(spec) : std::vector<float>();
    std::atomic<int64_t> next{0};
    auto worker = [&] {
      std::vector<float> s(Sk), kt(Sk * spec.headDim);
      for (int64_t item; (item = next.fetch_add(1)) < B * spec.heads;)
        head(item / spec.heads, item % spec.heads, s, kt, slopes);
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t)
      pool.emplace_back(worker);
    worker();
    for (std::thread &t : pool)
      t.join();
  }
};

/// A private, empty cache directory for the JIT latencies; removed on exit.
struct ScratchCacheDir {
  std::string path =
      (std::filesystem::temp_directory_path() /
       fmt::format("tilt-bench-{}", static_cast<long>(getpid())))
          .string();
  ScratchCacheDir() { std::filesystem::remove_all(path); }
  ~ScratchCacheDir() { std::filesystem::remove_all(path); }
};

/// JIT latencies from an empty private cache directory: a cold compile, a
/// disk-cache hit and a memory-cache hit (the mean of many).
struct Jit {
  ScratchCacheDir cacheDir;
  /// The runtime that made the disk and memory hits; it holds the kernel for
  /// the timed runs. Declared after cacheDir so it is destroyed first.
  std::optional<Runtime> runtime;
  /// With a kernel bundle (--kernels-dir): the runtime the timed runs use,
  /// whose tuning database picks the configuration as run() does for a
  /// user (the JIT figures above come from runtimes without it, so that
  /// the cold compile compiles).
  std::optional<Runtime> tuned;
  double coldS = 0, diskS = 0, memS = 0;
  bool compiled = true; ///< the JIT figures were measured
  Runtime &timed() { return tuned ? *tuned : *runtime; }
  /// The `jit` line of the report.
  std::string line() const {
    if (!compiled)
      return "no compiler in this build (kernels from the bundle)";
    return fmt::format("cold compile {:.1f} ms, disk hit {:.3f} ms, memory "
                       "hit {:.3f} us",
                       coldS * 1e3, diskS * 1e3, memS * 1e6);
  }
};

/// Fills `jit` for `target`, with runtimes made from `rtOptions` over
/// jit.cacheDir (and, with `kernelsDir`, jit.tuned). Returns "" or an error.
std::string measureJit(RuntimeOptions rtOptions, const AttentionSpec &spec,
                       Target target, const TileConfig &config, Jit &jit,
                       const std::string &kernelsDir) {
  rtOptions.cacheDir = jit.cacheDir.path;
  if (!kernelsDir.empty()) {
    RuntimeOptions tuned = rtOptions;
    tuned.kernelsDir = kernelsDir;
    jit.tuned.emplace(tuned);
  }
  // The runtime-only build (no compiler) can only load kernels: no JIT
  // figures, and the timed runs take the bundle's.
  if (!rtOptions.compiler) {
    if (!jit.tuned)
      return "no compiler in this build and no kernel bundle (--kernels-dir)";
    jit.compiled = false;
    return {};
  }
  {
    Runtime cold(rtOptions);
    auto t0 = Clock::now();
    if (std::string err = cold.prepare(spec, target, config); !err.empty())
      return err;
    jit.coldS = seconds(t0, Clock::now());
  }
  // Made after the cold compile, as a later process would find the cache.
  Runtime &runtime = jit.runtime.emplace(rtOptions);
  auto t0 = Clock::now();
  if (std::string err = runtime.prepare(spec, target, config); !err.empty())
    return err;
  jit.diskS = seconds(t0, Clock::now());
  constexpr int kHits = 100000;
  t0 = Clock::now();
  for (int i = 0; i < kHits; ++i)
    (void)runtime.prepare(spec, target, config);
  jit.memS = seconds(t0, Clock::now()) / kHits;
  return {};
}

/// The visible (query, key) pairs of one head: the bottom-right rule of
/// ALIBI.md for causal and window. Their FLOPs are 4 D each (Q K^T, P V).
double visiblePairs(const AttentionSpec &spec, int64_t seq, int64_t seqK) {
  double pairs = 0;
  for (int64_t i = 0; i < seq; ++i) {
    const int64_t ip = i + seqK - seq;
    int64_t hi = spec.causal ? std::min(seqK, ip + 1) : seqK;
    int64_t lo = spec.window ? std::max<int64_t>(0, ip - *spec.window + 1) : 0;
    pairs += double(std::max<int64_t>(0, hi - lo));
  }
  return pairs;
}

/// `t` ([B, H, S, D], row-major) seen as [B, S, H, D] memory (--layout
/// bshd) when `bshd`: the same buffer through its strides.
TensorRef laidOut(TensorRef t, bool bshd) {
  if (!bshd)
    return t;
  const int64_t heads = t.shape[1], seq = t.shape[2], d = t.shape[3];
  return t.withStrides({seq * heads * d, d, heads * d, 1});
}

/// "cpu_decode_avx512 16 x 32" (and warps, stages on CUDA; stages on the
/// CPU decode kernels where set).
std::string kernelString(const TileConfig &k) {
  std::string s = fmt::format("{} {} x {}", k.variant, k.blockM, k.blockN);
  if (k.numWarps > 0)
    s += fmt::format(", {} warps, {} stages", k.numWarps, k.numStages);
  else if (k.numStages > 0)
    s += fmt::format(", {} stage{}", k.numStages, k.numStages == 1 ? "" : "s");
  return s;
}

/// Who chose the timed forward's configuration `given` (a backward variant
/// given names only the backward's): the command line, else on the CPU the
/// bundle's tuning database (or its absence: the default); CUDA has no
/// tuning database.
std::string kernelSource(const TileConfig &given, Target target, Jit &jit) {
  if (!given.isDefault())
    return "given";
  if (target == Target::CUDA)
    return "the default (the tuning database is for the CPU)";
  if (!jit.tuned)
    return "default: no kernel bundle (--kernels-dir none)";
  return "the bundle's tuning database, else the default; bundle: " +
         jit.tuned->bundleStatus();
}

/// --target cuda: the same measurements on the GPU, timed with events
/// (with a paged cache the runtime's copies of the block table and context
/// lengths to the host, for its checks, are inside the timed calls).
int benchCuda(const AttentionSpec &spec, const TileConfig &config,
              int64_t batch, int64_t seq, int64_t seqK, int64_t warmup,
              int64_t repeats, bool json, bool backward, bool bshd,
              const std::string &kernelsDir) {
  cuda::DeviceInfo device;
  if (std::string err = cuda::probe(device); !err.empty())
    return fail(err);
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  cuda::DeviceBuffer q, k, v, o;
  auto fill = [&](cuda::DeviceBuffer &buf, size_t n) {
    TypedBuffer host(spec.dtype, n);
    for (size_t i = 0; i < n; ++i)
      host.set(i, normal(rng));
    const size_t bytes = n * size_t(byteWidth(spec.dtype));
    if (std::string err = buf.allocate(bytes); !err.empty())
      return err;
    return buf.upload(host.data(), bytes);
  };
  // A paged cache (--page-size): every sequence seqK keys on its own pages,
  // the block table shuffled, as on the CPU.
  const int64_t ps = spec.pageSize;
  const int64_t pagesPerSeq = ps ? (seqK + ps - 1) / ps : 0;
  const int64_t cacheRows = ps ? batch * pagesPerSeq * ps : batch * seqK;
  for (auto [buf, n] :
       {std::pair{&q, batch * H * seq * D}, std::pair{&k, cacheRows * Hkv * D},
        std::pair{&v, cacheRows * Hkv * D}})
    if (std::string err = fill(*buf, size_t(n)); !err.empty())
      return fail(err);
  if (std::string err =
          o.allocate(size_t(batch * H * seq * D * byteWidth(spec.dtype)));
      !err.empty())
    return fail(err);
  AttentionArgs args;
  args.q = laidOut(TensorRef(q.data(), {batch, H, seq, D}), bshd);
  args.k = laidOut(TensorRef(k.data(), {batch, Hkv, seqK, D}), bshd);
  args.v = laidOut(TensorRef(v.data(), {batch, Hkv, seqK, D}), bshd);
  args.o = laidOut(TensorRef(o.data(), {batch, H, seq, D}), bshd);
  // --trainable-slopes: the standard values as a custom [H] tensor.
  cuda::DeviceBuffer slopes;
  if (spec.slopes == SlopeSource::Custom) {
    AttentionSpec standard = spec;
    standard.slopes = SlopeSource::Standard;
    const std::vector<float> values = standardSlopes(standard);
    const size_t bytes = values.size() * sizeof(float);
    if (std::string err = slopes.allocate(bytes); !err.empty())
      return fail(err);
    if (std::string err = slopes.upload(values.data(), bytes); !err.empty())
      return fail(err);
    args.slopes = TensorRef(slopes.data(), {H});
  }
  // The forward takes the configuration unless it names a backward variant.
  const bool bwdConfig = config.kind() && isBackwardVariant(*config.kind());
  const TileConfig fwdConfig = bwdConfig ? TileConfig() : config;
  const TileConfig bwdTile = bwdConfig ? config : TileConfig();
  cuda::DeviceBuffer table, lens;
  if (ps) {
    std::vector<int32_t> hostTable(size_t(batch * pagesPerSeq));
    std::iota(hostTable.begin(), hostTable.end(), 0);
    std::shuffle(hostTable.begin(), hostTable.end(), rng);
    std::vector<int32_t> hostLens(static_cast<size_t>(batch), int32_t(seqK));
    for (auto [buf, host] :
         {std::pair{&table, &hostTable}, std::pair{&lens, &hostLens}}) {
      const size_t bytes = host->size() * sizeof(int32_t);
      if (std::string err = buf->allocate(bytes); !err.empty())
        return fail(err);
      if (std::string err = buf->upload(host->data(), bytes); !err.empty())
        return fail(err);
    }
    args.k = TensorRef(k.data(), {batch * pagesPerSeq, ps, Hkv, D});
    args.v = TensorRef(v.data(), {batch * pagesPerSeq, ps, Hkv, D});
    args.blockTable = TensorRef(table.data(), {batch, pagesPerSeq});
    args.contextLens = TensorRef(lens.data(), {batch});
  }

  std::unique_ptr<KernelCompiler> compiler = makeToolCompiler(device);
  RuntimeOptions rtOptions;
  rtOptions.compiler = compiler.get();
  Jit jit;
  // The JIT figures are for the kernel run() picks: the GPU decode family
  // for paged caches and short dense query sequences (Runtime.cpp's
  // cudaConfig).
  TileConfig jitConfig = fwdConfig;
  if (jitConfig.isDefault() && useGpuDecodeFamily(spec, seq))
    jitConfig.variant = std::string(toString(KernelVariant::GpuDecodeSm80));
  if (std::string err =
          measureJit(rtOptions, spec, Target::CUDA, jitConfig, jit, kernelsDir);
      !err.empty())
    return fail(err);

  auto launch = [&] {
    return jit.timed().run(spec, args, Target::CUDA, fwdConfig);
  };
  // (The bundle's runtime loads its pick on the first call.)
  for (int64_t r = 0; r < warmup + (jit.tuned ? 1 : 0); ++r)
    if (std::string err = launch(); !err.empty())
      return fail(err);
  if (std::string err = cuda::synchronize(); !err.empty())
    return fail(err);
  const TileConfig kernel = jit.timed().stats().lastKernel;
  std::vector<double> ms;
  if (std::string err = cuda::timeKernel(launch, int(repeats), ms);
      !err.empty())
    return fail(err);
  const double med = median(ms) * 1e-3;
  const double flops = 4.0 * batch * H * visiblePairs(spec, seq, seqK) * D;
  // --backward: forward (with lse) + backward, and the backward alone from
  // that forward's o and lse, event-timed the same way.
  double fwdBwdMed = 0, bwdMed = 0;
  cuda::DeviceBuffer lse, gradO, dq, dk, dv, dslopes;
  if (backward) {
    const size_t e = size_t(byteWidth(spec.dtype));
    for (auto [buf, bytes] :
         {std::pair{&lse, size_t(batch * H * seq) * sizeof(float)},
          std::pair{&dq, size_t(batch * H * seq * D) * e},
          std::pair{&dk, size_t(batch * Hkv * seqK * D) * e},
          std::pair{&dv, size_t(batch * Hkv * seqK * D) * e},
          std::pair{&dslopes, size_t(H) * sizeof(float)}})
      if (std::string err = buf->allocate(bytes); !err.empty())
        return fail(err);
    if (std::string err = fill(gradO, size_t(batch * H * seq * D));
        !err.empty())
      return fail(err);
    args.lse = TensorRef(lse.data(), {batch, H, seq});
    BackwardArgs grads;
    grads.gradO = laidOut(TensorRef(gradO.data(), {batch, H, seq, D}), bshd);
    grads.dq = laidOut(TensorRef(dq.data(), {batch, H, seq, D}), bshd);
    grads.dk = laidOut(TensorRef(dk.data(), {batch, Hkv, seqK, D}), bshd);
    grads.dv = laidOut(TensorRef(dv.data(), {batch, Hkv, seqK, D}), bshd);
    if (args.slopes.present())
      grads.dslopes = TensorRef(dslopes.data(), {H});
    auto bwd = [&] {
      return jit.timed().backward(spec, args, grads, Target::CUDA, bwdTile);
    };
    auto both = [&] {
      if (std::string err = launch(); !err.empty())
        return err;
      return bwd();
    };
    for (int64_t r = 0; r < std::max<int64_t>(warmup, 1); ++r)
      if (std::string err = both(); !err.empty())
        return fail(err);
    if (std::string err = cuda::synchronize(); !err.empty())
      return fail(err);
    std::vector<double> bothMs, bwdMs;
    if (std::string err = cuda::timeKernel(both, int(repeats), bothMs);
        !err.empty())
      return fail(err);
    if (std::string err = cuda::timeKernel(bwd, int(repeats), bwdMs);
        !err.empty())
      return fail(err);
    fwdBwdMed = median(bothMs);
    bwdMed = median(bwdMs);
  }
  const double tflops = flops / med / 1e12;
  // K and V read once each: the floor of a memory-bound (decode) call.
  const double kvReadGbps =
      2.0 * batch * Hkv * seqK * D * double(byteWidth(spec.dtype)) / med / 1e9;

  std::string shape =
      fmt::format("B={} H={} Hkv={} Sq={} Sk={} D={} {} bias={}{}{}{}", batch,
                  H, Hkv, seq, seqK, D, toString(spec.dtype),
                  toString(spec.bias), spec.causal ? " causal" : "",
                  spec.window ? fmt::format(" window={}", *spec.window) : "",
                  ps ? fmt::format(" page={}", ps) : "");
  fmt::print("shape        {}\n", shape);
  fmt::print("device       {} ({}, {} SMs, driver {})\n", device.name,
             device.arch, device.smCount, device.driverVersion);
  fmt::print("kernel       {} ({})\n", kernelString(kernel),
             kernelSource(fwdConfig, Target::CUDA, jit));
  fmt::print("tilt         {:.4f} ms median of {} ({:.2f} TFLOP/s, K/V read "
             "at {:.1f} GB/s)\n",
             med * 1e3, repeats, tflops, kvReadGbps);
  fmt::print("jit          {}\n", jit.line());
  // The backward's FLOPs: 2.5x the forward's (FlashAttention's convention).
  const double fwdBwdGflops =
      backward ? 3.5 * flops / (fwdBwdMed * 1e-3) / 1e9 : 0.0;
  std::string backwardJson;
  if (backward) {
    fmt::print("backward     {:.4f} ms; forward + backward {:.4f} ms ({:.2f} "
               "TFLOP/s at 3.5x the forward's FLOPs){}\n",
               bwdMed, fwdBwdMed, fwdBwdGflops / 1e3,
               args.slopes.present() ? ", slope gradients included" : "");
    backwardJson =
        fmt::format(", \"fwd_bwd_ms\": {:.5f}, \"bwd_ms\": {:.5f}, "
                    "\"fwd_bwd_gflops\": {:.2f}, \"trainable_slopes\": {}",
                    fwdBwdMed, bwdMed, fwdBwdGflops,
                    args.slopes.present() ? "true" : "false");
  }
  if (json)
    fmt::print("{{\"shape\": \"{}\", \"target\": \"cuda\", \"device\": "
               "\"{}\", \"arch\": \"{}\", \"tflops\": {:.3f}, "
               "\"median_ms\": {:.5f}, \"kv_read_gbps\": {:.2f}, "
               "\"jit_cold_ms\": {:.3f}, \"jit_disk_hit_ms\": {:.4f}, "
               "\"jit_memory_hit_us\": {:.4f}, \"variant\": \"{}\", "
               "\"block_m\": {}, \"block_n\": {}, \"num_warps\": {}, "
               "\"num_stages\": {}{}}}\n",
               shape, device.name, device.arch, tflops, med * 1e3, kvReadGbps,
               jit.coldS * 1e3, jit.diskS * 1e3, jit.memS * 1e6, kernel.variant,
               kernel.blockM, kernel.blockN, kernel.numWarps, kernel.numStages,
               backwardJson);
  return 0;
}

struct BenchOptions {
  SpecFlags flags;
  TileConfig config;
  int64_t batch = 1, seq = 0, seqK = 0, threads = 0, repeats = 10, warmup = 2,
          naiveRepeats = 1, pageSize = 0, splits = 0;
  bool json = false, noNaive = false, backward = false, trainable = false;
  bool bshd = false; ///< --layout bshd
  BackwardSchedule schedule = BackwardSchedule::Auto; ///< --bwd-schedule
  std::string target = "cpu";
  std::string kernelsDir; ///< --kernels-dir: the bundle of the timed runs
};

std::optional<int> parseBenchOptions(int argc, char **argv, BenchOptions &o) {
  std::vector<Option> options;
  addSpecOptions(options, o.flags);
  addTileConfigOptions(options, o.config);
  addKernelsDirOption(options, o.kernelsDir);
  auto intFlag = [&](const char *name, const char *help, int64_t &dst,
                     int64_t min) {
    options.push_back({name, "N", help, [name, &dst, min](auto v) {
                         return parseInt(name, v, dst, min);
                       }});
  };
  auto boolFlag = [&](const char *name, const char *help, bool &dst) {
    options.push_back({name, "", help, [&dst](auto) {
                         dst = true;
                         return std::string();
                       }});
  };
  intFlag("batch", "batch size (default 1)", o.batch, 1);
  intFlag("seq", "query length, and key length unless --seq-k (required)",
          o.seq, 1);
  intFlag("seq-k", "key length", o.seqK, 1);
  intFlag("threads", "CPU threads (default: all cores)", o.threads, 1);
  intFlag("repeats", "timed runs; the median is reported (default 10)",
          o.repeats, 1);
  intFlag("warmup", "untimed runs first (default 2)", o.warmup, 0);
  intFlag("naive-repeats", "timed runs of the naive baseline (default 1)",
          o.naiveRepeats, 1);
  intFlag("page-size",
          "read K/V from a paged KV cache of this page size, through a "
          "shuffled block table (CPU; no naive baseline)",
          o.pageSize, 1);
  intFlag("splits",
          "decode family: cut each (batch, kv head)'s keys into N parts "
          "(1: none; default: the runtime's rule)",
          o.splits, 1);
  boolFlag("no-naive", "skip the naive baseline", o.noNaive);
  boolFlag("backward", "also time the backward pass", o.backward);
  boolFlag("trainable-slopes",
           "with --backward: custom [H] slopes whose gradient is computed",
           o.trainable);
  options.push_back(
      {"layout", "bhsd|bshd",
       "memory order of q, k, v, o: [B, H, S, D] (default) or [B, S, H, D], "
       "taken through strides (CPU)",
       [&o](std::string_view v) {
         if (v != "bhsd" && v != "bshd")
           return fmt::format("--layout: expected bhsd or bshd, got '{}'", v);
         o.bshd = v == "bshd";
         return std::string();
       }});
  options.push_back(
      {"bwd-schedule", "auto|two-pass|fused",
       "the CPU backward's schedule (default auto: the runtime's rule)",
       [&o](std::string_view v) {
         if (v == "auto")
           o.schedule = BackwardSchedule::Auto;
         else if (v == "two-pass")
           o.schedule = BackwardSchedule::TwoPass;
         else if (v == "fused")
           o.schedule = BackwardSchedule::Fused;
         else
           return fmt::format(
               "--bwd-schedule: expected auto, two-pass or fused, got '{}'", v);
         return std::string();
       }});
  options.push_back(targetOption("where to run (default cpu)", o.target));
  boolFlag("json", "print one JSON object as the last line", o.json);
  std::vector<std::string> positional;
  if (std::optional<int> exit = parseCommandLine(
          argc, argv, options, "tilt-bench",
          "tilt-bench [spec flags] --seq S [options]", positional))
    return exit;
  if (!positional.empty())
    return fail(fmt::format("unexpected argument '{}'", positional.front()));
  if (!o.seq)
    return fail("--seq is required");
  if (!o.seqK)
    o.seqK = o.seq;
  if (std::string err = finishSpecFlags(o.flags); !err.empty())
    return fail(err);
  if (std::string err = finishTileConfig(o.config); !err.empty())
    return fail(err);
  const AttentionSpec &spec = o.flags.spec;
  if (spec.slopes == SlopeSource::Custom || spec.keyPaddingMask)
    return fail("tilt-bench times standard-slope specs without a padding "
                "mask; use tilt-run for the others");
  if (o.trainable && (!o.backward || !spec.hasAlibi()))
    return fail("--trainable-slopes needs --backward and an alibi bias");
  if (o.trainable)
    o.flags.spec.slopes = SlopeSource::Custom;
  if (o.pageSize) {
    if (o.backward)
      return fail("--page-size: a paged KV cache runs the forward only (the "
                  "backward takes dense k and v)");
    o.flags.spec.pageSize = o.pageSize;
    if (std::string err = o.flags.spec.validate(); !err.empty())
      return fail("--page-size: " + err);
    o.noNaive = true; // the naive baseline reads dense K/V
  }
  if (!o.threads)
    o.threads = std::max(1u, std::thread::hardware_concurrency());
  return std::nullopt;
}

/// What one CPU benchmark measured.
struct CpuResult {
  double med = 0, gflops = 0, naiveMed = 0, peakFp32 = 0, peakAmx = 0;
  double kvReadGbps = 0, readBandwidth = 0, readBandwidthBefore = 0;
  double fwdBwdMed = 0, bwdMed = 0, fwdBwdGflops = 0; ///< --backward
  Jit jit;
  TileConfig kernel;  ///< what the timed forward ran
  std::string source; ///< who chose it
  /// --backward: the backward's variant (the one named, else the runtime's
  /// default for this CPU and dtype).
  std::string bwdVariant;
  std::string bwdSchedule; ///< the CPU backward's, as it ran
};

/// Times the kernel (median of --repeats after --warmup), the naive
/// baseline, the JIT paths and the machine's peaks.
std::string benchCpu(const BenchOptions &o, CpuResult &r) {
  const AttentionSpec &spec = o.flags.spec;
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  // Inputs: unit normal, rounded to the dtype.
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  Naive naive{spec, o.batch, o.seq, o.seqK, {}, {}, {}, {}};
  // The naive baseline's f32 copies only when it runs (long decode caches
  // would not fit twice).
  auto fill = [&](TypedBuffer &buf, std::vector<float> &f32, size_t n) {
    buf = TypedBuffer(spec.dtype, n);
    if (!o.noNaive)
      f32.resize(n);
    for (size_t i = 0; i < n; ++i) {
      buf.set(i, normal(rng));
      if (!o.noNaive)
        f32[i] = buf.get(i);
    }
  };
  TypedBuffer qb, kb, vb;
  fill(qb, naive.q, o.batch * H * o.seq * D);
  // Paged: every sequence holds --seq-k keys in ceil(Sk / page) pages of one
  // cache, the pages shuffled so that a sequence's pages are scattered.
  const int64_t ps = spec.pageSize;
  const int64_t pagesPerSeq = ps ? (o.seqK + ps - 1) / ps : 0;
  const int64_t kvRows = ps ? o.batch * pagesPerSeq * ps : o.batch * o.seqK;
  fill(kb, naive.k, kvRows * Hkv * D);
  fill(vb, naive.v, kvRows * Hkv * D);
  TypedBuffer ob(spec.dtype, o.batch * H * o.seq * D);
  AttentionArgs args;
  args.q = TensorRef(qb.data(), {o.batch, H, o.seq, D});
  args.k = TensorRef(kb.data(), {o.batch, Hkv, o.seqK, D});
  args.v = TensorRef(vb.data(), {o.batch, Hkv, o.seqK, D});
  args.o = TensorRef(ob.data(), {o.batch, H, o.seq, D});
  // --layout bshd: the same buffers as [B, S, H, D] memory.
  for (TensorRef *t : {&args.q, &args.k, &args.v, &args.o})
    *t = laidOut(*t, o.bshd);
  std::vector<int32_t> blockTable, contextLens;
  if (ps) {
    blockTable.resize(o.batch * pagesPerSeq);
    std::iota(blockTable.begin(), blockTable.end(), 0);
    std::shuffle(blockTable.begin(), blockTable.end(), rng);
    contextLens.assign(o.batch, int32_t(o.seqK));
    args.k = TensorRef(kb.data(), {o.batch * pagesPerSeq, ps, Hkv, D});
    args.v = TensorRef(vb.data(), {o.batch * pagesPerSeq, ps, Hkv, D});
    args.blockTable = TensorRef(blockTable.data(), {o.batch, pagesPerSeq});
    args.contextLens = TensorRef(contextLens.data(), {o.batch});
  }
  // --trainable-slopes: the standard values as a custom tensor.
  std::vector<float> slopes, dslopes;
  if (spec.slopes == SlopeSource::Custom) {
    AttentionSpec standard = spec;
    standard.slopes = SlopeSource::Standard;
    slopes = standardSlopes(standard);
    dslopes.resize(slopes.size());
    args.slopes = TensorRef(slopes.data(), {H});
  }
  // The forward takes the configuration unless it names a backward variant.
  const bool bwdConfig = o.config.kind() && isBackwardVariant(*o.config.kind());
  const TileConfig fwdConfig = bwdConfig ? TileConfig() : o.config;
  const TileConfig bwdTile = bwdConfig ? o.config : TileConfig();
  r.bwdVariant = bwdConfig ? o.config.variant
                           : std::string(toString(backwardCpuVariant(
                                 spec.dtype, [](std::string_view f) {
                                   return hostCpu().has(f);
                                 })));

  std::unique_ptr<KernelCompiler> compiler = makeToolCompiler();
  RuntimeOptions rtOptions;
  rtOptions.threads = static_cast<int>(o.threads);
  rtOptions.decodeSplits =
      static_cast<int>(std::min<int64_t>(o.splits, 1 << 20));
  rtOptions.backwardSchedule = o.schedule;
  rtOptions.compiler = compiler.get();
  // The JIT figures are for the kernel run() picks: where the decode
  // family serves the call (TilePolicy's rule), its configuration, else
  // the compiler's default with its query block fitted to --seq
  // (fitQueryBlock), not the spec's default as prepare() takes it (for a
  // paged cache, the decode kernel). (A tuned record from --kernels-dir is
  // timed but not JIT-measured: the JIT figures stay the default's.)
  TileConfig jitConfig = fwdConfig;
  if (jitConfig.isDefault() && useDecodeFamily(spec, o.seq))
    jitConfig = defaultCpuConfig(
        decodeCpuVariant([](std::string_view f) { return hostCpu().has(f); }));
  else if (jitConfig.isDefault() && compiler) // (none in tilt-bench-rt)
    jitConfig =
        fitQueryBlock(compiler->defaultConfig(spec, Target::CPU), o.seq);
  if (std::string err = measureJit(rtOptions, spec, Target::CPU, jitConfig,
                                   r.jit, o.kernelsDir);
      !err.empty())
    return err;

  // The machine's read bandwidth before the timing too (the figure the
  // ratio uses is taken after it): on a shared machine it moves between
  // the two, and the pair shows by how much.
  r.readBandwidthBefore = measureReadBandwidth(static_cast<int>(o.threads));
  std::vector<double> times;
  // The bundle's runtime loads (or compiles) its pick on the first call.
  if (r.jit.tuned)
    if (std::string err = r.jit.timed().run(spec, args, Target::CPU, fwdConfig);
        !err.empty())
      return err;
  for (int64_t i = 0; i < o.warmup + o.repeats; ++i) {
    auto t0 = Clock::now();
    if (std::string err = r.jit.timed().run(spec, args, Target::CPU, fwdConfig);
        !err.empty())
      return err;
    if (i >= o.warmup)
      times.push_back(seconds(t0, Clock::now()));
  }
  r.kernel = r.jit.timed().stats().lastKernel;
  r.source = kernelSource(fwdConfig, Target::CPU, r.jit);
  if (o.backward) {
    // Forward with lse, then the backward from an upstream gradient.
    std::vector<float> lse(o.batch * H * o.seq);
    args.lse = TensorRef(lse.data(), {o.batch, H, o.seq});
    TypedBuffer dob, dqb(spec.dtype, qb.size()), dkb(spec.dtype, kb.size()),
        dvb(spec.dtype, vb.size());
    dob = TypedBuffer(spec.dtype, ob.size());
    for (size_t i = 0; i < ob.size(); ++i)
      dob.set(i, normal(rng));
    BackwardArgs grads;
    grads.gradO =
        laidOut(TensorRef(dob.data(), {o.batch, H, o.seq, D}), o.bshd);
    grads.dq = laidOut(TensorRef(dqb.data(), {o.batch, H, o.seq, D}), o.bshd);
    grads.dk =
        laidOut(TensorRef(dkb.data(), {o.batch, Hkv, o.seqK, D}), o.bshd);
    grads.dv =
        laidOut(TensorRef(dvb.data(), {o.batch, Hkv, o.seqK, D}), o.bshd);
    if (!dslopes.empty())
      grads.dslopes = TensorRef(dslopes.data(), {H});
    std::vector<double> both, bwd;
    for (int64_t i = 0; i < o.warmup + o.repeats; ++i) {
      auto t0 = Clock::now();
      if (std::string err =
              r.jit.timed().run(spec, args, Target::CPU, fwdConfig);
          !err.empty())
        return err;
      auto t1 = Clock::now();
      if (std::string err =
              r.jit.timed().backward(spec, args, grads, Target::CPU, bwdTile);
          !err.empty())
        return err;
      auto t2 = Clock::now();
      if (i >= o.warmup) {
        both.push_back(seconds(t0, t2));
        bwd.push_back(seconds(t1, t2));
      }
    }
    r.fwdBwdMed = median(both);
    r.bwdMed = median(bwd);
    r.bwdSchedule =
        r.jit.timed().stats().lastBackwardSchedule == BackwardSchedule::Fused
            ? "fused"
            : "two-pass";
  }
  const double flops =
      4.0 * o.batch * H * visiblePairs(spec, o.seq, o.seqK) * D;
  r.med = median(times);
  r.gflops = flops / r.med / 1e9;
  if (o.backward)
    r.fwdBwdGflops = 3.5 * flops / r.fwdBwdMed / 1e9;
  // K and V read once each: the floor of a memory-bound (decode) call.
  const double kvBytes =
      2.0 * o.batch * Hkv * o.seqK * D * double(byteWidth(spec.dtype));
  r.kvReadGbps = kvBytes / r.med / 1e9;
  r.readBandwidth = measureReadBandwidth(static_cast<int>(o.threads));
  if (!o.noNaive) {
    std::vector<double> naiveTimes;
    naive.o.resize(o.batch * H * o.seq * D);
    for (int64_t i = 0; i < o.naiveRepeats; ++i) {
      auto t0 = Clock::now();
      naive.run(static_cast<int>(o.threads));
      naiveTimes.push_back(seconds(t0, Clock::now()));
    }
    r.naiveMed = median(naiveTimes);
  }
  r.peakFp32 = measureFp32Peak(static_cast<int>(o.threads));
  // AMX only where the host's class (after TILT_CPU_CLASS) includes it.
  r.peakAmx = hostCpu().cls == CpuClass::X86_64_V4_AMX
                  ? measureAmxPeak(static_cast<int>(o.threads))
                  : 0.0;
  return {};
}

void printCpuResult(const BenchOptions &o, const CpuResult &r) {
  const AttentionSpec &spec = o.flags.spec;
  const std::string cpu = cpuModelName();
  const std::string isa = hostCpu().describe();
  const std::string shape = fmt::format(
      "B={} H={} Hkv={} Sq={} Sk={} D={} {} bias={}{}{}{}{}", o.batch,
      spec.heads, spec.kvHeads, o.seq, o.seqK, spec.headDim,
      toString(spec.dtype), toString(spec.bias), spec.causal ? " causal" : "",
      spec.window ? fmt::format(" window={}", *spec.window) : "",
      spec.pageSize ? fmt::format(" paged={}", spec.pageSize) : "",
      o.bshd ? " bshd" : "");
  fmt::print("cpu          {} ({})\n", cpu, isa);
  fmt::print("shape        {}\n", shape);
  fmt::print("threads      {}\n", o.threads);
  fmt::print("kernel       {} ({})\n", kernelString(r.kernel), r.source);
  fmt::print("tilt         {:.3f} ms median of {} ({:.1f} GFLOP/s)\n",
             r.med * 1e3, o.repeats, r.gflops);
  fmt::print("fp32 peak    {:.1f} GFLOP/s measured -> tilt at {:.1f}%\n",
             r.peakFp32, 100 * r.gflops / r.peakFp32);
  if (r.peakAmx > 0)
    fmt::print("amx peak     {:.1f} GFLOP/s measured -> tilt at {:.1f}%\n",
               r.peakAmx, 100 * r.gflops / r.peakAmx);
  else
    fmt::print("amx peak     not available on this CPU\n");
  // The probe reports 0 where it could not allocate its buffers.
  const double ofBandwidth =
      r.readBandwidth > 0 ? r.kvReadGbps / r.readBandwidth : 0.0;
  fmt::print("kv read      {:.1f} GB/s (K and V once) vs {:.1f} GB/s measured "
             "read bandwidth -> {:.1f}% ({:.1f} GB/s before the timing)\n",
             r.kvReadGbps, r.readBandwidth, 100 * ofBandwidth,
             r.readBandwidthBefore);
  if (o.backward)
    fmt::print("backward     {} ({}) {:.3f} ms; forward + backward {:.3f} ms "
               "({:.1f} GFLOP/s at 3.5x the forward's FLOPs){}\n",
               r.bwdVariant, r.bwdSchedule, r.bwdMed * 1e3, r.fwdBwdMed * 1e3,
               r.fwdBwdGflops, o.trainable ? ", slope gradients included" : "");
  if (!o.noNaive)
    fmt::print("naive        {:.3f} ms (unfused, f32) -> tilt {:.2f}x "
               "faster\n",
               r.naiveMed * 1e3, r.naiveMed / r.med);
  fmt::print("jit          {}\n", r.jit.line());
  std::string backward;
  if (o.backward)
    backward = fmt::format(", \"fwd_bwd_ms\": {:.4f}, \"bwd_ms\": {:.4f}, "
                           "\"fwd_bwd_gflops\": {:.2f}, "
                           "\"trainable_slopes\": {}, \"bwd_variant\": \"{}\", "
                           "\"bwd_schedule\": \"{}\"",
                           r.fwdBwdMed * 1e3, r.bwdMed * 1e3, r.fwdBwdGflops,
                           o.trainable ? "true" : "false", r.bwdVariant,
                           r.bwdSchedule);
  if (o.json)
    fmt::print("{{\"cpu\": \"{}\", \"isa_class\": \"{}\", "
               "\"shape\": \"{}\", \"threads\": {}, \"gflops\": {:.2f}, "
               "\"median_ms\": {:.4f}, \"peak_fp32_gflops\": {:.2f}, "
               "\"peak_amx_gflops\": {:.2f}, \"ratio_fp32_peak\": {:.4f}, "
               "\"ratio_amx_peak\": {:.4f}, \"naive_ms\": {:.4f}, "
               "\"speedup_vs_naive\": {:.3f}, \"jit_cold_ms\": {:.3f}, "
               "\"jit_disk_hit_ms\": {:.4f}, \"jit_memory_hit_us\": {:.4f}, "
               "\"kv_read_gbps\": {:.2f}, \"read_bandwidth_gbps\": {:.2f}, "
               "\"read_bandwidth_before_gbps\": {:.2f}, "
               "\"ratio_read_bandwidth\": {:.4f}, \"variant\": \"{}\", "
               "\"block_m\": {}, \"block_n\": {}, \"num_stages\": {}{}}}\n",
               jsonEscape(cpu), jsonEscape(isa), shape, o.threads, r.gflops,
               r.med * 1e3, r.peakFp32, r.peakAmx, r.gflops / r.peakFp32,
               r.peakAmx > 0 ? r.gflops / r.peakAmx : 0.0, r.naiveMed * 1e3,
               r.naiveMed > 0 ? r.naiveMed / r.med : 0.0, r.jit.coldS * 1e3,
               r.jit.diskS * 1e3, r.jit.memS * 1e6, r.kvReadGbps,
               r.readBandwidth, r.readBandwidthBefore, ofBandwidth,
               r.kernel.variant, r.kernel.blockM, r.kernel.blockN,
               r.kernel.numStages, backward);
}

} // namespace

int main(int argc, char **argv) {
  BenchOptions o;
  if (std::optional<int> exit = parseBenchOptions(argc, argv, o))
    return *exit;
  if (o.target == "cuda")
    return benchCuda(o.flags.spec, o.config, o.batch, o.seq, o.seqK, o.warmup,
                     o.repeats, o.json, o.backward, o.bshd, o.kernelsDir);
  CpuResult r;
  if (std::string err = benchCpu(o, r); !err.empty())
    return fail(err);
  printCpuResult(o, r);
  return 0;
}
