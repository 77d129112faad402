//===- tilt-bundle.cpp - Tuning database -> ahead-of-time kernel bundle ---===//
//
//   tilt-bundle --kernels-dir kernels --out build/kernels [--jobs N]
//   tilt-bundle --target cuda --arch sm_80|sm_90a --cases FILE --out DIR
//               [--jobs N]
//
// Picks kernels/cpu-<class>.tune for this CPU's tuning class, compiles the
// tuned kernel of every record (spec family of the database: ALiBi with
// standard slopes, kv_heads = heads) and writes the bundle of KernelBundle.h:
// the shared objects, an index and a copy of the database. Without a
// database for this class the bundle is empty, and the runtime compiles on
// demand as usual.
//
// --target cuda needs no GPU: it compiles the CUDA artifact of every case of
// FILE, one tilt-run command line each (spec flags, optionally --variant and
// --block-m/--block-n; '#' starts a comment), for the GPU architecture
// --arch, into a CUDA-only bundle for GPU machines without a compiler. Of
// tilt-run's other flags, --cu-seqlens-q/-k mark a ragged batch (as does
// --varlen); input files and sizes (--batch, --seq, --seq-k, --seed) are
// ignored. A case without --variant gets the one the runtime picks by
// default on that architecture, so that default runs find it; while the
// compiler does not implement that variant (gpu_sm90a), the entry holds a
// gpu_sm80 kernel compiled for --arch instead.
//
//===----------------------------------------------------------------------===//

#include "Args.h"

#include "tilt/Compiler/Compiler.h"
#include "tilt/Cuda.h"
#include "tilt/KernelBundle.h"
#include "tilt/TuningDb.h"

#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

using namespace tilt;
using namespace tilt::tools;
namespace fs = std::filesystem;

static int fail(const std::string &msg) {
  fmt::print(stderr, "tilt-bundle: error: {}\n", msg);
  return 1;
}

/// Writes `outDir`/index atomically: a bundle is either complete or absent.
static std::string installIndex(const std::string &outDir,
                                const std::string &index) {
  std::string tmp = outDir + "/index.tmp";
  {
    std::ofstream os(tmp);
    os << index;
    if (!os)
      return "cannot write " + tmp;
  }
  std::error_code ec;
  fs::rename(tmp, outDir + "/index", ec);
  if (ec)
    return fmt::format("cannot install the index: {}", ec.message());
  return {};
}

/// One case of a --cases file.
struct CudaCase {
  AttentionSpec spec;
  TileConfig config;
};

/// Parses one line of a --cases file for GPU architecture `arch`.
static std::string parseCudaCase(const std::string &line,
                                 const std::string &arch, CudaCase &out) {
  SpecFlags flags;
  TileConfig config;
  bool varlen = false;
  std::vector<Option> options;
  addSpecOptions(options, flags);
  addTileConfigOptions(options, config);
  options.push_back(boolOption("varlen", "ragged batch", varlen));
  // The rest of a tilt-run command line: only a ragged batch changes the spec.
  for (const char *name : {"cu-seqlens-q", "cu-seqlens-k"})
    options.push_back({name, "FILE.npy", "ragged batch", [&](auto) {
                         varlen = true;
                         return std::string();
                       }});
  for (const char *name : {"batch", "seq", "seq-k", "seed"})
    options.push_back(
        {name, "N", "ignored", [](auto) { return std::string(); }});
  std::vector<std::string> words{"tilt-bundle"};
  std::istringstream in(line);
  for (std::string w; in >> w;)
    words.push_back(w);
  std::vector<char *> argv;
  for (std::string &w : words)
    argv.push_back(w.data());
  std::vector<std::string> positional;
  if (std::string err =
          parseArgs(int(argv.size()), argv.data(), options, positional);
      !err.empty())
    return err;
  // tilt-run's input files q.npy k.npy v.npy.
  if (positional.size() > 3)
    return fmt::format("unexpected argument '{}'", positional[3]);
  flags.spec.varlen = varlen;
  if (std::string err = finishSpecFlags(flags); !err.empty())
    return err;
  if (std::string err = finishTileConfig(config); !err.empty())
    return err;
  const AttentionSpec &spec = flags.spec;
  if (spec.dtype == DType::F32)
    return "dtype f32: the cuda target supports f16 and bf16";
  if (config.isDefault()) {
    // As the runtime picks on a device of this architecture.
    cuda::DeviceInfo device;
    device.ccMajor = arch == "sm_90a" ? 9 : 8;
    if (std::string err = cuda::defaultVariant(spec, device, config.variant);
        !err.empty())
      return err;
  } else if (config.variant.rfind("gpu_", 0) != 0) {
    return fmt::format("--variant {} is not a GPU variant", config.variant);
  } else if (config.variant == "gpu_sm90a" && arch != "sm_90a") {
    return "--variant gpu_sm90a needs --arch sm_90a";
  }
  out = {spec, config};
  return {};
}

/// Builds kernels 0..n-1 on `jobs` threads, each with its own Compiler (MLIR
/// contexts are not shared): `build(i, compiler, line)` compiles kernel i,
/// writes its file and sets its index line. "" or the first error.
static std::string
compileAll(size_t n, int64_t jobs, const CompilerOptions &options,
           const std::function<std::string(size_t, Compiler &, std::string &)>
               &build,
           std::vector<std::string> &lines) {
  lines.assign(n, std::string());
  std::atomic<size_t> next{0};
  std::mutex errorMutex;
  std::string firstError;
  auto worker = [&] {
    Compiler compiler(options);
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      if (std::string err = build(i, compiler, lines[i]); !err.empty()) {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (firstError.empty())
          firstError = err;
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < jobs && size_t(t) < n; ++t)
    pool.emplace_back(worker);
  worker();
  for (std::thread &t : pool)
    t.join();
  return firstError;
}

/// Writes one kernel file of the bundle; "" or an error.
static std::string writeKernel(const std::string &outDir,
                               const std::string &file,
                               const std::string &bytes) {
  std::ofstream os(outDir + "/" + file, std::ios::binary);
  os << bytes;
  return os ? std::string() : "cannot write " + file;
}

static int bundleCuda(const std::string &arch, const std::string &casesFile,
                      const std::string &outDir, int64_t jobs) {
  std::ifstream in(casesFile);
  if (!in)
    return fail(fmt::format("--cases {}: cannot open it", casesFile));
  std::vector<CudaCase> cases;
  std::set<std::string> seen;
  int lineNo = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineNo;
    line = line.substr(0, line.find('#'));
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    CudaCase c;
    if (std::string err = parseCudaCase(line, arch, c); !err.empty())
      return fail(fmt::format("{}:{}: {}", casesFile, lineNo, err));
    if (seen.insert(c.spec.canonical() + "\t" + c.config.str()).second)
      cases.push_back(std::move(c));
  }

  // Every kernel's cubin for --arch, whatever its variant: the bundle's
  // `cuda` line promises that architecture.
  CompilerOptions options;
  options.cudaArch = arch;
  std::vector<std::string> lines;
  auto build = [&](size_t i, Compiler &compiler, std::string &line) {
    const CudaCase &c = cases[i];
    std::string artifact;
    if (std::string err =
            compiler.compile(c.spec, c.config, Target::CUDA, artifact);
        !err.empty())
      return fmt::format("{}: compile: {}", c.spec.canonical(), err);
    std::string file =
        fmt::format("k{:04}-{}-d{}-h{}-{}.cuda", i, toString(c.spec.dtype),
                    c.spec.headDim, c.spec.heads, c.config.variant);
    line = fmt::format("{}\t{}\t{}\tcuda\n", file, c.spec.canonical(),
                       c.config.str());
    return writeKernel(outDir, file, artifact);
  };
  if (std::string err = compileAll(cases.size(), jobs, options, build, lines);
      !err.empty())
    return fail(err);

  std::string index = fmt::format("tilt-bundle {}\ncuda {}\ntilt {}\n",
                                  KernelBundle::kFormat, arch, TILT_VERSION);
  for (const std::string &l : lines)
    index += l;
  if (std::string err = installIndex(outDir, index); !err.empty())
    return fail(err);
  fmt::print("tilt-bundle: {} cuda kernels for {} in {}\n", cases.size(),
             arch, outDir);
  return 0;
}

int main(int argc, char **argv) {
  std::string kernelsDir, outDir, target = "cpu", arch, casesFile;
  int64_t jobs = std::max(1u, std::thread::hardware_concurrency());
  std::vector<Option> options;
  options.push_back(targetOption(
      "what to bundle (default cpu: this CPU's tuned kernels)", target));
  options.push_back(archOption("cuda: the GPU architecture", arch));
  options.push_back(stringOption("cases", "FILE",
                                 "cuda: the specs to compile, one line of "
                                 "tilt-run flags each",
                                 casesFile));
  options.push_back({"kernels-dir", "DIR", "where the tuning databases are",
                     [&](std::string_view v) {
                       kernelsDir = v;
                       return std::string();
                     }});
  options.push_back({"out", "DIR", "the bundle directory to write",
                     [&](std::string_view v) {
                       outDir = v;
                       return std::string();
                     }});
  options.push_back({"jobs", "N", "parallel compiles (default: all cores)",
                     [&](auto v) { return parseInt("jobs", v, jobs, 1); }});
  std::vector<std::string> positional;
  if (std::string err = parseArgs(argc, argv, options, positional);
      !err.empty())
    return fail(err);
  const bool cuda = target == "cuda";
  if (outDir.empty() || !positional.empty() ||
      (cuda ? arch.empty() || casesFile.empty() || !kernelsDir.empty()
            : kernelsDir.empty() || !arch.empty() || !casesFile.empty()))
    return fail("usage: tilt-bundle --kernels-dir DIR --out DIR [--jobs N], "
                "or tilt-bundle --target cuda --arch sm_80|sm_90a --cases "
                "FILE --out DIR [--jobs N]");

  std::error_code ec;
  fs::create_directories(outDir, ec);
  if (ec)
    return fail(fmt::format("--out {}: {}", outDir, ec.message()));
  if (cuda)
    return bundleCuda(arch, casesFile, outDir, jobs);
  std::string cls = hostTuningClass();
  std::string dbPath = fmt::format("{}/cpu-{}.tune", kernelsDir, cls);
  TuningDb db;
  if (fs::exists(dbPath)) {
    if (std::string err = TuningDb::load(dbPath, db); !err.empty())
      return fail(err);
    fs::copy_file(dbPath, outDir + "/tuning.db",
                  fs::copy_options::overwrite_existing, ec);
    if (ec)
      return fail(fmt::format("cannot copy {}: {}", dbPath, ec.message()));
  } else {
    fs::remove(outDir + "/tuning.db", ec);
    fmt::print("tilt-bundle: no tuning database for this CPU class ({}); "
               "writing an empty bundle\n",
               dbPath);
  }

  // One kernel per distinct (spec, tuned config), compiled by `jobs` threads
  // (each its own Compiler: MLIR contexts are not shared).
  std::vector<TuningRecord> unique;
  {
    std::set<std::tuple<int64_t, int64_t, int, bool, std::string>> seen;
    for (const TuningRecord &r : db.records)
      if (seen.insert({r.key.heads, r.key.headDim, int(r.key.dtype),
                       r.key.causal, r.best.str()})
              .second)
        unique.push_back(r);
  }
  std::vector<std::string> lines;
  auto build = [&](size_t i, Compiler &compiler, std::string &line) {
    const TuningRecord &r = unique[i];
    AttentionSpec spec;
    spec.heads = spec.kvHeads = r.key.heads;
    spec.headDim = r.key.headDim;
    spec.dtype = r.key.dtype;
    spec.causal = r.key.causal;
    spec.bias = BiasKind::Alibi;
    std::string so;
    if (std::string err = compiler.compile(spec, r.best, Target::CPU, so);
        !err.empty())
      return err;
    std::string file = fmt::format("k{:04}-{}-d{}-h{}-{}.so", i,
                                   toString(spec.dtype), spec.headDim,
                                   spec.heads, spec.causal ? "causal" : "full");
    line = fmt::format("{}\t{}\t{}\n", file, spec.canonical(), r.best.str());
    return writeKernel(outDir, file, so);
  };
  if (std::string err =
          compileAll(unique.size(), jobs, CompilerOptions(), build, lines);
      !err.empty())
    return fail(err);

  // The index goes last and atomically: a bundle is either complete or
  // absent.
  std::string index = fmt::format("tilt-bundle {}\ncpu {}\ntilt {}\n",
                                  KernelBundle::kFormat, hostCpuDigest(),
                                  TILT_VERSION);
  for (const std::string &l : lines)
    index += l;
  if (std::string err = installIndex(outDir, index); !err.empty())
    return fail(err);
  fmt::print("tilt-bundle: {} kernels for the {} records of {} in {}\n",
             unique.size(), db.records.size(), cls, outDir);
  return 0;
}
