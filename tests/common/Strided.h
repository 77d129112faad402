//===- Strided.h - Strided copies of test tensors ----------------*- C++
//-*-===//
//
// The CPU kernels take q, k, v, o (and the backward's tensors) through their
// strides (TensorRef). The suites run each case a second time on strided
// copies of its tensors and expect the row-major run's bits: the kernel is
// the same, only its addresses change. The layout is the one a model hands
// over most: [B, S, H, D] memory seen as [B, H, S, D] (varlen [T, H, D]
// keeps its order), with one extra D-row of gap after every H rows, as a
// slice of a fused QKV tensor has. The gaps hold a sentinel: an input's
// gap is never read (a NaN there would show in the output), an output's
// is never written (checked).
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_STRIDED_H
#define TILT_TESTS_COMMON_STRIDED_H

#include "tilt/Half.h"
#include "tilt/Runtime.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace tilt::test {

class StridedCopy {
public:
  /// A strided tensor shaped like `like` (rank 3 or 4, row-major), holding
  /// `src`'s values when given (else only the sentinel in its gaps and
  /// zeros elsewhere). `tailRows` (rank 3, varlen k and v): that many more
  /// rows of sentinel after `like`'s, which the tensor's shape includes
  /// but no cu_seqlens entry reaches.
  StridedCopy(const TensorRef &like, DType dtype,
              const TypedBuffer *src = nullptr, int64_t tailRows = 0)
      : shape(like), rank(like.rank), tail(rank == 3 ? tailRows : 0) {
    // Physical dims: rank 4 [B, S, H + 1, D], rank 3 [T, H + 1, D].
    const int64_t D = like.shape[rank - 1];
    if (rank == 4) {
      const int64_t B = like.shape[0], H = like.shape[1], S = like.shape[2];
      strides[3] = 1;
      strides[1] = D;
      strides[2] = (H + 1) * D;
      strides[0] = S * (H + 1) * D;
      elements = B * strides[0];
    } else {
      const int64_t T = like.shape[0], H = like.shape[1];
      strides[2] = 1;
      strides[1] = D;
      strides[0] = (H + 1) * D;
      elements = (T + tail) * strides[0];
    }
    buffer = TypedBuffer(dtype, size_t(elements));
    for (int64_t i = 0; i < elements; ++i)
      buffer.set(size_t(i), std::numeric_limits<float>::quiet_NaN());
    forEach([&](int64_t logical, int64_t physical) {
      buffer.set(size_t(physical), src ? src->get(size_t(logical)) : 0.0f);
    });
  }

  /// The tensor to pass: `like`'s shape with this copy's strides.
  TensorRef ref() {
    TensorRef t(buffer.data(), {});
    t.rank = rank;
    std::copy_n(shape.shape, 4, t.shape);
    t.shape[0] += tail;
    std::copy_n(strides, 4, t.strides);
    return t;
  }

  /// Whether the elements equal `rowMajor`'s bit for bit (NaN equal to
  /// NaN) and every gap still holds the sentinel.
  bool sameBitsAs(const TypedBuffer &rowMajor) const {
    bool same = true;
    std::vector<bool> covered(size_t(elements), false);
    forEach([&](int64_t logical, int64_t physical) {
      covered[size_t(physical)] = true;
      same = same && bitsOf(buffer, physical) == bitsOf(rowMajor, logical);
    });
    for (int64_t i = 0; i < elements; ++i)
      same = same && (covered[size_t(i)] || std::isnan(buffer.get(size_t(i))));
    return same;
  }

private:
  /// Calls f(row-major index, strided index) for every element.
  template <typename F> void forEach(F f) const {
    const int64_t n0 = shape.shape[0], n1 = shape.shape[1], n2 = shape.shape[2],
                  n3 = rank == 4 ? shape.shape[3] : 1;
    int64_t logical = 0;
    for (int64_t a = 0; a < n0; ++a)
      for (int64_t b = 0; b < n1; ++b)
        for (int64_t c = 0; c < n2; ++c)
          for (int64_t d = 0; d < n3; ++d, ++logical)
            f(logical,
              rank == 4 ? a * strides[0] + b * strides[1] + c * strides[2] + d
                        : a * strides[0] + b * strides[1] + c);
  }
  static uint32_t bitsOf(const TypedBuffer &t, int64_t i) {
    if (t.dtype != DType::F32)
      return t.bits16[size_t(i)];
    uint32_t bits;
    std::memcpy(&bits, &t.f32[size_t(i)], sizeof bits);
    return bits;
  }

  TensorRef shape;
  int rank;
  int64_t tail;
  int64_t strides[4] = {0, 0, 0, 0};
  int64_t elements = 0;
  TypedBuffer buffer;
};

/// Sentinel rows the strided reruns put after varlen k and v: more than
/// any key block (256 at most), so that a block running past the last
/// sequence's keys would meet them.
inline constexpr int64_t kVarlenTailRows = 257;

/// Runs `args` again through `rt` with q, k, v, o strided copies
/// (StridedCopy) of `q`, `k`, `v` (varlen k and v with kVarlenTailRows
/// more) and returns "" or what differs from the row-major run's `o` and
/// `lse`, bit for bit.
inline std::string rerunStrided(Runtime &rt, const AttentionSpec &spec,
                                const AttentionArgs &args,
                                const TileConfig &config, const TypedBuffer &q,
                                const TypedBuffer &k, const TypedBuffer &v,
                                const TypedBuffer &o,
                                const std::vector<float> &lse) {
  // Varlen k and v also get rows past cu_seqlens_k's end: never read.
  const int64_t tail = spec.varlen ? kVarlenTailRows : 0;
  StridedCopy sq(args.q, spec.dtype, &q), sk(args.k, spec.dtype, &k, tail),
      sv(args.v, spec.dtype, &v, tail), so(args.o, spec.dtype);
  std::vector<float> slse(lse.size(), 0.0f);
  AttentionArgs strided = args;
  strided.q = sq.ref();
  strided.k = sk.ref();
  strided.v = sv.ref();
  strided.o = so.ref();
  strided.lse.data = slse.data();
  if (std::string err = rt.run(spec, strided, Target::CPU, config);
      !err.empty())
    return "strided run: " + err;
  if (!so.sameBitsAs(o))
    return "strided q/k/v/o: o differs from the row-major run's";
  if (std::memcmp(slse.data(), lse.data(), lse.size() * sizeof(float)) != 0)
    return "strided q/k/v/o: lse differs from the row-major run's";
  return {};
}

/// rerunStrided for a call's row-major run through `rt` and, when
/// `splitRt` is given, for its split-KV run (`splitO`, `splitLse`) through
/// `splitRt` too: there the merge writes o on the host.
inline std::string rerunStridedWithSplit(
    Runtime &rt, Runtime *splitRt, const AttentionSpec &spec,
    const AttentionArgs &args, const TileConfig &config, const TypedBuffer &q,
    const TypedBuffer &k, const TypedBuffer &v, const TypedBuffer &o,
    const std::vector<float> &lse, const TypedBuffer *splitO = nullptr,
    const std::vector<float> *splitLse = nullptr) {
  if (std::string err = rerunStrided(rt, spec, args, config, q, k, v, o, lse);
      !err.empty())
    return err;
  if (!splitRt)
    return {};
  if (std::string err = rerunStrided(*splitRt, spec, args, config, q, k, v,
                                     *splitO, *splitLse);
      !err.empty())
    return "split: " + err;
  return {};
}

} // namespace tilt::test

#endif // TILT_TESTS_COMMON_STRIDED_H
