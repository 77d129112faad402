//===- GradientCheck.h - A gradient against float64, ALIBI.md's rule -*- C++
//-*-===//
//
// The backward suites' comparison of one gradient (dq, dk, dv or dslopes)
// with the float64 reference: max abs error <= 2 x the naive same-dtype
// backward's + 1e-6, and for f32 also <= 1e-4 x max |reference| + 1e-6
// (reference::gradientErrorBound). Prints the figures; reports a failure to
// gtest and returns error / bound.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_GRADIENTCHECK_H
#define TILT_TESTS_COMMON_GRADIENTCHECK_H

#include "tilt/Half.h"
#include "tilt/Reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace tilt::test {

/// `got(i)` for i < n against `want`; `naive` is the naive backward's.
/// Elements that are not finite, or equal `unwritten` (a sentinel the
/// caller filled the output with), fail.
inline double checkGradient(const std::string &what, const char *name,
                            DType dtype,
                            const std::function<double(size_t)> &got, size_t n,
                            const std::vector<double> &want,
                            const std::vector<double> &naive,
                            double unwritten = NAN) {
  if (want.size() != n) {
    ADD_FAILURE() << name << ": " << n << " elements, reference "
                  << want.size();
    return INFINITY;
  }
  double err = 0, naiveErr = 0, maxRef = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = got(i);
    if (!std::isfinite(x) || x == unwritten) {
      ADD_FAILURE() << name << " " << i << " of " << what << " is " << x;
      return INFINITY;
    }
    err = std::max(err, std::abs(x - want[i]));
    naiveErr = std::max(naiveErr, std::abs(naive[i] - want[i]));
    maxRef = std::max(maxRef, std::abs(want[i]));
  }
  const double bound = reference::gradientErrorBound(dtype, naiveErr, maxRef);
  EXPECT_LE(err, bound) << name << " of " << what;
  std::printf("    %-7s err %.2e bound %.2e (naive %.2e, max|ref| %.2e)\n",
              name, err, bound, naiveErr, maxRef);
  return err / bound;
}

/// checkGradient for dq, dk, dv and, when `dslopes` has any, dslopes
/// against `ref` and `naive`; the worst error / bound.
inline double checkGradients(const std::string &what, DType dtype,
                             const TypedBuffer &dq, const TypedBuffer &dk,
                             const TypedBuffer &dv,
                             const std::vector<float> &dslopes,
                             const reference::Gradients &ref,
                             const reference::Gradients &naive,
                             double unwritten = NAN) {
  auto check = [&](const char *name, const std::vector<double> &want,
                   const std::vector<double> &naiveGot, size_t n,
                   const std::function<double(size_t)> &got) {
    return checkGradient(what, name, dtype, got, n, want, naiveGot, unwritten);
  };
  auto buffer = [&](const char *name, const TypedBuffer &t,
                    const std::vector<double> &want,
                    const std::vector<double> &naiveGot) {
    return check(name, want, naiveGot, t.size(),
                 [&](size_t i) { return double(t.get(i)); });
  };
  double worst = std::max({buffer("dq", dq, ref.dq, naive.dq),
                           buffer("dk", dk, ref.dk, naive.dk),
                           buffer("dv", dv, ref.dv, naive.dv)});
  if (!dslopes.empty())
    worst = std::max(
        worst, check("dslopes", ref.dslopes, naive.dslopes, dslopes.size(),
                     [&](size_t i) { return double(dslopes[i]); }));
  return worst;
}

} // namespace tilt::test

#endif // TILT_TESTS_COMMON_GRADIENTCHECK_H
