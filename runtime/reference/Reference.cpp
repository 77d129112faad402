//===- Reference.cpp - float64 reference of ALIBI.md ----------------------===//

#include "tilt/Reference.h"
#include "tilt/Half.h"
#include "tilt/Slopes.h"

#include <algorithm>
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
/// Paged (`pages` given): row r is row pages[r / pageSize] * pageSize +
/// r % pageSize of the cache.
struct Slice {
  const float *base;
  int64_t rowStride;
  const int32_t *pages = nullptr;
  int64_t pageSize = 0;
  double at(int64_t r, int64_t d) const { return row(r)[d]; }
  const float *row(int64_t r) const {
    if (pages)
      r = int64_t(pages[r / pageSize]) * pageSize + r % pageSize;
    return base + r * rowStride;
  }
};

/// One (sequence, query head) of a launch, as both evaluations walk it.
struct Head {
  int64_t b, h, Sq, Sk;
  int64_t shift; ///< query row i sits at i' = i + shift (key 0 at 0)
  Slice q, k, v;
  int64_t o0, oStride; ///< o element (i, d) is at o0 + i * oStride + d
  int64_t lse0;        ///< lse of row i is at lse0 + i
  const uint8_t *kpm;  ///< this sequence's key padding mask, or null
  const std::vector<double> *pos; ///< key positions (alibi-positions)

  /// Whether query row i sees key j.
  bool visible(const AttentionSpec &spec, int64_t i, int64_t j) const {
    const int64_t ip = i + shift;
    return (!kpm || kpm[j] != 0) && !(spec.causal && j > ip) &&
           !(spec.window && ip - j >= *spec.window);
  }
};

/// Calls f(Head) for every (sequence, query head), dense or varlen.
template <typename F>
void forEachHead(const AttentionSpec &spec, const Extents &ext,
                 const Inputs &in, F &&f) {
  const int64_t H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const int64_t group = H / Hkv;
  std::vector<double> pos;
  for (int64_t b = 0; b < ext.batch; ++b) {
    // Sequence b's rows within the (packed or dense) tensors.
    int64_t q0 = 0, k0 = 0, Sq = ext.seqQ, Sk = ext.seqK;
    if (spec.varlen) {
      q0 = in.cuSeqlensQ[b];
      Sq = in.cuSeqlensQ[b + 1] - q0;
      k0 = in.cuSeqlensK[b];
      Sk = in.cuSeqlensK[b + 1] - k0;
    }
    if (spec.pageSize)
      Sk = in.contextLens[b];
    const uint8_t *kpm =
        in.keyPaddingMask ? in.keyPaddingMask + b * ext.seqK : nullptr;
    // Positions from the padding mask: cumsum(kpm) - 1.
    pos.assign(Sk, 0.0);
    for (int64_t j = 0, c = 0; j < Sk; ++j) {
      c += kpm ? (kpm[j] != 0) : 1;
      pos[j] = double(c - 1);
    }
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / group;
      // Bottom-right alignment, or absolute positions from the offsets
      // (j' - i' = j - (i + q_offset - k_offset)).
      const int64_t shift =
          spec.positionOffsets ? in.qOffset - in.kOffset : Sk - Sq;
      Head x{b, h, Sq, Sk, shift, {}, {}, {}, 0, 0, 0, kpm, &pos};
      if (spec.varlen) {
        x.q = {in.q + (q0 * H + h) * D, H * D};
        x.k = {in.k + (k0 * Hkv + hk) * D, Hkv * D};
        x.v = {in.v + (k0 * Hkv + hk) * D, Hkv * D};
        x.o0 = (q0 * H + h) * D;
        x.oStride = H * D;
        x.lse0 = h * ext.seqQ + q0;
      } else if (spec.pageSize) {
        // k/v [num_pages, page_size, Hkv, D]: a page's rows are Hkv * D apart.
        const int32_t *pages = in.blockTable + b * in.maxPages;
        x.q = {in.q + (b * H + h) * Sq * D, D};
        x.k = {in.k + hk * D, Hkv * D, pages, spec.pageSize};
        x.v = {in.v + hk * D, Hkv * D, pages, spec.pageSize};
        x.o0 = (b * H + h) * Sq * D;
        x.oStride = D;
        x.lse0 = (b * H + h) * Sq;
      } else {
        x.q = {in.q + (b * H + h) * Sq * D, D};
        x.k = {in.k + (b * Hkv + hk) * Sk * D, D};
        x.v = {in.v + (b * Hkv + hk) * Sk * D, D};
        x.o0 = (b * H + h) * Sq * D;
        x.oStride = D;
        x.lse0 = (b * H + h) * Sq;
      }
      f(x);
    }
  }
}

} // namespace

Outputs attention(const AttentionSpec &spec, const Extents &ext,
                  const Inputs &in) {
  const int64_t H = spec.heads, D = spec.headDim;
  const double scale = spec.effectiveScale();
  const double inf = std::numeric_limits<double>::infinity();

  Outputs out;
  out.o.assign(ext.seqQ * (spec.varlen ? 1 : ext.batch) * H * D, 0.0);
  out.lse.assign(ext.seqQ * (spec.varlen ? 1 : ext.batch) * H, -inf);

  std::vector<double> s;
  forEachHead(spec, ext, in, [&](const Head &x) {
    const double m = slopeFor(spec, in, x.b, x.h);
    s.assign(x.Sk, 0.0);
    for (int64_t i = 0; i < x.Sq; ++i) {
      const int64_t ip = i + x.shift;
      double rowMax = -inf;
      for (int64_t j = 0; j < x.Sk; ++j) {
        if (!x.visible(spec, i, j)) {
          s[j] = -inf;
          continue;
        }
        double dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += x.q.at(i, d) * x.k.at(j, d);
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
          bias = m * (*x.pos)[j];
          break;
        }
        s[j] = scale * dot + bias;
        rowMax = std::max(rowMax, s[j]);
      }
      double *orow = out.o.data() + x.o0 + i * x.oStride;
      if (rowMax == -inf)
        continue; // no visible key: output 0, lse -inf
      double sum = 0;
      for (int64_t j = 0; j < x.Sk; ++j)
        sum += std::exp(s[j] - rowMax);
      for (int64_t j = 0; j < x.Sk; ++j) {
        if (s[j] == -inf)
          continue;
        double p = std::exp(s[j] - rowMax) / sum;
        for (int64_t d = 0; d < D; ++d)
          orow[d] += p * x.v.at(j, d);
      }
      out.lse[x.lse0 + i] = rowMax + std::log(sum);
    }
  });
  return out;
}

std::vector<double> naiveSameDtype(const AttentionSpec &spec,
                                   const Extents &ext, const Inputs &in) {
  const int64_t H = spec.heads, D = spec.headDim;
  auto r = [&](float x) { return roundTo(spec.dtype, x); };
  const float scale = r(float(spec.effectiveScale()));
  std::vector<double> out(ext.seqQ * (spec.varlen ? 1 : ext.batch) * H * D,
                          0.0);
  std::vector<float> s, acc;
  forEachHead(spec, ext, in, [&](const Head &x) {
    const float m = slopeFor(spec, in, x.b, x.h);
    s.assign(x.Sk, 0.0f);
    for (int64_t i = 0; i < x.Sq; ++i) {
      const int64_t ip = i + x.shift;
      const float *q = x.q.row(i);
      float mx = -INFINITY;
      for (int64_t j = 0; j < x.Sk; ++j) {
        s[j] = -INFINITY;
        if (!x.visible(spec, i, j))
          continue;
        const float *k = x.k.row(j);
        float dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += q[d] * k[d];
        float bias = 0;
        if (spec.bias == BiasKind::Alibi)
          bias = m * float(j - ip);
        else if (spec.bias == BiasKind::AlibiSymmetric)
          bias = -m * float(std::llabs(j - ip));
        else if (spec.bias == BiasKind::AlibiPositions)
          bias = m * float((*x.pos)[j]);
        s[j] = r(r(r(dot) * scale) + bias);
        mx = std::max(mx, s[j]);
      }
      if (mx == -INFINITY)
        continue;
      float sum = 0;
      for (int64_t j = 0; j < x.Sk; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      for (int64_t j = 0; j < x.Sk; ++j)
        s[j] = r(s[j] / sum);
      // Each output sums over keys in order; keys outer reads v by rows.
      acc.assign(D, 0.0f);
      for (int64_t j = 0; j < x.Sk; ++j) {
        const float *v = x.v.row(j);
        for (int64_t d = 0; d < D; ++d)
          acc[d] += s[j] * v[d];
      }
      double *orow = out.data() + x.o0 + i * x.oStride;
      for (int64_t d = 0; d < D; ++d)
        orow[d] = r(acc[d]);
    }
  });
  return out;
}

namespace {

/// The bias distance whose slope derivative ALIBI.md's dm_h sums: j - i',
/// -|j - i'| or pos_j.
double biasDistance(const AttentionSpec &spec, const Head &x, int64_t i,
                    int64_t j) {
  const int64_t ip = i + x.shift;
  switch (spec.bias) {
  case BiasKind::None:
    return 0.0;
  case BiasKind::Alibi:
    return double(j - ip);
  case BiasKind::AlibiSymmetric:
    return -double(std::llabs(j - ip));
  case BiasKind::AlibiPositions:
    return (*x.pos)[j];
  }
  return 0.0;
}

/// Where a Head's slices start in the packed or dense tensors.
struct GradOffsets {
  int64_t k0; ///< element (j, d) of the head's k/v is at k0 + j*kStride + d
  int64_t kStride;
};

GradOffsets gradOffsets(const Head &x, const Inputs &in) {
  return {int64_t(x.k.base - in.k), x.k.rowStride};
}

Gradients emptyGradients(const AttentionSpec &spec, const Extents &ext,
                         const Inputs &in) {
  const int64_t B = spec.varlen ? 1 : ext.batch, D = spec.headDim;
  Gradients g;
  g.dq.assign(B * ext.seqQ * spec.heads * D, 0.0);
  g.dk.assign(B * ext.seqK * spec.kvHeads * D, 0.0);
  g.dv.assign(g.dk.size(), 0.0);
  if (spec.hasAlibi() && spec.slopes == SlopeSource::Custom)
    g.dslopes.assign((in.slopesPerBatch ? ext.batch : 1) * spec.heads, 0.0);
  return g;
}

} // namespace

Gradients attentionBackward(const AttentionSpec &spec, const Extents &ext,
                            const Inputs &in, const float *dO,
                            const float *gradLse) {
  const int64_t D = spec.headDim;
  const double scale = spec.effectiveScale();
  const Outputs fwd = attention(spec, ext, in);
  Gradients g = emptyGradients(spec, ext, in);
  const double inf = std::numeric_limits<double>::infinity();
  forEachHead(spec, ext, in, [&](const Head &x) {
    const double m = slopeFor(spec, in, x.b, x.h);
    const GradOffsets at = gradOffsets(x, in);
    double dm = 0;
    for (int64_t i = 0; i < x.Sq; ++i) {
      const double lse = fwd.lse[x.lse0 + i];
      if (lse == -inf)
        continue; // a fully masked row contributes nothing
      const float *dOi = dO + x.o0 + i * x.oStride;
      const double *oi = fwd.o.data() + x.o0 + i * x.oStride;
      // d lse_i / d s_ij = P_ij: the upstream gradient of lse joins D_i.
      double delta = gradLse ? -double(gradLse[x.lse0 + i]) : 0.0;
      for (int64_t d = 0; d < D; ++d)
        delta += double(dOi[d]) * oi[d];
      for (int64_t j = 0; j < x.Sk; ++j) {
        if (!x.visible(spec, i, j))
          continue;
        double dot = 0, dp = 0;
        for (int64_t d = 0; d < D; ++d) {
          dot += x.q.at(i, d) * x.k.at(j, d);
          dp += double(dOi[d]) * x.v.at(j, d);
        }
        const double dist = biasDistance(spec, x, i, j);
        const double p = std::exp(scale * dot + m * dist - lse);
        const double ds = p * (dp - delta);
        dm += ds * dist;
        double *dq = g.dq.data() + x.o0 + i * x.oStride;
        double *dk = g.dk.data() + at.k0 + j * at.kStride;
        double *dv = g.dv.data() + at.k0 + j * at.kStride;
        for (int64_t d = 0; d < D; ++d) {
          dq[d] += scale * ds * x.k.at(j, d);
          dk[d] += scale * ds * x.q.at(i, d);
          dv[d] += p * double(dOi[d]);
        }
      }
    }
    if (!g.dslopes.empty())
      g.dslopes[(in.slopesPerBatch ? x.b * spec.heads : 0) + x.h] += dm;
  });
  return g;
}

Gradients naiveBackwardSameDtype(const AttentionSpec &spec, const Extents &ext,
                                 const Inputs &in, const float *dO,
                                 const float *gradLse) {
  const int64_t D = spec.headDim;
  auto r = [&](float x) { return roundTo(spec.dtype, x); };
  const float scale = r(float(spec.effectiveScale()));
  const std::vector<double> o = naiveSameDtype(spec, ext, in);
  Gradients g = emptyGradients(spec, ext, in);
  // f32 accumulators of this head's dk/dv, rounded once it is done.
  std::vector<float> p, ds, dk, dv, dq;
  forEachHead(spec, ext, in, [&](const Head &x) {
    const float m = slopeFor(spec, in, x.b, x.h);
    const GradOffsets at = gradOffsets(x, in);
    dk.assign(x.Sk * D, 0.0f);
    dv.assign(x.Sk * D, 0.0f);
    float dm = 0;
    for (int64_t i = 0; i < x.Sq; ++i) {
      // The forward's P, materialized in the dtype.
      const float *q = x.q.row(i);
      p.assign(x.Sk, -INFINITY);
      float mx = -INFINITY;
      for (int64_t j = 0; j < x.Sk; ++j) {
        if (!x.visible(spec, i, j))
          continue;
        float dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += q[d] * x.k.row(j)[d];
        p[j] = r(r(r(dot) * scale) + m * float(biasDistance(spec, x, i, j)));
        mx = std::max(mx, p[j]);
      }
      if (mx == -INFINITY)
        continue;
      float sum = 0;
      for (int64_t j = 0; j < x.Sk; ++j) {
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      for (int64_t j = 0; j < x.Sk; ++j)
        p[j] = r(p[j] / sum);
      const float *dOi = dO + x.o0 + i * x.oStride;
      float delta = 0;
      for (int64_t d = 0; d < D; ++d)
        delta += dOi[d] * float(o[x.o0 + i * x.oStride + d]);
      delta = r(delta);
      if (gradLse)
        delta -= gradLse[x.lse0 + i];
      ds.assign(x.Sk, 0.0f);
      for (int64_t j = 0; j < x.Sk; ++j) {
        if (!x.visible(spec, i, j))
          continue;
        float dp = 0;
        for (int64_t d = 0; d < D; ++d)
          dp += dOi[d] * x.v.row(j)[d];
        ds[j] = r(p[j] * (r(dp) - delta));
        dm += ds[j] * float(biasDistance(spec, x, i, j));
      }
      dq.assign(D, 0.0f);
      for (int64_t j = 0; j < x.Sk; ++j)
        for (int64_t d = 0; d < D; ++d) {
          dq[d] += ds[j] * x.k.row(j)[d];
          dk[j * D + d] += ds[j] * q[d];
          dv[j * D + d] += p[j] * dOi[d];
        }
      for (int64_t d = 0; d < D; ++d)
        g.dq[x.o0 + i * x.oStride + d] = r(r(dq[d]) * scale);
    }
    // A GQA group's heads add up in the dtype, as a framework's sum would.
    for (int64_t j = 0; j < x.Sk; ++j)
      for (int64_t d = 0; d < D; ++d) {
        double &k = g.dk[at.k0 + j * at.kStride + d];
        double &v = g.dv[at.k0 + j * at.kStride + d];
        k = r(float(k) + r(r(dk[j * D + d]) * scale));
        v = r(float(v) + r(dv[j * D + d]));
      }
    if (!g.dslopes.empty())
      g.dslopes[(in.slopesPerBatch ? x.b * spec.heads : 0) + x.h] += dm;
  });
  return g;
}

double gradientErrorBound(DType dtype, double naiveError, double maxRef) {
  const double bound = 2 * naiveError + 1e-6;
  return dtype == DType::F32 ? std::min(bound, 1e-4 * maxRef + 1e-6) : bound;
}

double errorBound(DType dtype, double naiveError) {
  return dtype == DType::F32 ? 1e-4 : 2 * naiveError + 1e-6;
}

RoundedInputs fromBuffers(const TypedBuffer &q, const TypedBuffer &k,
                          const TypedBuffer &v,
                          const std::vector<float> &slopes,
                          bool slopesPerBatch,
                          const std::vector<uint8_t> &keyPaddingMask,
                          bool varlen, const std::vector<int32_t> &cuQ,
                          const std::vector<int32_t> &cuK) {
  auto widen = [](const TypedBuffer &t) {
    std::vector<float> f(t.size());
    for (size_t i = 0; i < f.size(); ++i)
      f[i] = t.get(i);
    return f;
  };
  RoundedInputs r;
  r.q = widen(q);
  r.k = widen(k);
  r.v = widen(v);
  r.in.q = r.q.data();
  r.in.k = r.k.data();
  r.in.v = r.v.data();
  r.in.slopes = slopes.empty() ? nullptr : slopes.data();
  r.in.slopesPerBatch = slopesPerBatch;
  r.in.keyPaddingMask = keyPaddingMask.empty() ? nullptr : keyPaddingMask.data();
  r.in.cuSeqlensQ = varlen ? cuQ.data() : nullptr;
  r.in.cuSeqlensK = varlen ? cuK.data() : nullptr;
  return r;
}

} // namespace tilt::reference
