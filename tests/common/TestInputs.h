//===- TestInputs.h - Random inputs shared by the numerics suites -*- C++ -*-=//
//
// The CPU numerics suite and the GPU emulator suite draw their inputs the
// same way: unit-normal q/k/v rounded to the dtype, custom slopes that are
// exact in every dtype, and a key padding mask with a pattern in the first
// batches and everything padded in the last one (fully masked rows).
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_COMMON_TESTINPUTS_H
#define TILT_TESTS_COMMON_TESTINPUTS_H

#include "tilt/Half.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace tilt::test_inputs {

inline TypedBuffer normalBuffer(DType dtype, int64_t n, std::mt19937 &rng) {
  std::normal_distribution<float> normal;
  TypedBuffer t(dtype, size_t(n));
  for (int64_t i = 0; i < n; ++i)
    t.set(size_t(i), normal(rng));
  return t;
}

/// Slopes 2^-e * (1 + k/8), e in [1, maxExp], k in [0, 3].
inline std::vector<float> customSlopes(int64_t n, int maxExp,
                                       std::mt19937 &rng) {
  std::vector<float> slopes;
  for (int64_t i = 0; i < n; ++i)
    slopes.push_back(std::ldexp(1.0f, -1 - int(rng() % unsigned(maxExp))) *
                     (1.0f + float(rng() % 4) / 8));
  return slopes;
}

/// [B, Sk]: batch b < B-1 keeps key 0 and pads every third key after it;
/// with B > 1 the last batch pads everything.
inline std::vector<uint8_t> paddingMask(int64_t batch, int64_t seqK) {
  std::vector<uint8_t> kpm;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < seqK; ++j)
      kpm.push_back(batch > 1 && b == batch - 1 ? 0 : (j == 0 || j % 3 != 1));
  return kpm;
}

} // namespace tilt::test_inputs

#endif // TILT_TESTS_COMMON_TESTINPUTS_H
