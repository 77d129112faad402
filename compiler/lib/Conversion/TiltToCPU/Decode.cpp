//===- Decode.cpp - The decode family: cpu_decode_avx2, cpu_decode_avx512 -===//
//
// Few query rows against many keys (decode, speculative and chunked steps).
// The prefill kernels vectorize across query rows and give each query head
// its own work item, so at Sq = 1 they use one lane in 8 or 16 and read a
// kv head's K/V once per query head of its group. Here one work item is one
// (batch, split, kv head) (splits: see the end of this comment; a call's
// items of one (batch, split) are done together, see below): its rows are
// every query head of the GQA group times every query
// (heads/kv heads x Sq), up to block_m of them at a time, and each key block
// is read once for all of them:
//
//   rows r: head = kvHead * G + r / Sq, query i = r % Sq (q staged f32,
//           pre-scaled by scale * log2 e -- or bf16, unscaled, see `dot`
//           -- with the row's slope and i')
//   for each span of keys that fits in L2 (~128 KiB of K and V):
//     for each tile of R rows (R = 4 with AVX-512, 2 with AVX2; the rows
//     past the last whole tile one at a time):
//       for each block of block_n keys of the span:
//         s[r][t] = q_r . K[t]   an R x 4-key register tile of vectors
//                                along D, each K vector loaded and widened
//                                once for the R rows; per row the vl dot
//                                products summed across lanes by a
//                                shuffle tree
//         per row: s += bias; mask; m' = max(m, max_t s); p = exp2(s - m')
//                  l = l * exp2(m - m') + sum_t p
//         acc_r = acc_r * exp2(m - m') + sum_t p_r[t] * V[t]   an R x 4
//                                D-vector tile, each V vector loaded once
//   o = acc / l;  lse = (m + log2 l) * ln 2
//
// K and V come from memory once per span (the first tile, which also
// prefetches the rows of keys a few blocks ahead, see aheadKeys) and from L2
// for the group's other tiles. The key blocks are the innermost loop on
// purpose: with the tiles innermost, every K/V load of a block would be
// invariant in the tile loop, and LLVM hoists all of them out of it (hundreds
// of widened vectors, spilled). Keys past the visible range read the last key
// instead and are masked, so no load leaves the tensor. 16-bit K and V are
// widened in registers. Measured on a 2-core Xeon (AVX-512), bf16 D 128 B 4 Sk
// 8192, H 32 over Hkv 8 (one 4-row tile): 15.9 -> 11.4 ms against one row
// at a time, medians of three alternating runs.
//
// A paged KV cache (k/v [num_pages, page_size, Hkv, D]) changes only where
// key t lives: page block_table[b, t / page_size], slot t % page_size. When
// page_size is a multiple of block_n and blocks start on multiples of
// block_n (no window), a block lies in one page: one table read per block.
// Else each key reads its own entry. Only keys < context_lens[b] are
// addressed (the tail block clamps to the last one), so table entries past
// a sequence's used pages are never read. A paged token row holds every kv
// head (Hkv x D elements), so one kv head at a time would read D elements
// of each row and touch a new 4 KiB page per key once the row is 4 KiB. A
// call's items of one (batch, split) are therefore done together: their
// rows are
// staged as one set and each span of keys is walked for every kv head in
// turn, the span's pages and lines still in the TLB and L2 for the next
// one. The runtime gives paged kernels runs of several items per call.
// Measured with the bf16 pair order (see loadPair) on the Xeon, B 4, Sk
// 8192, medians of three alternating runs: 1.19x (MHA) and 1.25x (GQA 4:1)
// contiguous, 1.47x and 1.53x paged (16-token pages).
//
// Paged decode at Sq = 1 with groups of at most 4 heads (MHA and GQA up
// to 4:1; one row per head) takes a token-row path when the call holds
// every kv head of one (batch, split), which the runtime then arranges
// (TilePolicy.h's decodeTokenRows): per key block, for each 4 keys, every
// kv head's q . K along the keys' cache rows (each K chunk loaded once for
// the group's rows), then per row the lane sums and the online softmax,
// then for each 4 keys every kv head's P . V along the rows -- each token
// row read whole and in order, K then V, the next block's rows asked for
// (to L2) beside them. Runs of kv heads read 2-4 KiB of each 8 KiB row (H
// 32, D 128 bf16) and left the hardware prefetchers little to follow: a
// read-pattern test on the Zen 4 (2 threads, 16-token pages shuffled) moved
// 19-25 GB/s that way against 45-48 GB/s for whole rows in order, and the
// paged MHA rows of issue 12's table went from 12-14 GB/s to 26-31 GB/s
// (BENCHMARKS.md). Paged GQA 4:1 (bf16 D 128 Sk 8192, 16-token pages, on
// the Zen 4) went from the row blocks' 3.4-3.9 / 14.8-14.9 / 58 ms at B 1
// / 4 / 16 to 1.4-1.9 / 6.4-6.8 / 26-30 ms (BENCHMARKS.md, seventh
// session).
//
// Split-KV (the op's splits, S > 0): the work items are (batch, split, kv
// head) and split s walks only the s-th of S chunks of the visible keys
// (whole key blocks, so a paged block still lies in one page), writing its
// normalized partial o and its lse (without the row constants, which split
// 0 puts in lse_out) to the f32 parts. The runtime asks for splits where
// (batch, kv head) items alone would leave threads idle (B = 1 with MQA)
// and merges the parts exactly.
//
//===----------------------------------------------------------------------===//

#include "CpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"
#include "tilt/TilePolicy.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

#include "llvm/Support/MathExtras.h"

#include <cmath>

using namespace mlir;
using namespace mlir::tilt;

namespace {

class DecodeEmitter final : public CpuKernelBuilder {
public:
  DecodeEmitter(AttentionOp op, ImplicitLocOpBuilder &b, bool nativeBf16Dot)
      : CpuKernelBuilder(
            op, op.getSpec(), op.getConfigAttr(), operandsOf(op), b,
            op.getConfigAttr().getVariant() == KernelVariant::cpu_decode_avx2
                ? 8
                : 16),
        op(op), group(spec.heads / spec.kvHeads),
        pairs(elt.isBF16() && d % (2 * vl) == 0),
        dot(pairs && nativeBf16Dot && vl == 16),
        aheadLocality(aheadLocalityOf(op.getConfigAttr().getNumStages(),
                                      bool(operandsOf(op).blockTable))) {}

  LogicalResult emit() override;

private:
  AttentionOp op;
  /// Items (bt, split, kv0) .. (bt, split, kv0 + count - 1) (the split is
  /// the member `split`): their rows are staged
  /// together and each span of keys is walked for every kv head in turn,
  /// so a paged cache's token rows (every kv head side by side) serve
  /// them all from the TLB and L2 (the runtime hands paged kernels runs of
  /// items; see Runtime.cpp's launch).
  void emitItems(Value bt, Value kv0, Value count);
  /// The run's rows in blocks of block_m, each against keys [kBegin,
  /// kEnd) in spans (emitItems' general path).
  void rowBlocks(Value kBegin, Value kEnd, Value count);
  /// Rows [r0, r0 + n) of the run: q staged, slopes, positions, state.
  void stageRows(Value r0, Value n);
  /// Rows [rr, rr + rows) of the row block against the keys [kb, kb +
  /// block_n) (those < kEnd exist).
  void tileBlock(Value rr, int64_t rows, Value kb, Value kEnd);
  /// The keys whose K/V lines a block of the tile at rr prefetches, one
  /// per key of the block (see the definition).
  SmallVector<SmallVector<Value>> aheadKeys(Value rr, Value kb);
  void tileBlockBody(Value rr, int64_t rows, Value kb, Value kEnd, bool clamp);
  /// Per vector of the block at kb: its keys below kEnd, unpadded.
  SmallVector<Value> keyExists(Value kb, Value kEnd);
  /// Row `row`'s scores `s` (vectors of the block at kb's keys): bias,
  /// masks and the online softmax step (mRow, lRow); P to pOut[pRow], the
  /// accumulator's rescale factor returned (a vector).
  Value softmaxRow(Value row, MutableArrayRef<Value> s, Value kb,
                   ArrayRef<Value> exists, Value pOut, Value pRow);
  /// Paged, groups of at most 4 heads (2 with AVX2, whose 16 registers
  /// would not hold a group of 4's q.K sums for 4 keys; untimed; the rule
  /// is TilePolicy's decodeTokenRows, which the runtime follows), Sq = 1,
  /// with every kv head of one (batch, split) in the call (see the header):
  /// the rows, one per head, against keys [kBegin, kEnd), token row by
  /// token row.
  bool tokenRowsPath() const {
    return io.blockTable &&
           ::tilt::decodeTokenRows(
               spec, vl == 8 ? ::tilt::KernelVariant::CpuDecodeAvx2
                             : ::tilt::KernelVariant::CpuDecodeAvx512);
  }
  void tokenRows(Value kBegin, Value kEnd);
  void tokenBlock(Value kb, Value kEnd);
  /// For each `keys` keys t0 .. t0 + keys - 1 of the block at kb, for each
  /// kv head k: body(t0, k, the cache indices of their rows, kv head k,
  /// without the column), after asking (to L2) for `tensor`'s rows of the
  /// next block's same keys, kv head k.
  void forEachTokenRows(
      Value kb, Value tensor, int64_t keys,
      function_ref<void(Value, Value, ArrayRef<SmallVector<Value>>)> body);
  /// Asks (to L2) for the cache rows of the block after kb, kv heads
  /// [kvHead0, kvHead0 + count).
  void prefetchNextBlock(Value kb, Value count);
  void finalizeRows(Value r0, Value n);
  /// The finished rows to out and lse_out, or (`part`) to that split's
  /// out_parts and lse_parts.
  void finalizeRowsTo(Value r0, Value n, Value part);
  /// Sets kvHead and head and returns the query index of row r of the run.
  Value rowGeometry(Value r);
  /// The scores of rows [rr, rr + rows) against keys `keys` (vl of them):
  /// one vector per row.
  /// `ahead` (empty or one per key): keys whose K lines to prefetch.
  SmallVector<Value> scores(Value rr, int64_t rows,
                            ArrayRef<SmallVector<Value>> keys,
                            ArrayRef<SmallVector<Value>> ahead);
  /// sums[r * keys.size() + t] += the dot product of staged q row rows[r]
  /// with K[keys[t]] over the columns at col (2 vl with pairs, else vl):
  /// each K chunk loaded once for every row, each q chunk once for every
  /// key (the tiles' scores() and the token rows' q . K).
  void accumulateDots(MutableArrayRef<Value> sums, ArrayRef<Value> rows,
                      ArrayRef<SmallVector<Value>> keys, Value col);
  /// Paged, with every key block inside one page: page_size a multiple of
  /// block_n and blocks starting on multiples of block_n (no window).
  bool blocksInOnePage() const {
    return io.blockTable && spec.pageSize % bn == 0 && !spec.window;
  }
  /// Lane j of the result is the sum of the lanes of xs[j] (xs.size() == vl;
  /// fewer gives the tree's first levels, e.g. 4: xs[k]'s sums by 128-bit
  /// block, as level 2 below takes them).
  /// From `level` > 0: xs are the partial sums that many levels of the tree
  /// left, e.g. level 2: xs[k] holds keys 4k..4k+3 in every 128-bit block.
  Value sumAcrossLanes(SmallVector<Value> xs, int level = 0);
  /// x, hidden from LLVM's optimizer: an empty inline asm with side
  /// effects whose result is x's register (no instruction). What computes
  /// x stays before it (LLVM sinks pure values toward their uses, across
  /// the loops in between), and what uses the result stays after it (not
  /// hoisted out of an enclosing loop). See scores() and tileBlockBody().
  Value opaque(Value x) {
    return LLVM::InlineAsmOp::create(
               b, x.getType(), ValueRange{x}, b.getStringAttr(""),
               b.getStringAttr(isa<VectorType>(x.getType()) ? "=v,0" : "=r,0"),
               /*has_side_effects=*/b.getUnitAttr(), /*is_align_stack=*/{},
               LLVM::TailCallKindAttr(), LLVM::AsmDialectAttr(),
               /*operand_attrs=*/ArrayAttr())
        .getResult(0);
  }
  Value loadKey(Value tensor, ArrayRef<Value> key, Value col) {
    return loadRow(tensor, atColumn(key, col));
  }
  /// Pair order (bf16 with D a multiple of 2 vl): the 2 vl bf16 of K or V
  /// at `col` in one load, widened without a shuffle: the even elements
  /// (x << 16) and the odd ones (x & 0xffff0000) as two f32 vectors. q, the
  /// accumulators and P.V keep each 2 vl columns in that order (evens,
  /// then odds); a dot product does not mind, and finalizeRows restores
  /// the natural order.
  std::pair<Value, Value> loadPair(Value tensor, ArrayRef<Value> key,
                                   Value col) {
    return widenBf16Pairs(loadRaw(tensor, key, col));
  }
  /// Lane j of the result: lane index(j) of the concatenation of x and y.
  Value pick(Value x, Value y, function_ref<int64_t(int64_t)> index) {
    SmallVector<int64_t> mask;
    for (int64_t j = 0; j < vl; ++j)
      mask.push_back(index(j));
    return vector::ShuffleOp::create(b, x, y, mask);
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

  /// Rows of a register tile: their scores and P.V accumulators share each
  /// K and V load (see scores() and tileBlockBody()).
  /// Only where a kv head's rows fill a tile at Sq = 1 (heads/kv heads >=
  /// its rows): the tile path is most of the kernel's code, and a paged MHA
  /// kernel compiled in 760 ms with it against 61-108 ms without
  /// (tilt-bench's jit_cold_ms on the Xeon), for rows it only has when
  /// Sq > 1. (Paged GQA 4:1, which needs the tiles, still takes ~500-760
  /// ms; contiguous ones ~125-200 ms.)
  int64_t tileRows() const {
    return group >= registerTileRows() ? registerTileRows() : 1;
  }
  /// The rows a register tile holds: 4 with AVX-512, 2 with AVX2.
  int64_t registerTileRows() const {
    return std::min<int64_t>(bm, vl == 16 ? 4 : 2);
  }

  /// The 2 vl bf16 of `tensor`'s row `key` at `col`, as stored.
  Value loadRaw(Value tensor, ArrayRef<Value> key, Value col) {
    return vector::LoadOp::create(b, VectorType::get({2 * vl}, elt), tensor,
                                  atColumn(key, col));
  }
  /// The scores' scale (log2 units) where q is staged unscaled (`dot`).
  Value scaled(Value s) {
    return dot ? arith::MulFOp::create(b, s,
                                       splat(spec.effectiveScale() * kLog2E))
                     .getResult()
               : s;
  }

  int64_t group;
  bool pairs; ///< pair order (see loadPair)
  /// q . K as pair dot products: bf16 with D a multiple of 2 vl on a
  /// target with AVX512_BF16. q is staged as bf16, unscaled, in natural
  /// order (a pair dot product sums neighbours, and the lane sums do not
  /// mind their order); each 2 vl columns of a row take one vdpbf16ps
  /// against K read in place, where the widened pairs take two FMAs and
  /// two integer ops; the scale is applied to the summed scores. Products
  /// of bf16 numbers are exact in f32, so only the order of the f32 sums
  /// (and the instruction's flushing of denormals) differ. P.V stays in
  /// f32 (P is not rounded). Measured on the Zen 4 with a stand-alone
  /// model of the GQA 4:1 tile (2 threads, bf16 D 128, 32 items of Sk
  /// 8192, contiguous): 12.8 -> 29-31 GB/s.
  bool dot;
  /// The cache level the row blocks ask for the K/V lines of keys ahead
  /// into (aheadKeys; a prefetch's locality): none (0) where the tile
  /// config's num_stages (K/V blocks in flight) is 1, which leaves a
  /// contiguous cache's keys ahead to the hardware prefetchers (a paged
  /// cache's pages, scattered, always take the requests; the tuner times
  /// contiguous caches only); L1 (3), 16 keys ahead (32 paged), for 0, the
  /// default; L2 (2), 32 keys ahead, for 2. Tuned
  /// per CPU: on the Xeon the L1 requests paid (aheadKeys); on the Zen 4
  /// they cost 1.2-1.6x against none (contiguous bf16 D 128 Sk 8192, GQA
  /// 4:1 B 1 and 4, MHA B 1, eight alternating runs each: 1.74 -> 1.06,
  /// 8.17 -> 5.02 and 6.49 -> 5.37 ms medians), and the L2 ones paid
  /// there (see aheadKeys).
  int aheadLocality;
  static int aheadLocalityOf(int64_t numStages, bool paged) {
    if (numStages == 2)
      return 2;
    return numStages == 1 && !paged ? 0 : 3;
  }
  // Per run of items: the first kv head, the rows of one kv head (heads/kv
  // heads x Sq), and per kv head the first row of its first tile.
  Value kvHead0, perHead, firstTileRow;
  // Split-KV: the count (>= 1), whether the op has parts to write, and the
  // run's split.
  Value splits, hasSplits, split;
  // Scratch per call: q rows [BM][D] (f32 scaled, or bf16 with `dot`),
  // accumulators [BM][D], per-row
  // m, l, slope (log2 units), i' (index) and anchor, and the probabilities
  // of a tile's rows [tileRows][BN].
  Value qs, acc, mRow, lRow, slopeRow, ipRow, anchorRow, pTile;
  // The token-row path: per head, a block's partial lane sums (a vector
  // per 4 keys) [H][BN / 4 x vl] and probabilities [H][BN].
  Value tokenPart, tokenP;
};

} // namespace

std::unique_ptr<CpuKernelBuilder>
mlir::tilt::makeDecodeEmitter(AttentionOp op, ImplicitLocOpBuilder &b,
                              bool nativeBf16Dot) {
  return std::make_unique<DecodeEmitter>(op, b, nativeBf16Dot);
}

LogicalResult DecodeEmitter::emit() {
  if (d % vl != 0 || bn % vl != 0)
    return op.emitOpError("the decode kernels need head dim and block_n "
                          "multiples of the vector length ")
           << vl;
  if (spec.bias == ::tilt::BiasKind::AlibiPositions)
    return op.emitOpError("the decode kernels do not take bias "
                          "alibi_positions; use cpu_avx2 or cpu_avx512");
  // The row state holds block_m rows, or with the token-row path one per
  // head if that is more.
  const int64_t rowCap = tokenRowsPath() ? std::max(bm, spec.heads) : bm;
  qs = scratch({rowCap, d}, dot ? elt : f32);
  acc = scratch({rowCap, d}, f32);
  mRow = scratch({rowCap}, f32);
  lRow = scratch({rowCap}, f32);
  slopeRow = scratch({rowCap}, f32);
  ipRow = scratch({rowCap}, b.getIndexType());
  if (spec.positionOffsets && spec.hasAlibi())
    anchorRow = scratch({rowCap}, f32);
  if (tokenRowsPath()) {
    tokenPart = scratch({spec.heads, bn / 4 * vl}, f32);
    tokenP = scratch({spec.heads, bn}, f32);
  }
  pTile = scratch({tileRows(), bn}, f32);
  // Split-KV (the op's splits): S = out_parts' leading extent; 0 writes
  // out and lse_out directly, as one split.
  Value parts =
      io.outParts ? Value(memref::DimOp::create(b, io.outParts, 0)) : idx(0);
  hasSplits =
      arith::CmpIOp::create(b, arith::CmpIPredicate::sgt, parts, idx(0));
  splits = maxI(idx(1), parts);
  // The items [begin, end) of each (batch, split), together (see
  // emitItems): items are (batch, split, kv head), row-major.
  Value begin = op.getItemBegin(), end = op.getItemEnd();
  Value hkv = idx(spec.kvHeads);
  Value lastGroup =
      arith::DivSIOp::create(b, add(end, idx(spec.kvHeads - 1)), hkv);
  forLoop(arith::DivSIOp::create(b, begin, hkv), lastGroup, idx(1),
          [&](Value g) {
            Value first = mul(g, hkv);
            Value lo = maxI(idx(0), sub(begin, first));
            Value hi = minI(hkv, sub(end, first));
            split = arith::RemSIOp::create(b, g, splits);
            emitItems(arith::DivSIOp::create(b, g, splits), lo,
                      maxI(idx(0), sub(hi, lo)));
          });
  return success();
}

void DecodeEmitter::emitItems(Value bt, Value kv0, Value count) {
  // Items = (batch, split, kv head): kv heads [kv0, kv0 + count) of batch
  // bt, split `split`.
  batch = bt;
  kvHead0 = kv0;
  kvHead = kv0;
  loadSequence();
  // Keys any row may see: i' runs over [shift, shift + Sq).
  Value kBegin = idx(0), kEnd = sk;
  if (spec.causal)
    kEnd = maxI(idx(0), minI(sk, add(shift, sq)));
  if (spec.window)
    kBegin = maxI(idx(0), add(sub(shift, idx(*spec.window)), idx(1)));
  kBegin = minI(kBegin, kEnd);
  // This split's chunk of them: S chunks of whole key blocks (so a paged
  // block still lies in one page), the last ones possibly short or empty.
  {
    Value len = sub(kEnd, kBegin);
    Value perSplit =
        arith::DivSIOp::create(b, add(len, sub(splits, idx(1))), splits);
    Value chunk =
        mul(arith::DivSIOp::create(b, add(perSplit, idx(bn - 1)), idx(bn)),
            idx(bn));
    kBegin = minI(kEnd, add(kBegin, mul(split, chunk)));
    kEnd = minI(kEnd, add(kBegin, chunk));
  }

  // The rows, kv head by kv head: heads/kv heads x Sq each.
  perHead = mul(sq, idx(group));
  if (!tokenRowsPath())
    return rowBlocks(kBegin, kEnd, count);
  Value whole = arith::AndIOp::create(
      b,
      arith::AndIOp::create(
          b, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, sq, idx(1)),
          arith::CmpIOp::create(b, arith::CmpIPredicate::eq, kv0, idx(0))),
      arith::CmpIOp::create(b, arith::CmpIPredicate::eq, count,
                            idx(spec.kvHeads)));
  scf::IfOp::create(
      b, whole,
      [&](OpBuilder &, Location) {
        tokenRows(kBegin, kEnd);
        scf::YieldOp::create(b);
      },
      [&](OpBuilder &, Location) {
        rowBlocks(kBegin, kEnd, count);
        scf::YieldOp::create(b);
      });
}

void DecodeEmitter::rowBlocks(Value kBegin, Value kEnd, Value count) {
  // Keys per span: ~128 KiB of K and V, whole blocks.
  const int64_t keyBytes = 2 * d * ::tilt::byteWidth(spec.dtype);
  const int64_t span = std::max<int64_t>(bn, (128 * 1024 / keyBytes) / bn * bn);
  Value totalRows = mul(perHead, count);
  const int64_t tile = tileRows();
  forLoop(idx(0), totalRows, idx(bm), [&](Value r0) {
    Value n = minI(idx(bm), sub(totalRows, r0));
    stageRows(r0, n);
    forLoop(kBegin, kEnd, idx(span), [&](Value s0) {
      Value s1 = minI(kEnd, add(s0, idx(span)));
      // Kv head k's rows of the block, [lo, hi): tiles of tileRows() rows,
      // then the rest one row at a time.
      auto kvHeads = [&](function_ref<void(Value, int64_t)> tiles) {
        forLoop(idx(0), count, idx(1), [&](Value k) {
          auto blockRow = [&](Value r) {
            return maxI(idx(0), minI(n, sub(mul(r, perHead), r0)));
          };
          Value lo = blockRow(k), hi = blockRow(add(k, idx(1)));
          kvHead = add(kvHead0, k);
          firstTileRow = lo;
          auto sweep = [&](Value from, Value to, int64_t rows) {
            forLoop(from, to, idx(rows), [&](Value rr) { tiles(rr, rows); });
          };
          // [lo, tiled): whole tiles; [tiled, hi): single rows.
          Value tiled = lo;
          if (tile > 1) {
            tiled =
                add(lo, mul(arith::DivSIOp::create(b, sub(hi, lo), idx(tile)),
                            idx(tile)));
            sweep(lo, tiled, tile);
          }
          sweep(tiled, hi, 1);
        });
      };
      // Paged, with a kv head's rows in one tile at Sq = 1 (heads/kv heads
      // <= registerTileRows()): each key block for every kv head of the run in
      // turn, so the block's token rows are read whole, line after line, and
      // the next block's rows (the run's kv heads) asked for to L2 first:
      // paged GQA 4:1 on the Zen 4, B 1-16 Sk 8192 and B 4 Sk 32768, two
      // alternating rounds, 1.11-1.40x (BENCHMARKS.md, sixth session; since
      // the seventh, whole calls at Sq = 1 take the token rows instead, and
      // this serves partial runs, Sq > 1 and AVX2's groups of 3 and 4).
      // Measured on the Xeon, bf16 D 128 B 16 Sk 8192 16-token pages,
      // medians of three alternating runs: 149.6 -> 129.8 ms (MHA), 46.5
      // -> 41.8 ms (GQA 4:1); with more rows a kv head (H 32 or 64 over
      // Hkv 4) each block's tiles are better together: 0.85-0.91x.
      if (io.blockTable && group <= registerTileRows()) {
        forLoop(s0, s1, idx(bn), [&](Value kb) {
          prefetchNextBlock(kb, count);
          kvHeads(
              [&](Value rr, int64_t rows) { tileBlock(rr, rows, kb, kEnd); });
        });
      } else {
        kvHeads([&](Value rr, int64_t rows) {
          forLoop(s0, s1, idx(bn),
                  [&](Value kb) { tileBlock(rr, rows, kb, kEnd); });
        });
      }
    });
    finalizeRows(r0, n);
  });
}

Value DecodeEmitter::rowGeometry(Value r) {
  kvHead = add(kvHead0, arith::DivSIOp::create(b, r, perHead));
  Value inHead = arith::RemSIOp::create(b, r, perHead);
  Value g = arith::DivSIOp::create(b, inHead, sq);
  head = add(mul(kvHead, idx(group)), g);
  return arith::RemSIOp::create(b, inHead, sq);
}

void DecodeEmitter::stageRows(Value r0, Value n) {
  Value scale = dot ? Value() : splat(spec.effectiveScale() * kLog2E);
  forLoop(idx(0), n, idx(1), [&](Value rr) {
    Value i = rowGeometry(add(r0, rr));
    if (dot) {
      // As stored, unscaled (scaled() takes the sums).
      for (int64_t c = 0; c < d; c += vl)
        vector::StoreOp::create(
            b,
            vector::LoadOp::create(b, VectorType::get({vl}, elt), op.getQ(),
                                   qIndex(i, idx(c))),
            qs, ValueRange{rr, idx(c)});
    } else {
      SmallVector<Value> q;
      for (int64_t c = 0; c < d; c += vl)
        q.push_back(arith::MulFOp::create(
            b, loadRow(op.getQ(), qIndex(i, idx(c))), scale));
      if (pairs)
        for (size_t c = 0; c < q.size(); c += 2) {
          Value lo = q[c], hi = q[c + 1];
          q[c] = pick(lo, hi, [](int64_t j) { return 2 * j; });
          q[c + 1] = pick(lo, hi, [](int64_t j) { return 2 * j + 1; });
        }
      for (size_t c = 0; c < q.size(); ++c)
        vector::StoreOp::create(b, q[c], qs, ValueRange{rr, idx(c * vl)});
    }
    for (int64_t c = 0; c < d; c += vl)
      vector::StoreOp::create(b, splat(0.0), acc, ValueRange{rr, idx(c)});
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

Value DecodeEmitter::sumAcrossLanes(SmallVector<Value> xs, int level) {
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

SmallVector<Value> DecodeEmitter::scores(Value rr, int64_t rows,
                                         ArrayRef<SmallVector<Value>> keys,
                                         ArrayRef<SmallVector<Value>> ahead) {
  // A register tile of rows x 4 keys, vectors along D: each q chunk is
  // loaded once for 4 keys and each K chunk once for every row (rows x 4
  // accumulators, 16 with AVX-512's 4 rows, 8 with AVX2's 2). A loop along
  // D, two chunks a step, not copies: the unrolled form made the kernel
  // ~4000 instructions and its JIT compile ~800 ms. The first two levels of
  // the lane-sum tree run per 4 keys, each further level as soon as two
  // partial sums of the level below are in (a binary counter), each result
  // behind opaque(): else LLVM sinks every level past the next loops to the
  // end, and the 4 x 16 accumulators of AVX-512's 4-row tile, live across
  // them, spilled in the last loop (a load and a store beside each dot
  // product). Measured on the Zen 4, GQA 4:1 bf16 D 128, with the reduction
  // order of softmaxRow's sum (see there): see tileBlockBody.
  const int64_t per = vectorsPerStep(2);
  const int64_t quad = 4;
  // (level, one vector per row), levels decreasing.
  SmallVector<std::pair<int, SmallVector<Value>>> partial;
  SmallVector<Value> tileRows;
  for (int64_t r = 0; r < rows; ++r)
    tileRows.push_back(add(rr, idx(r)));
  for (size_t k0 = 0; k0 < keys.size(); k0 += quad) {
    SmallVector<Value> init(rows * quad, splat(0.0));
    auto loop = scf::ForOp::create(
        b, idx(0), idx(d), idx(per * vl), init,
        [&](OpBuilder &, Location, Value c0, ValueRange accs) {
          SmallVector<Value> next(accs.begin(), accs.end());
          const int64_t width = pairs ? 2 : 1;
          if (!ahead.empty())
            for (int64_t t = 0; t < quad; ++t)
              prefetchLines(op.getK(), ahead[k0 + t], c0, per * vl,
                            aheadLocality);
          for (int64_t c = 0; c < per; c += width) {
            Value col = add(c0, idx(c * vl));
            accumulateDots(next, tileRows,
                           ArrayRef<SmallVector<Value>>(keys).slice(k0, quad),
                           col);
          }
          scf::YieldOp::create(b, next);
        });
    SmallVector<Value> sums;
    for (int64_t r = 0; r < rows; ++r)
      sums.push_back(opaque(sumAcrossLanes(
          SmallVector<Value>(loop.getResults().slice(r * quad, quad)))));
    int level = 2;
    for (; !partial.empty() && partial.back().first == level; ++level) {
      for (int64_t r = 0; r < rows; ++r)
        sums[r] =
            opaque(sumAcrossLanes({partial.back().second[r], sums[r]}, level));
      partial.pop_back();
    }
    partial.emplace_back(level, std::move(sums));
  }
  assert(partial.size() == 1 && "vl keys: the tree's last level is done");
  SmallVector<Value> out;
  for (Value x : partial.front().second)
    out.push_back(scaled(x));
  return out;
}

void DecodeEmitter::accumulateDots(MutableArrayRef<Value> sums,
                                   ArrayRef<Value> rows,
                                   ArrayRef<SmallVector<Value>> keys,
                                   Value col) {
  const int64_t n = keys.size();
  if (dot) {
    SmallVector<Value> keyPairs;
    for (int64_t t = 0; t < n; ++t)
      keyPairs.push_back(loadRaw(op.getK(), keys[t], col));
    for (size_t r = 0; r < rows.size(); ++r) {
      Value qPair = loadRaw(qs, {rows[r]}, col);
      for (int64_t t = 0; t < n; ++t)
        sums[r * n + t] = bf16PairDot(sums[r * n + t], qPair, keyPairs[t],
                                      /*native=*/true);
    }
    return;
  }
  // Pairs: the evens, then the odds (q staged in that order; see loadPair).
  const int64_t width = pairs ? 2 : 1;
  SmallVector<Value> q; // [w * rows + r]
  for (int64_t w = 0; w < width; ++w)
    for (Value row : rows)
      q.push_back(vector::LoadOp::create(
          b, vecF32, qs, ValueRange{row, add(col, idx(w * vl))}));
  for (int64_t t = 0; t < n; ++t) {
    SmallVector<Value> key;
    if (pairs) {
      auto [even, odd] = loadPair(op.getK(), keys[t], col);
      key = {even, odd};
    } else {
      key = {loadKey(op.getK(), keys[t], col)};
    }
    for (int64_t w = 0; w < width; ++w)
      for (size_t r = 0; r < rows.size(); ++r)
        sums[r * n + t] = vector::FMAOp::create(b, q[w * rows.size() + r],
                                                key[w], sums[r * n + t]);
  }
}

SmallVector<SmallVector<Value>> DecodeEmitter::aheadKeys(Value rr, Value kb) {
  // The first tile of a kv head's rows asks for the K/V lines of keys a
  // few blocks ahead (the head's other tiles find them cached), each line
  // next to the load of the same columns of the block's own key (scores()
  // and the P.V loop), so that requests leave at the pace the kernel
  // consumes lines. A core has few line fill buffers (the ~11 GB/s one
  // thread reads here is their limit): asking for a whole block's lines at
  // once, as this kernel first did, stalls until most are back and leaves
  // the buffers idle while the tile computes; with 128 keys ahead, the
  // lines had also left L1 (64 KiB at D 128 bf16) before their use.
  // Paged caches need the requests most: their keys sit a token row (Hkv x
  // D) apart, a new 4 KiB page per key when Hkv x D x bytes >= 4 KiB, and
  // hardware prefetchers stop at page boundaries.
  //
  // Measured on a 2-core Xeon (AVX-512), bf16 D 128, B 4, Sk 8192, H 32,
  // medians of alternating runs: a burst per block 128 keys ahead against
  // none, contiguous MHA 35.8 -> 26.1 ms, GQA 4:1 12.3 -> 9.2 ms (paged on
  // Zen 3 80 -> 60 and 34 -> 28); interleaved, 16 keys ahead contiguous and
  // 32 paged (of 8-128 tried): see BENCHMARKS.md (2026-12-05, third
  // session).
  //
  // On the Zen 4 the L1 requests cost more than they gave (a core's few
  // fill buffers again), and with none, at D 128 bf16 (a 4 KiB page every
  // 16 keys of K and of V) the hardware prefetchers likely restart on each
  // page. num_stages 2 asks into L2 instead (prefetcht1: the L2's own miss
  // buffers, not L1's), 32 keys ahead. Contiguous MHA, bf16 D 128, Sk
  // 8192, 2 threads, medians of four alternating rounds, none / L1 16
  // ahead / L2 32 / L2 64 / L2 128: B 1 6.89 / 6.55 / 4.23 / 4.97 / 5.87
  // ms, B 4 22.5 / 24.2 / 18.5 / 21.0 / 20.6 ms.
  //
  // Called for blocks inside the sequence (sk >= kb + block_n): the block
  // ahead starts at most at the last one inside it, so no key needs a
  // clamp, and a paged block ahead lies in one page under the same rule as
  // the block's own keys (then it starts on a multiple of block_n). The
  // other tiles ask for the block's own keys again (cache hits) rather than
  // branch around the requests.
  const int64_t keysAhead = io.blockTable || aheadLocality == 2 ? 32 : 16;
  const bool onePage = blocksInOnePage();
  const int64_t distance = onePage ? llvm::alignTo(keysAhead, bn) : keysAhead;
  Value first =
      arith::CmpIOp::create(b, arith::CmpIPredicate::eq, rr, firstTileRow);
  Value offset =
      arith::SelectOp::create(b, first, idx(distance), idx(0)).getResult();
  Value last = sub(sk, idx(bn));
  if (onePage)
    last = mul(arith::DivSIOp::create(b, last, idx(bn)).getResult(), idx(bn));
  Value from = minI(add(kb, offset), last);
  Value page = onePage ? pageOf(from) : Value();
  SmallVector<SmallVector<Value>> keys;
  for (int64_t t = 0; t < bn; ++t)
    keys.push_back(kvRowIndex(add(from, idx(t)), page));
  return keys;
}

void DecodeEmitter::tileBlock(Value rr, int64_t rows, Value kb, Value kEnd) {
  // Blocks inside the sequence address their keys from one base; only the
  // last, partial block clamps each key (16 more live scalars otherwise).
  Value inside =
      arith::CmpIOp::create(b, arith::CmpIPredicate::sle, add(kb, idx(bn)), sk);
  scf::IfOp::create(
      b, inside,
      [&](OpBuilder &, Location) {
        tileBlockBody(rr, rows, kb, kEnd, /*clamp=*/false);
        scf::YieldOp::create(b);
      },
      [&](OpBuilder &, Location) {
        tileBlockBody(rr, rows, kb, kEnd, /*clamp=*/true);
        scf::YieldOp::create(b);
      });
}

void DecodeEmitter::tileBlockBody(Value rr, int64_t rows, Value kb, Value kEnd,
                                  bool clamp) {
  const int64_t nv = bn / vl;
  // The block's key rows, clamped into the sequence when the block runs
  // past it (those keys are masked), and per score vector the keys that
  // exist: j < kEnd, kpm[j] != 0.
  Value last = sub(sk, idx(1));
  // A paged block in one page (see the header) reads its table entry once;
  // its clamped keys lie between kb and kb + block_n, in that page too.
  Value blockPage = blocksInOnePage() ? pageOf(kb) : Value();
  SmallVector<SmallVector<Value>> keys;
  for (int64_t t = 0; t < bn; ++t)
    keys.push_back(kvRowIndex(
        clamp ? minI(add(kb, idx(t)), last) : add(kb, idx(t)), blockPage));
  // The partial last block has nothing ahead to ask for.
  SmallVector<SmallVector<Value>> ahead;
  if (!clamp && aheadLocality)
    ahead = aheadKeys(rr, kb);
  SmallVector<Value> exists = keyExists(kb, kEnd);

  // Scores of every row of the tile, chunk by chunk of vl keys.
  SmallVector<SmallVector<Value>> s(rows);
  for (int64_t c = 0; c < nv; ++c) {
    SmallVector<Value> x = scores(
        rr, rows, ArrayRef<SmallVector<Value>>(keys).slice(c * vl, vl),
        ahead.empty() ? ArrayRef<SmallVector<Value>>()
                      : ArrayRef<SmallVector<Value>>(ahead).slice(c * vl, vl));
    for (int64_t r = 0; r < rows; ++r)
      s[r].push_back(x[r]);
  }
  // Per row: bias, masks and the online softmax; P goes to pTile for the
  // products, the rescale factor stays.
  SmallVector<Value> alphas;
  for (int64_t r = 0; r < rows; ++r)
    alphas.push_back(
        softmaxRow(add(rr, idx(r)), s[r], kb, exists, pTile, idx(r)));

  // acc_r = acc_r * alpha_r + sum_t p_r[t] V[t]: a register tile of rows x
  // `per` D-vectors (a loop along D), each V vector loaded once for every
  // row, p_r[t] broadcast from pTile inside the loop: its index has an
  // opaque zero added, as LLVM's LICM hoisted the invariant broadcasts
  // (rows x block_n vectors) out of the loop and spilled them.
  //
  // Measured on the Zen 4 (2 threads, GQA 4:1 bf16 D 128, the 4-row tile,
  // block 16x16, num_stages 1; medians of three alternating rounds): from
  // L3 (B 4, Sk 1024) 0.52 -> 0.44 ms with scores()' eager lane sums and
  // the summed-as-a-tree reduction (0.46 and 0.50 with either alone), 0.43
  // -> 0.39 with the broadcasts in the loop; from memory B 1 / 4 Sk 8192
  // 1.12 / 4.95 -> 1.00 / 4.34 ms with the first two. tilt-bench's lines
  // in BENCHMARKS.md (2026-12-06, ninth session).
  const int64_t per = vectorsPerStep(4);
  forLoop(idx(0), idx(d), idx(per * vl), [&](Value c0) {
    Value zero = arith::IndexCastOp::create(
        b, b.getIndexType(),
        opaque(arith::ConstantIntOp::create(b, b.getI64Type(), 0)));
    SmallVector<Value> cols, a;
    for (int64_t c = 0; c < per; ++c)
      cols.push_back(add(c0, idx(c * vl)));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < per; ++c)
        a.push_back(arith::MulFOp::create(
            b,
            vector::LoadOp::create(b, vecF32, acc,
                                   ValueRange{add(rr, idx(r)), cols[c]}),
            alphas[r]));
    for (int64_t t = 0; t < bn; ++t) {
      if (!ahead.empty())
        prefetchLines(op.getV(), ahead[t], c0, per * vl, aheadLocality);
      SmallVector<Value> v;
      for (int64_t c = 0; c < per; ++c) {
        if (!pairs) {
          v.push_back(loadKey(op.getV(), keys[t], cols[c]));
          continue;
        }
        auto [even, odd] = loadPair(op.getV(), keys[t], cols[c++]);
        v.push_back(even);
        v.push_back(odd);
      }
      for (int64_t r = 0; r < rows; ++r) {
        Value p = bcast(memref::LoadOp::create(
            b, pTile, ValueRange{idx(r), add(idx(t), zero)}));
        for (int64_t c = 0; c < per; ++c)
          a[r * per + c] = vector::FMAOp::create(b, p, v[c], a[r * per + c]);
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < per; ++c)
        vector::StoreOp::create(b, a[r * per + c], acc,
                                ValueRange{add(rr, idx(r)), cols[c]});
  });
}

SmallVector<Value> DecodeEmitter::keyExists(Value kb, Value kEnd) {
  const int64_t nv = bn / vl;
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
  return exists;
}

Value DecodeEmitter::softmaxRow(Value row, MutableArrayRef<Value> s, Value kb,
                                ArrayRef<Value> exists, Value pOut,
                                Value pRow) {
  const int64_t nv = bn / vl;
  Value lanes = iota();
  Value negInf = splat(-INFINITY);
  if (spec.hasAlibi())
    slope2 = memref::LoadOp::create(b, slopeRow, ValueRange{row});
  Value ip = memref::LoadOp::create(b, ipRow, ValueRange{row});
  Value anchor =
      anchorRow ? bcast(memref::LoadOp::create(b, anchorRow, ValueRange{row}))
                : Value();
  Value blockMax;
  for (int64_t c = 0; c < nv; ++c) {
    Value &x = s[c];
    // j - i' of each lane, exact in f32.
    Value jrel = arith::AddFOp::create(
        b, bcast(indexToF32(sub(add(kb, idx(c * vl)), ip))), lanes);
    x = addBias(x, jrel, anchor, [] { return Value(); });
    x = arith::SelectOp::create(b, positionMask(exists[c], jrel), x, negInf);
    Value mx = vector::ReductionOp::create(b, vector::CombiningKind::MAXNUMF, x,
                                           arith::FastMathFlags::nnan);
    blockMax = blockMax ? maxF(blockMax, mx) : mx;
  }
  // The online softmax; a row with nothing visible yet keeps m = -inf and
  // subtracts 0 instead (no -inf - -inf).
  Value mOld = memref::LoadOp::create(b, mRow, ValueRange{row});
  Value mNew = maxF(mOld, blockMax);
  Value empty = arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, mNew,
                                      f32c(-INFINITY));
  Value mSafe = arith::SelectOp::create(b, empty, f32c(0.0), mNew);
  Value sum = splat(0.0);
  for (int64_t c = 0; c < nv; ++c) {
    Value p = exp2(arith::SubFOp::create(b, s[c], bcast(mSafe)));
    sum = arith::AddFOp::create(b, sum, p);
    vector::StoreOp::create(b, p, pOut, ValueRange{pRow, idx(c * vl)});
  }
  Value alphaV = exp2(bcast(arith::SubFOp::create(b, mOld, mSafe)));
  Value alpha = vector::ExtractOp::create(b, alphaV, ArrayRef<int64_t>{0});
  Value lOld = memref::LoadOp::create(b, lRow, ValueRange{row});
  // Summed as a tree (reassoc), not lane by lane in order: vl dependent
  // scalar adds a row and block otherwise.
  Value total = vector::ReductionOp::create(b, vector::CombiningKind::ADD, sum,
                                            arith::FastMathFlags::reassoc);
  memref::StoreOp::create(b, math::FmaOp::create(b, lOld, alpha, total), lRow,
                          ValueRange{row});
  memref::StoreOp::create(b, mNew, mRow, ValueRange{row});
  return alphaV;
}

void DecodeEmitter::tokenRows(Value kBegin, Value kEnd) {
  // Sq = 1: row r is head r, of kv head r / group.
  Value rows = idx(spec.heads);
  stageRows(idx(0), rows);
  forLoop(kBegin, kEnd, idx(bn), [&](Value kb) { tokenBlock(kb, kEnd); });
  finalizeRows(idx(0), rows);
}

void DecodeEmitter::prefetchNextBlock(Value kb, Value count) {
  Value last = sub(sk, idx(1));
  Value next = minI(add(kb, idx(bn)), last);
  Value page = blocksInOnePage() ? pageOf(next) : Value();
  forLoop(idx(0), idx(bn), idx(1), [&](Value t) {
    SmallVector<Value> at = kvRowIndex(minI(add(next, t), last), page);
    forLoop(idx(0), count, idx(1), [&](Value k) {
      at.back() = add(kvHead0, k);
      prefetchLines(op.getK(), at, idx(0), d, /*locality=*/2);
      prefetchLines(op.getV(), at, idx(0), d, /*locality=*/2);
    });
  });
}

void DecodeEmitter::tokenBlock(Value kb, Value kEnd) {
  const int64_t nv = bn / vl;
  SmallVector<Value> exists = keyExists(kb, kEnd);
  // Row g of kv head k's group.
  auto rowOf = [&](Value k, int64_t g) {
    return add(mul(k, idx(group)), idx(g));
  };
  // q . K[t, k] for each row of kv head k's group: per 4 keys, every kv
  // head along their token rows, each K chunk loaded once for the group; a
  // vector per (row, key) along D, the first two levels of the lane-sum
  // tree taken at once (as scores() does), so one vector per row and 4 keys
  // to tokenPart[row][t0 / 4].
  constexpr int64_t quad = 4;
  forEachTokenRows(
      kb, op.getK(), quad,
      [&](Value t0, Value k, ArrayRef<SmallVector<Value>> keys) {
        SmallVector<Value> sums(group * quad, splat(0.0)); // [g * quad + i]
        SmallVector<Value> rows;
        for (int64_t g = 0; g < group; ++g)
          rows.push_back(rowOf(k, g));
        for (int64_t c = 0; c < d; c += pairs ? 2 * vl : vl)
          accumulateDots(sums, rows, keys, idx(c));
        Value at = mul(arith::DivSIOp::create(b, t0, idx(quad)), idx(vl));
        for (int64_t g = 0; g < group; ++g)
          vector::StoreOp::create(
              b,
              sumAcrossLanes(SmallVector<Value>(
                  ArrayRef<Value>(sums).slice(g * quad, quad))),
              tokenPart, ValueRange{rowOf(k, g), at});
      });
  // Per row: the scores (lane sums), bias, masks and the online softmax as
  // the tiles' rows; the accumulator rescaled.
  forLoop(idx(0), idx(spec.heads), idx(1), [&](Value r) {
    SmallVector<Value> s;
    for (int64_t c = 0; c < nv; ++c) {
      SmallVector<Value> xs;
      for (int64_t j = 0; j < vl / quad; ++j)
        xs.push_back(vector::LoadOp::create(
            b, vecF32, tokenPart,
            ValueRange{r, idx((c * vl / quad + j) * vl)}));
      s.push_back(scaled(sumAcrossLanes(std::move(xs), /*level=*/2)));
    }
    Value alpha = softmaxRow(r, s, kb, exists, tokenP, r);
    for (int64_t c = 0; c < d; c += vl) {
      Value x = vector::LoadOp::create(b, vecF32, acc, ValueRange{r, idx(c)});
      vector::StoreOp::create(b, arith::MulFOp::create(b, x, alpha), acc,
                              ValueRange{r, idx(c)});
    }
  });
  // acc_r += sum_t p_r[t] V[t, k] for each row r of kv head k's group:
  // per `keys` keys, every kv head along their token rows, each V chunk
  // loaded once, each accumulator read and written once for all of them.
  // Measured on the Zen 4 (paged GQA 4:1, bf16 D 128, Sk 2048, from L3):
  // 0.75-1.24 ms a key at a time, 0.57 two, 0.50-0.53 four, 0.53-0.60
  // eight.
  const int64_t keys = quad;
  forEachTokenRows(
      kb, op.getV(), keys,
      [&](Value t0, Value k, ArrayRef<SmallVector<Value>> rows) {
        SmallVector<Value> p; // p[g * keys + i]
        for (int64_t g = 0; g < group; ++g)
          for (int64_t i = 0; i < keys; ++i)
            p.push_back(bcast(memref::LoadOp::create(
                b, tokenP, ValueRange{rowOf(k, g), add(t0, idx(i))})));
        auto accumulate = [&](int64_t col, ArrayRef<Value> v) {
          for (int64_t g = 0; g < group; ++g) {
            SmallVector<Value, 2> at{rowOf(k, g), idx(col)};
            Value x = vector::LoadOp::create(b, vecF32, acc, at);
            for (int64_t i = 0; i < keys; ++i)
              x = vector::FMAOp::create(b, p[g * keys + i], v[i], x);
            vector::StoreOp::create(b, x, acc, at);
          }
        };
        for (int64_t c = 0; c < d; c += pairs ? 2 * vl : vl) {
          SmallVector<Value> even, odd;
          for (int64_t i = 0; i < keys; ++i) {
            if (!pairs) {
              even.push_back(loadKey(op.getV(), rows[i], idx(c)));
              continue;
            }
            auto [e, o] = loadPair(op.getV(), rows[i], idx(c));
            even.push_back(e);
            odd.push_back(o);
          }
          accumulate(c, even);
          if (pairs)
            accumulate(c + vl, odd);
        }
      });
}

void DecodeEmitter::forEachTokenRows(
    Value kb, Value tensor, int64_t keys,
    function_ref<void(Value, Value, ArrayRef<SmallVector<Value>>)> body) {
  Value last = sub(sk, idx(1));
  // Key t's cache row {page, slot} (keys past the sequence read the last
  // one, masked), and the next block's, asked for (to L2) beside it: the
  // pages a block table scatters start cold for the hardware prefetchers.
  auto rowsFrom = [&](Value from) {
    Value page = blocksInOnePage() ? pageOf(from) : Value();
    return [this, from, last, page](Value t) {
      return kvRowIndex(minI(add(from, t), last), page);
    };
  };
  auto here = rowsFrom(kb);
  auto ahead = rowsFrom(minI(add(kb, idx(bn)), last));
  forLoop(idx(0), idx(bn), idx(keys), [&](Value t0) {
    SmallVector<SmallVector<Value>> at, next;
    for (int64_t i = 0; i < keys; ++i) {
      at.push_back(here(add(t0, idx(i))));
      next.push_back(ahead(add(t0, idx(i))));
    }
    forLoop(idx(0), idx(spec.kvHeads), idx(1), [&](Value k) {
      for (int64_t i = 0; i < keys; ++i) {
        at[i].back() = next[i].back() = k;
        prefetchLines(tensor, next[i], idx(0), d, /*locality=*/2);
      }
      body(t0, k, at);
    });
  });
}

void DecodeEmitter::finalizeRows(Value r0, Value n) {
  // To out and lse_out, or to this split's parts.
  if (!io.outParts)
    return finalizeRowsTo(r0, n, Value());
  scf::IfOp::create(
      b, hasSplits,
      [&](OpBuilder &, Location) {
        finalizeRowsTo(r0, n, split);
        scf::YieldOp::create(b);
      },
      [&](OpBuilder &, Location) {
        finalizeRowsTo(r0, n, Value());
        scf::YieldOp::create(b);
      });
}

void DecodeEmitter::finalizeRowsTo(Value r0, Value n, Value part) {
  forLoop(idx(0), n, idx(1), [&](Value rr) {
    Value i = rowGeometry(add(r0, rr));
    Value l = memref::LoadOp::create(b, lRow, ValueRange{rr});
    Value m = memref::LoadOp::create(b, mRow, ValueRange{rr});
    writeRow(
        i, l, m,
        [&](int64_t c) -> Value {
          if (!pairs)
            return vector::LoadOp::create(b, vecF32, acc,
                                          ValueRange{rr, idx(c)});
          // Natural columns c..c+vl: half of the evens and of the odds of
          // their pair, interleaved.
          const int64_t base = c - c % (2 * vl), half = (c - base) / 2;
          Value even =
              vector::LoadOp::create(b, vecF32, acc, ValueRange{rr, idx(base)});
          Value odd = vector::LoadOp::create(b, vecF32, acc,
                                             ValueRange{rr, idx(base + vl)});
          return pick(even, odd,
                      [&](int64_t j) { return (j % 2) * vl + half + j / 2; });
        },
        [&](Value value) {
          if (!anchorRow)
            return value;
          Value a = memref::LoadOp::create(b, anchorRow, ValueRange{rr});
          slope2 = memref::LoadOp::create(b, slopeRow, ValueRange{rr});
          return addAnchorConstant(value, a);
        },
        part);
  });
}
