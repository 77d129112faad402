//===- Backward.cpp - The backward family: cpu_bwd_avx2/avx512/avx512bf16 -===//
//
// tilt.attention_backward's kernel body (ALIBI.md "Backward"). The softmax
// is recomputed from the forward's lse: P = exp(s - lse), so nothing of size
// Sq x Sk is ever stored. Work items come in two parts, each writing its own
// outputs, so no two items touch the same memory and every sum runs in a
// fixed order (deterministic, no atomics):
//
//   dK/dV items, one per key block of a (batch, kv head):
//     K^T, V^T staged once (vectors along the block's keys)
//     for each query head of the group, for each block of its query rows:
//       S  = Q . K^T,  dP = dO . V^T                    (register tiles)
//       P  = exp2(S*scale*log2e + bias - lse),  dS = P * (dP - D_i)
//       dV^T += dO^T . P,  dK^T += Q^T . dS             (register tiles)
//     dk = scale * dK, dv = dV                          (the group summed)
//
//   dQ items, one per (batch, query head):
//     for each block of query rows: Q^T, dO^T staged (vectors along rows)
//       for each visible key block:
//         S^T = K . Q^T,  dP^T = V . dO^T,  P^T, dS^T as above
//         dQ += dS . K;  dm += sum(dS * dist)
//     dq = scale * dQ;  dslopes[b, h] = dm
//
// That schedule computes S and dP twice (seven products). The fused items,
// one per (batch, kv head) after both parts, compute them once (five):
//
//   K^T, V^T (and K's rows for dQ) of every key block staged once
//   for each query head of the group, for each block of its query rows:
//     for each visible key block:   S, dP, P, dS (unscaled) as above;
//                                   P and dS kept; dQ += dS . K; row sums
//     r = 1 / sum(P); dq and the slope gradient as the dQ items
//     for each visible key block:   dV_kb += (r P)^T . dO, dK_kb += (r dS)^T .
//     Q
//   dk = scale * dK, dv = dV of every key block
//
// Keeping a row block's P and dS against every key block (Sk x block_m
// each) until r is known lets dK and dV take the row scale, as the two-pass
// items do (without it, the f32 gradients' error came within 10% of the
// bound). The runtime picks the fused items where there are two per thread
// and their heap is bounded (TilePolicy.h's fusedBackward); both schedules
// are deterministic.
//
// cpu_bwd_avx512bf16 keeps that item space, the f32 P and dS and the slope
// gradient, but multiplies bf16 pairs (vdpbf16ps, as cpu_avx512bf16 does;
// two FMAs of the widened pairs on a target without AVX512_BF16). Every
// product is arranged so that one operand is a pair broadcast and the other
// a vector of pairs, with no element-wise transpose per row block:
//
//   dK/dV items: K^T2, V^T2 [D/2][2 BN] (column pairs of K, V, transposed
//   as 32-bit words) once per item; per row block Qp, dOp [BM/2][2 D] (row
//   pairs, interleaved)
//     S = Q . K^T2,  dP = dO . V^T2          Q, dO pairs from the tensors
//     P2, dS2 [BM/2][2 BN] = bf16 row pairs of P, dS
//     dV += P2^T . dOp,  dK += dS2^T . Qp    [BN][D], P2 / dS2 pairs broadcast
//   dQ items: Q^T2, dO^T2 [D/2][2 BM] per row block; per key block
//   Kp [BN/2][2 D]
//     S^T = K . Q^T2,  dP^T = V . dO^T2      K, V pairs from the tensors
//     dS^T2 [BN/2][2 BM] = bf16 row pairs of dS^T
//     dQ += dS^T2^T . Kp
//
// P and dS are rounded to bf16 only as operands of the products (as the GPU
// kernels and a bf16 implementation with materialized P do); the row sums
// and the slope gradient take them in f32.
//
// D_i = rowsum(dO * O) is recomputed where a row block is staged, which
// costs one dot product per row and block instead of a pass over memory.
// P recomputed from an lse rounded to f32 (and computed by a forward with
// its own rounding) sums to 1 only to ~1e-6 per row. Each dQ item sums P
// over its rows anyway, so it scales its rows by r = 1 / sum_j P (exact
// algebra: dS and dQ scale with P) and writes r to row_scale; the dK/dV
// items, launched after every dQ item, scale P by it too.
//
// Scores carry the bias as slope * dist with the distance relative to the
// same row constant the forward took out (the anchor with position offsets,
// pos[clamp(i')] for alibi_positions), so s - lse never subtracts two large
// numbers that differ in their last bits. Since the rows of dS sum to zero,
// sum(dS * dist) equals ALIBI.md's sum with the full distance. That identity
// also cancels the rounding of D_i (from the forward's rounded o), which
// would otherwise enter the slope gradient once per row times the row's
// mean distance: with P's row sum p, sum(dS) = e * p for D_i's error e, so
// each row adds sum(dS * dist) - sum(dS) / p * sum(P * dist) (with an
// upstream gradient g of lse the rows of dS sum to g instead: sum(dS) - g,
// and the distances relative to a row constant c then lack c * g, which
// each row adds back).
//
//===----------------------------------------------------------------------===//

#include "CpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"

#include <cmath>

using namespace mlir;
using namespace mlir::tilt;

namespace {

class BackwardEmitter final : public CpuKernelBuilder {
public:
  BackwardEmitter(AttentionBackwardOp op, ImplicitLocOpBuilder &b,
                  bool nativeBf16Dot)
      : CpuKernelBuilder(
            op, op.getSpec(), op.getConfigAttr(), sharedOperands(op), b,
            op.getConfigAttr().getVariant() == KernelVariant::cpu_bwd_avx2
                ? 8
                : 16),
        op(op), group(spec.heads / spec.kvHeads),
        pairs(op.getConfigAttr().getVariant() ==
              KernelVariant::cpu_bwd_avx512bf16),
        nativeDot(nativeBf16Dot) {}

  LogicalResult emit() override;

private:
  // --- the item space: two passes, or one -----------------------------------
  void keyBlockItem(Value item, Value numKeyBlocks);
  void queryHeadItem(Value item);
  void fusedItem(Value item);

  /// K^T, V^T of keys [k0, k0 + nk) to kDst, vDst from row row0 (pairs:
  /// K^T2, V^T2), zero past nk.
  void stageKeyColumns(Value k0, Value nk, Value kDst, Value vDst, Value row0);
  /// The keys [begin, end) any of rows [r0, r0 + rows) may see.
  std::pair<Value, Value> keyRange(Value r0, Value rows) {
    Value firstPos = add(r0, shift);
    Value lastPos = add(firstPos, sub(rows, idx(1)));
    Value kBegin = idx(0), kEnd = sk;
    if (spec.causal)
      kEnd = maxI(idx(0), minI(sk, add(lastPos, idx(1))));
    if (spec.window)
      kBegin = minI(
          kEnd, maxI(idx(0), add(sub(firstPos, idx(*spec.window)), idx(1))));
    return {kBegin, kEnd};
  }
  /// Per vector of the block at k0: its keys that exist (< nk), unpadded.
  SmallVector<Value> keyLanes(Value k0, Value nk);
  /// Rows [r0, r0 + n) of `head`: their row state (stageRowState) and, as
  /// the products need, Q and dO widened (qRows, doRows) or in row pairs
  /// (Qp, dOp).
  void stageRowBlock(Value r0, Value n, bool scaled);
  /// The staged rows against the key block at k0 (K^T, V^T in kCols, vCols
  /// from row colsRow0): S and dP, then P and dS in pBlk and dsBlk. Two
  /// passes: scaled by rowR. Fused: unscaled, and the rows' sums added to
  /// rowP (rowDs, rowPd, rowDsd with a slope gradient).
  void scoreBlock(Value r0, Value n, Value k0, ArrayRef<Value> exists,
                  Value kCols, Value vCols, Value colsRow0, bool fused);
  /// dV += P^T dO and dK += dS^T Q of the staged rows into dk, dv (pairs
  /// [BN][D], else [D][BN]; rows from accRow0).
  void keyGradsBlock(Value r0, Value n, Value dk, Value dv, Value accRow0);
  /// dk = scale * dK, dv = dV of keys [k0, k0 + nk) from dk, dv (as
  /// keyGradsBlock's, rows from accRow0).
  void writeKeyGrads(Value k0, Value nk, Value dk, Value dv, Value accRow0);
  /// From the row scratch's sums of rows [r0, r0 + rows): r = 1 / sum(P)
  /// to row_scale and rowR, the slope gradient's rows to dslopeAcc, and dq
  /// = scale * r * dQ (dQ's rows from dqRow0 of `dq`).
  void finishRows(Value r0, Value rows, Value dq, Value dqRow0);
  /// dslopeAcc's sum to dslopes[batch, head] (with a slope gradient).
  void writeDslopes();

  /// Stages rows [r0, r0 + n) of `head` (n <= block_m): per row the lse in
  /// log2 units less its row constant, D_i, the anchor or position
  /// reference the distances are taken from and, with `scaled`, the row's
  /// row_scale entry (else 1). Rows past n get zeros.
  void stageRowState(Value r0, Value n, bool scaled);
  /// The bias distance (dist with bias = slope * dist) of `jrel` = j - i'
  /// vectors, relative to the row constant `anchor` (null: none);
  /// `positions` gives pos[j] - ref for alibi_positions. Null without bias.
  Value distance(Value jrel, Value anchor, function_ref<Value()> positions);
  /// P and dS from raw scores `s` and dP, for the visible lanes; P times
  /// `scale` when given.
  std::pair<Value, Value> probabilities(Value s, Value dp, Value dist,
                                        Value lse2, Value delta, Value visible,
                                        Value scale);

  /// C[M][N] += sum_{k < kEnd} a(m, k) * bvec(k, n) for an f32 scratch C
  /// (its rows from cRow0, null: 0), N in vectors of vl lanes (n a
  /// multiple of vl), in register tiles. With
  /// bf16 pairs (bvec a vector<2 vl x bf16>, a a broadcast pair), k counts
  /// pairs and each step is a pair dot product.
  void matmul(Value c, int64_t rowsM, int64_t colsN, Value kEnd,
              function_ref<Value(Value, Value)> a,
              function_ref<Value(Value, Value)> bvec, Value cRow0 = {});
  /// C[M][N] += sum over the head dim's columns k of t[row m][k] *
  /// cols[k][n]: rows of q- or kv-like `t` addressed by `index(m, k)` (or
  /// their widened copy `staged`, row m), `cols` the f32 [D][N] scratch or,
  /// with pairs, its column pairs [D/2][2 N] (either from row colsRow0,
  /// null: 0).
  void matmulOverD(Value c, int64_t rowsM, int64_t colsN, Value t, Value staged,
                   function_ref<SmallVector<Value>(Value, Value)> index,
                   Value cols, Value colsRow0 = {});
  void zero(Value ref, int64_t rows, int64_t cols) {
    zeroRows(ref, idx(rows), cols);
  }
  void zeroRows(Value ref, Value rows, int64_t cols);
  /// cpu_bwd_avx512bf16: the column pairs of rows `row(m)` of q-like `t`
  /// as 32-bit words, transposed: dst[cp][2m + e] = t[row(m)][2cp + e] for
  /// m < n, zero for n <= m < rows (dst's rows from dstRow0, null: 0).
  void stageColumnPairs(Value t, Value dst, int64_t rows, Value n,
                        function_ref<Value(Value)> row,
                        function_ref<SmallVector<Value>(Value, Value)> index,
                        Value dstRow0 = {});
  /// A vector<2 vl x bf16> of pairs from `ref` at (p, 2 col).
  Value pairsAt(Value ref, Value p, Value col) {
    return vector::LoadOp::create(b, VectorType::get({2 * vl}, elt), ref,
                                  ValueRange{p, mul(col, idx(2))});
  }
  /// Widens rows `row(r)` (r < rows) of `t` into the f32 scratch `dst`
  /// (from its row dstRow0, null: 0), whole vectors at a time; `index(row,
  /// col)` addresses `t`.
  void widenRows(Value t, Value dst, int64_t rows,
                 function_ref<Value(Value)> row,
                 function_ref<SmallVector<Value>(Value, Value)> index,
                 Value dstRow0 = {}) {
    forLoop(idx(0), idx(rows), idx(1), [&](Value r) {
      Value at = row(r);
      Value to = dstRow0 ? add(dstRow0, r) : r;
      for (int64_t c = 0; c < d; c += vl)
        vector::StoreOp::create(b, vecF32At(t, index(at, idx(c))), dst,
                                ValueRange{to, idx(c)});
    });
  }
  /// Element (r, c) of `t` through its widened copy `staged` (row r of the
  /// block) when there is one, else from `t` at `index`.
  Value element(Value staged, Value r, Value c, Value t,
                SmallVector<Value> index) {
    if (staged)
      return memref::LoadOp::create(b, staged, ValueRange{r, c});
    return scalarF32(t, std::move(index));
  }
  /// Loads element (row, col) of q/k/v-like `t` as f32.
  Value scalarF32(Value t, SmallVector<Value> index) {
    return toF32(memref::LoadOp::create(b, t, index));
  }
  /// vl elements of q/k/v-like `t` at `index`, as stored / as f32.
  Value vecAt(Value t, SmallVector<Value> index) {
    return vector::LoadOp::create(b, VectorType::get({vl}, elt), t, index);
  }
  Value vecF32At(Value t, SmallVector<Value> index) {
    return toF32(vecAt(t, std::move(index)));
  }
  Value iota() {
    SmallVector<float> lanes;
    for (int64_t l = 0; l < vl; ++l)
      lanes.push_back(float(l));
    return arith::ConstantOp::create(
        b, DenseElementsAttr::get(vecF32, ArrayRef<float>(lanes)));
  }
  SmallVector<Value> lseIndex(Value row) {
    if (spec.varlen)
      return {head, add(seqQ0, row)};
    return {batch, head, row};
  }
  /// pos[j] = cumsum(kpm)[j] - 1 of the sequence, padded by a key block.
  void stagePositions();
  Value keyVisible(Value j);

  AttentionBackwardOp op;
  int64_t group;
  /// cpu_bwd_avx512bf16; its dot products are vdpbf16ps (else two FMAs).
  bool pairs, nativeDot;
  // Pairs (bf16): K^T2, V^T2 [D/2][2 BN]; Qp, dOp [BM/2][2 D]; P2, dS2
  // [BM/2][2 BN]; Q^T2, dO^T2 [D/2][2 BM]; Kp [BN/2][2 D]; dS^T2 [BN/2][2
  // BM]. f32: dK, dV [BN][D] (the pairs' dK/dV part is not transposed).
  Value kT2, vT2, qP, doP, p2, ds2, qT2, doT2, kP, dsT2, dkAcc, dvAcc;
  // Fused, pairs: dS rounded to bf16 [BM][BN], pairs along the keys.
  Value dsNat;
  // Scratch per call. dK/dV part: K^T, V^T, dK^T, dV^T [D][BN]; P, dS
  // [BM][BN]. dQ part: Q^T, dO^T [D][BM]; dQ [BM][D]; P^T, dS^T [BN][BM].
  // Rows: lse (log2, relative), D_i, anchors / position references [BM];
  // the slope gradient's running vector [vl].
  Value kT, vT, dkT, dvT, pBlk, dsBlk;
  Value qT, doT, dqAcc, pT, dsT;
  Value rowLse, rowDelta, rowAnchor, rowRef, rowR, dslopeAcc;
  // 16-bit inputs only: the rows the matmuls broadcast from, widened to f32
  // once per block (Q, dO [BM][D]; K, V [BN][D]) rather than element by
  // element inside the register tiles. f32 inputs are read in place.
  Value qRows, doRows, kRows, vRows;
  // dQ part, per row: sum(P); with a slope gradient sum(dS), sum(P * dist),
  // sum(dS * dist).
  Value rowP, rowDs, rowPd, rowDsd, rowG, rowGc;
};

} // namespace

std::unique_ptr<CpuKernelBuilder>
mlir::tilt::makeBackwardEmitter(AttentionBackwardOp op, ImplicitLocOpBuilder &b,
                                bool nativeBf16Dot) {
  return std::make_unique<BackwardEmitter>(op, b, nativeBf16Dot);
}

LogicalResult BackwardEmitter::emit() {
  if (!op.getRowScale())
    return op.emitOpError("the backward kernels need row_scale (f32 scratch "
                          "shaped like lse; tilt-cpu-entry adds it)");
  // Head dims are multiples of 16 and blocks powers of two from 16 (the
  // spec's and the tile config's verifiers), so vectors of 8 or 16 lanes
  // divide them all.
  pBlk = scratch({bm, bn}, f32);
  dsBlk = scratch({bm, bn}, f32);
  dqAcc = scratch({bm, d}, f32);
  if (pairs) { // (bf16 inputs: the op's verifier)
    kT2 = scratch({d / 2, 2 * bn}, elt);
    vT2 = scratch({d / 2, 2 * bn}, elt);
    qP = scratch({bm / 2, 2 * d}, elt);
    doP = scratch({bm / 2, 2 * d}, elt);
    p2 = scratch({bm / 2, 2 * bn}, elt);
    ds2 = scratch({bm / 2, 2 * bn}, elt);
    qT2 = scratch({d / 2, 2 * bm}, elt);
    doT2 = scratch({d / 2, 2 * bm}, elt);
    kP = scratch({bn / 2, 2 * d}, elt);
    dsT2 = scratch({bn / 2, 2 * bm}, elt);
    dsNat = scratch({bm, bn}, elt);
    dkAcc = scratch({bn, d}, f32);
    dvAcc = scratch({bn, d}, f32);
  } else {
    kT = scratch({d, bn}, f32);
    vT = scratch({d, bn}, f32);
    dkT = scratch({d, bn}, f32);
    dvT = scratch({d, bn}, f32);
    qT = scratch({d, bm}, f32);
    doT = scratch({d, bm}, f32);
  }
  pT = scratch({bn, bm}, f32);
  dsT = scratch({bn, bm}, f32);
  rowLse = scratch({bm}, f32);
  rowDelta = scratch({bm}, f32);
  rowAnchor = scratch({bm}, f32);
  rowRef = scratch({bm}, f32);
  rowR = scratch({bm}, f32);
  if (!elt.isF32() && !pairs) {
    qRows = scratch({bm, d}, f32);
    doRows = scratch({bm, d}, f32);
    kRows = scratch({bn, d}, f32);
    vRows = scratch({bn, d}, f32);
  }
  dslopeAcc = scratch({vl}, f32);
  rowP = scratch({bm}, f32);
  if (spec.hasAlibi() && op.getDslopesOut()) {
    rowG = scratch({bm}, f32);
    rowGc = scratch({bm}, f32);
    rowDs = scratch({bm}, f32);
    rowPd = scratch({bm}, f32);
    rowDsd = scratch({bm}, f32);
  }

  // Item space: B * Hkv * ceil(maxSk / block_n) key blocks, then B * H
  // query heads (KernelABI.h). Varlen counts blocks against the longest
  // key sequence, as the runtime does.
  Value numBatch, maxSk;
  if (spec.varlen) {
    numBatch = sub(memref::DimOp::create(b, io.cuK, 0), idx(1));
    auto loop = scf::ForOp::create(
        b, idx(0), numBatch, idx(1), ValueRange{idx(0)},
        [&](OpBuilder &, Location, Value i, ValueRange args) {
          Value lo = memref::LoadOp::create(b, io.cuK, ValueRange{i});
          Value hi =
              memref::LoadOp::create(b, io.cuK, ValueRange{add(i, idx(1))});
          Value len = arith::IndexCastOp::create(
              b, b.getIndexType(), arith::SubIOp::create(b, hi, lo));
          scf::YieldOp::create(b, ValueRange{maxI(args[0], len)});
        });
    maxSk = loop.getResult(0);
  } else {
    numBatch = memref::DimOp::create(b, io.q, 0);
    maxSk = memref::DimOp::create(b, io.k, 2);
  }
  Value numKeyBlocks = arith::CeilDivSIOp::create(b, maxSk, idx(bn));
  Value keyItems = mul(mul(numBatch, idx(spec.kvHeads)), numKeyBlocks);
  Value twoPassItems = add(keyItems, mul(numBatch, idx(spec.heads)));
  auto below = [&](Value item, Value bound) {
    return arith::CmpIOp::create(b, arith::CmpIPredicate::slt, item, bound)
        .getResult();
  };
  auto choose = [&](Value cond, function_ref<void()> then,
                    function_ref<void()> otherwise) {
    scf::IfOp::create(
        b, cond,
        [&](OpBuilder &, Location) {
          then();
          scf::YieldOp::create(b);
        },
        [&](OpBuilder &, Location) {
          otherwise();
          scf::YieldOp::create(b);
        });
  };
  forLoop(io.itemBegin, io.itemEnd, idx(1), [&](Value item) {
    choose(
        below(item, keyItems), [&] { keyBlockItem(item, numKeyBlocks); },
        [&] {
          choose(
              below(item, twoPassItems),
              [&] { queryHeadItem(sub(item, keyItems)); },
              [&] { fusedItem(sub(item, twoPassItems)); });
        });
  });
  return success();
}

void BackwardEmitter::zeroRows(Value ref, Value rows, int64_t cols) {
  forLoop(idx(0), rows, idx(1), [&](Value r) {
    for (int64_t c = 0; c < cols; c += vl)
      vector::StoreOp::create(b, splat(0.0), ref, ValueRange{r, idx(c)});
  });
}

void BackwardEmitter::matmul(Value c, int64_t rowsM, int64_t colsN, Value kEnd,
                             function_ref<Value(Value, Value)> a,
                             function_ref<Value(Value, Value)> bvec,
                             Value cRow0) {
  if (!cRow0)
    cRow0 = idx(0);
  // Register tiles of tr rows x tc vectors: 8 accumulators on AVX2 (16
  // registers), 16 on AVX-512 (32), each broadcast a(m, k) feeding tc FMAs.
  const int64_t nv = colsN / vl;
  const int64_t tr = 4;
  int64_t tc = vl == 8 ? 2 : 4;
  while (nv % tc != 0)
    tc /= 2;
  forLoop(idx(0), idx(rowsM), idx(tr), [&](Value m) {
    Value m0 = add(cRow0, m);
    forLoop(idx(0), idx(colsN), idx(tc * vl), [&](Value n0) {
      SmallVector<Value> init;
      for (int64_t r = 0; r < tr; ++r)
        for (int64_t t = 0; t < tc; ++t)
          init.push_back(vector::LoadOp::create(
              b, vecF32, c, ValueRange{add(m0, idx(r)), add(n0, idx(t * vl))}));
      auto loop = scf::ForOp::create(
          b, idx(0), kEnd, idx(1), init,
          [&](OpBuilder &, Location, Value k, ValueRange accs) {
            SmallVector<Value> bs;
            for (int64_t t = 0; t < tc; ++t)
              bs.push_back(bvec(k, add(n0, idx(t * vl))));
            SmallVector<Value> next;
            for (int64_t r = 0; r < tr; ++r) {
              Value ar = a(add(m, idx(r)), k);
              if (!isa<VectorType>(ar.getType()))
                ar = bcast(ar);
              for (int64_t t = 0; t < tc; ++t) {
                Value acc = accs[r * tc + t];
                next.push_back(
                    pairs ? bf16PairDot(acc, ar, bs[t], nativeDot)
                          : math::FmaOp::create(b, ar, bs[t], acc).getResult());
              }
            }
            scf::YieldOp::create(b, next);
          });
      for (int64_t r = 0; r < tr; ++r)
        for (int64_t t = 0; t < tc; ++t)
          vector::StoreOp::create(
              b, loop.getResult(r * tc + t), c,
              ValueRange{add(m0, idx(r)), add(n0, idx(t * vl))});
    });
  });
}

void BackwardEmitter::matmulOverD(
    Value c, int64_t rowsM, int64_t colsN, Value t, Value staged,
    function_ref<SmallVector<Value>(Value, Value)> index, Value cols,
    Value colsRow0) {
  if (!colsRow0)
    colsRow0 = idx(0);
  if (pairs) {
    matmul(
        c, rowsM, colsN, idx(d / 2),
        [&](Value m, Value p) {
          return broadcastBf16Pair(t, index(m, mul(p, idx(2))));
        },
        [&](Value p, Value n0) { return pairsAt(cols, add(colsRow0, p), n0); });
    return;
  }
  matmul(
      c, rowsM, colsN, idx(d),
      [&](Value m, Value k) { return element(staged, m, k, t, index(m, k)); },
      [&](Value k, Value n0) {
        return vector::LoadOp::create(b, vecF32, cols,
                                      ValueRange{add(colsRow0, k), n0})
            .getResult();
      });
}

void BackwardEmitter::stageColumnPairs(
    Value t, Value dst, int64_t rows, Value n, function_ref<Value(Value)> row,
    function_ref<SmallVector<Value>(Value, Value)> index, Value dstRow0) {
  if (!dstRow0)
    dstRow0 = idx(0);
  VectorType pair = VectorType::get({2}, elt);
  Value zero = arith::ConstantOp::create(b, b.getZeroAttr(pair));
  forLoop(idx(0), idx(rows), idx(1), [&](Value m) {
    Value in = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, m, n);
    Value at = row(m);
    forLoop(idx(0), idx(d / 2), idx(1), [&](Value cp) {
      Value w = vector::LoadOp::create(b, pair, t, index(at, mul(cp, idx(2))));
      vector::StoreOp::create(b, arith::SelectOp::create(b, in, w, zero), dst,
                              ValueRange{add(dstRow0, cp), mul(m, idx(2))});
    });
  });
}

void BackwardEmitter::stagePositions() {
  auto type = MemRefType::get({ShapedType::kDynamic}, f32);
  pos = memref::AllocOp::create(b, type, ValueRange{add(sk, idx(bn))},
                                b.getI64IntegerAttr(64));
  scf::ForOp::create(b, idx(0), sk, idx(1), ValueRange{f32c(-1.0)},
                     [&](OpBuilder &, Location, Value j, ValueRange args) {
                       Value on = keyVisible(j);
                       Value next = arith::SelectOp::create(
                           b, on, arith::AddFOp::create(b, args[0], f32c(1.0)),
                           args[0]);
                       memref::StoreOp::create(b, next, pos, ValueRange{j});
                       scf::YieldOp::create(b, ValueRange{next});
                     });
  forLoop(sk, add(sk, idx(bn)), idx(1), [&](Value j) {
    memref::StoreOp::create(b, f32c(0.0), pos, ValueRange{j});
  });
}

Value BackwardEmitter::keyVisible(Value j) {
  Value m = memref::LoadOp::create(b, io.kpm, ValueRange{batch, j});
  return arith::CmpIOp::create(
      b, arith::CmpIPredicate::ne, m,
      arith::ConstantOp::create(b, b.getI8IntegerAttr(0)));
}

void BackwardEmitter::stageRowState(Value r0, Value n, bool scaled) {
  Value last = sub(sk, idx(1));
  forLoop(idx(0), idx(bm), idx(1), [&](Value m) {
    Value live = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, m, n);
    Value row = minI(add(r0, m), sub(add(r0, n), idx(1)));
    Value ip = add(row, shift);
    Value nearest = maxI(idx(0), minI(ip, last));
    // The row constant the forward's lse carries beyond the relative
    // distances: m * anchor (or -m * |anchor|), or m * pos[clamp(i')].
    Value anchor = f32c(0.0), ref = f32c(0.0), constant = f32c(0.0);
    if (spec.bias == ::tilt::BiasKind::AlibiPositions) {
      ref = memref::LoadOp::create(b, pos, ValueRange{nearest});
      constant = arith::MulFOp::create(
          b, arith::MulFOp::create(b, slope2, f32c(1.0 / kLog2E)), ref);
    } else if (spec.positionOffsets && spec.hasAlibi()) {
      anchor = indexToF32(sub(nearest, ip));
      constant = addAnchorConstant(f32c(0.0), anchor);
    }
    Value lse = memref::LoadOp::create(b, op.getLse(), lseIndex(row));
    Value lse2 = arith::MulFOp::create(
        b, arith::SubFOp::create(b, lse, constant), f32c(kLog2E));
    Value dot = splat(0.0);
    for (int64_t c = 0; c < d; c += vl)
      dot = math::FmaOp::create(b, vecF32At(op.getGradO(), qIndex(row, idx(c))),
                                vecF32At(op.getO(), qIndex(row, idx(c))), dot);
    Value delta =
        vector::ReductionOp::create(b, vector::CombiningKind::ADD, dot);
    // The gradient through lse: d lse_i / d s_ij = P_ij, so it joins D_i.
    Value g = f32c(0.0);
    if (Value gradLse = op.getGradLse()) {
      g = memref::LoadOp::create(b, gradLse, lseIndex(row));
      delta = arith::SubFOp::create(b, delta, g);
    }
    auto keep = [&](Value v) {
      return arith::SelectOp::create(b, live, v, f32c(0.0)).getResult();
    };
    memref::StoreOp::create(b, keep(lse2), rowLse, ValueRange{m});
    memref::StoreOp::create(b, keep(delta), rowDelta, ValueRange{m});
    memref::StoreOp::create(b, anchor, rowAnchor, ValueRange{m});
    memref::StoreOp::create(b, ref, rowRef, ValueRange{m});
    Value r = scaled
                  ? memref::LoadOp::create(b, op.getRowScale(), lseIndex(row))
                        .getResult()
                  : f32c(1.0);
    memref::StoreOp::create(b, keep(r), rowR, ValueRange{m});
    if (rowG) {
      memref::StoreOp::create(b, keep(g), rowG, ValueRange{m});
      // The distances are relative to the row constant c (ref, or the
      // anchor's distance): the rows of dS sum to g, so the row's slope
      // gradient lacks c * g (see the top).
      Value c = spec.bias == ::tilt::BiasKind::AlibiPositions
                    ? ref
                    : distance(anchor, Value(), [] { return Value(); });
      memref::StoreOp::create(b, keep(arith::MulFOp::create(b, c, g)), rowGc,
                              ValueRange{m});
    }
  });
}

Value BackwardEmitter::distance(Value jrel, Value anchor,
                                function_ref<Value()> positions) {
  switch (spec.bias) {
  case ::tilt::BiasKind::None:
    return {};
  case ::tilt::BiasKind::Alibi:
    return anchor ? arith::SubFOp::create(b, jrel, anchor).getResult() : jrel;
  case ::tilt::BiasKind::AlibiSymmetric: {
    Value rel =
        anchor ? arith::SubFOp::create(b, jrel, anchor).getResult() : jrel;
    return arith::NegFOp::create(b, math::AbsFOp::create(b, rel));
  }
  case ::tilt::BiasKind::AlibiPositions:
    return positions();
  }
  return {};
}

std::pair<Value, Value>
BackwardEmitter::probabilities(Value s, Value dp, Value dist, Value lse2,
                               Value delta, Value visible, Value scale) {
  const double c = spec.effectiveScale() * kLog2E;
  Value x = math::FmaOp::create(b, s, splat(c),
                                arith::NegFOp::create(b, lse2).getResult());
  if (dist)
    x = math::FmaOp::create(b, bcast(slope2), dist, x);
  // Masked lanes may hold anything (inf - inf among them): select, not
  // multiply.
  Value p = splat(0.0);
  if (visible)
    p = arith::SelectOp::create(b, visible, exp2(x), p);
  else
    p = exp2(x);
  if (scale)
    p = arith::MulFOp::create(b, p, scale);
  Value ds = arith::MulFOp::create(b, p, arith::SubFOp::create(b, dp, delta));
  return {p, ds};
}

void BackwardEmitter::stageKeyColumns(Value k0, Value nk, Value kDst,
                                      Value vDst, Value row0) {
  Value lastKey = sub(add(k0, nk), idx(1));
  auto keyOf = [&](Value n) { return minI(add(k0, n), lastKey); };
  if (pairs) {
    auto kvIdx = [&](Value row, Value c) { return kvIndex(row, c); };
    stageColumnPairs(io.k, kDst, bn, nk, keyOf, kvIdx, row0);
    stageColumnPairs(io.v, vDst, bn, nk, keyOf, kvIdx, row0);
    return;
  }
  forLoop(idx(0), idx(bn), idx(1), [&](Value n) {
    Value in = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, n, nk);
    Value key = keyOf(n);
    forLoop(idx(0), idx(d), idx(1), [&](Value c) {
      for (auto [src, dst] :
           {std::pair<Value, Value>{io.k, kDst}, {io.v, vDst}}) {
        Value x = arith::SelectOp::create(
            b, in, scalarF32(src, kvIndex(key, c)), f32c(0.0));
        memref::StoreOp::create(b, x, dst, ValueRange{add(row0, c), n});
      }
    });
  });
}

SmallVector<Value> BackwardEmitter::keyLanes(Value k0, Value nk) {
  Value lanes = iota();
  VectorType vecI1 = VectorType::get({vl}, b.getI1Type());
  SmallVector<Value> exists;
  for (int64_t c = 0; c < bn; c += vl) {
    Value room = indexToF32(sub(nk, idx(c)));
    Value in =
        arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, lanes, bcast(room));
    if (io.kpm) {
      VectorType vecI8 = VectorType::get({vl}, b.getI8Type());
      Value zeros = arith::ConstantOp::create(
          b, DenseElementsAttr::get(vecI8, b.getI8IntegerAttr(0)));
      Value inRange = vector::CreateMaskOp::create(
          b, vecI1, ValueRange{maxI(idx(0), sub(nk, idx(c)))});
      Value m = vector::MaskedLoadOp::create(
          b, vecI8, io.kpm, ValueRange{batch, add(k0, idx(c))}, inRange, zeros);
      in = arith::AndIOp::create(
          b, in, arith::CmpIOp::create(b, arith::CmpIPredicate::ne, m, zeros));
    }
    exists.push_back(in);
  }
  return exists;
}

void BackwardEmitter::stageRowBlock(Value r0, Value n, bool scaled) {
  stageRowState(r0, n, scaled);
  Value lastRow = sub(add(r0, n), idx(1));
  auto rowOf = [&](Value m) { return minI(add(r0, m), lastRow); };
  if (qRows) {
    auto qIdx = [&](Value row, Value c) { return qIndex(row, c); };
    widenRows(io.q, qRows, bm, rowOf, qIdx);
    widenRows(op.getGradO(), doRows, bm, rowOf, qIdx);
  }
  if (pairs)
    for (auto [t, dst] :
         {std::pair<Value, Value>{io.q, qP}, {op.getGradO(), doP}})
      stageRowPairs(n, d, dst, [&](Value m, Value c) {
        return vecAt(t, qIndex(add(r0, m), c));
      });
}

void BackwardEmitter::scoreBlock(Value r0, Value n, Value k0,
                                 ArrayRef<Value> exists, Value kCols,
                                 Value vCols, Value colsRow0, bool fused) {
  // S = Q . K^T and dP = dO . V^T, vectors along the block's keys.
  Value lastRow = sub(add(r0, n), idx(1));
  auto qRow = [&](Value m, Value c) {
    return qIndex(minI(add(r0, m), lastRow), c);
  };
  zero(pBlk, bm, bn);
  zero(dsBlk, bm, bn);
  matmulOverD(pBlk, bm, bn, io.q, qRows, qRow, kCols, colsRow0);
  matmulOverD(dsBlk, bm, bn, op.getGradO(), doRows, qRow, vCols, colsRow0);
  // P and dS, in place; fused, the rows' sums too (rowP, ...: the dq
  // items' row state).
  Value lanes = iota();
  forLoop(idx(0), n, idx(1), [&](Value m) {
    Value ip = add(add(r0, m), shift);
    Value lse2 = bcast(memref::LoadOp::create(b, rowLse, ValueRange{m}));
    Value delta = bcast(memref::LoadOp::create(b, rowDelta, ValueRange{m}));
    Value anchor =
        spec.positionOffsets && spec.hasAlibi()
            ? bcast(memref::LoadOp::create(b, rowAnchor, ValueRange{m}))
            : Value();
    Value ref = memref::LoadOp::create(b, rowRef, ValueRange{m});
    Value scale =
        fused ? Value() : bcast(memref::LoadOp::create(b, rowR, ValueRange{m}));
    Value sp = splat(0.0), sds = sp, spd = sp, sdsd = sp;
    for (int64_t c = 0; c < bn; c += vl) {
      Value jrel = arith::AddFOp::create(
          b, bcast(indexToF32(sub(add(k0, idx(c)), ip))), lanes);
      Value dist = distance(jrel, anchor, [&] {
        Value p =
            vector::LoadOp::create(b, vecF32, pos, ValueRange{add(k0, idx(c))});
        return arith::SubFOp::create(b, p, bcast(ref)).getResult();
      });
      Value s = vector::LoadOp::create(b, vecF32, pBlk, ValueRange{m, idx(c)});
      Value dp =
          vector::LoadOp::create(b, vecF32, dsBlk, ValueRange{m, idx(c)});
      auto [p, ds] = probabilities(s, dp, dist, lse2, delta,
                                   positionMask(exists[c / vl], jrel), scale);
      vector::StoreOp::create(b, p, pBlk, ValueRange{m, idx(c)});
      vector::StoreOp::create(b, ds, dsBlk, ValueRange{m, idx(c)});
      if (!fused)
        continue;
      sp = arith::AddFOp::create(b, sp, p);
      if (rowDs) {
        sds = arith::AddFOp::create(b, sds, ds);
        spd = math::FmaOp::create(b, p, dist, spd);
        sdsd = math::FmaOp::create(b, ds, dist, sdsd);
      }
    }
    if (!fused)
      return;
    for (auto [x, sum] : {std::pair<Value, Value>{sp, rowP},
                          {sds, rowDs},
                          {spd, rowPd},
                          {sdsd, rowDsd}}) {
      if (!sum)
        continue;
      Value total =
          vector::ReductionOp::create(b, vector::CombiningKind::ADD, x);
      Value old = memref::LoadOp::create(b, sum, ValueRange{m});
      memref::StoreOp::create(b, arith::AddFOp::create(b, old, total), sum,
                              ValueRange{m});
    }
  });
}

void BackwardEmitter::keyGradsBlock(Value r0, Value n, Value dk, Value dv,
                                    Value accRow0) {
  if (pairs) {
    // dV += P2^T . dOp and dK += dS2^T . Qp over the block's rows.
    for (auto [src, dst, acc, rowsOf] :
         {std::tuple<Value, Value, Value, Value>{pBlk, p2, dv, doP},
          {dsBlk, ds2, dk, qP}}) {
      stageRowPairs(n, bn, dst, [&](Value m, Value c) {
        return vector::LoadOp::create(b, vecF32, src, ValueRange{m, c})
            .getResult();
      });
      matmul(
          acc, bn, d, pairCount(n),
          [&](Value j, Value mp) {
            return broadcastBf16Pair(dst, ValueRange{mp, mul(j, idx(2))});
          },
          [&](Value mp, Value c0) { return pairsAt(rowsOf, mp, c0); }, accRow0);
    }
    return;
  }
  // dV^T += dO^T . P and dK^T += Q^T . dS over the block's rows.
  matmul(
      dv, d, bn, n,
      [&](Value c, Value m) {
        return element(doRows, m, c, op.getGradO(), qIndex(add(r0, m), c));
      },
      [&](Value m, Value n0) {
        return vector::LoadOp::create(b, vecF32, pBlk, ValueRange{m, n0})
            .getResult();
      },
      accRow0);
  matmul(
      dk, d, bn, n,
      [&](Value c, Value m) {
        return element(qRows, m, c, io.q, qIndex(add(r0, m), c));
      },
      [&](Value m, Value n0) {
        return vector::LoadOp::create(b, vecF32, dsBlk, ValueRange{m, n0})
            .getResult();
      },
      accRow0);
}

void BackwardEmitter::writeKeyGrads(Value k0, Value nk, Value dk, Value dv,
                                    Value accRow0) {
  // dk = scale * dK, dv = dV for the keys that exist.
  Value scale = f32c(spec.effectiveScale());
  if (pairs) {
    forLoop(idx(0), nk, idx(1), [&](Value n) {
      for (int64_t c = 0; c < d; c += vl) {
        auto at = [&](Value acc) {
          return vector::LoadOp::create(b, vecF32, acc,
                                        ValueRange{add(accRow0, n), idx(c)})
              .getResult();
        };
        SmallVector<Value> to = kvIndex(add(k0, n), idx(c));
        vector::StoreOp::create(
            b, fromF32(arith::MulFOp::create(b, at(dk), bcast(scale))),
            op.getDkOut(), to);
        vector::StoreOp::create(b, fromF32(at(dv)), op.getDvOut(), to);
      }
    });
    return;
  }
  forLoop(idx(0), nk, idx(1), [&](Value n) {
    forLoop(idx(0), idx(d), idx(1), [&](Value c) {
      auto store = [&](Value x, Value dst) {
        if (!elt.isF32())
          x = arith::TruncFOp::create(b, elt, x);
        memref::StoreOp::create(b, x, dst, kvIndex(add(k0, n), c));
      };
      Value at = add(accRow0, c);
      store(arith::MulFOp::create(
                b, memref::LoadOp::create(b, dk, ValueRange{at, n}), scale),
            op.getDkOut());
      store(memref::LoadOp::create(b, dv, ValueRange{at, n}), op.getDvOut());
    });
  });
}

void BackwardEmitter::keyBlockItem(Value item, Value numKeyBlocks) {
  Value kb = arith::RemSIOp::create(b, item, numKeyBlocks);
  Value bk = arith::DivSIOp::create(b, item, numKeyBlocks);
  kvHead = arith::RemSIOp::create(b, bk, idx(spec.kvHeads));
  batch = arith::DivSIOp::create(b, bk, idx(spec.kvHeads));
  loadSequence();
  Value k0 = mul(kb, idx(bn));
  Value live = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, k0, sk);
  ifThen(live, [&] {
    Value nk = minI(idx(bn), sub(sk, k0));
    Value lastKey = sub(add(k0, nk), idx(1));
    // K^T and V^T of the block (pairs: K^T2, V^T2); keys past the sequence
    // are zero.
    Value kCols = pairs ? kT2 : kT, vCols = pairs ? vT2 : vT;
    stageKeyColumns(k0, nk, kCols, vCols, idx(0));
    Value dk = pairs ? dkAcc : dkT, dv = pairs ? dvAcc : dvT;
    if (pairs) {
      zero(dkAcc, bn, d);
      zero(dvAcc, bn, d);
    } else {
      zero(dkT, d, bn);
      zero(dvT, d, bn);
    }
    if (spec.bias == ::tilt::BiasKind::AlibiPositions)
      stagePositions();
    SmallVector<Value> exists = keyLanes(k0, nk);
    // Query rows that may see a key of the block: i' >= k0 when causal,
    // i' < lastKey + w with a window.
    Value rowBegin = idx(0), rowEnd = sq;
    if (spec.causal)
      rowBegin = maxI(idx(0), minI(sq, sub(k0, shift)));
    if (spec.window)
      rowEnd =
          maxI(rowBegin, minI(sq, sub(add(lastKey, idx(*spec.window)), shift)));
    forLoop(idx(0), idx(group), idx(1), [&](Value g) {
      head = add(mul(kvHead, idx(group)), g);
      slope2 = spec.hasAlibi() ? slopeLog2() : Value();
      forLoop(rowBegin, rowEnd, idx(bm), [&](Value r0) {
        Value n = minI(idx(bm), sub(rowEnd, r0));
        stageRowBlock(r0, n, /*scaled=*/true);
        scoreBlock(r0, n, k0, exists, kCols, vCols, idx(0), /*fused=*/false);
        keyGradsBlock(r0, n, dk, dv, idx(0));
      });
    });
    writeKeyGrads(k0, nk, dk, dv, idx(0));
    if (pos)
      memref::DeallocOp::create(b, pos);
    pos = nullptr;
  });
}

void BackwardEmitter::fusedItem(Value item) {
  kvHead = arith::RemSIOp::create(b, item, idx(spec.kvHeads));
  batch = arith::DivSIOp::create(b, item, idx(spec.kvHeads));
  loadSequence();
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    stagePositions();
  Value numBlocks = arith::CeilDivSIOp::create(b, sk, idx(bn));
  auto heap = [&](Type t, int64_t rowsPerBlock, int64_t cols) -> Value {
    auto type = MemRefType::get({ShapedType::kDynamic, cols}, t);
    return memref::AllocOp::create(
        b, type, ValueRange{mul(numBlocks, idx(rowsPerBlock))},
        b.getI64IntegerAttr(64));
  };
  // The kv head's keys staged once, block after block, as the two-pass
  // items stage one block: K^T, V^T [D][BN] (pairs K^T2, V^T2 [D/2][2 BN]
  // and Kp [BN/2][2 D]; 16-bit inputs without pairs their K rows widened
  // [BN][D]). The key blocks' dK, dV (pairs [BN][D], else [D][BN]), and a
  // row block's P and dS against every key block [BM][BN].
  const int64_t colRows = pairs ? d / 2 : d;
  Value kCols = heap(pairs ? elt : f32, colRows, pairs ? 2 * bn : bn);
  Value vCols = heap(pairs ? elt : f32, colRows, pairs ? 2 * bn : bn);
  Value kPairs = pairs ? heap(elt, bn / 2, 2 * d) : Value();
  Value kWide = kRows ? heap(f32, bn, d) : Value();
  const int64_t accRows = pairs ? bn : d;
  Value dkAll = heap(f32, accRows, pairs ? d : bn);
  Value dvAll = heap(f32, accRows, pairs ? d : bn);
  Value pStore = heap(f32, bm, bn), dsStore = heap(f32, bm, bn);
  zeroRows(dkAll, mul(numBlocks, idx(accRows)), pairs ? d : bn);
  zeroRows(dvAll, mul(numBlocks, idx(accRows)), pairs ? d : bn);
  forLoop(idx(0), numBlocks, idx(1), [&](Value kb) {
    Value k0 = mul(kb, idx(bn));
    Value nk = minI(idx(bn), sub(sk, k0));
    Value lastKey = sub(add(k0, nk), idx(1));
    stageKeyColumns(k0, nk, kCols, vCols, mul(kb, idx(colRows)));
    if (kPairs)
      stageRowPairs(
          nk, d, kPairs,
          [&](Value n, Value c) { return vecAt(io.k, kvIndex(add(k0, n), c)); },
          mul(kb, idx(bn / 2)));
    if (kWide)
      widenRows(
          io.k, kWide, bn, [&](Value n) { return minI(add(k0, n), lastKey); },
          [&](Value row, Value c) { return kvIndex(row, c); },
          mul(kb, idx(bn)));
  });

  forLoop(idx(0), idx(group), idx(1), [&](Value g) {
    head = add(mul(kvHead, idx(group)), g);
    slope2 = spec.hasAlibi() ? slopeLog2() : Value();
    vector::StoreOp::create(b, splat(0.0), dslopeAcc, ValueRange{idx(0)});
    forLoop(idx(0), sq, idx(bm), [&](Value r0) {
      Value rows = minI(idx(bm), sub(sq, r0));
      // Key blocks any row of the block may see.
      auto [kBegin, kEnd] = keyRange(r0, rows);
      Value kbBegin = arith::DivSIOp::create(b, kBegin, idx(bn));
      Value kbEnd = arith::CeilDivSIOp::create(b, kEnd, idx(bn));
      stageRowBlock(r0, rows, /*scaled=*/false);
      zero(dqAcc, bm, d);
      for (Value ref : {rowP, rowDs, rowPd, rowDsd})
        for (int64_t c = 0; ref && c < bm; c += vl)
          vector::StoreOp::create(b, splat(0.0), ref, ValueRange{idx(c)});
      auto stored = [&](Value kb, Value m) {
        return add(mul(sub(kb, kbBegin), idx(bm)), m);
      };
      // The walk: S, dP, P, dS (kept), dQ += dS . K and the rows' sums.
      forLoop(kbBegin, kbEnd, idx(1), [&](Value kb) {
        Value k0 = mul(kb, idx(bn));
        Value nk = minI(idx(bn), sub(sk, k0));
        scoreBlock(r0, rows, k0, keyLanes(k0, nk), kCols, vCols,
                   mul(kb, idx(colRows)), /*fused=*/true);
        forLoop(idx(0), rows, idx(1), [&](Value m) {
          for (int64_t c = 0; c < bn; c += vl)
            for (auto [from, to] :
                 {std::pair<Value, Value>{pBlk, pStore}, {dsBlk, dsStore}})
              vector::StoreOp::create(
                  b,
                  vector::LoadOp::create(b, vecF32, from,
                                         ValueRange{m, idx(c)}),
                  to, ValueRange{stored(kb, m), idx(c)});
        });
        if (pairs) {
          VectorType half = VectorType::get({vl}, elt);
          forLoop(idx(0), idx(bm), idx(1), [&](Value m) {
            for (int64_t c = 0; c < bn; c += vl) {
              Value x = vector::LoadOp::create(b, vecF32, dsBlk,
                                               ValueRange{m, idx(c)});
              vector::StoreOp::create(b, arith::TruncFOp::create(b, half, x),
                                      dsNat, ValueRange{m, idx(c)});
            }
          });
          Value kp0 = mul(kb, idx(bn / 2));
          matmul(
              dqAcc, bm, d, pairCount(nk),
              [&](Value m, Value np) {
                return broadcastBf16Pair(dsNat, ValueRange{m, mul(np, idx(2))});
              },
              [&](Value np, Value c0) {
                return pairsAt(kPairs, add(kp0, np), c0);
              });
          return;
        }
        Value kr0 = mul(kb, idx(bn));
        matmul(
            dqAcc, bm, d, nk,
            [&](Value m, Value j) {
              return memref::LoadOp::create(b, dsBlk, ValueRange{m, j})
                  .getResult();
            },
            [&](Value j, Value c0) {
              return kWide ? vector::LoadOp::create(b, vecF32, kWide,
                                                    ValueRange{add(kr0, j), c0})
                                 .getResult()
                           : vecF32At(io.k, kvIndex(add(k0, j), c0));
            });
      });
      // r = 1 / sum(P), dq and the slope gradient's rows as the dq items
      // finish them; then dK and dV from the kept P and dS, times r.
      finishRows(r0, rows, dqAcc, idx(0));
      forLoop(kbBegin, kbEnd, idx(1), [&](Value kb) {
        forLoop(idx(0), rows, idx(1), [&](Value m) {
          Value r = bcast(memref::LoadOp::create(b, rowR, ValueRange{m}));
          for (int64_t c = 0; c < bn; c += vl)
            for (auto [from, to] :
                 {std::pair<Value, Value>{pStore, pBlk}, {dsStore, dsBlk}})
              vector::StoreOp::create(
                  b,
                  arith::MulFOp::create(
                      b,
                      vector::LoadOp::create(b, vecF32, from,
                                             ValueRange{stored(kb, m), idx(c)}),
                      r),
                  to, ValueRange{m, idx(c)});
        });
        keyGradsBlock(r0, rows, dkAll, dvAll, mul(kb, idx(accRows)));
      });
    });
    writeDslopes();
  });
  forLoop(idx(0), numBlocks, idx(1), [&](Value kb) {
    Value k0 = mul(kb, idx(bn));
    writeKeyGrads(k0, minI(idx(bn), sub(sk, k0)), dkAll, dvAll,
                  mul(kb, idx(accRows)));
  });
  for (Value buffer :
       {kCols, vCols, kPairs, kWide, dkAll, dvAll, pStore, dsStore, pos})
    if (buffer)
      memref::DeallocOp::create(b, buffer);
  pos = nullptr;
}

void BackwardEmitter::queryHeadItem(Value item) {
  head = arith::RemSIOp::create(b, item, idx(spec.heads));
  batch = arith::DivSIOp::create(b, item, idx(spec.heads));
  kvHead = arith::DivSIOp::create(b, head, idx(group));
  loadSequence();
  slope2 = spec.hasAlibi() ? slopeLog2() : Value();
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    stagePositions();
  vector::StoreOp::create(b, splat(0.0), dslopeAcc, ValueRange{idx(0)});
  Value lanes = iota();
  Value lastKey = sub(sk, idx(1));
  VectorType vecI1 = VectorType::get({vl}, b.getI1Type());

  forLoop(idx(0), sq, idx(bm), [&](Value r0) {
    Value rows = minI(idx(bm), sub(sq, r0));
    stageRowState(r0, rows, /*scaled=*/false);
    // Q^T and dO^T of the rows (pairs: Q^T2, dO^T2), zero past them; dQ
    // starts at zero.
    if (pairs) {
      auto rowOf = [&](Value m) {
        return minI(add(r0, m), sub(add(r0, rows), idx(1)));
      };
      auto qIdx = [&](Value row, Value c) { return qIndex(row, c); };
      stageColumnPairs(io.q, qT2, bm, rows, rowOf, qIdx);
      stageColumnPairs(op.getGradO(), doT2, bm, rows, rowOf, qIdx);
    } else
      forLoop(idx(0), idx(bm), idx(1), [&](Value m) {
        Value in = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, m, rows);
        Value row = minI(add(r0, m), sub(add(r0, rows), idx(1)));
        forLoop(idx(0), idx(d), idx(1), [&](Value c) {
          for (auto [src, dst] :
               {std::pair<Value, Value>{io.q, qT}, {op.getGradO(), doT}}) {
            Value x = arith::SelectOp::create(
                b, in, scalarF32(src, qIndex(row, c)), f32c(0.0));
            memref::StoreOp::create(b, x, dst, ValueRange{c, m});
          }
        });
      });
    zero(dqAcc, bm, d);
    for (Value ref : {rowP, rowDs, rowPd, rowDsd})
      for (int64_t c = 0; ref && c < bm; c += vl)
        vector::StoreOp::create(b, splat(0.0), ref, ValueRange{idx(c)});

    auto [kBegin, kEnd] = keyRange(r0, rows);
    Value firstPos = add(r0, shift);
    forLoop(kBegin, kEnd, idx(bn), [&](Value k0) {
      Value nk = minI(idx(bn), sub(kEnd, k0));
      auto keyOf = [&](Value n) { return minI(add(k0, n), lastKey); };
      if (pairs)
        stageRowPairs(nk, d, kP, [&](Value n, Value c) {
          return vecAt(io.k, kvIndex(add(k0, n), c));
        });
      if (kRows) {
        auto kvIdx = [&](Value row, Value c) { return kvIndex(row, c); };
        widenRows(io.k, kRows, bn, keyOf, kvIdx);
        widenRows(io.v, vRows, bn, keyOf, kvIdx);
      }
      // S^T = K . Q^T, dP^T = V . dO^T: vectors along the rows.
      zero(pT, bn, bm);
      zero(dsT, bn, bm);
      auto kRow = [&](Value n, Value c) { return kvIndex(keyOf(n), c); };
      matmulOverD(pT, bn, bm, io.k, kRows, kRow, pairs ? qT2 : qT);
      matmulOverD(dsT, bn, bm, io.v, vRows, kRow, pairs ? doT2 : doT);
      // P^T, dS^T in place, and the slope gradient.
      forLoop(idx(0), nk, idx(1), [&](Value n) {
        Value j = add(k0, n);
        Value on = io.kpm ? keyVisible(j) : Value();
        Value posJ = spec.bias == ::tilt::BiasKind::AlibiPositions
                         ? memref::LoadOp::create(b, pos, ValueRange{j})
                         : Value();
        for (int64_t c = 0; c < bm; c += vl) {
          // j - i' of rows c.., exact in f32.
          Value jrel = arith::SubFOp::create(
              b, bcast(indexToF32(sub(j, add(firstPos, idx(c))))), lanes);
          Value room = indexToF32(sub(rows, idx(c)));
          Value visible = arith::CmpFOp::create(b, arith::CmpFPredicate::OLT,
                                                lanes, bcast(room));
          if (on)
            visible = arith::AndIOp::create(
                b, visible, vector::BroadcastOp::create(b, vecI1, on));
          visible = positionMask(visible, jrel);
          Value anchor = spec.positionOffsets && spec.hasAlibi()
                             ? vector::LoadOp::create(b, vecF32, rowAnchor,
                                                      ValueRange{idx(c)})
                                   .getResult()
                             : Value();
          Value dist = distance(jrel, anchor, [&] {
            Value ref =
                vector::LoadOp::create(b, vecF32, rowRef, ValueRange{idx(c)});
            return arith::SubFOp::create(b, bcast(posJ), ref).getResult();
          });
          Value s =
              vector::LoadOp::create(b, vecF32, pT, ValueRange{n, idx(c)});
          Value dp =
              vector::LoadOp::create(b, vecF32, dsT, ValueRange{n, idx(c)});
          Value lse2 =
              vector::LoadOp::create(b, vecF32, rowLse, ValueRange{idx(c)});
          Value delta =
              vector::LoadOp::create(b, vecF32, rowDelta, ValueRange{idx(c)});
          auto [p, ds] =
              probabilities(s, dp, dist, lse2, delta, visible, Value());
          vector::StoreOp::create(b, ds, dsT, ValueRange{n, idx(c)});
          auto accumulate = [&](Value ref, Value x, Value y) {
            Value old =
                vector::LoadOp::create(b, vecF32, ref, ValueRange{idx(c)});
            Value next = y ? math::FmaOp::create(b, x, y, old).getResult()
                           : arith::AddFOp::create(b, x, old).getResult();
            vector::StoreOp::create(b, next, ref, ValueRange{idx(c)});
          };
          accumulate(rowP, p, Value());
          if (rowDs) {
            accumulate(rowDs, ds, Value());
            accumulate(rowPd, p, dist);
            accumulate(rowDsd, ds, dist);
          }
        }
      });
      // dQ += dS . K over the block's keys (pairs: dS^T2^T . Kp).
      if (pairs) {
        stageRowPairs(nk, bm, dsT2, [&](Value n, Value m) {
          return vector::LoadOp::create(b, vecF32, dsT, ValueRange{n, m})
              .getResult();
        });
        matmul(
            dqAcc, bm, d, pairCount(nk),
            [&](Value m, Value np) {
              return broadcastBf16Pair(dsT2, ValueRange{np, mul(m, idx(2))});
            },
            [&](Value np, Value c0) { return pairsAt(kP, np, c0); });
        return;
      }
      matmul(
          dqAcc, bm, d, nk,
          [&](Value m, Value n) {
            return memref::LoadOp::create(b, dsT, ValueRange{n, m}).getResult();
          },
          [&](Value n, Value c0) {
            return kRows ? vector::LoadOp::create(b, vecF32, kRows,
                                                  ValueRange{n, c0})
                               .getResult()
                         : vecF32At(io.k, kvIndex(add(k0, n), c0));
          });
    });
    finishRows(r0, rows, dqAcc, idx(0));
  });
  writeDslopes();
  if (pos)
    memref::DeallocOp::create(b, pos);
  pos = nullptr;
}

void BackwardEmitter::finishRows(Value r0, Value rows, Value dq, Value dqRow0) {
  // Per row r = 1 / sum(P) (0 for a row that saw no key), and the slope
  // gradient's rows, D_i's rounding cancelled (see the top), times r.
  Value dsl = vector::LoadOp::create(b, vecF32, dslopeAcc, ValueRange{idx(0)});
  for (int64_t c = 0; c < bm; c += vl) {
    auto at = [&](Value ref) {
      return vector::LoadOp::create(b, vecF32, ref, ValueRange{idx(c)})
          .getResult();
    };
    Value p = at(rowP);
    Value seen =
        arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, p, splat(0.0));
    Value r = arith::SelectOp::create(
        b, seen, arith::DivFOp::create(b, splat(1.0), p), splat(0.0));
    vector::StoreOp::create(b, r, rowR, ValueRange{idx(c)});
    if (!rowDs)
      continue;
    // The rows of dS sum to grad_lse (zero without it), not to 0.
    Value mean = arith::SubFOp::create(
        b, arith::MulFOp::create(b, at(rowDs), r), at(rowG));
    Value row = arith::SubFOp::create(
        b, at(rowDsd), arith::MulFOp::create(b, mean, at(rowPd)));
    dsl = math::FmaOp::create(b, row, r, dsl);
    dsl = arith::AddFOp::create(
        b, dsl, arith::SelectOp::create(b, seen, at(rowGc), splat(0.0)));
  }
  vector::StoreOp::create(b, dsl, dslopeAcc, ValueRange{idx(0)});
  // dq = scale * r * dQ for the rows that exist; r to row_scale for the
  // dK/dV items.
  forLoop(idx(0), rows, idx(1), [&](Value m) {
    Value r = memref::LoadOp::create(b, rowR, ValueRange{m});
    memref::StoreOp::create(b, r, op.getRowScale(), lseIndex(add(r0, m)));
    Value scale =
        bcast(arith::MulFOp::create(b, r, f32c(spec.effectiveScale())));
    for (int64_t c = 0; c < d; c += vl) {
      Value x = arith::MulFOp::create(
          b,
          vector::LoadOp::create(b, vecF32, dq,
                                 ValueRange{add(dqRow0, m), idx(c)}),
          scale);
      vector::StoreOp::create(b, fromF32(x), op.getDqOut(),
                              qIndex(add(r0, m), idx(c)));
    }
  });
}

void BackwardEmitter::writeDslopes() {
  if (Value out = op.getDslopesOut()) {
    Value total = vector::ReductionOp::create(
        b, vector::CombiningKind::ADD,
        vector::LoadOp::create(b, vecF32, dslopeAcc, ValueRange{idx(0)}));
    memref::StoreOp::create(b, total, out, ValueRange{batch, head});
  }
}
