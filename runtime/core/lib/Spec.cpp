//===- Spec.cpp - Spec names, validation and canonical form ---------------===//

#include "tilt/Spec.h"

#include <cmath>
#include <cstdio>

namespace tilt {

std::string_view toString(DType t) {
  switch (t) {
  case DType::F32:
    return "f32";
  case DType::F16:
    return "f16";
  case DType::BF16:
    return "bf16";
  }
  return "?";
}

std::string_view toString(BiasKind k) {
  switch (k) {
  case BiasKind::None:
    return "none";
  case BiasKind::Alibi:
    return "alibi";
  case BiasKind::AlibiSymmetric:
    return "alibi_symmetric";
  case BiasKind::AlibiPositions:
    return "alibi_positions";
  }
  return "?";
}

std::string_view toString(SlopeSource s) {
  return s == SlopeSource::Standard ? "standard" : "custom";
}

std::optional<DType> parseDType(std::string_view s) {
  for (DType t : {DType::F32, DType::F16, DType::BF16})
    if (s == toString(t))
      return t;
  return std::nullopt;
}

std::optional<BiasKind> parseBiasKind(std::string_view s) {
  // Command lines spell the kinds with '-', the IR with '_'.
  std::string norm(s);
  for (char &c : norm)
    if (c == '-')
      c = '_';
  for (BiasKind k : {BiasKind::None, BiasKind::Alibi, BiasKind::AlibiSymmetric,
                     BiasKind::AlibiPositions})
    if (norm == toString(k))
      return k;
  return std::nullopt;
}

std::optional<SlopeSource> parseSlopeSource(std::string_view s) {
  for (SlopeSource src : {SlopeSource::Standard, SlopeSource::Custom})
    if (s == toString(src))
      return src;
  return std::nullopt;
}

int64_t byteWidth(DType t) { return t == DType::F32 ? 4 : 2; }

bool isSupportedHeadDim(int64_t d) { return d >= 16 && d <= 256 && d % 16 == 0; }

double AttentionSpec::effectiveScale() const {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(headDim));
}

namespace {
std::string format(const char *fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), fmt, args...);
  return buf;
}
} // namespace

std::string AttentionSpec::validate() const {
  using LL = long long;
  if (heads < 1 || heads > kMaxHeads)
    return format("heads must be in [1, %lld], got %lld", LL(kMaxHeads),
                  LL(heads));
  if (kvHeads < 1)
    return format("kv_heads must be >= 1, got %lld", LL(kvHeads));
  if (heads % kvHeads != 0)
    return format("kv_heads (%lld) must divide heads (%lld)", LL(kvHeads),
                  LL(heads));
  if (!isSupportedHeadDim(headDim))
    return format("head_dim must be %s, got %lld", kSupportedHeadDims,
                  LL(headDim));
  if (scale && !(std::isfinite(*scale) && *scale > 0))
    return format("scale must be a finite number > 0, got %g", *scale);
  // The kernels hold scale * log2(e) in f32.
  if (scale && *scale >= 0x1p126)
    return format("scale must be below 2^126 (the kernels hold it in f32), "
                  "got %g",
                  *scale);
  if (window && *window < 1)
    return format("window must be >= 1 when given, got %lld", LL(*window));

  if (bias == BiasKind::None) {
    if (slopes != SlopeSource::Standard)
      return "slopes = custom needs an ALiBi bias (bias is none)";
    if (maxBias != 8.0)
      return "max_bias applies to ALiBi slopes only (bias is none)";
    if (headOffset != 0 || totalHeads != 0)
      return "head_offset and total_heads apply to ALiBi slopes only (bias is "
             "none)";
  } else if (slopes == SlopeSource::Custom) {
    if (maxBias != 8.0)
      return "max_bias applies to standard slopes only (slopes are custom)";
    if (headOffset != 0 || totalHeads != 0)
      return "head_offset and total_heads apply to standard slopes only "
             "(slopes are custom: give each rank its own)";
  } else {
    if (!(std::isfinite(maxBias) && maxBias > 0))
      return format("max_bias must be a finite number > 0, got %g", maxBias);
    if (headOffset < 0)
      return format("head_offset must be >= 0, got %lld", LL(headOffset));
    if (totalHeads < 0 || totalHeads > kMaxHeads)
      return format("total_heads must be in [1, %lld] when given, got %lld",
                    LL(kMaxHeads), LL(totalHeads));
    if (headOffset > 0 && totalHeads == 0)
      return "head_offset needs total_heads (the model's head count)";
    if (totalHeads != 0 && headOffset + heads > totalHeads)
      return format("head_offset (%lld) + heads (%lld) exceeds total_heads "
                    "(%lld)",
                    LL(headOffset), LL(heads), LL(totalHeads));
  }

  if (bias == BiasKind::AlibiPositions && !keyPaddingMask)
    return "bias alibi_positions needs a key_padding_mask";
  if (keyPaddingMask && varlen)
    return "key_padding_mask cannot be combined with varlen cu_seqlens (give "
           "the unpadded lengths instead)";
  if (positionOffsets && bias == BiasKind::AlibiPositions)
    return "position offsets cannot be combined with bias alibi_positions "
           "(its positions come from the key_padding_mask)";
  if (pageSize != 0) {
    if (pageSize < kMinPageSize || pageSize > kMaxPageSize ||
        (pageSize & (pageSize - 1)) != 0)
      return format("page_size must be 0 (dense k/v) or a power of two from "
                    "%lld to %lld, got %lld",
                    LL(kMinPageSize), LL(kMaxPageSize), LL(pageSize));
    if (varlen)
      return "page_size cannot be combined with varlen cu_seqlens (a paged "
             "cache takes its lengths from context_lens)";
    if (keyPaddingMask)
      return "page_size cannot be combined with a key_padding_mask (a paged "
             "cache's keys are its context_lens first tokens)";
    if (positionOffsets)
      return "page_size cannot be combined with position offsets (a paged "
             "cache places queries bottom-right of context_lens)";
  }
  return {};
}

std::string AttentionSpec::canonical() const {
  // %a prints doubles exactly, so two specs that differ in any bit of the
  // scale or max_bias never share a key.
  std::string s = format("h=%lld;hkv=%lld;d=%lld;dtype=%s;scale=%a;",
                         (long long)heads, (long long)kvHeads,
                         (long long)headDim, toString(dtype).data(),
                         effectiveScale());
  s += format("causal=%d;window=%lld;bias=%s;", causal ? 1 : 0,
              (long long)window.value_or(0), toString(bias).data());
  if (hasAlibi()) {
    s += format("slopes=%s;", toString(slopes).data());
    if (slopes == SlopeSource::Standard)
      s += format("max_bias=%a;head_offset=%lld;total_heads=%lld;", maxBias,
                  (long long)headOffset, (long long)effectiveTotalHeads());
  }
  s += format("kpm=%d;varlen=%d", keyPaddingMask ? 1 : 0, varlen ? 1 : 0);
  // Only when set, so every spec without offsets keeps its key.
  if (positionOffsets)
    s += ";offsets=1";
  if (pageSize)
    s += format(";page=%lld", (long long)pageSize);
  return s;
}

} // namespace tilt
