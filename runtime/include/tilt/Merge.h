//===- Merge.h - Exact merge of partial attention results -------*- C++ -*-===//
//
// Context parallelism and split-KV decoding compute attention over disjoint
// key sets and combine the partial results exactly (ALIBI.md, "Merge"):
//
//   lse = log(sum_n exp(lse_n)),   o = sum_n exp(lse_n - lse) * o_n
//
// A part with lse_n = -inf (no visible key in its set) contributes nothing;
// a row where every part is -inf gives o = 0, lse = -inf. The arithmetic is
// in double; o is read and written in its dtype, lse in float32.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_MERGE_H
#define TILT_MERGE_H

#include "tilt/Runtime.h"

#include <string>
#include <vector>

namespace tilt {

/// One partial result: o [..., D] in the dtype of the merge and its lse, f32
/// of o's shape without the last dimension (dense: o [B, H, Sq, D], lse
/// [B, H, Sq]). Host memory.
struct AttentionState {
  TensorRef o;
  TensorRef lse;
};

/// Merges `parts` (at least one, all of one shape) into `o` and `lse` (which
/// may alias the first part's). Returns "" or one line naming the bad part or
/// tensor; on error nothing is written.
std::string mergeAttentionStates(DType dtype,
                                 const std::vector<AttentionState> &parts,
                                 const TensorRef &o, const TensorRef &lse);

} // namespace tilt

#endif // TILT_MERGE_H
