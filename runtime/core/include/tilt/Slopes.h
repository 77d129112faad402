//===- Slopes.h - ALiBi slopes, shared by compiler and runtime --*- C++ -*-===//
//
// One implementation of ALIBI.md's slope rules. The compiler folds standard
// slopes into the kernel as constants; the runtime and the reference use the
// same function, so the two can never disagree.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_SLOPES_H
#define TILT_SLOPES_H

#include <cstdint>
#include <vector>

namespace tilt {

struct AttentionSpec;

/// Slope of head `h` (0-based, h < totalHeads) of a model with `totalHeads`
/// heads: with p = 2^floor(log2 H), heads 1..p take 2^(-maxBias*k/p) and the
/// rest the odd multiples of the half step, 2^(-maxBias*(2j-1)/(2p)).
float standardSlope(int64_t h, int64_t totalHeads, double maxBias);

/// Slopes of heads [headOffset, headOffset + localHeads) of a model with
/// `totalHeads` heads (tensor parallelism: a rank never re-derives slopes
/// from its local head count).
std::vector<float> standardSlopes(int64_t totalHeads, double maxBias,
                                  int64_t headOffset = 0,
                                  int64_t localHeads = -1);

/// The standard slopes a spec's local heads use.
std::vector<float> standardSlopes(const AttentionSpec &spec);

} // namespace tilt

#endif // TILT_SLOPES_H
