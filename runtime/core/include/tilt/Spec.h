//===- Spec.h - The declarative attention-with-bias spec --------*- C++ -*-===//
//
// What a user asks Tilt to compute (see ALIBI.md). This header has no LLVM or
// MLIR dependency: the runtime, the tools and the compiler share it, and the
// `tilt.attention` verifier checks its fields through validate() so that one
// set of rules (and messages) serves every entry point.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_SPEC_H
#define TILT_SPEC_H

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tilt {

enum class DType { F32, F16, BF16 };

enum class BiasKind {
  None,           ///< plain attention
  Alibi,          ///< m_h * (j - i')
  AlibiSymmetric, ///< -m_h * |j - i'|
  AlibiPositions, ///< m_h * (cumsum(kpm)_j - 1), padded keys masked
};

enum class SlopeSource {
  Standard, ///< from the head count and max_bias (ALiBi paper / BLOOM)
  Custom,   ///< a float32 [H] or [B, H] tensor given at launch
};

std::string_view toString(DType t);
std::string_view toString(BiasKind k);
std::string_view toString(SlopeSource s);
std::optional<DType> parseDType(std::string_view s);
std::optional<BiasKind> parseBiasKind(std::string_view s);
std::optional<SlopeSource> parseSlopeSource(std::string_view s);
/// Bytes of one element of `t` in memory.
int64_t byteWidth(DType t);

/// The attention problem, independent of sequence lengths and batch size.
struct AttentionSpec {
  int64_t heads = 0;    ///< query heads H (local to this rank)
  int64_t kvHeads = 0;  ///< key/value heads Hkv; H % Hkv == 0
  int64_t headDim = 0;  ///< D
  DType dtype = DType::F32;
  std::optional<double> scale; ///< defaults to 1/sqrt(D)
  bool causal = false;
  /// Sliding window w: key j is visible to query i' only if i' - j < w.
  std::optional<int64_t> window;

  BiasKind bias = BiasKind::None;
  SlopeSource slopes = SlopeSource::Standard;
  double maxBias = 8.0;
  int64_t headOffset = 0; ///< first head of this rank within the model
  int64_t totalHeads = 0; ///< heads of the whole model (0 = `heads`)

  bool keyPaddingMask = false; ///< a [B, Sk] 0/1 mask is given at launch
  bool varlen = false;         ///< packed [total, H, D] with cu_seqlens
  /// Context parallelism (ALIBI.md): query row i and key j sit at the
  /// absolute positions q_offset + i and k_offset + j, two integers given at
  /// launch, instead of the bottom-right rule (i' = i + Sk - Sq).
  bool positionOffsets = false;
  /// Paged KV cache (ALIBI.md): 0 = dense k/v. Else k and v are caches
  /// [num_pages, page_size, Hkv, D] read through a block table [B,
  /// max_pages] and context lengths [B] (int32) given at launch; a power of
  /// two from 8 to 256. Sequence b has Sk = context_lens[b] keys and its
  /// queries sit bottom-right (i' = Sk - Sq + i).
  int64_t pageSize = 0;

  double effectiveScale() const;
  int64_t effectiveTotalHeads() const {
    return totalHeads ? totalHeads : heads;
  }
  bool hasAlibi() const { return bias != BiasKind::None; }

  /// Returns an empty string when the spec is consistent, else one line that
  /// names the offending field and what is allowed.
  std::string validate() const;

  /// A stable, human-readable rendering of every field that changes the
  /// generated code; equal specs give equal strings.
  std::string canonical() const;
};

/// Sizes of one launch. For varlen specs q/k/v are packed [total, H, D] and
/// `seqQ`/`seqK` are the totals; per-sequence lengths come from cu_seqlens.
struct Extents {
  int64_t batch = 1;
  int64_t seqQ = 0;
  int64_t seqK = 0;
};

/// Head dims the kernels are generated for.
bool isSupportedHeadDim(int64_t d);

/// Largest absolute position a query or key may take with position offsets:
/// distances are exact in f32 up to 2^24.
inline constexpr int64_t kMaxPosition = int64_t(1) << 24;

/// Most heads (and kv heads, and total heads) a spec may have: a GPU
/// grid's y and z dims hold at most this many, and no model comes near.
inline constexpr int64_t kMaxHeads = 65535;

/// Page sizes a paged KV cache may have: powers of two in this range.
inline constexpr int64_t kMinPageSize = 8, kMaxPageSize = 256;

inline constexpr const char *kSupportedHeadDims =
    "a multiple of 16 from 16 to 256";

} // namespace tilt

#endif // TILT_SPEC_H
