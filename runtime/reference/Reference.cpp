//===- Reference.cpp - float64 reference of ALIBI.md ----------------------===//

#include "tilt/Reference.h"
#include "tilt/Slopes.h"

#include <cmath>
#include <cstdlib>
#include <limits>

namespace tilt::reference {

float slopeFor(const AttentionSpec &spec, const Inputs &in, int64_t b,
               int64_t h) {
  if (!spec.hasAlibi())
    return 0.0f;
  if (spec.slopes == SlopeSource::Custom)
    return in.slopes[(in.slopesPerBatch ? b * spec.heads : 0) + h];
  return standardSlope(spec.headOffset + h, spec.effectiveTotalHeads(),
                       spec.maxBias);
}

namespace {

/// Where one (batch, head) slice of a tensor lives: element (row, d) is at
/// base + row * rowStride + d.
struct Slice {
  const float *base;
  int64_t rowStride;
  double at(int64_t row, int64_t d) const { return base[row * rowStride + d]; }
};

} // namespace

Outputs attention(const AttentionSpec &spec, const Extents &ext,
                  const Inputs &in) {
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const int64_t group = H / Hkv;
  const double scale = spec.effectiveScale();
  const double inf = std::numeric_limits<double>::infinity();

  Outputs out;
  out.o.assign(ext.seqQ * (spec.varlen ? 1 : ext.batch) * H * D, 0.0);
  out.lse.assign(ext.seqQ * (spec.varlen ? 1 : ext.batch) * H, -inf);

  std::vector<double> s, pos;
  for (int64_t b = 0; b < ext.batch; ++b) {
    // Sequence b's rows within the (packed or dense) tensors.
    int64_t q0 = 0, k0 = 0, Sq = ext.seqQ, Sk = ext.seqK;
    if (spec.varlen) {
      q0 = in.cuSeqlensQ[b];
      Sq = in.cuSeqlensQ[b + 1] - q0;
      k0 = in.cuSeqlensK[b];
      Sk = in.cuSeqlensK[b + 1] - k0;
    }
    const uint8_t *kpm =
        in.keyPaddingMask ? in.keyPaddingMask + b * ext.seqK : nullptr;
    // Positions from the padding mask: cumsum(kpm) - 1.
    pos.assign(Sk, 0.0);
    for (int64_t j = 0, c = 0; j < Sk; ++j) {
      c += kpm ? (kpm[j] != 0) : 1;
      pos[j] = double(c - 1);
    }
    s.assign(Sk, 0.0);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / group;
      Slice q, k, v;
      double *o;
      double *lse;
      if (spec.varlen) {
        q = {in.q + (q0 * H + h) * D, H * D};
        k = {in.k + (k0 * Hkv + hk) * D, Hkv * D};
        v = {in.v + (k0 * Hkv + hk) * D, Hkv * D};
        o = out.o.data() + (q0 * H + h) * D;
        lse = out.lse.data() + h * ext.seqQ + q0;
      } else {
        q = {in.q + (b * H + h) * Sq * D, D};
        k = {in.k + (b * Hkv + hk) * Sk * D, D};
        v = {in.v + (b * Hkv + hk) * Sk * D, D};
        o = out.o.data() + (b * H + h) * Sq * D;
        lse = out.lse.data() + (b * H + h) * Sq;
      }
      const int64_t oStride = spec.varlen ? H * D : D;
      const double m = slopeFor(spec, in, b, h);

      for (int64_t i = 0; i < Sq; ++i) {
        const int64_t ip = i + Sk - Sq; // bottom-right alignment
        double rowMax = -inf;
        for (int64_t j = 0; j < Sk; ++j) {
          bool visible = !kpm || kpm[j] != 0;
          if (spec.causal && j > ip)
            visible = false;
          if (spec.window && ip - j >= *spec.window)
            visible = false;
          if (!visible) {
            s[j] = -inf;
            continue;
          }
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += q.at(i, d) * k.at(j, d);
          double bias = 0;
          switch (spec.bias) {
          case BiasKind::None:
            break;
          case BiasKind::Alibi:
            bias = m * double(j - ip);
            break;
          case BiasKind::AlibiSymmetric:
            bias = -m * double(std::llabs(j - ip));
            break;
          case BiasKind::AlibiPositions:
            bias = m * pos[j];
            break;
          }
          s[j] = scale * dot + bias;
          rowMax = std::max(rowMax, s[j]);
        }
        double *orow = o + i * oStride;
        if (rowMax == -inf)
          continue; // no visible key: output 0, lse -inf
        double sum = 0;
        for (int64_t j = 0; j < Sk; ++j)
          sum += std::exp(s[j] - rowMax);
        for (int64_t j = 0; j < Sk; ++j) {
          if (s[j] == -inf)
            continue;
          double p = std::exp(s[j] - rowMax) / sum;
          for (int64_t d = 0; d < D; ++d)
            orow[d] += p * v.at(j, d);
        }
        lse[i] = rowMax + std::log(sum);
      }
    }
  }
  return out;
}

} // namespace tilt::reference
