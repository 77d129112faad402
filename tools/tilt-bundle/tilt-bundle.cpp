//===- tilt-bundle.cpp - Tuning databases -> ahead-of-time kernel bundle --===//
//
//   tilt-bundle --kernels-dir kernels --out build/kernels
//               [--cpu-classes all|x86-64-v3,...] [--tune-cpu NAME] [--jobs N]
//   tilt-bundle --target cuda --arch sm_80|sm_90a --cases FILE --out DIR
//               [--jobs N]
//
// For every ISA class asked for (default: all four of CpuIsa.h), on any
// machine: takes kernels/cpu-<class>.tune, or, for a class without one, the
// nearest class's database with the configurations the class cannot run
// replaced by its defaults; cross-compiles the kernel of every record (spec
// family of the databases: ALiBi with standard slopes, kv_heads = heads;
// decode records: their kv heads and page size) for exactly that class; and
// writes the bundle of KernelBundle.h: the shared objects, each class's
// database and an index.
//
// --target cuda needs no GPU: it compiles the CUDA artifact of every case of
// FILE, one tilt-run command line each (spec flags, optionally --variant and
// --block-m/--block-n; '#' starts a comment), for the GPU architecture
// --arch, into a CUDA-only bundle for GPU machines without a compiler. Of
// tilt-run's other flags, --cu-seqlens-q/-k mark a ragged batch (as does
// --varlen) and --page-size a paged cache; input files and sizes (--batch,
// --seq, --seq-k, --seed) are
// ignored, except --seq. A case without --variant gets the one the runtime
// picks by default on that architecture and for that query length (the
// decode family for paged caches and dense --seq <= 16), so that default
// runs find it.
//
//===----------------------------------------------------------------------===//

#include "Args.h"

#include "tilt/Compiler/Compiler.h"
#include "tilt/Cuda.h"
#include "tilt/KernelBundle.h"
#include "tilt/TilePolicy.h"
#include "tilt/TuningDb.h"

#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

using namespace tilt;
using namespace tilt::tools;
namespace fs = std::filesystem;

static int fail(const std::string &msg) {
  return toolError("tilt-bundle", msg);
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
  /// tilt-run's --grad-out: the line also runs the backward, whose kernel
  /// (gpu_bwd_sm80, as the runtime picks it) the bundle holds too.
  bool backward = false;
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
  // A paged cache: its page size from --page-size (the files are not read).
  bool paged = false;
  for (const char *name : {"block-table", "context-lens"})
    options.push_back({name, "FILE.npy", "paged KV cache", [&](auto) {
                         paged = true;
                         return std::string();
                       }});
  options.push_back({"page-size", "N", "paged KV cache", [&](auto v) {
                       return parseInt("--page-size", v, flags.spec.pageSize,
                                       1);
                     }});
  for (const char *name : {"batch", "seq-k", "seed"})
    options.push_back(
        {name, "N", "ignored", [](auto) { return std::string(); }});
  // The backward: its kernel too; the gradients' files are not read.
  options.push_back({"grad-out", "FILE.npy", "backward", [&](auto) {
                       out.backward = true;
                       return std::string();
                     }});
  for (const char *name : {"dq", "dk", "dv", "dslopes"})
    options.push_back(
        {name, "FILE.npy", "ignored", [](auto) { return std::string(); }});
  bool trainable = false;
  options.push_back(boolOption("trainable-slopes", "ignored", trainable));
  // The query length decides the family the runtime picks (decode or not).
  int64_t seqQ = 0;
  options.push_back({"seq", "N", "query length", [&](std::string_view v) {
                       return parseInt("--seq", v, seqQ, 1);
                     }});
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
  if (paged != (flags.spec.pageSize != 0))
    return "--block-table and --context-lens go with --page-size (the case "
           "file states the cache's page size)";
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
    // Runtime.cpp's cudaConfig: paged caches and short dense query
    // sequences take the decode family.
    if (useGpuDecodeFamily(spec, seqQ))
      config.variant = std::string(toString(KernelVariant::GpuDecodeSm80));
  } else if (!config.kind() || !isGpuVariant(*config.kind())) {
    return fmt::format("--variant {} is not a GPU variant", config.variant);
  } else if (config.is(KernelVariant::GpuSm90a) && arch != "sm_90a") {
    return "--variant gpu_sm90a needs --arch sm_90a";
  }
  out.spec = spec;
  out.config = config;
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
      cases.push_back(c);
    if (c.backward) {
      c.config = TileConfig();
      c.config.variant = std::string(toString(KernelVariant::GpuBwdSm80));
      if (seen.insert(c.spec.canonical() + "\t" + c.config.str()).second)
        cases.push_back(c);
    }
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

/// The kinds of record a class borrows separately: prefill, the decode
/// family's on contiguous caches, and on paged ones (a class with decode
/// records of its own still takes another's paged ones, which the runtime
/// prefers for paged calls).
enum RecordKind { kPrefill, kDecode, kPagedDecode, kRecordKinds };
static constexpr const char *kRecordKindNames[] = {"prefill", "decode",
                                                   "paged decode"};

static RecordKind kindOf(const TuningKey &k) {
  return !k.decode() ? kPrefill : k.pageSize ? kPagedDecode : kDecode;
}

/// Whether `db` has records of `kind`.
static bool hasKind(const TuningDb &db, RecordKind kind) {
  return std::any_of(
      db.records.begin(), db.records.end(),
      [&](const TuningRecord &r) { return kindOf(r.key) == kind; });
}

/// The tuning database a class's kernels follow, kind by kind (RecordKind):
/// its own, else the nearest class's that has that kind (ties going to the
/// lower class, whose code this CPU runs), with every borrowed
/// configuration of another variant than the class's own replaced by the
/// class's default (and a borrowed num_stages by the default's).
static std::string planClass(CpuClass cls,
                             const std::map<CpuClass, TuningDb> &dbs,
                             Compiler &compiler, TuningDb &out,
                             std::string &note) {
  auto own = dbs.find(cls);
  out = own != dbs.end() ? own->second : TuningDb();
  // Where each kind's records come from, for the index's note.
  std::string source[kRecordKinds];
  for (int k = 0; k < kRecordKinds; ++k) {
    const RecordKind kind = RecordKind(k);
    const bool decode = kind != kPrefill;
    if (own != dbs.end() && hasKind(own->second, kind)) {
      source[kind] = "tuned on " + out.machine;
      continue;
    }
    const TuningDb *nearest = nullptr;
    CpuClass from = cls;
    for (int distance = 1; !nearest && distance < 4; ++distance)
      for (int step : {-distance, distance}) {
        int rank = int(cls) + step;
        auto it = dbs.find(CpuClass(rank));
        if (rank >= 0 && rank < 4 && it != dbs.end() && !nearest &&
            hasKind(it->second, kind)) {
          nearest = &it->second;
          from = it->first;
        }
      }
    if (!nearest)
      continue;
    // A configuration carries over only where it is of the variant this
    // class would pick anyway: block sizes tuned for cpu_amx mean nothing
    // to cpu_avx512, and a lower class's cpu_avx2 blocks would keep an
    // AVX-512 CPU on 8-lane code.
    for (TuningRecord r : nearest->records) {
      if (kindOf(r.key) != kind)
        continue;
      const TileConfig mine =
          decode ? defaultCpuConfig(decodeCpuVariant([&](std::string_view f) {
            return compiler.machine().has(f);
          }))
                 : compiler.defaultConfig(familySpec(r.key), Target::CPU);
      // A CPU decode kernel's num_stages (whether it asks for the keys
      // ahead) follows the lending machine's prefetchers, not the class:
      // the borrowed record keeps its blocks, with the default stages.
      for (TileConfig *c : {&r.best, &r.fallback})
        if (c->variant != mine.variant)
          *c = mine;
        else
          c->numStages = mine.numStages;
      out.records.push_back(r);
    }
    if (own == dbs.end() && out.machine.empty()) {
      out.machine =
          fmt::format("{} (borrowed by {})", nearest->machine, toString(cls));
      out.family = nearest->family;
    }
    source[kind] = fmt::format("borrowed from {} (tuned on {})", toString(from),
                               nearest->machine);
  }
  // One source for every kind present: said alone (prefill's, or a decode
  // kind's with its name); else each kind's, named.
  std::vector<int> present;
  for (int k = 0; k < kRecordKinds; ++k)
    if (!source[k].empty())
      present.push_back(k);
  bool oneSource = true;
  for (int k : present)
    oneSource = oneSource && source[k] == source[present.front()];
  note.clear();
  if (present.empty())
    note = "no tuning database: default configurations";
  else if (oneSource && source[kPrefill] == source[present.front()])
    note = source[kPrefill];
  else
    for (int k : present)
      note += fmt::format("{}{} {}", note.empty() ? "" : "; ",
                          kRecordKindNames[k], source[k]);
  return {};
}

/// Cross-compiles the tuned kernels of every class in `classes` (each for
/// exactly that class, tuned for `tuneCpu`) into one bundle.
static int bundleCpu(const std::string &kernelsDir, const std::string &outDir,
                     const std::vector<CpuClass> &classes,
                     const std::string &tuneCpu, int64_t jobs) {
  std::map<CpuClass, TuningDb> dbs;
  for (CpuClass c : kCpuClasses) {
    std::string path = fmt::format("{}/cpu-{}.tune", kernelsDir, toString(c));
    if (!fs::exists(path))
      continue;
    if (std::string err = TuningDb::load(path, dbs[c]); !err.empty())
      return fail(err);
  }
  std::string index =
      fmt::format("tilt-bundle {}\ntilt {}\n", KernelBundle::kFormat,
                  TILT_VERSION);
  std::string kernelLines;
  size_t total = 0;
  for (CpuClass cls : classes) {
    CompilerOptions options;
    options.machine = CpuMachine::forClass(cls, tuneCpu);
    Compiler planner(options);
    TuningDb db;
    std::string note;
    if (std::string err = planClass(cls, dbs, planner, db, note);
        !err.empty())
      return fail(err);
    const std::string dbFile = fmt::format("tuning-{}.db", toString(cls));
    if (std::string err = db.save(outDir + "/" + dbFile); !err.empty())
      return fail(err);
    index += fmt::format("class {} {} {}\n", toString(cls), dbFile, note);

    // One kernel per distinct (spec, tuned config), compiled by `jobs`
    // threads (each its own Compiler: MLIR contexts are not shared).
    std::vector<TuningRecord> unique;
    std::set<std::tuple<std::string, std::string>> seen;
    for (const TuningRecord &r : db.records)
      if (seen.insert({familySpec(r.key).canonical(), r.best.str()}).second)
        unique.push_back(r);
    std::vector<std::string> lines;
    auto build = [&](size_t i, Compiler &compiler, std::string &line) {
      const TuningRecord &r = unique[i];
      const AttentionSpec spec = familySpec(r.key);
      std::string so;
      if (std::string err = compiler.compile(spec, r.best, Target::CPU, so);
          !err.empty())
        return fmt::format("{}: {}", toString(cls), err);
      std::string file = fmt::format(
          "{}-k{:04}-{}-d{}-h{}{}-{}.so", toString(cls), i,
          toString(spec.dtype), spec.headDim, spec.heads,
          spec.kvHeads != spec.heads ? fmt::format("-kv{}", spec.kvHeads) : "",
          spec.causal ? "causal" : "full");
      line = fmt::format("{}\t{}\t{}\t{}\n", file, spec.canonical(),
                         r.best.str(), toString(cls));
      return writeKernel(outDir, file, so);
    };
    if (std::string err = compileAll(unique.size(), jobs, options, build, lines);
        !err.empty())
      return fail(err);
    for (const std::string &l : lines)
      kernelLines += l;
    total += unique.size();
    fmt::print("tilt-bundle: {}: {} kernels for {} records ({})\n",
               toString(cls), unique.size(), db.records.size(), note);
  }

  // The index goes last and atomically: a bundle is either complete or
  // absent.
  if (std::string err = installIndex(outDir, index + kernelLines);
      !err.empty())
    return fail(err);
  fmt::print("tilt-bundle: {} kernels of {} classes in {}\n", total,
             classes.size(), outDir);
  return 0;
}

namespace {

struct BundleOptions {
  std::string kernelsDir, outDir, target = "cpu", arch, casesFile, tuneCpu;
  int64_t jobs = std::max(1u, std::thread::hardware_concurrency());
  std::vector<CpuClass> classes{std::begin(kCpuClasses), std::end(kCpuClasses)};
};

/// --cpu-classes: a comma-separated list of classes, or "all".
std::string parseClasses(std::string_view v, std::vector<CpuClass> &classes) {
  classes.clear();
  if (v == "all") {
    classes.assign(std::begin(kCpuClasses), std::end(kCpuClasses));
    return {};
  }
  for (size_t at = 0; at <= v.size();) {
    size_t comma = std::min(v.find(',', at), v.size());
    std::string_view name = v.substr(at, comma - at);
    std::optional<CpuClass> c = parseCpuClass(name);
    if (!c)
      return fmt::format("--cpu-classes: each must be {} (or the whole list "
                         "'all'), got '{}'",
                         cpuClassNames(), name);
    if (std::find(classes.begin(), classes.end(), *c) == classes.end())
      classes.push_back(*c);
    at = comma + 1;
  }
  std::sort(classes.begin(), classes.end());
  return {};
}

std::optional<int> parseBundleOptions(int argc, char **argv,
                                      BundleOptions &o) {
  std::vector<Option> options;
  options.push_back(targetOption(
      "what to bundle (default cpu: this CPU's tuned kernels)", o.target));
  options.push_back(archOption("cuda: the GPU architecture", o.arch));
  options.push_back(stringOption("cases", "FILE",
                                 "cuda: the specs to compile, one line of "
                                 "tilt-run flags each",
                                 o.casesFile));
  options.push_back(stringOption("kernels-dir", "DIR",
                                 "where the tuning databases are",
                                 o.kernelsDir));
  options.push_back(
      stringOption("out", "DIR", "the bundle directory to write", o.outDir));
  options.push_back({"jobs", "N", "parallel compiles (default: all cores)",
                     [&](auto v) { return parseInt("jobs", v, o.jobs, 1); }});
  options.push_back(
      {"cpu-classes", "LIST",
       "cpu: the ISA classes to cross-compile for, comma-separated, or all "
       "(default: all of " + cpuClassNames() + ")",
       [&](std::string_view v) { return parseClasses(v, o.classes); }});
  options.push_back(stringOption(
      "tune-cpu", "NAME",
      "cpu: schedule the kernels for this LLVM CPU, e.g. znver4 (default: "
      "generic); the code still uses only its class's features",
      o.tuneCpu));
  std::vector<std::string> positional;
  if (std::optional<int> exit = parseCommandLine(
          argc, argv, options, "tilt-bundle",
          "tilt-bundle --kernels-dir DIR --out DIR [--cpu-classes LIST] "
          "[--tune-cpu NAME] [--jobs N]\n"
          "       tilt-bundle --target cuda --arch sm_80|sm_90a --cases FILE "
          "--out DIR [--jobs N]",
          positional))
    return exit;
  const bool cuda = o.target == "cuda";
  if (o.outDir.empty() || !positional.empty() ||
      (cuda ? o.arch.empty() || o.casesFile.empty() || !o.kernelsDir.empty()
            : o.kernelsDir.empty() || !o.arch.empty() || !o.casesFile.empty()))
    return fail("usage: tilt-bundle --kernels-dir DIR --out DIR [--jobs N], "
                "or tilt-bundle --target cuda --arch sm_80|sm_90a --cases "
                "FILE --out DIR [--jobs N]");
  return std::nullopt;
}

} // namespace

int main(int argc, char **argv) {
  BundleOptions o;
  if (std::optional<int> exit = parseBundleOptions(argc, argv, o))
    return *exit;
  std::error_code ec;
  fs::create_directories(o.outDir, ec);
  if (ec)
    return fail(fmt::format("--out {}: {}", o.outDir, ec.message()));
  if (o.target == "cuda")
    return bundleCuda(o.arch, o.casesFile, o.outDir, o.jobs);
  return bundleCpu(o.kernelsDir, o.outDir, o.classes, o.tuneCpu, o.jobs);
}
