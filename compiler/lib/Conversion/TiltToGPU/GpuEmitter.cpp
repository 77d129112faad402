//===- GpuEmitter.cpp - The shared part of the GPU kernel emitters --------===//
//
// Everything a GPU kernel of any variant does around its loads and its
// matrix products: the CTA's geometry, slopes, the key padding mask and
// positions, the key-block loop with the online softmax, and the epilogue.
//
// gpu_decode_sm80, the decode family's GPU variant, is the sm_80 kernel
// with other rows and another grid. A CTA owns a block of `block_m` rows of
// one (batch, kv head): the rows are every query head of the GQA group times
// every query (row r: head kvHead * G + r / Sq, query r % Sq, as in the CPU
// decode kernels), so at Sq = 1 the group's heads fill the 16 rows of an
// mma tile and share each K/V tile in shared memory. Each row has its own
// head, slope and store address; the key range is the union of the rows'
// (i' runs over the block's queries). Split-KV: grid x is (split, row
// block); split s of S takes the s-th of S runs of the range's key blocks
// and writes its normalized partial o and lse (without the row constant of
// the position-offset anchors, which split 0 writes to lse) to the f32
// parts, which the caller merges exactly; with S = 0 it writes o and lse.
// A paged cache's keys are addressed through the block table per copied
// row; only rows < context_lens[b] are addressed.
//
//===----------------------------------------------------------------------===//

#include "GpuEmitter.h"

#include "tilt/Compiler/Configs.h"
#include "tilt/Compiler/Log2Units.h"
#include "tilt/Slopes.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::tilt;

void GpuEmitter::emitGeometry() {
  Type index = b.getIndexType();
  threadIds(tid, lane, warp, g, t4);
  Value qb = gpu::BlockIdOp::create(b, index, gpu::Dimension::x);
  batch = gpu::BlockIdOp::create(b, index, gpu::Dimension::z);
  // Decode: grid (splits x row blocks, Hkv, B), rows (group head, query).
  if (decode) {
    kvHead = gpu::BlockIdOp::create(b, index, gpu::Dimension::y);
  } else {
    head = gpu::BlockIdOp::create(b, index, gpu::Dimension::y);
    kvHead = divU(head, idx(spec.heads / spec.kvHeads));
  }
  sequenceExtents(spec, q, k, cuQ, cuK, contextLens, batch, qStart, kStart, sq,
                  sk);
  // i' = i + shift relative to key 0: bottom-right, or from the offsets.
  shift = spec.positionOffsets ? sub(qOffset, kOffset) : sub(sk, sq);
  if (decode) {
    sqSafe = maxI(sq, idx(1));
    groupRows = mul(sq, idx(spec.heads / spec.kvHeads));
    Value parts = memref::DimOp::create(b, oParts, 0);
    hasSplits = lt(idx(0), parts);
    splits = maxI(idx(1), parts);
    Value rowBlocks = maxI(idx(1), divU(add(groupRows, idx(bm - 1)), idx(bm)));
    split = divU(qb, rowBlocks);
    rowStart = mul(remU(qb, rowBlocks), idx(bm));
    // The block's queries: one head's run, or (when it holds rows of two
    // heads) all of them.
    Value live = minI(idx(bm), sub(groupRows, rowStart));
    Value last = maxI(rowStart, sub(add(rowStart, live), idx(1)));
    Value oneHead = cmpI(arith::CmpIPredicate::eq, divU(rowStart, sqSafe),
                         divU(last, sqSafe));
    firstRow = add(select(oneHead, remU(rowStart, sqSafe), idx(0)), shift);
    lastRow =
        add(select(oneHead, remU(last, sqSafe), sub(sqSafe, idx(1))), shift);
  } else {
    rowStart = mul(qb, idx(bm));
    Value live = minI(idx(bm), sub(sq, rowStart));
    firstRow = add(rowStart, shift);
    lastRow = add(firstRow, sub(live, idx(1)));
  }
  // Visible keys [kBegin, kEnd) of the whole block.
  Value kBegin = idx(0), kEnd = sk;
  if (spec.causal)
    kEnd = minI(kEnd, add(lastRow, idx(1)));
  if (spec.window)
    kBegin = maxI(kBegin, add(sub(firstRow, idx(*spec.window)), idx(1)));
  kEnd = maxI(kEnd, kBegin);
  kbBegin = divU(kBegin, idx(bn));
  kbEnd = divU(add(kEnd, idx(bn - 1)), idx(bn));
  kbEnd = select(lt(kBegin, kEnd), kbEnd, kbBegin);
  if (decode) {
    // Split s: the s-th of S runs of whole key blocks (the last ones may
    // be short or empty), so no key is in two splits.
    Value per = divU(add(sub(kbEnd, kbBegin), sub(splits, idx(1))), splits);
    Value first = minI(kbEnd, add(kbBegin, mul(split, per)));
    kbEnd = minI(kbEnd, add(first, per));
    kbBegin = first;
  }
  scale2 = f32c(spec.effectiveScale() * kLog2E);
}

Value GpuEmitter::slope2(Value h) { return slopeLog2(spec, slopes, batch, h); }

Value GpuBuilder::countValidKeys(const KeyCounter &c, Value kpm, Value batch,
                                 Value limit) {
  auto loop = scf::ForOp::create(
      b, c.tid, limit, idx(c.threads), ValueRange{i32c(0)},
      [&](OpBuilder &, Location, Value j, ValueRange acc) {
        Value m = memref::LoadOp::create(b, kpm, ValueRange{batch, j});
        Value on = arith::ExtUIOp::create(
            b, i32,
            cmpI(arith::CmpIPredicate::ne, m,
                 arith::ConstantOp::create(b, b.getI8IntegerAttr(0))));
        scf::YieldOp::create(b,
                             ValueRange{arith::AddIOp::create(b, acc[0], on)});
      });
  Value mine = loop.getResult(0);
  for (int32_t off : {16, 8, 4, 2, 1})
    mine = arith::AddIOp::create(
        b, mine,
        gpu::ShuffleOp::create(b, mine, off, 32, gpu::ShuffleMode::XOR)
            .getShuffleResult());
  ifThen(cmpI(arith::CmpIPredicate::eq, c.lane, idx(0)), [&] {
    memref::StoreOp::create(b, mine, c.counts, ValueRange{c.warp});
  });
  barrier();
  Value total = i32c(0);
  for (int64_t w = 0; w < c.warps; ++w)
    total = arith::AddIOp::create(
        b, total, memref::LoadOp::create(b, c.counts, ValueRange{idx(w)}));
  barrier();
  return total;
}

std::pair<SmallVector<Value>, Value>
GpuBuilder::countBlockKeys(const KeyCounter &c, ArrayRef<Value> valid) {
  // A ballot per warp and chunk; slot chunk * warps + warp holds the
  // warp's count, and the slots before a thread's, in key order, precede
  // its key, as do the lanes below it in its ballot.
  const int64_t chunks = int64_t(valid.size());
  SmallVector<Value> ballots;
  for (int64_t k = 0; k < chunks; ++k) {
    Value ballot = NVVM::VoteSyncOp::create(b, i32, i32c(-1), valid[k],
                                            NVVM::VoteSyncKind::ballot);
    ballots.push_back(ballot);
    ifThen(cmpI(arith::CmpIPredicate::eq, c.lane, idx(0)), [&] {
      memref::StoreOp::create(b, LLVM::CtPopOp::create(b, ballot), c.counts,
                              ValueRange{add(c.warp, idx(k * c.warps))});
    });
  }
  barrier();
  Value below = arith::SubIOp::create(
      b,
      arith::ShLIOp::create(b, i32c(1),
                            arith::IndexCastOp::create(b, i32, c.lane)),
      i32c(1));
  Value total = i32c(0);
  SmallVector<Value> before;
  for (int64_t k = 0; k < chunks; ++k)
    before.push_back(
        LLVM::CtPopOp::create(b, arith::AndIOp::create(b, ballots[k], below)));
  for (int64_t slot = 0; slot < chunks * c.warps; ++slot) {
    Value n = memref::LoadOp::create(b, c.counts, ValueRange{idx(slot)});
    for (int64_t k = 0; k < chunks; ++k) {
      Value mine = add(c.warp, idx(k * c.warps));
      before[k] = arith::AddIOp::create(
          b, before[k],
          arith::SelectOp::create(
              b, cmpI(arith::CmpIPredicate::slt, idx(slot), mine), n, i32c(0)));
    }
    total = arith::AddIOp::create(b, total, n);
  }
  return {before, total};
}

Value GpuBuilder::slopeLog2(const ::tilt::AttentionSpec &spec, Value slopes,
                            Value batch, Value h) {
  if (!spec.hasAlibi())
    return f32c(0.0);
  if (slopes) {
    Value s = memref::LoadOp::create(b, slopes, ValueRange{batch, h});
    return fmul(s, f32c(kLog2E));
  }
  // Standard slopes of this rank's heads: a select chain over the (static)
  // head count, evaluated once per CTA (decode: once per row).
  std::vector<float> table = ::tilt::standardSlopes(spec);
  Value s = f32c(double(table.back()) * kLog2E);
  for (int64_t i = int64_t(table.size()) - 2; i >= 0; --i)
    s = select(cmpI(arith::CmpIPredicate::eq, h, idx(i)),
               f32c(double(table[i]) * kLog2E), s);
  return s;
}

GpuEmitter::Row GpuEmitter::row(int64_t mi, int64_t r) {
  if (decode)
    return decodeRows[size_t(mi * 2 + r)];
  Value rowIdx =
      add(add(rowStart, mul(warp, idx(16 * mt))), add(idx(16 * mi + 8 * r), g));
  return {add(rowIdx, shift), slope, head, rowIdx, lt(rowIdx, sq)};
}

void GpuEmitter::stageDecodeRows() {
  const int64_t group = spec.heads / spec.kvHeads;
  for (int64_t mi = 0; mi < mt; ++mi)
    for (int64_t r = 0; r < 2; ++r) {
      Value gr = add(add(rowStart, mul(warp, idx(16 * mt))),
                     add(idx(16 * mi + 8 * r), g));
      Value safe = minI(gr, maxI(sub(groupRows, idx(1)), idx(0)));
      Value h = add(mul(kvHead, idx(group)), divU(safe, sqSafe));
      Value query = remU(safe, sqSafe);
      decodeRows.push_back(
          {add(query, shift), slope2(h), h, query, lt(gr, groupRows)});
    }
}

std::pair<SmallVector<Value>, Value> GpuEmitter::decodeQIndex(Value r,
                                                              Value col) {
  Value safe = minI(r, maxI(sub(groupRows, idx(1)), idx(0)));
  Value h =
      add(mul(kvHead, idx(spec.heads / spec.kvHeads)), divU(safe, sqSafe));
  return {{batch, h, remU(safe, sqSafe), col}, lt(r, groupRows)};
}

SmallVector<Value> GpuEmitter::pagedKeyIndex(Value t) {
  const int64_t page = spec.pageSize;
  Value entry = toIndex(memref::LoadOp::create(
      b, blockTable, ValueRange{batch, divU(t, idx(page))}));
  return {entry, remU(t, idx(page)), kvHead};
}

/// Positions / key padding: per key of block kb, the additive term of its
/// score column (f32 in shared memory): -inf for padded keys and keys past
/// the sequence, else slope * (valid keys before it, counted from the first
/// visible block) for the positions form, 0 otherwise. Also returns the
/// block's count of valid keys. Every thread of the CTA takes part.
void GpuEmitter::stageKeyMask(Value kb, Value base, Value &blockCount) {
  const int64_t chunks = (bn + threads - 1) / threads;
  Value keyBase = mul(kb, idx(bn));
  SmallVector<Value> valid(chunks);
  for (int64_t c = 0; c < chunks; ++c) {
    Value t = add(tid, idx(c * threads));
    Value j = add(keyBase, t);
    Value inRange = andB(lt(t, idx(bn)), lt(j, sk));
    Value safeJ = minI(j, maxI(sub(sk, idx(1)), idx(0)));
    Value m = memref::LoadOp::create(b, kpm, ValueRange{batch, safeJ});
    Value on = cmpI(arith::CmpIPredicate::ne, m,
                    arith::ConstantOp::create(b, b.getI8IntegerAttr(0)));
    valid[c] = andB(inRange, on);
  }
  auto [before, total] = countBlockKeys(keyCounter(), valid);
  Value negInf = f32c(-std::numeric_limits<double>::infinity());
  for (int64_t c = 0; c < chunks; ++c) {
    Value t = add(tid, idx(c * threads));
    Value value = f32c(0.0);
    if (spec.bias == ::tilt::BiasKind::AlibiPositions) {
      Value count = arith::AddIOp::create(b, base, before[c]);
      value = fmul(slope, arith::SIToFPOp::create(b, f32, count));
    }
    value = select(valid[c], value, negInf);
    ifThen(lt(t, idx(bn)),
           [&] { memref::StoreOp::create(b, value, maskSmem, ValueRange{t}); });
  }
  barrier();
  blockCount = total;
}

SmallVector<Value> GpuEmitter::blockBody(Value kb, ValueRange state,
                                         bool masked) {
  // state: per m-tile: m[2], l[2], then O tiles [d/8]; then the positions
  // base (i32) when present.
  const int64_t perTile = 4 + d / 8;
  Value slot = remU(sub(kb, kbBegin), idx(stages));
  Value bufferRow = mul(slot, idx(bn));
  Value keyBase = mul(kb, idx(bn));
  Value negInf = f32c(-std::numeric_limits<double>::infinity());
  Value zero2x2 = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({2, 2}, f32),
                                b.getF32FloatAttr(0.0f)));
  SmallVector<Value> next(state.begin(), state.end());
  const bool kpmTerm = bool(kpm);

  // Column of element (nt, e) of this thread within the block: nt*8 + 2*t4 +
  // e. Its j - i' for row r: (keyBase + 2*t4 - i'(r)) + nt*8 + e.
  Value colBase = mul(t4, idx(2));
  SmallVector<Value> maskTerm; // [nt*2+e], shared across rows
  if (kpmTerm)
    for (int64_t nt = 0; nt < bn / 8; ++nt)
      for (int64_t e = 0; e < 2; ++e)
        maskTerm.push_back(memref::LoadOp::create(
            b, maskSmem, ValueRange{add(colBase, idx(nt * 8 + e))}));

  for (int64_t mi = 0; mi < mt; ++mi) {
    // S = Q K^T: bn/8 tiles of 16x8.
    SmallVector<Value> s = scores(slot, bufferRow, mi, zero2x2);

    // Scores in log2 units with bias and masks; row max.
    Value *st = &next[mi * perTile];
    SmallVector<SmallVector<Value>> val(2); // [row][nt*2+e]
    Value rowMax[2];
    for (int64_t r = 0; r < 2; ++r) {
      const Row rw = row(mi, r);
      Value ip = rw.ip, slope = rw.slope;
      Value jrel0 = sub(add(keyBase, colBase), ip);
      // The bias's distance: from the row's anchor with position offsets.
      Value jrel0F = indexToF32(anchored(jrel0, ip));
      // Per-element visibility as one 32-bit compare against a constant
      // each: j < sk <=> sk - j0 > off; j <= i' <=> -jrel0 >= off;
      // i' - j < w <=> jrel0 + w > -off.
      auto i32v = [&](Value x) {
        return arith::IndexCastOp::create(b, i32, x).getResult();
      };
      Value tailRoom, causalRoom, windowRoom;
      if (masked) {
        tailRoom = i32v(sub(sk, add(keyBase, colBase)));
        causalRoom = i32v(sub(idx(0), jrel0));
        if (spec.window)
          windowRoom = i32v(add(jrel0, idx(*spec.window)));
      }
      Value mx = st[r];
      for (int64_t nt = 0; nt < bn / 8; ++nt) {
        for (int64_t e = 0; e < 2; ++e) {
          Value x =
              vector::ExtractOp::create(b, s[nt], ArrayRef<int64_t>{r, e});
          int64_t off = nt * 8 + e;
          Value bias;
          switch (spec.bias) {
          case ::tilt::BiasKind::Alibi:
            bias = fmul(slope, fadd(jrel0F, f32c(double(off))));
            break;
          case ::tilt::BiasKind::AlibiSymmetric: {
            Value jr = fadd(jrel0F, f32c(double(off)));
            Value absJr = fmax(jr, arith::NegFOp::create(b, jr));
            bias = fmul(arith::NegFOp::create(b, slope), absJr);
          } break;
          default:
            break;
          }
          Value y = bias ? fma(x, scale2, bias) : fmul(x, scale2);
          if (kpmTerm)
            y = fadd(y, maskTerm[nt * 2 + e]);
          if (masked) {
            Value vis = cmpI(arith::CmpIPredicate::sgt, tailRoom, i32c(off));
            if (spec.causal)
              vis = andB(
                  vis, cmpI(arith::CmpIPredicate::sge, causalRoom, i32c(off)));
            if (spec.window)
              vis = andB(
                  vis, cmpI(arith::CmpIPredicate::sgt, windowRoom, i32c(-off)));
            y = select(vis, y, negInf);
          }
          val[r].push_back(y);
          mx = fmax(mx, y);
        }
      }
      mx = fmax(mx, shuffleXor(mx, 1));
      mx = fmax(mx, shuffleXor(mx, 2));
      rowMax[r] = mx;
    }

    // Online softmax: rescale, exponentiate, P as A fragments.
    Value alpha[2], mUse[2];
    for (int64_t r = 0; r < 2; ++r) {
      Value isInf = arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ,
                                          rowMax[r], negInf);
      mUse[r] = select(isInf, f32c(0.0), rowMax[r]);
      alpha[r] = exp2(fsub(st[r], mUse[r]));
      st[r] = rowMax[r];
    }
    SmallVector<Value> p(bn / 8); // vector<2x2xf32> per tile
    Value rowSum[2] = {f32c(0.0), f32c(0.0)};
    for (int64_t nt = 0; nt < bn / 8; ++nt) {
      Value tile = zero2x2;
      for (int64_t r = 0; r < 2; ++r)
        for (int64_t e = 0; e < 2; ++e) {
          Value pe = exp2(fsub(val[r][nt * 2 + e], mUse[r]));
          rowSum[r] = fadd(rowSum[r], pe);
          tile = vector::InsertOp::create(b, pe, tile, ArrayRef<int64_t>{r, e});
        }
      p[nt] = tile;
    }
    for (int64_t r = 0; r < 2; ++r)
      st[2 + r] = fma(st[2 + r], alpha[r], rowSum[r]);
    Value *acc = &st[4];
    for (int64_t dt = 0; dt < d / 8; ++dt) {
      Value scaled = acc[dt];
      for (int64_t r = 0; r < 2; ++r) {
        Value rowV = vector::ExtractOp::create(b, scaled, ArrayRef<int64_t>{r});
        Value sc =
            vector::BroadcastOp::create(b, VectorType::get({2}, f32), alpha[r]);
        scaled = vector::InsertOp::create(b, arith::MulFOp::create(b, rowV, sc),
                                          scaled, ArrayRef<int64_t>{r});
      }
      acc[dt] = scaled;
    }

    // O += P V: k-steps of 16 keys; V fragments by ldmatrix.trans, two
    // d-tiles per load (sm_90a: P through shared memory into wgmma).
    accumulatePV(slot, bufferRow, p, acc);
  }
  return next;
}

Value GpuEmitter::anchor(Value ip) {
  // As on the CPU (CpuEmitter::stageAnchors): with position offsets a row's
  // distances are taken from its nearest key position clamp(i', 0, Sk - 1),
  // so that f32 keeps the units that tell keys apart when the row lies far
  // from this chunk of keys; the constant goes back into the lse.
  if (!spec.positionOffsets || !spec.hasAlibi())
    return {};
  return sub(maxI(idx(0), minI(ip, sub(sk, idx(1)))), ip);
}

Value GpuEmitter::anchored(Value jrel, Value ip) {
  Value a = anchor(ip);
  return a ? sub(jrel, a) : jrel;
}

void GpuEmitter::emitKeyBlockLoop() {
  Value isLeader = cmpI(arith::CmpIPredicate::eq, tid, idx(0));
  loadQ(isLeader);

  // Positions: valid keys before the first visible block, so the bias is
  // taken relative to it (the lse gets the constant back).
  Value base0 = i32c(0);
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    base0 = countValidKeys(keyCounter(), kpm, batch, mul(kbBegin, idx(bn)));
  posBase0 = base0;

  // Prologue: the first key blocks in flight.
  issuePrologue();

  Value negInf = f32c(-std::numeric_limits<double>::infinity());
  Value zero2x2 = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({2, 2}, f32),
                                b.getF32FloatAttr(0.0f)));
  SmallVector<Value> init;
  for (int64_t mi = 0; mi < mt; ++mi) {
    init.append({negInf, negInf, f32c(0.0), f32c(0.0)});
    for (int64_t dt = 0; dt < d / 8; ++dt)
      init.push_back(zero2x2);
  }
  const bool counting = bool(kpm);
  if (counting)
    init.push_back(i32c(0));

  auto loop = scf::ForOp::create(
      b, kbBegin, kbEnd, idx(1), init,
      [&](OpBuilder &, Location, Value kb, ValueRange state) {
        Value ahead = add(kb, idx(stages - 1));
        awaitKeyBlock(kb, ahead, isLeader);
        SmallVector<Value> st(state.begin(), state.end());
        if (counting) {
          Value blockCount;
          stageKeyMask(kb, st.back(), blockCount);
          st.back() = arith::AddIOp::create(b, st.back(), blockCount);
        }
        // No structural mask needed when the block is whole and entirely
        // visible to every live row.
        Value keyEnd = mul(add(kb, idx(1)), idx(bn));
        Value clean = le(keyEnd, sk);
        if (spec.causal)
          clean = andB(clean, le(sub(keyEnd, idx(1)), firstRow));
        if (spec.window)
          clean = andB(clean,
                       lt(sub(lastRow, mul(kb, idx(bn))), idx(*spec.window)));
        SmallVector<Type> types;
        for (Value x : st)
          types.push_back(x.getType());
        ValueRange core =
            ValueRange(st).take_front(init.size() - (counting ? 1 : 0));
        auto ifOp = scf::IfOp::create(
            b, TypeRange(types).take_front(core.size()), clean, true, true);
        {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(ifOp.thenBlock());
          scf::YieldOp::create(b, blockBody(kb, core, false));
          b.setInsertionPointToStart(ifOp.elseBlock());
          scf::YieldOp::create(b, blockBody(kb, core, true));
        }
        SmallVector<Value> out(ifOp.getResults());
        if (counting)
          out.push_back(st.back());
        barrier();
        scf::YieldOp::create(b, out);
      });
  SmallVector<Value> fin(loop.getResults());
  if (counting)
    fin.pop_back();
  emitEpilogue(fin);
}

void GpuEmitter::emitEpilogue(ValueRange state) {
  const int64_t perTile = 4 + d / 8;
  Value negInf = f32c(-std::numeric_limits<double>::infinity());
  Value corr = f32c(0.0);
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    corr = fmul(slope, arith::SIToFPOp::create(b, f32, posBase0));
  for (int64_t mi = 0; mi < mt; ++mi) {
    ValueRange st = state.slice(mi * perTile, perTile);
    for (int64_t r = 0; r < 2; ++r) {
      Value l = st[2 + r];
      l = fadd(l, shuffleXor(l, 1));
      l = fadd(l, shuffleXor(l, 2));
      Value has =
          arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, l, f32c(0.0));
      Value inv =
          select(has, arith::DivFOp::create(b, f32c(1.0), l), f32c(0.0));
      const Row rw = row(mi, r);
      // The row constant the anchor took out of the bias (log2 units).
      Value rowConst;
      if (Value a = anchor(rw.ip)) {
        Value aF = indexToF32(a);
        rowConst =
            spec.bias == ::tilt::BiasKind::AlibiSymmetric
                ? arith::NegFOp::create(
                      b, fmul(rw.slope, fmax(aF, arith::NegFOp::create(b, aF))))
                : fmul(rw.slope, aF);
      }
      // To o and lse, or (`part`: a split of the decode variant) to the
      // f32 parts, the lse without the row constant.
      auto store = [&](Value part) {
        Value seqRow = add(qStart, rw.query);
        auto at = [&](SmallVector<Value> index) {
          if (part)
            index.insert(index.begin(), part);
          return index;
        };
        for (int64_t dt = 0; dt < d / 8; ++dt) {
          Value rowV =
              vector::ExtractOp::create(b, st[4 + dt], ArrayRef<int64_t>{r});
          Value sc =
              vector::BroadcastOp::create(b, VectorType::get({2}, f32), inv);
          Value outV = arith::MulFOp::create(b, rowV, sc);
          if (!part)
            outV = arith::TruncFOp::create(b, VectorType::get({2}, elt), outV);
          Value col = add(idx(dt * 8), mul(t4, idx(2)));
          SmallVector<Value> oIdx =
              spec.varlen ? SmallVector<Value>{seqRow, rw.head, col}
                          : SmallVector<Value>{batch, rw.head, rw.query, col};
          // o is contiguous in D (even) and col is even: 4-byte aligned
          // (8 for the f32 parts).
          vector::StoreOp::create(b, outV, part ? oParts : o, at(oIdx),
                                  /*nontemporal=*/false,
                                  llvm::MaybeAlign(part ? 8 : 4));
        }
        ifThen(cmpI(arith::CmpIPredicate::eq, t4, idx(0)), [&] {
          Value lse2 = fadd(fadd(st[r], log2(l)), corr);
          if (rowConst && !part)
            lse2 = fadd(lse2, rowConst);
          Value value = select(has, fmul(lse2, f32c(kLn2)), negInf);
          SmallVector<Value> lIdx =
              spec.varlen ? SmallVector<Value>{rw.head, seqRow}
                          : SmallVector<Value>{batch, rw.head, rw.query};
          memref::StoreOp::create(b, value, part ? lseParts : lse, at(lIdx));
          if (part)
            ifThen(cmpI(arith::CmpIPredicate::eq, part, idx(0)), [&] {
              Value c = rowConst ? fmul(rowConst, f32c(kLn2)) : f32c(0.0);
              memref::StoreOp::create(b, c, lse, lIdx);
            });
        });
      };
      ifThen(rw.live, [&] {
        if (!decode)
          return store(Value());
        scf::IfOp::create(
            b, hasSplits,
            [&](OpBuilder &, Location) {
              store(split);
              scf::YieldOp::create(b);
            },
            [&](OpBuilder &, Location) {
              store(Value());
              scf::YieldOp::create(b);
            });
      });
    }
  }
}

void GpuEmitter::emit() {
  emitGeometry();
  // CTAs past the end of a (shorter, varlen) sequence do nothing.
  auto ifOp = scf::IfOp::create(b, lt(rowStart, decode ? groupRows : sq),
                                /*withElse=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(ifOp.thenBlock());
  if (decode)
    stageDecodeRows();
  else
    slope = slope2(head);
  auto space =
      gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  auto bytesType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                   MemRefLayoutAttrInterface(), space);
  rawSmem = gpu::DynamicSharedMemoryOp::create(b, bytesType);
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  int64_t offset = layOutTiles(e);
  if (kpm) {
    maskSmem = smemView(offset, {bn}, f32);
    offset += bn * 4;
    countSmem = smemView(offset, {64}, i32);
  }
  emitKeyBlockLoop();
}

std::unique_ptr<GpuEmitter>
mlir::tilt::makeGpuEmitter(const ::tilt::AttentionSpec &spec,
                           TileConfigAttr config, ImplicitLocOpBuilder &b,
                           ValueRange args) {
  switch (config.getVariant()) {
  case KernelVariant::gpu_sm80:
  case KernelVariant::gpu_decode_sm80:
    return makeSm80Emitter(spec, config, b, args);
  case KernelVariant::gpu_sm90a:
    return makeSm90aEmitter(spec, config, b, args);
  default:
    return nullptr;
  }
}
