//===- Vector.cpp - The vector path: cpu_avx2, cpu_avx512, cpu_avx512bf16 -===//
//
// Qt staged once per item; per key block K (widened to f32 when 16-bit),
// register-tiled St = K . Qt, the column-wise online softmax and
// Acc += Pt^T . V with every V vector loaded once for all rows of a tile.
//
// cpu_avx512bf16 keeps that loop nest and its register tiles but multiplies
// bf16 pairs (vdpbf16ps: lane i += a[2i] b[2i] + a[2i+1] b[2i+1] in f32),
// so each product takes half the instructions and no input is widened:
//
//   Qt2[k/2][2r + k%2] = q[r][k]          bf16, unscaled, once per item
//   St[j][r] = dot(K pair (k, k+1) of key j broadcast, Qt2[k/2][rows])
//              * scale * log2 e           K read in place, no staging
//   the softmax on f32 St as above
//   Pt2[j/2][2r + j%2] = bf16(P[j][r]),  Vp[j/2][2c + j%2] = V[j][c]
//   Acc[r][cols] += dot(P pair (j, j+1) of row r broadcast, Vp[j/2][cols])
//
// Keys past the block's end pair with zeros (P and V). P is rounded to
// bf16 for P.V (as the GPU kernels do), l sums the f32 P. Without
// AVX512_BF16 on the target a dot product is two f32 FMAs of the widened
// pairs, odd elements first as the SDM describes the instruction: the
// products of bf16 numbers are exact in f32, so this is its arithmetic
// (less its flushing of denormals), and the variant runs on any AVX-512
// CPU for tests and comparisons; the runtime picks it only where the CPU
// has AVX512_BF16.
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

/// The register tile of a micro-kernel: `rows` broadcast scalars times
/// `cols` loaded vectors, rows * cols accumulators.
struct MicroTile {
  int64_t rows, cols;
};

/// The micro-kernel shape that needs the fewest loads per FMA,
/// (rows + cols) / (rows * cols), while its accumulators, its loaded
/// vectors and two broadcasts fit the register file (16 ymm on AVX2, 32 zmm
/// on AVX-512): a tile that does not fit spills an accumulator to the stack
/// on every step. `cols` divides maxCols; rows <= maxRows.
MicroTile microTile(KernelVariant v, int64_t maxRows, int64_t maxCols) {
  const int64_t regs = v == KernelVariant::cpu_avx2 ? 16 : 32;
  MicroTile best{1, 1};
  double bestCost = 2.0;
  for (int64_t cols = 1; cols <= maxCols; ++cols) {
    if (maxCols % cols != 0 || cols + 3 > regs)
      continue;
    int64_t rows = std::min(maxRows, (regs - 2 - cols) / cols);
    if (rows < 1)
      continue;
    double cost = double(rows + cols) / double(rows * cols);
    if (cost < bestCost) {
      best = {rows, cols};
      bestCost = cost;
    }
  }
  return best;
}

/// cpu_avx2 (8 lanes), cpu_avx512 and cpu_avx512bf16 (16 lanes): Qt
/// staged once per item, St = K . Qt register-tiled, a column-wise softmax,
/// Acc += Pt^T . V.
class VectorEmitter final : public CpuEmitter {
public:
  VectorEmitter(AttentionOp op, ImplicitLocOpBuilder &b, bool nativeBf16Dot)
      : CpuEmitter(op, b,
                   op.getConfigAttr().getVariant() == KernelVariant::cpu_avx2
                       ? 8
                       : 16),
        pairs(op.getConfigAttr().getVariant() == KernelVariant::cpu_avx512bf16),
        nativeDot(nativeBf16Dot) {}

private:
  LogicalResult allocateScratch() override;
  void stageQuery() override;
  void keyLoop(Value kBegin, Value kEnd) override;

  void emitKeyBlock(Value kb, Value nk);
  void stageKeys(Value kb, Value nk);
  void scoreTile(Value kb, Value j0, int64_t keys, Value col0, int64_t cols);
  void softmaxColumn(Value c, Value kb, Value nk);
  void pvTile(Value r0, int64_t rows, Value col0, int64_t cols, Value kb,
              Value nk);

  // --- cpu_avx512bf16 (pairs) ---
  /// The pair micro-kernel: over `count` pairs p, `cols` vectors of 2 vl
  /// bf16 loaded from `pairsOf`[p][2 (col0 + c vl)] and per tile row r the
  /// pair `broadcast(p, r)`; returns init[r * cols + c] + their dot
  /// products.
  ValueRange pairTile(Value count, Value pairsOf, Value col0, int64_t rows,
                      int64_t cols, ArrayRef<Value> init,
                      function_ref<Value(Value, int64_t)> broadcast);
  /// cpu_avx512bf16; its dot products are vdpbf16ps (else two FMAs).
  bool pairs, nativeDot;
  // Qt [D][BM], staged K/V [BN][D] (16-bit inputs only), St/Pt [BN][BM].
  // Pairs: Qt2 [D/2][2 BM] and Vp [BN/2][2 D] bf16 (in qt and vs), Pt2
  // [BN/2][2 BM] bf16.
  Value qt, ks, vs, st, pt2;
};

} // namespace

std::unique_ptr<CpuEmitter>
mlir::tilt::makeVectorEmitter(AttentionOp op, ImplicitLocOpBuilder &b,
                              bool nativeBf16Dot) {
  return std::make_unique<VectorEmitter>(op, b, nativeBf16Dot);
}

LogicalResult VectorEmitter::allocateScratch() {
  if (pairs) { // (bf16 inputs: the op's verifier)
    qt = scratch({d / 2, 2 * bm}, elt);
    vs = scratch({bn / 2, 2 * d}, elt);
    pt2 = scratch({bn / 2, 2 * bm}, elt);
    st = scratch({bn, bm}, f32);
    return success();
  }
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
    // A paged cache's key rows lie a token row (Hkv x D) apart on
    // scattered pages, where the hardware prefetchers do not follow: the
    // next block's K and V rows are asked for (to L2) first (its keys past
    // kEnd clamped to the last).
    if (io.blockTable) {
      Value next = add(kb, idx(bn)), last = sub(kEnd, idx(1));
      forLoop(idx(0), idx(bn), idx(1), [&](Value t) {
        SmallVector<Value> row = kvRowIndex(minI(add(next, t), last));
        prefetchLines(op.getK(), row, idx(0), d, /*locality=*/2);
        prefetchLines(op.getV(), row, idx(0), d, /*locality=*/2);
      });
    }
    emitKeyBlock(kb, minI(idx(bn), sub(kEnd, kb)));
  });
}

void VectorEmitter::stageQuery() {
  // Qt[k][i] = q[i][k] * scale * log2(e); pairs: Qt2[k/2][2i + k%2] =
  // q[i][k] as given (the scale goes on the f32 scores). Rows past the
  // sequence are zero. Once per item, so scalar moves are cheap enough.
  Value scale = f32c(spec.effectiveScale() * kLog2E);
  Value zero =
      pairs ? arith::ConstantOp::create(b, b.getZeroAttr(elt)) : f32c(0.0);
  forLoop(idx(0), idx(bm), idx(1), [&](Value i) {
    Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, i, rows);
    Value row = minI(add(rowStart, i), sub(sq, idx(1)));
    forLoop(idx(0), idx(d), idx(1), [&](Value k) {
      Value v = memref::LoadOp::create(b, op.getQ(), qIndex(row, k));
      if (!pairs)
        v = arith::MulFOp::create(b, toF32(v), scale);
      v = arith::SelectOp::create(b, inside, v, zero);
      if (!pairs) {
        memref::StoreOp::create(b, v, qt, ValueRange{k, i});
        return;
      }
      Value two = idx(2);
      memref::StoreOp::create(
          b, v, qt,
          ValueRange{arith::DivUIOp::create(b, k, two),
                     add(mul(i, two), arith::RemUIOp::create(b, k, two))});
    });
  });
}

void VectorEmitter::emitKeyBlock(Value kb, Value nk) {
  // nk: keys of this block inside the visible range (the last may be short).
  if (ks)
    stageKeys(kb, nk);
  if (pairs) // Vp: the block's V rows in pairs of keys
    stageRowPairs(nk, d, vs, [&](Value r, Value col) {
      return vector::LoadOp::create(b, VectorType::get({vl}, elt), op.getV(),
                                    kvIndex(add(kb, r), col))
          .getResult();
    });
  // St = K . Qt: keys are broadcast, Qt vectors loaded.
  const KernelVariant variant = config.getVariant();
  const int64_t qv = bm / vl;
  const MicroTile score = microTile(variant, bn, qv);
  // The column chunks are a loop, not copies: one micro-kernel per tile
  // size keeps the code (and the JIT's time) small.
  forLoop(idx(0), idx(bm), idx(score.cols * vl), [&](Value col0) {
    groups(bn, score.rows, [&](Value j0, int64_t keys) {
      scoreTile(kb, j0, keys, col0, score.cols);
    });
  });
  forLoop(idx(0), idx(qv), idx(1), [&](Value c) { softmaxColumn(c, kb, nk); });
  if (pairs) // Pt2: P's rows (keys) in pairs, rounded to bf16
    stageRowPairs(nk, bm, pt2, [&](Value j, Value r) {
      return vector::LoadOp::create(b, vecF32, st, ValueRange{j, r})
          .getResult();
    });
  // Acc += Pt^T . V: P is broadcast, V vectors loaded.
  const int64_t dv = d / vl;
  const MicroTile pv = microTile(variant, bm, dv);
  forLoop(idx(0), idx(d), idx(pv.cols * vl), [&](Value col0) {
    groups(bm, pv.rows, [&](Value r0, int64_t rows) {
      pvTile(r0, rows, col0, pv.cols, kb, nk);
    });
  });
}

void VectorEmitter::stageKeys(Value kb, Value nk) {
  // 16-bit inputs: widen the block's K and V rows to f32 once, so the
  // micro-kernels broadcast and load plain f32.
  // Four vectors of K and four of V per step: enough to hide the loop, few
  // enough to keep the kernel (and its compile) small.
  VectorType vecElt = VectorType::get({vl}, elt);
  const int64_t step = vectorsPerStep(4) * vl;
  forLoop(idx(0), nk, idx(1), [&](Value j) {
    Value row = add(kb, j);
    forLoop(idx(0), idx(d), idx(step), [&](Value c0) {
      for (int64_t c = 0; c < step; c += vl) {
        Value col = add(c0, idx(c));
        Value k =
            vector::LoadOp::create(b, vecElt, op.getK(), kvIndex(row, col));
        vector::StoreOp::create(b, toF32(k), ks, ValueRange{j, col});
        Value v =
            vector::LoadOp::create(b, vecElt, op.getV(), kvIndex(row, col));
        vector::StoreOp::create(b, toF32(v), vs, ValueRange{j, col});
      }
    });
  });
}

void VectorEmitter::scoreTile(Value kb, Value j0, int64_t keys, Value col0,
                              int64_t cols) {
  // St[j0 + r, col0 + c * vl ...] = sum_k K[kb + j0 + r, k] * Qt[k, ...].
  // Keys past the sequence read its last row instead (their scores are
  // never used), so no load leaves the tensor.
  SmallVector<Value> rowsIdx;
  for (int64_t r = 0; r < keys; ++r) {
    Value j = add(j0, idx(r));
    rowsIdx.push_back(ks ? j : minI(add(kb, j), sub(sk, idx(1))));
  }
  // K's indices of those rows, before the loops along D (a paged cache's
  // table entries read once a row).
  SmallVector<SmallVector<Value>> keyRows;
  if (!ks)
    for (Value row : rowsIdx)
      keyRows.push_back(kvRowIndex(row));
  auto keyAt = [&](int64_t r, Value col) { return atColumn(keyRows[r], col); };
  SmallVector<Value> init(keys * cols, splat(0.0));
  // St's tile; pairs scale it here (the plain path has the scale in Qt).
  auto store = [&](ValueRange sums, Value scale) {
    for (int64_t r = 0; r < keys; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        Value sum = sums[r * cols + c];
        vector::StoreOp::create(
            b, scale ? arith::MulFOp::create(b, sum, scale) : sum, st,
            ValueRange{add(j0, idx(r)), add(col0, idx(c * vl))});
      }
  };
  if (pairs) {
    // Over pairs of columns: K's pair broadcast, Qt2's pairs of vl rows.
    store(pairTile(idx(d / 2), qt, col0, keys, cols, init,
                   [&](Value kp, int64_t r) {
                     return broadcastBf16Pair(op.getK(),
                                              keyAt(r, mul(kp, idx(2))));
                   }),
          splat(spec.effectiveScale() * kLog2E));
    return;
  }
  auto loop = scf::ForOp::create(
      b, idx(0), idx(d), idx(1), init,
      [&](OpBuilder &, Location, Value k, ValueRange accs) {
        SmallVector<Value> qv;
        for (int64_t c = 0; c < cols; ++c)
          qv.push_back(vector::LoadOp::create(
              b, vecF32, qt, ValueRange{k, add(col0, idx(c * vl))}));
        SmallVector<Value> next;
        for (int64_t r = 0; r < keys; ++r) {
          Value kv =
              ks ? memref::LoadOp::create(b, ks, ValueRange{rowsIdx[r], k})
                 : memref::LoadOp::create(b, op.getK(), keyAt(r, k));
          Value kb = bcast(kv);
          for (int64_t c = 0; c < cols; ++c)
            next.push_back(
                vector::FMAOp::create(b, kb, qv[c], accs[r * cols + c]));
        }
        scf::YieldOp::create(b, next);
      });
  store(loop.getResults(), Value());
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

void VectorEmitter::pvTile(Value r0, int64_t rows, Value col0, int64_t cols,
                           Value kb, Value nk) {
  // Acc[r, c] = Acc[r, c] * alpha[r] + sum_j Pt[j, r] * V[j, c]. The V
  // vectors are loaded first, then each P broadcast feeds every column:
  // rows * cols + cols + 1 registers (microTile).
  SmallVector<Value> init;
  for (int64_t r = 0; r < rows; ++r) {
    Value row = add(r0, idx(r));
    Value alpha = bcast(memref::LoadOp::create(b, alphaRow, ValueRange{row}));
    for (int64_t c = 0; c < cols; ++c) {
      Value a = vector::LoadOp::create(b, vecF32, acc,
                                       ValueRange{row, add(col0, idx(c * vl))});
      init.push_back(arith::MulFOp::create(b, a, alpha));
    }
  }
  auto store = [&](ValueRange sums) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        vector::StoreOp::create(
            b, sums[r * cols + c], acc,
            ValueRange{add(r0, idx(r)), add(col0, idx(c * vl))});
  };
  if (pairs) {
    // Over pairs of keys: Vp's pairs of vl columns, each row's P pair
    // broadcast.
    store(pairTile(pairCount(nk), vs, col0, rows, cols, init,
                   [&](Value jp, int64_t r) {
                     return broadcastBf16Pair(
                         pt2, ValueRange{jp, mul(add(r0, idx(r)), idx(2))});
                   }));
    return;
  }
  auto loop = scf::ForOp::create(
      b, idx(0), nk, idx(1), init,
      [&](OpBuilder &, Location, Value j, ValueRange accs) {
        SmallVector<Value> v;
        for (int64_t c = 0; c < cols; ++c) {
          Value col = add(col0, idx(c * vl));
          v.push_back(
              vs ? vector::LoadOp::create(b, vecF32, vs, ValueRange{j, col})
                 : vector::LoadOp::create(b, vecF32, op.getV(),
                                          kvIndex(add(kb, j), col)));
        }
        SmallVector<Value> next;
        for (int64_t r = 0; r < rows; ++r) {
          Value p = bcast(
              memref::LoadOp::create(b, st, ValueRange{j, add(r0, idx(r))}));
          for (int64_t c = 0; c < cols; ++c)
            next.push_back(
                vector::FMAOp::create(b, p, v[c], accs[r * cols + c]));
        }
        scf::YieldOp::create(b, next);
      });
  store(loop.getResults());
}

//===----------------------------------------------------------------------===//
// cpu_avx512bf16: pairs
//===----------------------------------------------------------------------===//

ValueRange
VectorEmitter::pairTile(Value count, Value pairsOf, Value col0, int64_t rows,
                        int64_t cols, ArrayRef<Value> init,
                        function_ref<Value(Value, int64_t)> broadcast) {
  VectorType pairVec = VectorType::get({2 * vl}, elt);
  auto loop = scf::ForOp::create(
      b, idx(0), count, idx(1), init,
      [&](OpBuilder &, Location, Value p, ValueRange accs) {
        SmallVector<Value> loaded;
        for (int64_t c = 0; c < cols; ++c)
          loaded.push_back(vector::LoadOp::create(
              b, pairVec, pairsOf,
              ValueRange{p, mul(add(col0, idx(c * vl)), idx(2))}));
        SmallVector<Value> next;
        for (int64_t r = 0; r < rows; ++r) {
          Value pair = broadcast(p, r);
          for (int64_t c = 0; c < cols; ++c)
            next.push_back(
                bf16PairDot(accs[r * cols + c], pair, loaded[c], nativeDot));
        }
        scf::YieldOp::create(b, next);
      });
  return loop.getResults();
}
