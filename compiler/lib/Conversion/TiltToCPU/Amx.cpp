//===- Amx.cpp - The AMX path of cpu_amx (bf16) ---------------------------===//
//
// Q K^T and P V on AMX tiles (2x2 blocks of 16x16 f32 accumulators), K^T
// packed in VNNI pairs by 16x16 32-bit transposes, V by row-pair interleave,
// a row-wise softmax with butterfly all-reduces, and a software-pipelined
// key-block loop with double buffers.
//
//===----------------------------------------------------------------------===//

#include "CpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"

#include "mlir/Dialect/AMX/AMXDialect.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::tilt;

namespace {

/// cpu_amx (bf16): S = Q K^T and P V on tiles, the softmax row-wise.
class AmxEmitter final : public CpuEmitter {
public:
  AmxEmitter(AttentionOp op, ImplicitLocOpBuilder &b)
      : CpuEmitter(op, b, /*vl=*/16) {}

private:
  LogicalResult allocateScratch() override;
  void beginItem() override;
  void stageQuery() override;
  void keyLoop(Value kBegin, Value kEnd) override;

  void stageKeys(Value kb, Value nk, Value buf);
  void tileMatmul(Value rowsM, int64_t colsN, int64_t depth, Value aMem,
                  Value aBuf, Value bMem, Value bBuf, Value cMem, Value cBuf);
  void softmaxBlock(Value kb, Value nk, Value buf);
  void softmaxRow(Value i, Value kb, Value nk, bool masked, Value buf);
  void accumulate(Value buf);
  /// Combines all lanes of `v` with butterfly shuffles; every lane of the
  /// result holds the total (no scalar extraction, no ordering rules).
  Value allReduce(Value v, function_ref<Value(Value, Value)> combine);
  SmallVector<Value> transpose16(SmallVector<Value> rows);

  // Q rows [BM][D]; double-buffered ([2][...]) K^T and V in VNNI pairs
  // ([D/2][2BN], [BN/2][2D]), scores [BM][BN] f32, P [BM][BN] bf16 and
  // alpha [BM]; P.V [BM][D] f32.
  Value qs16, kvnni, vvnni, sMat, pMat, oBlock, alphas;
  Value liveRows; // rows rounded up to the 32-row tile pairs
};

} // namespace

std::unique_ptr<CpuEmitter> mlir::tilt::makeAmxEmitter(AttentionOp op,
                                                       ImplicitLocOpBuilder &b) {
  return std::make_unique<AmxEmitter>(op, b);
}

LogicalResult AmxEmitter::allocateScratch() {
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
  return success();
}

void AmxEmitter::beginItem() {
  liveRows = minI(idx(bm),
                  mul(arith::CeilDivSIOp::create(b, rows, idx(32)), idx(32)));
}

void AmxEmitter::stageQuery() {
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

Value AmxEmitter::allReduce(Value v,
                            function_ref<Value(Value, Value)> combine) {
  for (int64_t w = vl / 2; w >= 1; w /= 2) {
    SmallVector<int64_t> mask;
    for (int64_t l = 0; l < vl; ++l)
      mask.push_back(l ^ w);
    v = combine(v, vector::ShuffleOp::create(b, v, v, mask));
  }
  return v;
}

SmallVector<Value> AmxEmitter::transpose16(SmallVector<Value> a) {
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

void AmxEmitter::stageKeys(Value kb, Value nk, Value buf) {
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
    SmallVector<Value> valid(16);
    // K's indices of the 16 keys (those past nk read the last key and are
    // zeroed), before the loop along D: a paged cache's table entries read
    // once a key.
    SmallVector<SmallVector<Value>> keyRows;
    for (int64_t r = 0; r < 16; ++r)
      keyRows.push_back(kvRowIndex(keyRow(add(n0, idx(r)), valid[r])));
    forLoop(idx(0), idx(d / 2), idx(16), [&](Value p0) {
      Value col = mul(p0, idx(2));
      SmallVector<Value> lanes;
      for (int64_t r = 0; r < 16; ++r) {
        Value v = vector::LoadOp::create(b, v32, op.getK(),
                                         atColumn(keyRows[r], col));
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
      Value a =
          vector::LoadOp::create(b, v16, op.getV(), kvIndex(row0, idx(c)));
      Value bb =
          vector::LoadOp::create(b, v16, op.getV(), kvIndex(row1, idx(c)));
      a = arith::SelectOp::create(b, valid0, a, zeros16);
      bb = arith::SelectOp::create(b, valid1, bb, zeros16);
      Value pair = vector::ShuffleOp::create(b, a, bb, interleave);
      vector::StoreOp::create(b, pair, vvnni, ValueRange{buf, p, idx(2 * c)});
    }
  });
}

void AmxEmitter::tileMatmul(Value rowsM, int64_t colsN, int64_t depth,
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
        Value a0 =
            amx::TileLoadOp::create(b, aType, aMem, at(aBuf, m0, idx(k0)));
        Value a1 =
            amx::TileLoadOp::create(b, aType, aMem, at(aBuf, m1, idx(k0)));
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

void AmxEmitter::keyLoop(Value kBegin, Value kEnd) {
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
  Value n =
      arith::CeilDivSIOp::create(b, maxI(sub(kEnd, kBegin), idx(0)), idx(bn));
  auto start = [&](Value c) { return add(kBegin, mul(c, idx(bn))); };
  auto keys = [&](Value c) { return minI(idx(bn), sub(kEnd, start(c))); };
  auto parity = [&](Value c) { return arith::RemUIOp::create(b, c, idx(2)); };
  auto ifBlock = [&](Value c, function_ref<void()> body) {
    ifThen(arith::CmpIOp::create(b, arith::CmpIPredicate::slt, c, n), body);
  };
  auto pack = [&](Value c) { stageKeys(start(c), keys(c), parity(c)); };
  auto scores = [&](Value c) {
    tileMatmul(liveRows, bn, d, qs16, Value(), kvnni, parity(c), sMat,
               parity(c));
  };

  forLoop(idx(0), minI(n, idx(2)), idx(1), [&](Value c) { pack(c); });
  ifBlock(idx(0), [&] { scores(idx(0)); });
  forLoop(idx(0), n, idx(1), [&](Value c) {
    Value next = add(c, idx(1)), after = add(c, idx(2));
    softmaxBlock(start(c), keys(c), parity(c));
    ifBlock(next, [&] { scores(next); });
    accumulate(parity(c));
    ifBlock(after, [&] { pack(after); });
  });
}

void AmxEmitter::accumulate(Value buf) {
  // Acc = Acc * alpha + P V for the block in buffer `buf`.
  tileMatmul(liveRows, d, bn, pMat, buf, vvnni, buf, oBlock, Value());
  forLoop(idx(0), liveRows, idx(1), [&](Value i) {
    Value alpha = bcast(memref::LoadOp::create(b, alphas, ValueRange{buf, i}));
    for (int64_t c = 0; c < d; c += vl) {
      Value a = vector::LoadOp::create(b, vecF32, acc, ValueRange{i, idx(c)});
      Value o =
          vector::LoadOp::create(b, vecF32, oBlock, ValueRange{i, idx(c)});
      vector::StoreOp::create(b, math::FmaOp::create(b, a, alpha, o), acc,
                              ValueRange{i, idx(c)});
    }
  });
}

void AmxEmitter::softmaxBlock(Value kb, Value nk, Value buf) {
  // Most blocks are fully visible; they skip every mask.
  Value needsMask =
      arith::CmpIOp::create(b, arith::CmpIPredicate::slt, nk, idx(bn));
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
          softmaxRow(i, kb, nk, /*masked=*/true, buf);
        });
        scf::YieldOp::create(b);
      },
      [&](OpBuilder &, Location) {
        forLoop(idx(0), liveRows, idx(1), [&](Value i) {
          softmaxRow(i, kb, nk, /*masked=*/false, buf);
        });
        scf::YieldOp::create(b);
      });
}

void AmxEmitter::softmaxRow(Value i, Value kb, Value nk, bool masked,
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
  Value anchor =
      anchorRow ? bcast(memref::LoadOp::create(b, anchorRow, ValueRange{i}))
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
    v = addBias(v, jrel, anchor, [&] {
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
