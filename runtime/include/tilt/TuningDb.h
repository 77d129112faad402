//===- TuningDb.h - Tuned tile configurations, by shape ---------*- C++ -*-===//
//
// The tuning database tilt-tune writes into kernels/ (one file per target
// class) and the runtime reads. A record keeps, for one key (dtype, head dim,
// causal, heads, sequence length), the best configuration found, its time,
// and the default configuration's time. The file is plain text:
//
//   tilt-tuning-db 1
//   target cpu
//   machine <LLVM cpu name>
//   tilt <version>
//   family <what was timed>
//   # dtype head_dim causal heads seq | best | best_ms | default | default_ms
//   bf16 128 1 32 2048 | cpu_amx 128 256 | 31.200 | cpu_amx 128 128 | 33.100
//
// Lookup (the nearest-bucket rule): only records with the spec's dtype, head
// dim and causality qualify; among them the one minimizing
//   |log2(heads / record.heads)| + |log2(Sk / record.seq)|
// wins, ties going to the smaller seq, then the smaller heads. Sk, not Sq,
// measures the work per query row, so decoding (Sq = 1) with a long cache
// uses the long-sequence configuration.
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
  int64_t seq = 0;
  bool operator==(const TuningKey &o) const {
    return dtype == o.dtype && headDim == o.headDim && causal == o.causal &&
           heads == o.heads && seq == o.seq;
  }
};

/// The spec a key stands for in the databases' family: ALiBi (relative)
/// with standard slopes, one kv head per query head.
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
  static constexpr int kFormat = 1;

  /// Reads `path`; "" or a one-line error naming the file and line.
  static std::string load(const std::string &path, TuningDb &out);
  /// Writes atomically (temp file + rename), records sorted by key.
  std::string save(const std::string &path) const;

  /// The nearest record for `spec` at key length `seqK`, or null.
  const TuningRecord *lookup(const AttentionSpec &spec, int64_t seqK) const;
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
