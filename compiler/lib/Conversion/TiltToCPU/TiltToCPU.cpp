//===- TiltToCPU.cpp - tilt.attention -> tiled streaming softmax on CPU ---===//
//
// Lowers the kernel form of tilt.attention (memrefs + work items + a CPU tile
// configuration) to scf/vector/memref/arith. One work item is one query block
// of one (batch, head); vectors run along the block's query rows:
//
//   Qt   = (q[rows] * scale * log2(e))^T                  (f32, staged once)
//   for each key block inside the visible range:
//     St = K . Qt             K rows broadcast from memory, register tiles
//     per query vector: St += bias; mask; m' = max(m, max_j St);
//                       Pt = exp2(St - m'); alpha = exp2(m - m');
//                       l = l * alpha + sum_j Pt      (all vertical ops)
//     Acc = Acc * alpha + Pt^T . V                          (register tiles)
//   o = Acc / l;  lse = (m + log2 l) * ln 2
//
// Transposing Q once per item (instead of K once per key block) keeps every
// key block's work free of shuffles, and makes the softmax's row reductions
// plain element-wise max/add across keys. Scores live in log2 units so the
// softmax needs exp2 only. The bias uses (j - i') exactly (an integer, exact
// in f32) times the slope, so no large row constant ever costs precision.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Log2Units.h"
#include "tilt/Compiler/Passes.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/Slopes.h"

#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <cmath>
#include <limits>

namespace mlir::tilt {
#define GEN_PASS_DEF_CONVERTTILTTOCPU
#include "tilt/Compiler/Passes.h.inc"
} // namespace mlir::tilt

using namespace mlir;
using namespace mlir::tilt;

namespace {

/// Coefficients of 2^f on [0, 1), a degree-5 fit of the relative error
/// (max 9e-8, below f32 epsilon); computed for Tilt by weighted least squares
/// on Chebyshev nodes.
constexpr float kExp2Poly[] = {0.99999994f,  0.693152964f,  0.240154535f,
                               0.0558236055f, 0.00899258442f, 0.00187623291f};

/// Number of vector registers the accumulator tiles of one micro-kernel may
/// take; the rest hold operands. 32 zmm on AVX-512, 16 ymm on AVX2.
int64_t accumulatorBudget(KernelVariant v) {
  return v == KernelVariant::cpu_avx2 ? 12 : 24;
}

class KernelEmitter {
public:
  KernelEmitter(AttentionOp op, ImplicitLocOpBuilder &b)
      : op(op), b(b), spec(op.getSpec()), config(op.getConfigAttr()) {
    vl = config.getVariant() == KernelVariant::cpu_avx2 ? 8 : 16;
    amx = config.getVariant() == KernelVariant::cpu_amx;
    bm = config.getBlockM();
    bn = config.getBlockN();
    d = spec.headDim;
    f32 = b.getF32Type();
    vecF32 = VectorType::get({vl}, f32);
    elt = cast<MemRefType>(op.getQ().getType()).getElementType();
  }

  LogicalResult emit();

private:
  // --- small builders -------------------------------------------------------
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value f32c(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(float(v)));
  }
  Value splat(double v) {
    return arith::ConstantOp::create(
        b, DenseElementsAttr::get(vecF32, b.getF32FloatAttr(float(v))));
  }
  Value bcast(Value scalar) {
    return vector::BroadcastOp::create(b, vecF32, scalar);
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value minI(Value x, Value y) { return arith::MinSIOp::create(b, x, y); }
  Value maxI(Value x, Value y) { return arith::MaxSIOp::create(b, x, y); }
  Value indexToF32(Value i) {
    Value i64 = arith::IndexCastOp::create(b, b.getI64Type(), i);
    return arith::SIToFPOp::create(b, f32, i64);
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
  Value scratch(ArrayRef<int64_t> shape, Type t) {
    return memref::AllocaOp::create(b, MemRefType::get(shape, t),
                                    b.getI64IntegerAttr(64));
  }
  void forLoop(Value lb, Value ub, Value step,
               function_ref<void(Value)> body) {
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
  /// form, pos[j] - pos[i'] built on demand by `positions`.
  Value addBias(Value s, Value jrel, function_ref<Value()> positions) {
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

  // --- tensor access ----------------------------------------------------------
  /// Indices of q/o row `row` (sequence-relative), column `col`.
  SmallVector<Value> qIndex(Value row, Value col) {
    if (spec.varlen)
      return {add(seqQ0, row), head, col};
    return {batch, head, row, col};
  }
  SmallVector<Value> kvIndex(Value row, Value col) {
    if (spec.varlen)
      return {add(seqK0, row), kvHead, col};
    return {batch, kvHead, row, col};
  }

  // --- phases ---------------------------------------------------------------
  void emitItem(Value item);
  Value slopeLog2();
  void stageQuery();
  void stagePositions();
  void emitKeyBlock(Value kb, Value nk);
  void stageKeys(Value kb, Value nk);
  void scoreTile(Value kb, Value j0, int64_t keys, int64_t c0, int64_t cols);
  void softmaxColumn(Value c, Value kb, Value nk);
  void pvTile(Value r0, int64_t rows, int64_t c0, int64_t cols, Value kb,
              Value nk);
  void finalize();

  // The AMX variant (bf16): S = Q K^T and P V on tiles, softmax row-wise.
  void stageQueryAmx();
  void emitKeyLoopAmx(Value kBegin, Value kEnd);
  void stageKeysAmx(Value kb, Value nk, Value buf);
  void tileMatmul(Value rowsM, int64_t colsN, int64_t depth, Value aMem,
                  Value aBuf, Value bMem, Value bBuf, Value cMem, Value cBuf);
  void softmaxBlockAmx(Value kb, Value nk, Value buf);
  void softmaxRowAmx(Value i, Value kb, Value nk, bool masked, Value buf);
  void accumulateAmx(Value buf);
  /// Combines all lanes of `v` with butterfly shuffles; every lane of the
  /// result holds the total (no scalar extraction, no ordering rules).
  Value allReduce(Value v, function_ref<Value(Value, Value)> combine);
  SmallVector<Value> transpose16(SmallVector<Value> rows);

  /// Runs `tile(first, count)` over [0, total) in groups of `group`: a loop
  /// over the full groups and one more call for the remainder.
  void groups(int64_t total, int64_t group,
              function_ref<void(Value, int64_t)> tile);

  AttentionOp op;
  ImplicitLocOpBuilder &b;
  ::tilt::AttentionSpec spec;
  TileConfigAttr config;
  int64_t vl, bm, bn, d;
  bool amx;
  Type f32, elt;
  VectorType vecF32;

  // Scratch, allocated once per call: Qt [D][BM], staged K/V [BN][D] (16-bit
  // inputs only), St/Pt [BN][BM], Acc [BM][D], per-row state [BM].
  Value qt, ks, vs, st, acc, mRow, lRow, alphaRow, posRef;
  // AMX scratch: Q rows [BM][D]; double-buffered ([2][...]) K^T and V in
  // VNNI pairs ([D/2][2BN], [BN/2][2D]), scores [BM][BN] f32, P [BM][BN]
  // bf16 and alpha [BM]; P.V [BM][D] f32.
  Value qs16, kvnni, vvnni, sMat, pMat, oBlock, alphas;
  // Per work item.
  Value batch, head, kvHead, seqQ0, seqK0, sq, sk, rowStart, rows, shift;
  Value firstPos, lastPos; // i' of the block's first and last rows
  Value liveRows;          // AMX: rows rounded up to the 32-row tile pairs
  Value slope2, pos;
};

Value KernelEmitter::exp2(Value x) {
  // 2^x = 2^n * 2^f with n = floor(x), f in [0, 1). Inputs here are <= 0;
  // below -127 the result is 0 (also for -inf, the masked scores).
  x = maxF(x, splat(-127.0));
  Value n = math::FloorOp::create(b, x);
  Value f = arith::SubFOp::create(b, x, n);
  Value p = splat(kExp2Poly[5]);
  for (int k = 4; k >= 0; --k)
    p = math::FmaOp::create(b, p, f, splat(kExp2Poly[k]));
  VectorType vecI32 = VectorType::get({vl}, b.getI32Type());
  Value ni = arith::FPToSIOp::create(b, vecI32, n);
  Value biased = arith::AddIOp::create(
      b, ni,
      arith::ConstantOp::create(
          b, DenseElementsAttr::get(vecI32, b.getI32IntegerAttr(127))));
  Value bits = arith::ShLIOp::create(
      b, biased,
      arith::ConstantOp::create(
          b, DenseElementsAttr::get(vecI32, b.getI32IntegerAttr(23))));
  Value scale = arith::BitcastOp::create(b, vecF32, bits);
  return arith::MulFOp::create(b, p, scale);
}

void KernelEmitter::groups(int64_t total, int64_t group,
                           function_ref<void(Value, int64_t)> tile) {
  group = std::min(group, total);
  int64_t full = total / group * group;
  forLoop(idx(0), idx(full), idx(group),
          [&](Value first) { tile(first, group); });
  if (full < total)
    tile(idx(full), total - full);
}

LogicalResult KernelEmitter::emit() {
  if (d % vl != 0 || bm % vl != 0)
    return op.emitOpError("head dim and block_m must be multiples of the "
                          "vector length ")
           << vl;
  if (amx) {
    if (!elt.isBF16() || d % 32 != 0 || bn % 32 != 0 || bm % 32 != 0)
      return op.emitOpError("cpu_amx needs bf16 inputs and a head dim, "
                            "block_m and block_n that are multiples of 32");
    qs16 = scratch({bm, d}, elt);
    kvnni = scratch({2, d / 2, 2 * bn}, elt);
    vvnni = scratch({2, bn / 2, 2 * d}, elt);
    sMat = scratch({2, bm, bn}, f32);
    pMat = scratch({2, bm, bn}, elt);
    alphas = scratch({2, bm}, f32);
    oBlock = scratch({bm, d}, f32);
  } else {
    qt = scratch({d, bm}, f32);
    if (!elt.isF32()) {
      ks = scratch({bn, d}, f32);
      vs = scratch({bn, d}, f32);
    }
    st = scratch({bn, bm}, f32);
  }
  acc = scratch({bm, d}, f32);
  mRow = scratch({bm}, f32);
  lRow = scratch({bm}, f32);
  alphaRow = scratch({bm}, f32);
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    posRef = scratch({bm}, f32);
  forLoop(op.getItemBegin(), op.getItemEnd(), idx(1),
          [&](Value item) { emitItem(item); });
  return success();
}

void KernelEmitter::emitItem(Value item) {
  // Geometry of this item: (batch, head, query block).
  Value q = op.getQ();
  Value h = idx(spec.heads);
  Value maxSq;
  if (spec.varlen) {
    // Query blocks per (batch, head) count against the longest sequence, as
    // the runtime does; scan cu_seqlens_q once per item (B is small).
    Value cu = op.getCuSeqlensQ();
    Value nb = sub(memref::DimOp::create(b, cu, 0), idx(1));
    auto loop = scf::ForOp::create(
        b, idx(0), nb, idx(1), ValueRange{idx(0)},
        [&](OpBuilder &, Location, Value i, ValueRange args) {
          Value lo = memref::LoadOp::create(b, cu, ValueRange{i});
          Value hi = memref::LoadOp::create(b, cu, ValueRange{add(i, idx(1))});
          Value len = arith::IndexCastOp::create(
              b, b.getIndexType(), arith::SubIOp::create(b, hi, lo));
          scf::YieldOp::create(b, ValueRange{maxI(args[0], len)});
        });
    maxSq = loop.getResult(0);
  } else {
    maxSq = memref::DimOp::create(b, q, 2);
  }
  Value numQBlocks = arith::CeilDivSIOp::create(b, maxSq, idx(bm));
  Value qb = arith::RemSIOp::create(b, item, numQBlocks);
  Value bh = arith::DivSIOp::create(b, item, numQBlocks);
  head = arith::RemSIOp::create(b, bh, h);
  batch = arith::DivSIOp::create(b, bh, h);
  kvHead = arith::DivSIOp::create(b, head, idx(spec.heads / spec.kvHeads));
  if (spec.varlen) {
    auto load = [&](Value cu, Value i) -> Value {
      Value v = memref::LoadOp::create(b, cu, ValueRange{i});
      return arith::IndexCastOp::create(b, b.getIndexType(), v);
    };
    seqQ0 = load(op.getCuSeqlensQ(), batch);
    sq = sub(load(op.getCuSeqlensQ(), add(batch, idx(1))), seqQ0);
    seqK0 = load(op.getCuSeqlensK(), batch);
    sk = sub(load(op.getCuSeqlensK(), add(batch, idx(1))), seqK0);
  } else {
    sq = memref::DimOp::create(b, q, 2);
    sk = memref::DimOp::create(b, op.getK(), 2);
  }
  rowStart = mul(qb, idx(bm));
  Value live = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, rowStart, sq);
  ifThen(live, [&] {
    rows = minI(idx(bm), sub(sq, rowStart));
    shift = sub(sk, sq); // i' = i + Sk - Sq
    slope2 = spec.hasAlibi() ? slopeLog2() : Value();

    // Keys any row of this block may see.
    Value kBegin = idx(0), kEnd = sk;
    firstPos = add(rowStart, shift);
    lastPos = add(firstPos, sub(rows, idx(1)));
    if (amx)
      liveRows = minI(idx(bm), mul(arith::CeilDivSIOp::create(b, rows, idx(32)),
                                   idx(32)));
    if (spec.causal)
      kEnd = maxI(idx(0), minI(sk, add(lastPos, idx(1))));
    if (spec.window)
      kBegin = maxI(idx(0), add(sub(firstPos, idx(*spec.window)), idx(1)));

    // Running state.
    forLoop(idx(0), idx(bm), idx(1), [&](Value i) {
      memref::StoreOp::create(b, f32c(-INFINITY), mRow, ValueRange{i});
      memref::StoreOp::create(b, f32c(0.0), lRow, ValueRange{i});
      for (int64_t c = 0; c < d; c += vl)
        vector::StoreOp::create(b, splat(0.0), acc, ValueRange{i, idx(c)});
    });
    if (amx)
      stageQueryAmx();
    else
      stageQuery();
    if (spec.bias == ::tilt::BiasKind::AlibiPositions)
      stagePositions();
    if (amx)
      emitKeyLoopAmx(kBegin, kEnd);
    else
      forLoop(kBegin, kEnd, idx(bn), [&](Value kb) {
        emitKeyBlock(kb, minI(idx(bn), sub(kEnd, kb)));
      });
    finalize();
    if (pos)
      memref::DeallocOp::create(b, pos);
    pos = nullptr;
  });
}

Value KernelEmitter::slopeLog2() {
  if (spec.slopes == ::tilt::SlopeSource::Custom) {
    Value slopes = op.getSlopes();
    auto type = cast<MemRefType>(slopes.getType());
    SmallVector<Value> index{head};
    if (type.getRank() == 2)
      index.insert(index.begin(), batch);
    Value m = memref::LoadOp::create(b, slopes, index);
    return arith::MulFOp::create(b, m, f32c(kLog2E));
  }
  // Standard slopes are constants of the kernel: a table indexed by head.
  std::vector<float> table = ::tilt::standardSlopes(spec);
  for (float &m : table)
    m = static_cast<float>(m * kLog2E);
  auto type = VectorType::get({static_cast<int64_t>(table.size())}, f32);
  Value all = arith::ConstantOp::create(
      b, DenseElementsAttr::get(type, ArrayRef<float>(table)));
  return vector::ExtractOp::create(b, all, OpFoldResult(head));
}

void KernelEmitter::stageQuery() {
  // Qt[k][i] = q[i][k] * scale * log2(e); rows past the sequence are zero.
  // Once per item, so scalar moves are cheap enough.
  Value scale = f32c(spec.effectiveScale() * kLog2E);
  forLoop(idx(0), idx(bm), idx(1), [&](Value i) {
    Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, i, rows);
    Value row = minI(add(rowStart, i), sub(sq, idx(1)));
    forLoop(idx(0), idx(d), idx(1), [&](Value k) {
      Value v = toF32(memref::LoadOp::create(b, op.getQ(), qIndex(row, k)));
      v = arith::SelectOp::create(b, inside, arith::MulFOp::create(b, v, scale),
                                  f32c(0.0));
      memref::StoreOp::create(b, v, qt, ValueRange{k, i});
    });
  });
}

void KernelEmitter::stagePositions() {
  // pos[j] = cumsum(kpm)[j] - 1 over the whole sequence, and each row's
  // reference pos[clamp(i')], which the scores are taken relative to.
  auto type = MemRefType::get({ShapedType::kDynamic}, f32);
  // Padded by a block so row-wise code may read whole vectors at the end.
  pos = memref::AllocOp::create(b, type, ValueRange{add(sk, idx(bn))},
                                b.getI64IntegerAttr(64));
  Value kpm = op.getKeyPaddingMask();
  scf::ForOp::create(
      b, idx(0), sk, idx(1), ValueRange{f32c(-1.0)},
      [&](OpBuilder &, Location, Value j, ValueRange args) {
        Value m = memref::LoadOp::create(b, kpm, ValueRange{batch, j});
        Value zero = arith::ConstantOp::create(b, b.getI8IntegerAttr(0));
        Value on = arith::CmpIOp::create(b, arith::CmpIPredicate::ne, m, zero);
        Value next = arith::SelectOp::create(
            b, on, arith::AddFOp::create(b, args[0], f32c(1.0)), args[0]);
        memref::StoreOp::create(b, next, pos, ValueRange{j});
        scf::YieldOp::create(b, ValueRange{next});
      });
  forLoop(sk, add(sk, idx(bn)), idx(1), [&](Value j) {
    memref::StoreOp::create(b, f32c(0.0), pos, ValueRange{j});
  });
  forLoop(idx(0), idx(bm), idx(1), [&](Value i) {
    Value ip = add(add(rowStart, i), shift);
    Value ref = memref::LoadOp::create(
        b, pos, ValueRange{maxI(idx(0), minI(ip, sub(sk, idx(1))))});
    memref::StoreOp::create(b, ref, posRef, ValueRange{i});
  });
}

void KernelEmitter::emitKeyBlock(Value kb, Value nk) {
  // nk: keys of this block inside the visible range (the last may be short).
  if (ks)
    stageKeys(kb, nk);
  int64_t budget = accumulatorBudget(config.getVariant());
  int64_t qv = bm / vl;
  int64_t qChunk = std::min<int64_t>(qv, 4);
  for (int64_t c0 = 0; c0 < qv; c0 += qChunk) {
    int64_t n = std::min(qChunk, qv - c0);
    groups(bn, std::max<int64_t>(1, budget / n), [&](Value j0, int64_t keys) {
      scoreTile(kb, j0, keys, c0, n);
    });
  }
  forLoop(idx(0), idx(qv), idx(1),
          [&](Value c) { softmaxColumn(c, kb, nk); });
  int64_t dv = d / vl;
  int64_t dChunk = std::min<int64_t>(dv, 8);
  for (int64_t c0 = 0; c0 < dv; c0 += dChunk) {
    int64_t n = std::min(dChunk, dv - c0);
    groups(bm, std::max<int64_t>(1, budget / n), [&](Value r0, int64_t rows) {
      pvTile(r0, rows, c0, n, kb, nk);
    });
  }
}

void KernelEmitter::stageKeys(Value kb, Value nk) {
  // 16-bit inputs: widen the block's K and V rows to f32 once, so the
  // micro-kernels broadcast and load plain f32.
  VectorType vecElt = VectorType::get({vl}, elt);
  forLoop(idx(0), nk, idx(1), [&](Value j) {
    Value row = add(kb, j);
    for (int64_t c = 0; c < d; c += vl) {
      Value k = vector::LoadOp::create(b, vecElt, op.getK(),
                                       kvIndex(row, idx(c)));
      vector::StoreOp::create(b, toF32(k), ks, ValueRange{j, idx(c)});
      Value v = vector::LoadOp::create(b, vecElt, op.getV(),
                                       kvIndex(row, idx(c)));
      vector::StoreOp::create(b, toF32(v), vs, ValueRange{j, idx(c)});
    }
  });
}

void KernelEmitter::scoreTile(Value kb, Value j0, int64_t keys, int64_t c0,
                              int64_t cols) {
  // St[j0 + r, (c0 + c) * vl ...] = sum_k K[kb + j0 + r, k] * Qt[k, ...].
  // Keys past the sequence read its last row instead (their scores are
  // never used), so no load leaves the tensor.
  SmallVector<Value> rowsIdx;
  for (int64_t r = 0; r < keys; ++r) {
    Value j = add(j0, idx(r));
    rowsIdx.push_back(ks ? j : minI(add(kb, j), sub(sk, idx(1))));
  }
  SmallVector<Value> init(keys * cols, splat(0.0));
  auto loop = scf::ForOp::create(
      b, idx(0), idx(d), idx(1), init,
      [&](OpBuilder &, Location, Value k, ValueRange accs) {
        SmallVector<Value> qv;
        for (int64_t c = 0; c < cols; ++c)
          qv.push_back(vector::LoadOp::create(
              b, vecF32, qt, ValueRange{k, idx((c0 + c) * vl)}));
        SmallVector<Value> next;
        for (int64_t r = 0; r < keys; ++r) {
          Value kv = ks ? memref::LoadOp::create(b, ks, ValueRange{rowsIdx[r], k})
                        : memref::LoadOp::create(b, op.getK(),
                                                 kvIndex(rowsIdx[r], k));
          Value kb = bcast(kv);
          for (int64_t c = 0; c < cols; ++c)
            next.push_back(
                vector::FMAOp::create(b, kb, qv[c], accs[r * cols + c]));
        }
        scf::YieldOp::create(b, next);
      });
  for (int64_t r = 0; r < keys; ++r)
    for (int64_t c = 0; c < cols; ++c)
      vector::StoreOp::create(b, loop.getResult(r * cols + c), st,
                              ValueRange{add(j0, idx(r)), idx((c0 + c) * vl)});
}

void KernelEmitter::softmaxColumn(Value c, Value kb, Value nk) {
  // The online softmax for the vl query rows c * vl ...: every reduction
  // over keys is an element-wise max or add across the block's rows of St.
  Value i0 = mul(c, idx(vl));
  SmallVector<float> lanes;
  for (int64_t l = 0; l < vl; ++l)
    lanes.push_back(static_cast<float>(l));
  Value iota = arith::ConstantOp::create(
      b, DenseElementsAttr::get(vecF32, ArrayRef<float>(lanes)));
  // jrel(j) = (kb + j) - i' = j + (kb - rowStart - shift - i0) - lane.
  Value base = arith::SubFOp::create(
      b, bcast(indexToF32(sub(sub(kb, add(rowStart, shift)), i0))), iota);
  Value negInf = splat(-INFINITY);
  Value ref = posRef ? vector::LoadOp::create(b, vecF32, posRef, ValueRange{i0})
                     : Value();
  Value kpm = op.getKeyPaddingMask();

  auto pass1 = scf::ForOp::create(
      b, idx(0), nk, idx(1), ValueRange{negInf},
      [&](OpBuilder &, Location, Value j, ValueRange args) {
        Value s = vector::LoadOp::create(b, vecF32, st, ValueRange{j, i0});
        Value jrel = arith::AddFOp::create(b, base, bcast(indexToF32(j)));
        s = addBias(s, jrel, [&] {
          Value p = memref::LoadOp::create(b, pos, ValueRange{add(kb, j)});
          return arith::SubFOp::create(b, bcast(p), ref).getResult();
        });
        // Visible: j <= i' (causal), i' - j < w (window), kpm[j] != 0.
        Value visible = positionMask(Value(), jrel);
        auto both = [&](Value cond) {
          visible = visible ? arith::AndIOp::create(b, visible, cond) : cond;
        };
        if (kpm) {
          Value m = memref::LoadOp::create(b, kpm, ValueRange{batch, add(kb, j)});
          Value on = arith::CmpIOp::create(
              b, arith::CmpIPredicate::ne, m,
              arith::ConstantOp::create(b, b.getI8IntegerAttr(0)));
          both(vector::BroadcastOp::create(
              b, VectorType::get({vl}, b.getI1Type()), on));
        }
        if (visible)
          s = arith::SelectOp::create(b, visible, s, negInf);
        vector::StoreOp::create(b, s, st, ValueRange{j, i0});
        scf::YieldOp::create(b, ValueRange{maxF(args[0], s)});
      });

  Value mOld = vector::LoadOp::create(b, vecF32, mRow, ValueRange{i0});
  Value mNew = maxF(mOld, pass1.getResult(0));
  // A row with nothing visible so far keeps m = -inf; subtract 0 instead so
  // -inf - -inf never makes a NaN.
  Value isEmpty =
      arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, mNew, negInf);
  Value mSafe = arith::SelectOp::create(b, isEmpty, splat(0.0), mNew);

  auto pass2 = scf::ForOp::create(
      b, idx(0), nk, idx(1), ValueRange{splat(0.0)},
      [&](OpBuilder &, Location, Value j, ValueRange args) {
        Value s = vector::LoadOp::create(b, vecF32, st, ValueRange{j, i0});
        Value p = exp2(arith::SubFOp::create(b, s, mSafe));
        vector::StoreOp::create(b, p, st, ValueRange{j, i0});
        scf::YieldOp::create(b, ValueRange{arith::AddFOp::create(b, args[0], p)});
      });
  Value alpha = exp2(arith::SubFOp::create(b, mOld, mSafe));
  Value lOld = vector::LoadOp::create(b, vecF32, lRow, ValueRange{i0});
  Value lNew = math::FmaOp::create(b, lOld, alpha, pass2.getResult(0));
  vector::StoreOp::create(b, lNew, lRow, ValueRange{i0});
  vector::StoreOp::create(b, mNew, mRow, ValueRange{i0});
  vector::StoreOp::create(b, alpha, alphaRow, ValueRange{i0});
}

void KernelEmitter::pvTile(Value r0, int64_t rows, int64_t c0, int64_t cols,
                           Value kb, Value nk) {
  // Acc[r, c] = Acc[r, c] * alpha[r] + sum_j Pt[j, r] * V[j, c]. The P
  // broadcasts come first, then each V vector is loaded once and used by
  // every row: rows * cols + rows + 1 registers.
  SmallVector<Value> init;
  for (int64_t r = 0; r < rows; ++r) {
    Value row = add(r0, idx(r));
    Value alpha = bcast(memref::LoadOp::create(b, alphaRow, ValueRange{row}));
    for (int64_t c = 0; c < cols; ++c) {
      Value a = vector::LoadOp::create(b, vecF32, acc,
                                       ValueRange{row, idx((c0 + c) * vl)});
      init.push_back(arith::MulFOp::create(b, a, alpha));
    }
  }
  auto loop = scf::ForOp::create(
      b, idx(0), nk, idx(1), init,
      [&](OpBuilder &, Location, Value j, ValueRange accs) {
        SmallVector<Value> p;
        for (int64_t r = 0; r < rows; ++r)
          p.push_back(bcast(
              memref::LoadOp::create(b, st, ValueRange{j, add(r0, idx(r))})));
        SmallVector<Value> next(accs.begin(), accs.end());
        for (int64_t c = 0; c < cols; ++c) {
          Value col = idx((c0 + c) * vl);
          Value v = vs ? vector::LoadOp::create(b, vecF32, vs, ValueRange{j, col})
                       : vector::LoadOp::create(b, vecF32, op.getV(),
                                                kvIndex(add(kb, j), col));
          for (int64_t r = 0; r < rows; ++r)
            next[r * cols + c] =
                vector::FMAOp::create(b, p[r], v, accs[r * cols + c]);
        }
        scf::YieldOp::create(b, next);
      });
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      vector::StoreOp::create(b, loop.getResult(r * cols + c), acc,
                              ValueRange{add(r0, idx(r)), idx((c0 + c) * vl)});
}

void KernelEmitter::finalize() {
  // o = Acc / l; lse = (m + log2 l) * ln 2 (+ the positions' row constant).
  // A row that saw no key has l = 0: o = 0, lse = -inf.
  Value lse = op.getLseOut();
  forLoop(idx(0), rows, idx(1), [&](Value i) {
    Value l = memref::LoadOp::create(b, lRow, ValueRange{i});
    Value m = memref::LoadOp::create(b, mRow, ValueRange{i});
    Value any = arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, l,
                                      f32c(0.0));
    Value inv = arith::SelectOp::create(
        b, any, arith::DivFOp::create(b, f32c(1.0), l), f32c(0.0));
    Value invV = bcast(inv);
    Value row = add(rowStart, i);
    for (int64_t c = 0; c < d; c += vl) {
      Value a = vector::LoadOp::create(b, vecF32, acc, ValueRange{i, idx(c)});
      vector::StoreOp::create(b, fromF32(arith::MulFOp::create(b, a, invV)),
                              op.getOut(), qIndex(row, idx(c)));
    }
    if (!lse)
      return;
    Value logL = math::Log2Op::create(b, arith::SelectOp::create(
                                             b, any, l, f32c(1.0)));
    Value value = arith::MulFOp::create(b, arith::AddFOp::create(b, m, logL),
                                        f32c(kLn2));
    if (posRef) {
      Value ref = memref::LoadOp::create(b, posRef, ValueRange{i});
      // Scores were shifted by -m * pos[i'] (natural units); undo it.
      Value slope = arith::MulFOp::create(b, slope2, f32c(1.0 / kLog2E));
      value = math::FmaOp::create(b, slope, ref, value);
    }
    value = arith::SelectOp::create(b, any, value, f32c(-INFINITY));
    SmallVector<Value> index =
        spec.varlen ? SmallVector<Value>{head, add(seqQ0, row)}
                    : SmallVector<Value>{batch, head, row};
    memref::StoreOp::create(b, value, lse, index);
  });
}


//===----------------------------------------------------------------------===//
// AMX (bf16)
//===----------------------------------------------------------------------===//

void KernelEmitter::stageQueryAmx() {
  // Qs = the block's q rows as they are (bf16), zero past the sequence; the
  // scale is applied to the f32 scores instead, so Q is never re-rounded.
  VectorType v32 = VectorType::get({32}, elt);
  Value zeros = arith::ConstantOp::create(
      b, DenseElementsAttr::get(v32, b.getFloatAttr(elt, 0.0)));
  forLoop(idx(0), idx(bm), idx(1), [&](Value i) {
    Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, i, rows);
    Value row = minI(add(rowStart, i), sub(sq, idx(1)));
    for (int64_t c = 0; c < d; c += 32) {
      Value v = vector::LoadOp::create(b, v32, op.getQ(), qIndex(row, idx(c)));
      v = arith::SelectOp::create(b, inside, v, zeros);
      vector::StoreOp::create(b, v, qs16, ValueRange{i, idx(c)});
    }
  });
}

Value KernelEmitter::allReduce(Value v,
                               function_ref<Value(Value, Value)> combine) {
  for (int64_t w = vl / 2; w >= 1; w /= 2) {
    SmallVector<int64_t> mask;
    for (int64_t l = 0; l < vl; ++l)
      mask.push_back(l ^ w);
    v = combine(v, vector::ShuffleOp::create(b, v, v, mask));
  }
  return v;
}

SmallVector<Value> KernelEmitter::transpose16(SmallVector<Value> a) {
  // 16x16 transpose of 32-bit lanes in four butterfly stages: the stage for
  // bit k swaps the (row bit k = 0, column bit k = 1) elements with the
  // (1, 0) ones; after all four every element (i, p) sits at (p, i).
  for (int64_t k = 8; k >= 1; k /= 2) {
    SmallVector<Value> out(16);
    SmallVector<int64_t> lo, hi;
    for (int64_t p = 0; p < 16; ++p) {
      lo.push_back((p & k) == 0 ? p : 16 + p - k);
      hi.push_back((p & k) == 0 ? p + k : 16 + p);
    }
    for (int64_t i = 0; i < 16; ++i) {
      if (i & k)
        continue;
      out[i] = vector::ShuffleOp::create(b, a[i], a[i + k], lo);
      out[i + k] = vector::ShuffleOp::create(b, a[i], a[i + k], hi);
    }
    a = out;
  }
  return a;
}

void KernelEmitter::stageKeysAmx(Value kb, Value nk, Value buf) {
  // Tile B operands hold pairs of bf16 along the reduction (VNNI):
  //   Kv[p][2n + t] = K[kb + n][2p + t]   (K^T for S = Q K^T)
  //   Vv[p][2c + t] = V[kb + 2p + t][c]   (V for P V)
  // K needs a transpose of 32-bit pairs; V only interleaves row pairs. Keys
  // past the block's end are zeros, so no NaN can reach a tile product.
  Type i32 = b.getI32Type();
  VectorType v32 = VectorType::get({32}, elt), v16 = VectorType::get({16}, elt);
  VectorType v16i = VectorType::get({16}, i32);
  Value zeros32 = arith::ConstantOp::create(
      b, DenseElementsAttr::get(v32, b.getFloatAttr(elt, 0.0)));
  Value zeros16 = arith::ConstantOp::create(
      b, DenseElementsAttr::get(v16, b.getFloatAttr(elt, 0.0)));
  Value lastKey = sub(sk, idx(1));
  auto keyRow = [&](Value j, Value &valid) {
    valid = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, j, nk);
    return minI(add(kb, j), lastKey);
  };
  forLoop(idx(0), idx(bn), idx(16), [&](Value n0) {
    SmallVector<Value> rowsIdx, valid(16);
    for (int64_t r = 0; r < 16; ++r)
      rowsIdx.push_back(keyRow(add(n0, idx(r)), valid[r]));
    forLoop(idx(0), idx(d / 2), idx(16), [&](Value p0) {
      Value col = mul(p0, idx(2));
      SmallVector<Value> lanes;
      for (int64_t r = 0; r < 16; ++r) {
        Value v = vector::LoadOp::create(b, v32, op.getK(),
                                         kvIndex(rowsIdx[r], col));
        v = arith::SelectOp::create(b, valid[r], v, zeros32);
        lanes.push_back(vector::BitCastOp::create(b, v16i, v));
      }
      SmallVector<Value> t = transpose16(lanes);
      for (int64_t p = 0; p < 16; ++p)
        vector::StoreOp::create(
            b, vector::BitCastOp::create(b, v32, t[p]), kvnni,
            ValueRange{buf, add(p0, idx(p)), mul(n0, idx(2))});
    });
  });
  SmallVector<int64_t> interleave;
  for (int64_t l = 0; l < 16; ++l)
    interleave.append({l, 16 + l});
  forLoop(idx(0), idx(bn / 2), idx(1), [&](Value p) {
    Value valid0, valid1;
    Value row0 = keyRow(mul(p, idx(2)), valid0);
    Value row1 = keyRow(add(mul(p, idx(2)), idx(1)), valid1);
    for (int64_t c = 0; c < d; c += 16) {
      Value a = vector::LoadOp::create(b, v16, op.getV(), kvIndex(row0, idx(c)));
      Value bb = vector::LoadOp::create(b, v16, op.getV(), kvIndex(row1, idx(c)));
      a = arith::SelectOp::create(b, valid0, a, zeros16);
      bb = arith::SelectOp::create(b, valid1, bb, zeros16);
      Value pair = vector::ShuffleOp::create(b, a, bb, interleave);
      vector::StoreOp::create(b, pair, vvnni, ValueRange{buf, p, idx(2 * c)});
    }
  });
}

void KernelEmitter::tileMatmul(Value rowsM, int64_t colsN, int64_t depth,
                               Value aMem, Value aBuf, Value bMem, Value bBuf,
                               Value cMem, Value cBuf) {
  // C[M][N] = A[M][K] B[K][N] in 2x2 blocks of 16x16 f32 tiles: four
  // accumulators, two A and two B tiles, so each loaded tile feeds two
  // products (all eight tile registers in use). A null buffer index means
  // the memref has no leading buffer dimension.
  auto aType = amx::TileType::get({16, 32}, elt);
  auto cType = amx::TileType::get({16, 16}, f32);
  auto at = [](Value buf, Value r, Value c) {
    return buf ? SmallVector<Value>{buf, r, c} : SmallVector<Value>{r, c};
  };
  forLoop(idx(0), rowsM, idx(32), [&](Value m0) {
    forLoop(idx(0), idx(colsN), idx(32), [&](Value n0) {
      Value m1 = add(m0, idx(16)), n1 = add(n0, idx(16));
      Value c00 = amx::TileZeroOp::create(b, cType);
      Value c01 = amx::TileZeroOp::create(b, cType);
      Value c10 = amx::TileZeroOp::create(b, cType);
      Value c11 = amx::TileZeroOp::create(b, cType);
      for (int64_t k0 = 0; k0 < depth; k0 += 32) {
        Value a0 = amx::TileLoadOp::create(b, aType, aMem, at(aBuf, m0, idx(k0)));
        Value a1 = amx::TileLoadOp::create(b, aType, aMem, at(aBuf, m1, idx(k0)));
        Value b0 = amx::TileLoadOp::create(
            b, aType, bMem, at(bBuf, idx(k0 / 2), mul(n0, idx(2))));
        Value b1 = amx::TileLoadOp::create(
            b, aType, bMem, at(bBuf, idx(k0 / 2), mul(n1, idx(2))));
        c00 = amx::TileMulFOp::create(b, cType, a0, b0, c00);
        c01 = amx::TileMulFOp::create(b, cType, a0, b1, c01);
        c10 = amx::TileMulFOp::create(b, cType, a1, b0, c10);
        c11 = amx::TileMulFOp::create(b, cType, a1, b1, c11);
      }
      amx::TileStoreOp::create(b, cMem, at(cBuf, m0, n0), c00);
      amx::TileStoreOp::create(b, cMem, at(cBuf, m0, n1), c01);
      amx::TileStoreOp::create(b, cMem, at(cBuf, m1, n0), c10);
      amx::TileStoreOp::create(b, cMem, at(cBuf, m1, n1), c11);
    });
  });
}

void KernelEmitter::emitKeyLoopAmx(Value kBegin, Value kEnd) {
  // Data moves between the tile unit and the vector unit through memory, and
  // a load of lines that the other unit has just stored waits for those
  // stores to drain. So the blocks are software-pipelined, every buffer
  // doubled, and each hand-over is separated by independent work:
  //   prologue: pack(0), pack(1), S(0)
  //   block c:  softmax(c) | S(c+1) | P.V(c), Acc update | pack(c+2)
  // softmax(c) reads scores stored before P.V(c-1) and pack(c+1) ran; S(c+1)
  // reads K packed an iteration earlier; P.V(c) reads V packed two
  // iterations earlier. Each stage appears once or twice in the IR, which
  // keeps the JIT compile short.
  Value n = arith::CeilDivSIOp::create(b, maxI(sub(kEnd, kBegin), idx(0)),
                                       idx(bn));
  auto start = [&](Value c) { return add(kBegin, mul(c, idx(bn))); };
  auto keys = [&](Value c) { return minI(idx(bn), sub(kEnd, start(c))); };
  auto parity = [&](Value c) { return arith::RemUIOp::create(b, c, idx(2)); };
  auto ifBlock = [&](Value c, function_ref<void()> body) {
    ifThen(arith::CmpIOp::create(b, arith::CmpIPredicate::slt, c, n), body);
  };
  auto pack = [&](Value c) { stageKeysAmx(start(c), keys(c), parity(c)); };
  auto scores = [&](Value c) {
    tileMatmul(liveRows, bn, d, qs16, Value(), kvnni, parity(c), sMat,
               parity(c));
  };

  forLoop(idx(0), minI(n, idx(2)), idx(1), [&](Value c) { pack(c); });
  ifBlock(idx(0), [&] { scores(idx(0)); });
  forLoop(idx(0), n, idx(1), [&](Value c) {
    Value next = add(c, idx(1)), after = add(c, idx(2));
    softmaxBlockAmx(start(c), keys(c), parity(c));
    ifBlock(next, [&] { scores(next); });
    accumulateAmx(parity(c));
    ifBlock(after, [&] { pack(after); });
  });
}

void KernelEmitter::accumulateAmx(Value buf) {
  // Acc = Acc * alpha + P V for the block in buffer `buf`.
  tileMatmul(liveRows, d, bn, pMat, buf, vvnni, buf, oBlock, Value());
  forLoop(idx(0), liveRows, idx(1), [&](Value i) {
    Value alpha =
        bcast(memref::LoadOp::create(b, alphas, ValueRange{buf, i}));
    for (int64_t c = 0; c < d; c += vl) {
      Value a = vector::LoadOp::create(b, vecF32, acc, ValueRange{i, idx(c)});
      Value o = vector::LoadOp::create(b, vecF32, oBlock, ValueRange{i, idx(c)});
      vector::StoreOp::create(b, math::FmaOp::create(b, a, alpha, o), acc,
                              ValueRange{i, idx(c)});
    }
  });
}

void KernelEmitter::softmaxBlockAmx(Value kb, Value nk, Value buf) {
  // Most blocks are fully visible; they skip every mask.
  Value needsMask = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, nk,
                                          idx(bn));
  auto either = [&](Value cond) {
    needsMask = arith::OrIOp::create(b, needsMask, cond);
  };
  if (spec.causal) // some key of the block lies after the first row's i'
    either(arith::CmpIOp::create(b, arith::CmpIPredicate::sgt,
                                 add(kb, sub(nk, idx(1))), firstPos));
  if (spec.window) // some key lies w or more before the last row's i'
    either(arith::CmpIOp::create(b, arith::CmpIPredicate::sle, kb,
                                 sub(lastPos, idx(*spec.window))));
  if (op.getKeyPaddingMask())
    needsMask = arith::ConstantOp::create(b, b.getBoolAttr(true));
  scf::IfOp::create(
      b, needsMask,
      [&](OpBuilder &, Location) {
        forLoop(idx(0), liveRows, idx(1), [&](Value i) {
          softmaxRowAmx(i, kb, nk, /*masked=*/true, buf);
        });
        scf::YieldOp::create(b);
      },
      [&](OpBuilder &, Location) {
        forLoop(idx(0), liveRows, idx(1), [&](Value i) {
          softmaxRowAmx(i, kb, nk, /*masked=*/false, buf);
        });
        scf::YieldOp::create(b);
      });
}

void KernelEmitter::softmaxRowAmx(Value i, Value kb, Value nk, bool masked,
                                  Value buf) {
  // One query row across the block's keys: scores scaled here (Q stayed
  // bf16), bias, masks, then the online softmax with horizontal reductions.
  Value ip = add(add(rowStart, i), shift);
  Value base = indexToF32(sub(kb, ip));
  Value nkF = indexToF32(nk);
  SmallVector<float> lanes;
  for (int64_t l = 0; l < vl; ++l)
    lanes.push_back(static_cast<float>(l));
  Value iota = arith::ConstantOp::create(
      b, DenseElementsAttr::get(vecF32, ArrayRef<float>(lanes)));
  Value scale = splat(spec.effectiveScale() * kLog2E);
  Value negInf = splat(-INFINITY);
  Value ref = posRef ? bcast(memref::LoadOp::create(b, posRef, ValueRange{i}))
                     : Value();
  Value kpm = op.getKeyPaddingMask();
  SmallVector<Value> s;
  Value rowMax = negInf;
  for (int64_t c = 0; c < bn / vl; ++c) {
    Value lane = arith::AddFOp::create(b, iota, splat(double(c * vl)));
    Value jrel = arith::AddFOp::create(b, lane, bcast(base));
    Value v = vector::LoadOp::create(b, vecF32, sMat,
                                     ValueRange{buf, i, idx(c * vl)});
    v = arith::MulFOp::create(b, v, scale);
    v = addBias(v, jrel, [&] {
      Value p = vector::LoadOp::create(b, vecF32, pos,
                                       ValueRange{add(kb, idx(c * vl))});
      return arith::SubFOp::create(b, p, ref).getResult();
    });
    if (!masked) {
      s.push_back(v);
      rowMax = maxF(rowMax, v);
      continue;
    }
    Value visible = positionMask(
        arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, lane, bcast(nkF)),
        jrel);
    auto both = [&](Value cond) {
      visible = arith::AndIOp::create(b, visible, cond);
    };
    if (kpm) {
      VectorType vecI8 = VectorType::get({vl}, b.getI8Type());
      Value inRange = vector::CreateMaskOp::create(
          b, VectorType::get({vl}, b.getI1Type()),
          ValueRange{maxI(idx(0), sub(nk, idx(c * vl)))});
      Value zeros = arith::ConstantOp::create(
          b, DenseElementsAttr::get(vecI8, b.getI8IntegerAttr(0)));
      Value m = vector::MaskedLoadOp::create(
          b, vecI8, kpm, ValueRange{batch, add(kb, idx(c * vl))}, inRange,
          zeros);
      both(arith::CmpIOp::create(b, arith::CmpIPredicate::ne, m, zeros));
    }
    v = arith::SelectOp::create(b, visible, v, negInf);
    s.push_back(v);
    rowMax = maxF(rowMax, v);
  }
  Value mx = allReduce(rowMax, [&](Value x, Value y) { return maxF(x, y); });
  Value mOld = bcast(memref::LoadOp::create(b, mRow, ValueRange{i}));
  Value mNew = maxF(mOld, mx);
  Value isEmpty =
      arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, mNew, negInf);
  Value mSafe = arith::SelectOp::create(b, isEmpty, splat(0.0), mNew);
  Value sum = splat(0.0);
  VectorType vecElt = VectorType::get({vl}, elt);
  for (int64_t c = 0; c < bn / vl; ++c) {
    Value p = exp2(arith::SubFOp::create(b, s[c], mSafe));
    vector::StoreOp::create(b, arith::TruncFOp::create(b, vecElt, p), pMat,
                            ValueRange{buf, i, idx(c * vl)});
    sum = arith::AddFOp::create(b, sum, p);
  }
  Value rowSum = allReduce(
      sum, [&](Value x, Value y) { return arith::AddFOp::create(b, x, y); });
  Value alphaV = exp2(arith::SubFOp::create(b, mOld, mSafe));
  Value lOld = bcast(memref::LoadOp::create(b, lRow, ValueRange{i}));
  Value lNew = math::FmaOp::create(b, lOld, alphaV, rowSum);
  auto lane0 = [&](Value v) {
    return vector::ExtractOp::create(b, v, ArrayRef<int64_t>{0});
  };
  memref::StoreOp::create(b, lane0(lNew), lRow, ValueRange{i});
  memref::StoreOp::create(b, lane0(mNew), mRow, ValueRange{i});
  memref::StoreOp::create(b, lane0(alphaV), alphas, ValueRange{buf, i});
}

struct ConvertTiltToCPU
    : mlir::tilt::impl::ConvertTiltToCPUBase<ConvertTiltToCPU> {
  void runOnOperation() override {
    SmallVector<AttentionOp> ops;
    getOperation().walk([&](AttentionOp op) { ops.push_back(op); });
    for (AttentionOp op : ops) {
      if (!op.hasBufferSemantics() || !op.getItemBegin()) {
        op.emitOpError("convert-tilt-to-cpu needs the kernel form (memrefs "
                       "with items); run tilt-cpu-entry first");
        return signalPassFailure();
      }
      TileConfigAttr config = op.getConfigAttr();
      if (config.isGpu()) {
        op.emitOpError("convert-tilt-to-cpu needs a CPU tile_config, got ")
            << stringifyKernelVariant(config.getVariant());
        return signalPassFailure();
      }
      ImplicitLocOpBuilder b(op.getLoc(), op);
      KernelEmitter emitter(op, b);
      if (failed(emitter.emit()))
        return signalPassFailure();
      op.erase();
    }
  }
};

} // namespace
