//===- CpuEmitter.h - The CPU kernel emitter ---------------------*- C++
//-*-===//
//
// convert-tilt-to-cpu's kernel body, in three files: CpuEmitter.cpp (the
// work item's geometry, slopes, positions, the finalization shared by every
// variant), Vector.cpp (the register-tiled vector path of cpu_avx2 and
// cpu_avx512) and Amx.cpp (cpu_amx's tile products and row softmax).
//
//===----------------------------------------------------------------------===//

#ifndef TILT_CONVERSION_TILTTOCPU_CPUEMITTER_H
#define TILT_CONVERSION_TILTTOCPU_CPUEMITTER_H

#include "../ArithBuilder.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/Spec.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <memory>

namespace mlir::tilt {

/// The values a CPU kernel body reads, taken from the kernel form of either
/// op (tilt.attention or tilt.attention_backward); absent ones are null.
struct KernelOperands {
  Value q, k, v, slopes, kpm, cuQ, cuK, qOffset, kOffset, itemBegin, itemEnd;
  Value blockTable, contextLens; ///< a paged KV cache (tilt.attention only)
  Value out, lseOut; ///< the forward's destinations
  /// The decode family's split-KV partials ([S] + out's and lse's shapes).
  Value outParts, lseParts;
};

/// The operands tilt.attention and tilt.attention_backward name alike.
template <typename OpT> KernelOperands sharedOperands(OpT op) {
  KernelOperands io;
  io.q = op.getQ();
  io.k = op.getK();
  io.v = op.getV();
  io.slopes = op.getSlopes();
  io.kpm = op.getKeyPaddingMask();
  io.cuQ = op.getCuSeqlensQ();
  io.cuK = op.getCuSeqlensK();
  io.qOffset = op.getQOffset();
  io.kOffset = op.getKOffset();
  io.itemBegin = op.getItemBegin();
  io.itemEnd = op.getItemEnd();
  if constexpr (requires { op.getBlockTable(); }) {
    io.blockTable = op.getBlockTable();
    io.contextLens = op.getContextLens();
  }
  return io;
}

/// The kernel-form operands of a tilt.attention.
KernelOperands operandsOf(AttentionOp op);

/// What every CPU kernel emitter builds with: the op, its spec and config,
/// the vector width, small builders, bias and mask arithmetic, tensor
/// indexing and the slopes. Two families derive from it: CpuEmitter (the
/// prefill kernels, a work item per query block) and the decode emitter
/// (Decode.cpp, a work item per (batch, kv head)).
class CpuKernelBuilder : protected ArithBuilder {
public:
  virtual ~CpuKernelBuilder() = default;

  virtual LogicalResult emit() = 0;

protected:
  /// `vl`: the f32 lanes of the variant's vectors.
  CpuKernelBuilder(Operation *kernelOp, const ::tilt::AttentionSpec &spec,
                   TileConfigAttr config, const KernelOperands &io,
                   ImplicitLocOpBuilder &b, int64_t vl)
      : ArithBuilder(b), kernelOp(kernelOp), io(io), spec(spec), config(config),
        vl(vl) {
    bm = config.getBlockM();
    bn = config.getBlockN();
    d = spec.headDim;
    f32 = b.getF32Type();
    vecF32 = VectorType::get({vl}, f32);
    elt = cast<MemRefType>(io.q.getType()).getElementType();
  }

  // --- small builders -------------------------------------------------------
  /// The D-vectors one step of a loop along D takes: `most` or the largest
  /// power of two below it that divides D / vl.
  int64_t vectorsPerStep(int64_t most) const {
    int64_t n = most;
    while ((d / vl) % n != 0)
      n /= 2;
    return n;
  }
  Value splat(double v) {
    return arith::ConstantOp::create(
        b, DenseElementsAttr::get(vecF32, b.getF32FloatAttr(float(v))));
  }
  Value bcast(Value scalar) {
    return vector::BroadcastOp::create(b, vecF32, scalar);
  }
  Value toF32(Value v) {
    if (elt.isF32())
      return v;
    Type target = isa<VectorType>(v.getType()) ? Type(vecF32) : Type(f32);
    return arith::ExtFOp::create(b, target, v);
  }
  Value fromF32(Value v) {
    if (elt.isF32())
      return v;
    return arith::TruncFOp::create(b, VectorType::get({vl}, elt), v);
  }
  /// The 2 vl bf16 of `pairs` (vector<2 vl x bf16>) as two f32 vectors
  /// without a shuffle: the even elements (bits << 16) and the odd ones
  /// (bits & 0xffff0000).
  std::pair<Value, Value> widenBf16Pairs(Value pairs) {
    VectorType vecI32 = VectorType::get({vl}, b.getI32Type());
    auto i32Splat = [&](uint32_t v) {
      return arith::ConstantOp::create(
          b, DenseElementsAttr::get(vecI32, b.getI32IntegerAttr(int32_t(v))));
    };
    Value x = vector::BitCastOp::create(b, vecI32, pairs);
    Value even = arith::ShLIOp::create(b, x, i32Splat(16));
    Value odd = arith::AndIOp::create(b, x, i32Splat(0xffff0000u));
    return {vector::BitCastOp::create(b, vecF32, even),
            vector::BitCastOp::create(b, vecF32, odd)};
  }
  // --- bf16 pairs (cpu_avx512bf16, cpu_bwd_avx512bf16) ---------------------
  /// acc + the pair dot products of x and y (vector<2 vl x bf16> each):
  /// lane i += x[2i] y[2i] + x[2i+1] y[2i+1] in f32. vdpbf16ps when
  /// `native` (the target has AVX512_BF16), else two FMAs of the widened
  /// pairs, the odd elements first as the SDM describes the instruction:
  /// products of bf16 numbers are exact in f32, so this is its arithmetic
  /// (less its flushing of denormals) on any AVX-512 CPU.
  Value bf16PairDot(Value acc, Value x, Value y, bool native);
  /// The bf16 pair at `index` (and the next element) of `memref` in every
  /// 32-bit lane: vector<2 vl x bf16>.
  Value broadcastBf16Pair(Value memref, ValueRange index);
  /// Pairs in a block of n rows: ceil(n / 2).
  Value pairCount(Value n) {
    return arith::DivSIOp::create(b, add(n, idx(1)), idx(2));
  }
  /// A block's rows interleaved in pairs, in bf16: dst[p][2c + e] = row
  /// 2p + e, column c, for p < pairCount(n) and c < cols (a multiple of
  /// vl); a row at or past n is zero. `load(r, col)` gives vl lanes of row
  /// r < n from column col, bf16 or f32 (rounded to bf16). dst's rows from
  /// dstRow0 (null: 0).
  void stageRowPairs(Value n, int64_t cols, Value dst,
                     function_ref<Value(Value, Value)> load,
                     Value dstRow0 = {});

  Value scratch(ArrayRef<int64_t> shape, Type t) {
    return memref::AllocaOp::create(b, MemRefType::get(shape, t),
                                    b.getI64IntegerAttr(64));
  }
  void forLoop(Value lb, Value ub, Value step, function_ref<void(Value)> body) {
    scf::ForOp::create(b, lb, ub, step, ValueRange{},
                       [&](OpBuilder &, Location, Value iv, ValueRange) {
                         body(iv);
                         scf::YieldOp::create(b);
                       });
  }
  /// scf.if yielding one value.
  Value ifValue(Type type, Value cond, function_ref<Value()> thenValue,
                function_ref<Value()> elseValue) {
    auto ifOp = scf::IfOp::create(b, TypeRange{type}, cond,
                                  /*addThenBlock=*/true, /*addElseBlock=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifOp.thenBlock());
    scf::YieldOp::create(b, ValueRange{thenValue()});
    b.setInsertionPointToStart(ifOp.elseBlock());
    scf::YieldOp::create(b, ValueRange{elseValue()});
    return ifOp.getResult(0);
  }
  void ifThen(Value cond, function_ref<void()> body) {
    scf::IfOp::create(b, cond, [&](OpBuilder &, Location) {
      body();
      scf::YieldOp::create(b);
    });
  }
  Value exp2(Value x);
  /// `visible` (null: all) and-ed with the positional masks at j - i' =
  /// `jrel`: j <= i' when causal, i' - j < w with a window.
  Value positionMask(Value visible, Value jrel) {
    auto both = [&](Value cond) {
      visible = visible ? arith::AndIOp::create(b, visible, cond) : cond;
    };
    if (spec.causal)
      both(arith::CmpFOp::create(b, arith::CmpFPredicate::OLE, jrel,
                                 splat(0.0)));
    if (spec.window)
      both(arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, jrel,
                                 splat(-double(*spec.window))));
    return visible;
  }
  /// s + bias, with j - i' given as `jrel` (vector) and, for the positions
  /// form, pos[j] - pos[i'] built on demand by `positions`. `anchor` (null
  /// without position offsets, see stageAnchors): the rows' anchors, taken
  /// out of the distance.
  Value addBias(Value s, Value jrel, Value anchor,
                function_ref<Value()> positions) {
    if (anchor && spec.bias != ::tilt::BiasKind::AlibiPositions)
      jrel = arith::SubFOp::create(b, jrel, anchor);
    switch (spec.bias) {
    case ::tilt::BiasKind::None:
      return s;
    case ::tilt::BiasKind::Alibi:
      return math::FmaOp::create(b, bcast(slope2), jrel, s);
    case ::tilt::BiasKind::AlibiSymmetric:
      return math::FmaOp::create(b, bcast(arith::NegFOp::create(b, slope2)),
                                 math::AbsFOp::create(b, jrel), s);
    case ::tilt::BiasKind::AlibiPositions:
      return math::FmaOp::create(b, bcast(slope2), positions(), s);
    }
    return s;
  }
  /// Scores are never NaN (-inf marks masked keys) and the sign of a zero
  /// maximum does not matter, so maxnumf with `nnan` is a single vmaxps
  /// (maximumf must order -0 below +0, which costs blends).
  Value maxF(Value x, Value y) {
    return arith::MaxNumFOp::create(b, x, y, nnan());
  }
  arith::FastMathFlagsAttr nnan() {
    return arith::FastMathFlagsAttr::get(b.getContext(),
                                         arith::FastMathFlags::nnan);
  }

  // --- tensor access
  // ----------------------------------------------------------
  /// Indices of q/o row `row` (sequence-relative), column `col`.
  SmallVector<Value> qIndex(Value row, Value col) {
    if (spec.varlen)
      return {add(seqQ0, row), head, col};
    return {batch, head, row, col};
  }
  /// Indices of key `row`'s k/v row, without the column: {batch, kv head,
  /// row}, {seqK0 + row, kv head} (varlen) or, over a paged cache, {page,
  /// slot, kv head}, `page` the key's when the caller has it (a block in
  /// one page), else looked up in the block table.
  SmallVector<Value> kvRowIndex(Value row, Value page = Value()) {
    if (io.blockTable) {
      Value slot = arith::AndIOp::create(b, row, idx(spec.pageSize - 1));
      return {page ? page : pageOf(row), slot, kvHead};
    }
    if (spec.varlen)
      return {add(seqK0, row), kvHead};
    return {batch, kvHead, row};
  }
  /// A row's indices (kvRowIndex, taken once a row where the loops along D
  /// reread it) with column `col` appended: the full k/v index.
  static SmallVector<Value> atColumn(ArrayRef<Value> rowIndex, Value col) {
    SmallVector<Value> index(rowIndex);
    index.push_back(col);
    return index;
  }
  SmallVector<Value> kvIndex(Value row, Value col) {
    return atColumn(kvRowIndex(row), col);
  }
  /// The cache page holding key `t` of `batch`'s sequence (paged):
  /// block_table[batch, t / page_size].
  Value pageOf(Value t);
  /// Asks for the lines of `tensor`'s row `key` (kvRowIndex) holding columns
  /// [col, col + count), into the cache level `locality` names (3: L1, 2:
  /// L2).
  void prefetchLines(Value tensor, ArrayRef<Value> key, Value col,
                     int64_t count, int locality = 3);

  /// The slope of `head` (of `batch` for [B, H] slopes) in log2 units.
  Value slopeLog2();
  /// Sets the sequence of `batch`: seqQ0/seqK0 (varlen), sq, sk (paged:
  /// context_lens[batch]), and shift (i' = i + shift): Sk - Sq, or
  /// q_offset - k_offset with offsets.
  void loadSequence();

  /// Writes one finished row `row` (sequence-relative) of `head`:
  /// o = acc / l, its f32 vectors given by `accAt(column)`, and lse =
  /// (m + log2 l) * ln 2 passed through `constants` (the row constants the
  /// scores were taken without, natural units); a row that saw no key
  /// (l = 0) gets o = 0 and lse = -inf. With `part` (split-KV, the decode
  /// family), to out_parts[part] and lse_parts[part] instead, in f32, the
  /// lse without the row constants, which split 0 writes to lse_out.
  void writeRow(Value row, Value l, Value m, function_ref<Value(int64_t)> accAt,
                function_ref<Value(Value)> constants, Value part = Value());
  /// `lse` plus the row constant an anchor `a` took out of the bias (see
  /// CpuEmitter::stageAnchors): m * a, or -m * |a| for the symmetric form,
  /// with m = slope2 in natural units.
  Value addAnchorConstant(Value lse, Value a);

  Operation *kernelOp;
  KernelOperands io;
  ::tilt::AttentionSpec spec;
  TileConfigAttr config;
  int64_t vl, bm, bn, d;
  Type f32, elt;
  VectorType vecF32;

  // Per work item.
  Value batch, head, kvHead, seqQ0, seqK0, sq, sk, shift;
  Value slope2, pos;
};

/// Emits one work item's loop nest for a CPU tile configuration. The
/// phases every variant shares live in CpuEmitter.cpp; a variant's matrix
/// path is a subclass in a file of its own that fills three hooks:
/// VectorEmitter (cpu_avx2, cpu_avx512) in Vector.cpp, AmxEmitter (cpu_amx)
/// in Amx.cpp. makeCpuEmitter() is the registration: a new variant is one
/// file plus one case there.
class CpuEmitter : public CpuKernelBuilder {
public:
  LogicalResult emit() override;

protected:
  CpuEmitter(AttentionOp op, ImplicitLocOpBuilder &b, int64_t vl)
      : CpuKernelBuilder(op, op.getSpec(), op.getConfigAttr(), operandsOf(op),
                         b, vl),
        op(op) {}

  // --- hooks: the variant's matrix path --------------------------------------
  /// Checks what the variant needs of the spec and config, and allocates its
  /// scratch (once per call, before the shared scratch).
  virtual LogicalResult allocateScratch() = 0;
  /// Called once the item's rows are known, before its running state is set.
  virtual void beginItem() {}
  /// Stages the item's query block.
  virtual void stageQuery() = 0;
  /// Streams the keys [kBegin, kEnd) through scores, softmax and P.V into
  /// Acc, mRow and lRow.
  virtual void keyLoop(Value kBegin, Value kEnd) = 0;

  // --- phases every variant shares -----------------------------------------
  void emitItem(Value item);
  void stagePositions();
  void stageAnchors();
  void finalize();

  /// Runs `tile(first, count)` over [0, total) in as few groups of at most
  /// `group` as cover it, balanced to sizes that differ by at most one: a
  /// loop per size.
  void groups(int64_t total, int64_t group,
              function_ref<void(Value, int64_t)> tile);

  AttentionOp op;
  // Shared scratch, allocated once per call: Acc [BM][D], per-row state
  // [BM], the positions of the block's rows [BM], their anchors [BM].
  Value acc, mRow, lRow, alphaRow, posRef, anchorRow;
  // Per work item.
  Value rowStart, rows;
  Value firstPos, lastPos; // i' of the block's first and last rows
};

/// The register-tiled vector path (Vector.cpp): cpu_avx2, cpu_avx512 and
/// cpu_avx512bf16, whose bf16 dot products are vdpbf16ps when
/// `nativeBf16Dot`, else two f32 FMAs of the widened pairs.
std::unique_ptr<CpuEmitter>
makeVectorEmitter(AttentionOp op, ImplicitLocOpBuilder &b, bool nativeBf16Dot);
/// The AMX tile path (Amx.cpp): cpu_amx.
std::unique_ptr<CpuEmitter> makeAmxEmitter(AttentionOp op,
                                           ImplicitLocOpBuilder &b);
/// The decode family (Decode.cpp): cpu_decode_avx2, cpu_decode_avx512;
/// bf16 q . K as vdpbf16ps where `nativeBf16Dot`.
std::unique_ptr<CpuKernelBuilder>
makeDecodeEmitter(AttentionOp op, ImplicitLocOpBuilder &b, bool nativeBf16Dot);
/// The emitter of the op's tile_config variant (a CPU one);
/// `nativeBf16Dot`: the target has AVX512_BF16 (makeVectorEmitter).
std::unique_ptr<CpuKernelBuilder>
makeCpuEmitter(AttentionOp op, ImplicitLocOpBuilder &b, bool nativeBf16Dot);
/// The backward family (Backward.cpp): cpu_bwd_avx2, cpu_bwd_avx512 and
/// cpu_bwd_avx512bf16 (its dot products as makeVectorEmitter's).
std::unique_ptr<CpuKernelBuilder> makeBackwardEmitter(AttentionBackwardOp op,
                                                      ImplicitLocOpBuilder &b,
                                                      bool nativeBf16Dot);

} // namespace mlir::tilt

#endif // TILT_CONVERSION_TILTTOCPU_CPUEMITTER_H
