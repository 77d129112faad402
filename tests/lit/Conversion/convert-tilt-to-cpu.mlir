// RUN: tilt-opt %s -split-input-file --convert-tilt-to-cpu --canonicalize --cse | FileCheck %s

// Loop structure, bias arithmetic, block skipping and the vector micro-kernels
// of the streaming-softmax lowering. H = 2, D = 16, block_m = block_n = 16.

// CHECK-LABEL: func.func @alibi_causal_window(
// CHECK-SAME: %[[Q:[a-z0-9]+]]: memref<?x2x?x16xf32>, %[[K:[a-z0-9]+]]: memref<?x2x?x16xf32>, %[[V:[a-z0-9]+]]: memref<?x2x?x16xf32>, %[[O:[a-z0-9]+]]: memref<?x2x?x16xf32>, %[[LSE:[a-z0-9]+]]: memref<?x2x?xf32>, %[[BEGIN:[a-z0-9]+]]: index, %[[END:[a-z0-9]+]]: index)
// The scores are in log2 units: Q is pre-scaled by scale * log2(e)
// (0.25 * 1.4427), and the standard slopes of H = 2 (2^-4, 2^-8) are a
// table of slope * log2(e) constants indexed by head.
// CHECK-DAG: %[[QSCALE:.*]] = arith.constant 0.360673755 : f32
// CHECK-DAG: %[[SLOPES:.*]] = arith.constant dense<[0.0901684388, 0.00563552743]> : vector<2xf32>
// CHECK-DAG: %[[MINUS_W:.*]] = arith.constant dense<-3.200000e+01> : vector<16xf32>
// Scratch: Qt [D][BM], St [BN][BM], Acc [BM][D], per-row m, l, alpha.
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<16x16xf32>
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<16xf32>
// One iteration per work item: item -> (batch, head, query block).
// CHECK: scf.for %[[ITEM:.*]] = %[[BEGIN]] to %[[END]] step %{{.*}} {
// CHECK: %[[NQB:.*]] = arith.ceildivsi %{{.*}}, %c16 : index
// CHECK: %[[QB:.*]] = arith.remsi %[[ITEM]], %[[NQB]] : index
// CHECK: %[[BH:.*]] = arith.divsi %[[ITEM]], %[[NQB]] : index
// CHECK: %[[HEAD:.*]] = arith.remsi %[[BH]], %c2 : index
// CHECK: %[[SLOPE:.*]] = vector.extract %[[SLOPES]][%[[HEAD]]] : f32 from vector<2xf32>
// Block skipping: causal ends the key range after the block's last row,
// i' + 1; the window of 32 starts it at the first row's i' - 31.
// CHECK: %[[KEND0:.*]] = arith.minsi %{{.*}}, %{{.*}} : index
// CHECK: %[[KEND:.*]] = arith.maxsi %[[KEND0]], %c0 : index
// CHECK: %[[KBEGIN0:.*]] = arith.addi %{{.*}}, %c-31 : index
// CHECK: %[[KBEGIN:.*]] = arith.maxsi %[[KBEGIN0]], %c0 : index
// Qt staging multiplies by the folded scale.
// CHECK: arith.mulf %{{.*}}, %[[QSCALE]] : f32
// The key loop visits only [KBEGIN, KEND), a block at a time.
// CHECK: scf.for %[[KB:.*]] = %[[KBEGIN]] to %[[KEND]] step %c16 {
// Scores: K rows broadcast against Qt vectors, one accumulator per key.
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (vector<16xf32>, vector<16xf32>,
// CHECK: vector.broadcast %{{.*}} : f32 to vector<16xf32>
// CHECK: vector.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<16xf32>
// Softmax pass 1: bias = slope * (j - i') by fma; causal j - i' <= 0 and
// window j - i' > -32 masks; running max without NaN handling.
// CHECK: %[[SV:.*]] = vector.broadcast %[[SLOPE]] : f32 to vector<16xf32>
// CHECK: %[[BIASED:.*]] = math.fma %[[SV]], %[[JREL:.*]], %{{.*}} : vector<16xf32>
// CHECK: %[[CAUSAL:.*]] = arith.cmpf ole, %[[JREL]], %{{.*}} : vector<16xf32>
// CHECK: %[[WIN:.*]] = arith.cmpf ogt, %[[JREL]], %[[MINUS_W]] : vector<16xf32>
// CHECK: %[[VIS:.*]] = arith.andi %[[CAUSAL]], %[[WIN]] : vector<16xi1>
// CHECK: arith.select %[[VIS]], %[[BIASED]], %{{.*}} : vector<16xi1>, vector<16xf32>
// CHECK: arith.maxnumf %{{.*}}, %{{.*}} fastmath<nnan> : vector<16xf32>
// Pass 2: exp2 as a polynomial on the fraction times 2^floor.
// CHECK: math.floor %{{.*}} : vector<16xf32>
// CHECK: math.fma
// CHECK: arith.shli %{{.*}}, %{{.*}} : vector<16xi32>
// CHECK: arith.bitcast %{{.*}} : vector<16xi32> to vector<16xf32>
// P.V: the accumulator tile is rescaled by alpha, then fed by V rows.
// CHECK: vector.load %[[V]][%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}] : memref<?x2x?x16xf32>, vector<16xf32>
// CHECK: vector.fma
// Finalize: o = acc / l, lse = (m + log2 l) * ln 2, -inf for empty rows.
// CHECK: vector.store %{{.*}}, %[[O]][
// CHECK: math.log2
// CHECK: memref.store %{{.*}}, %[[LSE]][
// CHECK-NOT: tilt.attention
func.func @alibi_causal_window(%q: memref<?x2x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x2x?x16xf32>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) out(%o : memref<?x2x?x16xf32>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, window = 32, config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 16>}
  return
}

// -----

// Symmetric bias: -slope * |j - i'|; no mask, so the key loop covers all
// keys and the biased score is stored as is.

// CHECK-LABEL: func.func @symmetric(
// CHECK-NOT: arith.cmpf ole
// CHECK: %[[ABS:.*]] = math.absf %{{.*}} : vector<16xf32>
// CHECK: %[[NEG:.*]] = arith.negf %{{.*}} : f32
// CHECK: %[[NEGV:.*]] = vector.broadcast %[[NEG]] : f32 to vector<16xf32>
// CHECK: %[[S:.*]] = math.fma %[[NEGV]], %[[ABS]], %{{.*}} : vector<16xf32>
// CHECK-NEXT: vector.store %[[S]]
// CHECK: math.floor
func.func @symmetric(%q: memref<?x2x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x2x?x16xf32>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) out(%o : memref<?x2x?x16xf32>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi_symmetric>, config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 16>}
  return
}

// -----

// Positions from a padding mask: pos = cumsum(kpm) - 1 is built once per item
// on the heap (Sk is dynamic); the bias is slope * (pos[j] - pos[i']) and
// padded keys are masked with a broadcast of kpm[j] != 0.

// CHECK-LABEL: func.func @positions(
// CHECK: %[[POS:.*]] = memref.alloc(%{{.*}}) {alignment = 64 : i64} : memref<?xf32>
// CHECK: memref.load %[[KPM:.*]][%{{.*}}, %{{.*}}] : memref<?x?xi8>
// CHECK: arith.cmpi ne, %{{.*}}, %{{.*}} : i8
// CHECK: memref.store %{{.*}}, %[[POS]][%{{.*}}] : memref<?xf32>
// Each row's reference position pos[clamp(i')], staged once per item:
// CHECK: %[[R:.*]] = memref.load %[[POS]][%{{.*}}] : memref<?xf32>
// CHECK: memref.store %[[R]], %[[REFS:.*]][%{{.*}}] : memref<16xf32>
// CHECK: %[[REFV:.*]] = vector.load %[[REFS]][%c0] : memref<16xf32>, vector<16xf32>
// CHECK: %[[P:.*]] = memref.load %[[POS]][%{{.*}}] : memref<?xf32>
// CHECK: %[[PV:.*]] = vector.broadcast %[[P]] : f32 to vector<16xf32>
// CHECK: %[[REL:.*]] = arith.subf %[[PV]], %[[REFV]] : vector<16xf32>
// CHECK: math.fma %{{.*}}, %[[REL]], %{{.*}} : vector<16xf32>
// CHECK: vector.broadcast %{{.*}} : i1 to vector<16xi1>
// CHECK: memref.dealloc %[[POS]] : memref<?xf32>
func.func @positions(%q: memref<?x2x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %m: memref<?x?xi8>, %o: memref<?x2x?x16xf32>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) key_padding_mask(%m : memref<?x?xi8>) out(%o : memref<?x2x?x16xf32>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi_positions>, config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 16>}
  return
}

// -----

// bf16 inputs: K and V blocks are widened to f32 once per block; the output
// is rounded back with truncf.

// CHECK-LABEL: func.func @bf16(
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<16x16xf32>
// CHECK: arith.extf %{{.*}} : vector<16xbf16> to vector<16xf32>
// CHECK: arith.truncf %{{.*}} : vector<16xf32> to vector<16xbf16>
// CHECK: vector.store %{{.*}} : memref<?x2x?x16xbf16>, vector<16xbf16>
func.func @bf16(%q: memref<?x2x?x16xbf16>, %k: memref<?x2x?x16xbf16>, %v: memref<?x2x?x16xbf16>, %o: memref<?x2x?x16xbf16>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x16xbf16>) k(%k : memref<?x2x?x16xbf16>) v(%v : memref<?x2x?x16xbf16>) out(%o : memref<?x2x?x16xbf16>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 16>}
  return
}

// -----

// AVX2 configurations use 8-lane vectors. Their micro-kernels fit the 16 ymm
// registers: 6 x 2 accumulators, 2 loaded vectors and a broadcast. The 16
// keys (or rows) of a block are tiles of 6, 5 and 5, not 6, 6 and 4.

// CHECK-LABEL: func.func @avx2(
// Scores: 6 keys x 2 Qt vectors, then the 5-key tiles.
// CHECK: %{{.*}}:12 = scf.for %{{.*}} = %c0 to %c16 step %c1 iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>) {
// CHECK: vector.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<8xf32>
// CHECK: scf.for %{{.*}} = %c6 to %c16 step %c5 {
// CHECK: %{{.*}}:10 = scf.for %{{.*}} = %c0 to %c16 step %c1
// P.V: 6 rows x 2 V vectors, over the block's keys.
// CHECK: %{{.*}}:12 = scf.for %{{.*}} = %c0 to %{{.*}} step %c1 iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>) {
// CHECK: vector.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<8xf32>
// CHECK-NOT: vector<16xf32>
func.func @avx2(%q: memref<?x2x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x2x?x16xf32>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) out(%o : memref<?x2x?x16xf32>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

// cpu_amx (bf16): K^T and V are packed in VNNI pairs (K by 16x16 transposes
// of 32-bit pairs, V by interleaving row pairs); S = Q K^T and P V run on
// 2x2 blocks of 16x16 f32 accumulator tiles; the softmax in between is f32,
// row-wise, with butterfly all-reduces, and writes P as bf16. Packed K/V,
// scores, P and alpha are double-buffered for the software pipeline.

// CHECK-LABEL: func.func @amx(
// CHECK-DAG: %[[KV:.*]] = memref.alloca() {alignment = 64 : i64} : memref<2x16x64xbf16>
// CHECK-DAG: %[[S:.*]] = memref.alloca() {alignment = 64 : i64} : memref<2x32x32xf32>
// CHECK-DAG: %[[P:.*]] = memref.alloca() {alignment = 64 : i64} : memref<2x32x32xbf16>
// K^T pairs: bitcasts to 32-bit lanes, then shuffles.
// CHECK: vector.bitcast %{{.*}} : vector<32xbf16> to vector<16xi32>
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23] : vector<16xi32>, vector<16xi32>
// V pairs: interleave two rows (the shuffle canonicalizes to an interleave).
// CHECK: vector.interleave %{{.*}}, %{{.*}} : vector<16xbf16> -> vector<32xbf16>
// S tiles.
// CHECK: %[[C:.*]] = amx.tile_zero : !amx.tile<16x16xf32>
// CHECK: amx.tile_load %[[KV]][%{{.*}}, %{{.*}}, %{{.*}}] : memref<2x16x64xbf16> into !amx.tile<16x32xbf16>
// CHECK: amx.tile_mulf %{{.*}}, %{{.*}}, %[[C]] : !amx.tile<16x32xbf16>, !amx.tile<16x32xbf16>, !amx.tile<16x16xf32>
// CHECK: amx.tile_store %[[S]][%{{.*}}, %{{.*}}, %{{.*}}], %{{.*}} : memref<2x32x32xf32>, !amx.tile<16x16xf32>
// Softmax: scores scaled in f32, all-reduce max by butterfly shuffles, P
// rounded to bf16.
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7] : vector<16xf32>, vector<16xf32>
// CHECK: arith.maxnumf %{{.*}}, %{{.*}} fastmath<nnan> : vector<16xf32>
// CHECK: arith.truncf %{{.*}} : vector<16xf32> to vector<16xbf16>
// The pipelined loop: P V of block c reads P from its buffer.
// CHECK: scf.for
// CHECK: amx.tile_load %[[P]][%{{.*}}, %{{.*}}, %{{.*}}] : memref<2x32x32xbf16> into !amx.tile<16x32xbf16>
// CHECK: math.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<16xf32>
func.func @amx(%q: memref<?x2x?x32xbf16>, %k: memref<?x2x?x32xbf16>, %v: memref<?x2x?x32xbf16>, %o: memref<?x2x?x32xbf16>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x32xbf16>) k(%k : memref<?x2x?x32xbf16>) v(%v : memref<?x2x?x32xbf16>) out(%o : memref<?x2x?x32xbf16>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_amx, block_m = 32, block_n = 32>}
  return
}

// -----

// Position offsets: i' = i + (q_offset - k_offset) in place of Sk - Sq, and
// each row's distances taken from its anchor clamp(i', 0, Sk - 1) (staged
// once per item, exact in f32), the row constant -m * |anchor| put back into
// the lse. Masks keep the true j - i'.

// CHECK-LABEL: func.func @offsets(
// CHECK-SAME: %[[QO:[a-z0-9]+]]: index, %[[KO:[a-z0-9]+]]: index, %{{[a-z0-9]+}}: index, %{{[a-z0-9]+}}: index)
// CHECK: %[[SHIFT:.*]] = arith.subi %[[QO]], %[[KO]] : index
// Anchors: clamp(i') - i' per row.
// CHECK: scf.for %[[I:.*]] = %c0 to %c16 step %c1 {
// CHECK: %[[IP:.*]] = arith.addi %{{.*}}, %[[SHIFT]] : index
// CHECK: %[[NEAR0:.*]] = arith.minsi %[[IP]], %{{.*}} : index
// CHECK: %[[NEAR:.*]] = arith.maxsi %[[NEAR0]], %c0 : index
// CHECK: %[[A:.*]] = arith.subi %[[NEAR]], %[[IP]] : index
// CHECK: %[[AI:.*]] = arith.index_cast %[[A]] : index to i64
// CHECK: %[[AF:.*]] = arith.sitofp %[[AI]] : i64 to f32
// CHECK: memref.store %[[AF]], %[[ANCHORS:.*]][%[[I]]] : memref<16xf32>
// Scores: the bias from jrel - anchor, the causal mask from jrel.
// CHECK: %[[AV:.*]] = vector.load %[[ANCHORS]][%c0] : memref<16xf32>, vector<16xf32>
// CHECK: %[[JREL:.*]] = arith.addf %{{.*}}, %{{.*}} : vector<16xf32>
// CHECK: %[[DIST:.*]] = arith.subf %[[JREL]], %[[AV]] : vector<16xf32>
// CHECK: %[[ABS:.*]] = math.absf %[[DIST]] : vector<16xf32>
// CHECK: math.fma %{{.*}}, %[[ABS]], %{{.*}} : vector<16xf32>
// CHECK: arith.cmpf ole, %[[JREL]], %{{.*}} : vector<16xf32>
// Finalize: lse += -m * |anchor| (natural units).
// CHECK: math.log2
// CHECK: %[[AROW:.*]] = memref.load %[[ANCHORS]][%{{.*}}] : memref<16xf32>
// CHECK: %[[NEGM:.*]] = arith.negf %{{.*}} : f32
// CHECK: %[[AABS:.*]] = math.absf %[[AROW]] : f32
// CHECK: math.fma %[[NEGM]], %[[AABS]], %{{.*}} : f32
func.func @offsets(%q: memref<?x2x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x2x?x16xf32>, %lse: memref<?x2x?xf32>, %qo: index, %ko: index, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) offsets(%qo, %ko) out(%o : memref<?x2x?x16xf32>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi_symmetric>, causal, config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 16>}
  return
}

// -----

// The decode family: one work item per (batch, split, kv head), the GQA group's
// query rows (heads/kv heads x Sq, H = 4 over Hkv = 2 here) in blocks of
// block_m, every key block read once for all of them; per row, vl keys'
// dot products summed across lanes by a shuffle tree (two levels inside
// 128-bit blocks, then whole blocks), one max and one sum reduction per
// block, and P.V along D.

// CHECK-LABEL: func.func @decode(
// CHECK-SAME: %[[Q:[a-z0-9]+]]: memref<?x4x?x16xbf16>, %[[K:[a-z0-9]+]]: memref<?x2x?x16xbf16>, %[[V:[a-z0-9]+]]: memref<?x2x?x16xbf16>, %[[O:[a-z0-9]+]]: memref<?x4x?x16xbf16>, %[[LSE:[a-z0-9]+]]: memref<?x4x?xf32>, %[[OP:[a-z0-9]+]]: memref<?x?x4x?x16xf32>, %[[LP:[a-z0-9]+]]: memref<?x?x4x?xf32>
// CHECK: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// Split-KV: S = out_parts' leading extent (0: none, one split writing out).
// CHECK: %[[S:.*]] = memref.dim %[[OP]], %c0 : memref<?x?x4x?x16xf32>
// CHECK: %[[HAS:.*]] = arith.cmpi sgt, %[[S]], %c0 : index
// CHECK: %[[SPLITS:.*]] = arith.maxsi %[[S]], %c1 : index
// The items [begin, end) by (batch, split): G's kv heads [LO, hi)
// together, G = batch x splits + split.
// CHECK: scf.for %[[G:.*]] = %{{.*}} to %{{.*}} step %c1 {
// CHECK: arith.muli %[[G]], %c2 : index
// CHECK: %[[LO:.*]] = arith.maxsi %{{.*}}, %c0 : index
// CHECK: %[[SPLIT:.*]] = arith.remsi %[[G]], %[[SPLITS]] : index
// CHECK: %[[B:.*]] = arith.divsi %[[G]], %[[SPLITS]] : index
// The split's chunk of the visible keys [KB0, KE): ceil(keys / S) rounded
// up to whole blocks of 16.
// CHECK: %[[PER:.*]] = arith.divsi %{{.*}}, %[[SPLITS]] : index
// CHECK: %[[UP:.*]] = arith.addi %[[PER]], %c15 : index
// CHECK: %[[NB:.*]] = arith.divsi %[[UP]], %c16 : index
// CHECK: %[[CHUNK:.*]] = arith.muli %[[NB]], %c16 : index
// CHECK: %[[OFF:.*]] = arith.muli %[[SPLIT]], %[[CHUNK]] : index
// CHECK: %[[START:.*]] = arith.addi %{{.*}}, %[[OFF]] : index
// CHECK: %[[KB0:.*]] = arith.minsi %[[KEND:.*]], %[[START]] : index
// CHECK: %[[STOP:.*]] = arith.addi %[[KB0]], %[[CHUNK]] : index
// CHECK: %[[KE:.*]] = arith.minsi %[[KEND]], %[[STOP]] : index
// Row blocks of their rows (2 heads x Sq per kv head), spans of 2048 keys
// (128 KiB of bf16 K and V at D = 16), then per kv head of the block
// register tiles of 2 rows (AVX2) through the span's key blocks; full
// blocks and the tail block apart.
// CHECK: scf.for %[[R0:.*]] = %c0 to %{{.*}} step %c16 {
// q rows staged scaled, in pair order (bf16, D a multiple of 2 x 8): each
// 16 columns as their evens, then their odds.
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [0, 2, 4, 6, 8, 10, 12, 14] : vector<8xf32>, vector<8xf32>
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [1, 3, 5, 7, 9, 11, 13, 15] : vector<8xf32>, vector<8xf32>
// CHECK: scf.for %[[SPAN:.*]] = %[[KB0]] to %[[KE]] step %c2048 {
// CHECK: scf.for %[[KI:.*]] = %c0 to %{{.*}} step %c1 {
// CHECK: %[[KVH:.*]] = arith.addi %[[LO]], %[[KI]] : index
// CHECK: scf.for %[[ROW:.*]] = %[[FROM:.*]] to %[[TILED:.*]] step %c2 {
// CHECK: scf.for %[[KB:.*]] = %[[SPAN]] to %{{.*}} step %c16 {
// CHECK: scf.if
// A full block: the first tile asks for the K/V lines of the keys 16 ahead
// (the other tiles for the block's own), the block ahead at most the last
// one inside the sequence; each key's K line beside the scores' loads.
// CHECK: %[[FIRSTROW:.*]] = arith.cmpi eq, %[[ROW]], %[[FROM]] : index
// CHECK: %[[AHEAD:.*]] = arith.select %[[FIRSTROW]], %c16, %c0 : index
// CHECK: %[[LASTBLOCK:.*]] = arith.subi %{{.*}}, %c16 : index
// CHECK: %[[TO:.*]] = arith.addi %[[KB]], %[[AHEAD]] : index
// CHECK: %[[PF:.*]] = arith.minsi %[[TO]], %[[LASTBLOCK]] : index
// CHECK: memref.prefetch %[[K]][%[[B]], %[[KVH]], %[[PF]], %c0], read, locality<3>, data
// Scores of 2 rows x 4 keys: both rows' q (evens, odds), then each key's 16
// bf16 in one load, widened without a shuffle (evens x << 16, odds x &
// 0xffff0000) and used by both rows.
// CHECK: %[[Q0:.*]] = vector.load %{{.*}}[%[[ROW]], %c0] : memref<16x16xf32>, vector<8xf32>
// CHECK: %[[Q1:.*]] = vector.load %{{.*}}[%{{.*}}, %c0] : memref<16x16xf32>, vector<8xf32>
// CHECK: %[[QO0:.*]] = vector.load %{{.*}}[%[[ROW]], %c8] : memref<16x16xf32>, vector<8xf32>
// CHECK: %[[QO1:.*]] = vector.load %{{.*}}[%{{.*}}, %c8] : memref<16x16xf32>, vector<8xf32>
// CHECK: %[[KX:.*]] = vector.load %[[K]][%[[B]], %[[KVH]], %[[KB]], %c0] : memref<?x2x?x16xbf16>, vector<16xbf16>
// CHECK-NEXT: %[[KI:.*]] = vector.bitcast %[[KX]] : vector<16xbf16> to vector<8xi32>
// CHECK-NEXT: %[[KE:.*]] = arith.shli %[[KI]], %{{.*}} : vector<8xi32>
// CHECK-NEXT: %[[KO:.*]] = arith.andi %[[KI]], %{{.*}} : vector<8xi32>
// CHECK-NEXT: %[[KEF:.*]] = vector.bitcast %[[KE]] : vector<8xi32> to vector<8xf32>
// CHECK-NEXT: %[[KOF:.*]] = vector.bitcast %[[KO]] : vector<8xi32> to vector<8xf32>
// CHECK-NEXT: %[[S0:.*]] = vector.fma %[[Q0]], %[[KEF]],
// CHECK-NEXT: %[[S1:.*]] = vector.fma %[[Q1]], %[[KEF]],
// CHECK-NEXT: vector.fma %[[QO0]], %[[KOF]], %[[S0]]
// CHECK-NEXT: vector.fma %[[QO1]], %[[KOF]], %[[S1]]
// Two levels of the lane-sum tree per 4 keys, in 128-bit blocks, each
// row's result behind an empty inline asm (LLVM keeps the sums before the
// next 4 keys' loop).
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [1, 3, 9, 11, 5, 7, 13, 15] : vector<8xf32>, vector<8xf32>
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [0, 2, 8, 10, 4, 6, 12, 14] : vector<8xf32>, vector<8xf32>
// CHECK: %[[PART0:.*]] = llvm.inline_asm has_side_effects "", "=v,0" %{{.*}} : (vector<8xf32>) -> vector<8xf32>
// CHECK: llvm.inline_asm has_side_effects "", "=v,0"
// CHECK: vector.load %[[K]]
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [0, 2, 8, 10, 4, 6, 12, 14] : vector<8xf32>, vector<8xf32>
// CHECK: %[[PART1:.*]] = llvm.inline_asm has_side_effects "", "=v,0"
// The last level moves whole blocks, as soon as the block's 8 keys are in.
// CHECK: vector.shuffle %[[PART0]], %[[PART1]] [4, 5, 6, 7, 12, 13, 14, 15] : vector<8xf32>, vector<8xf32>
// CHECK: vector.shuffle %[[PART0]], %[[PART1]] [0, 1, 2, 3, 8, 9, 10, 11] : vector<8xf32>, vector<8xf32>
// CHECK: llvm.inline_asm has_side_effects "", "=v,0"
// Per row: bias, causal mask, the running max and sum; P to the tile's
// scratch.
// CHECK: math.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<8xf32>
// CHECK: arith.cmpf ole
// CHECK: vector.reduction <maxnumf>, %{{.*}} fastmath<nnan> : vector<8xf32> into f32
// CHECK: vector.store %{{.*}}, %[[P:.*]][%c0, %c0] : memref<2x16xf32>, vector<8xf32>
// CHECK: vector.reduction <add>, %{{.*}} fastmath<reassoc> : vector<8xf32> into f32
// CHECK: vector.store %{{.*}}, %[[P]][%c1, %c0] : memref<2x16xf32>, vector<8xf32>
// P.V: each V vector widened once for both rows, p broadcast from the
// scratch, its index plus an opaque zero (the loads stay in the loop along
// D); the V line of the key ahead asked for beside it.
// CHECK: %[[Z:.*]] = llvm.inline_asm has_side_effects "", "=r,0" %{{.*}} : (i64) -> i64
// CHECK: %[[ZI:.*]] = arith.index_cast %[[Z]] : i64 to index
// CHECK: memref.prefetch %[[V]][%[[B]], %[[KVH]], %[[PF]], %c0], read, locality<3>, data
// CHECK-NEXT: vector.load %[[V]][%[[B]], %[[KVH]], %[[KB]], %c0] : memref<?x2x?x16xbf16>, vector<16xbf16>
// CHECK: memref.load %[[P]][%c0, %[[ZI]]] : memref<2x16xf32>
// CHECK: vector.fma
// CHECK: memref.load %[[P]][%c1, %[[ZI]]] : memref<2x16xf32>
// CHECK: vector.fma
// The rows past the last whole tile, one at a time.
// CHECK: scf.for %{{.*}} = %[[TILED]] to %{{.*}} step %c1 {
// Finalize: o = acc / l in natural column order (evens and odds
// interleaved back), lse: with splits, f32 to the split's parts; else o in
// bf16 and lse to out and lse_out.
// CHECK: scf.if %[[HAS]] {
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [0, 8, 1, 9, 2, 10, 3, 11] : vector<8xf32>, vector<8xf32>
// CHECK: vector.store %{{.*}}, %[[OP]][%[[SPLIT]], %[[B]], %{{.*}}, %{{.*}}, %c0] : memref<?x?x4x?x16xf32>, vector<8xf32>
// CHECK: vector.shuffle %{{.*}}, %{{.*}} [4, 12, 5, 13, 6, 14, 7, 15] : vector<8xf32>, vector<8xf32>
// CHECK: vector.store %{{.*}}, %[[OP]][%[[SPLIT]], %[[B]], %{{.*}}, %{{.*}}, %c8] : memref<?x?x4x?x16xf32>, vector<8xf32>
// CHECK: math.log2
// CHECK: memref.store %{{.*}}, %[[LP]][%[[SPLIT]], %[[B]], %{{.*}}, %{{.*}}] : memref<?x?x4x?xf32>
// Split 0 writes the row's constant to lse_out: 0 without offsets.
// CHECK: %[[FIRST:.*]] = arith.cmpi eq, %[[SPLIT]], %c0 : index
// CHECK: scf.if %[[FIRST]] {
// CHECK: memref.store %[[ZERO]], %[[LSE]][%[[B]], %{{.*}}, %{{.*}}] : memref<?x4x?xf32>
// CHECK: } else {
// CHECK: arith.truncf %{{.*}} : vector<8xf32> to vector<8xbf16>
// CHECK: vector.store %{{.*}}, %[[O]][%[[B]], %{{.*}}, %{{.*}}, %c0] : memref<?x4x?x16xbf16>, vector<8xbf16>
// CHECK: memref.store %{{.*}}, %[[LSE]][%[[B]], %{{.*}}, %{{.*}}] : memref<?x4x?xf32>
// CHECK-NOT: tilt.attention
func.func @decode(%q: memref<?x4x?x16xbf16>, %k: memref<?x2x?x16xbf16>, %v: memref<?x2x?x16xbf16>, %o: memref<?x4x?x16xbf16>, %lse: memref<?x4x?xf32>, %op: memref<?x?x4x?x16xf32>, %lp: memref<?x?x4x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x16xbf16>) k(%k : memref<?x2x?x16xbf16>) v(%v : memref<?x2x?x16xbf16>) out(%o : memref<?x4x?x16xbf16>) lse_out(%lse : memref<?x4x?xf32>) splits(%op : memref<?x?x4x?x16xf32>, %lp : memref<?x?x4x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

// A paged KV cache (k/v [num_pages, 16, Hkv, D]): Sk is context_lens[b];
// with page_size a multiple of block_n and no window a key block lies in one
// page, so its block-table entry (kb >> 4) is read once per block and its
// keys sit at slots kb & 15 + t of that page.

// CHECK-LABEL: func.func @decode_paged(
// CHECK-SAME: %[[K:[a-z0-9]+]]: memref<?x16x2x16xbf16>
// CHECK-SAME: %[[BT:[a-z0-9]+]]: memref<?x?xi32>, %[[CL:[a-z0-9]+]]: memref<?xi32>
// CHECK: scf.for %[[B:.*]] = %{{.*}} to %{{.*}} step %c1 {
// CHECK: %[[LEN:.*]] = memref.load %[[CL]][%[[B]]] : memref<?xi32>
// CHECK: arith.index_cast %[[LEN]] : i32 to index
// With a kv head's rows in one tile (2 heads a kv head, AVX2 tiles of 2),
// each key block goes through every kv head of the run before the next,
// after asking (to L2) for the next block's rows of those kv heads.
// CHECK: scf.for %{{.*}} step %c2048 {
// CHECK: scf.for %[[KB:.*]] = %{{.*}} to %{{.*}} step %c16 {
// CHECK: memref.prefetch %[[K]][%{{.*}}, %{{.*}}, %{{.*}}, %c0], read, locality<2>, data
// CHECK: memref.prefetch %{{.*}}, read, locality<2>, data
// CHECK: scf.for %{{.*}} = %c0 to %{{.*}} step %c1 {
// A full block reads its table entry once; its first tile asks for the
// K/V lines of the block 32 keys ahead (at most the last whole block inside
// the sequence, so in one page too: its entry read once as well), each
// line beside the load of the same columns of the block's own key.
// CHECK: scf.if
// CHECK: %[[ENTRY:.*]] = arith.shrui %[[KB]], %c4 : index
// CHECK: %[[ID:.*]] = memref.load %[[BT]][%[[B]], %[[ENTRY]]] : memref<?x?xi32>
// CHECK: %[[PAGE:.*]] = arith.index_cast %[[ID]] : i32 to index
// CHECK: %[[SLOT:.*]] = arith.andi %[[KB]], %c15 : index
// CHECK: arith.select %{{.*}}, %c32, %c0 : index
// CHECK: %[[LASTWHOLE:.*]] = arith.muli %{{.*}}, %c16 : index
// CHECK: %[[AHEAD:.*]] = arith.minsi %{{.*}}, %[[LASTWHOLE]] : index
// CHECK: %[[AENTRY:.*]] = arith.shrui %[[AHEAD]], %c4 : index
// CHECK: %[[AID:.*]] = memref.load %[[BT]][%[[B]], %[[AENTRY]]] : memref<?x?xi32>
// CHECK: %[[APAGE:.*]] = arith.index_cast %[[AID]] : i32 to index
// CHECK: %[[ASLOT:.*]] = arith.andi %[[AHEAD]], %c15 : index
// CHECK: memref.prefetch %[[K]][%[[APAGE]], %[[ASLOT]], %{{.*}}, %c0], read, locality<3>, data
// CHECK: vector.load %[[K]][%[[PAGE]], %[[SLOT]], %{{.*}}, %c0] : memref<?x16x2x16xbf16>, vector<16xbf16>
// CHECK-NOT: tilt.attention
func.func @decode_paged(%q: memref<?x4x?x16xbf16>, %k: memref<?x16x2x16xbf16>, %v: memref<?x16x2x16xbf16>, %bt: memref<?x?xi32>, %cl: memref<?xi32>, %o: memref<?x4x?x16xbf16>, %lse: memref<?x4x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x16xbf16>) k(%k : memref<?x16x2x16xbf16>) v(%v : memref<?x16x2x16xbf16>) paged(%bt : memref<?x?xi32>, %cl : memref<?xi32>) out(%o : memref<?x4x?x16xbf16>) lse_out(%lse : memref<?x4x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

// Pages of 8 under blocks of 16 keys: a block spans two pages, so each key
// reads its own block-table entry (t >> 3).

// CHECK-LABEL: func.func @decode_paged_small_pages(
// CHECK: scf.for %{{.*}} step %c1024 {
// CHECK: scf.for %[[KB:.*]] = %{{.*}} to %{{.*}} step %c16 {
// CHECK: arith.shrui %{{.*}}, %c3 : index
// CHECK: arith.andi %{{.*}}, %c7 : index
// CHECK: arith.shrui %{{.*}}, %c3 : index
// CHECK: arith.andi %{{.*}}, %c7 : index
func.func @decode_paged_small_pages(%q: memref<?x4x?x16xf32>, %k: memref<?x8x2x16xf32>, %v: memref<?x8x2x16xf32>, %bt: memref<?x?xi32>, %cl: memref<?xi32>, %o: memref<?x4x?x16xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x16xf32>) k(%k : memref<?x8x2x16xf32>) v(%v : memref<?x8x2x16xf32>) paged(%bt : memref<?x?xi32>, %cl : memref<?xi32>) out(%o : memref<?x4x?x16xf32>) items(%b, %e) {config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

// A prefill kernel (a chunked prefill) over a paged cache: Sk is
// context_lens[b] as in the decode family, and each key of a block (16, over
// pages of 8) reads its own block-table entry (t >> 3) and slot (t & 7)
// once, before the loop along D, the keys past the sequence clamped to its
// last. Each block first asks (to L2) for the next block's K and V rows
// (clamped to the last key).

// CHECK-LABEL: func.func @prefill_paged(
// CHECK-SAME: %[[K:[a-z0-9]+]]: memref<?x8x2x16xf32>, %[[V:[a-z0-9]+]]: memref<?x8x2x16xf32>, %[[BT:[a-z0-9]+]]: memref<?x?xi32>, %[[CL:[a-z0-9]+]]: memref<?xi32>
// CHECK: %[[B:.*]] = arith.divsi %{{.*}}, %c4 : index
// CHECK: %[[KVH:.*]] = arith.divsi %{{.*}}, %c2 : index
// CHECK: %[[LEN:.*]] = memref.load %[[CL]][%[[B]]] : memref<?xi32>
// CHECK: %[[SK:.*]] = arith.index_cast %[[LEN]] : i32 to index
// CHECK: scf.for %[[KB:.*]] = %c0 to %[[KEND:.*]] step %c16 {
// CHECK: %[[NEXT:.*]] = arith.addi %[[KB]], %c16 : index
// CHECK: %[[KLAST:.*]] = arith.subi %[[KEND]], %c1 : index
// CHECK: scf.for %[[T:.*]] = %c0 to %c16 step %c1 {
// CHECK: %[[NT:.*]] = arith.addi %[[NEXT]], %[[T]] : index
// CHECK: %[[NK:.*]] = arith.minsi %[[NT]], %[[KLAST]] : index
// CHECK: %[[NSLOT:.*]] = arith.andi %[[NK]], %c7 : index
// CHECK: %[[NENTRY:.*]] = arith.shrui %[[NK]], %c3 : index
// CHECK: %[[NID:.*]] = memref.load %[[BT]][%[[B]], %[[NENTRY]]] : memref<?x?xi32>
// CHECK: %[[NPAGE:.*]] = arith.index_cast %[[NID]] : i32 to index
// CHECK: memref.prefetch %[[K]][%[[NPAGE]], %[[NSLOT]], %[[KVH]], %c0], read, locality<2>, data
// CHECK: memref.prefetch %[[V]][%[[NPAGE]], %[[NSLOT]], %[[KVH]], %c0], read, locality<2>, data
// CHECK: %[[LAST:.*]] = arith.subi %[[SK]], %c1 : index
// CHECK: %[[T0:.*]] = arith.minsi %[[KB]], %[[LAST]] : index
// CHECK: %[[SLOT:.*]] = arith.andi %[[T0]], %c7 : index
// CHECK: %[[ENTRY:.*]] = arith.shrui %[[T0]], %c3 : index
// CHECK: %[[ID:.*]] = memref.load %[[BT]][%[[B]], %[[ENTRY]]] : memref<?x?xi32>
// CHECK: %[[PAGE:.*]] = arith.index_cast %[[ID]] : i32 to index
// CHECK: scf.for %[[C:.*]] = %c0 to %c16 step %c1
// CHECK-NOT: memref.load %[[BT]]
// CHECK: memref.load %[[K]][%[[PAGE]], %[[SLOT]], %[[KVH]], %[[C]]] : memref<?x8x2x16xf32>
// CHECK-NOT: tilt.attention
func.func @prefill_paged(%q: memref<?x4x?x16xf32>, %k: memref<?x8x2x16xf32>, %v: memref<?x8x2x16xf32>, %bt: memref<?x?xi32>, %cl: memref<?xi32>, %o: memref<?x4x?x16xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x16xf32>) k(%k : memref<?x8x2x16xf32>) v(%v : memref<?x8x2x16xf32>) paged(%bt : memref<?x?xi32>, %cl : memref<?xi32>) out(%o : memref<?x4x?x16xf32>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_avx512, block_m = 16, block_n = 16>}
  return
}

// -----

// Paged MHA (H = Hkv = 2): the token-row path, taken at Sq = 1 when the
// call holds every kv head of one (batch, split); the cache rows of 4 keys
// are read whole, K then V, every kv head side by side (the loop over kv
// heads inside the loop over the block's keys, 4 at a time), the next
// block's rows asked for (to L2) beside them. Otherwise the row blocks.

// CHECK-LABEL: func.func @decode_paged_token_rows(
// CHECK-SAME: %{{[a-z0-9]+}}: memref<?x2x?x16xbf16>, %[[K:[a-z0-9]+]]: memref<?x16x2x16xbf16>, %[[V:[a-z0-9]+]]: memref<?x16x2x16xbf16>
// Row state for a row per head; a block's partial sums (a vector per 4
// keys) and P per head.
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<2x32xf32>
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<2x16xf32>
// CHECK: %[[ALL:.*]] = arith.cmpi eq, %{{.*}}, %c2 : index
// CHECK: %[[FIRST:.*]] = arith.cmpi eq, %{{.*}}, %c0 : index
// CHECK: %[[ONE:.*]] = arith.cmpi eq, %{{.*}}, %c1 : index
// CHECK: %[[A:.*]] = arith.andi %[[ONE]], %[[FIRST]] : i1
// CHECK: %[[WHOLE:.*]] = arith.andi %[[A]], %[[ALL]] : i1
// CHECK: scf.if %[[WHOLE]] {
// CHECK: scf.for %{{.*}} step %c16 {
// CHECK: scf.for %{{.*}} = %c0 to %c16 step %c4 {
// CHECK: scf.for %[[H:.*]] = %c0 to %c2 step %c1 {
// CHECK-COUNT-4: memref.prefetch %[[K]][%{{.*}}, %{{.*}}, %[[H]], %c0], read, locality<2>, data
// CHECK-COUNT-4: vector.load %[[K]][%{{.*}}, %{{.*}}, %[[H]], %c0] : memref<?x16x2x16xbf16>, vector<16xbf16>
// CHECK: scf.for %{{.*}} = %c0 to %c16 step %c4 {
// CHECK: scf.for %[[H2:.*]] = %c0 to %c2 step %c1 {
// CHECK: memref.prefetch %[[V]][%{{.*}}, %{{.*}}, %[[H2]], %c0], read, locality<2>, data
// CHECK: vector.load %[[V]][%{{.*}}, %{{.*}}, %[[H2]], %c0] : memref<?x16x2x16xbf16>, vector<16xbf16>
// CHECK: } else {
// CHECK: memref.prefetch %[[V]]{{.*}} locality<3>
func.func @decode_paged_token_rows(%q: memref<?x2x?x16xbf16>, %k: memref<?x16x2x16xbf16>, %v: memref<?x16x2x16xbf16>, %bt: memref<?x?xi32>, %cl: memref<?xi32>, %o: memref<?x2x?x16xbf16>, %lse: memref<?x2x?xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x2x?x16xbf16>) k(%k : memref<?x16x2x16xbf16>) v(%v : memref<?x16x2x16xbf16>) paged(%bt : memref<?x?xi32>, %cl : memref<?xi32>) out(%o : memref<?x2x?x16xbf16>) lse_out(%lse : memref<?x2x?xf32>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_decode_avx2, block_m = 16, block_n = 16>}
  return
}

// -----

// Paged GQA (H 4 over Hkv 2) takes the token-row path too: a row per head,
// each K chunk of the 4 keys' rows loaded once for the group's 2 rows. bf16
// with D a multiple of 32 on an AVX512_BF16 target: q staged as bf16,
// unscaled, and q . K as vdpbf16ps against K read in place; P . V in f32,
// the 4 keys' V chunks into each accumulator at once.

// CHECK-LABEL: func.func @decode_paged_token_rows_gqa(
// CHECK-SAME: %[[K:[a-z0-9]+]]: memref<?x16x2x32xbf16>, %[[V:[a-z0-9]+]]: memref<?x16x2x32xbf16>
// CHECK: %[[QS:.*]] = memref.alloca() {alignment = 64 : i64} : memref<16x32xbf16>
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<4x64xf32>
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<4x16xf32>
// CHECK: scf.for %{{.*}} = %c0 to %c16 step %c4 {
// CHECK: scf.for %[[H:.*]] = %c0 to %c2 step %c1 {
// CHECK-COUNT-4: memref.prefetch %[[K]][%{{.*}}, %{{.*}}, %[[H]], %c0], read, locality<2>, data
// CHECK-COUNT-4: vector.load %[[K]][%{{.*}}, %{{.*}}, %[[H]], %c0] : memref<?x16x2x32xbf16>, vector<32xbf16>
// CHECK: vector.load %[[QS]][%{{.*}}, %c0] : memref<16x32xbf16>, vector<32xbf16>
// CHECK-COUNT-4: x86vector.avx512.dot
// CHECK: vector.load %[[QS]][%{{.*}}, %c0] : memref<16x32xbf16>, vector<32xbf16>
// CHECK-COUNT-4: x86vector.avx512.dot
// CHECK: scf.for %{{.*}} = %c0 to %c16 step %c4 {
// CHECK: scf.for %[[H2:.*]] = %c0 to %c2 step %c1 {
// CHECK-COUNT-4: memref.prefetch %[[V]][%{{.*}}, %{{.*}}, %[[H2]], %c0], read, locality<2>, data
// CHECK: vector.load %[[V]][%{{.*}}, %{{.*}}, %[[H2]], %c0] : memref<?x16x2x32xbf16>, vector<32xbf16>
// CHECK: vector.fma
// CHECK: } else {
// CHECK: x86vector.avx512.dot
func.func @decode_paged_token_rows_gqa(%q: memref<?x4x?x32xbf16>, %k: memref<?x16x2x32xbf16>, %v: memref<?x16x2x32xbf16>, %bt: memref<?x?xi32>, %cl: memref<?xi32>, %o: memref<?x4x?x32xbf16>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x32xbf16>) k(%k : memref<?x16x2x32xbf16>) v(%v : memref<?x16x2x32xbf16>) paged(%bt : memref<?x?xi32>, %cl : memref<?xi32>) out(%o : memref<?x4x?x32xbf16>) items(%b, %e) {bias = #tilt.bias<alibi>, causal, config = #tilt.tile_config<variant = cpu_decode_avx512, block_m = 16, block_n = 16>}
  return
}

// -----

// num_stages = 1 on a decode kernel: the row blocks leave a contiguous
// cache's keys ahead to the hardware prefetchers (no requests); the default
// (0) asks for them into L1 (locality 3), 2 into L2 (locality 2), and a
// paged cache's kernel asks whatever its stages.

// CHECK-LABEL: func.func @decode_hardware_prefetch(
// CHECK-NOT: memref.prefetch
// CHECK: return
// CHECK-LABEL: func.func @decode_paged_one_stage(
// CHECK: memref.prefetch %{{.*}} read, locality<3>, data
// CHECK-LABEL: func.func @decode_software_prefetch(
// CHECK-NOT: locality<3>
// CHECK: memref.prefetch %{{.*}} read, locality<2>, data
// CHECK-NOT: locality<3>
// CHECK: return
// CHECK-LABEL: func.func @decode_default_prefetch(
// CHECK-NOT: locality<2>
// CHECK: memref.prefetch %{{.*}} read, locality<3>, data
// CHECK-NOT: locality<2>
// CHECK: return
func.func @decode_hardware_prefetch(%q: memref<?x4x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x4x?x16xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) out(%o : memref<?x4x?x16xf32>) items(%b, %e) {causal, config = #tilt.tile_config<variant = cpu_decode_avx512, block_m = 16, block_n = 16, num_warps = 0, num_stages = 1>}
  return
}
func.func @decode_paged_one_stage(%q: memref<?x16x?x16xf32>, %k: memref<?x8x2x16xf32>, %v: memref<?x8x2x16xf32>, %bt: memref<?x?xi32>, %cl: memref<?xi32>, %o: memref<?x16x?x16xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x16x?x16xf32>) k(%k : memref<?x8x2x16xf32>) v(%v : memref<?x8x2x16xf32>) paged(%bt : memref<?x?xi32>, %cl : memref<?xi32>) out(%o : memref<?x16x?x16xf32>) items(%b, %e) {causal, config = #tilt.tile_config<variant = cpu_decode_avx512, block_m = 16, block_n = 16, num_warps = 0, num_stages = 1>}
  return
}
func.func @decode_software_prefetch(%q: memref<?x4x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x4x?x16xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) out(%o : memref<?x4x?x16xf32>) items(%b, %e) {causal, config = #tilt.tile_config<variant = cpu_decode_avx512, block_m = 16, block_n = 16, num_warps = 0, num_stages = 2>}
  return
}
func.func @decode_default_prefetch(%q: memref<?x4x?x16xf32>, %k: memref<?x2x?x16xf32>, %v: memref<?x2x?x16xf32>, %o: memref<?x4x?x16xf32>, %b: index, %e: index) {
  tilt.attention q(%q : memref<?x4x?x16xf32>) k(%k : memref<?x2x?x16xf32>) v(%v : memref<?x2x?x16xf32>) out(%o : memref<?x4x?x16xf32>) items(%b, %e) {causal, config = #tilt.tile_config<variant = cpu_decode_avx512, block_m = 16, block_n = 16>}
  return
}
