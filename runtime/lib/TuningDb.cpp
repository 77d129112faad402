//===- TuningDb.cpp - Tuned tile configurations, by shape -----------------===//

#include "tilt/TuningDb.h"

#include "tilt/TilePolicy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <tuple>
#include <unistd.h>

namespace tilt {

namespace {

std::vector<std::string> words(const std::string &s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;)
    out.push_back(w);
  return out;
}

bool toInt(const std::string &s, int64_t &out) {
  char *end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end)
    return false;
  out = v;
  return true;
}

bool toDouble(const std::string &s, double &out) {
  char *end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return !s.empty() && !*end && std::isfinite(out);
}

/// "variant block_m block_n", or with "num_warps num_stages" (GPU; and
/// "0 1" or "0 2" for the CPU decode kernels' keys ahead, Decode.cpp).
bool parseConfig(const std::vector<std::string> &w, TileConfig &c) {
  if (w.size() != 3 && w.size() != 5)
    return false;
  c.variant = w[0];
  if (!toInt(w[1], c.blockM) || !toInt(w[2], c.blockN) || c.blockM < 0 ||
      c.blockN < 0) // 0: the variant's default
    return false;
  if (w.size() == 5 &&
      (!toInt(w[3], c.numWarps) || !toInt(w[4], c.numStages)))
    return false;
  return true;
}

/// Why `c`'s num_warps and num_stages cannot be a CPU variant's (the
/// dialect's verifier rules, so that a bad record fails here, naming the
/// field, not at its first compile), or "".
std::string cpuConfigProblem(const TileConfig &c) {
  const std::optional<KernelVariant> v = c.kind();
  if (!v || isGpuVariant(*v))
    return {};
  if (c.numWarps != 0)
    return fmt::format("num_warps {} on {}: CPU variants take 0", c.numWarps,
                       c.variant);
  if (isDecodeVariant(*v) ? c.numStages < 0 || c.numStages > kCpuDecodeMaxStages
                          : c.numStages != 0)
    return fmt::format("num_stages {} on {}: allowed {}", c.numStages,
                       c.variant, isDecodeVariant(*v) ? "0, 1 or 2" : "0");
  return {};
}

std::string configText(const TileConfig &c) {
  std::string s = fmt::format("{} {} {}", c.variant, c.blockM, c.blockN);
  if (c.numWarps || c.numStages)
    s += fmt::format(" {} {}", c.numWarps, c.numStages);
  return s;
}

auto order(const TuningKey &k) {
  return std::make_tuple(k.decode(), static_cast<int>(k.dtype), k.headDim,
                         k.causal, k.pageSize, k.heads, k.kvHeads, k.querySeq,
                         k.seq);
}

/// A page size a paged cache may have (Spec.h).
bool validPageSize(int64_t p) {
  return p >= kMinPageSize && p <= kMaxPageSize && (p & (p - 1)) == 0;
}

/// |log2(a / b)|, both taken as at least 1.
double logDistance(int64_t a, int64_t b) {
  return std::abs(std::log2(double(std::max<int64_t>(a, 1)) /
                            double(std::max<int64_t>(b, 1))));
}

} // namespace

AttentionSpec familySpec(const TuningKey &key) {
  AttentionSpec spec;
  spec.heads = spec.kvHeads = key.heads;
  if (key.decode()) {
    spec.kvHeads = key.kvHeads;
    spec.pageSize = key.pageSize;
  }
  spec.headDim = key.headDim;
  spec.dtype = key.dtype;
  spec.causal = key.causal;
  spec.bias = BiasKind::Alibi;
  return spec;
}

std::string TuningDb::load(const std::string &path, TuningDb &out) {
  std::ifstream in(path);
  if (!in)
    return fmt::format("{}: cannot open the tuning database", path);
  out = TuningDb();
  std::string line;
  int lineNo = 0;
  bool sawHeader = false;
  int64_t format = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    auto fail = [&](const std::string &why) {
      return fmt::format("{}:{}: {}", path, lineNo, why);
    };
    if (line.empty() || line[0] == '#')
      continue;
    std::vector<std::string> w = words(line);
    if (w.empty()) // whitespace only (found by fuzzing: w[0] was read)
      continue;
    if (!sawHeader) {
      if (w.size() != 2 || w[0] != "tilt-tuning-db" || !toInt(w[1], format))
        return fail(fmt::format("not a Tilt tuning database (expected "
                                "'tilt-tuning-db {}')",
                                kFormat));
      if (format < 1 || format > kFormat)
        return fail(fmt::format("format {} is not supported (this Tilt reads "
                                "formats 1 to {})",
                                format, kFormat));
      sawHeader = true;
      continue;
    }
    if (w[0] == "target" || w[0] == "machine" || w[0] == "tilt" ||
        w[0] == "family") {
      std::string rest = line.substr(line.find(w[0]) + w[0].size());
      rest.erase(0, rest.find_first_not_of(' '));
      (w[0] == "target"    ? out.target
       : w[0] == "machine" ? out.machine
       : w[0] == "tilt"    ? out.tiltVersion
                           : out.family) = rest;
      continue;
    }
    // dtype head_dim causal heads seq | best | best_ms | default | ms
    std::vector<std::string> parts;
    std::stringstream fields(line);
    for (std::string p; std::getline(fields, p, '|');)
      parts.push_back(p);
    if (parts.size() != 5)
      return fail("expected 'dtype head_dim causal heads seq | best config | "
                  "ms | default config | ms'");
    std::vector<std::string> k = words(parts[0]);
    TuningRecord r;
    // A decode key: "decode" dtype head_dim causal heads kv_heads sq sk,
    // then (format 3) a page size where a paged cache was timed.
    const bool decode = !k.empty() && k[0] == "decode";
    if (decode && format < 2)
      return fail("decode records need format 2 ('tilt-tuning-db 2')");
    if (decode && k.size() == 9 && format < 3)
      return fail("paged decode records need format 3 ('tilt-tuning-db 3')");
    if (decode) {
      if ((k.size() != 8 && k.size() != 9) || !toInt(k[5], r.key.kvHeads) ||
          !toInt(k[6], r.key.querySeq) ||
          (k.size() == 9 &&
           (!toInt(k[8], r.key.pageSize) || !validPageSize(r.key.pageSize))))
        return fail(fmt::format("bad key '{}' (decode: dtype head_dim causal "
                                "heads kv_heads sq sk [page_size, a power "
                                "of two from {} to {}])",
                                parts[0], kMinPageSize, kMaxPageSize));
      k.resize(8);
      k.erase(k.begin());
      k.erase(k.begin() + 4, k.begin() + 6);
    }
    std::optional<DType> dtype = k.size() == 5 ? parseDType(k[0]) : std::nullopt;
    int64_t causal = 0;
    if (!dtype || !toInt(k[1], r.key.headDim) || !toInt(k[2], causal) ||
        !toInt(k[3], r.key.heads) || !toInt(k[4], r.key.seq) ||
        (causal != 0 && causal != 1) || r.key.heads < 1 || r.key.seq < 1 ||
        (decode && (r.key.kvHeads < 1 || r.key.heads % r.key.kvHeads != 0 ||
                    r.key.querySeq < 1 || r.key.querySeq > kDecodeMaxSq)))
      return fail("bad key '" + parts[0] + "'");
    r.key.dtype = *dtype;
    r.key.causal = causal == 1;
    if (!parseConfig(words(parts[1]), r.best) ||
        !parseConfig(words(parts[3]), r.fallback))
      return fail("bad tile configuration");
    // A decode record names decode-family variants, a prefill one others.
    for (const TileConfig *c : {&r.best, &r.fallback})
      if (std::optional<KernelVariant> v = c->kind();
          v && isDecodeVariant(*v) != decode)
        return fail(fmt::format("variant {} does not serve a {} record",
                                c->variant, decode ? "decode" : "prefill"));
    for (const TileConfig *c : {&r.best, &r.fallback})
      if (std::string why = cpuConfigProblem(*c); !why.empty())
        return fail(why);
    std::vector<std::string> t1 = words(parts[2]), t2 = words(parts[4]);
    if (t1.size() != 1 || t2.size() != 1 || !toDouble(t1[0], r.bestMs) ||
        !toDouble(t2[0], r.fallbackMs))
      return fail("bad time");
    out.put(r);
  }
  if (!sawHeader)
    return fmt::format("{}: empty tuning database", path);
  return {};
}

std::string TuningDb::save(const std::string &path) const {
  std::vector<TuningRecord> sorted = records;
  std::sort(sorted.begin(), sorted.end(), [](const auto &a, const auto &b) {
    return order(a.key) < order(b.key);
  });
  // Format 2 unless a record names a page size, so that a Tilt from before
  // paged records reads a database without them.
  const bool paged =
      std::any_of(records.begin(), records.end(),
                  [](const TuningRecord &r) { return r.key.pageSize > 0; });
  std::string text = fmt::format(
      "# Tilt tuning database: the best tile configuration per key, written "
      "by tilt-tune.\n"
      "# The runtime picks the nearest record (runtime/include/tilt/"
      "TuningDb.h).\n"
      "tilt-tuning-db {}\ntarget {}\nmachine {}\ntilt {}\nfamily {}\n"
      "# dtype head_dim causal heads seq | best | best_ms | default | "
      "default_ms\n"
      "# decode dtype head_dim causal heads kv_heads sq sk [page_size] | "
      "best | ...\n",
      paged ? kFormat : 2, target, machine, tiltVersion, family);
  for (const TuningRecord &r : sorted) {
    const TuningKey &k = r.key;
    text += k.decode()
                ? fmt::format("decode {} {} {} {} {} {} {}", toString(k.dtype),
                              k.headDim, k.causal ? 1 : 0, k.heads, k.kvHeads,
                              k.querySeq, k.seq) +
                      (k.pageSize ? fmt::format(" {}", k.pageSize) : "")
                : fmt::format("{} {} {} {} {}", toString(k.dtype), k.headDim,
                              k.causal ? 1 : 0, k.heads, k.seq);
    text += fmt::format(" | {} | {:.3f} | {} | {:.3f}\n", configText(r.best),
                        r.bestMs, configText(r.fallback), r.fallbackMs);
  }
  std::string tmp = path + fmt::format(".tmp.{}", static_cast<long>(getpid()));
  {
    std::ofstream os(tmp, std::ios::trunc);
    os << text;
    if (!os.flush())
      return fmt::format("{}: cannot write", tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return fmt::format("{}: cannot rename into place", path);
  }
  return {};
}

const TuningRecord *TuningDb::find(const TuningKey &key) const {
  for (const TuningRecord &r : records)
    if (r.key == key)
      return &r;
  return nullptr;
}

void TuningDb::put(const TuningRecord &record) {
  for (TuningRecord &r : records)
    if (r.key == record.key) {
      r = record;
      return;
    }
  records.push_back(record);
}

namespace {

/// The nearest record of one kind (TuningDb.h's rule); seqQ = 0 asks for a
/// prefill record. Decode: among the paged records where `paged`, else the
/// contiguous ones.
const TuningRecord *nearest(const std::vector<TuningRecord> &records,
                            const AttentionSpec &spec, int64_t seqQ,
                            int64_t seqK, bool paged = false) {
  const TuningRecord *best = nullptr;
  double bestDistance = 0;
  const int64_t group = spec.heads / std::max<int64_t>(spec.kvHeads, 1);
  auto tieOrder = [](const TuningKey &k) {
    return std::make_tuple(k.seq, k.querySeq, k.heads,
                           k.heads / std::max<int64_t>(k.kvHeads, 1),
                           k.pageSize);
  };
  for (const TuningRecord &r : records) {
    const TuningKey &k = r.key;
    if (k.decode() != (seqQ > 0) || k.dtype != spec.dtype ||
        k.headDim != spec.headDim || k.causal != spec.causal ||
        (k.pageSize > 0) != paged)
      continue;
    double distance =
        logDistance(spec.heads, k.heads) + logDistance(seqK, k.seq);
    if (k.decode())
      distance += logDistance(group, k.heads / k.kvHeads) +
                  logDistance(seqQ, k.querySeq) +
                  (paged ? logDistance(spec.pageSize, k.pageSize) : 0.0);
    bool better = !best || distance < bestDistance - 1e-12 ||
                  (std::abs(distance - bestDistance) <= 1e-12 &&
                   tieOrder(k) < tieOrder(best->key));
    if (better) {
      best = &r;
      bestDistance = distance;
    }
  }
  return best;
}

} // namespace

const TuningRecord *TuningDb::lookup(const AttentionSpec &spec,
                                     int64_t seqK) const {
  return nearest(records, spec, 0, seqK);
}

const TuningRecord *TuningDb::lookupDecode(const AttentionSpec &spec,
                                           int64_t seqQ, int64_t seqK) const {
  const int64_t sq = std::max<int64_t>(seqQ, 1);
  if (spec.pageSize > 0)
    if (const TuningRecord *r = nearest(records, spec, sq, seqK, true))
      return r;
  return nearest(records, spec, sq, seqK);
}

} // namespace tilt
