//===- TiltToGPU.cpp - tilt.attention -> tensor-core kernel in a gpu.module ===//
//
// Lowers a spec function (one tensor-form tilt.attention) to a gpu.module
// holding one kernel, `tilt_attention`, with the CUDA parameter ABI of
// runtime/include/tilt/KernelABI.h. One CTA computes one query block of
// `block_m` rows of one (batch, head); each warp owns 16 of those rows:
//
//   Q block  -> shared memory (cp.async), fragments via ldmatrix (kept in
//               registers for D <= 128, re-read from shared memory above)
//   for each key block of block_n keys inside the visible range,
//   num_stages blocks in flight (cp.async groups):
//     S  = Q K^T                 mma.sync m16n8k16, f32 accumulators
//     S  = S * scale * log2(e) + bias (from indices, in f32); masks -> -inf
//     m' = max(m, rowmax S)      quad shuffles (a row lives in 4 lanes)
//     P  = exp2(S - m'); l = l * exp2(m - m') + rowsum P
//     O  = O * exp2(m - m') + P V  (P re-packed from the S accumulators as
//                                   A fragments, V through ldmatrix.trans)
//   o = O / l;  lse = (m + log2 l) * ln 2
//
// Rows that see no key end with l = 0: output 0, lse = -inf. Blocks that
// need no structural mask (causal, window, sequence tail) run a variant of
// the block body without the per-element predicates.
//
// Shared-memory rows are padded by 8 elements (16 bytes), which makes the
// 8-row ldmatrix phases and the cp.async stores bank-conflict free for every
// supported head dim.
//
// f16 uses nvgpu.mma.sync; bf16 uses nvvm.mma.sync directly, because the
// nvgpu -> nvvm lowering of MLIR 22 does not infer PTX types for bf16
// operands (bf16 pairs travel as i32 registers).
//
// gpu_sm90a replaces the loads by TMA boxes on mbarriers (64-column chunks,
// 128-byte swizzle, from a 1024-byte aligned shared base) and both products
// by warpgroup MMAs: S = Q K^T from two K-major shared-memory descriptors,
// and O += P V with P kept in registers (the score accumulators repacked as
// the A fragment, as on sm_80) and V an MN-major descriptor. It uses
// nvvm.wgmma.mma_async rather than nvgpu.warpgroup.mma because the softmax
// needs the accumulator's elements, which nvgpu's accumulator type does not
// expose, and inline PTX for the register-A form, which neither op has.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Configs.h"
#include "tilt/Compiler/Log2Units.h"
#include "tilt/Compiler/Passes.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/KernelABI.h"
#include "tilt/Slopes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <cmath>
#include <limits>

namespace mlir::tilt {
#define GEN_PASS_DEF_CONVERTTILTTOGPU
#include "tilt/Compiler/Passes.h.inc"
} // namespace mlir::tilt

using namespace mlir;
using namespace mlir::tilt;

namespace {

/// Shared-memory row padding in elements (16 bytes).
constexpr int64_t kPad = 8;

} // namespace

TileConfigAttr mlir::tilt::getDefaultGpuConfig(MLIRContext *ctx,
                                               KernelVariant variant,
                                               int64_t headDim) {
  if (variant == KernelVariant::gpu_sm90a)
    // Two warpgroups of 64 query rows; 64-key blocks keep the scores, P and
    // O of a thread inside the register file for every bias form at D <= 128
    // (128-key blocks spill with a window: ptxas reports 255 registers).
    return TileConfigAttr::get(ctx, variant, 128, 64, 8, 2);
  // sm_80: 16 query rows per warp, 8 warps x 16 = 128 rows. The defaults
  // fit the 99 KiB of shared memory a block may opt into on sm_86/sm_89 as
  // well as the 163 KiB of an A100: D <= 64 streams 64-key blocks double-
  // buffered (55 KiB at D = 64); D <= 128 streams 32-key blocks three deep
  // (87 KiB at D = 128). D > 128: half the rows and 32-key blocks so the O
  // accumulators (D/2 registers a thread) fit; 101 KiB at D = 256, which
  // needs an A100/H100-class part (a smaller tile config elsewhere).
  if (headDim <= 64)
    return TileConfigAttr::get(ctx, variant, 128, 64, 8, 2);
  if (headDim <= 128)
    return TileConfigAttr::get(ctx, variant, 128, 32, 8, 3);
  return TileConfigAttr::get(ctx, variant, 64, 32, 4, 2);
}

int64_t mlir::tilt::gpuSharedMemoryBytes(const ::tilt::AttentionSpec &spec,
                                         TileConfigAttr config) {
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  const int64_t bn = config.getBlockN();
  int64_t bytes;
  if (config.getVariant() == KernelVariant::gpu_sm90a) {
    // Unpadded swizzled tiles from a 1024-byte aligned start: Q and the K/V
    // stages.
    const int64_t row = spec.headDim * e;
    bytes = 1024 + config.getBlockM() * row +
            2 * config.getNumStages() * bn * row;
  } else {
    const int64_t row = (spec.headDim + kPad) * e;
    bytes = config.getBlockM() * row + 2 * config.getNumStages() * bn * row;
  }
  // Per key block: the key mask / positions bias (f32) and per-warp counts.
  if (spec.keyPaddingMask)
    bytes += bn * 4 + 4 * 64;
  return bytes;
}

namespace {

/// Builds the kernel body of both variants. All per-thread register arrays
/// are unrolled here (C++ loops), so the IR holds only SSA values and static
/// indices: nothing is dynamically indexed in registers.
///
/// The variants share the geometry, the bias and mask arithmetic, the online
/// softmax and the epilogue: a warp owns 16 query rows and sees scores in
/// the m16n8 accumulator layout either way (wgmma's m64nN accumulator is, per
/// warp of the warpgroup, the same layout as 8-column mma.sync tiles). They
/// differ in how tiles reach shared memory (cp.async vs TMA + mbarrier) and
/// in the matrix products (mma.sync from ldmatrix fragments vs wgmma from
/// shared-memory descriptors).
class GpuEmitter {
public:
  GpuEmitter(const ::tilt::AttentionSpec &spec, TileConfigAttr config,
              ImplicitLocOpBuilder &b, ValueRange args)
      : spec(spec), config(config), b(b) {
    bm = config.getBlockM();
    bn = config.getBlockN();
    warps = config.getNumWarps();
    stages = config.getNumStages();
    d = spec.headDim;
    dp = d + kPad;
    mt = bm / (16 * warps);
    threads = 32 * warps;
    f32 = b.getF32Type();
    i32 = b.getI32Type();
    elt = spec.dtype == ::tilt::DType::BF16 ? Type(b.getBF16Type())
                                            : Type(b.getF16Type());
    q = args[0];
    k = args[1];
    v = args[2];
    o = args[3];
    lse = args[4];
    unsigned next = 5;
    if (spec.slopes == ::tilt::SlopeSource::Custom && spec.hasAlibi())
      slopes = args[next++];
    if (spec.keyPaddingMask)
      kpm = args[next++];
    if (spec.varlen) {
      cuQ = args[next++];
      cuK = args[next++];
    }
    hopper = config.getVariant() == KernelVariant::gpu_sm90a;
    if (hopper) {
      mt = 1;
      dp = d; // TMA tiles: 64-column chunks, 128-byte swizzle, no padding
      MLIRContext *ctx = b.getContext();
      auto map = [&](Value ptr, int64_t rows) {
        auto type = nvgpu::TensorMapDescriptorType::get(
            ctx, tileType(rows), nvgpu::TensorMapSwizzleKind::SWIZZLE_128B,
            nvgpu::TensorMapL2PromoKind::L2PROMO_NONE,
            nvgpu::TensorMapOOBKind::OOB_ZERO,
            nvgpu::TensorMapInterleaveKind::INTERLEAVE_NONE);
        return UnrealizedConversionCastOp::create(b, type, ptr).getResult(0);
      };
      tmaQ = map(args[next], bm);
      tmaK = map(args[next + 1], bn);
      tmaV = map(args[next + 2], bn);
    }
  }

  void emit();

private:
  // --- small builders -------------------------------------------------------
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value i32c(int64_t v) {
    return arith::ConstantOp::create(b, b.getI32IntegerAttr(int32_t(v)));
  }
  Value f32c(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(float(v)));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value divU(Value x, Value y) { return arith::DivUIOp::create(b, x, y); }
  Value remU(Value x, Value y) { return arith::RemUIOp::create(b, x, y); }
  Value minI(Value x, Value y) { return arith::MinSIOp::create(b, x, y); }
  Value maxI(Value x, Value y) { return arith::MaxSIOp::create(b, x, y); }
  Value cmpI(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, p, x, y);
  }
  Value lt(Value x, Value y) { return cmpI(arith::CmpIPredicate::slt, x, y); }
  Value le(Value x, Value y) { return cmpI(arith::CmpIPredicate::sle, x, y); }
  Value andB(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y);
  }
  Value fadd(Value x, Value y) { return arith::AddFOp::create(b, x, y); }
  Value fmul(Value x, Value y) { return arith::MulFOp::create(b, x, y); }
  Value fsub(Value x, Value y) { return arith::SubFOp::create(b, x, y); }
  Value fmax(Value x, Value y) { return arith::MaximumFOp::create(b, x, y); }
  Value fma(Value x, Value y, Value z) {
    return fadd(fmul(x, y), z); // contracted to fma by the backend
  }
  Value toF32(Value i) {
    Value i64 = arith::IndexCastOp::create(b, b.getI64Type(), i);
    return arith::SIToFPOp::create(b, f32, i64);
  }
  Value toIndex(Value i) {
    return arith::IndexCastOp::create(b, b.getIndexType(), i);
  }
  /// One PTX instruction `op` on f32 without side effects, so the backend
  /// may schedule and combine it freely.
  Value ptxUnary(StringRef op, Value x) {
    auto asmOp = LLVM::InlineAsmOp::create(
        b, f32, ValueRange{x}, (op + " $0, $1;").str(), "=f,f",
        /*has_side_effects=*/false, /*is_align_stack=*/false,
        LLVM::tailcallkind::TailCallKind::None,
        LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
        ArrayAttr());
    return asmOp.getResult(0);
  }
  Value exp2(Value x) { return ptxUnary("ex2.approx.ftz.f32", x); }
  Value log2(Value x) { return ptxUnary("lg2.approx.ftz.f32", x); }
  Value shuffleXor(Value x, int32_t offset) {
    return gpu::ShuffleOp::create(b, x, offset, 32, gpu::ShuffleMode::XOR)
        .getShuffleResult();
  }
  void barrier() { gpu::BarrierOp::create(b); }
  void ifThen(Value cond, function_ref<void()> body) {
    scf::IfOp::create(b, cond, [&](OpBuilder &, Location) {
      body();
      scf::YieldOp::create(b);
    });
  }
  Value smemView(int64_t byteOffset, ArrayRef<int64_t> shape, Type type) {
    auto space = gpu::AddressSpaceAttr::get(b.getContext(),
                                            gpu::AddressSpace::Workgroup);
    return memref::ViewOp::create(b, MemRefType::get(shape, type, MemRefLayoutAttrInterface(), space),
                                  smemRoot, idx(byteOffset), ValueRange{});
  }

  // --- kernel pieces --------------------------------------------------------
  void emitGeometry();
  Value slope2();
  void loadTile(Value src, bool isQ, Value dst, Value bufferRow, Value rowBase,
                Value rows, int64_t count);
  void issueKeyBlock(Value kb);
  Value ldmatrix(Value mem, Value row, Value col, bool transpose);
  /// Rows first, first+1 of a vector<4x2xT> as a vector<2x2xT> (a B
  /// fragment out of an x4 ldmatrix).
  Value rowPair(Value frag4, int64_t first) {
    Value out = arith::ConstantOp::create(
        b, DenseElementsAttr::get(VectorType::get({2, 2}, elt),
                                  b.getZeroAttr(elt)));
    for (int64_t i = 0; i < 2; ++i)
      out = vector::InsertOp::create(
          b,
          vector::ExtractOp::create(b, frag4, ArrayRef<int64_t>{first + i}),
          out, ArrayRef<int64_t>{i});
    return out;
  }
  Value mma(Value a, Value bFrag, Value c);
  Value qFragment(int64_t mi, int64_t kk);
  void emitKeyBlockLoop();
  SmallVector<Value> blockBody(Value kb, ValueRange state, bool masked);
  void stageKeyMask(Value kb, Value base, Value &blockCount);
  void emitEpilogue(ValueRange state);

  // --- sm_90a -----------------------------------------------------------
  /// A TMA box: one 64-column chunk of `rows` rows.
  MemRefType tileType(int64_t rows) {
    auto space = gpu::AddressSpaceAttr::get(b.getContext(),
                                            gpu::AddressSpace::Workgroup);
    return MemRefType::get({1, rows, 64}, elt, MemRefLayoutAttrInterface(),
                           space);
  }
  /// The chunk at `byteOffset` (from the 1024-byte aligned base) as a box.
  Value tileAt(Value byteOffset, int64_t rows) {
    return memref::ViewOp::create(b, tileType(rows), smemRoot, byteOffset,
                                  ValueRange{});
  }
  /// A wgmma shared-memory matrix descriptor (128-byte swizzle) for the
  /// matrix starting `byteOffset` past the aligned base.
  Value descriptor(Value byteOffset, int64_t lbo, int64_t sbo);
  Value wgmma(Value acc, Value descA, Value descB, int64_t n);
  Value zeroAccumulator(int64_t n);
  void tmaIssue(Value kb);
  void waitBarrier(Value id, Value parity);
  SmallVector<Value> hopperScores(Value slot);
  void hopperPV(Value slot, ArrayRef<Value> p, Value *acc);
  Value wgmmaRegisterA(Value acc, ArrayRef<Value> a, Value descB, int64_t n);
  SmallVector<Value> tilesOf(Value acc, int64_t n);
  Value structOf(ArrayRef<Value> tiles);
  Value bhIndex(bool isQ) {
    if (spec.varlen)
      return isQ ? head : kvHead;
    int64_t hx = isQ ? spec.heads : spec.kvHeads;
    return add(mul(batch, idx(hx)), isQ ? head : kvHead);
  }

  const ::tilt::AttentionSpec &spec;
  TileConfigAttr config;
  ImplicitLocOpBuilder &b;
  bool hopper = false;
  int64_t bm, bn, warps, stages, d, dp, mt, threads;
  Value tmaQ, tmaK, tmaV, bars, alignPad, smemBase;
  int64_t qOff = 0, kOff = 0, vOff = 0; ///< bytes past the aligned base
  Type f32, i32, elt;
  Value q, k, v, o, lse, slopes, kpm, cuQ, cuK;

  // Per-thread geometry.
  Value tid, lane, warp, g, t4;
  Value batch, head, kvHead, qStart, kStart, sq, sk, shift, rowStart;
  Value firstRow, lastRow; ///< i' of the block's first / last live row
  Value kbBegin, kbEnd;
  /// smemRoot: the dynamic shared memory (sm_90a: from its first
  /// 1024-byte aligned byte, as swizzled TMA tiles need).
  Value rawSmem, smemRoot, qSmem, kSmem, vSmem, maskSmem, countSmem;
  Value scale2, slope;
  Value posBase0; ///< positions: valid keys before the first block
  SmallVector<SmallVector<Value>> qFrags; ///< [mi][kk], when kept
};

void GpuEmitter::emitGeometry() {
  Type index = b.getIndexType();
  tid = gpu::ThreadIdOp::create(b, index, gpu::Dimension::x);
  lane = remU(tid, idx(32));
  warp = divU(tid, idx(32));
  g = divU(lane, idx(4));
  t4 = remU(lane, idx(4));
  Value qb = gpu::BlockIdOp::create(b, index, gpu::Dimension::x);
  head = gpu::BlockIdOp::create(b, index, gpu::Dimension::y);
  batch = gpu::BlockIdOp::create(b, index, gpu::Dimension::z);
  kvHead = divU(head, idx(spec.heads / spec.kvHeads));
  if (spec.varlen) {
    auto load = [&](Value cu, Value i) {
      return toIndex(memref::LoadOp::create(b, cu, ValueRange{i}));
    };
    Value next = add(batch, idx(1));
    qStart = load(cuQ, batch);
    kStart = load(cuK, batch);
    sq = sub(load(cuQ, next), qStart);
    sk = sub(load(cuK, next), kStart);
  } else {
    qStart = kStart = idx(0);
    sq = memref::DimOp::create(b, q, 2);
    sk = memref::DimOp::create(b, k, 2);
  }
  shift = sub(sk, sq);
  rowStart = mul(qb, idx(bm));
  Value live = minI(idx(bm), sub(sq, rowStart));
  firstRow = add(rowStart, shift);
  lastRow = add(firstRow, sub(live, idx(1)));
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
  scale2 = f32c(spec.effectiveScale() * kLog2E);
}

Value GpuEmitter::slope2() {
  if (!spec.hasAlibi())
    return f32c(0.0);
  if (slopes) {
    Value s = memref::LoadOp::create(b, slopes, ValueRange{batch, head});
    return fmul(s, f32c(kLog2E));
  }
  // Standard slopes of this rank's heads: a select chain over the (static)
  // head count, evaluated once per CTA.
  std::vector<float> table = ::tilt::standardSlopes(spec);
  Value s = f32c(double(table.back()) * kLog2E);
  for (int64_t h = int64_t(table.size()) - 2; h >= 0; --h)
    s = select(cmpI(arith::CmpIPredicate::eq, head, idx(h)),
               f32c(double(table[h]) * kLog2E), s);
  return s;
}

/// cp.async of `count` rows x D of `src` (sequence rows rowBase + r, r <
/// rows live, the rest zero-filled) into `dst` rows bufferRow + r.
void GpuEmitter::loadTile(Value src, bool isQ, Value dst, Value bufferRow,
                           Value rowBase, Value rows, int64_t count) {
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
      Value inside = andB(lt(r, rows), lt(seqRow, seqLen));
      // Out-of-range rows read nothing (0 source bytes: zero fill) from a
      // clamped, valid address.
      Value safeRow = minI(seqRow, maxI(sub(seqLen, idx(1)), idx(0)));
      SmallVector<Value> srcIdx =
          spec.varlen ? SmallVector<Value>{add(start, safeRow), hd, col}
                      : SmallVector<Value>{batch, hd, safeRow, col};
      Value n = select(inside, idx(8), idx(0));
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

void GpuEmitter::issueKeyBlock(Value kb) {
  // Stage slot of key block kb.
  Value slot = remU(sub(kb, kbBegin), idx(stages));
  Value bufferRow = mul(slot, idx(bn));
  Value keyBase = mul(kb, idx(bn));
  loadTile(k, false, kSmem, bufferRow, keyBase, idx(bn), bn);
  loadTile(v, false, vSmem, bufferRow, keyBase, idx(bn), bn);
}

Value GpuEmitter::ldmatrix(Value mem, Value row, Value col, bool transpose) {
  return nvgpu::LdMatrixOp::create(b, VectorType::get({4, 2}, elt), mem,
                                   ValueRange{row, col}, transpose, 4u);
}

/// c += a * b for one m16n8k16 tile: a vector<4x2xT>, b vector<2x2xT>, c
/// vector<2x2xf32>.
Value GpuEmitter::mma(Value a, Value bFrag, Value c) {
  if (!isa<BFloat16Type>(elt))
    return nvgpu::MmaSyncOp::create(b, a, bFrag, c,
                                    ArrayRef<int64_t>{16, 8, 16});
  auto asI32 = [&](Value frag, int64_t n) {
    SmallVector<Value> regs;
    for (int64_t i = 0; i < n; ++i) {
      Value pair = vector::ExtractOp::create(b, frag, ArrayRef<int64_t>{i});
      Value word = vector::BitCastOp::create(b, VectorType::get({1}, i32),
                                             pair);
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
      std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::bf16,
                                    NVVM::MMATypes::bf16},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  Value out = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({2, 2}, f32),
                                b.getF32FloatAttr(0.0f)));
  for (int64_t i = 0; i < 4; ++i) {
    Value x = LLVM::ExtractValueOp::create(b, res, ArrayRef<int64_t>{i});
    out = vector::InsertOp::create(b, x, out,
                                   ArrayRef<int64_t>{i / 2, i % 2});
  }
  return out;
}

Value GpuEmitter::qFragment(int64_t mi, int64_t kk) {
  if (!qFrags.empty())
    return qFrags[mi][kk];
  Value row = add(add(mul(warp, idx(16 * mt)), idx(16 * mi)),
                  remU(lane, idx(16)));
  Value col = add(idx(16 * kk), mul(divU(lane, idx(16)), idx(8)));
  return ldmatrix(qSmem, row, col, /*transpose=*/false);
}

/// Positions / key padding: per key of block kb, the additive term of its
/// score column (f32 in shared memory): -inf for padded keys and keys past
/// the sequence, else slope * (valid keys before it, counted from the first
/// visible block) for the positions form, 0 otherwise. Also returns the
/// block's count of valid keys. Every thread of the CTA takes part.
void GpuEmitter::stageKeyMask(Value kb, Value base, Value &blockCount) {
  const int64_t chunks = (bn + threads - 1) / threads;
  Value keyBase = mul(kb, idx(bn));
  Value full = i32c(-1);
  SmallVector<Value> valid(chunks), ballots(chunks);
  for (int64_t c = 0; c < chunks; ++c) {
    Value t = add(tid, idx(c * threads));
    Value j = add(keyBase, t);
    Value inRange = andB(lt(t, idx(bn)), lt(j, sk));
    Value safeJ = minI(j, maxI(sub(sk, idx(1)), idx(0)));
    Value m = memref::LoadOp::create(b, kpm, ValueRange{batch, safeJ});
    Value on = cmpI(arith::CmpIPredicate::ne, m,
                    arith::ConstantOp::create(b, b.getI8IntegerAttr(0)));
    valid[c] = andB(inRange, on);
    ballots[c] = NVVM::VoteSyncOp::create(b, i32, full, valid[c],
                                          NVVM::VoteSyncKind::ballot);
    Value warpTotal = LLVM::CtPopOp::create(b, ballots[c]);
    ifThen(cmpI(arith::CmpIPredicate::eq, lane, idx(0)), [&] {
      memref::StoreOp::create(b, warpTotal, countSmem,
                              ValueRange{add(warp, idx(c * warps))});
    });
  }
  barrier();
  const int64_t slots = chunks * warps;
  Value total = i32c(0);
  SmallVector<Value> before(chunks, Value());
  for (int64_t s = 0; s < slots; ++s) {
    Value n = memref::LoadOp::create(b, countSmem, ValueRange{idx(s)});
    // Slot s precedes chunk c's warp w when s < c * warps + w.
    for (int64_t c = 0; c < chunks; ++c) {
      Value mine = add(warp, idx(c * warps));
      Value add_ = select(lt(idx(s), mine), n, i32c(0));
      before[c] = before[c] ? arith::AddIOp::create(b, before[c], add_) : add_;
    }
    total = arith::AddIOp::create(b, total, n);
  }
  Value laneMask = arith::SubIOp::create(
      b, arith::ShLIOp::create(b, i32c(1),
                               arith::IndexCastOp::create(b, i32, lane)),
      i32c(1));
  Value negInf = f32c(-std::numeric_limits<double>::infinity());
  for (int64_t c = 0; c < chunks; ++c) {
    Value t = add(tid, idx(c * threads));
    Value inWarp = LLVM::CtPopOp::create(
        b, arith::AndIOp::create(b, ballots[c], laneMask));
    Value value = f32c(0.0);
    if (spec.bias == ::tilt::BiasKind::AlibiPositions) {
      Value count = arith::AddIOp::create(
          b, arith::AddIOp::create(b, base, before[c]), inWarp);
      value = fmul(slope, arith::SIToFPOp::create(b, f32, count));
    }
    value = select(valid[c], value, negInf);
    ifThen(lt(t, idx(bn)), [&] {
      memref::StoreOp::create(b, value, maskSmem, ValueRange{t});
    });
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
    SmallVector<Value> s(bn / 8, zero2x2);
    if (hopper)
      s = hopperScores(slot);
    for (int64_t kk = 0; kk < (hopper ? 0 : d / 16); ++kk) {
      Value a = qFragment(mi, kk);
      for (int64_t nt = 0; nt < bn / 8; nt += 2) {
        Value row = add(add(bufferRow, idx(nt * 8)),
                        add(remU(lane, idx(8)),
                            mul(divU(lane, idx(16)), idx(8))));
        Value col = add(idx(kk * 16),
                        mul(remU(divU(lane, idx(8)), idx(2)), idx(8)));
        Value b4 = ldmatrix(kSmem, row, col, /*transpose=*/false);
        for (int64_t h = 0; h < 2; ++h) {
          Value bFrag = rowPair(b4, 2 * h);
          s[nt + h] = mma(a, bFrag, s[nt + h]);
        }
      }
    }

    // Scores in log2 units with bias and masks; row max.
    Value *st = &next[mi * perTile];
    SmallVector<SmallVector<Value>> val(2); // [row][nt*2+e]
    Value rowMax[2];
    for (int64_t r = 0; r < 2; ++r) {
      Value rowIdx = add(add(rowStart, mul(warp, idx(16 * mt))),
                         add(idx(16 * mi + 8 * r), g));
      Value ip = add(rowIdx, shift); // i'
      Value jrel0 = sub(add(keyBase, colBase), ip);
      Value jrel0F = toF32(jrel0);
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
          Value x = vector::ExtractOp::create(b, s[nt],
                                              ArrayRef<int64_t>{r, e});
          int64_t off = nt * 8 + e;
          Value bias;
          switch (spec.bias) {
          case ::tilt::BiasKind::Alibi:
            bias = fmul(slope, fadd(jrel0F, f32c(double(off))));
            break;
          case ::tilt::BiasKind::AlibiSymmetric:
          {
            Value jr = fadd(jrel0F, f32c(double(off)));
            Value absJr = fmax(jr, arith::NegFOp::create(b, jr));
            bias = fmul(arith::NegFOp::create(b, slope), absJr);
          }
            break;
          default:
            break;
          }
          Value y = bias ? fma(x, scale2, bias) : fmul(x, scale2);
          if (kpmTerm)
            y = fadd(y, maskTerm[nt * 2 + e]);
          if (masked) {
            Value vis = cmpI(arith::CmpIPredicate::sgt, tailRoom, i32c(off));
            if (spec.causal)
              vis = andB(vis, cmpI(arith::CmpIPredicate::sge, causalRoom,
                                   i32c(off)));
            if (spec.window)
              vis = andB(vis, cmpI(arith::CmpIPredicate::sgt, windowRoom,
                                   i32c(-off)));
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
          tile = vector::InsertOp::create(b, pe, tile,
                                          ArrayRef<int64_t>{r, e});
        }
      p[nt] = tile;
    }
    for (int64_t r = 0; r < 2; ++r)
      st[2 + r] = fma(st[2 + r], alpha[r], rowSum[r]);
    Value *acc = &st[4];
    for (int64_t dt = 0; dt < d / 8; ++dt) {
      Value scaled = acc[dt];
      for (int64_t r = 0; r < 2; ++r) {
        Value rowV = vector::ExtractOp::create(b, scaled,
                                               ArrayRef<int64_t>{r});
        Value sc = vector::BroadcastOp::create(
            b, VectorType::get({2}, f32), alpha[r]);
        scaled = vector::InsertOp::create(
            b, arith::MulFOp::create(b, rowV, sc), scaled,
            ArrayRef<int64_t>{r});
      }
      acc[dt] = scaled;
    }

    // O += P V: k-steps of 16 keys; V fragments by ldmatrix.trans, two
    // d-tiles per load (sm_90a: P through shared memory into wgmma).
    if (hopper)
      hopperPV(slot, p, acc);
    for (int64_t kt = 0; kt < (hopper ? 0 : bn / 16); ++kt) {
      // A fragment rows: (g, keys 2*t4..) of tiles 2kt and 2kt+1.
      SmallVector<Value> regs;
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t r = 0; r < 2; ++r)
          regs.push_back(arith::TruncFOp::create(
              b, VectorType::get({2}, elt),
              vector::ExtractOp::create(b, p[2 * kt + h],
                                        ArrayRef<int64_t>{r})));
      Value a = arith::ConstantOp::create(
          b, DenseElementsAttr::get(VectorType::get({4, 2}, elt),
                                    b.getZeroAttr(elt)));
      for (int64_t i = 0; i < 4; ++i)
        a = vector::InsertOp::create(b, regs[i], a, ArrayRef<int64_t>{i});
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
  return next;
}

void GpuEmitter::emitKeyBlockLoop() {
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  auto commit = [&] {
    return nvgpu::DeviceAsyncCreateGroupOp::create(b, tokenType,
                                                   ValueRange{});
  };
  Value isLeader = cmpI(arith::CmpIPredicate::eq, tid, idx(0));
  if (hopper) {
    // Thread 0 arms the barriers and issues the Q tile and the first
    // stages-1 K/V blocks; everyone waits for Q.
    const int64_t e = ::tilt::byteWidth(spec.dtype);
    for (int64_t i = 0; i < 1 + stages; ++i)
      nvgpu::MBarrierInitOp::create(b, bars, idx(1), idx(i), isLeader);
    // Make the initialized barriers visible to the async proxy (TMA
    // complete_tx), as the CUDA TMA examples do before the CTA barrier.
    NVVM::FenceProxyOp::create(
        b, NVVM::ProxyKind::async_shared,
        NVVM::SharedSpaceAttr::get(b.getContext(),
                                   NVVM::SharedSpace::shared_cta));
    barrier();
    ifThen(isLeader, [&] {
      nvgpu::MBarrierArriveExpectTxOp::create(b, bars, idx(bm * d * e),
                                              idx(0), Value());
      Value row = add(qStart, rowStart);
      Value bh = bhIndex(true);
      for (int64_t c = 0; c < d / 64; ++c)
        nvgpu::TmaAsyncLoadOp::create(
            b, tileAt(idx(qOff + c * bm * 128), bm), bars, tmaQ,
            ValueRange{idx(c * 64), row, bh}, idx(0), Value(), Value());
      for (int64_t s = 0; s + 1 < stages; ++s) {
        Value kb = add(kbBegin, idx(s));
        ifThen(lt(kb, kbEnd), [&] { tmaIssue(kb); });
      }
    });
    waitBarrier(idx(0), arith::ConstantOp::create(b, b.getBoolAttr(false)));
  } else {
    // Q block, then the fragments it feeds every key block.
    loadTile(q, true, qSmem, idx(0), rowStart, idx(bm), bm);
    Value group = commit();
    nvgpu::DeviceAsyncWaitOp::create(b, group, b.getI32IntegerAttr(0));
    barrier();
  }
  if (!hopper && d <= 128) {
    qFrags.assign(mt, {});
    for (int64_t mi = 0; mi < mt; ++mi) {
      Value row = add(add(mul(warp, idx(16 * mt)), idx(16 * mi)),
                      remU(lane, idx(16)));
      for (int64_t kk = 0; kk < d / 16; ++kk) {
        Value col = add(idx(16 * kk), mul(divU(lane, idx(16)), idx(8)));
        qFrags[mi].push_back(ldmatrix(qSmem, row, col, false));
      }
    }
  }

  // Positions: valid keys before the first visible block, so the bias is
  // taken relative to it (the lse gets the constant back).
  Value base0 = i32c(0);
  if (spec.bias == ::tilt::BiasKind::AlibiPositions) {
    Value limit = mul(kbBegin, idx(bn));
    auto loop = scf::ForOp::create(
        b, tid, limit, idx(threads), ValueRange{i32c(0)},
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
    ifThen(cmpI(arith::CmpIPredicate::eq, lane, idx(0)), [&] {
      memref::StoreOp::create(b, mine, countSmem, ValueRange{warp});
    });
    barrier();
    for (int64_t w = 0; w < warps; ++w)
      base0 = arith::AddIOp::create(
          b, base0, memref::LoadOp::create(b, countSmem, ValueRange{idx(w)}));
    barrier();
  }
  posBase0 = base0;

  // Prologue: the first stages-1 key blocks in flight.
  for (int64_t s = 0; s + 1 < stages && !hopper; ++s) {
    Value kb = add(kbBegin, idx(s));
    ifThen(lt(kb, kbEnd), [&] { issueKeyBlock(kb); });
    commit();
  }

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
        if (hopper) {
          // The stage of `ahead` was last read in the previous iteration,
          // which ended with a CTA barrier.
          ifThen(andB(isLeader, lt(ahead, kbEnd)), [&] { tmaIssue(ahead); });
          Value n = sub(kb, kbBegin);
          Value parity = arith::IndexCastOp::create(
              b, b.getI1Type(), remU(divU(n, idx(stages)), idx(2)));
          waitBarrier(add(remU(n, idx(stages)), idx(1)), parity);
        } else {
          ifThen(lt(ahead, kbEnd), [&] { issueKeyBlock(ahead); });
          Value grp = commit();
          nvgpu::DeviceAsyncWaitOp::create(b, grp,
                                           b.getI32IntegerAttr(stages - 1));
          barrier();
        }
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
          clean = andB(clean, lt(sub(lastRow, mul(kb, idx(bn))),
                                 idx(*spec.window)));
        SmallVector<Type> types;
        for (Value x : st)
          types.push_back(x.getType());
        ValueRange core = ValueRange(st).take_front(init.size() -
                                                    (counting ? 1 : 0));
        auto ifOp = scf::IfOp::create(b, TypeRange(types).take_front(
                                             core.size()),
                                      clean, true, true);
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
      Value has = arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, l,
                                        f32c(0.0));
      Value inv = select(has, arith::DivFOp::create(b, f32c(1.0), l),
                         f32c(0.0));
      Value rowIdx = add(add(rowStart, mul(warp, idx(16 * mt))),
                         add(idx(16 * mi + 8 * r), g));
      Value live = lt(rowIdx, sq);
      ifThen(live, [&] {
        Value seqRow = add(qStart, rowIdx);
        for (int64_t dt = 0; dt < d / 8; ++dt) {
          Value rowV = vector::ExtractOp::create(b, st[4 + dt],
                                                 ArrayRef<int64_t>{r});
          Value sc = vector::BroadcastOp::create(b, VectorType::get({2}, f32),
                                                 inv);
          Value outV = arith::TruncFOp::create(
              b, VectorType::get({2}, elt),
              arith::MulFOp::create(b, rowV, sc));
          Value col = add(idx(dt * 8), mul(t4, idx(2)));
          SmallVector<Value> oIdx =
              spec.varlen ? SmallVector<Value>{seqRow, head, col}
                          : SmallVector<Value>{batch, head, rowIdx, col};
          // 4-byte aligned: o is contiguous in D (even) and col is even.
          vector::StoreOp::create(b, outV, o, oIdx, /*nontemporal=*/false,
                                  llvm::MaybeAlign(4));
        }
        ifThen(cmpI(arith::CmpIPredicate::eq, t4, idx(0)), [&] {
          Value lse2 = fadd(fadd(st[r], log2(l)), corr);
          Value value = select(has, fmul(lse2, f32c(kLn2)), negInf);
          SmallVector<Value> lIdx = spec.varlen
                                        ? SmallVector<Value>{head, seqRow}
                                        : SmallVector<Value>{batch, head,
                                                             rowIdx};
          memref::StoreOp::create(b, value, lse, lIdx);
        });
      });
    }
  }
}

void GpuEmitter::emit() {
  emitGeometry();
  // CTAs past the end of a (shorter, varlen) sequence do nothing.
  auto ifOp = scf::IfOp::create(b, lt(rowStart, sq), /*withElse=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(ifOp.thenBlock());
  slope = slope2();
  auto space = gpu::AddressSpaceAttr::get(b.getContext(),
                                          gpu::AddressSpace::Workgroup);
  auto bytesType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                   MemRefLayoutAttrInterface(), space);
  rawSmem = gpu::DynamicSharedMemoryOp::create(b, bytesType);
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  int64_t offset = 0;
  if (hopper) {
    // mbarriers: 0 for Q, 1 + s for K/V stage s. They are static shared
    // variables; so is the dynamic shared memory's own symbol, which MLIR
    // lowers to a zero-length global that NVPTX emits as a 1-byte `.shared`
    // variable: ptxas lays both out at the start of the CTA's shared memory
    // (seen: __dynamic_shmem__0 at +0, __mbarrier at +8), and the dynamic
    // bytes follow them. The tiles start at the first 1024-byte boundary
    // past all of it; gpuSharedMemoryBytes reserves 1024 bytes for that.
    bars = nvgpu::MBarrierCreateOp::create(
        b, nvgpu::MBarrierGroupType::get(b.getContext(), space,
                                         unsigned(1 + stages)));
    Value rawAddr = memref::ExtractAlignedPointerAsIndexOp::create(b, rawSmem);
    Value lastBar = nvgpu::MBarrierGetOp::create(b, b.getI64Type(), bars,
                                                 idx(stages));
    Value staticEnd = maxI(add(rawAddr, idx(1)), add(toIndex(lastBar), idx(8)));
    Value aligned = mul(divU(add(staticEnd, idx(1023)), idx(1024)), idx(1024));
    alignPad = sub(aligned, rawAddr);
    smemBase = add(rawAddr, alignPad);
    smemRoot = memref::ViewOp::create(
        b, bytesType, rawSmem, alignPad,
        ValueRange{idx(gpuSharedMemoryBytes(spec, config) - 1024)});
    qOff = 0;
    kOff = qOff + bm * d * e;
    vOff = kOff + stages * bn * d * e;
    offset = vOff + stages * bn * d * e;
  } else {
    smemRoot = rawSmem;
    qSmem = smemView(offset, {bm, dp}, elt);
    offset += bm * dp * e;
    kSmem = smemView(offset, {stages * bn, dp}, elt);
    offset += stages * bn * dp * e;
    vSmem = smemView(offset, {stages * bn, dp}, elt);
    offset += stages * bn * dp * e;
  }
  if (kpm) {
    maskSmem = smemView(offset, {bn}, f32);
    offset += bn * 4;
    countSmem = smemView(offset, {64}, i32);
  }
  emitKeyBlockLoop();
}

//===----------------------------------------------------------------------===//
// sm_90a: TMA + mbarrier loads, wgmma products
//===----------------------------------------------------------------------===//

Value GpuEmitter::descriptor(Value byteOffset, int64_t lbo, int64_t sbo) {
  // Bits 0-13: address >> 4; 16-29: leading byte offset >> 4; 32-45: stride
  // byte offset >> 4; 49-51: base offset (0: tiles are 1024-byte aligned);
  // 62-63: layout, 1 = 128-byte swizzle.
  Type i64 = b.getI64Type();
  Value addr = arith::IndexCastOp::create(b, i64, add(smemBase, byteOffset));
  Value field = arith::AndIOp::create(
      b, arith::ShRUIOp::create(b, addr,
                                arith::ConstantOp::create(
                                    b, b.getI64IntegerAttr(4))),
      arith::ConstantOp::create(b, b.getI64IntegerAttr(0x3FFF)));
  uint64_t bits = (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
                  (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
  return arith::OrIOp::create(
      b, field,
      arith::ConstantOp::create(b, b.getI64IntegerAttr(int64_t(bits))));
}

Value GpuEmitter::zeroAccumulator(int64_t n) {
  SmallVector<Type> fields(n / 2, f32);
  return LLVM::ZeroOp::create(
      b, LLVM::LLVMStructType::getLiteral(b.getContext(), fields));
}

/// acc += A * B on one warpgroup, m64 n`n` k16, both operands K-major
/// descriptors (Q K^T).
Value GpuEmitter::wgmma(Value acc, Value descA, Value descB, int64_t n) {
  auto type = isa<BFloat16Type>(elt) ? NVVM::WGMMATypes::bf16
                                     : NVVM::WGMMATypes::f16;
  return NVVM::WgmmaMmaAsyncOp::create(
      b, acc.getType(), acc, descA, descB,
      NVVM::MMAShapeAttr::get(b.getContext(), 64, int(n), 16), type, type,
      NVVM::WGMMATypes::f32, NVVM::WGMMAScaleOut::one,
      NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one, NVVM::MMALayout::row,
      NVVM::MMALayout::col, NVVM::MMAIntOverflowAttr());
}

/// The m64nN accumulator as 8-column tiles: per warp, register 4t+0/1 is row
/// g, columns 8t + 2*t4 + 0/1, and 4t+2/3 the same columns of row g + 8 --
/// the mma.sync m16n8 layout.
SmallVector<Value> GpuEmitter::tilesOf(Value acc, int64_t n) {
  SmallVector<Value> tiles;
  Value zero = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({2, 2}, f32),
                                b.getF32FloatAttr(0.0f)));
  for (int64_t t = 0; t < n / 8; ++t) {
    Value tile = zero;
    for (int64_t i = 0; i < 4; ++i) {
      Value x = LLVM::ExtractValueOp::create(b, acc, ArrayRef<int64_t>{4 * t + i});
      tile = vector::InsertOp::create(b, x, tile,
                                      ArrayRef<int64_t>{i / 2, i % 2});
    }
    tiles.push_back(tile);
  }
  return tiles;
}

Value GpuEmitter::structOf(ArrayRef<Value> tiles) {
  Value acc = zeroAccumulator(int64_t(tiles.size()) * 8);
  for (int64_t t = 0; t < int64_t(tiles.size()); ++t)
    for (int64_t i = 0; i < 4; ++i) {
      Value x = vector::ExtractOp::create(b, tiles[t],
                                          ArrayRef<int64_t>{i / 2, i % 2});
      acc = LLVM::InsertValueOp::create(b, acc, x,
                                        ArrayRef<int64_t>{4 * t + i});
    }
  return acc;
}

/// Thread 0: K and V of key block kb into its stage, completing on the
/// stage's mbarrier.
void GpuEmitter::tmaIssue(Value kb) {
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  Value slot = remU(sub(kb, kbBegin), idx(stages));
  Value barId = add(slot, idx(1));
  nvgpu::MBarrierArriveExpectTxOp::create(b, bars, idx(2 * bn * d * e), barId,
                                          Value());
  Value row = add(kStart, mul(kb, idx(bn)));
  Value bh = bhIndex(false);
  Value stageBytes = mul(slot, idx(bn * d * e));
  for (int64_t c = 0; c < d / 64; ++c) {
    for (auto [map, base] : {std::pair{tmaK, kOff}, std::pair{tmaV, vOff}}) {
      Value dst = tileAt(add(idx(base + c * bn * 128), stageBytes), bn);
      nvgpu::TmaAsyncLoadOp::create(b, dst, bars, map,
                                    ValueRange{idx(c * 64), row, bh}, barId,
                                    Value(), Value());
    }
  }
}

void GpuEmitter::waitBarrier(Value id, Value parity) {
  nvgpu::MBarrierTryWaitParityOp::create(b, bars, parity, idx(10000000), id);
}

SmallVector<Value> GpuEmitter::hopperScores(Value slot) {
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  Value wg = divU(warp, idx(4));
  Value qRows = mul(wg, idx(64 * 128));
  Value kStage = mul(slot, idx(bn * d * e));
  Value acc = zeroAccumulator(bn);
  NVVM::WgmmaFenceAlignedOp::create(b);
  for (int64_t kk = 0; kk < d / 16; ++kk) {
    int64_t c = kk / 4, within = (kk % 4) * 32;
    Value a = descriptor(add(idx(qOff + c * bm * 128 + within), qRows), 16,
                         1024);
    Value bDesc =
        descriptor(add(idx(kOff + c * bn * 128 + within), kStage), 16, 1024);
    acc = wgmma(acc, a, bDesc, bn);
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b);
  NVVM::WgmmaWaitGroupSyncOp::create(b, uint64_t(0));
  return tilesOf(acc, bn);
}

void GpuEmitter::hopperPV(Value slot, ArrayRef<Value> p, Value *acc) {
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  Value o = structOf(ArrayRef<Value>(acc, d / 8));
  Value vStage = mul(slot, idx(bn * d * e));
  NVVM::WgmmaFenceAlignedOp::create(b);
  for (int64_t kt = 0; kt < bn / 16; ++kt) {
    // P stays in registers: the wgmma A fragment of a warp's 16 rows is the
    // mma.sync m16n8k16 A layout, i.e. the score tiles 2kt and 2kt+1 rounded
    // to the input type and packed in pairs, as on sm_80.
    SmallVector<Value> a;
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t r = 0; r < 2; ++r) {
        Value pair = arith::TruncFOp::create(
            b, VectorType::get({2}, elt),
            vector::ExtractOp::create(b, p[2 * kt + h], ArrayRef<int64_t>{r}));
        Value word = vector::BitCastOp::create(b, VectorType::get({1}, i32),
                                               pair);
        a.push_back(vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0}));
      }
    // V is MN-major (d contiguous): 64-column chunks bn*128 bytes apart
    // (leading offset), 8-key groups 1024 bytes apart (stride offset).
    Value bDesc = descriptor(add(idx(vOff + kt * 16 * 128), vStage),
                             bn * 128, 1024);
    o = wgmmaRegisterA(o, a, bDesc, d);
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b);
  NVVM::WgmmaWaitGroupSyncOp::create(b, uint64_t(0));
  SmallVector<Value> tiles = tilesOf(o, d);
  for (int64_t dt = 0; dt < d / 8; ++dt)
    acc[dt] = tiles[dt];
}

/// acc += A * B on one warpgroup, m64 n`n` k16, with A in registers (four
/// 32-bit words of packed pairs a thread) and B an MN-major descriptor.
/// Neither nvvm.wgmma.mma_async nor nvgpu.warpgroup.mma takes A from
/// registers in MLIR 22, so this is the PTX instruction as inline assembly,
/// with side effects so it stays between wgmma.fence and commit/wait.
Value GpuEmitter::wgmmaRegisterA(Value acc, ArrayRef<Value> a, Value descB,
                                 int64_t n) {
  const int64_t regs = n / 2;
  std::string text, constraints;
  llvm::raw_string_ostream os(text), cs(constraints);
  os << "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
     << "wgmma.mma_async.sync.aligned.m64n" << n << "k16.f32."
     << (isa<BFloat16Type>(elt) ? "bf16.bf16" : "f16.f16") << " {";
  for (int64_t i = 0; i < regs; ++i) {
    os << (i ? ", $" : "$") << i;
    cs << (i ? ",=f" : "=f");
  }
  os << "}, {";
  for (int64_t i = 0; i < 4; ++i)
    os << (i ? ", $" : "$") << 2 * regs + i;
  os << "}, $" << 2 * regs + 4 << ", p, 1, 1, 1;\n}";
  SmallVector<Value> operands;
  for (int64_t i = 0; i < regs; ++i) {
    operands.push_back(
        LLVM::ExtractValueOp::create(b, acc, ArrayRef<int64_t>{i}));
    cs << "," << i; // tied to output i
  }
  for (Value w : a) {
    operands.push_back(w);
    cs << ",r";
  }
  operands.push_back(descB);
  cs << ",l";
  auto asmOp = LLVM::InlineAsmOp::create(
      b, acc.getType(), operands, os.str(), cs.str(),
      /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None,
      LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
      ArrayAttr());
  return asmOp.getResult(0);
}

struct ConvertTiltToGPU
    : mlir::tilt::impl::ConvertTiltToGPUBase<ConvertTiltToGPU> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<AttentionOp> ops;
    module.walk([&](AttentionOp op) { ops.push_back(op); });
    if (ops.size() != 1) {
      module.emitError("convert-tilt-to-gpu expects exactly one "
                       "tilt.attention, found ")
          << ops.size();
      return signalPassFailure();
    }
    if (failed(rewrite(module, ops.front())))
      signalPassFailure();
  }

  FailureOr<TileConfigAttr> pickConfig(AttentionOp op) {
    const ::tilt::AttentionSpec spec = op.getSpec();
    TileConfigAttr config = op.getConfigAttr();
    if (config && !config.isGpu()) {
      op.emitOpError("convert-tilt-to-gpu needs a GPU tile_config, got ")
          << stringifyKernelVariant(config.getVariant());
      return failure();
    }
    if (!config) {
      std::optional<KernelVariant> v = symbolizeKernelVariant(variant);
      if (!v || (*v != KernelVariant::gpu_sm80 &&
                 *v != KernelVariant::gpu_sm90a)) {
        op.emitOpError("convert-tilt-to-gpu: variant must be gpu_sm80 or "
                       "gpu_sm90a, got '")
            << variant << "'";
        return failure();
      }
      config = getDefaultGpuConfig(op.getContext(), *v, spec.headDim);
      if (blockM || blockN || numWarps || numStages) {
        auto emitError = [&] { return op.emitOpError(); };
        int64_t m = blockM ? blockM : config.getBlockM();
        int64_t n = blockN ? blockN : config.getBlockN();
        int64_t w = numWarps ? numWarps : config.getNumWarps();
        int64_t s = numStages ? numStages : config.getNumStages();
        if (failed(TileConfigAttr::verify(emitError, *v, m, n, w, s)))
          return failure();
        config = TileConfigAttr::get(op.getContext(), *v, m, n, w, s);
      }
    }
    if (std::string err = checkGpuConfig(spec, config); !err.empty()) {
      op.emitOpError(err);
      return failure();
    }
    return config;
  }

  LogicalResult rewrite(ModuleOp module, AttentionOp op) {
    if (op.hasBufferSemantics())
      return op.emitOpError("convert-tilt-to-gpu expects the tensor form "
                            "(a spec function)");
    auto func = dyn_cast<func::FuncOp>(op->getParentOp());
    if (!func)
      return op.emitOpError("convert-tilt-to-gpu expects the op in a "
                            "func.func");
    FailureOr<TileConfigAttr> config = pickConfig(op);
    if (failed(config))
      return failure();
    const ::tilt::AttentionSpec spec = op.getSpec();
    MLIRContext *ctx = &getContext();

    SmallVector<Type> argTypes = kernelAbiMemRefTypes(op);
    // sm_90a: the tensor maps of q, k and v (KernelABI.h), as pointers.
    if (config->getVariant() == KernelVariant::gpu_sm90a)
      argTypes.append(3, LLVM::LLVMPointerType::get(ctx));

    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    UnitAttr::get(ctx));
    OpBuilder top(func);
    auto gpuModule = gpu::GPUModuleOp::create(top, func.getLoc(),
                                              "tilt_kernels");
    OpBuilder inner = OpBuilder::atBlockBegin(gpuModule.getBody());
    auto kernel = gpu::GPUFuncOp::create(
        inner, func.getLoc(), ::tilt::kCudaKernelName,
        inner.getFunctionType(argTypes, {}));
    kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                    UnitAttr::get(ctx));
    const int32_t threads = int32_t(32 * config->getNumWarps());
    kernel.setKnownBlockSizeAttr(
        DenseI32ArrayAttr::get(ctx, {threads, 1, 1}));
    // One CTA per SM is the design point (up to 227 KiB of shared memory,
    // up to 255 registers a thread): without this ptxas may cap registers
    // to fit two CTAs and spill.
    kernel->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                    IntegerAttr::get(IntegerType::get(ctx, 32), 1));
    // What the target and the runtime need to know, on the kernel.
    kernel->setAttr("tilt.config", *config);
    kernel->setAttr("tilt.smem", IntegerAttr::get(
                                     IntegerType::get(ctx, 64),
                                     gpuSharedMemoryBytes(spec, *config)));
    kernel->setAttr("tilt.spec", StringAttr::get(ctx, spec.canonical()));

    ImplicitLocOpBuilder b(func.getLoc(), ctx);
    b.setInsertionPointToStart(&kernel.getBody().front());
    GpuEmitter(spec, *config, b, kernel.getArguments()).emit();
    gpu::ReturnOp::create(b);
    func.erase();
    return success();
  }
};

} // namespace

std::string mlir::tilt::checkGpuConfig(const ::tilt::AttentionSpec &spec,
                                       TileConfigAttr config) {
  if (spec.dtype == ::tilt::DType::F32)
    return "dtype f32: the GPU variants take f16 or bf16 (tensor cores)";
  const int64_t bn = config.getBlockN();
  if (config.getVariant() == KernelVariant::gpu_sm90a) {
    // 64-column TMA chunks, 64 query rows per warpgroup, P tiles in 64-key
    // chunks, wgmma N <= 256.
    if (spec.headDim % 64 != 0)
      return "variant gpu_sm90a needs head_dim a multiple of 64 (64, 128, "
             "192, 256); use gpu_sm80";
    if (config.getBlockM() != 16 * config.getNumWarps())
      return "variant gpu_sm90a needs block_m = 16 * num_warps (64 rows per "
             "warpgroup)";
    if (bn % 64 != 0 || bn > 256)
      return "variant gpu_sm90a needs block_n of 64, 128 or 256";
  }
  if (bn % 16 != 0)
    return "block_n must be a multiple of 16 for the GPU variants";
  if (config.getNumWarps() * 32 > 1024)
    return "num_warps must leave at most 1024 threads";
  if (spec.keyPaddingMask && bn > 64 * 32)
    return "block_n too large for the key mask staging";
  const int64_t smem = gpuSharedMemoryBytes(spec, config);
  const int64_t limit = maxGpuSharedMemory(config.getVariant());
  if (smem > limit)
    return "tile config needs " + std::to_string(smem) +
           " bytes of shared memory; at most " + std::to_string(limit) +
           " fit (smaller block_m, block_n or num_stages)";
  return {};
}

int64_t mlir::tilt::maxGpuSharedMemory(KernelVariant variant) {
  return variant == KernelVariant::gpu_sm90a ? 227 * 1024 : 163 * 1024;
}
