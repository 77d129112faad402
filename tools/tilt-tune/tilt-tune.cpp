//===- tilt-tune.cpp - Tune tile configurations per heads and length ------===//
//
//   tilt-tune --out kernels/cpu-<class>.tune [--cpu-class NAME] [--heads
//   8,12,...]
//             [--seqs 128,512,2048,8192] [--head-dims 64,128]
//             [--dtypes f32,bf16] [--causal both|yes|no] [--repeats N]
//             [--threads N] [--plot FILE.svg] [--table FILE.md] [--fresh]
//             [--decode [--kv-heads 32,8,1] [--query-seqs 1,4,16]
//                       [--page-sizes 0,16]]
//
// For every key (dtype, head dim, causal, heads, sequence length) of the
// spec family "ALiBi with standard slopes, one kv head per head, batch 1",
// times every candidate of the compiler's search space on this machine
// (warm-up excluded, median of repeats) and records the best beside the
// default configuration. --decode tunes the decode family instead (TilePolicy
// .h's decodeSearchSpace), per (dtype, head dim, causal, heads, kv heads,
// Sq, Sk): --seqs are then the context lengths Sk (default 1024,8192,32768),
// --heads defaults to 32, and the runtime's split-KV rule applies as in use;
// --page-sizes times paged caches of those page sizes (0: contiguous, the
// default), each sequence's pages scattered through a shuffled block table
// as a serving engine's cache leaves them. A
// candidate that fails to compile or run counts as infinitely slow. Candidates
// whose first timed run is already 30% slower than the best median are not
// repeated. The database is rewritten after each key, so an interrupted run
// resumes where it stopped.
//
//===----------------------------------------------------------------------===//

#include "Args.h"

#include "tilt/Compiler/Compiler.h"
#include "tilt/Half.h"
#include "tilt/CpuIsa.h"
#include "tilt/TilePolicy.h"
#include "tilt/Runtime.h"
#include "tilt/TuningDb.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <unistd.h>

using namespace tilt;
using namespace tilt::tools;
using Clock = std::chrono::steady_clock;

namespace {

int fail(const std::string &msg) { return toolError("tilt-tune", msg); }

std::string parseList(std::string_view flag, std::string_view text,
                      std::vector<int64_t> &out, int64_t low = 1) {
  out.clear();
  std::stringstream in{std::string(text)};
  for (std::string item; std::getline(in, item, ',');) {
    int64_t v = 0;
    if (std::string err = parseInt(flag, item, v, low); !err.empty())
      return err;
    out.push_back(v);
  }
  return out.empty() ? fmt::format("--{} needs at least one value", flag)
                     : std::string();
}

std::string configName(const TileConfig &c) {
  std::string s = fmt::format("{} {}x{}", c.variant, c.blockM, c.blockN);
  if (c.numWarps)
    s += fmt::format(" {} warps", c.numWarps);
  if (c.numStages)
    s += fmt::format(" {} stage{}", c.numStages, c.numStages == 1 ? "" : "s");
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Relative cost of a key, for the ETA.
double cost(const TuningKey &k) {
  double c = double(k.heads) * double(k.decode() ? k.querySeq : k.seq) *
             double(k.seq) * double(k.headDim);
  return c * (k.causal ? 0.5 : 1.0) * (k.dtype == DType::BF16 ? 0.3 : 1.0);
}

std::string duration(double s) {
  if (s < 60)
    return fmt::format("{:.0f}s", s);
  if (s < 3600)
    return fmt::format("{}m{:02}s", int(s) / 60, int(s) % 60);
  return fmt::format("{}h{:02}m", int(s) / 3600, (int(s) % 3600) / 60);
}

/// A heat map: one row per (dtype, head dim, causal), one column per
/// (heads, seq); the colour is the speedup over the default, the label the
/// chosen blocks.
std::string svgPlot(const TuningDb &db) {
  std::map<std::tuple<int, int64_t, bool>, int> rowOf;
  std::map<std::pair<int64_t, int64_t>, int> colOf;
  std::vector<TuningRecord> prefill;
  for (const TuningRecord &r : db.records)
    if (!r.key.decode()) // decode records are in the table only
      prefill.push_back(r);
  for (const TuningRecord &r : prefill) {
    rowOf.emplace(std::make_tuple(int(r.key.dtype), r.key.headDim, r.key.causal), 0);
    colOf.emplace(std::make_pair(r.key.heads, r.key.seq), 0);
  }
  int i = 0;
  for (auto &[k, v] : rowOf)
    v = i++;
  i = 0;
  for (auto &[k, v] : colOf)
    v = i++;
  const int cw = 58, ch = 34, left = 150, top = 70;
  int width = left + cw * int(colOf.size()) + 20;
  int height = top + ch * int(rowOf.size()) + 60;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"9\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"10\" y=\"18\" font-size=\"14\">Tilt tuning on {}: chosen "
      "block_m x block_n (A = AMX) and speedup over the default</text>\n",
      width, height, db.machine);
  for (auto &[k, c] : colOf)
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">H{} "
                     "S{}</text>\n",
                     left + c * cw + cw / 2, top - 6, k.first, k.second);
  for (auto &[k, r] : rowOf)
    s += fmt::format("<text x=\"10\" y=\"{}\">{} D{} {}</text>\n",
                     top + r * ch + ch / 2 + 3,
                     toString(static_cast<DType>(std::get<0>(k))),
                     std::get<1>(k), std::get<2>(k) ? "causal" : "full");
  for (const TuningRecord &rec : prefill) {
    int r = rowOf[std::make_tuple(int(rec.key.dtype), rec.key.headDim,
                                  rec.key.causal)];
    int c = colOf[std::make_pair(rec.key.heads, rec.key.seq)];
    double speedup = rec.bestMs > 0 ? rec.fallbackMs / rec.bestMs : 1.0;
    // White at 1.0x, saturated green at 1.5x and beyond.
    int g = static_cast<int>(std::clamp((speedup - 1.0) / 0.5, 0.0, 1.0) * 155);
    s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
                     "fill=\"rgb({},{},{})\" stroke=\"#999\"/>\n",
                     left + c * cw, top + r * ch, cw, ch, 255 - g, 255,
                     255 - g);
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}{}x{}"
                     "</text>\n<text x=\"{}\" y=\"{}\" "
                     "text-anchor=\"middle\">{:.2f}x</text>\n",
                     left + c * cw + cw / 2, top + r * ch + 13,
                     rec.best.is(KernelVariant::CpuAmx) ? "A " : "",
                     rec.best.blockM, rec.best.blockN, left + c * cw + cw / 2,
                     top + r * ch + 26, speedup);
  }
  s += "</svg>\n";
  return s;
}

std::string markdownTable(const TuningDb &db) {
  std::string s = fmt::format("# Tuned vs default on {} (from tilt-tune)\n\n"
                              "Family: {}. Times are medians in ms.\n",
                              db.machine, db.family);
  std::vector<TuningRecord> sorted = db.records;
  auto order = [](const TuningKey &k) {
    return std::make_tuple(k.decode(), int(k.dtype), k.headDim, k.causal,
                           k.pageSize, k.heads, k.kvHeads, k.querySeq, k.seq);
  };
  std::sort(sorted.begin(), sorted.end(), [&](const auto &a, const auto &b) {
    return order(a.key) < order(b.key);
  });
  bool prefillHeader = false, decodeHeader = false;
  for (const TuningRecord &r : sorted) {
    const TuningKey &k = r.key;
    if (!k.decode() && !prefillHeader) {
      prefillHeader = true;
      s += "\n| dtype | D | causal | heads | seq | default | default ms | "
           "tuned | tuned ms | speedup |\n"
           "|---|---:|---|---:|---:|---|---:|---|---:|---:|\n";
    }
    if (k.decode() && !decodeHeader) {
      decodeHeader = true;
      s += "\nThe decode family (Sq query rows against Sk keys; page: the "
           "paged cache's page size, - for a contiguous cache):\n\n"
           "| dtype | D | causal | page | heads | kv heads | Sq | Sk | "
           "default | default ms | tuned | tuned ms | speedup |\n"
           "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|"
           "\n";
    }
    s +=
        k.decode()
            ? fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} ",
                          toString(k.dtype), k.headDim, k.causal ? "yes" : "no",
                          k.pageSize ? std::to_string(k.pageSize) : "-",
                          k.heads, k.kvHeads, k.querySeq, k.seq)
            : fmt::format("| {} | {} | {} | {} | {} ", toString(k.dtype),
                          k.headDim, k.causal ? "yes" : "no", k.heads, k.seq);
    s += fmt::format("| {} | {:.3f} | {} | {:.3f} | {:.2f}x |\n",
                     configName(r.fallback), r.fallbackMs, configName(r.best),
                     r.bestMs, r.bestMs > 0 ? r.fallbackMs / r.bestMs : 0.0);
  }
  return s;
}

struct TuneOptions {
  std::string out, plot, table, causalMode = "both";
  std::optional<std::vector<int64_t>> heads, seqs;
  std::vector<int64_t> headDims{64, 128}, kvHeads{32, 8, 1},
      querySeqs{1, 4, 16}, pageSizes{0};
  std::vector<DType> dtypes{DType::F32, DType::BF16};
  int64_t repeats = 3, threads = 0;
  bool fresh = false, decode = false;
  std::optional<CpuClass> tuneClass;
};

std::optional<int> parseTuneOptions(int argc, char **argv, TuneOptions &o) {
  std::vector<Option> options;
  auto listFlag = [&](const char *name, const char *help,
                      std::vector<int64_t> &dst, int64_t low = 1) {
    options.push_back(
        {name, "N,N,...", help, [name, &dst, low](std::string_view v) {
           return parseList(name, v, dst, low);
         }});
  };
  auto optionalList = [&](const char *name, const char *help,
                          std::optional<std::vector<int64_t>> &dst) {
    options.push_back({name, "N,N,...", help, [name, &dst](std::string_view v) {
                         dst.emplace();
                         return parseList(name, v, *dst);
                       }});
  };
  optionalList("heads",
               "head counts (default 8,12,16,32,40,64,71,112; --decode: 32)",
               o.heads);
  optionalList("seqs",
               "sequence lengths (default 128,512,2048,8192; --decode: the "
               "context lengths, 1024,8192,32768)",
               o.seqs);
  listFlag("head-dims", "head dims (default 64,128)", o.headDims);
  listFlag("kv-heads",
           "--decode: kv head counts; those not dividing a head count are "
           "skipped (default 32,8,1)",
           o.kvHeads);
  listFlag("query-seqs", "--decode: query rows Sq, 1 to 16 (default 1,4,16)",
           o.querySeqs);
  listFlag("page-sizes",
           "--decode: KV caches to time, 0 contiguous, else paged with that "
           "page size, a power of two from 8 to 256 (default 0)",
           o.pageSizes, /*low=*/0);
  options.push_back({"decode", "",
                     "tune the decode family (Sq <= 16 against a long "
                     "cache) instead of prefill",
                     [&](auto) {
                       o.decode = true;
                       return std::string();
                     }});
  options.push_back({"dtypes", "LIST", "element types (default f32,bf16)",
                     [&](std::string_view v) -> std::string {
                       o.dtypes.clear();
                       std::stringstream in{std::string(v)};
                       for (std::string t; std::getline(in, t, ',');) {
                         auto d = parseDType(t);
                         if (!d)
                           return fmt::format("--dtypes: '{}' is not f32, "
                                              "f16 or bf16",
                                              t);
                         o.dtypes.push_back(*d);
                       }
                       return {};
                     }});
  options.push_back({"causal", "both|yes|no", "masks to tune (default both)",
                     [&](std::string_view v) -> std::string {
                       if (v != "both" && v != "yes" && v != "no")
                         return fmt::format("--causal must be both, yes or "
                                            "no, got '{}'",
                                            v);
                       o.causalMode = v;
                       return {};
                     }});
  options.push_back({"repeats", "N", "timed runs per candidate (default 3)",
                     [&](auto v) {
                       return parseInt("repeats", v, o.repeats, 1);
                     }});
  options.push_back({"threads", "N", "CPU threads (default: all cores)",
                     [&](auto v) {
                       return parseInt("threads", v, o.threads, 1);
                     }});
  options.push_back(stringOption("out", "FILE",
                                 "the tuning database to write (required)",
                                 o.out));
  options.push_back(
      stringOption("plot", "FILE.svg", "write a plot of the choices", o.plot));
  options.push_back(stringOption("table", "FILE.md",
                                 "write the tuned-vs-default table", o.table));
  options.push_back({"fresh", "", "ignore records already in --out",
                     [&](auto) {
                       o.fresh = true;
                       return std::string();
                     }});
  options.push_back(cpuClassOption(
      "tune this class's database (" + cpuClassNames() +
          ") on this machine, which must run it: the compiler and the "
          "runtime see the host as that class (as TILT_CPU_CLASS does); "
          "default: the host's class",
      o.tuneClass));
  std::vector<std::string> positional;
  if (std::optional<int> exit =
          parseCommandLine(argc, argv, options, "tilt-tune",
                           "tilt-tune --out FILE [options]", positional))
    return exit;
  if (!positional.empty())
    return fail(fmt::format("unexpected argument '{}'", positional.front()));
  if (o.out.empty())
    return fail("--out FILE is required");
  for (int64_t p : o.pageSizes)
    if (p != 0 && (p < kMinPageSize || p > kMaxPageSize || (p & (p - 1))))
      return fail(fmt::format("--page-sizes: {} is not 0 or a power of two "
                              "from {} to {}",
                              p, kMinPageSize, kMaxPageSize));
  if (!o.decode && o.pageSizes != std::vector<int64_t>{0})
    return fail("--page-sizes goes with --decode (prefill keys are "
                "contiguous)");
  for (int64_t sq : o.querySeqs)
    if (sq > kDecodeMaxSq)
      return fail(fmt::format("--query-seqs: {} is above {}, where the "
                              "decode family ends",
                              sq, kDecodeMaxSq));
  if (!o.heads)
    o.heads = o.decode ? std::vector<int64_t>{32}
                       : std::vector<int64_t>{8, 12, 16, 32, 40, 64, 71, 112};
  if (!o.seqs)
    o.seqs = o.decode ? std::vector<int64_t>{1024, 8192, 32768}
                      : std::vector<int64_t>{128, 512, 2048, 8192};
  return std::nullopt;
}

/// The database to extend: --out's records (unless --fresh), which must have
/// been tuned on this machine.
std::string openDb(const TuneOptions &o, const std::string &machine,
                   TuningDb &db) {
  if (!o.fresh && std::filesystem::exists(o.out)) {
    if (std::string err = TuningDb::load(o.out, db); !err.empty())
      return err + " (use --fresh to start over)";
    if (db.machine != machine)
      return fmt::format("{} was tuned on '{}', this machine is '{}' "
                         "(use --fresh or another file)",
                         o.out, db.machine, machine);
  }
  db.target = "cpu";
  db.machine = machine;
  db.tiltVersion = TILT_VERSION;
  db.family = "alibi relative, standard slopes, batch 1; prefill: kv_heads "
              "= heads, Sq = Sk = seq; decode: kv_heads, Sq, Sk (and a paged "
              "cache's page size) as keyed";
  return {};
}

/// Every key the options ask for.
std::vector<TuningKey> requestedKeys(const TuneOptions &o) {
  std::vector<TuningKey> keys;
  for (DType t : o.dtypes)
    for (int64_t d : o.headDims)
      for (bool causal : {false, true}) {
        if ((causal && o.causalMode == "no") ||
            (!causal && o.causalMode == "yes"))
          continue;
        for (int64_t h : *o.heads)
          for (int64_t s : *o.seqs) {
            if (!o.decode) {
              keys.push_back({t, d, causal, h, s});
              continue;
            }
            for (int64_t kv : o.kvHeads)
              for (int64_t sq : o.querySeqs)
                for (int64_t page : o.pageSizes)
                  if (h % kv == 0)
                    keys.push_back({t, d, causal, h, s, sq, kv, page});
          }
      }
  return keys;
}

/// Times the candidates of one key and keeps the fastest.
class KeyTuner {
public:
  KeyTuner(Runtime &runtime, const TuningKey &key, int64_t repeats)
      : runtime(runtime), spec(familySpec(key)), repeats(repeats) {
    // Unit-normal inputs in the key's dtype, shared by every candidate:
    // q and o [1, H, Sq, D], k and v [1, Hkv, Sk, D], or paged: k and v
    // [pages, page, Hkv, D] through a shuffled block table.
    const int64_t sq = key.decode() ? key.querySeq : key.seq;
    const int64_t hkv = spec.kvHeads, D = key.headDim, ps = key.pageSize;
    const int64_t pages = ps ? (key.seq + ps - 1) / ps : 0;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    for (TypedBuffer *b : {&q, &o})
      *b = TypedBuffer(key.dtype, key.heads * sq * D);
    for (TypedBuffer *b : {&k, &v})
      *b = TypedBuffer(key.dtype, hkv * (ps ? pages * ps : key.seq) * D);
    for (TypedBuffer *b : {&q, &k, &v})
      for (size_t i = 0; i < b->size(); ++i)
        b->set(i, normal(rng));
    args.q = TensorRef(q.data(), {1, key.heads, sq, D});
    args.o = TensorRef(o.data(), {1, key.heads, sq, D});
    args.k = TensorRef(k.data(), {1, hkv, key.seq, D});
    args.v = TensorRef(v.data(), {1, hkv, key.seq, D});
    if (ps) {
      blockTable.resize(pages);
      std::iota(blockTable.begin(), blockTable.end(), 0);
      std::shuffle(blockTable.begin(), blockTable.end(), rng);
      contextLens.assign(1, int32_t(key.seq));
      args.k = TensorRef(k.data(), {pages, ps, hkv, D});
      args.v = TensorRef(v.data(), {pages, ps, hkv, D});
      args.blockTable = TensorRef(blockTable.data(), {1, pages});
      args.contextLens = TensorRef(contextLens.data(), {1});
    }
  }

  /// The record of `key`: the default config's time and the best of the
  /// search space; `tried`/`failed` count the candidates.
  TuningRecord tune(const TuningKey &key, const Compiler &compiler,
                    const HostCpu &host, int &tried, int &failed) {
    TuningRecord rec;
    rec.key = key;
    auto has = [&](std::string_view f) { return host.has(f); };
    rec.fallback = key.decode() ? defaultCpuConfig(decodeCpuVariant(has))
                                : compiler.defaultConfig(spec, Target::CPU);
    rec.fallbackMs = time(rec.fallback, kInf);
    rec.best = rec.fallback;
    rec.bestMs = rec.fallbackMs;
    tried = 1;
    failed = std::isinf(rec.fallbackMs) ? 1 : 0;
    std::vector<TileConfig> space =
        key.decode() ? decodeSearchSpace(spec, has) : cpuSearchSpace(spec, has);
    // Paged Sq-1 keys the token rows serve (TilePolicy's decodeTokenRows;
    // the runtime hands them whole runs of kv heads): that path reads
    // block_n alone (its rows are every head, its next-block requests
    // always go to L2), so only block_n is searched; the other candidates
    // run the same code and would be picked by noise.
    if (std::optional<KernelVariant> v = rec.fallback.kind();
        key.decode() && key.querySeq == 1 && v && decodeTokenRows(spec, *v))
      std::erase_if(space, [&](const TileConfig &c) {
        return c.blockM != rec.fallback.blockM ||
               c.numStages != rec.fallback.numStages;
      });
    for (const TileConfig &c : space) {
      if (c.str() == rec.fallback.str())
        continue;
      double ms = time(c, rec.bestMs);
      ++tried;
      failed += std::isinf(ms);
      if (ms < rec.bestMs) {
        rec.best = c;
        rec.bestMs = ms;
      }
    }
    return rec;
  }

private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  /// Median of `repeats` timed runs after one warm-up; a candidate whose
  /// first timed run is 30% slower than `bound` stops there. A run of half a
  /// second or more is its own warm-up (the kernel is already compiled and
  /// loaded by prepare(); what a warm-up would absorb is negligible next to
  /// it), which keeps long-sequence keys affordable.
  double time(const TileConfig &c, double bound) {
    if (!runtime.prepare(spec, Target::CPU, c).empty())
      return kInf;
    std::vector<double> times;
    bool warmedUp = false;
    while (static_cast<int64_t>(times.size()) < repeats) {
      auto t0 = Clock::now();
      if (!runtime.run(spec, args, Target::CPU, c).empty())
        return kInf;
      double ms =
          std::chrono::duration<double>(Clock::now() - t0).count() * 1e3;
      if (!warmedUp) {
        warmedUp = true;
        if (ms < 500)
          continue;
      }
      times.push_back(ms);
      if (times.size() == 1 && ms > 1.3 * bound)
        return ms;
    }
    return median(times);
  }

  Runtime &runtime;
  const AttentionSpec spec;
  const int64_t repeats;
  TypedBuffer q, k, v, o;
  std::vector<int32_t> blockTable, contextLens;
  AttentionArgs args;
};

/// One-line progress on a terminal: a bar, the count and the ETA.
void printProgress(size_t n, size_t total, double doneCost, double totalCost,
                   Clock::time_point start, const std::string &label) {
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  double eta = doneCost > 0 ? elapsed * (totalCost - doneCost) / doneCost : 0;
  int filled = static_cast<int>(30 * doneCost / std::max(totalCost, 1.0));
  fmt::print("\r[{:<30}] {}/{} ETA {} {:<40}", std::string(filled, '#'), n,
             total, doneCost > 0 ? duration(eta) : "?", label);
  std::fflush(stdout);
}

/// The table on stdout, and --table / --plot files.
std::string writeReports(const TuneOptions &o, const TuningDb &db) {
  std::string md = markdownTable(db);
  fmt::print("\n{}", md);
  for (auto [path, flag, text] :
       {std::tuple{&o.table, "--table", md},
        std::tuple{&o.plot, "--plot",
                   o.plot.empty() ? std::string() : svgPlot(db)}}) {
    if (path->empty())
      continue;
    std::ofstream os(*path);
    os << text;
    if (!os)
      return fmt::format("{}: cannot write {}", flag, *path);
  }
  return {};
}

/// Tunes `pending` (cheapest first), saving the database after each key so
/// that an interrupted run resumes where it stopped.
std::string tuneKeys(const TuneOptions &o, const std::vector<TuningKey> &pending,
                     Runtime &runtime, const Compiler &compiler,
                     const HostCpu &host, TuningDb &db) {
  double totalCost = 0, doneCost = 0;
  for (const TuningKey &k : pending)
    totalCost += cost(k);
  const bool tty = isatty(fileno(stdout));
  const auto start = Clock::now();
  for (size_t n = 0; n < pending.size(); ++n) {
    const TuningKey &key = pending[n];
    const std::string label =
        key.decode()
            ? fmt::format("{} D{} {} H{}/{} Sq{} Sk{}{}", toString(key.dtype),
                          key.headDim, key.causal ? "causal" : "full",
                          key.heads, key.kvHeads, key.querySeq, key.seq,
                          key.pageSize ? fmt::format(" p{}", key.pageSize) : "")
            : fmt::format("{} D{} {} H{} S{}", toString(key.dtype), key.headDim,
                          key.causal ? "causal" : "full", key.heads, key.seq);
    if (tty)
      printProgress(n, pending.size(), doneCost, totalCost, start, label);
    int tried = 0, failed = 0;
    const TuningRecord rec = KeyTuner(runtime, key, o.repeats)
                                 .tune(key, compiler, host, tried, failed);
    runtime.clearMemoryCache(); // keep the process's mappings bounded
    if (std::isinf(rec.bestMs))
      return fmt::format("{}: no candidate ran ({} failed)", label, failed);
    db.put(rec);
    if (std::string err = db.save(o.out); !err.empty())
      return err;
    doneCost += cost(key);
    if (!tty)
      fmt::print("{:<28} default {:<20} {:9.3f} ms  best {:<20} {:9.3f} ms  "
                 "{:.2f}x  ({} candidates{})\n",
                 label, configName(rec.fallback), rec.fallbackMs,
                 configName(rec.best), rec.bestMs,
                 rec.fallbackMs / rec.bestMs, tried,
                 failed ? fmt::format(", {} failed", failed) : "");
    std::fflush(stdout);
  }
  if (tty)
    fmt::print("\r[{:<30}] {}/{} done in {}{:<40}\n", std::string(30, '#'),
               pending.size(), pending.size(),
               duration(std::chrono::duration<double>(Clock::now() - start)
                            .count()),
               "");
  return {};
}

} // namespace

int main(int argc, char **argv) {
  TuneOptions o;
  if (std::optional<int> exit = parseTuneOptions(argc, argv, o))
    return *exit;
  // Before anything reads the host's class.
  if (o.tuneClass)
    setenv("TILT_CPU_CLASS", std::string(toString(*o.tuneClass)).c_str(), 1);
  const HostCpu &host = hostCpu();
  if (!host.error.empty())
    return fail(host.error);
  if (!host.cls)
    return fail(fmt::format("this CPU is {}: nothing to tune",
                            host.describe()));
  Compiler compiler;
  // Databases are per ISA class (kernels/cpu-<class>.tune); the CPU model
  // that timed them is kept for the record.
  TuningDb db;
  if (std::string err = openDb(o,
                               fmt::format("{} ({})", toString(*host.cls),
                                           compiler.machine().tuneCpu),
                               db);
      !err.empty())
    return fail(err);

  const std::vector<TuningKey> keys = requestedKeys(o);
  std::vector<TuningKey> pending;
  for (const TuningKey &k : keys)
    if (!db.find(k))
      pending.push_back(k);
  // Cheapest keys first: an interrupted run has covered all but the most
  // expensive ones, and resuming finishes those.
  std::stable_sort(pending.begin(), pending.end(),
                   [](const TuningKey &a, const TuningKey &b) {
                     return cost(a) < cost(b);
                   });
  RuntimeOptions rtOptions;
  rtOptions.threads = static_cast<int>(o.threads);
  rtOptions.compiler = &compiler;
  Runtime runtime(rtOptions);
  fmt::print("tilt-tune: {} keys, {} already in {}, {} to tune on {} with {} "
             "threads\n",
             keys.size(), keys.size() - pending.size(), o.out, pending.size(),
             db.machine, runtime.threads());
  std::fflush(stdout);
  if (std::string err = tuneKeys(o, pending, runtime, compiler, host, db);
      !err.empty())
    return fail(err);
  if (std::string err = writeReports(o, db); !err.empty())
    return fail(err);
  return 0;
}
