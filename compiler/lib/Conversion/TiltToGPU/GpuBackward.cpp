//===- GpuBackward.cpp - gpu_bwd_sm80: the backward on mma.sync -----------===//
//
// tilt.attention_backward on sm_80+ (ALIBI.md "Backward"), as two kernels
// of one module launched in order on a stream, FlashAttention-2 style with
// P recomputed from the forward's lse and nothing of size Sq x Sk stored.
// Every output element is written by one CTA in a fixed order: no atomics,
// the result is deterministic.
//
//   tilt_attention_bwd_dq, grid (ceil(maxSq / block_m), H, B): a CTA owns
//   block_m query rows of one head (16 per warp and m-tile, as the forward)
//     Q, dO rows -> shared memory; per row D_i = rowsum(dO * O) - grad_lse
//     and lse in log2 units less the row's anchor constant
//     for each visible key block (num_stages K/V blocks in flight):
//       S = Q K^T, dP = dO V^T                (mma.sync, f32)
//       P = exp2(S * scale * log2e + bias - lse), dS = P * (dP - D_i)
//       dQ += dS K                            (dS re-packed as A fragments)
//       per row: sum P; with slopes sum dS, sum P * dist, sum dS * dist
//     r = 1 / sum P (the recomputed P then sums to one whatever the
//     rounding of lse, as on the CPU); dq = scale * r * dQ; the row's
//     (lse2, D_i, r, anchor) to row_state; the CTA's slope gradient
//     (ALIBI.md's sum with D_i's rounding cancelled, as Backward.cpp on the
//     CPU explains) to dslope_parts[b, h, query block], summed over the
//     CTA's rows in a fixed order.
//
//   tilt_attention_bwd_dkdv, grid (ceil(maxSk / block_n), Hkv, B): a CTA
//   owns block_n keys of one kv head (16 per warp and m-tile: keys are the
//   rows of its products)
//     K, V rows -> shared memory
//     for each query head of the GQA group, for each query block that may
//     see one of the keys (Q, dO and row_state rows num_stages deep):
//       S^T = K Q^T, dP^T = V dO^T; P^T = r * exp2(...), dS^T as above
//       dV += P^T dO, dK += dS^T Q
//     dk = scale * dK, dv = dV; CTA 0 of each (kv head, batch) sums the
//     group's slope-gradient parts in query-block order into dslopes.
//
// The dK/dV kernel reads what the dQ kernel wrote (row_state, the parts),
// so it must run after it; within each kernel CTAs are independent.
//
// The positions form (alibi_positions: dist = pos_j, the valid keys before
// j) is counted from the dQ CTA's first visible key block, as the forward
// counts it (GpuEmitter::emitKeyBlockLoop): the dQ kernel takes base =
// pos of that block's first key out of lse (lse2 - slope * base) and puts
// it in the row state's anchor slot; each key block's positions relative
// to it are staged in shared memory (a ballot per warp). The dK/dV kernel
// counts the valid keys before its block once, stages its keys' positions
// and takes each row's base from the row state: dist = pos_j - base.
// Since the rows of dS sum to grad_lse_i, distances relative to a row
// constant c (this base, or the anchor's distance with position offsets)
// take c * grad_lse_i from the row's slope gradient, which the dQ kernel
// adds back.
//
//===----------------------------------------------------------------------===//

#include "GpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"

#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <limits>

using namespace mlir;
using namespace mlir::tilt;

namespace {

class BackwardKernel : protected GpuBuilder {
public:
  BackwardKernel(const ::tilt::AttentionSpec &spec, TileConfigAttr config,
                 ImplicitLocOpBuilder &b, ValueRange args, bool withSlopes)
      : GpuBuilder(b), spec(spec),
        elt(spec.dtype == ::tilt::DType::BF16 ? Type(b.getBF16Type())
                                              : Type(b.getF16Type())),
        ops(b, elt) {
    bm = config.getBlockM();
    bn = config.getBlockN();
    warps = config.getNumWarps();
    stages = config.getNumStages();
    d = spec.headDim;
    dp = d + kGpuRowPad;
    threads = 32 * warps;
    group = spec.heads / spec.kvHeads;
    q = args[0];
    k = args[1];
    v = args[2];
    o = args[3];
    gradO = args[4];
    lse = args[5];
    gradLse = args[6];
    dq = args[7];
    dk = args[8];
    dv = args[9];
    rowState = args[10];
    unsigned next = 11;
    if (withSlopes) {
      slopes = args[next++];
      dslopes = args[next++];
    }
    if (spec.keyPaddingMask)
      kpm = args[next++];
    if (spec.varlen) {
      cuQ = args[next++];
      cuK = args[next++];
    }
    if (withSlopes)
      parts = args[next++];
    if (spec.positionOffsets) {
      qOffset = args[next++];
      kOffset = args[next++];
    }
    positions = spec.bias == ::tilt::BiasKind::AlibiPositions;
    // Positions take their own row constant (see the header).
    anchors = spec.positionOffsets && spec.hasAlibi() && !positions;
    scale2 = spec.effectiveScale() * kLog2E;
  }

  void emitDq();
  void emitDkDv();
  /// The dK/dV kernel's dslopes of head `h`: the sum of the dQ kernel's
  /// parts of this sequence (`perBatch`) or of every sequence, in order.
  void sumSlopeParts(Value h, Value perBatch);

private:
  /// Thread ids, the batch (blockIdx.z) and its sequences' extents.
  void sequence();
  /// The valid (unpadded) keys of [0, limit) as f32, in every thread.
  /// Every thread of the CTA takes part.
  Value countValid(Value limit, Value counts) {
    return arith::SIToFPOp::create(
        b, f32, countValidKeys(keyCounter(counts), kpm, batch, limit));
  }
  /// posS[t] = base + the valid keys of [keyBase, keyBase + t) for t <
  /// block_n (f32, exact below 2^24); returns the block's valid keys.
  /// Every thread of the CTA takes part.
  Value stagePositions(Value keyBase, Value base, Value posS, Value counts);
  /// `counts`: i32 shared memory, one per warp and chunk of keys.
  KeyCounter keyCounter(Value counts) const {
    return {tid, lane, warp, threads, warps, counts};
  }
  /// Chunks of `threads` keys that cover a key block.
  int64_t keyChunks() const { return (bn + threads - 1) / threads; }
  // Indices of a row up to (not including) the column.
  SmallVector<Value> qRow(Value h, Value row) {
    return spec.varlen ? SmallVector<Value>{add(qStart, row), h}
                       : SmallVector<Value>{batch, h, row};
  }
  SmallVector<Value> kvRow(Value row) {
    return spec.varlen ? SmallVector<Value>{add(kStart, row), kvHead}
                       : SmallVector<Value>{batch, kvHead, row};
  }
  SmallVector<Value> lseRow(Value h, Value row) {
    return spec.varlen ? SmallVector<Value>{h, add(qStart, row)}
                       : SmallVector<Value>{batch, h, row};
  }
  static SmallVector<Value> with(SmallVector<Value> index, Value last) {
    index.push_back(last);
    return index;
  }
  Value smemView(int64_t byteOffset, ArrayRef<int64_t> shape, Type type) {
    auto space = gpu::AddressSpaceAttr::get(b.getContext(),
                                            gpu::AddressSpace::Workgroup);
    return memref::ViewOp::create(
        b, MemRefType::get(shape, type, MemRefLayoutAttrInterface(), space),
        smem, idx(byteOffset), ValueRange{});
  }
  /// cp.async of `count` rows of each (source, destination) pair: sequence
  /// rows rowBase + r (< seqLen; the others zero-filled from a clamped,
  /// valid address) into destination rows bufferRow + r; `width` elements
  /// a row in 16-byte chunks of `chunk` elements; `at` gives a source row's
  /// indices without the column.
  void copyRows(ArrayRef<std::pair<Value, Value>> srcDst, Value bufferRow,
                Value rowBase, Value seqLen, int64_t count, int64_t width,
                int64_t chunk, function_ref<SmallVector<Value>(Value)> at);
  /// for t in [0, count): body(t, slot, state) with the copies `issue`(t,
  /// slot) makes num_stages - 1 iterations ahead (cp.async groups; slot =
  /// t mod num_stages). Returns the final state.
  SmallVector<Value>
  pipelined(Value count, ValueRange init,
            function_ref<void(Value, Value)> issue,
            function_ref<SmallVector<Value>(Value, Value, ValueRange)> body);
  /// n/8 accumulator tiles of A B^T: A's 16 rows from aRow0 of `aSmem`, B's
  /// n rows from bRow0 of `bSmem`, both D wide.
  SmallVector<Value> products(Value aSmem, Value aRow0, Value bSmem,
                              Value bRow0, int64_t n);
  /// acc[0, d/8) += T B: T the f32 accumulator tiles `tiles` (16 rows, 8
  /// columns each) as A fragments, B rows from bRow0 of `bSmem`.
  void accumulate(ArrayRef<Value> tiles, Value bSmem, Value bRow0, Value *acc);
  /// The bias's distance of `rel` = j - i' less the row's anchor (f32).
  Value distance(Value rel) {
    if (spec.bias == ::tilt::BiasKind::AlibiSymmetric)
      return arith::NegFOp::create(b, fmax(rel, arith::NegFOp::create(b, rel)));
    return rel;
  }
  /// P and dS of one score (raw s and dP), zero where not `visible`.
  std::pair<Value, Value> gradient(Value s, Value dpv, Value lse2, Value delta,
                                   Value slope, Value dist, Value r,
                                   Value visible) {
    Value x = fsub(fmul(s, f32c(scale2)), lse2);
    if (dist)
      x = fma(slope, dist, x);
    Value p = select(visible, exp2(x), f32c(0.0));
    if (r)
      p = fmul(p, r);
    return {p, fmul(p, fsub(dpv, delta))};
  }
  Value keyOn(Value j) {
    Value safe = minI(j, maxI(sub(sk, idx(1)), idx(0)));
    Value m = memref::LoadOp::create(b, kpm, ValueRange{batch, safe});
    return cmpI(arith::CmpIPredicate::ne, m,
                arith::ConstantOp::create(b, b.getI8IntegerAttr(0)));
  }
  Value quadSum(Value x) {
    x = fadd(x, shuffleXor(x, 1));
    return fadd(x, shuffleXor(x, 2));
  }
  Value zeroTile() {
    return arith::ConstantOp::create(
        b, DenseElementsAttr::get(VectorType::get({2, 2}, f32),
                                  b.getF32FloatAttr(0.0f)));
  }
  Value element(Value tile, int64_t r, int64_t e) {
    return vector::ExtractOp::create(b, tile, ArrayRef<int64_t>{r, e});
  }
  Value i32v(Value x) { return arith::IndexCastOp::create(b, i32, x); }
  Value widen(Value x) { return arith::ExtFOp::create(b, f32, x).getResult(); }
  /// Stores row `r` of accumulator tiles acc[0, d/8) times `factor` to
  /// `dst` at `row` (indices without the column), as elt.
  void storeRow(ArrayRef<Value> acc, int64_t r, Value factor, Value dst,
                SmallVector<Value> row);

  const ::tilt::AttentionSpec &spec;
  Type elt;
  Sm80Ops ops;
  int64_t bm, bn, warps, stages, d, dp, threads, group;
  double scale2;
  bool anchors, positions;
  Value q, k, v, o, gradO, lse, gradLse, dq, dk, dv, rowState;
  Value slopes, dslopes, kpm, cuQ, cuK, parts, qOffset, kOffset;
  Value tid, lane, warp, g, t4, batch, kvHead;
  Value qStart, kStart, sq, sk, shift, smem;
};

} // namespace

void BackwardKernel::sequence() {
  threadIds(tid, lane, warp, g, t4);
  batch = blockId(gpu::Dimension::z);
  sequenceExtents(spec, q, k, cuQ, cuK, /*contextLens=*/Value(), batch, qStart,
                  kStart, sq, sk);
  shift = spec.positionOffsets ? sub(qOffset, kOffset) : sub(sk, sq);
  auto space =
      gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  smem = gpu::DynamicSharedMemoryOp::create(
      b, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                         MemRefLayoutAttrInterface(), space));
}

Value BackwardKernel::stagePositions(Value keyBase, Value base, Value posS,
                                     Value counts) {
  const int64_t chunks = keyChunks();
  SmallVector<Value> valid;
  for (int64_t c = 0; c < chunks; ++c) {
    Value t = add(tid, idx(c * threads));
    Value j = add(keyBase, t);
    valid.push_back(andB(andB(lt(t, idx(bn)), lt(j, sk)), keyOn(j)));
  }
  auto [before, total] = countBlockKeys(keyCounter(counts), valid);
  for (int64_t c = 0; c < chunks; ++c) {
    Value t = add(tid, idx(c * threads));
    ifThen(lt(t, idx(bn)), [&] {
      memref::StoreOp::create(
          b, fadd(base, arith::SIToFPOp::create(b, f32, before[c])), posS,
          ValueRange{t});
    });
  }
  barrier();
  return arith::SIToFPOp::create(b, f32, total);
}

void BackwardKernel::copyRows(ArrayRef<std::pair<Value, Value>> srcDst,
                              Value bufferRow, Value rowBase, Value seqLen,
                              int64_t count, int64_t width, int64_t chunk,
                              function_ref<SmallVector<Value>(Value)> at) {
  const int64_t perRow = width / chunk;
  const int64_t total = count * perRow;
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  for (int64_t c0 = 0; c0 < total; c0 += threads) {
    Value id = add(tid, idx(c0));
    auto one = [&] {
      Value r = divU(id, idx(perRow));
      Value col = mul(remU(id, idx(perRow)), idx(chunk));
      Value seqRow = add(rowBase, r);
      Value safe = minI(seqRow, maxI(sub(seqLen, idx(1)), idx(0)));
      Value n = select(lt(seqRow, seqLen), idx(chunk), idx(0));
      SmallVector<Value> src = with(at(safe), col);
      for (auto [from, to] : srcDst)
        nvgpu::DeviceAsyncCopyOp::create(
            b, tokenType, to, ValueRange{add(bufferRow, r), col}, from, src,
            b.getIndexAttr(chunk), n, b.getUnitAttr());
    };
    if (c0 + threads <= total)
      one();
    else
      ifThen(lt(id, idx(total)), one);
  }
}

SmallVector<Value> BackwardKernel::pipelined(
    Value count, ValueRange init, function_ref<void(Value, Value)> issue,
    function_ref<SmallVector<Value>(Value, Value, ValueRange)> body) {
  for (int64_t s = 0; s + 1 < stages; ++s) {
    ifThen(lt(idx(s), count), [&] { issue(idx(s), idx(s)); });
    ops.commit();
  }
  auto loop = scf::ForOp::create(
      b, idx(0), count, idx(1), init,
      [&](OpBuilder &, Location, Value t, ValueRange state) {
        Value ahead = add(t, idx(stages - 1));
        ifThen(lt(ahead, count),
               [&] { issue(ahead, remU(ahead, idx(stages))); });
        nvgpu::DeviceAsyncWaitOp::create(b, ops.commit(),
                                         b.getI32IntegerAttr(stages - 1));
        barrier();
        SmallVector<Value> out = body(t, remU(t, idx(stages)), state);
        barrier();
        scf::YieldOp::create(b, out);
      });
  return SmallVector<Value>(loop.getResults());
}

SmallVector<Value> BackwardKernel::products(Value aSmem, Value aRow0,
                                            Value bSmem, Value bRow0,
                                            int64_t n) {
  SmallVector<Value> s(n / 8, zeroTile());
  for (int64_t kk = 0; kk < d / 16; ++kk) {
    Value a = ops.ldmatrix(aSmem, add(aRow0, remU(lane, idx(16))),
                           add(idx(16 * kk), mul(divU(lane, idx(16)), idx(8))),
                           /*transpose=*/false);
    for (int64_t nt = 0; nt < n / 8; nt += 2) {
      Value row =
          add(add(bRow0, idx(nt * 8)),
              add(remU(lane, idx(8)), mul(divU(lane, idx(16)), idx(8))));
      Value col =
          add(idx(kk * 16), mul(remU(divU(lane, idx(8)), idx(2)), idx(8)));
      Value b4 = ops.ldmatrix(bSmem, row, col, /*transpose=*/false);
      for (int64_t h = 0; h < 2; ++h)
        s[nt + h] = ops.mma(a, ops.rowPair(b4, 2 * h), s[nt + h]);
    }
  }
  return s;
}

void BackwardKernel::accumulate(ArrayRef<Value> tiles, Value bSmem, Value bRow0,
                                Value *acc) {
  for (size_t kt = 0; kt < tiles.size() / 2; ++kt) {
    Value a = ops.aFragment(tiles[2 * kt], tiles[2 * kt + 1]);
    for (int64_t dt = 0; dt < d / 8; dt += 2) {
      Value row = add(add(bRow0, idx(int64_t(kt) * 16)), remU(lane, idx(16)));
      Value col = add(idx(dt * 8), mul(divU(lane, idx(16)), idx(8)));
      Value b4 = ops.ldmatrix(bSmem, row, col, /*transpose=*/true);
      for (int64_t h = 0; h < 2; ++h)
        acc[dt + h] = ops.mma(a, ops.rowPair(b4, 2 * h), acc[dt + h]);
    }
  }
}

void BackwardKernel::storeRow(ArrayRef<Value> acc, int64_t r, Value factor,
                              Value dst, SmallVector<Value> row) {
  for (int64_t dt = 0; dt < d / 8; ++dt) {
    Value x = vector::ExtractOp::create(b, acc[dt], ArrayRef<int64_t>{r});
    x = arith::MulFOp::create(
        b, x,
        vector::BroadcastOp::create(b, VectorType::get({2}, f32), factor));
    x = arith::TruncFOp::create(b, VectorType::get({2}, elt), x);
    // Rows are contiguous in D (even) and the column is even: 4-byte
    // aligned.
    vector::StoreOp::create(b, x, dst,
                            with(row, add(idx(dt * 8), mul(t4, idx(2)))),
                            /*nontemporal=*/false, llvm::MaybeAlign(4));
  }
}

//===----------------------------------------------------------------------===//
// tilt_attention_bwd_dq
//===----------------------------------------------------------------------===//

void BackwardKernel::emitDq() {
  sequence();
  Value qb = blockId(gpu::Dimension::x);
  Value head = blockId(gpu::Dimension::y);
  kvHead = divU(head, idx(group));
  Value rowStart = mul(qb, idx(bm));
  const int64_t mt = bm / (16 * warps);
  ifThen(lt(rowStart, sq), [&] {
    Value slope = slopeLog2(spec, slopes, batch, head);
    const int64_t e = 2;
    Value qS = smemView(0, {bm, dp}, elt);
    Value doS = smemView(bm * dp * e, {bm, dp}, elt);
    Value kS = smemView(2 * bm * dp * e, {stages * bn, dp}, elt);
    Value vS =
        smemView((2 * bm + stages * bn) * dp * e, {stages * bn, dp}, elt);
    const int64_t redAt = (2 * bm + 2 * stages * bn) * dp * e;
    Value red = smemView(redAt, {warps}, b.getF32Type());
    // Positions: the key block's positions (f32) and the ballot counts.
    Value posS, counts;
    if (positions) {
      posS = smemView(redAt + 4 * warps, {bn}, b.getF32Type());
      counts = smemView(redAt + 4 * (warps + bn), {keyChunks() * warps}, i32);
    }
    auto qRowOf = [&](Value row) { return qRow(head, row); };
    copyRows({{q, qS}, {gradO, doS}}, idx(0), rowStart, sq, bm, d, 8, qRowOf);
    nvgpu::DeviceAsyncWaitOp::create(b, ops.commit(), b.getI32IntegerAttr(0));
    barrier();

    // This thread's rows (m-tile mi, half r: rows g and g + 8).
    struct Row {
      Value i, live, ip, lse2, delta, grad, anchor, anchorF;
    };
    SmallVector<Row> rows;
    for (int64_t mi = 0; mi < mt; ++mi)
      for (int64_t r = 0; r < 2; ++r) {
        Row row;
        Value local =
            add(mul(warp, idx(16 * mt)), add(idx(16 * mi + 8 * r), g));
        row.i = add(rowStart, local);
        row.live = lt(row.i, sq);
        row.ip = add(row.i, shift);
        Value safe = minI(row.i, sub(sq, idx(1)));
        Value l = memref::LoadOp::create(b, lse, lseRow(head, safe));
        row.grad = memref::LoadOp::create(b, gradLse, lseRow(head, safe));
        // D_i: this lane's columns 8 jj + 2 t4 + {0, 1}, then the quad.
        auto loop = scf::ForOp::create(
            b, idx(0), idx(d / 8), idx(1), ValueRange{f32c(0.0)},
            [&](OpBuilder &, Location, Value jj, ValueRange acc) {
              Value sum = acc[0];
              for (int64_t x = 0; x < 2; ++x) {
                Value col = add(mul(jj, idx(8)), add(mul(t4, idx(2)), idx(x)));
                Value gv = widen(
                    memref::LoadOp::create(b, doS, ValueRange{local, col}));
                Value ov = widen(
                    memref::LoadOp::create(b, o, with(qRow(head, safe), col)));
                sum = fma(gv, ov, sum);
              }
              scf::YieldOp::create(b, ValueRange{sum});
            });
        // The gradient through lse enters as D_i - grad_lse_i.
        row.delta = fsub(quadSum(loop.getResult(0)), row.grad);
        // lse in log2 units less the constant the anchor took out of the
        // forward's scores (GpuEmitter::anchor).
        Value lse2 = fmul(l, f32c(kLog2E));
        if (anchors) {
          row.anchor = sub(maxI(idx(0), minI(row.ip, sub(sk, idx(1)))), row.ip);
          row.anchorF = indexToF32(row.anchor);
          Value constant = fmul(slope, distance(row.anchorF));
          lse2 = fsub(lse2, constant);
        }
        row.lse2 = lse2;
        rows.push_back(row);
      }

    // Visible keys of the block, as whole key blocks.
    Value firstRow = add(rowStart, shift);
    Value lastRow =
        add(firstRow, sub(minI(idx(bm), sub(sq, rowStart)), idx(1)));
    Value kBegin = idx(0), kEnd = sk;
    if (spec.causal)
      kEnd = minI(kEnd, add(lastRow, idx(1)));
    if (spec.window)
      kBegin = maxI(kBegin, add(sub(firstRow, idx(*spec.window)), idx(1)));
    kEnd = maxI(kEnd, kBegin);
    Value kbBegin = divU(kBegin, idx(bn));
    Value kbEnd = select(lt(kBegin, kEnd),
                         divU(add(kEnd, idx(bn - 1)), idx(bn)), kbBegin);
    // Positions: distances count from the first visible block's first key
    // (see the header); lse loses the base's bias.
    Value base = f32c(0.0);
    if (positions) {
      base = countValid(mul(kbBegin, idx(bn)), counts);
      for (Row &row : rows)
        row.lse2 = fsub(row.lse2, fmul(slope, base));
    }

    // State per m-tile: dQ tiles [d/8], then per half: sum P and, with
    // slopes, sum dS, sum P * dist, sum dS * dist; with positions, last,
    // the valid keys from the first visible block to the current one.
    const int64_t sums = slopes ? 4 : 1;
    const int64_t perTile = d / 8 + 2 * sums;
    SmallVector<Value> init;
    for (int64_t mi = 0; mi < mt; ++mi) {
      init.append(d / 8, zeroTile());
      init.append(2 * sums, f32c(0.0));
    }
    if (positions)
      init.push_back(f32c(0.0));
    auto issue = [&](Value t, Value slot) {
      copyRows({{k, kS}, {v, vS}}, mul(slot, idx(bn)),
               mul(add(kbBegin, t), idx(bn)), sk, bn, d, 8,
               [&](Value row) { return kvRow(row); });
    };
    auto body = [&](Value t, Value slot, ValueRange state) {
      SmallVector<Value> next(state.begin(), state.end());
      Value keyBase = mul(add(kbBegin, t), idx(bn));
      Value bufferRow = mul(slot, idx(bn));
      Value colBase = mul(t4, idx(2));
      if (positions)
        next.back() = fadd(state.back(),
                           stagePositions(keyBase, state.back(), posS, counts));
      // Columns nt * 8 + 2 t4 + x: the key exists (and is not padded).
      SmallVector<Value> colOn;
      Value tailRoom = i32v(sub(sk, add(keyBase, colBase)));
      for (int64_t nt = 0; nt < bn / 8; ++nt)
        for (int64_t x = 0; x < 2; ++x) {
          Value on =
              cmpI(arith::CmpIPredicate::sgt, tailRoom, i32c(nt * 8 + x));
          if (kpm)
            on = andB(on, keyOn(add(keyBase, add(colBase, idx(nt * 8 + x)))));
          colOn.push_back(on);
        }
      for (int64_t mi = 0; mi < mt; ++mi) {
        Value aRow0 = add(mul(warp, idx(16 * mt)), idx(16 * mi));
        SmallVector<Value> s = products(qS, aRow0, kS, bufferRow, bn);
        SmallVector<Value> dpt = products(doS, aRow0, vS, bufferRow, bn);
        Value *st = &next[mi * perTile];
        Value *sum = st + d / 8;
        SmallVector<Value> ds(bn / 8, zeroTile());
        for (int64_t r = 0; r < 2; ++r) {
          const Row &row = rows[mi * 2 + r];
          Value jrel0 = sub(add(keyBase, colBase), row.ip);
          Value rel0 = indexToF32(anchors ? sub(jrel0, row.anchor) : jrel0);
          Value causalRoom = i32v(sub(idx(0), jrel0));
          Value windowRoom =
              spec.window ? i32v(add(jrel0, idx(*spec.window))) : Value();
          for (int64_t nt = 0; nt < bn / 8; ++nt)
            for (int64_t x = 0; x < 2; ++x) {
              const int64_t off = nt * 8 + x;
              Value vis = andB(colOn[nt * 2 + x], row.live);
              if (spec.causal)
                vis = andB(vis, cmpI(arith::CmpIPredicate::sge, causalRoom,
                                     i32c(off)));
              if (spec.window)
                vis = andB(vis, cmpI(arith::CmpIPredicate::sgt, windowRoom,
                                     i32c(-off)));
              Value dist;
              if (positions)
                dist = memref::LoadOp::create(
                    b, posS, ValueRange{add(colBase, idx(off))});
              else if (spec.hasAlibi())
                dist = distance(fadd(rel0, f32c(double(off))));
              auto [p, dsv] =
                  gradient(element(s[nt], r, x), element(dpt[nt], r, x),
                           row.lse2, row.delta, slope, dist, Value(), vis);
              ds[nt] = vector::InsertOp::create(b, dsv, ds[nt],
                                                ArrayRef<int64_t>{r, x});
              Value *rs = sum + r * sums;
              rs[0] = fadd(rs[0], p);
              if (slopes) {
                rs[1] = fadd(rs[1], dsv);
                rs[2] = fma(p, dist, rs[2]);
                rs[3] = fma(dsv, dist, rs[3]);
              }
            }
        }
        // dQ += dS K.
        accumulate(ds, kS, bufferRow, st);
      }
      return next;
    };
    SmallVector<Value> fin = pipelined(sub(kbEnd, kbBegin), init, issue, body);

    // Epilogue: r = 1 / sum P; dq = scale * r * dQ; the row state; the
    // slope gradient's rows.
    Value total = f32c(0.0);
    for (int64_t mi = 0; mi < mt; ++mi)
      for (int64_t r = 0; r < 2; ++r) {
        const Row &row = rows[mi * 2 + r];
        ValueRange st = ValueRange(fin).slice(mi * perTile, perTile);
        SmallVector<Value> rs;
        for (int64_t x = 0; x < sums; ++x)
          rs.push_back(quadSum(st[d / 8 + r * sums + x]));
        Value seen = arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, rs[0],
                                           f32c(0.0));
        Value inv =
            select(seen, arith::DivFOp::create(b, f32c(1.0), rs[0]), f32c(0.0));
        ifThen(row.live, [&] {
          storeRow(SmallVector<Value>(st.take_front(d / 8)), r,
                   fmul(inv, f32c(spec.effectiveScale())), dq,
                   qRow(head, row.i));
          ifThen(cmpI(arith::CmpIPredicate::eq, t4, idx(0)), [&] {
            Value values[4] = {row.lse2, row.delta, inv,
                               positions ? base
                               : anchors ? row.anchorF
                                         : f32c(0.0)};
            for (int64_t x = 0; x < 4; ++x)
              memref::StoreOp::create(b, values[x], rowState,
                                      with(lseRow(head, row.i), idx(x)));
          });
        });
        if (slopes) {
          // The rows of dS sum to grad_lse, not to 0 (Backward.cpp).
          Value mean = fsub(fmul(rs[1], inv), row.grad);
          Value contribution = fmul(fsub(rs[3], fmul(mean, rs[2])), inv);
          // The distances lacked the row constant c (the base, or the
          // anchor's distance): the rows of dS sum to grad_lse, so the
          // row's term lacks c * grad_lse.
          Value constant = positions ? base
                           : anchors ? distance(row.anchorF)
                                     : Value();
          if (constant)
            contribution =
                select(seen, fma(constant, row.grad, contribution), f32c(0.0));
          Value mine =
              andB(row.live, cmpI(arith::CmpIPredicate::eq, t4, idx(0)));
          total = fadd(total, select(mine, contribution, f32c(0.0)));
        }
      }
    if (slopes) {
      for (int32_t off : {16, 8, 4, 2, 1})
        total = fadd(total, shuffleXor(total, off));
      ifThen(cmpI(arith::CmpIPredicate::eq, lane, idx(0)),
             [&] { memref::StoreOp::create(b, total, red, ValueRange{warp}); });
      barrier();
      ifThen(cmpI(arith::CmpIPredicate::eq, tid, idx(0)), [&] {
        Value sum = f32c(0.0);
        for (int64_t w = 0; w < warps; ++w)
          sum = fadd(sum, memref::LoadOp::create(b, red, ValueRange{idx(w)}));
        memref::StoreOp::create(b, sum, parts, ValueRange{batch, head, qb});
      });
    }
  });
}

//===----------------------------------------------------------------------===//
// tilt_attention_bwd_dkdv
//===----------------------------------------------------------------------===//

void BackwardKernel::emitDkDv() {
  sequence();
  Value kb = blockId(gpu::Dimension::x);
  kvHead = blockId(gpu::Dimension::y);
  // The slope gradient: CTA 0 of the (kv head, batch) sums its group's
  // parts (written by the dQ kernel, launched before) in query-block order
  // into dslopes [B, H]; with dslopes [1, H] (per-head slopes) CTA 0 of
  // batch 0 sums every sequence's, in batch order.
  if (slopes) {
    Value perBatch = lt(idx(1), memref::DimOp::create(b, dslopes, 0));
    Value writer = cmpI(arith::CmpIPredicate::eq, kb, idx(0));
    writer = andB(writer, arith::OrIOp::create(
                              b, perBatch,
                              cmpI(arith::CmpIPredicate::eq, batch, idx(0))));
    // Thread t takes heads t, t + threads, ... of the group.
    ifThen(writer, [&] {
      scf::ForOp::create(b, tid, idx(group), idx(threads), ValueRange{},
                         [&](OpBuilder &, Location, Value g0, ValueRange) {
                           sumSlopeParts(add(mul(kvHead, idx(group)), g0),
                                         perBatch);
                           scf::YieldOp::create(b);
                         });
    });
  }
  Value keyStart = mul(kb, idx(bn));
  const int64_t mk = bn / (16 * warps);
  ifThen(lt(keyStart, sk), [&] {
    const int64_t e = 2;
    Value kS = smemView(0, {bn, dp}, elt);
    Value vS = smemView(bn * dp * e, {bn, dp}, elt);
    Value qS = smemView(2 * bn * dp * e, {stages * bm, dp}, elt);
    Value doS =
        smemView((2 * bn + stages * bm) * dp * e, {stages * bm, dp}, elt);
    const int64_t stAt = (2 * bn + 2 * stages * bm) * dp * e;
    Value stS = smemView(stAt, {stages * bm, 4}, b.getF32Type());
    copyRows({{k, kS}, {v, vS}}, idx(0), keyStart, sk, bn, d, 8,
             [&](Value row) { return kvRow(row); });
    // Positions: the block's keys' positions (the valid keys before each).
    Value posS;
    if (positions) {
      const int64_t at = stAt + stages * bm * 16;
      posS = smemView(at, {bn}, b.getF32Type());
      Value counts = smemView(at + 4 * bn, {keyChunks() * warps}, i32);
      stagePositions(keyStart, countValid(keyStart, counts), posS, counts);
    }
    nvgpu::DeviceAsyncWaitOp::create(b, ops.commit(), b.getI32IntegerAttr(0));
    barrier();

    // This thread's keys (m-tile mi, half r).
    struct Key {
      Value j, on, pos;
    };
    SmallVector<Key> keys;
    for (int64_t mi = 0; mi < mk; ++mi)
      for (int64_t r = 0; r < 2; ++r) {
        Value j = add(keyStart, add(mul(warp, idx(16 * mk)),
                                    add(idx(16 * mi + 8 * r), g)));
        Value on = lt(j, sk);
        if (kpm)
          on = andB(on, keyOn(j));
        Value pos =
            positions
                ? memref::LoadOp::create(b, posS, ValueRange{sub(j, keyStart)})
                      .getResult()
                : Value();
        keys.push_back({j, on, pos});
      }

    // Query rows that may see a key of the block: i' >= keyStart when
    // causal, i' < lastKey + w with a window.
    Value lastKey =
        sub(add(keyStart, minI(idx(bn), sub(sk, keyStart))), idx(1));
    Value rowBegin = idx(0), rowEnd = sq;
    if (spec.causal)
      rowBegin = maxI(idx(0), minI(sq, sub(keyStart, shift)));
    if (spec.window)
      rowEnd =
          maxI(rowBegin, minI(sq, sub(add(lastKey, idx(*spec.window)), shift)));
    Value qbBegin = divU(rowBegin, idx(bm));
    Value qbEnd = select(lt(rowBegin, rowEnd),
                         divU(add(rowEnd, idx(bm - 1)), idx(bm)), qbBegin);
    Value blocks = sub(qbEnd, qbBegin);
    Value blocksSafe = maxI(blocks, idx(1));
    // Iteration t: query head kvHead * G + t / blocks, block t % blocks.
    auto headOf = [&](Value t) {
      return add(mul(kvHead, idx(group)), divU(t, blocksSafe));
    };
    auto blockOf = [&](Value t) { return add(qbBegin, remU(t, blocksSafe)); };

    SmallVector<Value> init(mk * 2 * (d / 8), zeroTile()); // dK, dV per tile
    auto issue = [&](Value t, Value slot) {
      Value h = headOf(t);
      Value bufferRow = mul(slot, idx(bm));
      Value rowBase = mul(blockOf(t), idx(bm));
      copyRows({{q, qS}, {gradO, doS}}, bufferRow, rowBase, sq, bm, d, 8,
               [&](Value row) { return qRow(h, row); });
      copyRows({{rowState, stS}}, bufferRow, rowBase, sq, bm, 4, 4,
               [&](Value row) { return lseRow(h, row); });
    };
    auto body = [&](Value t, Value slot, ValueRange state) {
      SmallVector<Value> next(state.begin(), state.end());
      Value slope = slopeLog2(spec, slopes, batch, headOf(t));
      Value bufferRow = mul(slot, idx(bm));
      Value q0 = mul(blockOf(t), idx(bm));
      Value colBase = mul(t4, idx(2));
      // Per query column nt * 8 + 2 t4 + x: whether it exists, and its
      // row state.
      Value tailRoom = i32v(sub(sq, add(q0, colBase)));
      SmallVector<Value> colLive;
      SmallVector<std::array<Value, 4>> colState;
      for (int64_t nt = 0; nt < bm / 8; ++nt)
        for (int64_t x = 0; x < 2; ++x) {
          colLive.push_back(
              cmpI(arith::CmpIPredicate::sgt, tailRoom, i32c(nt * 8 + x)));
          Value at = add(bufferRow, add(colBase, idx(nt * 8 + x)));
          std::array<Value, 4> values;
          for (int64_t c = 0; c < 4; ++c)
            values[c] =
                (c == 3 && !anchors && !positions)
                    ? Value()
                    : memref::LoadOp::create(b, stS, ValueRange{at, idx(c)})
                          .getResult();
          colState.push_back(values);
        }
      for (int64_t mi = 0; mi < mk; ++mi) {
        Value aRow0 = add(mul(warp, idx(16 * mk)), idx(16 * mi));
        SmallVector<Value> s = products(kS, aRow0, qS, bufferRow, bm);
        SmallVector<Value> dpt = products(vS, aRow0, doS, bufferRow, bm);
        SmallVector<Value> p(bm / 8, zeroTile()), ds(bm / 8, zeroTile());
        for (int64_t r = 0; r < 2; ++r) {
          const Key &key = keys[mi * 2 + r];
          // j - i' of column 0 of this thread: j - (q0 + 2 t4 + shift).
          Value jrel0 = sub(key.j, add(add(q0, colBase), shift));
          Value rel0 = indexToF32(jrel0);
          Value room = i32v(jrel0);
          for (int64_t nt = 0; nt < bm / 8; ++nt)
            for (int64_t x = 0; x < 2; ++x) {
              const int64_t off = nt * 8 + x;
              const std::array<Value, 4> &cs = colState[nt * 2 + x];
              Value vis = andB(key.on, colLive[nt * 2 + x]);
              // j - i' = jrel0 - off: causal j <= i', window i' - j < w.
              if (spec.causal)
                vis =
                    andB(vis, cmpI(arith::CmpIPredicate::sle, room, i32c(off)));
              if (spec.window)
                vis = andB(vis, cmpI(arith::CmpIPredicate::sgt,
                                     add(room, i32c(*spec.window)), i32c(off)));
              Value dist;
              if (positions) {
                dist = fsub(key.pos, cs[3]);
              } else if (spec.hasAlibi()) {
                Value rel = fsub(rel0, f32c(double(off)));
                dist = distance(anchors ? fsub(rel, cs[3]) : rel);
              }
              auto [pv, dsv] =
                  gradient(element(s[nt], r, x), element(dpt[nt], r, x), cs[0],
                           cs[1], slope, dist, cs[2], vis);
              p[nt] = vector::InsertOp::create(b, pv, p[nt],
                                               ArrayRef<int64_t>{r, x});
              ds[nt] = vector::InsertOp::create(b, dsv, ds[nt],
                                                ArrayRef<int64_t>{r, x});
            }
        }
        // dV += P^T dO, dK += dS^T Q.
        Value *dK = &next[mi * 2 * (d / 8)];
        Value *dV = dK + d / 8;
        accumulate(p, doS, bufferRow, dV);
        accumulate(ds, qS, bufferRow, dK);
      }
      return next;
    };
    SmallVector<Value> fin =
        pipelined(mul(blocks, idx(group)), init, issue, body);

    for (int64_t mi = 0; mi < mk; ++mi)
      for (int64_t r = 0; r < 2; ++r) {
        const Key &key = keys[mi * 2 + r];
        ArrayRef<Value> dK =
            ArrayRef<Value>(fin).slice(mi * 2 * (d / 8), d / 8);
        ArrayRef<Value> dV =
            ArrayRef<Value>(fin).slice(mi * 2 * (d / 8) + d / 8, d / 8);
        ifThen(lt(key.j, sk), [&] {
          storeRow(dK, r, f32c(spec.effectiveScale()), dk, kvRow(key.j));
          storeRow(dV, r, f32c(1.0), dv, kvRow(key.j));
        });
      }
  });
}

void BackwardKernel::sumSlopeParts(Value h, Value perBatch) {
  Value first = select(perBatch, batch, idx(0));
  Value last =
      select(perBatch, add(batch, idx(1)), memref::DimOp::create(b, parts, 0));
  auto sequences = scf::ForOp::create(
      b, first, last, idx(1), ValueRange{f32c(0.0)},
      [&](OpBuilder &, Location, Value seq, ValueRange outer) {
        Value rows = spec.varlen ? sequenceRange(cuQ, seq).second : sq;
        Value blocks = divU(add(rows, idx(bm - 1)), idx(bm));
        auto loop = scf::ForOp::create(
            b, idx(0), blocks, idx(1), outer,
            [&](OpBuilder &, Location, Value qb, ValueRange acc) {
              Value x =
                  memref::LoadOp::create(b, parts, ValueRange{seq, h, qb});
              scf::YieldOp::create(b, ValueRange{fadd(acc[0], x)});
            });
        scf::YieldOp::create(b, loop.getResults());
      });
  memref::StoreOp::create(b, sequences.getResult(0), dslopes,
                          ValueRange{select(perBatch, batch, idx(0)), h});
}

int64_t
mlir::tilt::gpuBackwardSharedMemoryBytes(const ::tilt::AttentionSpec &spec,
                                         TileConfigAttr config, bool dkdv) {
  const int64_t row = (spec.headDim + kGpuRowPad) * 2;
  const int64_t bm = config.getBlockM(), bn = config.getBlockN();
  const int64_t stages = config.getNumStages();
  const int64_t warps = config.getNumWarps();
  // Positions: a key block's positions (f32) and the key counts (i32 per
  // warp and chunk of threads).
  const int64_t chunks = (bn + 32 * warps - 1) / (32 * warps);
  const int64_t positions = spec.bias == ::tilt::BiasKind::AlibiPositions
                                ? 4 * (bn + chunks * warps)
                                : 0;
  if (dkdv)
    // K, V; Q, dO and the row state (16 bytes a row) per stage.
    return (2 * bn + 2 * stages * bm) * row + stages * bm * 16 + positions;
  // Q, dO; K, V per stage; the slope gradient's per-warp sums.
  return (2 * bm + 2 * stages * bn) * row + 4 * warps + positions;
}

void mlir::tilt::emitBackwardKernel(const ::tilt::AttentionSpec &spec,
                                    TileConfigAttr config,
                                    ImplicitLocOpBuilder &b, ValueRange args,
                                    bool withSlopes, bool dkdv) {
  BackwardKernel kernel(spec, config, b, args, withSlopes);
  if (dkdv)
    kernel.emitDkDv();
  else
    kernel.emitDq();
}
