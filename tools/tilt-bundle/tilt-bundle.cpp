//===- tilt-bundle.cpp - Tuning database -> ahead-of-time kernel bundle ---===//
//
//   tilt-bundle --kernels-dir kernels --out build/kernels [--jobs N]
//
// Picks kernels/cpu-<class>.tune for this CPU's tuning class, compiles the
// tuned kernel of every record (spec family of the database: ALiBi with
// standard slopes, kv_heads = heads) and writes the bundle of KernelBundle.h:
// the shared objects, an index and a copy of the database. Without a
// database for this class the bundle is empty, and the runtime compiles on
// demand as usual.
//
//===----------------------------------------------------------------------===//

#include "Args.h"

#include "tilt/Compiler/Compiler.h"
#include "tilt/KernelBundle.h"
#include "tilt/TuningDb.h"

#include <fmt/format.h>

#include <atomic>
#include <set>
#include <tuple>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

using namespace tilt;
using namespace tilt::tools;
namespace fs = std::filesystem;

static int fail(const std::string &msg) {
  fmt::print(stderr, "tilt-bundle: error: {}\n", msg);
  return 1;
}

int main(int argc, char **argv) {
  std::string kernelsDir, outDir;
  int64_t jobs = std::max(1u, std::thread::hardware_concurrency());
  std::vector<Option> options;
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
  if (kernelsDir.empty() || outDir.empty() || !positional.empty())
    return fail("usage: tilt-bundle --kernels-dir DIR --out DIR [--jobs N]");

  std::error_code ec;
  fs::create_directories(outDir, ec);
  if (ec)
    return fail(fmt::format("--out {}: {}", outDir, ec.message()));
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
  std::vector<std::string> lines(unique.size());
  std::atomic<size_t> next{0};
  std::mutex errorMutex;
  std::string firstError;
  auto worker = [&] {
    Compiler compiler;
    for (size_t i; (i = next.fetch_add(1)) < unique.size();) {
      const TuningRecord &r = unique[i];
      AttentionSpec spec;
      spec.heads = spec.kvHeads = r.key.heads;
      spec.headDim = r.key.headDim;
      spec.dtype = r.key.dtype;
      spec.causal = r.key.causal;
      spec.bias = BiasKind::Alibi;
      std::string so;
      std::string err = compiler.compile(spec, r.best, Target::CPU, so);
      std::string file = fmt::format(
          "k{:04}-{}-d{}-h{}-{}.so", i, toString(spec.dtype), spec.headDim,
          spec.heads, spec.causal ? "causal" : "full");
      if (err.empty()) {
        std::ofstream os(outDir + "/" + file, std::ios::binary);
        os << so;
        if (!os)
          err = "cannot write " + file;
      }
      if (!err.empty()) {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (firstError.empty())
          firstError = err;
        return;
      }
      lines[i] = fmt::format("{}\t{}\t{}\n", file, spec.canonical(),
                             r.best.str());
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < jobs; ++t)
    pool.emplace_back(worker);
  worker();
  for (std::thread &t : pool)
    t.join();
  if (!firstError.empty())
    return fail(firstError);

  // The index goes last and atomically: a bundle is either complete or
  // absent.
  std::string index = fmt::format("tilt-bundle {}\ncpu {}\ntilt {}\n",
                                  KernelBundle::kFormat, hostCpuDigest(),
                                  TILT_VERSION);
  for (const std::string &l : lines)
    index += l;
  std::string tmp = outDir + "/index.tmp";
  {
    std::ofstream os(tmp);
    os << index;
    if (!os)
      return fail("cannot write " + tmp);
  }
  fs::rename(tmp, outDir + "/index", ec);
  if (ec)
    return fail(fmt::format("cannot install the index: {}", ec.message()));
  fmt::print("tilt-bundle: {} kernels for the {} records of {} in {}\n",
             unique.size(), db.records.size(), cls, outDir);
  return 0;
}
