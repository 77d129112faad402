//===- CpuEmitter.cpp - The phases every CPU variant shares ---------------===//
//
// A work item's geometry (batch, head, query block, visible key range),
// the slopes in log2 units, the positions of the padding-mask form, the
// dispatch to the variant's key loop, and o = Acc / l, lse.
//
//===----------------------------------------------------------------------===//

#include "CpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"
#include "tilt/Slopes.h"

#include "mlir/Dialect/X86Vector/X86VectorDialect.h"

#include "llvm/Support/MathExtras.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::tilt;

namespace {

/// Coefficients of 2^f on [0, 1), a degree-5 fit of the relative error
/// (max 9e-8, below f32 epsilon); computed for Tilt by weighted least squares
/// on Chebyshev nodes.
constexpr float kExp2Poly[] = {0.99999994f,   0.693152964f,   0.240154535f,
                               0.0558236055f, 0.00899258442f, 0.00187623291f};

} // namespace

Value CpuKernelBuilder::exp2(Value x) {
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

void CpuEmitter::groups(int64_t total, int64_t group,
                        function_ref<void(Value, int64_t)> tile) {
  // As few tiles as `group` allows, their sizes differing by at most one:
  // 32 rows in tiles of at most 6 are 6, 6, 5, 5, 5, 5, not five 6s and a
  // 2 whose few accumulators stall on the FMA latency.
  const int64_t tiles = (total + group - 1) / group;
  const int64_t big = (total + tiles - 1) / tiles;
  const int64_t bigTiles = total - (big - 1) * tiles;
  const int64_t bigEnd = bigTiles * big;
  forLoop(idx(0), idx(bigEnd), idx(big),
          [&](Value first) { tile(first, big); });
  if (bigEnd < total)
    forLoop(idx(bigEnd), idx(total), idx(big - 1),
            [&](Value first) { tile(first, big - 1); });
}

LogicalResult CpuEmitter::emit() {
  if (d % vl != 0 || bm % vl != 0)
    return op.emitOpError("head dim and block_m must be multiples of the "
                          "vector length ")
           << vl;
  if (failed(allocateScratch()))
    return failure();
  acc = scratch({bm, d}, f32);
  mRow = scratch({bm}, f32);
  lRow = scratch({bm}, f32);
  alphaRow = scratch({bm}, f32);
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    posRef = scratch({bm}, f32);
  if (spec.positionOffsets && spec.hasAlibi())
    anchorRow = scratch({bm}, f32);
  forLoop(op.getItemBegin(), op.getItemEnd(), idx(1),
          [&](Value item) { emitItem(item); });
  return success();
}

void CpuEmitter::emitItem(Value item) {
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
  loadSequence();
  rowStart = mul(qb, idx(bm));
  Value live =
      arith::CmpIOp::create(b, arith::CmpIPredicate::slt, rowStart, sq);
  ifThen(live, [&] {
    rows = minI(idx(bm), sub(sq, rowStart));
    slope2 = spec.hasAlibi() ? slopeLog2() : Value();

    // Keys any row of this block may see.
    Value kBegin = idx(0), kEnd = sk;
    firstPos = add(rowStart, shift);
    lastPos = add(firstPos, sub(rows, idx(1)));
    beginItem();
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
    stageQuery();
    if (spec.bias == ::tilt::BiasKind::AlibiPositions)
      stagePositions();
    if (anchorRow)
      stageAnchors();
    keyLoop(kBegin, kEnd);
    finalize();
    if (pos)
      memref::DeallocOp::create(b, pos);
    pos = nullptr;
  });
}

Value CpuKernelBuilder::bf16PairDot(Value acc, Value x, Value y, bool native) {
  if (native)
    return x86vector::DotBF16Op::create(b, vecF32, acc, x, y);
  auto [xEven, xOdd] = widenBf16Pairs(x);
  auto [yEven, yOdd] = widenBf16Pairs(y);
  acc = vector::FMAOp::create(b, xOdd, yOdd, acc);
  return vector::FMAOp::create(b, xEven, yEven, acc);
}

Value CpuKernelBuilder::broadcastBf16Pair(Value memref, ValueRange index) {
  Type bf16 = b.getBF16Type();
  Value two =
      vector::LoadOp::create(b, VectorType::get({2}, bf16), memref, index);
  Type i32 = b.getI32Type();
  Value word = vector::ExtractOp::create(
      b, vector::BitCastOp::create(b, VectorType::get({1}, i32), two), 0);
  Value lanes =
      vector::BroadcastOp::create(b, VectorType::get({vl}, i32), word);
  return vector::BitCastOp::create(b, VectorType::get({2 * vl}, bf16), lanes);
}

void CpuKernelBuilder::stageRowPairs(Value n, int64_t cols, Value dst,
                                     function_ref<Value(Value, Value)> load,
                                     Value dstRow0) {
  if (!dstRow0)
    dstRow0 = idx(0);
  // Lane order x0 y0 x1 y1 ...: row 2p's column c beside row 2p + 1's.
  SmallVector<int64_t> interleave;
  for (int64_t l = 0; l < vl; ++l) {
    interleave.push_back(l);
    interleave.push_back(vl + l);
  }
  VectorType pairVec = VectorType::get({2 * vl}, b.getBF16Type());
  // Up to four vectors a step: enough to hide the loop, few enough to keep
  // the kernel small.
  int64_t step = 4;
  while ((cols / vl) % step != 0)
    step /= 2;
  forLoop(idx(0), pairCount(n), idx(1), [&](Value p) {
    Value r0 = mul(p, idx(2)), r1 = add(r0, idx(1));
    Value second = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, r1, n);
    Value last = minI(r1, sub(n, idx(1)));
    forLoop(idx(0), idx(cols), idx(step * vl), [&](Value c0) {
      for (int64_t c = 0; c < step * vl; c += vl) {
        Value col = add(c0, idx(c));
        Value x = load(r0, col);
        Value y = load(last, col);
        y = arith::SelectOp::create(
            b, second, y,
            arith::ConstantOp::create(b, b.getZeroAttr(y.getType())));
        Value xy = vector::ShuffleOp::create(b, x, y, interleave);
        if (xy.getType() != pairVec)
          xy = arith::TruncFOp::create(b, pairVec, xy);
        vector::StoreOp::create(b, xy, dst,
                                ValueRange{add(dstRow0, p), mul(col, idx(2))});
      }
    });
  });
}

void CpuKernelBuilder::loadSequence() {
  if (spec.varlen) {
    auto load = [&](Value cu, Value i) -> Value {
      Value v = memref::LoadOp::create(b, cu, ValueRange{i});
      return arith::IndexCastOp::create(b, b.getIndexType(), v);
    };
    seqQ0 = load(io.cuQ, batch);
    sq = sub(load(io.cuQ, add(batch, idx(1))), seqQ0);
    seqK0 = load(io.cuK, batch);
    sk = sub(load(io.cuK, add(batch, idx(1))), seqK0);
  } else if (io.contextLens) {
    sq = memref::DimOp::create(b, io.q, 2);
    Value len = memref::LoadOp::create(b, io.contextLens, ValueRange{batch});
    sk = arith::IndexCastOp::create(b, b.getIndexType(), len);
  } else {
    sq = memref::DimOp::create(b, io.q, 2);
    sk = memref::DimOp::create(b, io.k, 2);
  }
  // i' = i + shift relative to key 0: Sk - Sq (bottom-right), or
  // q_offset - k_offset with position offsets.
  shift = spec.positionOffsets ? sub(io.qOffset, io.kOffset) : sub(sk, sq);
}

Value CpuKernelBuilder::pageOf(Value t) {
  Value entry = arith::ShRUIOp::create(
      b, t, idx(llvm::Log2_64(static_cast<uint64_t>(spec.pageSize))));
  Value id = memref::LoadOp::create(b, io.blockTable, ValueRange{batch, entry});
  return arith::IndexCastOp::create(b, b.getIndexType(), id);
}

void CpuKernelBuilder::prefetchLines(Value tensor, ArrayRef<Value> key,
                                     Value col, int64_t count, int locality) {
  const int64_t perLine = 64 / ::tilt::byteWidth(spec.dtype);
  for (int64_t c = 0; c < count; c += perLine) {
    memref::PrefetchOp::create(b, tensor, atColumn(key, add(col, idx(c))),
                               /*isWrite=*/false,
                               /*localityHint=*/locality, /*isDataCache=*/true);
  }
}

Value CpuKernelBuilder::slopeLog2() {
  if (spec.slopes == ::tilt::SlopeSource::Custom) {
    Value slopes = io.slopes;
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

void CpuEmitter::stagePositions() {
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

void CpuEmitter::stageAnchors() {
  // With position offsets a row may lie far from every key of this chunk
  // (i' - j in the millions), and m * (j - i') in f32 would lose the few
  // units that tell the keys apart. Each row's distances are therefore
  // taken from its anchor: the nearest key position, clamp(i', 0, Sk - 1).
  // anchor = clamp(i') - i' is an exact integer in f32 (|i'| < 2^24); the
  // bias splits exactly into a part relative to the anchor and a row
  // constant, which the softmax ignores and finalize() adds to the lse.
  forLoop(idx(0), idx(bm), idx(1), [&](Value i) {
    Value ip = add(add(rowStart, i), shift);
    Value nearest = maxI(idx(0), minI(ip, sub(sk, idx(1))));
    memref::StoreOp::create(b, indexToF32(sub(nearest, ip)), anchorRow,
                            ValueRange{i});
  });
}

void CpuKernelBuilder::writeRow(Value row, Value l, Value m,
                                function_ref<Value(int64_t)> accAt,
                                function_ref<Value(Value)> constants,
                                Value part) {
  Value any = arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, l, f32c(0.0));
  Value inv = arith::SelectOp::create(
      b, any, arith::DivFOp::create(b, f32c(1.0), l), f32c(0.0));
  Value invV = bcast(inv);
  // A split's partial goes to its slice of the f32 parts.
  auto at = [&](SmallVector<Value> index) {
    if (part)
      index.insert(index.begin(), part);
    return index;
  };
  for (int64_t c = 0; c < d; c += vl) {
    Value x = arith::MulFOp::create(b, accAt(c), invV);
    vector::StoreOp::create(b, part ? x : fromF32(x),
                            part ? io.outParts : io.out,
                            at(qIndex(row, idx(c))));
  }
  Value lse = part ? io.lseParts : io.lseOut;
  if (!lse)
    return;
  Value logL =
      math::Log2Op::create(b, arith::SelectOp::create(b, any, l, f32c(1.0)));
  Value value =
      arith::MulFOp::create(b, arith::AddFOp::create(b, m, logL), f32c(kLn2));
  // A split's lse leaves the row constants out (with far position offsets
  // they are ~1e7, where f32 keeps no fraction to weigh the parts by);
  // split 0 puts them in lse_out for the merge to add back.
  if (!part)
    value = constants(value);
  value = arith::SelectOp::create(b, any, value, f32c(-INFINITY));
  SmallVector<Value> index = spec.varlen
                                 ? SmallVector<Value>{head, add(seqQ0, row)}
                                 : SmallVector<Value>{batch, head, row};
  memref::StoreOp::create(b, value, lse, at(index));
  if (part)
    ifThen(arith::CmpIOp::create(b, arith::CmpIPredicate::eq, part, idx(0)),
           [&] {
             memref::StoreOp::create(b, constants(f32c(0.0)), io.lseOut, index);
           });
}

Value CpuKernelBuilder::addAnchorConstant(Value lse, Value a) {
  Value slope = arith::MulFOp::create(b, slope2, f32c(1.0 / kLog2E));
  if (spec.bias == ::tilt::BiasKind::AlibiSymmetric) {
    slope = arith::NegFOp::create(b, slope);
    a = math::AbsFOp::create(b, a);
  }
  return math::FmaOp::create(b, slope, a, lse);
}

void CpuEmitter::finalize() {
  // o = Acc / l; lse = (m + log2 l) * ln 2 plus what the positions form and
  // the anchors took out of the scores.
  forLoop(idx(0), rows, idx(1), [&](Value i) {
    Value l = memref::LoadOp::create(b, lRow, ValueRange{i});
    Value m = memref::LoadOp::create(b, mRow, ValueRange{i});
    writeRow(
        add(rowStart, i), l, m,
        [&](int64_t c) {
          return vector::LoadOp::create(b, vecF32, acc, ValueRange{i, idx(c)});
        },
        [&](Value value) {
          if (posRef) {
            Value ref = memref::LoadOp::create(b, posRef, ValueRange{i});
            // Scores were shifted by -m * pos[i'] (natural units); undo it.
            Value slope = arith::MulFOp::create(b, slope2, f32c(1.0 / kLog2E));
            value = math::FmaOp::create(b, slope, ref, value);
          }
          if (anchorRow)
            value = addAnchorConstant(
                value, memref::LoadOp::create(b, anchorRow, ValueRange{i}));
          return value;
        });
  });
}

KernelOperands mlir::tilt::operandsOf(AttentionOp op) {
  KernelOperands io = sharedOperands(op);
  io.out = op.getOut();
  io.lseOut = op.getLseOut();
  io.outParts = op.getOutParts();
  io.lseParts = op.getLseParts();
  return io;
}

std::unique_ptr<CpuKernelBuilder>
mlir::tilt::makeCpuEmitter(AttentionOp op, ImplicitLocOpBuilder &b,
                           bool nativeBf16Dot) {
  switch (op.getConfigAttr().getVariant()) {
  case KernelVariant::cpu_avx2:
  case KernelVariant::cpu_avx512:
  case KernelVariant::cpu_avx512bf16:
    return makeVectorEmitter(op, b, nativeBf16Dot);
  case KernelVariant::cpu_amx:
    return makeAmxEmitter(op, b);
  case KernelVariant::cpu_decode_avx2:
  case KernelVariant::cpu_decode_avx512:
    return makeDecodeEmitter(op, b, nativeBf16Dot);
  case KernelVariant::gpu_sm80:
  case KernelVariant::gpu_sm90a:
  case KernelVariant::gpu_decode_sm80:
  case KernelVariant::gpu_bwd_sm80:
  case KernelVariant::cpu_bwd_avx2:
  case KernelVariant::cpu_bwd_avx512:
  case KernelVariant::cpu_bwd_avx512bf16:
    break;
  }
  return nullptr;
}
