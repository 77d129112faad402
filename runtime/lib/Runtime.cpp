//===- Runtime.cpp - Kernel lookup and CPU and CUDA launch ----------------===//
//
// run() = validate the spec and the tensors, find the kernel (memory, then
// the bundle, then disk, then the compiler), then hand its work items to the
// thread pool (CPU) or enqueue one grid (CUDA). Everything after the first
// run() with a given spec is on the hot path: no hashing of files, no
// syscalls, no allocation beyond a growing scratch buffer.
//
//===----------------------------------------------------------------------===//

#include "tilt/Runtime.h"

#include "CpuKernel.h"
#include "CudaKernel.h"
#include "DiskCache.h"
#include "ThreadPool.h"
#include "tilt/CpuIsa.h"
#include "tilt/Half.h"
#include "tilt/KernelABI.h"
#include "tilt/KernelBundle.h"
#include "tilt/TilePolicy.h"
#include "tilt/TuningDb.h"

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <fmt/format.h>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <new>
#include <span>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#ifndef TILT_VERSION
#error "TILT_VERSION must be defined by the build (the CMake project version)"
#endif
#ifndef TILT_COMMIT
#error "TILT_COMMIT must be defined by the build (git rev-parse --short HEAD)"
#endif

namespace tilt {

TensorRef::TensorRef(void *data, std::initializer_list<int64_t> dims)
    : data(data), rank(int(dims.size())) {
  // More than 4 dims cannot be stored; run() rejects the rank.
  std::copy_n(dims.begin(), std::min<size_t>(dims.size(), 4), shape);
}

TensorRef
TensorRef::withStrides(std::initializer_list<int64_t> elementStrides) const {
  TensorRef t = *this;
  std::fill_n(t.strides, 4, 0);
  std::copy_n(elementStrides.begin(),
              std::min<size_t>(elementStrides.size(), 4), t.strides);
  return t;
}

bool TensorRef::hasStrides() const {
  return std::any_of(strides, strides + 4, [](int64_t s) { return s != 0; });
}

int64_t TensorRef::stride(int i) const {
  if (hasStrides())
    return strides[i];
  int64_t s = 1;
  for (int d = std::clamp(rank, 0, 4) - 1; d > i; --d)
    s *= shape[d];
  return s;
}

bool TensorRef::rowMajor() const {
  if (!hasStrides() || numElements() == 0) // no element to place
    return true;
  int64_t s = 1;
  for (int d = std::clamp(rank, 0, 4) - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != s)
      return false;
    s *= shape[d];
  }
  return true;
}

std::string TensorRef::strideString() const {
  std::string s = "[";
  for (int i = 0; i < std::clamp(rank, 0, 4); ++i)
    s += fmt::format("{}{}", i ? ", " : "", stride(i));
  return s + "]";
}

int64_t TensorRef::numElements() const {
  int64_t n = 1;
  for (int i = 0; i < std::clamp(rank, 0, 4); ++i)
    n *= shape[i];
  return n;
}

std::string TensorRef::shapeString() const {
  std::string s = "[";
  for (int i = 0; i < std::clamp(rank, 0, 4); ++i)
    s += fmt::format("{}{}", i ? ", " : "", shape[i]);
  if (rank > 4)
    s += ", ...";
  return s + "]";
}

namespace {

using detail::CpuKernel;
using detail::CudaKernel;

//===----------------------------------------------------------------------===//
// The memory-cache index
//===----------------------------------------------------------------------===//

// The kernels are owned by a map keyed by the canonical strings, but building
// those costs ~0.5 us of snprintf per call. The hot path instead looks up the
// raw fields: equal fields give equal canonical strings, so a hit here is
// always right; two field sets with one canonical string (an explicit scale
// of 1/sqrt(D) and the default) merely share the kernel.
static_assert(sizeof(AttentionSpec) == 120 && sizeof(TileConfig) == 64,
              "AttentionSpec or TileConfig changed: add the new fields to "
              "makeFastKey, else specs differing only in them share kernels");

struct FastKey {
  int64_t words[21];
  std::string variant; // short names fit std::string's inline buffer
  bool operator==(const FastKey &) const = default;
};

struct FastKeyHash {
  size_t operator()(const FastKey &k) const {
    // FNV-1a over the words; the variant is nearly always the same string.
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t w : k.words)
      h = (h ^ uint64_t(w)) * 0x100000001b3ull;
    return size_t(h ^ std::hash<std::string>()(k.variant));
  }
};

FastKey makeFastKey(const AttentionSpec &s, const TileConfig &c, Target t) {
  return FastKey{{s.heads,
                  s.kvHeads,
                  s.headDim,
                  int64_t(s.dtype),
                  std::bit_cast<int64_t>(s.effectiveScale()),
                  s.causal,
                  s.window.value_or(0),
                  int64_t(s.bias),
                  int64_t(s.slopes),
                  std::bit_cast<int64_t>(s.maxBias),
                  s.headOffset,
                  s.totalHeads,
                  s.keyPaddingMask,
                  s.varlen,
                  s.positionOffsets,
                  s.pageSize,
                  c.blockM,
                  c.blockN,
                  c.numWarps,
                  c.numStages,
                  int64_t(t)},
                 c.variant};
}

/// The loaded kernels of one target.
template <typename K> struct KernelCache {
  /// Owns the kernels; keyed by canonical spec | config | target.
  std::unordered_map<std::string, std::unique_ptr<K>> kernels;
  /// The hot-path index into `kernels` (see FastKey).
  std::unordered_map<FastKey, K *, FastKeyHash> fastIndex;
  void clear() {
    fastIndex.clear();
    kernels.clear();
  }
};

//===----------------------------------------------------------------------===//
// Argument checks
//===----------------------------------------------------------------------===//

/// What the checks learn about one launch.
struct Geometry {
  int64_t batch = 0;
  int64_t rowsQ = 0; ///< dense Sq, varlen totalQ
  int64_t maxSq = 0; ///< longest query sequence
  int64_t maxSk = 0; ///< longest key sequence
  /// varlen: the rows of q and k that cu_seqlens cover (their last entries)
  int64_t usedQ = 0, usedK = 0;
  bool hasSlopes = false;
};

bool hasShape(const TensorRef &t, std::initializer_list<int64_t> dims) {
  if (t.rank != int(dims.size()))
    return false;
  int i = 0;
  for (int64_t d : dims)
    if (t.shape[i++] != d)
      return false;
  return true;
}

bool sameShape(const TensorRef &a, const TensorRef &b) {
  return a.rank == b.rank &&
         std::equal(a.shape, a.shape + std::clamp(a.rank, 0, 4), b.shape);
}

bool nonNegative(const TensorRef &t) {
  return std::all_of(t.shape, t.shape + std::clamp(t.rank, 0, 4),
                     [](int64_t d) { return d >= 0; });
}

/// "" and the longest sequence and the last offset (the rows the sequences
/// cover) of `cu`, or why its offsets do not fit `tensor`'s `total` rows.
std::string checkCuSeqlens(const char *name, const TensorRef &cu,
                           const char *tensor, int64_t total, int64_t &maxLen,
                           int64_t &last) {
  const auto *off = static_cast<const int32_t *>(cu.data);
  if (off[0] != 0)
    return fmt::format("{}: must be non-decreasing and start at 0", name);
  int64_t longest = 0;
  for (int64_t i = 1; i < cu.shape[0]; ++i) {
    if (off[i] < off[i - 1])
      return fmt::format("{}: must be non-decreasing and start at 0", name);
    longest = std::max<int64_t>(longest, off[i] - off[i - 1]);
  }
  if (off[cu.shape[0] - 1] > total)
    return fmt::format("{}: last offset {} exceeds {}'s total {}", name,
                       off[cu.shape[0] - 1], tensor, total);
  maxLen = longest;
  last = off[cu.shape[0] - 1];
  return {};
}

/// The strides of `t` (TensorRef): "" or why they cannot be taken. `data`:
/// a data tensor of the kernels (any strides >= 0, the innermost 1);
/// `output`: one the kernel writes (no two elements may share memory).
std::string checkTensorStrides(const char *name, const TensorRef &t, bool data,
                               bool output) {
  // Bad ranks are checkArgs' to name.
  if (!t.present() || t.rank < 1 || t.rank > 4 || !t.hasStrides() ||
      t.rowMajor())
    return {};
  if (!data) {
    TensorRef rowMajor = t;
    std::fill_n(rowMajor.strides, 4, 0);
    return fmt::format("{}: must be row-major (strides {} for shape {}), "
                       "got strides {}",
                       name, rowMajor.strideString(), t.shapeString(),
                       t.strideString());
  }
  const int rank = t.rank;
  if (t.strides[rank - 1] != 1)
    return fmt::format("{}: the innermost stride must be 1 (D elements "
                       "contiguous), got strides {}",
                       name, t.strideString());
  // The furthest element must be addressable in int64 (the kernels' index
  // arithmetic), with room to spare.
  __int128 extent = 0;
  for (int d = 0; d < rank; ++d) {
    if (t.strides[d] < 0)
      return fmt::format("{}: strides must be >= 0, got {}", name,
                         t.strideString());
    if (t.shape[d] > 0)
      extent += __int128(t.shape[d] - 1) * t.strides[d];
  }
  if (extent > (__int128(1) << 62))
    return fmt::format("{}: strides {} for shape {} reach past 2^62 elements",
                       name, t.strideString(), t.shapeString());
  if (!output)
    return {};
  // No overlap: with the dims of more than one element ordered by stride,
  // each stride must step over the whole extent of the dim below it.
  int dims[4], n = 0;
  for (int d = 0; d < rank; ++d)
    if (t.shape[d] > 1)
      dims[n++] = d;
  for (int i = 1; i < n; ++i) // insertion sort by stride, inner dims first
    for (int j = i; j > 0 && t.strides[dims[j]] < t.strides[dims[j - 1]]; --j)
      std::swap(dims[j], dims[j - 1]);
  __int128 reach = 1; // elements the dims so far span
  for (int i = 0; i < n; ++i) {
    if (__int128(t.strides[dims[i]]) < reach)
      return fmt::format("{}: strides {} for shape {} make elements overlap; "
                         "an output needs a distinct element for every index",
                         name, t.strideString(), t.shapeString());
    reach = __int128(t.strides[dims[i]]) * t.shape[dims[i]];
  }
  return {};
}

/// One row of a stride table: a tensor, whether the kernels take it
/// strided (a data tensor), and whether they write it.
struct StrideRow {
  const char *name;
  const TensorRef *t;
  bool data, output;
};

/// The forward's tensors (TensorRef): the data tensors (q, k, v, o) may be
/// strided, every other tensor must be row-major.
std::array<StrideRow, 11> strideRows(const AttentionArgs &a) {
  return {{{"q", &a.q, true, false},
           {"k", &a.k, true, false},
           {"v", &a.v, true, false},
           {"o", &a.o, true, true},
           {"lse", &a.lse, false, false},
           {"slopes", &a.slopes, false, false},
           {"key_padding_mask", &a.keyPaddingMask, false, false},
           {"cu_seqlens_q", &a.cuSeqlensQ, false, false},
           {"cu_seqlens_k", &a.cuSeqlensK, false, false},
           {"block_table", &a.blockTable, false, false},
           {"context_lens", &a.contextLens, false, false}}};
}

/// The backward's own tensors: grad_o, dq, dk, dv may be strided, grad_lse
/// and dslopes must be row-major.
std::array<StrideRow, 6> strideRows(const BackwardArgs &g) {
  return {{{"grad_o", &g.gradO, true, false},
           {"grad_lse", &g.gradLse, false, false},
           {"dq", &g.dq, true, true},
           {"dk", &g.dk, true, true},
           {"dv", &g.dv, true, true},
           {"dslopes", &g.dslopes, false, false}}};
}

std::string checkStrideRows(std::span<const StrideRow> rows) {
  for (const StrideRow &r : rows)
    if (std::string err = checkTensorStrides(r.name, *r.t, r.data, r.output);
        !err.empty())
      return err;
  return {};
}

std::string checkStrides(const AttentionArgs &a) {
  return checkStrideRows(strideRows(a));
}

std::string checkGradStrides(const BackwardArgs &g) {
  return checkStrideRows(strideRows(g));
}

/// The CUDA kernels copy q, k, v, o (and the backward's tensors) in 16-byte
/// pieces (cp.async, TMA): each tensor's address and its outer strides (of
/// dims with more than one element) must be multiples of 16 bytes.
std::string checkCudaAlignment(std::span<const StrideRow> rows, DType dtype) {
  const int64_t e = byteWidth(dtype);
  for (const StrideRow &r : rows) {
    const TensorRef &t = *r.t;
    if (!r.data || !t.present())
      continue;
    bool aligned = reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
    for (int d = 0; d + 1 < std::clamp(t.rank, 0, 4); ++d) // (innermost: 1)
      aligned = aligned && (t.shape[d] <= 1 || t.stride(d) * e % 16 == 0);
    if (!aligned)
      return fmt::format("{}: on target cuda its address and strides must be "
                         "multiples of 16 bytes, got strides {} (elements of "
                         "{} bytes)",
                         r.name, t.strideString(), e);
  }
  return {};
}

/// RunStats::lastKernel: the configuration a loaded kernel says it was
/// built with, assigned in place (a string's copy-assignment reuses its
/// buffer: nothing allocated per call).
void noteKernel(TileConfig &last, const std::string &variant, int64_t blockM,
                int64_t blockN, int64_t numWarps = 0, int64_t numStages = 0) {
  last.variant = variant;
  last.blockM = blockM;
  last.blockN = blockN;
  last.numWarps = numWarps;
  last.numStages = numStages;
}
void noteKernel(TileConfig &last, const KernelInfo &info) {
  noteKernel(last, info.variant, info.blockM, info.blockN, 0, info.numStages);
}
void noteKernel(TileConfig &last, const CudaArtifact &h) {
  noteKernel(last, h.variant, h.blockM, h.blockN, h.numWarps, h.numStages);
}

/// Custom slopes must be finite (a NaN or infinite slope would silently
/// mask its head's rows). `a.slopes` is host memory: the CPU target's.
std::string checkSlopeValues(const AttentionArgs &a) {
  if (!a.slopes.present())
    return {};
  const auto *x = static_cast<const float *>(a.slopes.data);
  for (int64_t i = 0, n = a.slopes.numElements(); i < n; ++i)
    if (!std::isfinite(x[i]))
      return fmt::format("slopes: element {} is {}; slopes must be finite", i,
                         x[i]);
  return {};
}

/// Whether the bytes `a` and `b` can reach (elements of `aBytes` and
/// `bBytes` bytes, through their strides) overlap. A conservative test on
/// the two address ranges: interleaved views of one buffer (slices of a
/// fused QKV tensor) count as overlapping.
bool mayOverlap(const TensorRef &a, size_t aBytes, const TensorRef &b,
                size_t bBytes) {
  auto range = [](const TensorRef &t, size_t bytes) {
    const auto lo = reinterpret_cast<uintptr_t>(t.data);
    __int128 last = 0;
    for (int i = 0; i < std::clamp(t.rank, 0, 4); ++i)
      last += __int128(std::max<int64_t>(t.shape[i] - 1, 0)) * t.stride(i);
    return std::pair<__int128, __int128>(lo, lo + (last + 1) * bytes);
  };
  if (!a.present() || !b.present() || a.numElements() <= 0 ||
      b.numElements() <= 0)
    return false;
  auto [aLo, aHi] = range(a, aBytes);
  auto [bLo, bHi] = range(b, bBytes);
  return aLo < bHi && bLo < aHi;
}

/// A paged cache's k, block table and context lengths (q and g.batch are
/// checked); sets g.maxSk. Reads every table entry a sequence uses, so a
/// kernel never follows one out of the cache.
std::string checkPagedCache(const AttentionSpec &spec, const AttentionArgs &a,
                            Geometry &g) {
  const int64_t ps = spec.pageSize;
  const TensorRef &k = a.k, &table = a.blockTable, &lens = a.contextLens;
  if (k.rank != 4 || k.shape[1] != ps || k.shape[2] != spec.kvHeads ||
      k.shape[3] != spec.headDim || !nonNegative(k))
    return fmt::format("k: expected a paged cache [num_pages, {}, {}, {}] "
                       "([num_pages, page_size, Hkv, D]), got {}",
                       ps, spec.kvHeads, spec.headDim, k.shapeString());
  if (!table.present())
    return "block_table: required by a paged KV cache (int32 [B, "
           "max_pages])";
  if (table.rank != 2 || table.shape[0] != g.batch || table.shape[1] < 0)
    return fmt::format("block_table: expected int32 [B, max_pages] with B = "
                       "{}, got {}",
                       g.batch, table.shapeString());
  if (!lens.present())
    return "context_lens: required by a paged KV cache (int32 [B])";
  if (!hasShape(lens, {g.batch}))
    return fmt::format("context_lens: expected int32 [B] = [{}], got {}",
                       g.batch, lens.shapeString());
  const auto *len = static_cast<const int32_t *>(lens.data);
  const auto *ids = static_cast<const int32_t *>(table.data);
  const int64_t maxPages = table.shape[1], numPages = k.shape[0];
  g.maxSk = 0;
  for (int64_t b = 0; b < g.batch; ++b) {
    if (len[b] < 0 || len[b] > maxPages * ps)
      return fmt::format("context_lens: entry {} is {}; it must be in [0, {}] "
                         "(max_pages {} x page_size {})",
                         b, len[b], maxPages * ps, maxPages, ps);
    for (int64_t p = 0; p < (len[b] + ps - 1) / ps; ++p)
      if (int32_t id = ids[b * maxPages + p]; id < 0 || id >= numPages)
        return fmt::format("block_table: entry [{}, {}] is {}; sequence {} "
                           "uses it ({} tokens), so it must be in [0, {}) "
                           "(the cache's pages)",
                           b, p, id, b, len[b], numPages);
    g.maxSk = std::max<int64_t>(g.maxSk, len[b]);
  }
  return {};
}

std::string checkArgs(const AttentionSpec &spec, const AttentionArgs &a,
                      Geometry &g) {
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const std::pair<const char *, const TensorRef *> all[] = {
      {"q", &a.q},
      {"k", &a.k},
      {"v", &a.v},
      {"o", &a.o},
      {"lse", &a.lse},
      {"slopes", &a.slopes},
      {"key_padding_mask", &a.keyPaddingMask},
      {"cu_seqlens_q", &a.cuSeqlensQ},
      {"cu_seqlens_k", &a.cuSeqlensK},
      {"block_table", &a.blockTable},
      {"context_lens", &a.contextLens}};
  for (auto [name, t] : all) {
    if (!t->present() && t->rank != 0)
      return fmt::format("{}: data is null but a shape {} is given", name,
                         t->shapeString());
    if (t->present() && (t->rank < 1 || t->rank > 4))
      return fmt::format("{}: rank {} is not supported (1 to 4)", name,
                         t->rank);
  }
  for (auto [name, t] : {all[0], all[1], all[2], all[3]})
    if (!t->present())
      return fmt::format("{}: missing (null data pointer)", name);
  // Before anything reads a tensor's data (block tables, cu_seqlens).
  if (std::string err = checkStrides(a); !err.empty())
    return err;
  if (!spec.pageSize)
    for (auto [name, t] : {all[9], all[10]})
      if (t->present())
        return fmt::format("{}: given, but the spec has no paged KV cache "
                           "(set page_size)",
                           name);

  if (!spec.varlen) {
    for (auto [name, t] : {all[7], all[8]})
      if (t->present())
        return fmt::format("{}: given, but the spec is not varlen", name);
    const TensorRef &q = a.q, &k = a.k;
    if (q.rank != 4 || q.shape[1] != H || q.shape[3] != D || !nonNegative(q))
      return fmt::format("q: expected shape [B, {}, Sq, {}] ([B, H, Sq, D]), "
                         "got {}",
                         H, D, q.shapeString());
    g.batch = q.shape[0];
    g.rowsQ = g.maxSq = q.shape[2];
    if (spec.pageSize) {
      if (std::string err = checkPagedCache(spec, a, g); !err.empty())
        return err;
    } else {
      if (k.rank != 4 || k.shape[0] != g.batch || k.shape[1] != Hkv ||
          k.shape[3] != D || !nonNegative(k))
        return fmt::format("k: expected shape [{}, {}, Sk, {}] ([B, Hkv, Sk, "
                           "D], B from q), got {}",
                           g.batch, Hkv, D, k.shapeString());
    }
  } else {
    const TensorRef &q = a.q, &k = a.k;
    if (q.rank != 3 || q.shape[1] != H || q.shape[2] != D || !nonNegative(q))
      return fmt::format("q: expected shape [totalQ, {}, {}] ([totalQ, H, D], "
                         "varlen), got {}",
                         H, D, q.shapeString());
    if (k.rank != 3 || k.shape[1] != Hkv || k.shape[2] != D || !nonNegative(k))
      return fmt::format("k: expected shape [totalK, {}, {}] ([totalK, Hkv, "
                         "D], varlen), got {}",
                         Hkv, D, k.shapeString());
    const TensorRef &cuQ = a.cuSeqlensQ, &cuK = a.cuSeqlensK;
    if (!cuQ.present())
      return "cu_seqlens_q: required by varlen (int32 [B+1])";
    if (cuQ.rank != 1 || cuQ.shape[0] < 2)
      return fmt::format("cu_seqlens_q: expected int32 [B+1] with B >= 1, got "
                         "{}",
                         cuQ.shapeString());
    if (!cuK.present())
      return "cu_seqlens_k: required by varlen (int32 [B+1])";
    if (!hasShape(cuK, {cuQ.shape[0]}))
      return fmt::format("cu_seqlens_k: expected [B+1] = [{}] like "
                         "cu_seqlens_q, got {}",
                         cuQ.shape[0], cuK.shapeString());
    g.batch = cuQ.shape[0] - 1;
    g.rowsQ = q.shape[0];
    if (std::string err =
            checkCuSeqlens("cu_seqlens_q", cuQ, "q", g.rowsQ, g.maxSq, g.usedQ);
        !err.empty())
      return err;
    if (std::string err = checkCuSeqlens("cu_seqlens_k", cuK, "k", k.shape[0],
                                         g.maxSk, g.usedK);
        !err.empty())
      return err;
  }
  if (!sameShape(a.v, a.k))
    return fmt::format("v: expected the shape of k {}, got {}",
                       a.k.shapeString(), a.v.shapeString());
  if (!sameShape(a.o, a.q))
    return fmt::format("o: expected the shape of q {}, got {}",
                       a.q.shapeString(), a.o.shapeString());
  if (a.lse.present()) {
    if (!spec.varlen && !hasShape(a.lse, {g.batch, H, g.rowsQ}))
      return fmt::format("lse: expected [B, H, Sq] = [{}, {}, {}], got {}",
                         g.batch, H, g.rowsQ, a.lse.shapeString());
    if (spec.varlen && !hasShape(a.lse, {H, g.rowsQ}))
      return fmt::format("lse: expected [H, totalQ] = [{}, {}] (varlen), got "
                         "{}",
                         H, g.rowsQ, a.lse.shapeString());
  }

  if (!spec.pageSize && !spec.varlen) // (both set above otherwise)
    g.maxSk = a.k.shape[2];
  g.hasSlopes = spec.hasAlibi() && spec.slopes == SlopeSource::Custom;
  if (g.hasSlopes && !a.slopes.present())
    return "slopes: required by slopes = custom (f32 [H] or [B, H])";
  if (!g.hasSlopes && a.slopes.present())
    return fmt::format("slopes: given, but the spec's slopes are {}",
                       spec.hasAlibi() ? "standard (set slopes = custom)"
                                       : "unused (bias is none)");
  if (g.hasSlopes && !hasShape(a.slopes, {H}) &&
      !hasShape(a.slopes, {g.batch, H}))
    return fmt::format("slopes: expected f32 [H] = [{}] or [B, H] = [{}, {}], "
                       "got {}",
                       H, g.batch, H, a.slopes.shapeString());

  if (spec.keyPaddingMask && !a.keyPaddingMask.present())
    return "key_padding_mask: required by the spec (uint8 [B, Sk])";
  if (!spec.keyPaddingMask && a.keyPaddingMask.present())
    return "key_padding_mask: given, but the spec has no key padding mask "
           "(set key_padding_mask)";
  // validate() forbids a key padding mask with varlen, so k is dense here.
  if (spec.keyPaddingMask &&
      !hasShape(a.keyPaddingMask, {g.batch, a.k.shape[2]}))
    return fmt::format("key_padding_mask: expected [B, Sk] = [{}, {}], got {}",
                       g.batch, a.k.shape[2], a.keyPaddingMask.shapeString());

  // Position offsets: absolute positions stay below kMaxPosition, where f32
  // distances are exact. Varlen checks against the packed totals (each
  // sequence is shorter).
  const int64_t seqK = spec.varlen ? a.k.shape[0] : a.k.shape[2];
  for (auto [name, offset, len] : {std::tuple<const char *, int64_t, int64_t>{
                                       "q_offset", a.qOffset, g.maxSq},
                                   {"k_offset", a.kOffset, seqK}}) {
    if (!spec.positionOffsets && offset != 0)
      return fmt::format("{}: given ({}), but the spec has no position "
                         "offsets (set position_offsets)",
                         name, offset);
    if (spec.positionOffsets && (offset < 0 || offset > kMaxPosition - len))
      return fmt::format("{}: must be in [0, {}] so that positions stay below "
                         "2^24 for a sequence of {}, got {}",
                         name, kMaxPosition - len, len, offset);
  }
  // o and lse must not overlap q, k, v or each other: other items still
  // read the rows one writes.
  const size_t elt = size_t(byteWidth(spec.dtype));
  for (auto [name, out, bytes] :
       {std::tuple{"o", &a.o, elt}, std::tuple{"lse", &a.lse, size_t(4)}}) {
    for (auto [in, inName] :
         {std::pair{&a.q, "q"}, std::pair{&a.k, "k"}, std::pair{&a.v, "v"}})
      if (mayOverlap(*out, bytes, *in, elt))
        return fmt::format("{}: must not share memory with {}", name, inName);
  }
  if (mayOverlap(a.o, elt, a.lse, 4))
    return "lse: must not share memory with o";
  return {};
}

/// The backward's tensors, after checkArgs() accepted the forward's.
std::string checkBackwardArgs(const AttentionSpec &spec, const AttentionArgs &a,
                              const BackwardArgs &g, const Geometry &geo) {
  if (!a.lse.present())
    return "lse: required by the backward (the forward's f32 lse)";
  const std::pair<const char *, const TensorRef *> all[] = {
      {"grad_o", &g.gradO}, {"dq", &g.dq},           {"dk", &g.dk},
      {"dv", &g.dv},        {"dslopes", &g.dslopes}, {"grad_lse", &g.gradLse}};
  for (auto [name, t] : all) {
    if (!t->present() && t->rank != 0)
      return fmt::format("{}: data is null but a shape {} is given", name,
                         t->shapeString());
    if (t->present() && (t->rank < 1 || t->rank > 4))
      return fmt::format("{}: rank {} is not supported (1 to 4)", name,
                         t->rank);
  }
  struct Like {
    const char *name;
    const TensorRef *t, *like;
    const char *likeName;
  };
  for (const Like &x :
       {Like{"grad_o", &g.gradO, &a.o, "o"}, Like{"dq", &g.dq, &a.q, "q"},
        Like{"dk", &g.dk, &a.k, "k"}, Like{"dv", &g.dv, &a.v, "v"}}) {
    if (!x.t->present())
      return fmt::format("{}: missing (null data pointer)", x.name);
    if (!sameShape(*x.t, *x.like))
      return fmt::format("{}: expected the shape of {} {}, got {}", x.name,
                         x.likeName, x.like->shapeString(), x.t->shapeString());
  }
  if (g.gradLse.present() && !sameShape(g.gradLse, a.lse))
    return fmt::format("grad_lse: expected the shape of lse {}, got {}",
                       a.lse.shapeString(), g.gradLse.shapeString());
  if (g.dslopes.present()) {
    if (!geo.hasSlopes)
      return "dslopes: given, but the spec has no custom slopes to "
             "differentiate (set slopes = custom)";
    if (!sameShape(g.dslopes, a.slopes))
      return fmt::format("dslopes: expected the shape of slopes {}, got {}",
                         a.slopes.shapeString(), g.dslopes.shapeString());
  }
  // Outputs must not overlap inputs or each other: the kernel reads q, k,
  // v, o, grad_o while other items write dq, dk, dv.
  const size_t elt = size_t(byteWidth(spec.dtype));
  const std::pair<const TensorRef *, size_t> inputs[] = {
      {&a.q, elt},     {&a.k, elt}, {&a.v, elt},    {&a.o, elt},
      {&g.gradO, elt}, {&a.lse, 4}, {&g.gradLse, 4}};
  for (auto [name, t] : {all[1], all[2], all[3]}) {
    for (auto [in, bytes] : inputs)
      if (mayOverlap(*t, elt, *in, bytes))
        return fmt::format("{}: must not share memory with an input", name);
    for (auto [other, o] : {all[1], all[2], all[3]})
      if (o != t && mayOverlap(*t, elt, *o, elt))
        return fmt::format("{}: must not share memory with {}", name, other);
  }
  return {};
}

//===----------------------------------------------------------------------===//
// Launch
//===----------------------------------------------------------------------===//

/// Room for one MemRefDescriptor of any rank up to 5 (the split parts of a
/// rank-4 o).
struct DescriptorSlot {
  alignas(MemRefDescriptor<5>) unsigned char bytes[sizeof(MemRefDescriptor<5>)];
};

template <int Rank>
void *fillDescriptor(DescriptorSlot &slot, void *data, const int64_t *shape) {
  auto *d = new (slot.bytes) MemRefDescriptor<Rank>;
  d->allocated = d->aligned = data;
  d->offset = 0;
  int64_t stride = 1;
  for (int i = Rank - 1; i >= 0; --i) {
    d->sizes[i] = shape[i];
    d->strides[i] = stride;
    stride *= shape[i];
  }
  return d;
}

template <int Rank>
void *fillDescriptor(DescriptorSlot &slot, const TensorRef &t) {
  auto *d = static_cast<MemRefDescriptor<Rank> *>(
      fillDescriptor<Rank>(slot, t.data, t.shape));
  for (int i = 0; i < Rank; ++i)
    d->strides[i] = t.stride(i);
  return d;
}

/// The descriptor of `t` (rank 1 to 4, checked before) with its strides
/// (TensorRef: row-major unless given; checkStrides accepted them).
void *fillDescriptor(DescriptorSlot &slot, const TensorRef &t) {
  switch (t.rank) {
  case 1:
    return fillDescriptor<1>(slot, t);
  case 2:
    return fillDescriptor<2>(slot, t);
  case 3:
    return fillDescriptor<3>(slot, t);
  default:
    return fillDescriptor<4>(slot, t);
  }
}

/// The decode family's split-KV parts (KernelABI.h): f32 o and lse, each
/// behind a leading count of splits (0: none, the kernel writes o and lse).
struct SplitParts {
  float *o = nullptr, *lse = nullptr;
  int64_t count = 0;
  const TensorRef *oLike = nullptr, *lseLike = nullptr;
};

/// A descriptor of `count` x `like`'s shape (rank 1 to 4) at `data`.
void *fillPartsDescriptor(DescriptorSlot &slot, float *data, int64_t count,
                          const TensorRef &like) {
  int64_t shape[5] = {count};
  std::copy(like.shape, like.shape + like.rank, shape + 1);
  switch (like.rank) {
  case 1:
    return fillDescriptor<2>(slot, data, shape);
  case 2:
    return fillDescriptor<3>(slot, data, shape);
  case 3:
    return fillDescriptor<4>(slot, data, shape);
  default:
    return fillDescriptor<5>(slot, data, shape);
  }
}

/// Appends the descriptors of the optional inputs after descriptors[0, n)
/// (KernelABI.h) and returns the new count: slopes as [B, H] (per-head
/// slopes as a batch-stride-0 broadcast, so one kernel serves both forms),
/// then `dslopes` ([B, H]) when given (the backward), the key padding mask,
/// cu_seqlens, the paged cache's block table and context lengths, the
/// decode family's split parts when given, and the slot pointing at
/// `offsets`.
int appendOptionalDescriptors(const AttentionSpec &spec,
                              const AttentionArgs &args, const Geometry &g,
                              float *dslopes, DescriptorSlot *slots,
                              void **descriptors, int n, int64_t *offsets,
                              const SplitParts *parts = nullptr) {
  if (g.hasSlopes) {
    const int64_t shape[2] = {g.batch, spec.heads};
    auto *d = static_cast<MemRefDescriptor<2> *>(
        fillDescriptor<2>(slots[n], args.slopes.data, shape));
    if (args.slopes.rank == 1)
      d->strides[0] = 0;
    descriptors[n++] = d;
    if (dslopes) {
      descriptors[n] = fillDescriptor<2>(slots[n], dslopes, shape);
      ++n;
    }
  }
  if (spec.keyPaddingMask) {
    descriptors[n] = fillDescriptor(slots[n], args.keyPaddingMask);
    ++n;
  }
  if (spec.varlen) {
    for (const TensorRef *t : {&args.cuSeqlensQ, &args.cuSeqlensK}) {
      descriptors[n] = fillDescriptor(slots[n], *t);
      ++n;
    }
  }
  if (spec.pageSize) {
    for (const TensorRef *t : {&args.blockTable, &args.contextLens}) {
      descriptors[n] = fillDescriptor(slots[n], *t);
      ++n;
    }
  }
  if (parts) {
    descriptors[n] =
        fillPartsDescriptor(slots[n], parts->o, parts->count, *parts->oLike);
    ++n;
    descriptors[n] = fillPartsDescriptor(slots[n], parts->lse, parts->count,
                                         *parts->lseLike);
    ++n;
  }
  offsets[0] = args.qOffset;
  offsets[1] = args.kOffset;
  if (spec.positionOffsets)
    descriptors[n++] = offsets;
  return n;
}

/// The element offset of row `r` of `t` (its dims but the last, row-major
/// order) under its strides.
int64_t rowOffset(const TensorRef &t, int64_t r) {
  int64_t offset = 0;
  for (int d = t.rank - 2; d >= 0; --d) {
    offset += (r % t.shape[d]) * t.stride(d);
    r /= t.shape[d];
  }
  return offset;
}

/// The exact merge (ALIBI.md, "Merge"; tilt/Merge.h) of `parts.count`
/// split-KV parts into o (the spec's dtype, `parts.oLike`'s strides) and
/// lse, rows [rowBegin, rowEnd) of o (D elements each), lse holding the
/// rows' constants on entry (KernelABI.h); the arithmetic in double. Dense
/// rows are (batch, head, query) in both; varlen o rows are (token, head)
/// and lse is [H, totalQ]. The parts are row-major.
void mergeSplitRows(const AttentionSpec &spec, const SplitParts &parts, void *o,
                    float *lse, int64_t rowBegin, int64_t rowEnd) {
  const int64_t D = spec.headDim, H = spec.heads;
  const int64_t rows = parts.oLike->numElements() / D;
  const int64_t lseRows = parts.lseLike->numElements();
  const float negInf = -std::numeric_limits<float>::infinity();
  std::vector<double> acc(static_cast<size_t>(D)), w(size_t(parts.count));
  for (int64_t r = rowBegin; r < rowEnd; ++r) {
    const int64_t lr =
        spec.varlen ? (r % H) * parts.lseLike->shape[1] + r / H : r;
    float m = negInf;
    for (int64_t p = 0; p < parts.count; ++p)
      m = std::max(m, parts.lse[p * lseRows + lr]);
    std::fill(acc.begin(), acc.end(), 0.0);
    double total = 0;
    if (m != negInf) {
      for (int64_t p = 0; p < parts.count; ++p)
        total += w[size_t(p)] =
            std::exp(double(parts.lse[p * lseRows + lr]) - double(m));
      for (int64_t p = 0; p < parts.count; ++p) {
        const double scale = w[size_t(p)] / total;
        if (scale == 0)
          continue; // no visible key in that part, or a negligible one
        const float *x = parts.o + (p * rows + r) * D;
        for (int64_t c = 0; c < D; ++c)
          acc[size_t(c)] += scale * x[c];
      }
    }
    const int64_t at = rowOffset(*parts.oLike, r);
    for (int64_t c = 0; c < D; ++c) {
      const float x = float(acc[size_t(c)]);
      switch (spec.dtype) {
      case DType::F32:
        static_cast<float *>(o)[at + c] = x;
        break;
      case DType::F16:
        static_cast<uint16_t *>(o)[at + c] = floatToHalf(x);
        break;
      case DType::BF16:
        static_cast<uint16_t *>(o)[at + c] = floatToBf16(x);
        break;
      }
    }
    lse[lr] =
        m == negInf
            ? negInf
            : float(double(lse[lr]) + double(m) + std::log(double(total)));
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Runtime
//===----------------------------------------------------------------------===//

struct Runtime::Impl {
  explicit Impl(RuntimeOptions opts)
      : options(std::move(opts)),
        cacheDir(detail::resolveCacheDir(options.cacheDir)),
        capError(detail::resolveCacheMaxBytes(options.cacheMaxBytes, capBytes)),
        disk(cacheDir, capBytes),
        pool(options.threads > 0
                 ? options.threads
                 : int(std::max(1u, std::thread::hardware_concurrency()))) {
    if (!options.kernelsDir.empty()) {
      bundleError = KernelBundle::load(options.kernelsDir, bundle);
      if (bundleError.empty() && !bundle.tuningDb.empty()) {
        bundleError = TuningDb::load(bundle.tuningDb, tuning);
        haveTuning = bundleError.empty();
      }
    } else {
      bundle.status = "no kernel bundle given";
    }
  }

  /// The configuration for a CPU call: the caller's; else, where
  /// TilePolicy's useDecodeFamily rule picks the decode family (Sq <= 16),
  /// the tuning database's nearest decode record (for a paged cache, a
  /// paged one where the database has any; TuningDb.h) or the family's
  /// default, whichever a compiler or the bundle can provide
  /// first; else the tuning database's nearest prefill record; else the
  /// compiler's default.
  const TileConfig &configFor(const AttentionSpec &spec, int64_t maxSq,
                              int64_t seqK, const TileConfig &requested) const {
    if (!requested.isDefault())
      return requested;
    // Only where the kernel can be had: a compiler to build it, or the
    // bundle holding it. A runtime that only loads kernels keeps the
    // prefill kernel its bundle serves. The decode family takes the tuning
    // database's nearest decode record, else its default configuration.
    if (useDecodeFamily(spec, maxSq)) {
      const TuningRecord *tuned =
          haveTuning ? tuning.lookupDecode(spec, maxSq, seqK) : nullptr;
      // A record timed on a contiguous cache serves a paged call only with
      // blocks that lie in one page (one table read per block, Decode.cpp);
      // a paged record's blocks were timed on pages, whichever they span.
      if (tuned && spec.pageSize && !tuned->key.pageSize &&
          (tuned->best.blockN <= 0 || spec.pageSize % tuned->best.blockN != 0))
        tuned = nullptr;
      for (const TileConfig *c :
           {tuned ? &tuned->best : nullptr, &decodeConfig})
        if (c &&
            (options.compiler || !bundle.find(spec.canonical(), *c).empty()))
          return *c;
    }
    if (!haveTuning)
      return requested;
    const TuningRecord *r = tuning.lookup(spec, seqK);
    return r ? r->best : requested;
  }

  /// `chosen` (the runtime's choice for a call) with TilePolicy's
  /// fitQueryBlock applied (a prefill variant's block_m fitted to short
  /// query sequences; to the compiler's default configuration where
  /// `chosen` names none), where a compiler or the bundle can provide that
  /// kernel; else `chosen`.
  TileConfig fittedToQueries(const AttentionSpec &spec,
                             const TileConfig &chosen, int64_t maxSq) const {
    // (No prefill block is above 256 rows: longer sequences fit nothing.)
    if (maxSq <= 0 || maxSq > 128)
      return chosen;
    TileConfig named = chosen;
    if (named.variant.empty()) {
      if (!options.compiler)
        return chosen;
      named = options.compiler->defaultConfig(spec, Target::CPU);
    }
    const TileConfig fitted = fitQueryBlock(named, maxSq);
    if (fitted.blockM == named.blockM ||
        !(options.compiler || !bundle.find(spec.canonical(), fitted).empty()))
      return chosen;
    return fitted;
  }

  /// Runs `body` (a call's work, "" or its error) under the call lock and
  /// adds its wall time, compiles included, to the stats.
  template <typename F> std::string timedCall(F &&body) {
    const auto start = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mutex);
    std::string err = body();
    stats.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    return err;
  }

  /// checkHostRuns, once per variant name: the answer cannot change while
  /// the process lives, and run() is on the hot path. Callers hold `mutex`.
  const std::string &hostRuns(const TileConfig &config) {
    auto it = hostRunsByVariant.find(config.variant);
    if (it == hostRunsByVariant.end())
      it = hostRunsByVariant.emplace(config.variant, checkHostRuns(config))
               .first;
    return it->second;
  }
  /// "" when this CPU runs `config` (empty: whatever the compiler picks
  /// for it), else one line: checked before any compile or load.
  static std::string checkHostRuns(const TileConfig &config) {
    const HostCpu &host = hostCpu();
    if (!host.error.empty())
      return host.error;
    if (!host.cls)
      return fmt::format("this CPU is {}: Tilt's CPU kernels need x86-64-v3 "
                         "or better",
                         host.describe());
    if (config.isDefault())
      return {};
    return checkVariantRuns(
        config.variant, [&](std::string_view f) { return host.has(f); },
        fmt::format("this CPU ({})", host.describe()));
  }

  KernelCache<CpuKernel> &cacheOf(const CpuKernel *) { return cpuKernels; }
  KernelCache<CudaKernel> &cacheOf(const CudaKernel *) { return cudaKernels; }

  template <typename K>
  std::string resolve(const AttentionSpec &spec, const TileConfig &config,
                      Target target, std::string_view targetKey, K *&out);
  template <typename K>
  std::string loadOrBuild(const AttentionSpec &spec, const TileConfig &config,
                          Target target, std::string_view targetKey,
                          const std::string &canonicalSpec,
                          const std::string &configKey,
                          std::unique_ptr<K> &out);
  template <typename K>
  std::string loadFromDisk(const std::string &key,
                           const std::string &canonicalSpec, bool removeBad,
                           std::unique_ptr<K> &out, std::string &rejected);

  // How each target's artifacts load: from the bytes of a disk entry or a
  // fresh compile ("" or an error that is not the artifact's fault, with
  // `rejected` saying what is wrong with the artifact), and from a bundle.
  std::string loadPayload(std::string_view payload,
                          const std::string &canonicalSpec,
                          const std::string &label,
                          std::unique_ptr<CpuKernel> &out,
                          std::string &rejected);
  std::string loadPayload(std::string_view payload,
                          const std::string &canonicalSpec,
                          const std::string &label,
                          std::unique_ptr<CudaKernel> &out,
                          std::string &rejected);
  std::string bundled(const std::string &canonicalSpec,
                      const TileConfig &config,
                      const std::unique_ptr<CpuKernel> &) const;
  std::string bundled(const std::string &canonicalSpec,
                      const TileConfig &config,
                      const std::unique_ptr<CudaKernel> &) const;
  static std::string loadBundled(const std::string &path,
                                 const std::string &canonicalSpec,
                                 std::unique_ptr<CpuKernel> &out);
  static std::string loadBundled(const std::string &path,
                                 const std::string &canonicalSpec,
                                 std::unique_ptr<CudaKernel> &out);

  void launch(const AttentionSpec &spec, const AttentionArgs &args,
              const Geometry &g, const CpuKernel &kernel);
  void launchBackward(const AttentionSpec &spec, const AttentionArgs &args,
                      const BackwardArgs &grads, const Geometry &g,
                      const CpuKernel &kernel);

  /// CUDA: the device (probed once), the configuration of a call and the
  /// whole of run() and prepare().
  std::string cudaDevice(const AttentionSpec &spec);
  /// `maxSq`: the call's longest query sequence (0 in prepare(): a decode
  /// step is assumed for a paged cache, else a prefill).
  std::string cudaConfig(const AttentionSpec &spec, const TileConfig &requested,
                         int64_t maxSq, TileConfig &out) const;
  /// checkArgs() on host copies of what lives on the device and the checks
  /// read (cu_seqlens, block tables, context lengths).
  std::string checkCudaArgs(const AttentionSpec &spec,
                            const AttentionArgs &args, Geometry &g);
  std::string runCuda(const AttentionSpec &spec, const AttentionArgs &args,
                      const TileConfig &config);
  /// backward() on target cuda: gpu_bwd_sm80.
  std::string backwardCuda(const AttentionSpec &spec, const AttentionArgs &args,
                           const BackwardArgs &grads, const TileConfig &config);
  std::string prepareCuda(const AttentionSpec &spec, const TileConfig &config);

  RuntimeOptions options;
  KernelBundle bundle;
  TuningDb tuning;
  bool haveTuning = false;
  /// The decode family's configuration for this CPU (the host is fixed).
  const TileConfig decodeConfig = defaultCpuConfig(
      decodeCpuVariant([](std::string_view f) { return hostCpu().has(f); }));
  /// The backward's default configurations for this CPU (the host is
  /// fixed): for bf16 inputs, and for f32 and f16.
  static TileConfig hostBackwardConfig(DType dtype) {
    return defaultCpuConfig(backwardCpuVariant(
        dtype, [](std::string_view f) { return hostCpu().has(f); }));
  }
  const TileConfig bf16BackwardConfig = hostBackwardConfig(DType::BF16);
  const TileConfig backwardConfig = hostBackwardConfig(DType::F32);
  /// The backward's [B, H] slope gradients when the caller's are [H] or
  /// not wanted.
  std::vector<float> dslopesScratch;
  /// The backward's row_scale (KernelABI.h), lse's shape; and zeros for its
  /// grad_lse when the caller gives none (never written, so zeros stay).
  std::vector<float> rowScaleScratch, zeroGradLse;
  std::string bundleError; ///< a malformed bundle, reported by run()
  std::unordered_map<std::string, std::string> hostRunsByVariant;
  std::string cacheDir;
  uint64_t capBytes = 0; ///< set by capError's initializer
  /// A malformed $TILT_CACHE_MAX_BYTES, reported by every disk access.
  std::string capError;
  detail::DiskCache disk;
  detail::ThreadPool pool;

  /// Serializes run()/prepare(): the caches, the stats and the scratch are
  /// shared, and the pool already uses every core for one launch.
  std::mutex mutex;
  RunStats stats;
  KernelCache<CpuKernel> cpuKernels;
  KernelCache<CudaKernel> cudaKernels;
  /// lse for callers that do not want it; kernels always write one.
  std::vector<float> lseScratch;
  /// The decode family's split-KV parts (o, then lse), reused across calls.
  std::vector<float> splitScratch;
  /// Row-major copies of strided dense K and V (gatherStridedKv).
  std::vector<unsigned char> kvScratch;

  /// Copies dense K and V to row-major [B, Hkv, Sk, D] scratch, in
  /// parallel, and points `k`/`v` at it: where a prefill kernel would
  /// reread a head's strided rows once per query block
  /// (TilePolicy.h's kGatherKvMinQueryBlocks).
  /// False (k, v untouched) when the scratch cannot be had.
  bool gatherStridedKv(const AttentionSpec &spec, const Geometry &g,
                       TensorRef &k, TensorRef &v);

  /// Set by the first successful cudaDevice().
  bool haveDevice = false;
  cuda::DeviceInfo device;
  /// The target part of CUDA cache keys: kernels of two GPUs never mix.
  std::string cudaTargetKey;
  cuda::DeviceBuffer lseScratchDevice;
  /// Zeros for a CUDA backward without an upstream gradient of lse.
  cuda::DeviceBuffer gradLseZerosDevice;
  /// Host copies of device cu_seqlens, block tables and context lengths,
  /// for the argument checks.
  std::vector<int32_t> hostCuSeqlensQ, hostCuSeqlensK, hostBlockTable,
      hostContextLens;
};

template <typename K>
std::string Runtime::Impl::resolve(const AttentionSpec &spec,
                                   const TileConfig &config, Target target,
                                   std::string_view targetKey, K *&out) {
  KernelCache<K> &cache = cacheOf(static_cast<const K *>(nullptr));
  FastKey fast = makeFastKey(spec, config, target);
  if (auto it = cache.fastIndex.find(fast); it != cache.fastIndex.end()) {
    ++stats.memoryHits;
    out = it->second;
    return {};
  }

  std::string canonicalSpec = spec.canonical();
  std::string configKey = config.isDefault() ? "default" : config.str();
  std::string key =
      fmt::format("{}|{}|{}", canonicalSpec, configKey, targetKey);
  auto it = cache.kernels.find(key);
  if (it != cache.kernels.end()) {
    ++stats.memoryHits;
  } else {
    std::unique_ptr<K> kernel;
    if (std::string err = loadOrBuild(spec, config, target, targetKey,
                                      canonicalSpec, configKey, kernel);
        !err.empty())
      return err;
    it = cache.kernels.emplace(std::move(key), std::move(kernel)).first;
  }
  out = it->second.get();
  cache.fastIndex.emplace(std::move(fast), out);
  return {};
}

std::string Runtime::Impl::loadPayload(std::string_view payload,
                                       const std::string &canonicalSpec,
                                       const std::string &label,
                                       std::unique_ptr<CpuKernel> &out,
                                       std::string &rejected) {
  detail::StagedFile staged; // deleted once loaded
  if (std::string err = disk.stage(payload, staged); !err.empty())
    return err;
  rejected = CpuKernel::load(staged.path(), canonicalSpec, out, label);
  return {};
}

std::string Runtime::Impl::loadPayload(std::string_view payload,
                                       const std::string &canonicalSpec,
                                       const std::string &label,
                                       std::unique_ptr<CudaKernel> &out,
                                       std::string &rejected) {
  // The driver loads modules from memory: nothing to stage.
  rejected = CudaKernel::load(payload, canonicalSpec, out, label);
  return {};
}

std::string Runtime::Impl::bundled(const std::string &canonicalSpec,
                                   const TileConfig &config,
                                   const std::unique_ptr<CpuKernel> &) const {
  return bundle.find(canonicalSpec, config);
}

std::string Runtime::Impl::bundled(const std::string &canonicalSpec,
                                   const TileConfig &config,
                                   const std::unique_ptr<CudaKernel> &) const {
  if (!detail::artifactRunsOn(bundle.cudaArch, device.ccMajor, device.ccMinor))
    return {};
  return bundle.find(canonicalSpec, config, Target::CUDA);
}

std::string Runtime::Impl::loadBundled(const std::string &path,
                                       const std::string &canonicalSpec,
                                       std::unique_ptr<CpuKernel> &out) {
  return CpuKernel::load(path, canonicalSpec, out);
}

std::string Runtime::Impl::loadBundled(const std::string &path,
                                       const std::string &canonicalSpec,
                                       std::unique_ptr<CudaKernel> &out) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in),
                    std::istreambuf_iterator<char>()};
  if (!in.good() && !in.eof())
    return fmt::format("kernel {}: cannot read it", path);
  if (bytes.empty())
    return fmt::format("kernel {}: missing or empty", path);
  return CudaKernel::load(bytes, canonicalSpec, out, path);
}

/// Looks `key` up in the disk cache. "" with `out` set (a hit) or left empty
/// (a miss; `rejected` says why if an entry was there but bad), or an error
/// that is not the entry's fault. Bad entries are removed only under the
/// key's lock (`removeBad`): without it, the entry might be one another
/// process has just rebuilt.
template <typename K>
std::string Runtime::Impl::loadFromDisk(const std::string &key,
                                        const std::string &canonicalSpec,
                                        bool removeBad,
                                        std::unique_ptr<K> &out,
                                        std::string &rejected) {
  std::string payload, why;
  const std::string path = disk.entryPath(key);
  switch (disk.read(key, payload, why)) {
  case detail::DiskCache::Lookup::Missing:
    return {};
  case detail::DiskCache::Lookup::Bad:
    rejected = fmt::format("cache entry {}: {}", path, why);
    break;
  case detail::DiskCache::Lookup::Hit:
    // Verified bytes that do not load (another ABI or spec) are as bad as
    // corrupt ones.
    if (std::string err =
            loadPayload(payload, canonicalSpec, path, out, rejected);
        !err.empty())
      return err;
    if (rejected.empty())
      return {};
    break;
  }
  if (removeBad) {
    disk.remove(key);
    ++stats.diskRejected;
  }
  return {};
}

template <typename K>
std::string Runtime::Impl::loadOrBuild(const AttentionSpec &spec,
                                       const TileConfig &config, Target target,
                                       std::string_view targetKey,
                                       const std::string &canonicalSpec,
                                       const std::string &configKey,
                                       std::unique_ptr<K> &out) {
  // The ahead-of-time bundle first: tuned shapes never compile.
  if (std::string path = bundled(canonicalSpec, config, out); !path.empty()) {
    if (std::string err = loadBundled(path, canonicalSpec, out); !err.empty())
      return err;
    ++stats.bundleHits;
    return {};
  }
  KernelCompiler *compiler = options.compiler;
  auto noKernel = [&] {
    return fmt::format("no cached kernel for {} and no compiler to build one "
                       "(config {}, target {}, cache {})",
                       canonicalSpec, configKey, targetKey,
                       cacheDir.empty() ? "unset" : cacheDir);
  };
  if (cacheDir.empty() && !compiler)
    return noKernel();
  if (!capError.empty())
    return capError;
  if (std::string err = disk.open(); !err.empty())
    return err;
  const std::string fingerprint =
      compiler ? compiler->fingerprint(target) : std::string();
  const std::string key =
      detail::cacheKey({canonicalSpec, configKey, targetKey, fingerprint,
                        TILT_VERSION, TILT_COMMIT, kKernelAbiVersion});

  // Hits take no lock.
  std::string rejected;
  if (std::string err =
          loadFromDisk(key, canonicalSpec, /*removeBad=*/false, out, rejected);
      !err.empty())
    return err;
  if (out) {
    ++stats.diskHits;
    return {};
  }
  if (!compiler && rejected.empty())
    return noKernel();

  // A miss. Processes missing the same key queue on its lock; the first
  // compiles and writes the entry, the others find it when they get the lock.
  detail::KeyLock lock;
  if (std::string err = disk.lock(key, lock); !err.empty())
    return err;
  rejected.clear();
  if (std::string err =
          loadFromDisk(key, canonicalSpec, /*removeBad=*/true, out, rejected);
      !err.empty())
    return err;
  if (out) {
    ++stats.diskHits;
    return {};
  }
  // From here on, a failure leaves no entry, and the lock file must not
  // outlive the entry.
  auto fail = [&](std::string err) {
    out.reset();
    lock.removeFile();
    return err;
  };
  if (!compiler)
    return fail(rejected.empty()
                    ? noKernel()
                    : fmt::format("{} (entry removed; no compiler to rebuild "
                                  "it)",
                                  rejected));

  ++stats.compiles;
  const TileConfig effective =
      config.isDefault() ? compiler->defaultConfig(spec, target) : config;
  std::string artifact;
  if (std::string err = compiler->compile(spec, effective, target, artifact);
      !err.empty())
    return fail(fmt::format("compile: {}", err));
  // Load before writing: an artifact that does not load never enters the
  // cache.
  if (std::string err = loadPayload(artifact, canonicalSpec,
                                    disk.entryPath(key), out, rejected);
      !err.empty())
    return fail(std::move(err));
  if (!rejected.empty())
    return fail(fmt::format("compiled artifact rejected: {}", rejected));
  if (std::string err = disk.write(key, artifact); !err.empty())
    return fail(std::move(err));
  return {};
}

bool Runtime::Impl::gatherStridedKv(const AttentionSpec &spec,
                                    const Geometry &g, TensorRef &k,
                                    TensorRef &v) {
  const int64_t D = spec.headDim, B = g.batch, Hkv = spec.kvHeads;
  const int64_t S = k.shape[2];
  const size_t elt = size_t(byteWidth(spec.dtype));
  // Beyond 2^40 bytes (logical shapes over broadcast strides can claim
  // that much), or where the scratch cannot be had, the kernel reads the
  // strided rows in place instead.
  const __int128 bytes = __int128(B) * Hkv * S * D * __int128(elt);
  if (bytes > (__int128(1) << 40))
    return false;
  const size_t each = size_t(bytes);
  try {
    if (kvScratch.size() < 2 * each)
      kvScratch.resize(2 * each);
  } catch (const std::exception &) { // bad_alloc, length_error
    return false;
  }
  TensorRef *kv[2] = {&k, &v};
  pool.parallelFor(2 * B * Hkv, [&](int64_t item) {
    const TensorRef &t = *kv[item / (B * Hkv)];
    const int64_t bh = item % (B * Hkv), b = bh / Hkv, h = bh % Hkv;
    const auto *src = static_cast<const unsigned char *>(t.data);
    unsigned char *dst = kvScratch.data() + size_t(item / (B * Hkv)) * each +
                         size_t(bh * S * D) * elt;
    for (int64_t j = 0; j < S; ++j)
      std::memcpy(
          dst + size_t(j * D) * elt,
          src +
              size_t(b * t.stride(0) + h * t.stride(1) + j * t.stride(2)) * elt,
          size_t(D) * elt);
  });
  for (int i = 0; i < 2; ++i) {
    TensorRef packed(kvScratch.data() + size_t(i) * each, {B, Hkv, S, D});
    *kv[i] = packed;
  }
  return true;
}

void Runtime::Impl::launch(const AttentionSpec &spec, const AttentionArgs &args,
                           const Geometry &g, const CpuKernel &kernel) {
  const int64_t H = spec.heads;
  TensorRef lse = args.lse;
  if (!lse.present()) {
    const size_t need = size_t(g.rowsQ * H * (spec.varlen ? 1 : g.batch));
    if (lseScratch.size() < need)
      lseScratch.resize(need);
    lse = spec.varlen ? TensorRef(lseScratch.data(), {H, g.rowsQ})
                      : TensorRef(lseScratch.data(), {g.batch, H, g.rowsQ});
  }

  // KernelABI.h's order: q, k, v, o, lse, then the optional inputs.
  DescriptorSlot slots[11];
  void *descriptors[12];
  int n = 0;
  const TensorRef &lseRef = lse;
  const bool decode = kernel.itemsPerKvHead();
  TensorRef k = args.k, v = args.v;
  const int64_t queryBlocks =
      (g.maxSq + kernel.info().blockM - 1) / kernel.info().blockM;
  if (!decode && !spec.varlen && !spec.pageSize &&
      queryBlocks >= kGatherKvMinQueryBlocks &&
      (k.stride(2) != spec.headDim || v.stride(2) != spec.headDim))
    gatherStridedKv(spec, g, k, v);
  for (const TensorRef *t :
       {&args.q, static_cast<const TensorRef *>(&k),
        static_cast<const TensorRef *>(&v), &args.o, &lseRef}) {
    descriptors[n] = fillDescriptor(slots[n], *t);
    ++n;
  }
  // The decode family takes split-KV parts (none: a count of 0). Splits per
  // TilePolicy's decodeSplits rule unless the options fix them.
  SplitParts parts;
  parts.oLike = &args.o;
  parts.lseLike = &lseRef;
  // The token-row path (paged, small groups, Sq = 1): a call per (batch,
  // split), so only batches and splits spread over the threads.
  const bool tokenRows =
      decode && decodeTokenRows(spec, kernel.variant()) && g.maxSq == 1;
  if (decode) {
    int64_t splits =
        options.decodeSplits > 0
            ? std::min<int64_t>(options.decodeSplits, kDecodeMaxSplits)
            : decodeSplits(tokenRows ? g.batch : g.batch * spec.kvHeads,
                           g.maxSk, pool.threads());
    // The parts take S times o and lse in f32; a chunked prefill against a
    // paged cache can have thousands of rows, so they are held to 256 MiB.
    constexpr int64_t kMaxPartFloats = int64_t(64) << 20;
    const int64_t perSplit =
        std::max<int64_t>(1, args.o.numElements() + lse.numElements());
    splits = std::min(splits, kMaxPartFloats / perSplit);
    if (splits > 1) {
      parts.count = splits;
      const size_t oSize = size_t(splits * args.o.numElements());
      const size_t lseSize = size_t(splits * lse.numElements());
      if (splitScratch.size() < oSize + lseSize)
        splitScratch.resize(oSize + lseSize);
      parts.o = splitScratch.data();
      parts.lse = splitScratch.data() + oSize;
    }
  }
  int64_t offsets[2];
  n = appendOptionalDescriptors(spec, args, g, nullptr, slots, descriptors, n,
                                offsets, decode ? &parts : nullptr);

  // Work items (KernelABI.h): (batch, split, kv head) for the decode family,
  // else (batch, head, query block).
  const int64_t blockM = kernel.info().blockM;
  const int64_t items =
      decode ? g.batch * std::max<int64_t>(1, parts.count) * spec.kvHeads
             : g.batch * H * ((g.maxSq + blockM - 1) / blockM);
  const CpuEntryFn entry = kernel.entry();
  // A paged decode kernel walks a call's items of one (batch, split)
  // together (Decode.cpp: their kv heads share the cache's token rows), so
  // it gets runs of up to 8 items, as long as every thread still has two
  // runs; on the token-row path, every kv head of one (batch, split).
  int64_t run = 1;
  if (tokenRows)
    run = spec.kvHeads;
  else if (decode && spec.pageSize)
    run = std::clamp<int64_t>(items / (2 * pool.threads()), 1, 8);
  pool.parallelFor((items + run - 1) / run, [&](int64_t r) {
    entry(descriptors, r * run, std::min(items, (r + 1) * run));
  });
  if (parts.count == 0)
    return;
  // The parts' exact merge, rows spread over the pool: every row of a dense
  // o; varlen, the tokens the sequences cover (those past cu_seqlens_q[B]
  // are no item's, and stay as the caller left them).
  const int32_t *cuQ = static_cast<const int32_t *>(args.cuSeqlensQ.data);
  const int64_t rows = spec.varlen ? int64_t(cuQ[g.batch]) * H
                                   : args.o.numElements() / spec.headDim;
  const int64_t chunks = std::min<int64_t>(rows, 4 * pool.threads());
  pool.parallelFor(chunks, [&](int64_t c) {
    mergeSplitRows(spec, parts, args.o.data, static_cast<float *>(lse.data),
                   rows * c / chunks, rows * (c + 1) / chunks);
  });
}

void Runtime::Impl::launchBackward(const AttentionSpec &spec,
                                   const AttentionArgs &args,
                                   const BackwardArgs &grads, const Geometry &g,
                                   const CpuKernel &kernel) {
  const int64_t H = spec.heads;
  // KernelABI.h's backward order: q, k, v, o, grad_o, lse, grad_lse, dq, dk,
  // dv, row_scale, then slopes and dslopes, the mask, cu_seqlens, offsets.
  if (rowScaleScratch.size() < size_t(args.lse.numElements()))
    rowScaleScratch.resize(args.lse.numElements());
  TensorRef rowScale = args.lse;
  rowScale.data = rowScaleScratch.data();
  TensorRef gradLse = grads.gradLse;
  if (!gradLse.present()) {
    if (zeroGradLse.size() < size_t(args.lse.numElements()))
      zeroGradLse.resize(args.lse.numElements(), 0.0f);
    gradLse = args.lse;
    gradLse.data = zeroGradLse.data();
  }
  DescriptorSlot slots[16];
  void *descriptors[17];
  int n = 0;
  for (const TensorRef *t :
       {&args.q, &args.k, &args.v, &args.o, &grads.gradO,
        static_cast<const TensorRef *>(&args.lse),
        static_cast<const TensorRef *>(&gradLse), &grads.dq, &grads.dk,
        &grads.dv, static_cast<const TensorRef *>(&rowScale)}) {
    descriptors[n] = fillDescriptor(slots[n], *t);
    ++n;
  }
  // The kernel writes [B, H] slope gradients; per-head slopes sum over B
  // below.
  float *dslopes = nullptr;
  if (g.hasSlopes) {
    const bool direct = grads.dslopes.present() && grads.dslopes.rank == 2;
    if (!direct && dslopesScratch.size() < size_t(g.batch * H))
      dslopesScratch.resize(g.batch * H);
    dslopes = direct ? static_cast<float *>(grads.dslopes.data)
                     : dslopesScratch.data();
  }
  int64_t offsets[2];
  n = appendOptionalDescriptors(spec, args, g, dslopes, slots, descriptors, n,
                                offsets);

  // Items (KernelABI.h): the key blocks of every (batch, kv head), then one
  // per (batch, head) for dq -- which write the row_scale the key-block
  // items read, so they all run first -- then the fused ones, one per
  // (batch, kv head).
  const int64_t blockN = kernel.info().blockN;
  const int64_t kvItems = g.batch * spec.kvHeads;
  const int64_t keyItems = kvItems * ((g.maxSk + blockN - 1) / blockN);
  const int64_t headItems = g.batch * H;
  const CpuEntryFn entry = kernel.entry();
  // A fused item's heap stays bounded even where the options ask for it.
  const int64_t heap =
      fusedBackwardHeapBytes(spec, kernel.info().blockM, blockN, g.maxSk);
  const bool fused =
      options.backwardSchedule == BackwardSchedule::Auto
          ? fusedBackward(kvItems, pool.threads(), heap)
          : options.backwardSchedule == BackwardSchedule::Fused &&
                heap <= kFusedBackwardMaxHeapBytes;
  stats.lastBackwardSchedule =
      fused ? BackwardSchedule::Fused : BackwardSchedule::TwoPass;
  if (fused) {
    const int64_t first = keyItems + headItems;
    pool.parallelFor(kvItems, [&](int64_t i) {
      entry(descriptors, first + i, first + i + 1);
    });
  } else {
    pool.parallelFor(headItems, [&](int64_t i) {
      entry(descriptors, keyItems + i, keyItems + i + 1);
    });
    pool.parallelFor(keyItems,
                     [&](int64_t item) { entry(descriptors, item, item + 1); });
  }
  if (g.hasSlopes && grads.dslopes.present() && grads.dslopes.rank == 1) {
    auto *out = static_cast<float *>(grads.dslopes.data);
    for (int64_t h = 0; h < H; ++h) {
      float sum = 0;
      for (int64_t b = 0; b < g.batch; ++b) // fixed order: deterministic
        sum += dslopes[b * H + h];
      out[h] = sum;
    }
  }
}

//===----------------------------------------------------------------------===//
// CUDA
//===----------------------------------------------------------------------===//

std::string Runtime::Impl::cudaDevice(const AttentionSpec &spec) {
  // Before touching the driver: no device makes an f32 kernel possible.
  if (spec.dtype == DType::F32)
    return "dtype f32: the cuda target supports f16 and bf16";
  if (!haveDevice) {
    if (std::string err = cuda::probe(device); !err.empty())
      return err;
    cudaTargetKey = fmt::format("cuda-{}", device.arch);
    haveDevice = true;
  }
  return {};
}

std::string Runtime::Impl::cudaConfig(const AttentionSpec &spec,
                                      const TileConfig &requested,
                                      int64_t maxSq, TileConfig &out) const {
  const std::string_view decode = toString(KernelVariant::GpuDecodeSm80);
  if (!requested.isDefault()) {
    out = requested;
    return {};
  }
  // The variant depends on the device, which the compiler cannot see; zero
  // block sizes ask the compiler for its defaults for that variant. Short
  // query sequences take the decode family, as on the CPU (TilePolicy.h),
  // except varlen ones (gpu_decode_sm80 takes dense or paged k/v).
  out = TileConfig();
  if (std::string err = cuda::defaultVariant(spec, device, out.variant);
      !err.empty())
    return err;
  if (useGpuDecodeFamily(spec, maxSq))
    out.variant = std::string(decode);
  return {};
}

/// A configuration named for a paged cache on the CUDA target must be the
/// GPU decode family's (before the device is probed: no GPU needed to say
/// so).
static std::string cudaPagedVariantError(const AttentionSpec &spec,
                                         const TileConfig &config) {
  if (!spec.pageSize || config.isDefault() ||
      config.kind() == KernelVariant::GpuDecodeSm80)
    return {};
  return fmt::format("config: variant {} cannot read a paged KV cache; on "
                     "target cuda gpu_decode_sm80 does",
                     config.variant);
}

std::string Runtime::Impl::checkCudaArgs(const AttentionSpec &spec,
                                         const AttentionArgs &args,
                                         Geometry &g) {
  // The checks read cu_seqlens, block tables and context lengths, which
  // live on the device: check host copies. Only shapes checkArgs accepts are
  // copied; with others it fails before reading any data.
  AttentionArgs checked = args;
  using Copy = std::tuple<const char *, const TensorRef *,
                          std::vector<int32_t> *, TensorRef *>;
  std::vector<Copy> copies;
  const TensorRef &cuQ = args.cuSeqlensQ, &cuK = args.cuSeqlensK;
  if (spec.varlen && cuQ.present() && cuQ.rank == 1 && cuQ.shape[0] >= 2 &&
      cuK.present() && cuK.rank == 1 && cuK.shape[0] == cuQ.shape[0]) {
    if (cuQ.shape[0] > 65536)
      return fmt::format("cu_seqlens_q: {} sequences; the cuda target takes "
                         "at most 65535",
                         cuQ.shape[0] - 1);
    copies = {{"cu_seqlens_q", &cuQ, &hostCuSeqlensQ, &checked.cuSeqlensQ},
              {"cu_seqlens_k", &cuK, &hostCuSeqlensK, &checked.cuSeqlensK}};
  }
  // (A table of no pages is not copied; context_lens, which the checks read
  // whatever the table holds, is.)
  const TensorRef &table = args.blockTable, &lens = args.contextLens;
  if (spec.pageSize && table.present() && table.rank == 2 && lens.present() &&
      lens.rank == 1 && lens.shape[0] == table.shape[0] && table.shape[0] > 0) {
    if (table.shape[0] > 65535)
      return fmt::format("block_table: {} sequences; the cuda target takes "
                         "at most 65535",
                         table.shape[0]);
    if (table.shape[1] > (int64_t(1) << 24) / table.shape[0])
      return fmt::format("block_table: {} entries; the cuda target checks at "
                         "most 2^24",
                         table.shape[0] * table.shape[1]);
    if (table.shape[1] > 0)
      copies.push_back(
          {"block_table", &table, &hostBlockTable, &checked.blockTable});
    copies.push_back(
        {"context_lens", &lens, &hostContextLens, &checked.contextLens});
  }
  // The caller's stream may not order with the copies below (which wait
  // only for the default stream): the values may still be in flight.
  if (!copies.empty() && args.cudaStream)
    if (std::string err = cuda::synchronize(); !err.empty())
      return err;
  for (auto [name, t, host, dst] : copies) {
    const auto n = size_t(t->numElements());
    host->resize(n);
    if (std::string err =
            cuda::copyToHost(host->data(), t->data, n * sizeof(int32_t));
        !err.empty())
      return fmt::format("{}: cannot read it from the device: {}", name, err);
    dst->data = host->data();
  }
  return checkArgs(spec, checked, g);
}

std::string Runtime::Impl::runCuda(const AttentionSpec &spec,
                                   const AttentionArgs &args,
                                   const TileConfig &config) {
  if (std::string err = cudaPagedVariantError(spec, config); !err.empty())
    return err;
  if (std::string err = checkStrides(args); !err.empty())
    return err;
  if (std::string err = checkCudaAlignment(strideRows(args), spec.dtype);
      !err.empty())
    return err;
  if (std::string err = cudaDevice(spec); !err.empty())
    return err;
  Geometry g;
  if (std::string err = checkCudaArgs(spec, args, g); !err.empty())
    return err;

  TileConfig chosen;
  if (std::string err = cudaConfig(spec, config, g.maxSq, chosen); !err.empty())
    return err;
  CudaKernel *kernel = nullptr;
  if (std::string err =
          resolve(spec, chosen, Target::CUDA, cudaTargetKey, kernel);
      !err.empty())
    return err;

  AttentionArgs launchArgs = args;
  if (!args.lse.present()) {
    const int64_t H = spec.heads;
    const size_t need =
        size_t(g.rowsQ * H * (spec.varlen ? 1 : g.batch)) * sizeof(float);
    if (lseScratchDevice.size() < need) {
      // Earlier launches may still write the old scratch.
      if (std::string err = cuda::synchronize(); !err.empty())
        return err;
      if (std::string err = lseScratchDevice.allocate(need); !err.empty())
        return err;
    }
    void *scratch = lseScratchDevice.data();
    launchArgs.lse = spec.varlen ? TensorRef(scratch, {H, g.rowsQ})
                                 : TensorRef(scratch, {g.batch, H, g.rowsQ});
  }
  if (std::string err = kernel->launch(
          spec, launchArgs, {g.batch, g.maxSq, g.maxSk, g.usedQ, g.usedK});
      !err.empty())
    return err;
  noteKernel(stats.lastKernel, kernel->info());
  return {};
}

std::string Runtime::Impl::backwardCuda(const AttentionSpec &spec,
                                        const AttentionArgs &args,
                                        const BackwardArgs &grads,
                                        const TileConfig &config) {
  // Before the device is probed: what no GPU would change.
  if (!config.isDefault() && !config.is(KernelVariant::GpuBwdSm80))
    return fmt::format("config: the backward on target cuda takes variant "
                       "gpu_bwd_sm80, got '{}'",
                       config.variant);
  if (std::string err = checkStrides(args); !err.empty())
    return err;
  if (std::string err = checkGradStrides(grads); !err.empty())
    return err;
  for (std::string err : {checkCudaAlignment(strideRows(args), spec.dtype),
                          checkCudaAlignment(strideRows(grads), spec.dtype)})
    if (!err.empty())
      return err;
  if (std::string err = cudaDevice(spec); !err.empty())
    return err;
  Geometry g;
  if (std::string err = checkCudaArgs(spec, args, g); !err.empty())
    return err;
  if (std::string err = checkBackwardArgs(spec, args, grads, g); !err.empty())
    return err;
  TileConfig chosen = config;
  if (chosen.isDefault())
    chosen.variant = std::string(toString(KernelVariant::GpuBwdSm80));
  CudaKernel *kernel = nullptr;
  if (std::string err =
          resolve(spec, chosen, Target::CUDA, cudaTargetKey, kernel);
      !err.empty())
    return err;
  BackwardArgs launchGrads = grads;
  if (!grads.gradLse.present()) {
    // No upstream gradient of lse: zeros (the kernels only read them).
    const size_t need = size_t(args.lse.numElements()) * sizeof(float);
    if (gradLseZerosDevice.size() < need) {
      if (std::string err = cuda::synchronize(); !err.empty())
        return err;
      if (std::string err = gradLseZerosDevice.allocate(need); !err.empty())
        return err;
      const std::vector<char> zeros(need, 0);
      if (std::string err = gradLseZerosDevice.upload(zeros.data(), need);
          !err.empty())
        return err;
    }
    launchGrads.gradLse = args.lse;
    launchGrads.gradLse.data = gradLseZerosDevice.data();
  }
  if (std::string err = kernel->launchBackward(spec, args, launchGrads, g.batch,
                                               g.maxSq, g.maxSk);
      !err.empty())
    return err;
  noteKernel(stats.lastKernel, kernel->info());
  return {};
}

std::string Runtime::Impl::prepareCuda(const AttentionSpec &spec,
                                       const TileConfig &config) {
  if (std::string err = cudaPagedVariantError(spec, config); !err.empty())
    return err;
  if (std::string err = cudaDevice(spec); !err.empty())
    return err;
  TileConfig chosen;
  if (std::string err = cudaConfig(spec, config, 0, chosen); !err.empty())
    return err;
  CudaKernel *kernel = nullptr;
  return resolve(spec, chosen, Target::CUDA, cudaTargetKey, kernel);
}

Runtime::Runtime(RuntimeOptions options)
    : impl(std::make_unique<Impl>(std::move(options))) {}

Runtime::~Runtime() = default;

std::string Runtime::run(const AttentionSpec &spec, const AttentionArgs &args,
                         Target target, const TileConfig &config) {
  return impl->timedCall([&]() -> std::string {
    if (std::string err = spec.validate(); !err.empty())
      return "invalid spec: " + err;
    if (!impl->bundleError.empty())
      return impl->bundleError;
    // (On CUDA a backward module launched as the forward would read
    // parameters it was never given.)
    if (config.kind() && isBackwardVariant(*config.kind()))
      return fmt::format("config: variant {} is a backward kernel; call "
                         "backward()",
                         config.variant);
    if (target == Target::CUDA)
      return impl->runCuda(spec, args, config);
    Geometry geometry;
    if (std::string err = checkArgs(spec, args, geometry); !err.empty())
      return err;
    if (std::string err = checkSlopeValues(args); !err.empty())
      return err;
    CpuKernel *kernel = nullptr;
    // Keys per sequence (the mean one when ragged) select the tuned record.
    int64_t seqK = spec.varlen
                       ? args.k.shape[0] / std::max<int64_t>(1, geometry.batch)
                       : geometry.maxSk;
    // A variant named without blocks takes that variant's default blocks.
    TileConfig chosen =
        completeCpuConfig(impl->configFor(spec, geometry.maxSq, seqK, config));
    if (config.isDefault())
      chosen = impl->fittedToQueries(spec, chosen, geometry.maxSq);
    if (const std::string &err = impl->hostRuns(chosen); !err.empty())
      return err;
    if (std::string err =
            impl->resolve(spec, chosen, target, toString(target), kernel);
        !err.empty())
      return err;
    impl->launch(spec, args, geometry, *kernel);
    noteKernel(impl->stats.lastKernel, kernel->info());
    return {};
  });
}

std::string Runtime::backward(const AttentionSpec &spec,
                              const AttentionArgs &args,
                              const BackwardArgs &grads, Target target,
                              const TileConfig &config) {
  return impl->timedCall([&]() -> std::string {
    if (std::string err = spec.validate(); !err.empty())
      return "invalid spec: " + err;
    if (spec.pageSize)
      return "page_size: the backward takes dense k and v (a paged KV cache "
             "is for inference)";
    if (!config.isDefault() &&
        !(config.kind() && isBackwardVariant(*config.kind())))
      return fmt::format("config: the backward takes variant {} (target "
                         "cuda), got '{}'",
                         backwardVariantNames(), config.variant);
    if (target == Target::CUDA)
      return impl->backwardCuda(spec, args, grads, config);
    if (config.kind() && isGpuVariant(*config.kind()))
      return fmt::format("config: variant {} is for target cuda",
                         config.variant);
    Geometry geometry;
    if (std::string err = checkArgs(spec, args, geometry); !err.empty())
      return err;
    if (std::string err = checkBackwardArgs(spec, args, grads, geometry);
        !err.empty())
      return err;
    if (std::string err = checkGradStrides(grads); !err.empty())
      return err;
    if (std::string err = checkSlopeValues(args); !err.empty())
      return err;
    const TileConfig chosen = !config.isDefault() ? completeCpuConfig(config)
                              : spec.dtype == DType::BF16
                                  ? impl->bf16BackwardConfig
                                  : impl->backwardConfig;
    if (const std::string &err = impl->hostRuns(chosen); !err.empty())
      return err;
    CpuKernel *kernel = nullptr;
    if (std::string err =
            impl->resolve(spec, chosen, target, toString(target), kernel);
        !err.empty())
      return err;
    impl->launchBackward(spec, args, grads, geometry, *kernel);
    noteKernel(impl->stats.lastKernel, kernel->info());
    return {};
  });
}

std::string Runtime::prepare(const AttentionSpec &spec, Target target,
                             const TileConfig &config) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (std::string err = spec.validate(); !err.empty())
    return "invalid spec: " + err;
  if (target == Target::CUDA)
    return impl->prepareCuda(spec, config);
  // As on the GPU, a decode step is assumed for a paged cache (run()
  // picks the family by the call's query length), else a prefill.
  const TileConfig chosen = completeCpuConfig(
      config.isDefault() && spec.pageSize ? impl->decodeConfig : config);
  if (const std::string &err = impl->hostRuns(chosen); !err.empty())
    return err;
  CpuKernel *kernel = nullptr;
  return impl->resolve(spec, chosen, target, toString(target), kernel);
}

void Runtime::clearMemoryCache() {
  std::lock_guard<std::mutex> lock(impl->mutex);
  impl->cpuKernels.clear();
  impl->cudaKernels.clear();
}

RunStats Runtime::stats() const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  return impl->stats;
}

void Runtime::resetStats() {
  std::lock_guard<std::mutex> lock(impl->mutex);
  impl->stats = RunStats();
}

const std::string &Runtime::cacheDir() const { return impl->cacheDir; }

const std::string &Runtime::bundleStatus() const {
  return impl->bundle.status;
}

uint64_t Runtime::cacheMaxBytes() const { return impl->capBytes; }

int Runtime::threads() const { return impl->pool.threads(); }

} // namespace tilt
