//===- tilt-run.cpp - Run one attention through the runtime ---------------===//
//
//   tilt-run [spec flags] q.npy k.npy v.npy -o out.npy [--lse lse.npy]
//            [--cu-seqlens-q F --cu-seqlens-k F] [--q-offset N --k-offset N]
//   tilt-run [spec flags] q.npy k_cache.npy v_cache.npy --block-table F
//            --context-lens F -o out.npy [--lse lse.npy]
//            [--threads N] [--stats]
//            [--grad-out do.npy --dq dq.npy --dk dk.npy --dv dv.npy
//             [--trainable-slopes --dslopes ds.npy]]
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
// --grad-out runs the backward after the forward (on the same target): the
// gradients of q, k and v for the upstream gradient dO, and with
// --trainable-slopes those of the custom slopes (float32, shaped like them);
// --check then also checks every gradient under ALIBI.md's gradient rule.
// --block-table and --context-lens read k and v as a paged KV cache
// [num_pages, page_size, Hkv, D] (ALIBI.md): page_size is k's dim 1, the
// block table int32-valued [B, max_pages], the context lengths [B].
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

/// Everything the command line sets.
struct RunOptions {
  SpecFlags flags;
  TileConfig config;
  std::string output, lseOutput, cuQFile, cuKFile,
      target = "cpu", cacheDir, kernelsDir, blockTableFile, contextLensFile;
  bool paged() const { return !blockTableFile.empty(); }
  std::string gradOut, dqOutput, dkOutput, dvOutput, dslopesOutput;
  bool trainableSlopes = false;
  bool backward() const { return !gradOut.empty(); }
  int64_t threads = 0, repeat = 1, batch = 1, seq = 0, seqK = 0, seed = 0;
  int64_t qOffset = -1, kOffset = -1; ///< -1: not given
  int64_t pageSize = 0; ///< --page-size: 0, or what k's dim 1 must be
  bool stats = false, check = false, timeRuns = false;
  std::vector<std::string> files;
  bool random() const { return files.empty() && seq > 0; }
};

/// Parses and checks the command line; an exit code when the tool is done
/// (--help or an error).
std::optional<int> parseRunOptions(int argc, char **argv, RunOptions &o) {
  std::vector<Option> options;
  addSpecOptions(options, o.flags);
  addTileConfigOptions(options, o.config);
  addKernelsDirOption(options, o.kernelsDir);
  auto stringFlag = [&](const char *name, const char *value, const char *help,
                        std::string &dst) {
    options.push_back(stringOption(name, value, help, dst));
  };
  auto intFlag = [&](const char *name, const char *value, const char *help,
                     int64_t &dst, int64_t min) {
    options.push_back({name, value, help, [&dst, name, min](auto v) {
                         return parseInt(name, v, dst, min);
                       }});
  };
  auto boolFlag = [&](const char *name, const char *help, bool &dst) {
    options.push_back({name, "", help, [&dst](auto) {
                         dst = true;
                         return std::string();
                       }});
  };
  stringFlag("o", "FILE.npy", "output, float32 like q (required)", o.output);
  stringFlag("lse", "FILE.npy", "also write the log-sum-exp, float32",
             o.lseOutput);
  stringFlag("cu-seqlens-q", "FILE.npy",
             "ragged batch: query offsets [B+1] (q packed [total,H,D])",
             o.cuQFile);
  stringFlag("cu-seqlens-k", "FILE.npy", "ragged batch: key offsets [B+1]",
             o.cuKFile);
  stringFlag("block-table", "FILE.npy",
             "paged KV cache: page indices [B, max_pages] (k and v are "
             "[num_pages, page_size, Hkv, D]; with --context-lens)",
             o.blockTableFile);
  stringFlag("context-lens", "FILE.npy",
             "paged KV cache: keys of each sequence [B]", o.contextLensFile);
  intFlag("page-size", "N",
          "paged KV cache: its page size (optional: k's dim 1, which it must "
          "equal; tilt-bundle --cases reads it)",
          o.pageSize, 1);
  intFlag("q-offset", "N",
          "context parallelism: absolute position of query row 0 (with "
          "--k-offset; replaces the bottom-right rule)",
          o.qOffset, 0);
  intFlag("k-offset", "N",
          "context parallelism: absolute position of key 0 (with --q-offset)",
          o.kOffset, 0);
  stringFlag("grad-out", "FILE.npy",
             "backward: the upstream gradient dO, float32 like o", o.gradOut);
  stringFlag("dq", "FILE.npy", "backward: write dq, float32 like q",
             o.dqOutput);
  stringFlag("dk", "FILE.npy", "backward: write dk, float32 like k",
             o.dkOutput);
  stringFlag("dv", "FILE.npy", "backward: write dv, float32 like v",
             o.dvOutput);
  boolFlag("trainable-slopes",
           "backward: also differentiate the custom slopes (--slopes)",
           o.trainableSlopes);
  stringFlag("dslopes", "FILE.npy",
             "with --trainable-slopes: write the slopes' gradient, float32 "
             "like them",
             o.dslopesOutput);
  stringFlag("cache-dir", "DIR", "kernel cache (default: $TILT_CACHE_DIR)",
             o.cacheDir);
  options.push_back(targetOption("where to run (default cpu)", o.target));
  intFlag("threads", "N", "CPU threads (default: all cores)", o.threads, 1);
  intFlag("repeat", "N", "run N times (later runs hit the cache)", o.repeat,
          1);
  intFlag("batch", "N", "random inputs: batch size (default 1)", o.batch, 1);
  intFlag("seq", "N", "random inputs of this query (and key) length", o.seq,
          1);
  intFlag("seq-k", "N", "random inputs: key length", o.seqK, 1);
  intFlag("seed", "N", "random inputs: seed (default 0)", o.seed, 0);
  boolFlag("check", "compare with the float64 reference", o.check);
  boolFlag("time",
           "print each run's time and GFLOP/s (cuda: the median kernel time "
           "and TFLOP/s)",
           o.timeRuns);
  boolFlag("stats", "print cache statistics as JSON on stderr", o.stats);
  if (std::optional<int> exit = parseCommandLine(
          argc, argv, options, "tilt-run",
          "tilt-run [spec flags] q.npy k.npy v.npy -o out.npy [options]",
          o.files))
    return exit;
  const bool random = o.random();
  if (!random && o.files.size() != 3)
    return fail(fmt::format("expected three inputs q.npy k.npy v.npy (or "
                            "--seq for random inputs), got {}",
                            o.files.size()));
  if (random && !o.files.empty())
    return fail("give either input files or --seq, not both");
  if (!random && o.output.empty())
    return fail("-o FILE.npy is required");
  if (o.cuQFile.empty() != o.cuKFile.empty())
    return fail("--cu-seqlens-q and --cu-seqlens-k go together");
  if (random && !o.cuQFile.empty())
    return fail("--cu-seqlens-q/-k need input files");
  o.flags.spec.varlen = !o.cuQFile.empty();
  if ((o.qOffset < 0) != (o.kOffset < 0))
    return fail("--q-offset and --k-offset go together");
  o.flags.spec.positionOffsets = o.qOffset >= 0;
  if (o.blockTableFile.empty() != o.contextLensFile.empty())
    return fail("--block-table and --context-lens go together");
  if (o.paged() && random)
    return fail("--block-table/--context-lens need input files (q.npy "
                "k_cache.npy v_cache.npy)");
  if (o.paged() && !o.gradOut.empty())
    return fail("--grad-out: the backward takes dense k and v, not a paged "
                "cache");
  const bool anyGrad =
      !o.dqOutput.empty() || !o.dkOutput.empty() || !o.dvOutput.empty();
  if (o.backward() &&
      (o.dqOutput.empty() || o.dkOutput.empty() || o.dvOutput.empty()))
    return fail("--grad-out needs --dq, --dk and --dv to write the "
                "gradients to");
  if (anyGrad && !o.backward())
    return fail("--dq, --dk and --dv need --grad-out FILE.npy (the upstream "
                "gradient)");
  if (o.backward() && random)
    return fail("--grad-out needs input files q.npy k.npy v.npy");
  if (o.trainableSlopes && !o.backward())
    return fail("--trainable-slopes needs --grad-out (it is a backward "
                "option)");
  if (o.trainableSlopes && o.flags.slopesFile.empty())
    return fail("--trainable-slopes needs --slopes FILE.npy (custom slopes "
                "to differentiate)");
  if (o.trainableSlopes != !o.dslopesOutput.empty())
    return fail("--trainable-slopes and --dslopes FILE.npy go together");
  if (std::string err = finishSpecFlags(o.flags); !err.empty())
    return fail(err);
  if (std::string err = finishTileConfig(o.config); !err.empty())
    return fail(err);
  return std::nullopt;
}

/// The tensors of one call: the float32 inputs as read, their copies in the
/// spec's dtype, the optional operands, and the arguments pointing at them.
struct Tensors {
  NpyArray q, k, v, slopesNpy, kpmNpy, cuQNpy, cuKNpy, tableNpy, lensNpy;
  TypedBuffer qb, kb, vb, ob;
  std::vector<float> lse, slopes;
  std::vector<int64_t> lseShape;
  std::vector<uint8_t> kpm;
  std::vector<int32_t> cuQ, cuK, blockTable, contextLens;
  AttentionArgs args;
  // --grad-out: the upstream gradient, the gradients, the slopes' gradient.
  NpyArray gradO;
  TypedBuffer dob, dqb, dkb, dvb;
  std::vector<float> dslopes;
  BackwardArgs grads;
};

std::string loadOffsets(const std::string &file, NpyArray &a,
                        std::vector<int32_t> &dst) {
  if (std::string err = readNpy(file, a); !err.empty())
    return err;
  for (double x : a.values) {
    if (x != static_cast<int32_t>(x))
      return fmt::format("{}: offsets must be integers, got {}", file, x);
    dst.push_back(static_cast<int32_t>(x));
  }
  return {};
}

/// q, k and v: read from the files, or seeded unit-normal of --seq sizes.
std::string loadQkv(const RunOptions &o, Tensors &t) {
  const AttentionSpec &spec = o.flags.spec;
  if (o.random()) {
    std::mt19937 rng(static_cast<uint32_t>(o.seed));
    std::normal_distribution<double> normal;
    auto make = [&](NpyArray &a, std::vector<int64_t> shape) {
      a.shape = std::move(shape);
      a.dtype = "<f4";
      a.values.resize(a.numElements());
      for (double &x : a.values)
        x = static_cast<float>(normal(rng));
    };
    int64_t sk = o.seqK ? o.seqK : o.seq;
    make(t.q, {o.batch, spec.heads, o.seq, spec.headDim});
    make(t.k, {o.batch, spec.kvHeads, sk, spec.headDim});
    make(t.v, {o.batch, spec.kvHeads, sk, spec.headDim});
  } else {
    for (auto [name, a, file] :
         {std::tuple{"q", &t.q, &o.files[0]}, std::tuple{"k", &t.k, &o.files[1]},
          std::tuple{"v", &t.v, &o.files[2]}})
      if (std::string err = loadFloat32(name, *file, *a); !err.empty())
        return err;
  }
  size_t rank = spec.varlen ? 3 : 4;
  for (auto [name, a] : {std::pair<const char *, NpyArray *>{"q", &t.q},
                         {"k", &t.k},
                         {"v", &t.v}})
    if (a->shape.size() != rank)
      return fmt::format("{}: expected rank {} ({}), got shape {}", name,
                         rank, spec.varlen ? "[total, H, D]" : "[B, H, S, D]",
                         a->shapeString());
  return {};
}

/// Everything else the call takes: the spec-dtype copies, lse, slopes, the
/// key padding mask and the cu_seqlens; fills `t.args`.
std::string loadOperands(const RunOptions &o, Tensors &t) {
  const AttentionSpec &spec = o.flags.spec;
  auto toDtype = [&](const NpyArray &a) {
    TypedBuffer buf(spec.dtype, a.values.size());
    for (size_t i = 0; i < a.values.size(); ++i)
      buf.set(i, static_cast<float>(a.values[i]));
    return buf;
  };
  t.qb = toDtype(t.q);
  t.kb = toDtype(t.k);
  t.vb = toDtype(t.v);
  t.ob = TypedBuffer(spec.dtype, t.q.values.size());
  AttentionArgs &args = t.args;
  args.q = tensorRef(t.qb.data(), t.q.shape);
  args.k = tensorRef(t.kb.data(), t.k.shape);
  args.v = tensorRef(t.vb.data(), t.v.shape);
  args.o = tensorRef(t.ob.data(), t.q.shape);

  t.lseShape = spec.varlen
                   ? std::vector<int64_t>{spec.heads, t.q.shape[0]}
                   : std::vector<int64_t>{t.q.shape[0], spec.heads,
                                          t.q.shape[2]};
  if (!o.lseOutput.empty() || o.backward()) {
    t.lse.assign(t.lseShape[0] * t.lseShape[1] *
                     (spec.varlen ? 1 : t.lseShape[2]),
                 0.0f);
    args.lse = tensorRef(t.lse.data(), t.lseShape);
  }
  if (!o.flags.slopesFile.empty()) {
    if (std::string err = loadFloat32("slopes", o.flags.slopesFile,
                                      t.slopesNpy);
        !err.empty())
      return err;
    t.slopes.assign(t.slopesNpy.values.begin(), t.slopesNpy.values.end());
    args.slopes = tensorRef(t.slopes.data(), t.slopesNpy.shape);
  }
  if (!o.flags.keyPaddingMaskFile.empty()) {
    if (std::string err = readNpy(o.flags.keyPaddingMaskFile, t.kpmNpy);
        !err.empty())
      return err;
    for (double x : t.kpmNpy.values) {
      if (x != 0.0 && x != 1.0)
        return fmt::format("--key-padding-mask: values must be 0 or 1, "
                           "got {}",
                           x);
      t.kpm.push_back(x != 0.0);
    }
    args.keyPaddingMask = tensorRef(t.kpm.data(), t.kpmNpy.shape);
  }
  if (spec.varlen) {
    if (std::string err = loadOffsets(o.cuQFile, t.cuQNpy, t.cuQ);
        !err.empty())
      return err;
    if (std::string err = loadOffsets(o.cuKFile, t.cuKNpy, t.cuK);
        !err.empty())
      return err;
    args.cuSeqlensQ = tensorRef(t.cuQ.data(), t.cuQNpy.shape);
    args.cuSeqlensK = tensorRef(t.cuK.data(), t.cuKNpy.shape);
  }
  if (o.paged()) {
    if (std::string err =
            loadOffsets(o.blockTableFile, t.tableNpy, t.blockTable);
        !err.empty())
      return err;
    if (std::string err =
            loadOffsets(o.contextLensFile, t.lensNpy, t.contextLens);
        !err.empty())
      return err;
    args.blockTable = tensorRef(t.blockTable.data(), t.tableNpy.shape);
    args.contextLens = tensorRef(t.contextLens.data(), t.lensNpy.shape);
  }
  if (spec.positionOffsets) {
    args.qOffset = o.qOffset;
    args.kOffset = o.kOffset;
  }
  if (o.backward()) {
    if (std::string err = loadFloat32("grad_o", o.gradOut, t.gradO);
        !err.empty())
      return err;
    if (t.gradO.shape != t.q.shape)
      return fmt::format("grad_o ({}): expected the shape of o {}, got {}",
                         o.gradOut, t.q.shapeString(), t.gradO.shapeString());
    t.dob = toDtype(t.gradO);
    t.dqb = TypedBuffer(spec.dtype, t.qb.size());
    t.dkb = TypedBuffer(spec.dtype, t.kb.size());
    t.dvb = TypedBuffer(spec.dtype, t.vb.size());
    t.grads.gradO = tensorRef(t.dob.data(), t.q.shape);
    t.grads.dq = tensorRef(t.dqb.data(), t.q.shape);
    t.grads.dk = tensorRef(t.dkb.data(), t.k.shape);
    t.grads.dv = tensorRef(t.dvb.data(), t.v.shape);
    if (o.trainableSlopes) {
      t.dslopes.assign(t.slopes.size(), 0.0f);
      t.grads.dslopes = tensorRef(t.dslopes.data(), t.slopesNpy.shape);
    }
  }
  return {};
}

/// Points `args` at device copies of its tensors (outputs zeroed).
std::string toDevice(AttentionArgs &args, DType dtype,
                     std::vector<cuda::DeviceBuffer> &buffers) {
  auto one = [&](TensorRef &t, size_t elementBytes, bool copy) {
    if (!t.present())
      return std::string();
    cuda::DeviceBuffer &buf = buffers.emplace_back();
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
  const size_t e = size_t(byteWidth(dtype));
  for (auto [t, bytes, copy] :
       {std::tuple{&args.q, e, true}, std::tuple{&args.k, e, true},
        std::tuple{&args.v, e, true}, std::tuple{&args.o, e, false},
        std::tuple{&args.lse, sizeof(float), false},
        std::tuple{&args.slopes, sizeof(float), true},
        std::tuple{&args.keyPaddingMask, sizeof(uint8_t), true},
        std::tuple{&args.cuSeqlensQ, sizeof(int32_t), true},
        std::tuple{&args.cuSeqlensK, sizeof(int32_t), true},
        std::tuple{&args.blockTable, sizeof(int32_t), true},
        std::tuple{&args.contextLens, sizeof(int32_t), true}})
    if (std::string err = one(*t, bytes, copy); !err.empty())
      return err;
  return {};
}

/// Useful work: 4 * B * H * Sq * Sk * D, half of it when causal (0 for
/// ragged batches).
double usefulFlops(const AttentionSpec &spec, const Tensors &t) {
  if (spec.varlen || spec.pageSize)
    return 0;
  return 4.0 * double(t.q.numElements()) *
         double(t.k.shape[t.k.shape.size() - 2]) * (spec.causal ? 0.5 : 1.0);
}

/// CUDA: copies in, one untimed run (load or compile), --time's event-timed
/// runs, o and lse copied back.
std::string runCuda(const RunOptions &o, Runtime &runtime, Tensors &t) {
  const AttentionSpec &spec = o.flags.spec;
  AttentionArgs args = t.args;
  std::vector<cuda::DeviceBuffer> buffers;
  if (std::string err = toDevice(args, spec.dtype, buffers); !err.empty())
    return err;
  if (std::string err = runtime.run(spec, args, Target::CUDA, o.config);
      !err.empty())
    return err;
  if (std::string err = cuda::synchronize(); !err.empty())
    return err;
  if (o.timeRuns) {
    std::vector<double> ms;
    if (std::string err = cuda::timeKernel(
            [&] { return runtime.run(spec, args, Target::CUDA, o.config); },
            int(o.repeat), ms);
        !err.empty())
      return err;
    std::sort(ms.begin(), ms.end());
    const double med = ms.size() % 2 ? ms[ms.size() / 2]
                                     : 0.5 * (ms[ms.size() / 2 - 1] +
                                              ms[ms.size() / 2]);
    const double flops = usefulFlops(spec, t);
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
  const size_t e = size_t(byteWidth(spec.dtype));
  if (std::string err = back(args.o, t.args.o, e); !err.empty())
    return err;
  if (std::string err = back(args.lse, t.args.lse, sizeof(float));
      !err.empty() || !o.backward())
    return err;
  // --grad-out: the backward on the device from the forward's o and lse
  // there (gpu_bwd_sm80), the gradients copied back.
  BackwardArgs grads = t.grads;
  for (auto [ref, bytes, copy] :
       {std::tuple{&grads.gradO, e, true}, std::tuple{&grads.dq, e, false},
        std::tuple{&grads.dk, e, false}, std::tuple{&grads.dv, e, false},
        std::tuple{&grads.dslopes, sizeof(float), false}}) {
    if (!ref->present())
      continue;
    cuda::DeviceBuffer &buf = buffers.emplace_back();
    const size_t n = size_t(ref->numElements()) * bytes;
    if (std::string err = buf.allocate(std::max<size_t>(n, 1)); !err.empty())
      return err;
    if (std::string err = copy ? buf.upload(ref->data, n) : buf.fill(0);
        !err.empty())
      return err;
    ref->data = buf.data();
  }
  if (std::string err = runtime.backward(spec, args, grads, Target::CUDA);
      !err.empty())
    return err;
  if (std::string err = cuda::synchronize(); !err.empty())
    return err;
  for (auto [device, host, bytes] :
       {std::tuple{&grads.dq, &t.grads.dq, e},
        std::tuple{&grads.dk, &t.grads.dk, e},
        std::tuple{&grads.dv, &t.grads.dv, e},
        std::tuple{&grads.dslopes, &t.grads.dslopes, sizeof(float)}})
    if (std::string err = back(*device, *host, bytes); !err.empty())
      return err;
  return {};
}

/// CPU: --repeat runs, each timed and named by where its kernel came from
/// with --time.
std::string runCpu(const RunOptions &o, Runtime &runtime, Tensors &t) {
  const AttentionSpec &spec = o.flags.spec;
  const double flops = usefulFlops(spec, t);
  if (o.timeRuns)
    fmt::print("kernel bundle: {}\n", runtime.bundleStatus());
  for (int64_t r = 0; r < o.repeat; ++r) {
    RunStats before = runtime.stats();
    auto t0 = std::chrono::steady_clock::now();
    if (std::string err = runtime.run(spec, t.args, Target::CPU, o.config);
        !err.empty())
      return err;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                             t0)
                   .count();
    const RunStats &after = runtime.stats();
    if (o.timeRuns)
      fmt::print("run {}: {:.3f} ms{}, kernel from {}\n", r + 1, s * 1e3,
                 flops > 0 ? fmt::format(" ({:.1f} GFLOP/s)", flops / s / 1e9)
                           : std::string(),
                 after.compiles > before.compiles ? "a JIT compile"
                 : after.bundleHits > before.bundleHits
                     ? "the tuned kernel bundle"
                 : after.diskHits > before.diskHits ? "the disk cache"
                                                    : "the memory cache");
  }
  return {};
}

std::vector<float> widen(const TypedBuffer &b) {
  std::vector<float> f(b.size());
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = b.get(i);
  return f;
}

/// --check of the backward: each gradient against the float64 reference
/// under ALIBI.md's gradient rule; "" or the first failure.
std::string checkGradients(const AttentionSpec &spec, const Tensors &t,
                           const reference::Inputs &in, const Extents &ext) {
  std::vector<float> dO = widen(t.dob);
  const reference::Gradients want =
      reference::attentionBackward(spec, ext, in, dO.data());
  const reference::Gradients naive =
      reference::naiveBackwardSameDtype(spec, ext, in, dO.data());
  std::string failure;
  auto one = [&](const char *name, const std::vector<float> &got,
                 const std::vector<double> &ref,
                 const std::vector<double> &naiveGot) {
    double err = 0, naiveErr = 0, maxRef = 0;
    int64_t nonFinite = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (!std::isfinite(got[i]))
        ++nonFinite;
      else
        err = std::max(err, std::abs(got[i] - ref[i]));
      naiveErr = std::max(naiveErr, std::abs(naiveGot[i] - ref[i]));
      maxRef = std::max(maxRef, std::abs(ref[i]));
    }
    const double bound =
        reference::gradientErrorBound(spec.dtype, naiveErr, maxRef);
    const bool pass = nonFinite == 0 && err <= bound;
    fmt::print("{} max abs error vs float64 reference: {} (naive {}: {:.3e}, "
               "bound {:.3e}) {}\n",
               name,
               nonFinite ? std::string("nan") : fmt::format("{:.3e}", err),
               toString(spec.dtype), naiveErr, bound, pass ? "PASS" : "FAIL");
    if (!pass && failure.empty())
      failure = nonFinite ? fmt::format("--check: {} of {} values of {} are "
                                        "NaN or inf",
                                        nonFinite, ref.size(), name)
                          : fmt::format("--check: {} max abs error {:.3e} "
                                        "exceeds ALIBI.md's gradient bound "
                                        "{:.3e}",
                                        name, err, bound);
  };
  one("dq", widen(t.dqb), want.dq, naive.dq);
  one("dk", widen(t.dkb), want.dk, naive.dk);
  one("dv", widen(t.dvb), want.dv, naive.dv);
  if (!t.dslopes.empty())
    one("dslopes", t.dslopes, want.dslopes, naive.dslopes);
  return failure;
}

/// --check: prints the comparison with the float64 reference; returns the
/// failure ("" on a pass), reported after the outputs are written so that
/// they can be inspected.
std::string checkOutput(const AttentionSpec &spec, const Tensors &t) {
  std::vector<float> qf = widen(t.qb), kf = widen(t.kb), vf = widen(t.vb);
  reference::Inputs in;
  in.q = qf.data();
  in.k = kf.data();
  in.v = vf.data();
  in.slopes = t.slopes.empty() ? nullptr : t.slopes.data();
  in.slopesPerBatch = t.slopesNpy.shape.size() == 2;
  in.keyPaddingMask = t.kpm.empty() ? nullptr : t.kpm.data();
  in.cuSeqlensQ = t.cuQ.empty() ? nullptr : t.cuQ.data();
  in.cuSeqlensK = t.cuK.empty() ? nullptr : t.cuK.data();
  in.qOffset = t.args.qOffset;
  in.kOffset = t.args.kOffset;
  if (spec.pageSize) {
    in.blockTable = t.blockTable.data();
    in.maxPages = t.tableNpy.shape.size() == 2 ? t.tableNpy.shape[1] : 0;
    in.contextLens = t.contextLens.data();
  }
  const Extents ext = spec.varlen ? Extents{int64_t(t.cuQ.size()) - 1,
                                            t.q.shape[0], t.k.shape[0]}
                                  : Extents{t.q.shape[0], t.q.shape[2],
                                            spec.pageSize ? 0 : t.k.shape[2]};
  reference::Outputs want = reference::attention(spec, ext, in);
  // NaN compares false with everything, so non-finite outputs are counted
  // apart instead of vanishing from the maximum.
  double err = 0;
  int64_t nonFinite = 0;
  for (size_t i = 0; i < want.o.size(); ++i) {
    const double x = t.ob.get(i);
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
    return fmt::format("--check: {} of {} outputs are NaN or inf", nonFinite,
                       want.o.size());
  if (!pass)
    return fmt::format(
        "--check: max abs error {:.3e} exceeds ALIBI.md's bound {:.3e} ({})",
        err, bound,
        spec.dtype == DType::F32 ? "1e-4 for f32"
                                 : "2 x naive same-dtype error + 1e-6");
  if (t.grads.dq.present())
    return checkGradients(spec, t, in, ext);
  return {};
}

std::string writeOutputs(const RunOptions &o, const Tensors &t) {
  const std::vector<float> out = widen(t.ob);
  if (!o.output.empty())
    if (std::string err = writeNpyF32(o.output, t.q.shape, out); !err.empty())
      return err;
  if (!o.lseOutput.empty())
    if (std::string err = writeNpyF32(o.lseOutput, t.lseShape, t.lse);
        !err.empty())
      return err;
  for (auto [file, buf, shape] : {std::tuple{&o.dqOutput, &t.dqb, &t.q.shape},
                                  std::tuple{&o.dkOutput, &t.dkb, &t.k.shape},
                                  std::tuple{&o.dvOutput, &t.dvb, &t.v.shape}})
    if (!file->empty())
      if (std::string err = writeNpyF32(*file, *shape, widen(*buf));
          !err.empty())
        return err;
  if (!o.dslopesOutput.empty())
    return writeNpyF32(o.dslopesOutput, t.slopesNpy.shape, t.dslopes);
  return {};
}

/// --stats: the cache statistics as one JSON line on stderr, after stdout.
void printStats(const Runtime &runtime) {
  std::fflush(stdout);
  const RunStats &s = runtime.stats();
  fmt::print(stderr,
             "{{\"compiles\": {}, \"bundle_hits\": {}, \"disk_hits\": {}, "
             "\"memory_hits\": {}, \"seconds\": {:.6f}, \"bundle\": "
             "\"{}\"}}\n",
             s.compiles, s.bundleHits, s.diskHits, s.memoryHits, s.seconds,
             jsonEscape(runtime.bundleStatus()));
}

} // namespace

int main(int argc, char **argv) {
  RunOptions o;
  if (std::optional<int> exit = parseRunOptions(argc, argv, o))
    return *exit;
  const Target target = o.target == "cuda" ? Target::CUDA : Target::CPU;
  cuda::DeviceInfo device;
  if (target == Target::CUDA)
    if (std::string err = cuda::probe(device); !err.empty())
      return fail(err);
  Tensors t;
  if (std::string err = loadQkv(o, t); !err.empty())
    return fail(err);
  if (o.pageSize && !o.paged())
    return fail("--page-size: needs --block-table and --context-lens");
  if (o.paged()) {
    // The cache's page size is k's dim 1 ([num_pages, page_size, Hkv, D]).
    if (o.pageSize && o.pageSize != t.k.shape[1])
      return fail(fmt::format("--page-size {}: k ({}) has pages of {} tokens "
                              "(its dim 1)",
                              o.pageSize, t.k.shapeString(), t.k.shape[1]));
    o.flags.spec.pageSize = t.k.shape[1];
    if (std::string err = o.flags.spec.validate(); !err.empty())
      return fail(fmt::format("k ({}, a paged cache {}): {}", o.files[1],
                              t.k.shapeString(), err));
  }
  if (std::string err = loadOperands(o, t); !err.empty())
    return fail(err);

  std::unique_ptr<KernelCompiler> compiler = makeToolCompiler(device);
  RuntimeOptions rtOptions;
  rtOptions.cacheDir = o.cacheDir;
  rtOptions.threads = static_cast<int>(o.threads);
  rtOptions.compiler = compiler.get();
  rtOptions.kernelsDir = o.kernelsDir;
  Runtime runtime(rtOptions);
  if (std::string err = target == Target::CUDA ? runCuda(o, runtime, t)
                                               : runCpu(o, runtime, t);
      !err.empty())
    return fail(err);
  if (o.backward() && target == Target::CPU)
    if (std::string err = runtime.backward(o.flags.spec, t.args, t.grads);
        !err.empty())
      return fail(err);

  const std::string checkFailure =
      o.check ? checkOutput(o.flags.spec, t) : std::string();
  if (std::string err = writeOutputs(o, t); !err.empty())
    return fail(err);
  if (o.stats)
    printStats(runtime);
  return checkFailure.empty() ? 0 : fail(checkFailure);
}
