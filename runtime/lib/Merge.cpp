//===- Merge.cpp - Exact merge of partial attention results ---------------===//

#include "tilt/Merge.h"

#include "tilt/Half.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace tilt {
namespace {

/// "" when `lse` has o's shape without the last dimension.
std::string checkPair(const std::string &what, const TensorRef &o,
                      const TensorRef &lse) {
  if (!o.present() || !lse.present())
    return what + ": o and lse are both required";
  if (o.rank < 2 || o.rank > 4)
    return fmt::format("{}: o must have rank 2 to 4, got {}", what, o.rank);
  if (lse.rank < 1 || lse.rank > 3)
    return fmt::format("{}: lse must have rank 1 to 3, got {}", what,
                       lse.rank);
  bool ok = lse.rank == o.rank - 1;
  for (int i = 0; ok && i < lse.rank; ++i)
    ok = lse.shape[i] == o.shape[i];
  if (!ok)
    return fmt::format("{}: lse must be o's shape without its last dimension, "
                       "got o {} and lse {}",
                       what, o.shapeString(), lse.shapeString());
  for (int i = 0; i < o.rank; ++i)
    if (o.shape[i] < 0)
      return fmt::format("{}: negative extent in {}", what, o.shapeString());
  for (auto [name, t] : {std::pair{"o", &o}, std::pair{"lse", &lse}})
    if (!t->rowMajor())
      return fmt::format("{}: {} must be row-major, got strides {} for shape "
                         "{}",
                         what, name, t->strideString(), t->shapeString());
  return {};
}

double load(DType dtype, const void *p, int64_t i) {
  switch (dtype) {
  case DType::F32:
    return static_cast<const float *>(p)[i];
  case DType::F16:
    return halfToFloat(static_cast<const uint16_t *>(p)[i]);
  case DType::BF16:
    return bf16ToFloat(static_cast<const uint16_t *>(p)[i]);
  }
  return 0;
}

void store(DType dtype, void *p, int64_t i, double v) {
  switch (dtype) {
  case DType::F32:
    static_cast<float *>(p)[i] = float(v);
    return;
  case DType::F16:
    static_cast<uint16_t *>(p)[i] = floatToHalf(float(v));
    return;
  case DType::BF16:
    static_cast<uint16_t *>(p)[i] = floatToBf16(float(v));
    return;
  }
}

} // namespace

std::string mergeAttentionStates(DType dtype,
                                 const std::vector<AttentionState> &parts,
                                 const TensorRef &o, const TensorRef &lse) {
  if (parts.empty())
    return "merge: no partial results given";
  for (size_t n = 0; n < parts.size(); ++n)
    if (std::string err = checkPair(fmt::format("part {}", n + 1), parts[n].o,
                                    parts[n].lse);
        !err.empty())
      return err;
  if (std::string err = checkPair("output", o, lse); !err.empty())
    return err;
  for (size_t n = 0; n < parts.size(); ++n) {
    const std::string what = fmt::format("part {}", n + 1);
    if (parts[n].o.shapeString() != o.shapeString())
      return fmt::format("{}: o is {}, the output {}", what,
                         parts[n].o.shapeString(), o.shapeString());
  }
  const int64_t d = o.shape[o.rank - 1];
  const int64_t rows = lse.numElements();
  const double inf = std::numeric_limits<double>::infinity();
  // Checked before anything is written.
  for (size_t n = 0; n < parts.size(); ++n)
    for (int64_t r = 0; r < rows; ++r) {
      const float l = static_cast<const float *>(parts[n].lse.data)[r];
      if (std::isnan(l) || l == std::numeric_limits<float>::infinity())
        return fmt::format("part {}: lse is {} at row {} (a log-sum-exp is "
                           "finite or -inf)",
                           n + 1, l, r);
    }
  std::vector<double> w(parts.size()), acc(static_cast<size_t>(d));
  // Row by row, every part read before the row is written: the output may
  // alias the first part.
  for (int64_t r = 0; r < rows; ++r) {
    double m = -inf;
    for (const AttentionState &p : parts)
      m = std::max(m, double(static_cast<const float *>(p.lse.data)[r]));
    std::fill(acc.begin(), acc.end(), 0.0);
    double total = 0;
    if (m != -inf) {
      for (size_t n = 0; n < parts.size(); ++n)
        total += w[n] =
            std::exp(double(static_cast<const float *>(parts[n].lse.data)[r]) -
                     m);
      for (size_t n = 0; n < parts.size(); ++n) {
        if (w[n] == 0)
          continue; // a part with no visible key (or a negligible one)
        const double scale = w[n] / total;
        for (int64_t c = 0; c < d; ++c)
          acc[size_t(c)] += scale * load(dtype, parts[n].o.data, r * d + c);
      }
    }
    for (int64_t c = 0; c < d; ++c)
      store(dtype, o.data, r * d + c, acc[size_t(c)]);
    static_cast<float *>(lse.data)[r] =
        m == -inf ? -std::numeric_limits<float>::infinity()
                  : float(m + std::log(total));
  }
  return {};
}

} // namespace tilt
