//===- Slopes.cpp - ALiBi slopes ------------------------------------------===//

#include "tilt/Slopes.h"
#include "tilt/Spec.h"

#include <cassert>
#include <cmath>

namespace tilt {

float standardSlope(int64_t h, int64_t totalHeads, double maxBias) {
  assert(totalHeads >= 1 && h >= 0 && h < totalHeads);
  int64_t p = 1;
  while (p * 2 <= totalHeads)
    p *= 2;
  // Exponents are formed in double and the power rounded once to float, so
  // every slope is the float nearest the exact value.
  double exponent = h < p ? -maxBias * double(h + 1) / double(p)
                          : -maxBias * double(2 * (h - p) + 1) / double(2 * p);
  return static_cast<float>(std::exp2(exponent));
}

std::vector<float> standardSlopes(int64_t totalHeads, double maxBias,
                                  int64_t headOffset, int64_t localHeads) {
  if (localHeads < 0)
    localHeads = totalHeads - headOffset;
  std::vector<float> out;
  out.reserve(localHeads);
  for (int64_t h = headOffset; h < headOffset + localHeads; ++h)
    out.push_back(standardSlope(h, totalHeads, maxBias));
  return out;
}

std::vector<float> standardSlopes(const AttentionSpec &spec) {
  return standardSlopes(spec.effectiveTotalHeads(), spec.maxBias,
                        spec.headOffset, spec.heads);
}

} // namespace tilt
