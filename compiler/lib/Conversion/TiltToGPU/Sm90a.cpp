//===- Sm90a.cpp - GPU kernels for sm_90a: TMA, mbarrier, wgmma -----------===//
//
// The gpu_sm90a variant's loads and products: two (or one) warpgroups of 64
// query rows; Q and the K/V stages arrive as TMA boxes (64-column chunks,
// 128-byte swizzle, from a 1024-byte aligned shared base) completing on
// mbarriers; S = Q K^T is a chain of wgmma m64nNk16 from two K-major
// shared-memory descriptors, and O += P V keeps P in registers (the score
// accumulators repacked as the A fragment, as on sm_80) with V an MN-major
// descriptor. It uses nvvm.wgmma.mma_async rather than nvgpu.warpgroup.mma
// because the softmax needs the accumulator's elements, which nvgpu's
// accumulator type does not expose, and inline PTX for the register-A form,
// which neither op has.
//
//===----------------------------------------------------------------------===//

#include "GpuEmitter.h"

#include "tilt/Compiler/Configs.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::tilt;

namespace {

class Sm90aEmitter final : public GpuEmitter {
public:
  Sm90aEmitter(const ::tilt::AttentionSpec &spec, TileConfigAttr config,
               ImplicitLocOpBuilder &b, ValueRange args)
      : GpuEmitter(spec, config, b, args) {
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
    // KernelABI.h: the tensor maps of q, k, v follow the memrefs.
    tmaQ = map(args[firstExtraArg], bm);
    tmaK = map(args[firstExtraArg + 1], bn);
    tmaV = map(args[firstExtraArg + 2], bn);
  }

private:
  int64_t layOutTiles(int64_t e) override;
  void loadQ(Value isLeader) override;
  void issuePrologue() override {} // loadQ issues the first stages
  void awaitKeyBlock(Value kb, Value ahead, Value isLeader) override;
  SmallVector<Value> scores(Value slot, Value bufferRow, int64_t mi,
                            Value zero2x2) override;
  void accumulatePV(Value slot, Value bufferRow, ArrayRef<Value> p,
                    Value *acc) override;

  /// A TMA box: one 64-column chunk of `rows` rows.
  MemRefType tileType(int64_t rows) {
    auto space = gpu::AddressSpaceAttr::get(b.getContext(),
                                            gpu::AddressSpace::Workgroup);
    return MemRefType::get({1, 1, rows, 64}, elt, MemRefLayoutAttrInterface(),
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
  Value wgmmaRegisterA(Value acc, ArrayRef<Value> a, Value descB, int64_t n);
  SmallVector<Value> tilesOf(Value acc, int64_t n);
  Value structOf(ArrayRef<Value> tiles);
  /// The tensor map coordinates of column chunk `c` of `row` (KernelABI.h:
  /// {D, rows, Hx, B}; varlen rows are global and its B is 1).
  SmallVector<Value> boxAt(int64_t c, Value row, bool isQ) {
    return {idx(c * 64), row, isQ ? head : kvHead,
            spec.varlen ? idx(0) : batch};
  }

  Value tmaQ, tmaK, tmaV, bars, alignPad, smemBase;
  int64_t qOff = 0, kOff = 0, vOff = 0; ///< bytes past the aligned base
};

} // namespace

int64_t Sm90aEmitter::layOutTiles(int64_t e) {
  auto space =
      gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  auto bytesType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                   MemRefLayoutAttrInterface(), space);
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
  Value lastBar =
      nvgpu::MBarrierGetOp::create(b, b.getI64Type(), bars, idx(stages));
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
  return vOff + stages * bn * d * e;
}

void Sm90aEmitter::loadQ(Value isLeader) {
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
    nvgpu::MBarrierArriveExpectTxOp::create(b, bars, idx(bm * d * e), idx(0),
                                            Value());
    Value row = add(qStart, rowStart);
    for (int64_t c = 0; c < d / 64; ++c)
      nvgpu::TmaAsyncLoadOp::create(b, tileAt(idx(qOff + c * bm * 128), bm),
                                    bars, tmaQ, boxAt(c, row, true), idx(0),
                                    Value(), Value());
    for (int64_t s = 0; s + 1 < stages; ++s) {
      Value kb = add(kbBegin, idx(s));
      ifThen(lt(kb, kbEnd), [&] { tmaIssue(kb); });
    }
  });
  waitBarrier(idx(0), arith::ConstantOp::create(b, b.getBoolAttr(false)));
}

void Sm90aEmitter::awaitKeyBlock(Value kb, Value ahead, Value isLeader) {
  // The stage of `ahead` was last read in the previous iteration,
  // which ended with a CTA barrier.
  ifThen(andB(isLeader, lt(ahead, kbEnd)), [&] { tmaIssue(ahead); });
  Value n = sub(kb, kbBegin);
  Value parity = arith::IndexCastOp::create(b, b.getI1Type(),
                                            remU(divU(n, idx(stages)), idx(2)));
  waitBarrier(add(remU(n, idx(stages)), idx(1)), parity);
}

SmallVector<Value> Sm90aEmitter::scores(Value slot, Value, int64_t, Value) {
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  Value wg = divU(warp, idx(4));
  Value qRows = mul(wg, idx(64 * 128));
  Value kStage = mul(slot, idx(bn * d * e));
  Value acc = zeroAccumulator(bn);
  NVVM::WgmmaFenceAlignedOp::create(b);
  for (int64_t kk = 0; kk < d / 16; ++kk) {
    int64_t c = kk / 4, within = (kk % 4) * 32;
    Value a =
        descriptor(add(idx(qOff + c * bm * 128 + within), qRows), 16, 1024);
    Value bDesc =
        descriptor(add(idx(kOff + c * bn * 128 + within), kStage), 16, 1024);
    acc = wgmma(acc, a, bDesc, bn);
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b);
  NVVM::WgmmaWaitGroupSyncOp::create(b, uint64_t(0));
  return tilesOf(acc, bn);
}

void Sm90aEmitter::accumulatePV(Value slot, Value, ArrayRef<Value> p,
                                Value *acc) {
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
        Value word =
            vector::BitCastOp::create(b, VectorType::get({1}, i32), pair);
        a.push_back(vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0}));
      }
    // V is MN-major (d contiguous): 64-column chunks bn*128 bytes apart
    // (leading offset), 8-key groups 1024 bytes apart (stride offset).
    Value bDesc =
        descriptor(add(idx(vOff + kt * 16 * 128), vStage), bn * 128, 1024);
    o = wgmmaRegisterA(o, a, bDesc, d);
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b);
  NVVM::WgmmaWaitGroupSyncOp::create(b, uint64_t(0));
  SmallVector<Value> tiles = tilesOf(o, d);
  for (int64_t dt = 0; dt < d / 8; ++dt)
    acc[dt] = tiles[dt];
}

Value Sm90aEmitter::descriptor(Value byteOffset, int64_t lbo, int64_t sbo) {
  // Bits 0-13: address >> 4; 16-29: leading byte offset >> 4; 32-45: stride
  // byte offset >> 4; 49-51: base offset (0: tiles are 1024-byte aligned);
  // 62-63: layout, 1 = 128-byte swizzle.
  Type i64 = b.getI64Type();
  Value addr = arith::IndexCastOp::create(b, i64, add(smemBase, byteOffset));
  Value field = arith::AndIOp::create(
      b,
      arith::ShRUIOp::create(
          b, addr, arith::ConstantOp::create(b, b.getI64IntegerAttr(4))),
      arith::ConstantOp::create(b, b.getI64IntegerAttr(0x3FFF)));
  uint64_t bits = (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
                  (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
  return arith::OrIOp::create(
      b, field,
      arith::ConstantOp::create(b, b.getI64IntegerAttr(int64_t(bits))));
}

Value Sm90aEmitter::zeroAccumulator(int64_t n) {
  SmallVector<Type> fields(n / 2, f32);
  return LLVM::ZeroOp::create(
      b, LLVM::LLVMStructType::getLiteral(b.getContext(), fields));
}

/// acc += A * B on one warpgroup, m64 n`n` k16, both operands K-major
/// descriptors (Q K^T).
Value Sm90aEmitter::wgmma(Value acc, Value descA, Value descB, int64_t n) {
  auto type =
      isa<BFloat16Type>(elt) ? NVVM::WGMMATypes::bf16 : NVVM::WGMMATypes::f16;
  return NVVM::WgmmaMmaAsyncOp::create(
      b, acc.getType(), acc, descA, descB,
      NVVM::MMAShapeAttr::get(b.getContext(), 64, int(n), 16), type, type,
      NVVM::WGMMATypes::f32, NVVM::WGMMAScaleOut::one, NVVM::WGMMAScaleIn::one,
      NVVM::WGMMAScaleIn::one, NVVM::MMALayout::row, NVVM::MMALayout::col,
      NVVM::MMAIntOverflowAttr());
}

/// The m64nN accumulator as 8-column tiles: per warp, register 4t+0/1 is row
/// g, columns 8t + 2*t4 + 0/1, and 4t+2/3 the same columns of row g + 8 --
/// the mma.sync m16n8 layout.
SmallVector<Value> Sm90aEmitter::tilesOf(Value acc, int64_t n) {
  SmallVector<Value> tiles;
  Value zero = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({2, 2}, f32),
                                b.getF32FloatAttr(0.0f)));
  for (int64_t t = 0; t < n / 8; ++t) {
    Value tile = zero;
    for (int64_t i = 0; i < 4; ++i) {
      Value x =
          LLVM::ExtractValueOp::create(b, acc, ArrayRef<int64_t>{4 * t + i});
      tile =
          vector::InsertOp::create(b, x, tile, ArrayRef<int64_t>{i / 2, i % 2});
    }
    tiles.push_back(tile);
  }
  return tiles;
}

Value Sm90aEmitter::structOf(ArrayRef<Value> tiles) {
  Value acc = zeroAccumulator(int64_t(tiles.size()) * 8);
  for (int64_t t = 0; t < int64_t(tiles.size()); ++t)
    for (int64_t i = 0; i < 4; ++i) {
      Value x = vector::ExtractOp::create(b, tiles[t],
                                          ArrayRef<int64_t>{i / 2, i % 2});
      acc =
          LLVM::InsertValueOp::create(b, acc, x, ArrayRef<int64_t>{4 * t + i});
    }
  return acc;
}

/// Thread 0: K and V of key block kb into its stage, completing on the
/// stage's mbarrier.
void Sm90aEmitter::tmaIssue(Value kb) {
  const int64_t e = ::tilt::byteWidth(spec.dtype);
  Value slot = remU(sub(kb, kbBegin), idx(stages));
  Value barId = add(slot, idx(1));
  nvgpu::MBarrierArriveExpectTxOp::create(b, bars, idx(2 * bn * d * e), barId,
                                          Value());
  Value row = add(kStart, mul(kb, idx(bn)));
  Value stageBytes = mul(slot, idx(bn * d * e));
  for (int64_t c = 0; c < d / 64; ++c) {
    for (auto [map, base] : {std::pair{tmaK, kOff}, std::pair{tmaV, vOff}}) {
      Value dst = tileAt(add(idx(base + c * bn * 128), stageBytes), bn);
      nvgpu::TmaAsyncLoadOp::create(b, dst, bars, map, boxAt(c, row, false),
                                    barId, Value(), Value());
    }
  }
}

void Sm90aEmitter::waitBarrier(Value id, Value parity) {
  nvgpu::MBarrierTryWaitParityOp::create(b, bars, parity, idx(10000000), id);
}

/// acc += A * B on one warpgroup, m64 n`n` k16, with A in registers (four
/// 32-bit words of packed pairs a thread) and B an MN-major descriptor.
/// Neither nvvm.wgmma.mma_async nor nvgpu.warpgroup.mma takes A from
/// registers in MLIR 22, so this is the PTX instruction as inline assembly,
/// with side effects so it stays between wgmma.fence and commit/wait.
Value Sm90aEmitter::wgmmaRegisterA(Value acc, ArrayRef<Value> a, Value descB,
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

std::unique_ptr<GpuEmitter>
mlir::tilt::makeSm90aEmitter(const ::tilt::AttentionSpec &spec,
                             TileConfigAttr config, ImplicitLocOpBuilder &b,
                             ValueRange args) {
  return std::make_unique<Sm90aEmitter>(spec, config, b, args);
}
