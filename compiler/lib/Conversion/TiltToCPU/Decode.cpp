//===- Decode.cpp - The decode family: cpu_decode_avx2, cpu_decode_avx512 -===//
//
// Few query rows against many keys (decode, speculative and chunked steps).
// The prefill kernels vectorize across query rows and give each query head
// its own work item, so at Sq = 1 they use one lane in 8 or 16 and read a
// kv head's K/V once per query head of its group. Here one work item is one
// (batch, kv head): its rows are every query head of the GQA group times
// every query (heads/kv heads x Sq), up to block_m of them at a time, and
// each key block is read once for all of them:
//
//   rows r: head = kvHead * G + r / Sq, query i = r % Sq (q staged f32,
//           pre-scaled by scale * log2 e, with the row's slope and i')
//   for each span of keys that fits in L2 (~128 KiB of K and V):
//     for each row:
//       for each block of block_n keys of the span:
//         s[t] = q_r . K[t]   vectors along D, vl keys at a time, the vl dot
//                             products summed across lanes by a shuffle tree
//         s += bias; mask; m' = max(m, max_t s); p = exp2(s - m')
//         l = l * exp2(m - m') + sum_t p
//         acc_r = acc_r * exp2(m - m') + sum_t p[t] * V[t] (vectors along D)
//   o = acc / l;  lse = (m + log2 l) * ln 2
//
// K and V come from memory once per span (the first row) and from L2 for
// the group's other rows. The key blocks are the innermost loop on purpose:
// with the rows innermost, every K/V load of a block would be invariant in
// the row loop, and LLVM hoists all of them out of it (hundreds of widened
// vectors, spilled). Keys past the visible range read the last key instead
// and are masked, so no load leaves the tensor. 16-bit K and V are widened
// in registers.
//
// A paged KV cache (k/v [num_pages, page_size, Hkv, D]) changes only where
// key t lives: page block_table[b, t / page_size], slot t % page_size. When
// page_size is a multiple of block_n and blocks start on multiples of
// block_n (no window), a block lies in one page: one table read per block.
// Else each key reads its own entry. Only keys < context_lens[b] are
// addressed (the tail block clamps to the last one), so table entries past
// a sequence's used pages are never read.
//
//===----------------------------------------------------------------------===//

#include "CpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"

#include "llvm/Support/MathExtras.h"

#include <cmath>

using namespace mlir;
using namespace mlir::tilt;

namespace {

class DecodeEmitter final : public CpuKernelBuilder {
public:
  DecodeEmitter(AttentionOp op, ImplicitLocOpBuilder &b)
      : CpuKernelBuilder(
            op, op.getSpec(), op.getConfigAttr(), operandsOf(op), b,
            op.getConfigAttr().getVariant() == KernelVariant::cpu_decode_avx2
                ? 8
                : 16),
        op(op), group(spec.heads / spec.kvHeads) {}

  LogicalResult emit() override;

private:
  AttentionOp op;
  void emitItem(Value item);
  /// Rows [r0, r0 + n) of the item: q staged, slopes, positions, state.
  void stageRows(Value r0, Value n);
  /// Row `rr` against the keys [kb, kb + block_n) (those < kEnd exist).
  void rowBlock(Value rr, Value kb, Value kEnd);
  /// Paged: prefetches the K/V rows of the keys a fixed distance ahead.
  void prefetchAhead(Value rr, Value kb);
  void rowBlockBody(Value rr, Value kb, Value kEnd, bool clamp);
  void finalizeRows(Value r0, Value n);
  /// Sets head and returns the query index of row r of the item.
  Value rowGeometry(Value r);
  /// The scores of row `rr` against keys `rows` (vl of them): one vector.
  Value scores(Value rr, ArrayRef<SmallVector<Value>> keys);
  /// The k/v indices of key `t`, without the column: {batch, kv head, t},
  /// {seqK0 + t, kv head} (varlen) or {page, slot, kv head} (paged; `page`
  /// is the block's page when it lies in one, else null).
  SmallVector<Value> keyIndex(Value t, Value page);
  /// The cache page holding key `t` (paged).
  Value pageOf(Value t) {
    Value entry = arith::ShRUIOp::create(
        b, t, idx(llvm::Log2_64(static_cast<uint64_t>(spec.pageSize))));
    Value id =
        memref::LoadOp::create(b, io.blockTable, ValueRange{batch, entry});
    return arith::IndexCastOp::create(b, b.getIndexType(), id);
  }
  /// Lane j of the result is the sum of the lanes of xs[j] (xs.size() == vl).
  Value sumAcrossLanes(SmallVector<Value> xs);
  Value loadKey(Value tensor, ArrayRef<Value> key, Value col) {
    SmallVector<Value> index(key);
    index.push_back(col);
    return loadRow(tensor, index);
  }
  Value loadRow(Value tensor, SmallVector<Value> index) {
    Value v =
        vector::LoadOp::create(b, VectorType::get({vl}, elt), tensor, index);
    return toF32(v);
  }
  Value iota() {
    SmallVector<float> lanes;
    for (int64_t l = 0; l < vl; ++l)
      lanes.push_back(float(l));
    return arith::ConstantOp::create(
        b, DenseElementsAttr::get(vecF32, ArrayRef<float>(lanes)));
  }

  int64_t group;
  // Scratch per call: q rows [BM][D] (scaled), accumulators [BM][D], per-row
  // m, l, slope (log2 units), i' (index) and anchor.
  Value qs, acc, mRow, lRow, slopeRow, ipRow, anchorRow;
};

} // namespace

std::unique_ptr<CpuKernelBuilder>
mlir::tilt::makeDecodeEmitter(AttentionOp op, ImplicitLocOpBuilder &b) {
  return std::make_unique<DecodeEmitter>(op, b);
}

LogicalResult DecodeEmitter::emit() {
  if (d % vl != 0 || bn % vl != 0)
    return op.emitOpError("the decode kernels need head dim and block_n "
                          "multiples of the vector length ")
           << vl;
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    return op.emitOpError("the decode kernels do not take bias "
                          "alibi_positions; use cpu_avx2 or cpu_avx512");
  qs = scratch({bm, d}, f32);
  acc = scratch({bm, d}, f32);
  mRow = scratch({bm}, f32);
  lRow = scratch({bm}, f32);
  slopeRow = scratch({bm}, f32);
  ipRow = scratch({bm}, b.getIndexType());
  if (spec.positionOffsets && spec.hasAlibi())
    anchorRow = scratch({bm}, f32);
  forLoop(op.getItemBegin(), op.getItemEnd(), idx(1),
          [&](Value item) { emitItem(item); });
  return success();
}

void DecodeEmitter::emitItem(Value item) {
  // Item = (batch, kv head).
  kvHead = arith::RemSIOp::create(b, item, idx(spec.kvHeads));
  batch = arith::DivSIOp::create(b, item, idx(spec.kvHeads));
  loadSequence();
  // Keys any row may see: i' runs over [shift, shift + Sq).
  Value kBegin = idx(0), kEnd = sk;
  if (spec.causal)
    kEnd = maxI(idx(0), minI(sk, add(shift, sq)));
  if (spec.window)
    kBegin = maxI(idx(0), add(sub(shift, idx(*spec.window)), idx(1)));
  kBegin = minI(kBegin, kEnd);

  // Keys per span: ~128 KiB of K and V, whole blocks.
  const int64_t keyBytes = 2 * d * ::tilt::byteWidth(spec.dtype);
  const int64_t span = std::max<int64_t>(bn, (128 * 1024 / keyBytes) / bn * bn);
  Value totalRows = mul(sq, idx(group));
  forLoop(idx(0), totalRows, idx(bm), [&](Value r0) {
    Value n = minI(idx(bm), sub(totalRows, r0));
    stageRows(r0, n);
    forLoop(kBegin, kEnd, idx(span), [&](Value s0) {
      Value s1 = minI(kEnd, add(s0, idx(span)));
      forLoop(idx(0), n, idx(1), [&](Value rr) {
        forLoop(s0, s1, idx(bn), [&](Value kb) { rowBlock(rr, kb, kEnd); });
      });
    });
    finalizeRows(r0, n);
  });
}

Value DecodeEmitter::rowGeometry(Value r) {
  Value g = arith::DivSIOp::create(b, r, sq);
  head = add(mul(kvHead, idx(group)), g);
  return arith::RemSIOp::create(b, r, sq);
}

void DecodeEmitter::stageRows(Value r0, Value n) {
  Value scale = splat(spec.effectiveScale() * kLog2E);
  forLoop(idx(0), n, idx(1), [&](Value rr) {
    Value i = rowGeometry(add(r0, rr));
    for (int64_t c = 0; c < d; c += vl) {
      Value q = loadRow(op.getQ(), qIndex(i, idx(c)));
      vector::StoreOp::create(b, arith::MulFOp::create(b, q, scale), qs,
                              ValueRange{rr, idx(c)});
      vector::StoreOp::create(b, splat(0.0), acc, ValueRange{rr, idx(c)});
    }
    memref::StoreOp::create(b, f32c(-INFINITY), mRow, ValueRange{rr});
    memref::StoreOp::create(b, f32c(0.0), lRow, ValueRange{rr});
    if (spec.hasAlibi())
      memref::StoreOp::create(b, slopeLog2(), slopeRow, ValueRange{rr});
    Value ip = add(i, shift);
    memref::StoreOp::create(b, ip, ipRow, ValueRange{rr});
    if (anchorRow) {
      // As in the prefill kernels (CpuEmitter::stageAnchors).
      Value nearest = maxI(idx(0), minI(ip, sub(sk, idx(1))));
      memref::StoreOp::create(b, indexToF32(sub(nearest, ip)), anchorRow,
                              ValueRange{rr});
    }
  });
}

Value DecodeEmitter::sumAcrossLanes(SmallVector<Value> xs) {
  // Pairs of vectors are summed through shuffles that stay inside 128-bit
  // blocks (vshufps) for two levels, then move whole blocks
  // (vperm2f128/vshuff32x4): lane order comes out natural.
  auto pairSum = [&](Value x, Value y, bool blocks, int parity) {
    SmallVector<int64_t> mask;
    if (!blocks) {
      for (int64_t blk = 0; blk < vl / 4; ++blk)
        for (int64_t src : {int64_t(0), vl})
          for (int64_t e : {0, 2})
            mask.push_back(src + 4 * blk + e + parity);
    } else {
      for (int64_t src : {int64_t(0), vl})
        for (int64_t blk = parity; blk < vl / 4; blk += 2)
          for (int64_t e = 0; e < 4; ++e)
            mask.push_back(src + 4 * blk + e);
    }
    return vector::ShuffleOp::create(b, x, y, mask).getResult();
  };
  int level = 0;
  while (xs.size() > 1) {
    const bool blocks = level >= 2;
    SmallVector<Value> next;
    for (size_t k = 0; k < xs.size(); k += 2)
      next.push_back(
          arith::AddFOp::create(b, pairSum(xs[k], xs[k + 1], blocks, 0),
                                pairSum(xs[k], xs[k + 1], blocks, 1)));
    xs = std::move(next);
    ++level;
  }
  return xs.front();
}

SmallVector<Value> DecodeEmitter::keyIndex(Value t, Value page) {
  if (!io.blockTable)
    return spec.varlen ? SmallVector<Value>{add(seqK0, t), kvHead}
                       : SmallVector<Value>{batch, kvHead, t};
  Value slot = arith::AndIOp::create(b, t, idx(spec.pageSize - 1));
  return {page ? page : pageOf(t), slot, kvHead};
}

Value DecodeEmitter::scores(Value rr, ArrayRef<SmallVector<Value>> keys) {
  // One accumulator per key, vectors along D; each q chunk is loaded once
  // and used by every key: vl accumulators + 2 registers live. A loop along
  // D, two chunks a step, not copies: the unrolled form made the kernel
  // ~4000 instructions and its JIT compile ~800 ms.
  const int64_t per = vectorsPerStep(2);
  SmallVector<Value> init(keys.size(), splat(0.0));
  auto loop = scf::ForOp::create(
      b, idx(0), idx(d), idx(per * vl), init,
      [&](OpBuilder &, Location, Value c0, ValueRange accs) {
        SmallVector<Value> next(accs.begin(), accs.end());
        for (int64_t c = 0; c < per; ++c) {
          Value col = add(c0, idx(c * vl));
          Value q = vector::LoadOp::create(b, vecF32, qs, ValueRange{rr, col});
          for (size_t t = 0; t < keys.size(); ++t)
            next[t] = vector::FMAOp::create(
                b, q, loadKey(op.getK(), keys[t], col), next[t]);
        }
        scf::YieldOp::create(b, next);
      });
  return sumAcrossLanes(SmallVector<Value>(loop.getResults()));
}

void DecodeEmitter::prefetchAhead(Value rr, Value kb) {
  // Paged caches only: their keys sit a token row (Hkv x D) apart, a new
  // 4 KiB page per key when Hkv x D x bytes >= 4 KiB, and hardware
  // prefetchers stop at page boundaries. The first row of a row block asks
  // for every line of the K and V rows kPagedPrefetchKeys keys ahead (the
  // group's other rows find them cached). Keys clamp to the sequence's
  // last, so the table is read only where it is used. Measured on Zen 3,
  // bf16 D 128, B 4, Sk 8192, 16-token pages: 80 -> 60 ms (MHA), 34 -> 28
  // ms (GQA 4:1), medians of four runs each; no gain on contiguous caches.
  if (!io.blockTable)
    return;
  constexpr int64_t kPagedPrefetchKeys = 64;
  const int64_t perLine = 64 / ::tilt::byteWidth(spec.dtype);
  Value first = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, rr, idx(0));
  ifThen(first, [&] {
    // A loop over the block's keys: unrolled, the table reads and
    // prefetches of 16 keys were a third of a paged kernel's code.
    Value last = sub(sk, idx(1));
    forLoop(idx(0), idx(bn), idx(1), [&](Value t) {
      SmallVector<Value> key = keyIndex(
          minI(add(add(kb, idx(kPagedPrefetchKeys)), t), last), Value());
      for (Value tensor : {op.getK(), op.getV()})
        for (int64_t c = 0; c < d; c += perLine) {
          SmallVector<Value> index(key);
          index.push_back(idx(c));
          memref::PrefetchOp::create(b, tensor, index, /*isWrite=*/false,
                                     /*localityHint=*/3, /*isDataCache=*/true);
        }
    });
  });
}

void DecodeEmitter::rowBlock(Value rr, Value kb, Value kEnd) {
  prefetchAhead(rr, kb);
  // Blocks inside the sequence address their keys from one base; only the
  // last, partial block clamps each key (16 more live scalars otherwise).
  Value inside =
      arith::CmpIOp::create(b, arith::CmpIPredicate::sle, add(kb, idx(bn)), sk);
  scf::IfOp::create(
      b, inside,
      [&](OpBuilder &, Location) {
        rowBlockBody(rr, kb, kEnd, /*clamp=*/false);
        scf::YieldOp::create(b);
      },
      [&](OpBuilder &, Location) {
        rowBlockBody(rr, kb, kEnd, /*clamp=*/true);
        scf::YieldOp::create(b);
      });
}

void DecodeEmitter::rowBlockBody(Value rr, Value kb, Value kEnd, bool clamp) {
  const int64_t nv = bn / vl;
  // The block's key rows, clamped into the sequence when the block runs
  // past it (those keys are masked), and per score vector the keys that
  // exist: j < kEnd, kpm[j] != 0.
  Value last = sub(sk, idx(1));
  // A paged block in one page (see the header) reads its table entry once;
  // its clamped keys lie between kb and kb + block_n, in that page too.
  Value blockPage = io.blockTable && spec.pageSize % bn == 0 && !spec.window
                        ? pageOf(kb)
                        : Value();
  SmallVector<SmallVector<Value>> keys;
  for (int64_t t = 0; t < bn; ++t)
    keys.push_back(keyIndex(
        clamp ? minI(add(kb, idx(t)), last) : add(kb, idx(t)), blockPage));
  Value lanes = iota();
  VectorType vecI1 = VectorType::get({vl}, b.getI1Type());
  SmallVector<Value> exists;
  for (int64_t c = 0; c < nv; ++c) {
    Value room = indexToF32(sub(kEnd, add(kb, idx(c * vl))));
    Value in =
        arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, lanes, bcast(room));
    if (Value kpm = op.getKeyPaddingMask()) {
      VectorType vecI8 = VectorType::get({vl}, b.getI8Type());
      Value zeros = arith::ConstantOp::create(
          b, DenseElementsAttr::get(vecI8, b.getI8IntegerAttr(0)));
      Value inRange = vector::CreateMaskOp::create(
          b, vecI1, ValueRange{maxI(idx(0), sub(sk, add(kb, idx(c * vl))))});
      Value m = vector::MaskedLoadOp::create(
          b, vecI8, kpm, ValueRange{batch, add(kb, idx(c * vl))}, inRange,
          zeros);
      in = arith::AndIOp::create(
          b, in, arith::CmpIOp::create(b, arith::CmpIPredicate::ne, m, zeros));
    }
    exists.push_back(in);
  }

  Value negInf = splat(-INFINITY);
  if (spec.hasAlibi())
    slope2 = memref::LoadOp::create(b, slopeRow, ValueRange{rr});
  Value ip = memref::LoadOp::create(b, ipRow, ValueRange{rr});
  Value anchor =
      anchorRow ? bcast(memref::LoadOp::create(b, anchorRow, ValueRange{rr}))
                : Value();
  SmallVector<Value> s;
  Value blockMax;
  for (int64_t c = 0; c < nv; ++c) {
    Value x = scores(rr, ArrayRef<SmallVector<Value>>(keys).slice(c * vl, vl));
    // j - i' of each lane, exact in f32.
    Value jrel = arith::AddFOp::create(
        b, bcast(indexToF32(sub(add(kb, idx(c * vl)), ip))), lanes);
    x = addBias(x, jrel, anchor, [] { return Value(); });
    x = arith::SelectOp::create(b, positionMask(exists[c], jrel), x, negInf);
    s.push_back(x);
    Value mx = vector::ReductionOp::create(b, vector::CombiningKind::MAXNUMF, x,
                                           arith::FastMathFlags::nnan);
    blockMax = blockMax ? maxF(blockMax, mx) : mx;
  }
  // The online softmax; a row with nothing visible yet keeps m = -inf and
  // subtracts 0 instead (no -inf - -inf).
  Value mOld = memref::LoadOp::create(b, mRow, ValueRange{rr});
  Value mNew = maxF(mOld, blockMax);
  Value empty = arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, mNew,
                                      f32c(-INFINITY));
  Value mSafe = arith::SelectOp::create(b, empty, f32c(0.0), mNew);
  Value sum = splat(0.0);
  for (Value &x : s) {
    x = exp2(arith::SubFOp::create(b, x, bcast(mSafe)));
    sum = arith::AddFOp::create(b, sum, x);
  }
  Value alphaV = exp2(bcast(arith::SubFOp::create(b, mOld, mSafe)));
  Value alpha = vector::ExtractOp::create(b, alphaV, ArrayRef<int64_t>{0});
  Value lOld = memref::LoadOp::create(b, lRow, ValueRange{rr});
  Value total = vector::ReductionOp::create(b, vector::CombiningKind::ADD, sum);
  memref::StoreOp::create(b, math::FmaOp::create(b, lOld, alpha, total), lRow,
                          ValueRange{rr});
  memref::StoreOp::create(b, mNew, mRow, ValueRange{rr});

  // acc_r = acc_r * alpha + sum_t p[t] V[t]: four D-vectors of acc at a
  // time (a loop along D), each V vector loaded once, p[t] broadcast once
  // per step.
  const int64_t per = vectorsPerStep(4);
  forLoop(idx(0), idx(d), idx(per * vl), [&](Value c0) {
    SmallVector<Value> cols, a;
    for (int64_t c = 0; c < per; ++c) {
      cols.push_back(add(c0, idx(c * vl)));
      a.push_back(arith::MulFOp::create(
          b, vector::LoadOp::create(b, vecF32, acc, ValueRange{rr, cols[c]}),
          alphaV));
    }
    for (int64_t t = 0; t < bn; ++t) {
      Value p = bcast(
          vector::ExtractOp::create(b, s[t / vl], ArrayRef<int64_t>{t % vl}));
      for (int64_t c = 0; c < per; ++c)
        a[c] = vector::FMAOp::create(b, p, loadKey(op.getV(), keys[t], cols[c]),
                                     a[c]);
    }
    for (int64_t c = 0; c < per; ++c)
      vector::StoreOp::create(b, a[c], acc, ValueRange{rr, cols[c]});
  });
}

void DecodeEmitter::finalizeRows(Value r0, Value n) {
  forLoop(idx(0), n, idx(1), [&](Value rr) {
    Value i = rowGeometry(add(r0, rr));
    Value l = memref::LoadOp::create(b, lRow, ValueRange{rr});
    Value m = memref::LoadOp::create(b, mRow, ValueRange{rr});
    writeRow(
        i, l, m,
        [&](int64_t c) {
          return vector::LoadOp::create(b, vecF32, acc, ValueRange{rr, idx(c)});
        },
        [&](Value value) {
          if (!anchorRow)
            return value;
          Value a = memref::LoadOp::create(b, anchorRow, ValueRange{rr});
          slope2 = memref::LoadOp::create(b, slopeRow, ValueRange{rr});
          return addAnchorConstant(value, a);
        });
  });
}
