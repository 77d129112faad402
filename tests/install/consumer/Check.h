// What both consumer programs share: inputs, a float64 check of ALiBi
// causal attention written from ALIBI.md, and a one-line verdict.
#pragma once

#include "tilt/Runtime.h"
#include "tilt/Slopes.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

struct Problem {
  tilt::AttentionSpec spec;
  int64_t seq = 0;
  std::vector<float> q, k, v, o;
  tilt::AttentionArgs args;

  Problem(tilt::AttentionSpec s, int64_t n) : spec(s), seq(n) {
    const int64_t h = spec.heads, hkv = spec.kvHeads, d = spec.headDim;
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    for (auto [buf, heads] : {std::pair{&q, h}, std::pair{&k, hkv},
                              std::pair{&v, hkv}})
      for (int64_t i = 0; i < heads * seq * d; ++i)
        buf->push_back(normal(rng));
    o.assign(h * seq * d, NAN);
    args.q = tilt::TensorRef(q.data(), {1, h, seq, d});
    args.k = tilt::TensorRef(k.data(), {1, hkv, seq, d});
    args.v = tilt::TensorRef(v.data(), {1, hkv, seq, d});
    args.o = tilt::TensorRef(o.data(), {1, h, seq, d});
  }

  /// Max abs difference of `o` from float64 causal ALiBi attention.
  double error() const {
    const int64_t h = spec.heads, d = spec.headDim,
                  group = spec.heads / spec.kvHeads;
    const std::vector<float> slopes = tilt::standardSlopes(spec);
    const double scale = 1.0 / std::sqrt(double(d));
    double worst = 0;
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < seq; ++i) {
        const float *qi = &q[(hh * seq + i) * d];
        const int64_t kv = hh / group;
        std::vector<double> s(i + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          const float *kj = &k[(kv * seq + j) * d];
          double dot = 0;
          for (int64_t c = 0; c < d; ++c)
            dot += double(qi[c]) * kj[c];
          s[j] = scale * dot + double(slopes[hh]) * double(j - i);
          mx = std::max(mx, s[j]);
        }
        for (double &x : s)
          sum += (x = std::exp(x - mx));
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t j = 0; j <= i; ++j)
            acc += s[j] * v[(kv * seq + j) * d + c];
          worst = std::max(worst, std::abs(acc / sum - o[(hh * seq + i) * d + c]));
        }
      }
    return worst;
  }
};

inline int verdict(const char *name, const std::string &err,
                   const Problem &p) {
  if (!err.empty()) {
    std::printf("%s: error: %s\n", name, err.c_str());
    return 1;
  }
  const double e = p.error();
  const bool ok = e <= 1e-4;
  std::printf("%s: max abs error vs float64 %.3g (bound 1e-4) %s\n", name, e,
              ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
