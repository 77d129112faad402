//===- Reference.h - float64 reference of ALIBI.md --------------*- C++ -*-===//
//
// The oracle every numerics test compares kernels with: a direct, unfused
// evaluation of ALIBI.md's formulas in double precision. Deliberately simple;
// speed is not a goal.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_REFERENCE_H
#define TILT_REFERENCE_H

#include "tilt/Half.h"
#include "tilt/Spec.h"

#include <cstdint>
#include <vector>

namespace tilt::reference {

/// Launch inputs, all row-major. Dense: q [B,H,Sq,D], k/v [B,Hkv,Sk,D].
/// Varlen: q [totalQ,H,D], k/v [totalK,Hkv,D], cuSeqlensQ/K [B+1].
struct Inputs {
  const float *q = nullptr;
  const float *k = nullptr;
  const float *v = nullptr;
  const float *slopes = nullptr; ///< custom slopes, [H] or [B,H]
  bool slopesPerBatch = false;   ///< true when `slopes` is [B,H]
  const uint8_t *keyPaddingMask = nullptr; ///< [B,Sk], 0 = padded
  const int32_t *cuSeqlensQ = nullptr;
  const int32_t *cuSeqlensK = nullptr;
  int64_t qOffset = 0, kOffset = 0; ///< spec.positionOffsets only
  /// spec.pageSize only: k/v are caches [num_pages, page_size, Hkv, D],
  /// blockTable [B, maxPages], contextLens [B] (Sk of each sequence).
  const int32_t *blockTable = nullptr;
  int64_t maxPages = 0;
  const int32_t *contextLens = nullptr;
};

struct Outputs {
  std::vector<double> o;   ///< same layout as q
  std::vector<double> lse; ///< dense: [B,H,Sq]; varlen: [H,totalQ]
};

/// Evaluates attention in float64. The spec must be valid.
Outputs attention(const AttentionSpec &spec, const Extents &ext,
                  const Inputs &in);

/// ALIBI.md's yardstick for f16/bf16 kernels: attention as a straightforward
/// framework computes it in spec.dtype. Q K^T accumulated in f32 and rounded
/// to the dtype, scaled in the dtype, the f32 bias added and rounded, softmax
/// in f32 rounded to the dtype, P V accumulated in f32 and rounded. `in`
/// holds the already-rounded inputs; the result has `attention()`'s o layout
/// (0 in rows that see no key).
std::vector<double> naiveSameDtype(const AttentionSpec &spec,
                                   const Extents &ext, const Inputs &in);

/// ALIBI.md's bound on a kernel's max abs error against `attention()`: 1e-4
/// for f32 (unit-normal inputs), else 2 * `naiveError` + 1e-6, where
/// `naiveError` is naiveSameDtype()'s max abs error on the same inputs.
double errorBound(DType dtype, double naiveError);

/// Gradients of attention() (ALIBI.md "Backward") for an upstream gradient
/// `dO` of o's layout and, optionally, `gradLse` of lse's: dq like q, dk/dv
/// like k/v (summed over the query heads of a GQA group), and, with custom
/// slopes, dslopes like `in.slopes` ([H] or [B,H]); empty otherwise.
struct Gradients {
  std::vector<double> dq, dk, dv, dslopes;
};

/// Evaluates the gradients in float64, the softmax recomputed exactly.
Gradients attentionBackward(const AttentionSpec &spec, const Extents &ext,
                            const Inputs &in, const float *dO,
                            const float *gradLse = nullptr);

/// ALIBI.md's yardstick for gradients: the backward as a framework computes
/// it in spec.dtype with P materialized in that dtype (products accumulated
/// in f32, each tensor rounded to the dtype; dslopes accumulated in f32).
/// `o` is the rounded forward output the kernels' backward also reads.
Gradients naiveBackwardSameDtype(const AttentionSpec &spec, const Extents &ext,
                                 const Inputs &in, const float *dO,
                                 const float *gradLse = nullptr);

/// ALIBI.md's bound on a gradient's max abs error against
/// attentionBackward(): 2 * `naiveError` + 1e-6, and for f32 additionally
/// at most 1e-4 * `maxRef` + 1e-6 (`maxRef`: the gradient's max |value|).
double gradientErrorBound(DType dtype, double naiveError, double maxRef);

/// The slope of query head `h` in batch `b` as the kernels must use it
/// (float32, per ALIBI.md), or 0 when the spec has no ALiBi bias.
float slopeFor(const AttentionSpec &spec, const Inputs &in, int64_t b,
               int64_t h);

/// Inputs for the reference from the typed buffers a kernel ran on (so the
/// reference sees exactly the rounded values): the widened q, k, v and the
/// Inputs pointing at them and at the optional tensors (empty vectors: absent;
/// cu_seqlens only when `varlen`). Move-only: `in` points into the vectors.
struct RoundedInputs {
  std::vector<float> q, k, v;
  Inputs in;
  RoundedInputs() = default;
  RoundedInputs(RoundedInputs &&) = default;
  RoundedInputs(const RoundedInputs &) = delete;
};
RoundedInputs fromBuffers(const TypedBuffer &q, const TypedBuffer &k,
                          const TypedBuffer &v,
                          const std::vector<float> &slopes,
                          bool slopesPerBatch,
                          const std::vector<uint8_t> &keyPaddingMask,
                          bool varlen, const std::vector<int32_t> &cuQ,
                          const std::vector<int32_t> &cuK);

} // namespace tilt::reference

#endif // TILT_REFERENCE_H
