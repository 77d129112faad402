//===- ForwardCheck.h - A kernel's o and lse against float64 ----*- C++ -*-===//
//
// ALIBI.md's forward rule, as the numerics suites apply it: rows that see
// no key must give exactly o = 0 and lse = -inf; elsewhere the max abs error
// of o is held to reference::errorBound (1e-4 for f32, else twice the naive
// same-dtype error + 1e-6) and lse is compared too. Failures of the exact
// parts are reported to gtest here; the caller holds err to the bound.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_FORWARDCHECK_H
#define TILT_TESTS_COMMON_FORWARDCHECK_H

#include "tilt/Half.h"
#include "tilt/Reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <optional>
#include <vector>

namespace tilt::test {

struct ForwardComparison {
  double err = 0;       ///< max |o - ref| over rows that see a key
  double lseErr = 0;    ///< max |lse - ref| there
  double lseExcess = 0; ///< max of that minus 4 ulps of |ref| (far offsets)
  double bound = 0;     ///< reference::errorBound for the dtype
  int64_t emptyRows = 0;
};

/// Compares `rows` rows of D values of `o` (o's layout, as the reference's)
/// and the lse of row r at lse[lseIndex(r)] with `ref`; `in` and `ext` are
/// what `ref` was computed from (the naive yardstick runs on them, unless
/// `knownBound` gives the bound an earlier comparison of the same case got).
inline ForwardComparison
compareWithReference(const AttentionSpec &spec, const Extents &ext,
                     const reference::Inputs &in, const reference::Outputs &ref,
                     const TypedBuffer &o, const std::vector<float> &lse,
                     int64_t rows,
                     const std::function<int64_t(int64_t)> &lseIndex,
                     std::optional<double> knownBound = std::nullopt) {
  const int64_t D = spec.headDim;
  ForwardComparison c;
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t li = lseIndex(row);
    const double r = ref.lse[li];
    if (std::isinf(r)) {
      ++c.emptyRows;
      EXPECT_TRUE(std::isinf(lse[li]) && lse[li] < 0)
          << "lse of a fully masked row is " << lse[li];
      for (int64_t d = 0; d < D; ++d)
        if (o.get(row * D + d) != 0.0f) {
          ADD_FAILURE() << "fully masked row " << row << " has o[" << d
                        << "] = " << o.get(row * D + d);
          return c;
        }
      continue;
    }
    const double e = std::abs(double(lse[li]) - r);
    c.lseErr = std::max(c.lseErr, e);
    c.lseExcess = std::max(c.lseExcess, e - std::ldexp(std::abs(r), -21));
    for (int64_t d = 0; d < D; ++d) {
      const float x = o.get(row * D + d);
      if (!std::isfinite(x)) {
        ADD_FAILURE() << "row " << row << " has o[" << d << "] = " << x;
        c.err = INFINITY;
        return c;
      }
      c.err = std::max(c.err, std::abs(double(x) - ref.o[row * D + d]));
    }
  }
  if (knownBound) {
    c.bound = *knownBound;
    return c;
  }
  // f16/bf16: the naive same-dtype implementation's error sets the bound.
  double naiveErr = 0;
  if (spec.dtype != DType::F32) {
    const std::vector<double> naive = reference::naiveSameDtype(spec, ext, in);
    for (size_t i = 0; i < naive.size(); ++i)
      naiveErr = std::max(naiveErr, std::abs(naive[i] - ref.o[i]));
  }
  c.bound = reference::errorBound(spec.dtype, naiveErr);
  return c;
}

} // namespace tilt::test

#endif // TILT_TESTS_COMMON_FORWARDCHECK_H
