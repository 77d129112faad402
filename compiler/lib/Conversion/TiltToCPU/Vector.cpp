//===- Vector.cpp - The vector path of cpu_avx2 and cpu_avx512 ------------===//
//
// Qt staged once per item; per key block K (widened to f32 when 16-bit),
// register-tiled St = K . Qt, the column-wise online softmax and
// Acc += Pt^T . V with every V vector loaded once for all rows of a tile.
//
//===----------------------------------------------------------------------===//

#include "CpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"
#include "tilt/Slopes.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::tilt;

namespace {

/// Number of vector registers the accumulator tiles of one micro-kernel may
/// take; the rest hold operands. 32 zmm on AVX-512, 16 ymm on AVX2.
int64_t accumulatorBudget(KernelVariant v) {
  return v == KernelVariant::cpu_avx2 ? 12 : 24;
}

/// cpu_avx2 (8 lanes) and cpu_avx512 (16 lanes): Qt staged once per item,
/// St = K . Qt register-tiled, a column-wise softmax, Acc += Pt^T . V.
class VectorEmitter final : public CpuEmitter {
public:
  VectorEmitter(AttentionOp op, ImplicitLocOpBuilder &b)
      : CpuEmitter(op, b,
                   op.getConfigAttr().getVariant() == KernelVariant::cpu_avx2
                       ? 8
                       : 16) {}

private:
  LogicalResult allocateScratch() override;
  void stageQuery() override;
  void keyLoop(Value kBegin, Value kEnd) override;

  void emitKeyBlock(Value kb, Value nk);
  void stageKeys(Value kb, Value nk);
  void scoreTile(Value kb, Value j0, int64_t keys, int64_t c0, int64_t cols);
  void softmaxColumn(Value c, Value kb, Value nk);
  void pvTile(Value r0, int64_t rows, int64_t c0, int64_t cols, Value kb,
              Value nk);

  // Qt [D][BM], staged K/V [BN][D] (16-bit inputs only), St/Pt [BN][BM].
  Value qt, ks, vs, st;
};

} // namespace

std::unique_ptr<CpuEmitter> mlir::tilt::makeVectorEmitter(
    AttentionOp op, ImplicitLocOpBuilder &b) {
  return std::make_unique<VectorEmitter>(op, b);
}

LogicalResult VectorEmitter::allocateScratch() {
  qt = scratch({d, bm}, f32);
  if (!elt.isF32()) {
    ks = scratch({bn, d}, f32);
    vs = scratch({bn, d}, f32);
  }
  st = scratch({bn, bm}, f32);
  return success();
}

void VectorEmitter::keyLoop(Value kBegin, Value kEnd) {
  forLoop(kBegin, kEnd, idx(bn), [&](Value kb) {
    emitKeyBlock(kb, minI(idx(bn), sub(kEnd, kb)));
  });
}

void VectorEmitter::stageQuery() {
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

void VectorEmitter::emitKeyBlock(Value kb, Value nk) {
  // nk: keys of this block inside the visible range (the last may be short).
  if (ks)
    stageKeys(kb, nk);
  int64_t budget = accumulatorBudget(config.getVariant());
  int64_t qv = bm / vl;
  int64_t qChunk = std::min<int64_t>(qv, 4);
  for (int64_t c0 = 0; c0 < qv; c0 += qChunk) {
    int64_t n = std::min(qChunk, qv - c0);
    groups(bn, std::max<int64_t>(1, budget / n),
           [&](Value j0, int64_t keys) { scoreTile(kb, j0, keys, c0, n); });
  }
  forLoop(idx(0), idx(qv), idx(1), [&](Value c) { softmaxColumn(c, kb, nk); });
  int64_t dv = d / vl;
  int64_t dChunk = std::min<int64_t>(dv, 8);
  for (int64_t c0 = 0; c0 < dv; c0 += dChunk) {
    int64_t n = std::min(dChunk, dv - c0);
    groups(bm, std::max<int64_t>(1, budget / n),
           [&](Value r0, int64_t rows) { pvTile(r0, rows, c0, n, kb, nk); });
  }
}

void VectorEmitter::stageKeys(Value kb, Value nk) {
  // 16-bit inputs: widen the block's K and V rows to f32 once, so the
  // micro-kernels broadcast and load plain f32.
  VectorType vecElt = VectorType::get({vl}, elt);
  forLoop(idx(0), nk, idx(1), [&](Value j) {
    Value row = add(kb, j);
    for (int64_t c = 0; c < d; c += vl) {
      Value k =
          vector::LoadOp::create(b, vecElt, op.getK(), kvIndex(row, idx(c)));
      vector::StoreOp::create(b, toF32(k), ks, ValueRange{j, idx(c)});
      Value v =
          vector::LoadOp::create(b, vecElt, op.getV(), kvIndex(row, idx(c)));
      vector::StoreOp::create(b, toF32(v), vs, ValueRange{j, idx(c)});
    }
  });
}

void VectorEmitter::scoreTile(Value kb, Value j0, int64_t keys, int64_t c0,
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
          Value kv =
              ks ? memref::LoadOp::create(b, ks, ValueRange{rowsIdx[r], k})
                 : memref::LoadOp::create(b, op.getK(), kvIndex(rowsIdx[r], k));
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

void VectorEmitter::softmaxColumn(Value c, Value kb, Value nk) {
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
  Value anchor =
      anchorRow ? vector::LoadOp::create(b, vecF32, anchorRow, ValueRange{i0})
                : Value();
  Value kpm = op.getKeyPaddingMask();

  auto pass1 = scf::ForOp::create(
      b, idx(0), nk, idx(1), ValueRange{negInf},
      [&](OpBuilder &, Location, Value j, ValueRange args) {
        Value s = vector::LoadOp::create(b, vecF32, st, ValueRange{j, i0});
        Value jrel = arith::AddFOp::create(b, base, bcast(indexToF32(j)));
        s = addBias(s, jrel, anchor, [&] {
          Value p = memref::LoadOp::create(b, pos, ValueRange{add(kb, j)});
          return arith::SubFOp::create(b, bcast(p), ref).getResult();
        });
        // Visible: j <= i' (causal), i' - j < w (window), kpm[j] != 0.
        Value visible = positionMask(Value(), jrel);
        auto both = [&](Value cond) {
          visible = visible ? arith::AndIOp::create(b, visible, cond) : cond;
        };
        if (kpm) {
          Value m =
              memref::LoadOp::create(b, kpm, ValueRange{batch, add(kb, j)});
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
        scf::YieldOp::create(b,
                             ValueRange{arith::AddFOp::create(b, args[0], p)});
      });
  Value alpha = exp2(arith::SubFOp::create(b, mOld, mSafe));
  Value lOld = vector::LoadOp::create(b, vecF32, lRow, ValueRange{i0});
  Value lNew = math::FmaOp::create(b, lOld, alpha, pass2.getResult(0));
  vector::StoreOp::create(b, lNew, lRow, ValueRange{i0});
  vector::StoreOp::create(b, mNew, mRow, ValueRange{i0});
  vector::StoreOp::create(b, alpha, alphaRow, ValueRange{i0});
}

void VectorEmitter::pvTile(Value r0, int64_t rows, int64_t c0, int64_t cols,
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
          Value v =
              vs ? vector::LoadOp::create(b, vecF32, vs, ValueRange{j, col})
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
