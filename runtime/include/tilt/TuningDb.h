//===- TuningDb.h - Tuned tile configurations, by shape ---------*- C++ -*-===//
//
// The tuning database tilt-tune writes into kernels/ (one file per target
// class) and the runtime reads. A record keeps, for one key, the best
// configuration found, its time, and the default configuration's time. Two
// kinds of key: prefill (dtype, head dim, causal, heads, sequence length;
// one kv head per head, Sq = Sk) and decode, for the decode family (TilePolicy
// .h's useDecodeFamily: Sq <= 16 against a long cache), which adds the kv
// heads and Sq and calls the sequence length Sk; a decode key with a page
// size (format 3) was timed against a paged cache of that page size through a
// shuffled block table. The file is plain text:
//
//   tilt-tuning-db 3
//   target cpu
//   machine <LLVM cpu name>
//   tilt <version>
//   family <what was timed>
//   # dtype head_dim causal heads seq | best | best_ms | default | default_ms
//   bf16 128 1 32 2048 | cpu_amx 128 256 | 31.200 | cpu_amx 128 128 | 33.100
//   # decode dtype head_dim causal heads kv_heads sq sk [page_size] | ...
//   decode bf16 128 1 32 8 16 8192 | cpu_decode_avx512 64 16 0 1 | 9.100 | ...
//   decode bf16 128 1 32 8 1 32768 16 | cpu_decode_avx512 16 64 0 2 | ...
//
// A configuration is "variant block_m block_n", with "num_warps
// num_stages" after it where they are not 0 (GPU variants; the CPU decode
// kernels' num_stages, Decode.cpp).
// Formats 1 (prefill records only) and 2 (no page sizes) are read too.
//
// Lookup (the nearest-bucket rule): only records of the call's kind with
// the spec's dtype, head dim and causality qualify; among them the one
// minimizing
//   |log2(heads / record.heads)| + |log2(Sk / record.seq)|
// (decode also + |log2(group / record.group)| + |log2(Sq / record.sq)|,
// group = heads / kv heads) wins, ties going to the smaller seq, then the
// smaller Sq, heads, group and page size. Sk, not Sq, measures the work per
// query row.
// A call against a paged cache takes the nearest paged record (also +
// |log2(page_size / record.page_size)|) where the database has any for the
// dtype, head dim and causality, else the nearest contiguous one; a
// contiguous call takes contiguous records only. (Paged caches read each
// key's row through the block table and interleave every kv head's rows:
// their best blocks differ, BENCHMARKS.md, eleventh session.)
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TUNINGDB_H
#define TILT_TUNINGDB_H

#include "tilt/Runtime.h"
#include "tilt/Spec.h"

#include <string>
#include <vector>

namespace tilt {

struct TuningKey {
  DType dtype = DType::F32;
  int64_t headDim = 0;
  bool causal = false;
  int64_t heads = 0;
  int64_t seq = 0; ///< Sq = Sk (prefill); Sk (decode)
  /// Decode keys only (querySeq > 0): the query rows Sq (1 to
  /// kDecodeMaxSq) and the kv heads (dividing heads).
  int64_t querySeq = 0;
  int64_t kvHeads = 0;
  /// Decode keys only: the page size of the paged cache timed, 0 for a
  /// contiguous one.
  int64_t pageSize = 0;
  bool decode() const { return querySeq > 0; }
  bool operator==(const TuningKey &o) const = default;
};

/// The spec a key stands for in the databases' family: ALiBi (relative)
/// with standard slopes, one kv head per query head (decode keys: their kv
/// heads, and their page size).
AttentionSpec familySpec(const TuningKey &key);

struct TuningRecord {
  TuningKey key;
  TileConfig best;
  double bestMs = 0;
  TileConfig fallback; ///< the compiler's default configuration
  double fallbackMs = 0;
};

class TuningDb {
public:
  static constexpr int kFormat = 3;

  /// Reads `path`; "" or a one-line error naming the file and line.
  static std::string load(const std::string &path, TuningDb &out);
  /// Writes atomically (temp file + rename), records sorted by key, in
  /// format 2 unless a record names a page size (older readers keep
  /// reading databases without paged records).
  std::string save(const std::string &path) const;

  /// The nearest prefill record for `spec` at key length `seqK`, or null.
  const TuningRecord *lookup(const AttentionSpec &spec, int64_t seqK) const;
  /// The nearest decode record for `spec` with `seqQ` query rows and key
  /// length `seqK`, or null.
  const TuningRecord *lookupDecode(const AttentionSpec &spec, int64_t seqQ,
                                   int64_t seqK) const;
  const TuningRecord *find(const TuningKey &key) const;
  /// Inserts or replaces the record with the same key.
  void put(const TuningRecord &record);

  std::string target = "cpu";
  std::string machine;
  std::string tiltVersion;
  std::string family;
  std::vector<TuningRecord> records;
};

} // namespace tilt

#endif // TILT_TUNINGDB_H
