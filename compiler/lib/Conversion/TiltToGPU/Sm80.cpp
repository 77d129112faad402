//===- Sm80.cpp - GPU kernels for sm_80+: cp.async, ldmatrix, mma.sync ----===//
//
// The gpu_sm80 variant's loads and products: the Q block and num_stages K/V
// stages reach padded shared-memory rows through cp.async groups; Q K^T and
// P V run on mma.sync m16n8k16 from ldmatrix fragments (Q's kept in
// registers for D <= 128, V's through ldmatrix.trans), P re-packed from the
// score accumulators as A fragments.
//
// f16 uses nvgpu.mma.sync; bf16 uses nvvm.mma.sync directly, because the
// nvgpu -> nvvm lowering of MLIR 22 does not infer PTX types for bf16
// operands (bf16 pairs travel as i32 registers).
//
//===----------------------------------------------------------------------===//

#include "GpuEmitter.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::tilt;

namespace {

class Sm80Emitter final : public GpuEmitter {
public:
  using GpuEmitter::GpuEmitter;

private:
  int64_t layOutTiles(int64_t e) override;
  void loadQ(Value isLeader) override;
  void issuePrologue() override;
  void awaitKeyBlock(Value kb, Value ahead, Value isLeader) override;
  SmallVector<Value> scores(Value slot, Value bufferRow, int64_t mi,
                            Value zero2x2) override;
  void accumulatePV(Value slot, Value bufferRow, ArrayRef<Value> p,
                    Value *acc) override;

  /// cp.async of `count` rows x D of each source into its destination
  /// (pairs: Q alone, or K and V, which share the index math and, paged,
  /// the block-table reads).
  void loadTile(ArrayRef<std::pair<Value, Value>> srcDst, bool isQ,
                Value bufferRow, Value rowBase, Value rows, int64_t count);
  void issueKeyBlock(Value kb);
  Value commit() { return ops.commit(); }
  Value ldmatrix(Value mem, Value row, Value col, bool transpose) {
    return ops.ldmatrix(mem, row, col, transpose);
  }
  Value rowPair(Value frag4, int64_t first) {
    return ops.rowPair(frag4, first);
  }
  Value mma(Value a, Value bFrag, Value c) { return ops.mma(a, bFrag, c); }
  Value qFragment(int64_t mi, int64_t kk);

  Sm80Ops ops{b, elt};
  Value qSmem, kSmem, vSmem;
  SmallVector<SmallVector<Value>> qFrags; ///< [mi][kk], when kept
};

} // namespace

int64_t Sm80Emitter::layOutTiles(int64_t e) {
  int64_t offset = 0;
  smemRoot = rawSmem;
  qSmem = smemView(offset, {bm, dp}, elt);
  offset += bm * dp * e;
  kSmem = smemView(offset, {stages * bn, dp}, elt);
  offset += stages * bn * dp * e;
  vSmem = smemView(offset, {stages * bn, dp}, elt);
  offset += stages * bn * dp * e;
  return offset;
}

void Sm80Emitter::loadQ(Value) {
  // Q block, then the fragments it feeds every key block.
  loadTile({{q, qSmem}}, true, idx(0), rowStart, idx(bm), bm);
  Value group = commit();
  nvgpu::DeviceAsyncWaitOp::create(b, group, b.getI32IntegerAttr(0));
  barrier();
  if (d <= 128) {
    qFrags.assign(mt, {});
    for (int64_t mi = 0; mi < mt; ++mi) {
      Value row =
          add(add(mul(warp, idx(16 * mt)), idx(16 * mi)), remU(lane, idx(16)));
      for (int64_t kk = 0; kk < d / 16; ++kk) {
        Value col = add(idx(16 * kk), mul(divU(lane, idx(16)), idx(8)));
        qFrags[mi].push_back(ldmatrix(qSmem, row, col, false));
      }
    }
  }
}

void Sm80Emitter::issuePrologue() {
  for (int64_t s = 0; s + 1 < stages; ++s) {
    Value kb = add(kbBegin, idx(s));
    ifThen(lt(kb, kbEnd), [&] { issueKeyBlock(kb); });
    commit();
  }
}

void Sm80Emitter::awaitKeyBlock(Value kb, Value ahead, Value) {
  ifThen(lt(ahead, kbEnd), [&] { issueKeyBlock(ahead); });
  Value grp = commit();
  nvgpu::DeviceAsyncWaitOp::create(b, grp, b.getI32IntegerAttr(stages - 1));
  barrier();
}

SmallVector<Value> Sm80Emitter::scores(Value slot, Value bufferRow, int64_t mi,
                                       Value zero2x2) {
  SmallVector<Value> s(bn / 8, zero2x2);
  for (int64_t kk = 0; kk < d / 16; ++kk) {
    Value a = qFragment(mi, kk);
    for (int64_t nt = 0; nt < bn / 8; nt += 2) {
      Value row =
          add(add(bufferRow, idx(nt * 8)),
              add(remU(lane, idx(8)), mul(divU(lane, idx(16)), idx(8))));
      Value col =
          add(idx(kk * 16), mul(remU(divU(lane, idx(8)), idx(2)), idx(8)));
      Value b4 = ldmatrix(kSmem, row, col, /*transpose=*/false);
      for (int64_t h = 0; h < 2; ++h) {
        Value bFrag = rowPair(b4, 2 * h);
        s[nt + h] = mma(a, bFrag, s[nt + h]);
      }
    }
  }
  return s;
}

void Sm80Emitter::accumulatePV(Value slot, Value bufferRow, ArrayRef<Value> p,
                               Value *acc) {
  for (int64_t kt = 0; kt < bn / 16; ++kt) {
    Value a = ops.aFragment(p[2 * kt], p[2 * kt + 1]);
    for (int64_t dt = 0; dt < d / 8; dt += 2) {
      Value row = add(add(bufferRow, idx(kt * 16)), remU(lane, idx(16)));
      Value col = add(idx(dt * 8), mul(divU(lane, idx(16)), idx(8)));
      Value b4 = ldmatrix(vSmem, row, col, /*transpose=*/true);
      for (int64_t h = 0; h < 2; ++h) {
        Value bFrag = rowPair(b4, 2 * h);
        acc[dt + h] = mma(a, bFrag, acc[dt + h]);
      }
    }
  }
}

/// cp.async of `count` rows x D of each source (sequence rows rowBase + r,
/// r < rows live, the rest zero-filled) into its destination's rows
/// bufferRow + r.
void Sm80Emitter::loadTile(ArrayRef<std::pair<Value, Value>> srcDst, bool isQ,
                           Value bufferRow, Value rowBase, Value rows,
                           int64_t count) {
  const int64_t chunksPerRow = d / 8;
  const int64_t total = count * chunksPerRow;
  Value hd = isQ ? head : kvHead;
  Value start = isQ ? qStart : kStart;
  Value seqLen = isQ ? sq : sk;
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  for (int64_t c0 = 0; c0 < total; c0 += threads) {
    Value chunk = add(tid, idx(c0));
    auto emitOne = [&] {
      Value r = divU(chunk, idx(chunksPerRow));
      Value col = mul(remU(chunk, idx(chunksPerRow)), idx(8));
      Value seqRow = add(rowBase, r);
      Value inside;
      SmallVector<Value> srcIdx;
      if (isQ && decode) {
        // The group's rows (head, query); see GpuEmitter::decodeQIndex.
        auto [index, inGroup] = decodeQIndex(seqRow, col);
        inside = andB(lt(r, rows), inGroup);
        srcIdx = index;
      } else {
        inside = andB(lt(r, rows), lt(seqRow, seqLen));
        // Out-of-range rows read nothing (0 source bytes: zero fill) from a
        // clamped, valid address (paged: a page of the sequence's own).
        Value safeRow = minI(seqRow, maxI(sub(seqLen, idx(1)), idx(0)));
        if (!isQ && blockTable) {
          srcIdx = pagedKeyIndex(safeRow);
          srcIdx.push_back(col);
        } else {
          srcIdx = spec.varlen
                       ? SmallVector<Value>{add(start, safeRow), hd, col}
                       : SmallVector<Value>{batch, hd, safeRow, col};
        }
      }
      Value n = select(inside, idx(8), idx(0));
      for (auto [src, dst] : srcDst)
        nvgpu::DeviceAsyncCopyOp::create(
            b, tokenType, dst, ValueRange{add(bufferRow, r), col}, src, srcIdx,
            b.getIndexAttr(8), n, b.getUnitAttr());
    };
    if (c0 + threads <= total)
      emitOne();
    else
      ifThen(lt(chunk, idx(total)), emitOne);
  }
}

void Sm80Emitter::issueKeyBlock(Value kb) {
  // Stage slot of key block kb.
  Value slot = remU(sub(kb, kbBegin), idx(stages));
  Value bufferRow = mul(slot, idx(bn));
  Value keyBase = mul(kb, idx(bn));
  loadTile({{k, kSmem}, {v, vSmem}}, false, bufferRow, keyBase, idx(bn), bn);
}

Value Sm80Ops::ldmatrix(Value mem, Value row, Value col, bool transpose) {
  return nvgpu::LdMatrixOp::create(b, VectorType::get({4, 2}, elt), mem,
                                   ValueRange{row, col}, transpose, 4u);
}

Value Sm80Ops::rowPair(Value frag4, int64_t first) {
  Value out = arith::ConstantOp::create(
      b,
      DenseElementsAttr::get(VectorType::get({2, 2}, elt), b.getZeroAttr(elt)));
  for (int64_t i = 0; i < 2; ++i)
    out = vector::InsertOp::create(
        b, vector::ExtractOp::create(b, frag4, ArrayRef<int64_t>{first + i}),
        out, ArrayRef<int64_t>{i});
  return out;
}

Value Sm80Ops::aFragment(Value lo, Value hi) {
  // A fragment registers: (row g, columns 2*t4..) of lo, (g + 8, ..) of lo,
  // then the same of hi.
  Value a = arith::ConstantOp::create(
      b,
      DenseElementsAttr::get(VectorType::get({4, 2}, elt), b.getZeroAttr(elt)));
  int64_t i = 0;
  for (Value tile : {lo, hi})
    for (int64_t r = 0; r < 2; ++r)
      a = vector::InsertOp::create(
          b,
          arith::TruncFOp::create(
              b, VectorType::get({2}, elt),
              vector::ExtractOp::create(b, tile, ArrayRef<int64_t>{r})),
          a, ArrayRef<int64_t>{i++});
  return a;
}

Value Sm80Ops::commit() {
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  return nvgpu::DeviceAsyncCreateGroupOp::create(b, tokenType, ValueRange{});
}

Value Sm80Ops::mma(Value a, Value bFrag, Value c) {
  Type f32 = b.getF32Type(), i32 = b.getI32Type();
  if (!isa<BFloat16Type>(elt))
    return nvgpu::MmaSyncOp::create(b, a, bFrag, c,
                                    ArrayRef<int64_t>{16, 8, 16});
  auto asI32 = [&](Value frag, int64_t n) {
    SmallVector<Value> regs;
    for (int64_t i = 0; i < n; ++i) {
      Value pair = vector::ExtractOp::create(b, frag, ArrayRef<int64_t>{i});
      Value word =
          vector::BitCastOp::create(b, VectorType::get({1}, i32), pair);
      regs.push_back(vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0}));
    }
    return regs;
  };
  SmallVector<Value> accs;
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 2; ++j)
      accs.push_back(vector::ExtractOp::create(b, c, ArrayRef<int64_t>{i, j}));
  auto resultType =
      LLVM::LLVMStructType::getLiteral(b.getContext(), {f32, f32, f32, f32});
  Value res = NVVM::MmaOp::create(
      b, resultType, asI32(a, 4), asI32(bFrag, 2), accs,
      ArrayRef<int64_t>{16, 8, 16}, std::nullopt, std::nullopt,
      std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::bf16, NVVM::MMATypes::bf16},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  Value out = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({2, 2}, f32),
                                b.getF32FloatAttr(0.0f)));
  for (int64_t i = 0; i < 4; ++i) {
    Value x = LLVM::ExtractValueOp::create(b, res, ArrayRef<int64_t>{i});
    out = vector::InsertOp::create(b, x, out, ArrayRef<int64_t>{i / 2, i % 2});
  }
  return out;
}

Value Sm80Emitter::qFragment(int64_t mi, int64_t kk) {
  if (!qFrags.empty())
    return qFrags[mi][kk];
  Value row =
      add(add(mul(warp, idx(16 * mt)), idx(16 * mi)), remU(lane, idx(16)));
  Value col = add(idx(16 * kk), mul(divU(lane, idx(16)), idx(8)));
  return ldmatrix(qSmem, row, col, /*transpose=*/false);
}

std::unique_ptr<GpuEmitter>
mlir::tilt::makeSm80Emitter(const ::tilt::AttentionSpec &spec,
                            TileConfigAttr config, ImplicitLocOpBuilder &b,
                            ValueRange args) {
  return std::make_unique<Sm80Emitter>(spec, config, b, args);
}
