//===- Pairwise.h - Test cases that cover every pair of values --*- C++ -*-===//
//
// A case is one value index per dimension. pairwiseCover() picks cases
// greedily from seeded random candidates until every pair of values of
// every two dimensions appears in some case (all-pairs testing): far fewer
// cases than the cross product, and any fault that needs two parameters to
// show still meets one of them.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_PAIRWISE_H
#define TILT_TESTS_COMMON_PAIRWISE_H

#include <cstdint>
#include <functional>
#include <iterator>
#include <random>
#include <set>
#include <tuple>
#include <vector>

namespace tilt::test {

using Choice = std::vector<int>;

/// Cases covering every pair of values of dimensions with these arities.
/// `feasible` (optional) rejects candidates, e.g. those too costly to check;
/// a pair no feasible candidate of 200 seeded with it covers is given up and
/// appended to `uncoverable` (when given), so a caller can report it.
inline std::vector<Choice> pairwiseCover(
    const std::vector<int> &arity, uint32_t seed,
    const std::function<bool(const Choice &)> &feasible = {},
    std::vector<std::tuple<int, int, int, int>> *uncoverable = nullptr) {
  const int dims = static_cast<int>(arity.size());
  std::set<std::tuple<int, int, int, int>> uncovered;
  for (int a = 0; a < dims; ++a)
    for (int b = a + 1; b < dims; ++b)
      for (int x = 0; x < arity[a]; ++x)
        for (int y = 0; y < arity[b]; ++y)
          uncovered.insert({a, x, b, y});
  std::mt19937 rng(seed);
  std::vector<Choice> cases;
  while (!uncovered.empty()) {
    Choice best;
    size_t bestGain = 0;
    std::tuple<int, int, int, int> seeded;
    for (int attempt = 0; attempt < 200; ++attempt) {
      Choice c(dims);
      for (int dim = 0; dim < dims; ++dim)
        c[dim] = static_cast<int>(rng() % arity[dim]);
      // Seed each candidate with one uncovered pair so progress never stalls.
      auto it = uncovered.begin();
      std::advance(it, rng() % uncovered.size());
      seeded = *it;
      auto [a, x, b, y] = seeded;
      c[a] = x;
      c[b] = y;
      if (feasible && !feasible(c))
        continue;
      size_t gain = 0;
      for (int p = 0; p < dims; ++p)
        for (int q = p + 1; q < dims; ++q)
          gain += uncovered.count({p, c[p], q, c[q]});
      if (gain > bestGain) {
        bestGain = gain;
        best = c;
      }
    }
    if (best.empty()) {
      // Nothing feasible this round: give up the last seeded pair.
      if (uncoverable)
        uncoverable->push_back(seeded);
      uncovered.erase(seeded);
      continue;
    }
    for (int p = 0; p < dims; ++p)
      for (int q = p + 1; q < dims; ++q)
        uncovered.erase({p, best[p], q, best[q]});
    cases.push_back(best);
  }
  return cases;
}

/// Whether `cases` hold every pair of values (the dimensions' arities).
inline bool coversEveryPair(const std::vector<Choice> &cases,
                            const std::vector<int> &arity, int &a, int &b,
                            int &x, int &y) {
  const int dims = static_cast<int>(arity.size());
  for (a = 0; a < dims; ++a)
    for (b = a + 1; b < dims; ++b)
      for (x = 0; x < arity[a]; ++x)
        for (y = 0; y < arity[b]; ++y) {
          bool found = false;
          for (const Choice &c : cases)
            found = found || (c[a] == x && c[b] == y);
          if (!found)
            return false;
        }
  return true;
}

} // namespace tilt::test

#endif // TILT_TESTS_COMMON_PAIRWISE_H
