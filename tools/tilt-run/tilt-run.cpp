//===- tilt-run.cpp - Run one attention through the runtime ---------------===//
//
//   tilt-run [spec flags] q.npy k.npy v.npy -o out.npy [--lse lse.npy]
//            [--cu-seqlens-q F --cu-seqlens-k F] [--threads N] [--stats]
//   tilt-run [spec flags] --seq S [--batch B --seq-k S] [--check] [--time]
//            [--target cpu|cuda]
//
// Inputs are float32 .npy files, rounded to --dtype before use, or seeded
// unit-normal tensors of the given sizes; outputs are float32. The kernel
// comes from the runtime's caches or is JIT-compiled (tilt-run-rt, built
// without the compiler, only loads kernels). --check compares the result with
// the float64 reference of ALIBI.md and applies its rule: the max abs error
// must be at most 1e-4 for f32, else at most twice that of a naive same-dtype
// implementation + 1e-6; NaN or inf anywhere fails. A failed check exits 1.
// With --target cuda the tensors are copied to the GPU and back; --time then
// reports the median of the runs' event-timed kernel times.
//
//===----------------------------------------------------------------------===//

#include "Args.h"
#include "Npy.h"
#include "ToolCompiler.h"

#include "tilt/Cuda.h"
#include "tilt/Half.h"
#include "tilt/Reference.h"
#include "tilt/Runtime.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <tuple>

using namespace tilt;
using namespace tilt::tools;

namespace {

int fail(const std::string &msg) { return toolError("tilt-run", msg); }

std::string loadFloat32(const std::string &what, const std::string &path,
                        NpyArray &out) {
  if (std::string err = readNpy(path, out); !err.empty())
    return err;
  // float64 is accepted too: values go through float32 either way.
  if (out.dtype != "<f4" && out.dtype != "<f8")
    return fmt::format("{} ({}): dtype '{}', expected float32", what, path,
                       out.dtype);
  return {};
}

TensorRef ref(void *data, const std::vector<int64_t> &shape) {
  TensorRef t;
  t.data = data;
  t.rank = static_cast<int>(shape.size());
  for (int i = 0; i < t.rank && i < 4; ++i)
    t.shape[i] = shape[i];
  return t;
}

} // namespace

int main(int argc, char **argv) {
  SpecFlags flags;
  TileConfig config;
  std::string output, lseOutput, cuQFile, cuKFile, target = "cpu", cacheDir;
  int64_t threads = 0, repeat = 1, batch = 1, seq = 0, seqK = 0, seed = 0;
  bool stats = false, check = false, timeRuns = false;

  std::string kernelsDir;
  std::vector<Option> options;
  addSpecOptions(options, flags);
  addTileConfigOptions(options, config);
  addKernelsDirOption(options, kernelsDir);
  auto stringFlag = [&](const char *name, const char *value, const char *help,
                        std::string &dst) {
    options.push_back(stringOption(name, value, help, dst));
  };
  stringFlag("o", "FILE.npy", "output, float32 like q (required)", output);
  stringFlag("lse", "FILE.npy", "also write the log-sum-exp, float32",
             lseOutput);
  stringFlag("cu-seqlens-q", "FILE.npy",
             "ragged batch: query offsets [B+1] (q packed [total,H,D])",
             cuQFile);
  stringFlag("cu-seqlens-k", "FILE.npy", "ragged batch: key offsets [B+1]",
             cuKFile);
  stringFlag("cache-dir", "DIR", "kernel cache (default: $TILT_CACHE_DIR)",
             cacheDir);
  options.push_back(targetOption("where to run (default cpu)", target));
  options.push_back({"threads", "N", "CPU threads (default: all cores)",
                     [&](auto v) { return parseInt("threads", v, threads, 1); }});
  options.push_back({"repeat", "N", "run N times (later runs hit the cache)",
                     [&](auto v) { return parseInt("repeat", v, repeat, 1); }});
  options.push_back({"batch", "N", "random inputs: batch size (default 1)",
                     [&](auto v) { return parseInt("batch", v, batch, 1); }});
  options.push_back({"seq", "N", "random inputs of this query (and key) length",
                     [&](auto v) { return parseInt("seq", v, seq, 1); }});
  options.push_back({"seq-k", "N", "random inputs: key length",
                     [&](auto v) { return parseInt("seq-k", v, seqK, 1); }});
  options.push_back({"seed", "N", "random inputs: seed (default 0)",
                     [&](auto v) { return parseInt("seed", v, seed, 0); }});
  options.push_back({"check", "", "compare with the float64 reference",
                     [&](auto) {
                       check = true;
                       return std::string();
                     }});
  options.push_back({"time", "",
                     "print each run's time and GFLOP/s (cuda: the median "
                     "kernel time and TFLOP/s)",
                     [&](auto) {
                       timeRuns = true;
                       return std::string();
                     }});
  options.push_back({"stats", "", "print cache statistics as JSON on stderr",
                     [&](auto) {
                       stats = true;
                       return std::string();
                     }});
  std::vector<std::string> files;
  if (std::optional<int> exit = parseCommandLine(
          argc, argv, options, "tilt-run",
          "tilt-run [spec flags] q.npy k.npy v.npy -o out.npy [options]",
          files))
    return *exit;
  bool random = files.empty() && seq > 0;
  if (!random && files.size() != 3)
    return fail(fmt::format("expected three inputs q.npy k.npy v.npy (or "
                            "--seq for random inputs), got {}",
                            files.size()));
  if (random && !files.empty())
    return fail("give either input files or --seq, not both");
  if (!random && output.empty())
    return fail("-o FILE.npy is required");
  if (cuQFile.empty() != cuKFile.empty())
    return fail("--cu-seqlens-q and --cu-seqlens-k go together");
  if (random && !cuQFile.empty())
    return fail("--cu-seqlens-q/-k need input files");
  flags.spec.varlen = !cuQFile.empty();
  if (std::string err = finishSpecFlags(flags); !err.empty())
    return fail(err);
  if (std::string err = finishTileConfig(config); !err.empty())
    return fail(err);
  const AttentionSpec &spec = flags.spec;
  const Target tgt = target == "cuda" ? Target::CUDA : Target::CPU;
  cuda::DeviceInfo device;
  if (tgt == Target::CUDA)
    if (std::string err = cuda::probe(device); !err.empty())
      return fail(err);

  NpyArray q, k, v;
  if (random) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::normal_distribution<double> normal;
    auto make = [&](NpyArray &a, std::vector<int64_t> shape) {
      a.shape = std::move(shape);
      a.dtype = "<f4";
      a.values.resize(a.numElements());
      for (double &x : a.values)
        x = static_cast<float>(normal(rng));
    };
    int64_t sk = seqK ? seqK : seq;
    make(q, {batch, spec.heads, seq, spec.headDim});
    make(k, {batch, spec.kvHeads, sk, spec.headDim});
    make(v, {batch, spec.kvHeads, sk, spec.headDim});
  } else {
    if (std::string err = loadFloat32("q", files[0], q); !err.empty())
      return fail(err);
    if (std::string err = loadFloat32("k", files[1], k); !err.empty())
      return fail(err);
    if (std::string err = loadFloat32("v", files[2], v); !err.empty())
      return fail(err);
  }
  size_t rank = spec.varlen ? 3 : 4;
  for (auto [name, a] : {std::pair<const char *, NpyArray *>{"q", &q},
                         {"k", &k},
                         {"v", &v}})
    if (a->shape.size() != rank)
      return fail(fmt::format("{}: expected rank {} ({}), got shape {}", name,
                              rank, spec.varlen ? "[total, H, D]" : "[B, H, S, D]",
                              a->shapeString()));

  auto toDtype = [&](const NpyArray &a) {
    TypedBuffer buf(spec.dtype, a.values.size());
    for (size_t i = 0; i < a.values.size(); ++i)
      buf.set(i, static_cast<float>(a.values[i]));
    return buf;
  };
  TypedBuffer qb = toDtype(q), kb = toDtype(k), vb = toDtype(v);
  TypedBuffer ob(spec.dtype, q.values.size());

  AttentionArgs args;
  args.q = ref(qb.data(), q.shape);
  args.k = ref(kb.data(), k.shape);
  args.v = ref(vb.data(), v.shape);
  args.o = ref(ob.data(), q.shape);

  std::vector<float> lse, slopes;
  std::vector<int64_t> lseShape =
      spec.varlen ? std::vector<int64_t>{spec.heads, q.shape[0]}
                  : std::vector<int64_t>{q.shape[0], spec.heads, q.shape[2]};
  if (!lseOutput.empty()) {
    lse.assign(lseShape[0] * lseShape[1] * (spec.varlen ? 1 : lseShape[2]),
               0.0f);
    args.lse = ref(lse.data(), lseShape);
  }
  NpyArray slopesNpy, kpmNpy, cuQNpy, cuKNpy;
  if (!flags.slopesFile.empty()) {
    if (std::string err = loadFloat32("slopes", flags.slopesFile, slopesNpy);
        !err.empty())
      return fail(err);
    slopes.assign(slopesNpy.values.begin(), slopesNpy.values.end());
    args.slopes = ref(slopes.data(), slopesNpy.shape);
  }
  std::vector<uint8_t> kpm;
  if (!flags.keyPaddingMaskFile.empty()) {
    if (std::string err = readNpy(flags.keyPaddingMaskFile, kpmNpy);
        !err.empty())
      return fail(err);
    for (double x : kpmNpy.values) {
      if (x != 0.0 && x != 1.0)
        return fail(fmt::format("--key-padding-mask: values must be 0 or 1, "
                                "got {}",
                                x));
      kpm.push_back(x != 0.0);
    }
    args.keyPaddingMask = ref(kpm.data(), kpmNpy.shape);
  }
  std::vector<int32_t> cuQ, cuK;
  auto loadOffsets = [&](const std::string &file, NpyArray &a,
                         std::vector<int32_t> &dst) -> std::string {
    if (std::string err = readNpy(file, a); !err.empty())
      return err;
    for (double x : a.values) {
      if (x != static_cast<int32_t>(x))
        return fmt::format("{}: offsets must be integers, got {}", file, x);
      dst.push_back(static_cast<int32_t>(x));
    }
    return {};
  };
  if (spec.varlen) {
    if (std::string err = loadOffsets(cuQFile, cuQNpy, cuQ); !err.empty())
      return fail(err);
    if (std::string err = loadOffsets(cuKFile, cuKNpy, cuK); !err.empty())
      return fail(err);
    args.cuSeqlensQ = ref(cuQ.data(), cuQNpy.shape);
    args.cuSeqlensK = ref(cuK.data(), cuKNpy.shape);
  }

  // CUDA: the same tensors in device memory; `args` points there, `hostArgs`
  // keeps the host copies that outputs come back to.
  const AttentionArgs hostArgs = args;
  std::vector<cuda::DeviceBuffer> deviceBuffers;
  if (tgt == Target::CUDA) {
    auto toDevice = [&](TensorRef &t, size_t elementBytes, bool copy) {
      if (!t.present())
        return std::string();
      cuda::DeviceBuffer &buf = deviceBuffers.emplace_back();
      const size_t bytes = size_t(t.numElements()) * elementBytes;
      if (std::string err = buf.allocate(std::max<size_t>(bytes, 1));
          !err.empty())
        return err;
      if (std::string err = copy ? buf.upload(t.data, bytes) : buf.fill(0);
          !err.empty())
        return err;
      t.data = buf.data();
      return std::string();
    };
    const size_t e = size_t(byteWidth(spec.dtype));
    for (auto [t, bytes, copy] :
         {std::tuple{&args.q, e, true}, std::tuple{&args.k, e, true},
          std::tuple{&args.v, e, true}, std::tuple{&args.o, e, false},
          std::tuple{&args.lse, sizeof(float), false},
          std::tuple{&args.slopes, sizeof(float), true},
          std::tuple{&args.keyPaddingMask, sizeof(uint8_t), true},
          std::tuple{&args.cuSeqlensQ, sizeof(int32_t), true},
          std::tuple{&args.cuSeqlensK, sizeof(int32_t), true}})
      if (std::string err = toDevice(*t, bytes, copy); !err.empty())
        return fail(err);
  }

  std::unique_ptr<KernelCompiler> compiler = makeToolCompiler(device);
  RuntimeOptions rtOptions;
  rtOptions.cacheDir = cacheDir;
  rtOptions.threads = static_cast<int>(threads);
  rtOptions.compiler = compiler.get();
  rtOptions.kernelsDir = kernelsDir;
  Runtime runtime(rtOptions);
  // Useful work: 4 * B * H * Sq * Sk * D, half of it when causal.
  double flops = 4.0 * double(q.numElements()) * double(k.shape[k.shape.size() - 2]) *
                 (spec.causal ? 0.5 : 1.0);
  if (spec.varlen)
    flops = 0;
  if (tgt == Target::CUDA) {
    // The first run loads (or compiles) the kernel; the timed ones only
    // launch it.
    if (std::string err = runtime.run(spec, args, tgt, config); !err.empty())
      return fail(err);
    if (std::string err = cuda::synchronize(); !err.empty())
      return fail(err);
    if (timeRuns) {
      std::vector<double> ms;
      if (std::string err = cuda::timeKernel(
              [&] { return runtime.run(spec, args, tgt, config); },
              int(repeat), ms);
          !err.empty())
        return fail(err);
      std::sort(ms.begin(), ms.end());
      const double med = ms.size() % 2 ? ms[ms.size() / 2]
                                       : 0.5 * (ms[ms.size() / 2 - 1] +
                                                ms[ms.size() / 2]);
      fmt::print("cuda: {:.4f} ms median of {} runs{}\n", med, ms.size(),
                 flops > 0 ? fmt::format(" ({:.2f} TFLOP/s)",
                                         flops / (med * 1e-3) / 1e12)
                           : std::string());
    }
    auto back = [&](const TensorRef &device, const TensorRef &host,
                    size_t elementBytes) {
      return device.present()
                 ? cuda::copyToHost(host.data, device.data,
                                    size_t(device.numElements()) * elementBytes)
                 : std::string();
    };
    if (std::string err = back(args.o, hostArgs.o, byteWidth(spec.dtype));
        !err.empty())
      return fail(err);
    if (std::string err = back(args.lse, hostArgs.lse, sizeof(float));
        !err.empty())
      return fail(err);
  }
  if (timeRuns && tgt == Target::CPU)
    fmt::print("kernel bundle: {}\n", runtime.bundleStatus());
  for (int64_t r = 0; r < repeat && tgt == Target::CPU; ++r) {
    RunStats before = runtime.stats();
    auto t0 = std::chrono::steady_clock::now();
    if (std::string err = runtime.run(spec, args, tgt, config); !err.empty())
      return fail(err);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                             t0)
                   .count();
    const RunStats &after = runtime.stats();
    if (timeRuns)
      fmt::print("run {}: {:.3f} ms{}, kernel from {}\n", r + 1, s * 1e3,
                 flops > 0 ? fmt::format(" ({:.1f} GFLOP/s)", flops / s / 1e9)
                           : std::string(),
                 after.compiles > before.compiles ? "a JIT compile"
                 : after.bundleHits > before.bundleHits
                     ? "the tuned kernel bundle"
                 : after.diskHits > before.diskHits ? "the disk cache"
                                                    : "the memory cache");
  }

  // Set when --check fails; reported after the outputs are written, so that
  // they can be inspected.
  std::string checkFailure;
  if (check) {
    std::vector<float> qf(q.values.size()), kf(k.values.size()),
        vf(v.values.size());
    for (size_t i = 0; i < qf.size(); ++i)
      qf[i] = qb.get(i);
    for (size_t i = 0; i < kf.size(); ++i)
      kf[i] = kb.get(i);
    for (size_t i = 0; i < vf.size(); ++i)
      vf[i] = vb.get(i);
    reference::Inputs in;
    in.q = qf.data();
    in.k = kf.data();
    in.v = vf.data();
    in.slopes = slopes.empty() ? nullptr : slopes.data();
    in.slopesPerBatch = slopesNpy.shape.size() == 2;
    in.keyPaddingMask = kpm.empty() ? nullptr : kpm.data();
    in.cuSeqlensQ = cuQ.empty() ? nullptr : cuQ.data();
    in.cuSeqlensK = cuK.empty() ? nullptr : cuK.data();
    Extents ext;
    if (spec.varlen) {
      ext = {int64_t(cuQ.size()) - 1, q.shape[0], k.shape[0]};
    } else {
      ext = {q.shape[0], q.shape[2], k.shape[2]};
    }
    reference::Outputs want = reference::attention(spec, ext, in);
    // NaN compares false with everything, so non-finite outputs are counted
    // apart instead of vanishing from the maximum.
    double err = 0;
    int64_t nonFinite = 0;
    for (size_t i = 0; i < want.o.size(); ++i) {
      const double x = ob.get(i);
      if (!std::isfinite(x))
        ++nonFinite;
      else
        err = std::max(err, std::abs(x - want.o[i]));
    }
    double naiveErr = 0;
    const std::vector<double> naive = reference::naiveSameDtype(spec, ext, in);
    for (size_t i = 0; i < naive.size(); ++i)
      naiveErr = std::max(naiveErr, std::abs(naive[i] - want.o[i]));
    const double bound = reference::errorBound(spec.dtype, naiveErr);
    const bool pass = nonFinite == 0 && err <= bound;
    fmt::print("max abs error vs float64 reference: {} (naive {}: {:.3e}, "
               "bound {:.3e}) {}\n",
               nonFinite ? std::string("nan") : fmt::format("{:.3e}", err),
               toString(spec.dtype), naiveErr, bound, pass ? "PASS" : "FAIL");
    if (nonFinite)
      checkFailure = fmt::format("--check: {} of {} outputs are NaN or inf",
                                 nonFinite, want.o.size());
    else if (!pass)
      checkFailure = fmt::format(
          "--check: max abs error {:.3e} exceeds ALIBI.md's bound {:.3e} ({})",
          err, bound,
          spec.dtype == DType::F32 ? "1e-4 for f32"
                                   : "2 x naive same-dtype error + 1e-6");
  }

  std::vector<float> out(ob.size());
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = ob.get(i);
  if (!output.empty())
    if (std::string err = writeNpyF32(output, q.shape, out); !err.empty())
      return fail(err);
  if (!lseOutput.empty())
    if (std::string err = writeNpyF32(lseOutput, lseShape, lse); !err.empty())
      return fail(err);
  if (stats) {
    std::fflush(stdout); // the JSON line stays the last line of the output
    const RunStats &s = runtime.stats();
    fmt::print(stderr,
               "{{\"compiles\": {}, \"bundle_hits\": {}, \"disk_hits\": {}, "
               "\"memory_hits\": {}, \"seconds\": {:.6f}, \"bundle\": "
               "\"{}\"}}\n",
               s.compiles, s.bundleHits, s.diskHits, s.memoryHits, s.seconds,
               jsonEscape(runtime.bundleStatus()));
  }
  return checkFailure.empty() ? 0 : fail(checkFailure);
}
