//===- GpuEmitter.h - The shared part of the GPU kernel emitters -*- C++
//-*-===//
//
// convert-tilt-to-gpu's kernel body: what every GPU variant shares
// (geometry, bias and masks, the online softmax, the epilogue, the key-block
// loop) in GpuEmitter.cpp, and the hooks through which a variant brings
// tiles into shared memory and multiplies them (Sm80.cpp: cp.async +
// ldmatrix + mma.sync; Sm90a.cpp: TMA + mbarrier + wgmma).
//
//===----------------------------------------------------------------------===//

#ifndef TILT_CONVERSION_TILTTOGPU_GPUEMITTER_H
#define TILT_CONVERSION_TILTTOGPU_GPUEMITTER_H

#include "../ArithBuilder.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/Spec.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <memory>

namespace mlir::tilt {

/// Shared-memory row padding in elements (16 bytes) of the sm_80 tiles.
constexpr int64_t kGpuRowPad = 8;

/// The small builders every GPU kernel body uses (index and f32 arithmetic,
/// PTX math, shuffles, barriers).
class GpuBuilder : protected ArithBuilder {
public:
  explicit GpuBuilder(ImplicitLocOpBuilder &b)
      : ArithBuilder(b), f32(b.getF32Type()), i32(b.getI32Type()) {}

protected:
  Value i32c(int64_t v) {
    return arith::ConstantOp::create(b, b.getI32IntegerAttr(int32_t(v)));
  }
  Value divU(Value x, Value y) { return arith::DivUIOp::create(b, x, y); }
  Value remU(Value x, Value y) { return arith::RemUIOp::create(b, x, y); }
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
  /// Sequence `batch`'s start and length in cu_seqlens `cu` (varlen).
  std::pair<Value, Value> sequenceRange(Value cu, Value batch) {
    Value start = toIndex(memref::LoadOp::create(b, cu, ValueRange{batch}));
    Value end = toIndex(memref::LoadOp::create(
        b, cu, ValueRange{arith::AddIOp::create(b, batch, idx(1))}));
    return {start, arith::SubIOp::create(b, end, start)};
  }
  /// This thread's place in the m16n8 fragment layouts: tid, its lane and
  /// warp, the lane's row group g = lane / 4 and column pair t4 = lane % 4.
  void threadIds(Value &tid, Value &lane, Value &warp, Value &g, Value &t4) {
    tid = gpu::ThreadIdOp::create(b, b.getIndexType(), gpu::Dimension::x);
    lane = remU(tid, idx(32));
    warp = divU(tid, idx(32));
    g = divU(lane, idx(4));
    t4 = remU(lane, idx(4));
  }
  /// The query and key rows of sequence `batch`: start and length in
  /// cu_seqlens (varlen), else from 0, Sq from q's dim 2 and Sk from the
  /// context lengths (paged) or k's dim 2.
  void sequenceExtents(const ::tilt::AttentionSpec &spec, Value q, Value k,
                       Value cuQ, Value cuK, Value contextLens, Value batch,
                       Value &qStart, Value &kStart, Value &sq, Value &sk) {
    if (spec.varlen) {
      std::tie(qStart, sq) = sequenceRange(cuQ, batch);
      std::tie(kStart, sk) = sequenceRange(cuK, batch);
      return;
    }
    qStart = kStart = idx(0);
    sq = memref::DimOp::create(b, q, 2);
    sk =
        contextLens
            ? toIndex(memref::LoadOp::create(b, contextLens, ValueRange{batch}))
            : Value(memref::DimOp::create(b, k, 2));
  }
  Value blockId(gpu::Dimension dim) {
    return gpu::BlockIdOp::create(b, b.getIndexType(), dim);
  }
  /// The slope of query head `h` in log2 units (0 without ALiBi): custom
  /// from `slopes` [B, H] at `batch`, else the standard slopes of the
  /// spec's heads by a select chain over the (static) head count.
  Value slopeLog2(const ::tilt::AttentionSpec &spec, Value slopes, Value batch,
                  Value h);
  /// The CTA's threads (`threads` of them, `warps` warps; thread `tid`,
  /// `lane`, `warp`) as a key-padding-mask counter, for alibi_positions.
  struct KeyCounter {
    Value tid, lane, warp;
    int64_t threads, warps;
    Value counts; ///< shared memory, i32: one per warp and chunk of keys
  };
  /// The valid keys (kpm != 0) of [0, limit) of sequence `batch`, as i32 in
  /// every thread. Every thread of the CTA takes part.
  Value countValidKeys(const KeyCounter &c, Value kpm, Value batch,
                       Value limit);
  /// A key block's keys in chunks of the CTA's threads (chunk c: key tid +
  /// c * threads, valid[c] whether it counts): per chunk the valid keys
  /// before this thread's key in the block, and the block's total (i32), in
  /// every thread. Every thread of the CTA takes part; `counts` is free
  /// again after the caller's next barrier.
  std::pair<SmallVector<Value>, Value> countBlockKeys(const KeyCounter &c,
                                                      ArrayRef<Value> valid);

  Type f32, i32;
};

/// The sm_80 matrix building blocks (Sm80.cpp), shared by the forward,
/// decode and backward kernels: ldmatrix x4, mma.sync m16n8k16 with f32
/// accumulators in the m16n8 layout (vector<2x2xf32>: [row g / g + 8][column
/// 2 * t4 + e]), and the fragments in between.
class Sm80Ops {
public:
  Sm80Ops(ImplicitLocOpBuilder &b, Type elt) : b(b), elt(elt) {}
  /// Four 8x8 matrices of `mem` (rows from `row`, 16 bytes from `col`, per
  /// lane), optionally transposed: vector<4x2xelt>.
  Value ldmatrix(Value mem, Value row, Value col, bool transpose);
  /// Rows first, first+1 of a vector<4x2xT> as a vector<2x2xT> (a B
  /// fragment out of an x4 ldmatrix).
  Value rowPair(Value frag4, int64_t first);
  /// c += a * b for one m16n8k16 tile: a vector<4x2xT>, b vector<2x2xT>, c
  /// vector<2x2xf32>.
  Value mma(Value a, Value bFrag, Value c);
  /// The A fragment of a 16-column k-step from two f32 accumulator tiles
  /// (its columns 0-7 and 8-15), rounded to the element type: how P (and
  /// dS) feed the next product without leaving registers.
  Value aFragment(Value lo, Value hi);
  /// Closes the cp.async group of the copies issued since the last one.
  Value commit();

private:
  ImplicitLocOpBuilder &b;
  Type elt;
};

/// The shared part of the kernel body of every GPU variant. All per-thread
/// register arrays are unrolled here (C++ loops), so the IR holds only SSA
/// values and static indices: nothing is dynamically indexed in registers.
///
/// The variants share the geometry, the bias and mask arithmetic, the online
/// softmax and the epilogue: a warp owns 16 query rows and sees scores in
/// the m16n8 accumulator layout either way (wgmma's m64nN accumulator is, per
/// warp of the warpgroup, the same layout as 8-column mma.sync tiles). They
/// differ in how tiles reach shared memory (cp.async vs TMA + mbarrier) and
/// in the matrix products (mma.sync from ldmatrix fragments vs wgmma from
/// shared-memory descriptors). Those differences are the hooks below, which
/// each variant implements in its own file (Sm80.cpp, Sm90a.cpp); a new
/// variant is one more file and one line in makeGpuEmitter().
class GpuEmitter : protected GpuBuilder {
public:
  GpuEmitter(const ::tilt::AttentionSpec &spec, TileConfigAttr config,
             ImplicitLocOpBuilder &b, ValueRange args)
      : GpuBuilder(b), spec(spec), config(config) {
    bm = config.getBlockM();
    bn = config.getBlockN();
    warps = config.getNumWarps();
    stages = config.getNumStages();
    d = spec.headDim;
    dp = d + kGpuRowPad;
    mt = bm / (16 * warps);
    threads = 32 * warps;
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
    decode = config.getVariant() == KernelVariant::gpu_decode_sm80;
    if (spec.pageSize) {
      blockTable = args[next++];
      contextLens = args[next++];
    }
    if (decode) {
      oParts = args[next++];
      lseParts = args[next++];
    }
    if (spec.positionOffsets) {
      qOffset = args[next++];
      kOffset = args[next++];
    }
    firstExtraArg = next;
    kernelArgs = args;
  }

  virtual ~GpuEmitter() = default;

  void emit();

protected:
  // --- the variant's hooks, in the order emit() calls them ------------------
  /// Lays the Q/K/V tiles out in shared memory from `rawSmem` (setting
  /// `smemRoot`); returns the byte offset where the shared part (the key
  /// mask and counts) may start.
  virtual int64_t layOutTiles(int64_t elementBytes) = 0;
  /// Brings the Q block in (and whatever the variant keeps of it), before
  /// the positions prefix count; `isLeader` is thread 0.
  virtual void loadQ(Value isLeader) = 0;
  /// Puts the first key blocks in flight, after the positions prefix count.
  virtual void issuePrologue() = 0;
  /// At the top of key block kb: issues block `ahead` (kb + stages - 1)
  /// when it exists and waits until kb's K and V are in shared memory.
  virtual void awaitKeyBlock(Value kb, Value ahead, Value isLeader) = 0;
  /// S = Q K^T of m-tile mi from the K stage `slot` (rows from bufferRow):
  /// bn/8 tiles in the m16n8 accumulator layout, starting from `zero2x2`.
  virtual SmallVector<Value> scores(Value slot, Value bufferRow, int64_t mi,
                                    Value zero2x2) = 0;
  /// acc[0, d/8) += P V from the V stage `slot`; P in the score layout.
  virtual void accumulatePV(Value slot, Value bufferRow, ArrayRef<Value> p,
                            Value *acc) = 0;

  Value smemView(int64_t byteOffset, ArrayRef<int64_t> shape, Type type) {
    auto space = gpu::AddressSpaceAttr::get(b.getContext(),
                                            gpu::AddressSpace::Workgroup);
    return memref::ViewOp::create(
        b, MemRefType::get(shape, type, MemRefLayoutAttrInterface(), space),
        smemRoot, idx(byteOffset), ValueRange{});
  }

  // --- kernel pieces --------------------------------------------------------
  void emitGeometry();
  /// The slope of query head `h` in log2 units (0 without ALiBi).
  Value slope2(Value h);
  /// One of this thread's query rows: m-tile mi, half r (rows g and g + 8).
  struct Row {
    Value ip;          ///< i': the query's position relative to key 0
    Value slope;       ///< its head's slope, log2 units
    Value head, query; ///< where it lives in q, o and lse
    Value live;        ///< a real row (not padding of the block)
  };
  Row row(int64_t mi, int64_t r);
  /// Decode: the rows of the group this CTA owns (see emitGeometry), made
  /// once per CTA: [mi * 2 + r].
  void stageDecodeRows();
  /// Decode: q's indices of the block's row `r` (clamped into the group:
  /// rows past it read a real row and are never stored) and whether it is
  /// one of the group's rows.
  std::pair<SmallVector<Value>, Value> decodeQIndex(Value r, Value col);
  /// Paged: the k/v indices of key `t` (< sk), without the column.
  SmallVector<Value> pagedKeyIndex(Value t);
  void emitKeyBlockLoop();
  /// clamp(i', 0, Sk - 1) - i' with position offsets and an ALiBi bias, else
  /// null; anchored(): j - i' less that anchor.
  Value anchor(Value ip);
  Value anchored(Value jrel, Value ip);
  SmallVector<Value> blockBody(Value kb, ValueRange state, bool masked);
  void stageKeyMask(Value kb, Value base, Value &blockCount);
  void emitEpilogue(ValueRange state);

  const ::tilt::AttentionSpec &spec;
  TileConfigAttr config;
  int64_t bm, bn, warps, stages, d, dp, mt, threads;
  unsigned firstExtraArg = 0; ///< the variant's own kernel arguments
  Type elt;
  Value q, k, v, o, lse, slopes, kpm, cuQ, cuK, qOffset, kOffset;

  // Per-thread geometry.
  Value tid, lane, warp, g, t4;
  Value batch, head, kvHead, qStart, kStart, sq, sk, shift, rowStart;
  Value firstRow, lastRow; ///< i' of the block's first / last live row
  Value kbBegin, kbEnd;
  /// smemRoot: where the variant's tiles start (sm_90a: the first
  /// 1024-byte aligned byte, as swizzled TMA tiles need).
  Value rawSmem, smemRoot, maskSmem, countSmem;
  KeyCounter keyCounter() const {
    return {tid, lane, warp, threads, warps, countSmem};
  }
  Value scale2, slope;
  Value posBase0; ///< positions: valid keys before the first block
  ValueRange kernelArgs;

  // gpu_decode_sm80 (see GpuEmitter.cpp, emitGeometry).
  bool decode = false;
  Value blockTable, contextLens, oParts, lseParts;
  Value sqSafe, groupRows, split, splits, hasSplits;
  SmallVector<Row> decodeRows;
};

/// The emitter of `config`'s variant (gpu_sm80 or gpu_sm90a), or null.
std::unique_ptr<GpuEmitter> makeGpuEmitter(const ::tilt::AttentionSpec &spec,
                                           TileConfigAttr config,
                                           ImplicitLocOpBuilder &b,
                                           ValueRange args);
std::unique_ptr<GpuEmitter> makeSm80Emitter(const ::tilt::AttentionSpec &spec,
                                            TileConfigAttr config,
                                            ImplicitLocOpBuilder &b,
                                            ValueRange args);
std::unique_ptr<GpuEmitter> makeSm90aEmitter(const ::tilt::AttentionSpec &spec,
                                             TileConfigAttr config,
                                             ImplicitLocOpBuilder &b,
                                             ValueRange args);

/// gpu_bwd_sm80's kernels (GpuBackward.cpp): `dkdv` false emits the body of
/// tilt_attention_bwd_dq, true that of tilt_attention_bwd_dkdv; `args` the
/// backward's GPU parameters (KernelABI.h), `withSlopes` whether they hold
/// slopes, dslopes and the slope gradient's parts.
void emitBackwardKernel(const ::tilt::AttentionSpec &spec,
                        TileConfigAttr config, ImplicitLocOpBuilder &b,
                        ValueRange args, bool withSlopes, bool dkdv);
/// Dynamic shared memory of one gpu_bwd_sm80 kernel.
int64_t gpuBackwardSharedMemoryBytes(const ::tilt::AttentionSpec &spec,
                                     TileConfigAttr config, bool dkdv);

/// The body of gpu_decode_sm80's second kernel, `tilt_merge` (Merge.cpp):
/// the exact merge of the split-KV parts. `args`: o_parts, lse_parts, o,
/// lse (KernelABI.h).
void emitMergeKernel(const ::tilt::AttentionSpec &spec, ImplicitLocOpBuilder &b,
                     ValueRange args);

} // namespace mlir::tilt

#endif // TILT_CONVERSION_TILTTOGPU_GPUEMITTER_H
