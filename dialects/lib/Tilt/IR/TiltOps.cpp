//===- TiltOps.cpp - tilt operations --------------------------------------===//

#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/KernelCompiler.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace mlir::tilt;

#define GET_OP_CLASSES
#include "tilt/Dialect/Tilt/IR/TiltOps.cpp.inc"

namespace {

/// Where the head and sequence dims sit: dense [B,H,S,D], varlen [T,H,D].
struct Layout {
  bool varlen;
  unsigned rank() const { return varlen ? 3 : 4; }
  unsigned headDim() const { return 1; }
  unsigned seqDim() const { return varlen ? 0 : 2; }
  const char *shapeName() const { return varlen ? "[total, H, D]" : "[B, H, S, D]"; }
};

std::string typeString(Type t) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << t;
  return s;
}

std::optional<::tilt::DType> dtypeOf(Type t) {
  if (t.isF32())
    return ::tilt::DType::F32;
  if (t.isF16())
    return ::tilt::DType::F16;
  if (t.isBF16())
    return ::tilt::DType::BF16;
  return std::nullopt;
}

bool dimsAgree(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

bool isF32(Type t) { return t.isF32(); }
bool isI32(Type t) { return t.isSignlessInteger(32); }
bool isMaskElt(Type t) {
  return t.isSignlessInteger(1) || t.isSignlessInteger(8) ||
         t.isSignlessInteger(32);
}

/// `operand` has rank |expected|, those dims (dynamic ones agree with
/// anything) and an element type `eltOk` accepts; else "<what>, got <type>".
LogicalResult checkOperandShape(Operation *op, Value operand,
                                ArrayRef<int64_t> expected,
                                llvm::function_ref<bool(Type)> eltOk,
                                StringRef what) {
  auto t = cast<ShapedType>(operand.getType());
  bool ok = t.getRank() == static_cast<int64_t>(expected.size()) &&
            eltOk(t.getElementType());
  for (unsigned d = 0; ok && d < expected.size(); ++d)
    ok = dimsAgree(t.getDimSize(d), expected[d]);
  if (ok)
    return success();
  return op->emitOpError() << what << ", got " << t;
}

/// In the memref form, `operand` (a data tensor: q, k, v, o and the
/// backward's grad_o and grads) must have a unit innermost stride, what the
/// kernels' vector loads and stores along D need; its other strides are
/// free (a [B, S, H, D] tensor or a slice of a fused QKV tensor).
LogicalResult checkUnitInnermostStride(Operation *op, Value operand,
                                       StringRef name) {
  auto t = dyn_cast<MemRefType>(operand.getType());
  if (!t || t.getRank() == 0)
    return success();
  SmallVector<int64_t> strides;
  int64_t offset = 0;
  if (failed(t.getStridesAndOffset(strides, offset)))
    return op->emitOpError()
           << name << " must have a strided layout, got " << t;
  if (strides.back() == 1)
    return success();
  return op->emitOpError() << name
                           << " must have a unit innermost stride (its D "
                              "elements contiguous), got "
                           << t;
}

} // namespace

namespace {

/// The block table of a paged tilt.attention; null for dense k/v and for
/// the backward, which has no paged form.
template <typename OpT> Value blockTableOf(OpT op) {
  if constexpr (requires { op.getBlockTable(); })
    return op.getBlockTable();
  else
    return Value();
}

/// Where k/v keep their kv heads: [B, Hkv, S, D], [total, Hkv, D] or, paged,
/// [num_pages, page_size, Hkv, D].
unsigned kvHeadDim(bool paged) { return paged ? 2 : 1; }

/// The spec of either op: both carry the forward's operands and attributes
/// under the same names.
template <typename OpT>::tilt::AttentionSpec specOf(OpT op) {
  Layout layout{op.getCuSeqlensQ() != nullptr};
  const bool paged = blockTableOf(op) != nullptr;
  auto q = cast<ShapedType>(op.getQ().getType());
  auto k = cast<ShapedType>(op.getK().getType());
  ::tilt::AttentionSpec spec;
  spec.heads = q.getDimSize(layout.headDim());
  spec.kvHeads = k.getRank() > kvHeadDim(paged) ? k.getDimSize(kvHeadDim(paged))
                                                : ShapedType::kDynamic;
  spec.headDim = q.getShape().back();
  spec.dtype = dtypeOf(q.getElementType()).value_or(::tilt::DType::F32);
  if (std::optional<APFloat> scale = op.getScale())
    spec.scale = scale->convertToDouble();
  spec.causal = op.getCausal();
  if (std::optional<uint64_t> window = op.getWindow())
    spec.window = static_cast<int64_t>(*window);
  if (BiasAttr bias = op.getBiasAttr()) {
    spec.bias = bias.getKind();
    spec.slopes = bias.getSlopes();
    spec.maxBias = bias.getMaxBiasValue();
    spec.headOffset = bias.getHeadOffset();
    spec.totalHeads = bias.getTotalHeads();
  }
  spec.keyPaddingMask = op.getKeyPaddingMask() != nullptr;
  spec.varlen = layout.varlen;
  spec.positionOffsets = op.getQOffset() != nullptr;
  if (paged)
    spec.pageSize =
        k.getRank() == 4 && !k.isDynamicDim(1) ? k.getDimSize(1) : int64_t(-1);
  return spec;
}

} // namespace

::tilt::AttentionSpec AttentionOp::getSpec() { return specOf(*this); }
::tilt::AttentionSpec AttentionBackwardOp::getSpec() { return specOf(*this); }

namespace {

/// The checks both ops share: operand pairs, q/k/v, the spec's own rules,
/// slopes, the key padding mask and cu_seqlens. Sets `spec` and `batch`.
template <typename OpT>
LogicalResult verifyForwardOperands(OpT op, bool tensors,
                                    ::tilt::AttentionSpec &spec,
                                    int64_t &batch) {
  if ((op.getCuSeqlensQ() == nullptr) != (op.getCuSeqlensK() == nullptr))
    return op.emitOpError(
        "cu_seqlens_q and cu_seqlens_k must be given together");
  Layout layout{op.getCuSeqlensQ() != nullptr};
  for (Value operand : op->getOperands())
    if (!operand.getType().isIndex() &&
        isa<RankedTensorType>(operand.getType()) != tensors)
      return op.emitOpError("operands must all be tensors or all be memrefs");
  if ((op.getQOffset() == nullptr) != (op.getKOffset() == nullptr))
    return op.emitOpError("offsets needs both a q_offset and a k_offset");
  const bool paged = blockTableOf(op) != nullptr;
  if (paged && layout.varlen)
    return op.emitOpError("paged k/v cannot be combined with cu_seqlens");
  if ((op.getItemBegin() == nullptr) != (op.getItemEnd() == nullptr))
    return op.emitOpError("items needs both a begin and an end");
  if (op.getItemBegin() && tensors)
    return op.emitOpError("items belong to the memref (kernel) form");
  if (op.getItemBegin() && !op.getConfigAttr())
    return op.emitOpError("items need a tile_config: its blocks define the "
                          "work items they count");

  for (auto [name, operand] : {std::pair<StringRef, Value>{"q", op.getQ()},
                               {"k", op.getK()},
                               {"v", op.getV()}})
    if (failed(checkUnitInnermostStride(op, operand, name)))
      return failure();

  // q, k, v: rank, element type, static head counts and head dim.
  auto q = cast<ShapedType>(op.getQ().getType());
  auto k = cast<ShapedType>(op.getK().getType());
  auto v = cast<ShapedType>(op.getV().getType());
  for (auto [name, t] : {std::pair<const char *, ShapedType>{"q", q},
                         {"k", k},
                         {"v", v}}) {
    const bool isQ = std::string_view(name) == "q";
    if (t.getRank() != layout.rank())
      return op.emitOpError()
             << name << " must have rank " << layout.rank() << " ("
             << (paged && !isQ ? "[num_pages, page_size, Hkv, D]"
                               : layout.shapeName())
             << ")" << (layout.varlen ? " when cu_seqlens are given" : "")
             << ", got " << t;
    const unsigned headDim = isQ ? layout.headDim() : kvHeadDim(paged);
    if (t.isDynamicDim(headDim) || t.isDynamicDim(t.getRank() - 1))
      return op.emitOpError()
             << name << " must have static head count and head dim, got " << t;
    if (paged && !isQ && t.isDynamicDim(1))
      return op.emitOpError()
             << name << " must have a static page size when paged "
             << "([num_pages, page_size, Hkv, D]), got " << t;
  }
  Type elt = q.getElementType();
  if (!dtypeOf(elt))
    return op.emitOpError()
           << "element type must be f32, f16 or bf16, got " << elt;
  for (auto [name, t] :
       {std::pair<const char *, ShapedType>{"k", k}, {"v", v}})
    if (t.getElementType() != elt)
      return op.emitOpError() << name << " element type (" << t.getElementType()
                              << ") must match q's (" << elt << ")";
  if (k.getShape().back() != q.getShape().back() ||
      v.getShape().back() != q.getShape().back())
    return op.emitOpError()
           << "head dim must agree: q has " << q.getShape().back() << ", k "
           << k.getShape().back() << ", v " << v.getShape().back();
  for (unsigned d = 0; d < layout.rank(); ++d)
    if (!dimsAgree(k.getDimSize(d), v.getDimSize(d)))
      return op.emitOpError()
             << "v shape must equal k shape, got " << v << " and " << k;
  if (!layout.varlen && !paged && !dimsAgree(q.getDimSize(0), k.getDimSize(0)))
    return op.emitOpError() << "batch size must agree: q has "
                            << q.getDimSize(0) << ", k " << k.getDimSize(0);

  // The spec's own rules, shared with the runtime and the tools.
  spec = op.getSpec();
  if (std::string error = spec.validate(); !error.empty())
    return op.emitOpError(error);

  batch = layout.varlen ? ShapedType::kDynamic : q.getDimSize(0);
  int64_t seqK = paged ? ShapedType::kDynamic : k.getDimSize(layout.seqDim());
  auto checkShape = [&](Value operand, ArrayRef<int64_t> expected,
                        llvm::function_ref<bool(Type)> eltOk, StringRef what) {
    return checkOperandShape(op, operand, expected, eltOk, what);
  };

  // Custom slopes: [H] or [B, H] f32, present exactly when asked for.
  bool customSlopes =
      spec.hasAlibi() && spec.slopes == ::tilt::SlopeSource::Custom;
  if (customSlopes && !op.getSlopes())
    return op.emitOpError("slopes = custom needs a slopes operand");
  if (!customSlopes && op.getSlopes())
    return op.emitOpError("a slopes operand needs #tilt.bias<..., slopes = "
                          "custom>; this bias uses ")
           << (spec.hasAlibi() ? "standard slopes" : "no slopes");
  if (Value slopes = op.getSlopes()) {
    auto t = cast<ShapedType>(slopes.getType());
    std::string what = "slopes must be f32 [H] or [B, H] with H = " +
                       std::to_string(spec.heads);
    SmallVector<int64_t> expected{spec.heads};
    if (t.getRank() == 2) {
      if (layout.varlen)
        expected.insert(expected.begin(), ShapedType::kDynamic);
      else
        expected.insert(expected.begin(), batch);
    }
    if (failed(checkShape(slopes, expected, isF32, what)))
      return failure();
  }

  if (Value kpm = op.getKeyPaddingMask())
    if (failed(checkShape(kpm, {batch, seqK}, isMaskElt,
                          "key_padding_mask must be [B, Sk] of i1, i8 or i32")))
      return failure();

  if (layout.varlen) {
    for (Value cu : {op.getCuSeqlensQ(), op.getCuSeqlensK()})
      if (failed(checkShape(cu, {ShapedType::kDynamic}, isI32,
                            "cu_seqlens must be i32 [B+1]")))
        return failure();
    auto cq = cast<ShapedType>(op.getCuSeqlensQ().getType());
    auto ck = cast<ShapedType>(op.getCuSeqlensK().getType());
    if (!dimsAgree(cq.getDimSize(0), ck.getDimSize(0)))
      return op.emitOpError() << "cu_seqlens_q and cu_seqlens_k must have the "
                                 "same length, got "
                              << cq << " and " << ck;
  }

  if constexpr (requires { op.getContextLens(); }) {
    if (paged) {
      if (failed(checkShape(op.getBlockTable(), {batch, ShapedType::kDynamic},
                            isI32, "block_table must be i32 [B, max_pages]")) ||
          failed(checkShape(op.getContextLens(), {batch}, isI32,
                            "context_lens must be i32 [B]")))
        return failure();
    }
  }

  return success();
}

} // namespace

LogicalResult AttentionOp::verify() {
  // Operand kinds: all tensors, or all memrefs with destinations.
  bool tensors = isa<RankedTensorType>(getQ().getType());
  if (tensors && (getOut() || getLseOut()))
    return emitOpError("out and lse_out belong to the memref form; on "
                       "tensors the op returns o (and lse)");
  if (tensors && !getO())
    return emitOpError("the tensor form must return o");
  if (!tensors) {
    if (getO() || getLse())
      return emitOpError("the memref form returns nothing; write to out (and "
                         "lse_out) instead");
    if (!getOut())
      return emitOpError("the memref form needs an out operand");
  }
  ::tilt::AttentionSpec spec;
  int64_t batch = 0;
  if (failed(verifyForwardOperands(*this, tensors, spec, batch)))
    return failure();
  Layout layout{getCuSeqlensQ() != nullptr};
  auto q = cast<ShapedType>(getQ().getType());
  Type elt = q.getElementType();
  auto checkShape = [&](Value operand, ArrayRef<int64_t> expected,
                        llvm::function_ref<bool(Type)> eltOk, StringRef what) {
    return checkOperandShape(*this, operand, expected, eltOk, what);
  };

  // Results or destinations: o like q, lse f32 [B, H, Sq] ([H, total] ragged).
  Value o = tensors ? Value(getO()) : Value(getOut());
  Value lse = tensors ? Value(getLse()) : Value(getLseOut());
  auto oType = cast<ShapedType>(o.getType());
  if (failed(checkUnitInnermostStride(*this, o, "out")))
    return failure();
  if (oType.getShape() != q.getShape() || oType.getElementType() != elt)
    return emitOpError() << "o must have q's shape and element type ("
                         << typeString(q) << "), got " << oType;
  if (lse) {
    SmallVector<int64_t> expected =
        layout.varlen
            ? SmallVector<int64_t>{spec.heads, q.getDimSize(0)}
            : SmallVector<int64_t>{batch, spec.heads, q.getDimSize(2)};
    if (failed(checkShape(lse, expected, isF32,
                          layout.varlen ? "lse must be f32 [H, total]"
                                        : "lse must be f32 [B, H, Sq]")))
      return failure();
  }

  // Split-KV partials: f32, out's and lse's shapes behind a dynamic count.
  if ((getOutParts() == nullptr) != (getLseParts() == nullptr))
    return emitOpError("splits needs both out_parts and lse_parts");
  if (getOutParts()) {
    if (!getLseOut())
      return emitOpError("splits need lse_out: split 0 writes the rows' "
                         "constants there");
    auto behindCount = [](ArrayRef<int64_t> shape) {
      SmallVector<int64_t> parts = {ShapedType::kDynamic};
      llvm::append_range(parts, shape);
      return parts;
    };
    SmallVector<int64_t> lseShape =
        layout.varlen
            ? SmallVector<int64_t>{spec.heads, q.getDimSize(0)}
            : SmallVector<int64_t>{batch, spec.heads, q.getDimSize(2)};
    if (failed(checkShape(getOutParts(), behindCount(oType.getShape()), isF32,
                          "out_parts must be f32 [S] + out's shape")) ||
        failed(checkShape(getLseParts(), behindCount(lseShape), isF32,
                          "lse_parts must be f32 [S] + lse's shape")))
      return failure();
    TileConfigAttr config = getConfigAttr();
    if (!config || !config.isDecode())
      return emitOpError("splits need a decode-family tile_config "
                         "(cpu_decode_avx2, cpu_decode_avx512, "
                         "gpu_decode_sm80)");
  }

  if (TileConfigAttr config = getConfigAttr()) {
    if (isBackwardVariant(config.getVariant()))
      return emitOpError() << "tile_config variant "
                           << stringifyKernelVariant(config.getVariant())
                           << " is for tilt.attention_backward";
    const KernelVariant variant = config.getVariant();
    // Every CPU forward variant reads a paged cache (the prefill kernels
    // look each key's page up; chunked prefill); on the GPU only the decode
    // family does.
    if (spec.pageSize && config.isGpu() && !config.isDecode())
      return emitOpError() << "tile_config variant "
                           << stringifyKernelVariant(variant)
                           << " cannot read a paged KV cache; on the GPU "
                              "gpu_decode_sm80 does";
    if ((variant == KernelVariant::cpu_amx ||
         variant == KernelVariant::cpu_avx512bf16) &&
        spec.dtype != ::tilt::DType::BF16)
      return emitOpError() << "tile_config variant "
                           << stringifyKernelVariant(variant)
                           << " needs bf16 inputs, got " << elt;
  }
  return success();
}

LogicalResult AttentionBackwardOp::verify() {
  bool tensors = isa<RankedTensorType>(getQ().getType());
  if (tensors && (getDqOut() || getDslopesOut()))
    return emitOpError("grads and dslopes_out belong to the memref form; on "
                       "tensors the op returns dq, dk, dv (and dslopes)");
  if (tensors && !getDq())
    return emitOpError("the tensor form must return dq, dk and dv");
  if (!tensors && (getDq() || getDslopes()))
    return emitOpError("the memref form returns nothing; write to grads (and "
                       "dslopes_out) instead");
  if (!tensors && !getDqOut())
    return emitOpError("the memref form needs grads(%dq, %dk, %dv)");
  ::tilt::AttentionSpec spec;
  int64_t batch = 0;
  if (failed(verifyForwardOperands(*this, tensors, spec, batch)))
    return failure();
  Layout layout{getCuSeqlensQ() != nullptr};
  auto q = cast<ShapedType>(getQ().getType());
  auto k = cast<ShapedType>(getK().getType());
  auto like = [&](Value value, ShapedType want,
                  StringRef what) -> LogicalResult {
    auto t = cast<ShapedType>(value.getType());
    if (failed(checkUnitInnermostStride(*this, value, what)))
      return failure();
    if (t.getShape() == want.getShape() &&
        t.getElementType() == want.getElementType())
      return success();
    return emitOpError() << what << " must have the shape and element type "
                         << typeString(want) << ", got " << t;
  };
  if (failed(like(getO(), q, "o")) || failed(like(getGradO(), q, "grad_o")))
    return failure();
  SmallVector<int64_t> lseShape =
      layout.varlen ? SmallVector<int64_t>{spec.heads, q.getDimSize(0)}
                    : SmallVector<int64_t>{batch, spec.heads, q.getDimSize(2)};
  if (failed(checkOperandShape(*this, getLse(), lseShape, isF32,
                               layout.varlen ? "lse must be f32 [H, total]"
                                             : "lse must be f32 [B, H, Sq]")))
    return failure();
  if (Value g = getGradLse())
    if (failed(checkOperandShape(*this, g, lseShape, isF32,
                                 "grad_lse must be f32 like lse")))
      return failure();
  Value dq = tensors ? Value(getDq()) : Value(getDqOut());
  Value dk = tensors ? Value(getDk()) : Value(getDkOut());
  Value dv = tensors ? Value(getDv()) : Value(getDvOut());
  if (failed(like(dq, q, "dq")) || failed(like(dk, k, "dk")) ||
      failed(like(dv, k, "dv")))
    return failure();
  Value dslopes = tensors ? Value(getDslopes()) : Value(getDslopesOut());
  if (dslopes) {
    if (!getSlopes())
      return emitOpError("dslopes needs custom slopes (a slopes operand)");
    if (failed(checkOperandShape(
            *this, dslopes,
            {layout.varlen ? ShapedType::kDynamic : batch, spec.heads}, isF32,
            "dslopes must be f32 [B, H]")))
      return failure();
  }
  if (Value scale = getRowScale()) {
    if (tensors)
      return emitOpError("row_scale belongs to the memref (kernel) form");
    if (failed(checkOperandShape(*this, scale, lseShape, isF32,
                                 "row_scale must be f32 like lse")))
      return failure();
  }
  if (TileConfigAttr config = getConfigAttr()) {
    if (!isBackwardVariant(config.getVariant()))
      return emitOpError() << "tile_config variant "
                           << stringifyKernelVariant(config.getVariant())
                           << " is for tilt.attention; the backward takes "
                           << ::tilt::backwardVariantNames();
    if (config.getVariant() == KernelVariant::cpu_bwd_avx512bf16 &&
        spec.dtype != ::tilt::DType::BF16)
      return emitOpError()
             << "tile_config variant cpu_bwd_avx512bf16 needs "
                "bf16 inputs, got "
             << cast<ShapedType>(getQ().getType()).getElementType();
  }
  return success();
}
