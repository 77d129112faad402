//===- NaiveKernel.cpp - A CPU kernel artifact for the runtime tests ------===//
//
// A real shared object with KernelABI.h's exports, standing in for the
// compiler's kernels so the runtime is tested without LLVM. It is generic:
// the spec it computes and its block_m are read back from its own
// tilt_kernel_info, which the tests' FakeCompiler stamps per spec. It reads
// every tensor through the descriptors' sizes, strides and offsets, so a
// runtime that builds them wrong gets wrong answers. f32 only; deliberately
// simple (one row at a time, double accumulation).
//
//===----------------------------------------------------------------------===//

#include "NaiveKernel.h"
#include "tilt/KernelABI.h"
#include "tilt/Slopes.h"
#include "tilt/Spec.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#define TILT_EXPORT extern "C" __attribute__((visibility("default")))

TILT_EXPORT const char tilt_kernel_info[tilt::test::kInfoSlotSize] =
    TILT_TEST_INFO_SLOT_MARKER;

namespace {

using namespace tilt;

[[noreturn]] void fail(const std::string &why) {
  std::fprintf(stderr, "naive test kernel: %s\n", why.c_str());
  std::abort();
}

struct Setup {
  AttentionSpec spec;
  int64_t blockM = 0;
  std::vector<float> standardSlopes;
};

/// Calls fn(key, value) for each "key=value" of `text`; a key named `last`
/// takes the rest of the text.
template <typename Fn>
void forEachField(std::string_view text, std::string_view last, Fn fn) {
  while (!text.empty()) {
    size_t eq = text.find('=');
    if (eq == std::string_view::npos)
      fail("malformed field list: " + std::string(text));
    std::string_view key = text.substr(0, eq);
    text.remove_prefix(eq + 1);
    size_t semi = key == last ? std::string_view::npos : text.find(';');
    std::string value(text.substr(0, semi));
    text.remove_prefix(semi == std::string_view::npos ? text.size() : semi + 1);
    fn(key, value);
  }
}

Setup parseSetup() {
  // The bytes were rewritten after compilation: read them through an opaque
  // pointer so the compiler cannot fold the marker text in.
  const char *info = tilt_kernel_info;
  asm volatile("" : "+r"(info));
  Setup s;
  std::string specText;
  forEachField(info, "spec", [&](std::string_view key, const std::string &v) {
    if (key == "block_m")
      s.blockM = std::atoll(v.c_str());
    else if (key == "spec")
      specText = v;
  });
  AttentionSpec &spec = s.spec;
  forEachField(specText, "", [&](std::string_view key, const std::string &v) {
    long long n = std::atoll(v.c_str());
    if (key == "h")
      spec.heads = n;
    else if (key == "hkv")
      spec.kvHeads = n;
    else if (key == "d")
      spec.headDim = n;
    else if (key == "dtype")
      spec.dtype = parseDType(v).value_or(DType::F16);
    else if (key == "scale")
      spec.scale = std::strtod(v.c_str(), nullptr); // hex float
    else if (key == "causal")
      spec.causal = n != 0;
    else if (key == "window" && n != 0)
      spec.window = n;
    else if (key == "bias")
      spec.bias = *parseBiasKind(v);
    else if (key == "slopes")
      spec.slopes = *parseSlopeSource(v);
    else if (key == "max_bias")
      spec.maxBias = std::strtod(v.c_str(), nullptr);
    else if (key == "head_offset")
      spec.headOffset = n;
    else if (key == "total_heads")
      spec.totalHeads = n;
    else if (key == "kpm")
      spec.keyPaddingMask = n != 0;
    else if (key == "varlen")
      spec.varlen = n != 0;
  });
  if (spec.dtype != DType::F32)
    fail("only f32 is supported");
  if (std::string err = spec.validate(); !err.empty() || s.blockM < 1)
    fail("bad stamped info: " + std::string(info));
  if (spec.hasAlibi() && spec.slopes == SlopeSource::Standard)
    s.standardSlopes = standardSlopes(spec);
  return s;
}

const Setup &setup() {
  static const Setup s = parseSetup();
  return s;
}

/// A strided view of one memref descriptor.
template <typename T> struct View {
  T *data = nullptr;
  int rank = 0;
  int64_t sizes[4] = {};
  int64_t strides[4] = {};

  T &operator()(std::initializer_list<int64_t> idx) const {
    int64_t at = 0, i = 0;
    for (int64_t x : idx)
      at += x * strides[i++];
    return data[at];
  }
};

template <typename T, int Rank> View<T> viewOf(void *descriptor) {
  auto *d = static_cast<MemRefDescriptor<Rank> *>(descriptor);
  View<T> v;
  v.data = static_cast<T *>(d->aligned) + d->offset;
  v.rank = Rank;
  for (int i = 0; i < Rank; ++i) {
    v.sizes[i] = d->sizes[i];
    v.strides[i] = d->strides[i];
  }
  return v;
}

} // namespace

TILT_EXPORT void tilt_cpu_entry(void **descriptors, int64_t itemBegin,
                                int64_t itemEnd) {
  const Setup &s = setup();
  const AttentionSpec &spec = s.spec;
  const int64_t H = spec.heads, D = spec.headDim;
  const int64_t group = H / spec.kvHeads;
  const double scale = spec.effectiveScale();
  const double inf = std::numeric_limits<double>::infinity();
  const bool varlen = spec.varlen;

  View<float> q, k, v, o, lse, slopes;
  View<int8_t> kpm;
  View<int32_t> cuQ, cuK;
  if (varlen) {
    q = viewOf<float, 3>(descriptors[0]);
    k = viewOf<float, 3>(descriptors[1]);
    v = viewOf<float, 3>(descriptors[2]);
    o = viewOf<float, 3>(descriptors[3]);
    lse = viewOf<float, 2>(descriptors[4]);
  } else {
    q = viewOf<float, 4>(descriptors[0]);
    k = viewOf<float, 4>(descriptors[1]);
    v = viewOf<float, 4>(descriptors[2]);
    o = viewOf<float, 4>(descriptors[3]);
    lse = viewOf<float, 3>(descriptors[4]);
  }
  int next = 5;
  if (spec.hasAlibi() && spec.slopes == SlopeSource::Custom)
    slopes = viewOf<float, 2>(descriptors[next++]); // [B, H], maybe stride 0
  if (spec.keyPaddingMask)
    kpm = viewOf<int8_t, 2>(descriptors[next++]);
  if (varlen) {
    cuQ = viewOf<int32_t, 1>(descriptors[next++]);
    cuK = viewOf<int32_t, 1>(descriptors[next++]);
  }

  int64_t maxSq = varlen ? 0 : q.sizes[2];
  if (varlen)
    for (int64_t b = 0; b + 1 < cuQ.sizes[0]; ++b)
      maxSq = std::max<int64_t>(maxSq, cuQ({b + 1}) - cuQ({b}));
  const int64_t blocks = (maxSq + s.blockM - 1) / s.blockM;

  std::vector<double> scores, pos;
  for (int64_t item = itemBegin; item < itemEnd; ++item) {
    const int64_t b = item / (H * blocks), h = item / blocks % H,
                  block = item % blocks, hk = h / group;
    int64_t q0 = 0, k0 = 0, Sq = maxSq, Sk = varlen ? 0 : k.sizes[2];
    if (varlen) {
      q0 = cuQ({b});
      Sq = cuQ({b + 1}) - q0;
      k0 = cuK({b});
      Sk = cuK({b + 1}) - k0;
    }
    // Element accessors for this (batch, head).
    auto qAt = [&](int64_t i, int64_t d) -> float & {
      return varlen ? q({q0 + i, h, d}) : q({b, h, i, d});
    };
    auto kAt = [&](int64_t j, int64_t d) -> float & {
      return varlen ? k({k0 + j, hk, d}) : k({b, hk, j, d});
    };
    auto vAt = [&](int64_t j, int64_t d) -> float & {
      return varlen ? v({k0 + j, hk, d}) : v({b, hk, j, d});
    };
    auto oAt = [&](int64_t i, int64_t d) -> float & {
      return varlen ? o({q0 + i, h, d}) : o({b, h, i, d});
    };
    auto lseAt = [&](int64_t i) -> float & {
      return varlen ? lse({h, q0 + i}) : lse({b, h, i});
    };

    double m = 0;
    if (spec.hasAlibi())
      m = spec.slopes == SlopeSource::Standard ? s.standardSlopes[h]
                                               : slopes({b, h});
    pos.assign(Sk, 0);
    for (int64_t j = 0, c = 0; j < Sk; ++j) {
      c += spec.keyPaddingMask ? kpm({b, j}) != 0 : 1;
      pos[j] = double(c - 1);
    }

    scores.assign(Sk, 0);
    const int64_t rowEnd = std::min(Sq, (block + 1) * s.blockM);
    for (int64_t i = block * s.blockM; i < rowEnd; ++i) {
      const int64_t ip = i + Sk - Sq;
      double rowMax = -inf;
      for (int64_t j = 0; j < Sk; ++j) {
        bool visible = !spec.keyPaddingMask || kpm({b, j}) != 0;
        visible = visible && !(spec.causal && j > ip) &&
                  !(spec.window && ip - j >= *spec.window);
        if (!visible) {
          scores[j] = -inf;
          continue;
        }
        double dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += double(qAt(i, d)) * double(kAt(j, d));
        double bias = spec.bias == BiasKind::Alibi ? m * double(j - ip)
                      : spec.bias == BiasKind::AlibiSymmetric
                          ? -m * std::fabs(double(j - ip))
                      : spec.bias == BiasKind::AlibiPositions ? m * pos[j]
                                                              : 0.0;
        scores[j] = scale * dot + bias;
        rowMax = std::max(rowMax, scores[j]);
      }
      if (rowMax == -inf) {
        for (int64_t d = 0; d < D; ++d)
          oAt(i, d) = 0;
        lseAt(i) = -std::numeric_limits<float>::infinity();
        continue;
      }
      double sum = 0;
      for (int64_t j = 0; j < Sk; ++j)
        sum += std::exp(scores[j] - rowMax);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < Sk; ++j)
          if (scores[j] != -inf)
            acc += std::exp(scores[j] - rowMax) * double(vAt(j, d));
        oAt(i, d) = float(acc / sum);
      }
      lseAt(i) = float(rowMax + std::log(sum));
    }
  }
}
