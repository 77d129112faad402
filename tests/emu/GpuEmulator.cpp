//===- GpuEmulator.cpp - Run a Tilt GPU kernel's IR on the CPU ------------===//

#include "GpuEmulator.h"

#include "tilt/Half.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <fmt/format.h>
#include <stdexcept>
#include <unordered_map>

using namespace mlir;

namespace tilt::emu {
namespace {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] void fail(const std::string &what) { throw Failure(what); }

/// Per-thread values of one SSA value: `width` scalars per thread (vectors
/// and LLVM structs flattened row-major). Integers in `i`, floats in `f`.
struct Val {
  int64_t width = 1;
  bool isFloat = false;
  std::vector<int64_t> i;
  std::vector<double> f;
};

struct Mem {
  uint8_t *base = nullptr; ///< element 0 of the memref (offset applied)
  bool shared = false;
  std::vector<int64_t> sizes, strides;
  Type elt;
};

int64_t bitWidth(Type t) {
  if (t.isIndex())
    return 64;
  if (auto it = dyn_cast<IntegerType>(t))
    return it.getWidth();
  return 0;
}
int64_t wrap(int64_t v, int64_t bits) {
  if (bits >= 64 || bits == 0)
    return v;
  uint64_t m = (uint64_t(1) << bits) - 1;
  uint64_t u = uint64_t(v) & m;
  if (bits > 1 && (u >> (bits - 1)))
    u |= ~m;
  return bits == 1 ? int64_t(u & 1) : int64_t(u);
}
uint64_t unsignedOf(int64_t v, int64_t bits) {
  return bits >= 64 ? uint64_t(v) : uint64_t(v) & ((uint64_t(1) << bits) - 1);
}
Type scalarOf(Type t) {
  if (auto v = dyn_cast<VectorType>(t))
    return v.getElementType();
  return t;
}
int64_t widthOf(Type t) {
  if (auto v = dyn_cast<VectorType>(t))
    return v.getNumElements();
  if (auto s = dyn_cast<LLVM::LLVMStructType>(t))
    return int64_t(s.getBody().size());
  return 1;
}
bool isFloatType(Type t) {
  if (auto s = dyn_cast<LLVM::LLVMStructType>(t))
    return !s.getBody().empty() && isa<FloatType>(s.getBody()[0]);
  return isa<FloatType>(scalarOf(t));
}
double roundTo(Type t, double x) {
  if (t.isF32())
    return double(float(x));
  if (t.isBF16())
    return bf16ToFloat(floatToBf16(float(x)));
  if (t.isF16())
    return halfToFloat(floatToHalf(float(x)));
  return x;
}
uint16_t bits16(Type t, double x) {
  return t.isBF16() ? floatToBf16(float(x)) : floatToHalf(float(x));
}
double from16(Type t, uint16_t b) {
  return t.isBF16() ? bf16ToFloat(b) : halfToFloat(b);
}
int64_t byteSize(Type t) {
  if (t.isF32() || t.isInteger(32))
    return 4;
  if (t.isF16() || t.isBF16() || t.isInteger(16))
    return 2;
  if (t.isInteger(8))
    return 1;
  if (t.isF64() || t.isInteger(64) || t.isIndex())
    return 8;
  fail("unsupported memref element type");
}

constexpr int64_t kSharedBase = 1024; // where sm_80+ CTAs' shared data starts

class Cta {
public:
  Cta(gpu::GPUFuncOp kernel, const Launch &launch, int64_t bx, int64_t by,
      int64_t bz)
      : kernel(kernel), launch(launch), T(launch.threads) {
    block[0] = bx;
    block[1] = by;
    block[2] = bz;
    // Simulated shared window: static variables at kSharedBase (the dynamic
    // symbol's byte, then mbarriers), the dynamic bytes after them.
    smem.assign(size_t(kSharedBase + 2048 + launch.smemBytes), 0);
  }

  void run() {
    Block &body = kernel.getBody().front();
    unsigned mi = 0, pi = 0, si = 0;
    for (BlockArgument a : body.getArguments()) {
      if (auto mt = dyn_cast<MemRefType>(a.getType())) {
        if (mi >= launch.memrefs.size())
          fail("too few memref arguments");
        const MemRefArg &m = launch.memrefs[mi++];
        // What the lowering reads from the descriptor must be what the
        // type promises: static sizes and strides bind.
        SmallVector<int64_t> typeStrides;
        int64_t typeOffset;
        if (failed(mt.getStridesAndOffset(typeStrides, typeOffset)) ||
            m.sizes.size() != size_t(mt.getRank()) ||
            m.strides.size() != size_t(mt.getRank()))
          fail("a memref argument of another rank or layout");
        for (int64_t d = 0; d < mt.getRank(); ++d)
          if ((!ShapedType::isDynamic(mt.getDimSize(d)) &&
               mt.getDimSize(d) != m.sizes[size_t(d)]) ||
              (!ShapedType::isDynamic(typeStrides[size_t(d)]) &&
               m.sizes[size_t(d)] > 1 &&
               typeStrides[size_t(d)] != m.strides[size_t(d)]))
            fail("memref argument " + std::to_string(mi - 1) +
                 ": its sizes or strides differ from the static ones of the "
                 "kernel's type");
        Mem mem;
        mem.base = static_cast<uint8_t *>(m.data);
        mem.sizes = m.sizes;
        mem.strides = m.strides;
        mem.elt = mt.getElementType();
        mems[a] = mem;
      } else if (isa<LLVM::LLVMPointerType>(a.getType())) {
        mapOf[a] = int64_t(pi++);
      } else if (a.getType().isIndex() || a.getType().isInteger(64)) {
        if (si >= launch.scalars.size())
          fail("too few integer arguments");
        Val &x = def(a);
        std::fill(x.i.begin(), x.i.end(), launch.scalars[si++]);
      } else {
        fail("unsupported kernel argument type");
      }
    }
    std::vector<uint8_t> all(size_t(T), 1);
    runBlock(body, all);
  }

private:
  // --- values ---------------------------------------------------------------
  Val &def(Value v) {
    Val &x = vals[v];
    x.width = widthOf(v.getType());
    x.isFloat = isFloatType(v.getType());
    if (x.isFloat)
      x.f.assign(size_t(T * x.width), 0.0);
    else
      x.i.assign(size_t(T * x.width), 0);
    return x;
  }
  const Val &get(Value v) {
    auto it = vals.find(v);
    if (it == vals.end())
      fail("use of a value the emulator did not compute");
    return it->second;
  }
  int64_t ival(Value v, int64_t t) {
    const Val &x = get(v);
    return x.i[size_t(t * x.width)];
  }
  double fval(Value v, int64_t t) {
    const Val &x = get(v);
    return x.f[size_t(t * x.width)];
  }
  /// The (uniform) value of v among the active threads.
  int64_t uniform(Value v, const std::vector<uint8_t> &mask) {
    int64_t first = 0;
    bool seen = false;
    for (int64_t t = 0; t < T; ++t) {
      if (!mask[t])
        continue;
      int64_t x = ival(v, t);
      if (seen && x != first)
        fail("value expected uniform across threads differs");
      first = x;
      seen = true;
    }
    return first;
  }
  const Mem &mem(Value v) {
    auto it = mems.find(v);
    if (it == mems.end())
      fail("unknown memref");
    return it->second;
  }

  // --- memory ---------------------------------------------------------------
  uint8_t *address(const Mem &m, const std::vector<int64_t> &idx) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) {
      if (idx[d] < 0 || (m.sizes[d] >= 0 && idx[d] >= m.sizes[d]))
        fail(fmt::format("index {} out of bounds (size {}) in dim {}", idx[d],
                         m.sizes[d], d));
      off += idx[d] * m.strides[d];
    }
    uint8_t *p = m.base + off * byteSize(m.elt);
    if (m.shared)
      checkShared(p, byteSize(m.elt));
    return p;
  }
  void checkShared(const uint8_t *p, int64_t n) {
    int64_t a = p - smem.data();
    if (a < kSharedBase || a + n > dynamicStart() + launch.smemBytes)
      fail(fmt::format("shared access at {} outside [{}, {})", a, kSharedBase,
                       dynamicStart() + launch.smemBytes));
  }
  int64_t dynamicStart() const {
    int64_t end = kSharedBase + 8 + 8 * numBarriers;
    return (end + 15) / 16 * 16;
  }
  double loadElt(Type t, const uint8_t *p) {
    if (t.isF32()) {
      float x;
      std::memcpy(&x, p, 4);
      return x;
    }
    uint16_t h;
    std::memcpy(&h, p, 2);
    return from16(t, h);
  }
  int64_t loadInt(Type t, const uint8_t *p) {
    if (t.isInteger(8))
      return int8_t(*p);
    if (t.isInteger(32)) {
      int32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    int64_t x;
    std::memcpy(&x, p, 8);
    return x;
  }
  void storeElt(Type t, uint8_t *p, double x) {
    if (t.isF32()) {
      float f = float(x);
      std::memcpy(p, &f, 4);
      return;
    }
    uint16_t h = bits16(t, x);
    std::memcpy(p, &h, 2);
  }
  void storeInt(Type t, uint8_t *p, int64_t x) {
    if (t.isInteger(8)) {
      *p = uint8_t(x);
    } else if (t.isInteger(32)) {
      int32_t v = int32_t(x);
      std::memcpy(p, &v, 4);
    } else {
      std::memcpy(p, &x, 8);
    }
  }
  std::vector<int64_t> indices(OperandRange ops, int64_t t) {
    std::vector<int64_t> idx;
    for (Value v : ops)
      idx.push_back(ival(v, t));
    return idx;
  }
  int64_t simAddr(const uint8_t *p) const { return p - smem.data(); }
  /// 128-byte swizzle: bits 4-6 of a shared address XOR bits 7-9.
  static int64_t swizzle128(int64_t a) { return a ^ (((a >> 7) & 7) << 4); }
  /// A 16-bit element at a logical (pre-swizzle) shared address.
  double readSwizzled(int64_t logical, Type elt) {
    const uint8_t *p = smem.data() + swizzle128(logical);
    checkShared(p, 2);
    uint16_t h;
    std::memcpy(&h, p, 2);
    return from16(elt, h);
  }

  // --- control flow ---------------------------------------------------------
  /// Runs `block`; returns the operands of its terminator (scf.yield).
  SmallVector<Value> runBlock(Block &block, const std::vector<uint8_t> &mask) {
    for (Operation &op : block) {
      if (isa<scf::YieldOp>(op))
        return SmallVector<Value>(op.getOperands());
      if (isa<gpu::ReturnOp>(op))
        return {};
      exec(op, mask);
    }
    return {};
  }
  void copyLanes(Val &dst, const Val &src, const std::vector<uint8_t> &lanes) {
    for (int64_t t = 0; t < T; ++t) {
      if (!lanes[t])
        continue;
      for (int64_t k = 0; k < src.width; ++k) {
        size_t at = size_t(t * src.width + k);
        if (src.isFloat)
          dst.f[at] = src.f[at];
        else
          dst.i[at] = src.i[at];
      }
    }
  }

  void execIf(scf::IfOp op, const std::vector<uint8_t> &mask) {
    std::vector<uint8_t> thenMask(size_t(T), 0), elseMask(size_t(T), 0);
    bool anyThen = false, anyElse = false;
    for (int64_t t = 0; t < T; ++t) {
      bool c = mask[t] && ival(op.getCondition(), t);
      thenMask[t] = c;
      elseMask[t] = mask[t] && !c;
      anyThen |= thenMask[t];
      anyElse |= elseMask[t];
    }
    for (Value r : op.getResults())
      def(r);
    auto branch = [&](Region &region, const std::vector<uint8_t> &m) {
      if (region.empty())
        return;
      SmallVector<Value> ys = runBlock(region.front(), m);
      for (auto [r, y] : llvm::zip(op.getResults(), ys))
        copyLanes(vals[r], get(y), m);
    };
    if (anyThen)
      branch(op.getThenRegion(), thenMask);
    if (anyElse)
      branch(op.getElseRegion(), elseMask);
  }

  void execFor(scf::ForOp op, const std::vector<uint8_t> &mask) {
    Block &body = *op.getBody();
    Value iv = body.getArgument(0);
    Val &ivVal = def(iv);
    for (int64_t t = 0; t < T; ++t)
      ivVal.i[t] = ival(op.getLowerBound(), t);
    for (auto [arg, init] : llvm::zip(body.getArguments().drop_front(),
                                      op.getInitArgs())) {
      Val v = get(init);
      vals[arg] = v;
    }
    while (true) {
      std::vector<uint8_t> live(size_t(T), 0);
      bool any = false;
      for (int64_t t = 0; t < T; ++t) {
        live[t] = mask[t] && vals[iv].i[t] < ival(op.getUpperBound(), t);
        any |= live[t];
      }
      if (!any)
        break;
      SmallVector<Value> ys = runBlock(body, live);
      for (auto [arg, y] : llvm::zip(body.getArguments().drop_front(), ys)) {
        Val next = vals[arg];
        copyLanes(next, get(y), live);
        vals[arg] = std::move(next);
      }
      for (int64_t t = 0; t < T; ++t)
        if (live[t])
          vals[iv].i[t] += ival(op.getStep(), t);
    }
    for (auto [r, arg] :
         llvm::zip(op.getResults(), body.getArguments().drop_front())) {
      Val v = vals[arg];
      vals[r] = v;
    }
  }

  // --- one op ---------------------------------------------------------------
  void exec(Operation &op, const std::vector<uint8_t> &mask);
  void execArith(Operation &op, const std::vector<uint8_t> &mask);
  void execVector(Operation &op, const std::vector<uint8_t> &mask);
  void ldmatrix(nvgpu::LdMatrixOp op, const std::vector<uint8_t> &mask);
  void mmaSync(Operation &op, const std::vector<uint8_t> &mask);
  void wgmma(NVVM::WgmmaMmaAsyncOp op, const std::vector<uint8_t> &mask);
  void wgmmaRegisterA(LLVM::InlineAsmOp op, const std::vector<uint8_t> &mask);
  /// Shared by both wgmma forms: acc (per thread, `n`/2 f32 in the m64nN
  /// accumulator layout) += A (64 x 16) * B (16 x n) for the warpgroup
  /// starting at thread g0.
  void wgmmaAccumulate(Val &r, const Val &acc, int64_t g0, int64_t n,
                       const std::vector<double> &A,
                       const std::vector<double> &B);
  /// B (16 x n) through a descriptor: K-major, or MN-major (`mnMajor`).
  std::vector<double> wgmmaB(int64_t desc, int64_t n, bool mnMajor, Type elt);
  void tmaLoad(nvgpu::TmaAsyncLoadOp op, const std::vector<uint8_t> &mask);

  gpu::GPUFuncOp kernel;
  const Launch &launch;
  int64_t T;
  int64_t block[3];
  int64_t numBarriers = 0;
  std::vector<uint8_t> smem;

  struct PendingWrite {
    uint8_t *dst;
    std::vector<uint8_t> bytes;
  };
  struct Barrier {
    std::vector<PendingWrite> pending; ///< TMA bytes of the armed phase
    int64_t completed = 0;             ///< phases completed so far
  };
  /// cp.async: the copies since the last commit, and committed groups.
  std::vector<PendingWrite> openGroup;
  std::deque<std::vector<PendingWrite>> asyncGroups;
  std::unordered_map<int64_t, Barrier> barriers;
  void land(const std::vector<PendingWrite> &writes) {
    for (const PendingWrite &w : writes)
      std::memcpy(w.dst, w.bytes.data(), w.bytes.size());
  }
  /// NaN in every 16-bit lane (f16 0x7E00 / bf16 0x7FC0 both decode NaN
  /// from 0x7FFF).
  static void poison(uint8_t *p, int64_t n) {
    for (int64_t i = 0; i + 1 < n; i += 2) {
      p[i] = 0xFF;
      p[i + 1] = 0x7F;
    }
  }
  // Node-based maps: references to entries stay valid while others are
  // added (an op's results are defined one after the other).
  struct ValueHash {
    size_t operator()(Value v) const { return hash_value(v); }
  };
  std::unordered_map<Value, Val, ValueHash> vals;
  std::unordered_map<Value, Mem, ValueHash> mems;
  std::unordered_map<Value, int64_t, ValueHash> mapOf; ///< tensor maps
};

void Cta::exec(Operation &op, const std::vector<uint8_t> &mask) {
  auto each = [&](auto fn) {
    for (int64_t t = 0; t < T; ++t)
      if (mask[t])
        fn(t);
  };
  StringRef name = op.getName().getStringRef();

  if (auto o = dyn_cast<scf::IfOp>(op))
    return execIf(o, mask);
  if (auto o = dyn_cast<scf::ForOp>(op))
    return execFor(o, mask);
  if (name.starts_with("arith."))
    return execArith(op, mask);
  if (name.starts_with("vector."))
    return execVector(op, mask);

  // gpu
  if (auto o = dyn_cast<gpu::ThreadIdOp>(op)) {
    Val &r = def(o);
    each([&](int64_t t) { r.i[t] = o.getDimension() == gpu::Dimension::x ? t : 0; });
    return;
  }
  if (auto o = dyn_cast<gpu::BlockIdOp>(op)) {
    Val &r = def(o);
    int64_t d = o.getDimension() == gpu::Dimension::x   ? block[0]
                : o.getDimension() == gpu::Dimension::y ? block[1]
                                                        : block[2];
    each([&](int64_t t) { r.i[t] = d; });
    return;
  }
  if (isa<gpu::BarrierOp, NVVM::WgmmaFenceAlignedOp,
          NVVM::WgmmaGroupSyncAlignedOp, NVVM::WgmmaWaitGroupSyncOp,
          NVVM::FenceProxyOp, nvgpu::MBarrierInitOp,
          nvgpu::MBarrierArriveExpectTxOp>(op))
    return; // lockstep: the other threads are at the same point
  // Asynchronous copies land only when the kernel waits for them (and their
  // destinations read as NaN until then), so a read too early, a wait for
  // the wrong group or phase, or a copy into a buffer still in use shows.
  if (isa<nvgpu::DeviceAsyncCreateGroupOp>(op)) {
    def(op.getResult(0));
    asyncGroups.push_back(std::move(openGroup));
    openGroup.clear();
    return;
  }
  if (auto o = dyn_cast<nvgpu::DeviceAsyncWaitOp>(op)) {
    size_t keep = o.getNumGroups() ? size_t(*o.getNumGroups()) : 0;
    while (asyncGroups.size() > keep) {
      land(asyncGroups.front());
      asyncGroups.pop_front();
    }
    return;
  }
  if (auto o = dyn_cast<nvgpu::MBarrierTryWaitParityOp>(op)) {
    int64_t id = uniform(o.getMbarId(), mask);
    int64_t parity = uniform(o.getPhaseParity(), mask);
    Barrier &bar = barriers[id];
    if (!bar.pending.empty() && bar.completed % 2 == parity) {
      land(bar.pending);
      bar.pending.clear();
      ++bar.completed;
    } else if (bar.completed == 0 || (bar.completed - 1) % 2 != parity) {
      fail(fmt::format("mbarrier {}: waiting for a phase of parity {} that "
                       "never completes (would hang)",
                       id, parity));
    }
    return;
  }
  if (auto o = dyn_cast<nvgpu::MBarrierCreateOp>(op)) {
    numBarriers = o.getBarriers().getType().getNumBarriers();
    return;
  }
  if (auto o = dyn_cast<nvgpu::MBarrierGetOp>(op)) {
    Val &r = def(o);
    each([&](int64_t t) {
      r.i[t] = kSharedBase + 8 + 8 * ival(o.getMbarId(), t);
    });
    return;
  }
  if (auto o = dyn_cast<gpu::DynamicSharedMemoryOp>(op)) {
    Mem m;
    m.base = smem.data() + kSharedBase;
    m.shared = true;
    m.sizes = {int64_t(smem.size()) - kSharedBase};
    m.strides = {1};
    m.elt = IntegerType::get(op.getContext(), 8);
    mems[o] = m;
    return;
  }
  if (auto o = dyn_cast<gpu::ShuffleOp>(op)) {
    if (o.getMode() != gpu::ShuffleMode::XOR)
      fail("only xor shuffles are emulated");
    Val &r = def(o.getShuffleResult());
    Val &valid = def(o.getValid());
    const Val &src = get(o.getValue());
    each([&](int64_t t) {
      int64_t from = (t & ~int64_t(31)) | ((t & 31) ^ ival(o.getOffset(), t));
      if (!mask[from])
        fail("shuffle reads an inactive lane");
      if (src.isFloat)
        r.f[t] = src.f[from];
      else
        r.i[t] = src.i[from];
      valid.i[t] = 1;
    });
    return;
  }

  // memref
  if (auto o = dyn_cast<memref::ViewOp>(op)) {
    const Mem &src = mem(o.getSource());
    int64_t shift = uniform(o.getByteShift(), mask);
    auto type = cast<MemRefType>(o.getType());
    Mem m;
    m.base = src.base + shift;
    m.shared = src.shared;
    m.elt = type.getElementType();
    unsigned dyn = 0;
    for (int64_t s : type.getShape())
      m.sizes.push_back(ShapedType::isDynamic(s)
                            ? uniform(o.getSizes()[dyn++], mask)
                            : s);
    m.strides.assign(m.sizes.size(), 1);
    for (int d = int(m.sizes.size()) - 2; d >= 0; --d)
      m.strides[d] = m.strides[d + 1] * m.sizes[d + 1];
    mems[o] = m;
    return;
  }
  if (auto o = dyn_cast<memref::DimOp>(op)) {
    Val &r = def(o);
    const Mem &m = mem(o.getSource());
    each([&](int64_t t) { r.i[t] = m.sizes[size_t(ival(o.getIndex(), t))]; });
    return;
  }
  if (auto o = dyn_cast<memref::LoadOp>(op)) {
    Val &r = def(o);
    const Mem &m = mem(o.getMemRef());
    each([&](int64_t t) {
      uint8_t *p = address(m, indices(o.getIndices(), t));
      if (r.isFloat)
        r.f[t] = loadElt(m.elt, p);
      else
        r.i[t] = loadInt(m.elt, p);
    });
    return;
  }
  if (auto o = dyn_cast<memref::StoreOp>(op)) {
    const Mem &m = mem(o.getMemRef());
    each([&](int64_t t) {
      uint8_t *p = address(m, indices(o.getIndices(), t));
      if (isa<FloatType>(m.elt))
        storeElt(m.elt, p, fval(o.getValue(), t));
      else
        storeInt(m.elt, p, ival(o.getValue(), t));
    });
    return;
  }
  if (auto o = dyn_cast<memref::ExtractAlignedPointerAsIndexOp>(op)) {
    Val &r = def(o);
    const Mem &m = mem(o.getSource());
    if (!m.shared)
      fail("aligned pointer of a global memref");
    each([&](int64_t t) { r.i[t] = simAddr(m.base); });
    return;
  }

  // llvm
  if (auto o = dyn_cast<LLVM::InlineAsmOp>(op)) {
    StringRef s = o.getAsmString();
    if (s.contains("wgmma.mma_async"))
      return wgmmaRegisterA(o, mask);
    Val &r = def(o.getResult(0));
    each([&](int64_t t) {
      double x = fval(o.getOperands()[0], t);
      if (s.starts_with("ex2.approx"))
        r.f[t] = double(std::exp2(float(x)));
      else if (s.starts_with("lg2.approx"))
        r.f[t] = double(std::log2(float(x)));
      else
        fail("unknown inline asm: " + s.str());
    });
    return;
  }
  if (auto o = dyn_cast<LLVM::CtPopOp>(op)) {
    Val &r = def(o);
    each([&](int64_t t) {
      r.i[t] = std::popcount(unsignedOf(ival(o.getOperand(), t),
                                        bitWidth(o.getType())));
    });
    return;
  }
  if (auto o = dyn_cast<LLVM::ZeroOp>(op)) {
    def(o);
    return;
  }
  if (auto o = dyn_cast<LLVM::ExtractValueOp>(op)) {
    Val &r = def(o);
    const Val &s = get(o.getContainer());
    int64_t k = o.getPosition()[0];
    each([&](int64_t t) {
      if (s.isFloat)
        r.f[t] = s.f[size_t(t * s.width + k)];
      else
        r.i[t] = s.i[size_t(t * s.width + k)];
    });
    return;
  }
  if (auto o = dyn_cast<LLVM::InsertValueOp>(op)) {
    Val r = get(o.getContainer());
    int64_t k = o.getPosition()[0];
    each([&](int64_t t) {
      if (r.isFloat)
        r.f[size_t(t * r.width + k)] = fval(o.getValue(), t);
      else
        r.i[size_t(t * r.width + k)] = ival(o.getValue(), t);
    });
    vals[o] = std::move(r);
    return;
  }
  if (auto o = dyn_cast<UnrealizedConversionCastOp>(op)) {
    auto it = mapOf.find(o.getOperand(0));
    if (it == mapOf.end())
      fail("unexpected unrealized_conversion_cast");
    mapOf[o.getResult(0)] = it->second;
    return;
  }

  // nvvm / nvgpu
  if (auto o = dyn_cast<NVVM::VoteSyncOp>(op)) {
    if (o.getKind() != NVVM::VoteSyncKind::ballot)
      fail("only vote.ballot is emulated");
    Val &r = def(o.getResult());
    for (int64_t w = 0; w < T / 32; ++w) {
      uint32_t bits = 0;
      for (int64_t l = 0; l < 32; ++l)
        if (mask[w * 32 + l] && ival(o.getPred(), w * 32 + l))
          bits |= uint32_t(1) << l;
      for (int64_t l = 0; l < 32; ++l)
        r.i[w * 32 + l] = wrap(int64_t(bits), 32);
    }
    return;
  }
  if (auto o = dyn_cast<nvgpu::DeviceAsyncCopyOp>(op)) {
    const Mem &dst = mem(o.getDst());
    const Mem &src = mem(o.getSrc());
    int64_t n = o.getDstElements().getZExtValue();
    each([&](int64_t t) {
      int64_t have = o.getSrcElements() ? ival(o.getSrcElements(), t) : n;
      uint8_t *d = address(dst, indices(o.getDstIndices(), t));
      int64_t e = byteSize(dst.elt);
      if (dst.shared)
        checkShared(d, n * e);
      PendingWrite w;
      w.dst = d;
      w.bytes.assign(size_t(n * e), 0); // zero fill past `have`
      // The source address must be in bounds even when nothing is read
      // (the kernels clamp masked rows into the tensor): a copy of a row
      // past a sequence's end, or through a block-table entry it must not
      // follow, fails here whatever its size.
      std::vector<int64_t> si = indices(o.getSrcIndices(), t);
      const uint8_t *s = address(src, si);
      // cp.async copies 4, 8 or 16 bytes from an address aligned to them.
      if (reinterpret_cast<uintptr_t>(s) % uintptr_t(n * e) != 0)
        fail("cp.async: a global source of " + std::to_string(n * e) +
             " bytes not aligned to them");
      if (have > 0) {
        si.back() += have - 1;
        (void)address(src, si); // the last element read is in bounds
        std::memcpy(w.bytes.data(), s, size_t(have * e));
      }
      poison(d, n * e);
      openGroup.push_back(std::move(w));
    });
    return;
  }
  if (auto o = dyn_cast<nvgpu::LdMatrixOp>(op))
    return ldmatrix(o, mask);
  if (isa<nvgpu::MmaSyncOp, NVVM::MmaOp>(op))
    return mmaSync(op, mask);
  if (auto o = dyn_cast<NVVM::WgmmaMmaAsyncOp>(op))
    return wgmma(o, mask);
  if (auto o = dyn_cast<nvgpu::TmaAsyncLoadOp>(op))
    return tmaLoad(o, mask);

  fail("the emulator does not know " + name.str());
}

void Cta::execArith(Operation &op, const std::vector<uint8_t> &mask) {
  auto each = [&](auto fn) {
    for (int64_t t = 0; t < T; ++t)
      if (mask[t])
        fn(t);
  };
  if (auto o = dyn_cast<arith::ConstantOp>(op)) {
    Val &r = def(o);
    Attribute a = o.getValue();
    std::vector<double> fs;
    std::vector<int64_t> is;
    if (auto fa = dyn_cast<FloatAttr>(a))
      fs.push_back(fa.getValueAsDouble());
    else if (auto ia = dyn_cast<IntegerAttr>(a))
      is.push_back(ia.getValue().getSExtValue());
    else if (auto ba = dyn_cast<BoolAttr>(a))
      is.push_back(ba.getValue());
    else if (auto da = dyn_cast<DenseElementsAttr>(a)) {
      if (r.isFloat)
        for (APFloat x : da.getValues<APFloat>())
          fs.push_back(x.convertToDouble());
      else
        for (APInt x : da.getValues<APInt>())
          is.push_back(x.getSExtValue());
    } else {
      fail("unsupported constant");
    }
    each([&](int64_t t) {
      for (int64_t k = 0; k < r.width; ++k) {
        if (r.isFloat)
          r.f[size_t(t * r.width + k)] = fs[fs.size() == 1 ? 0 : size_t(k)];
        else
          r.i[size_t(t * r.width + k)] = is[is.size() == 1 ? 0 : size_t(k)];
      }
    });
    return;
  }
  if (auto o = dyn_cast<arith::SelectOp>(op)) {
    Val &r = def(o);
    const Val &a = get(o.getTrueValue()), &b = get(o.getFalseValue());
    each([&](int64_t t) {
      const Val &s = ival(o.getCondition(), t) ? a : b;
      for (int64_t k = 0; k < r.width; ++k) {
        size_t at = size_t(t * r.width + k);
        if (r.isFloat)
          r.f[at] = s.f[at];
        else
          r.i[at] = s.i[at];
      }
    });
    return;
  }
  Value res = op.getResult(0);
  Type rt = scalarOf(res.getType());
  Val &r = def(res);
  const int64_t bits = bitWidth(rt);
  auto operand = [&](unsigned n) -> const Val & { return get(op.getOperand(n)); };
  auto elementwise = [&](auto fn) {
    each([&](int64_t t) {
      for (int64_t k = 0; k < r.width; ++k)
        fn(size_t(t * r.width + k));
    });
  };
  auto intBinary = [&](auto fn) {
    const Val &a = operand(0), &b = operand(1);
    elementwise([&](size_t at) { r.i[at] = wrap(fn(a.i[at], b.i[at]), bits); });
  };
  auto floatBinary = [&](auto fn) {
    const Val &a = operand(0), &b = operand(1);
    elementwise([&](size_t at) { r.f[at] = roundTo(rt, fn(a.f[at], b.f[at])); });
  };
  StringRef name = op.getName().getStringRef();
  auto ubits = [&](int64_t x) { return unsignedOf(x, bits); };
  if (name == "arith.addi")
    return intBinary([](int64_t a, int64_t b) { return a + b; });
  if (name == "arith.subi")
    return intBinary([](int64_t a, int64_t b) { return a - b; });
  if (name == "arith.muli")
    return intBinary([](int64_t a, int64_t b) { return a * b; });
  if (name == "arith.divui")
    return intBinary([&](int64_t a, int64_t b) {
      return int64_t(ubits(a) / ubits(b));
    });
  if (name == "arith.remui")
    return intBinary([&](int64_t a, int64_t b) {
      return int64_t(ubits(a) % ubits(b));
    });
  if (name == "arith.divsi")
    return intBinary([](int64_t a, int64_t b) { return a / b; });
  if (name == "arith.minsi")
    return intBinary([](int64_t a, int64_t b) { return std::min(a, b); });
  if (name == "arith.maxsi")
    return intBinary([](int64_t a, int64_t b) { return std::max(a, b); });
  if (name == "arith.andi")
    return intBinary([](int64_t a, int64_t b) { return a & b; });
  if (name == "arith.ori")
    return intBinary([](int64_t a, int64_t b) { return a | b; });
  if (name == "arith.xori")
    return intBinary([](int64_t a, int64_t b) { return a ^ b; });
  if (name == "arith.shli")
    return intBinary([](int64_t a, int64_t b) {
      return int64_t(uint64_t(a) << b);
    });
  if (name == "arith.shrui")
    return intBinary([&](int64_t a, int64_t b) {
      return int64_t(ubits(a) >> b);
    });
  if (auto o = dyn_cast<arith::CmpIOp>(op)) {
    const Val &a = operand(0), &b = operand(1);
    int64_t w = bitWidth(scalarOf(o.getLhs().getType()));
    elementwise([&](size_t at) {
      int64_t x = a.i[at], y = b.i[at];
      uint64_t ux = unsignedOf(x, w), uy = unsignedOf(y, w);
      bool v = false;
      switch (o.getPredicate()) {
      case arith::CmpIPredicate::eq: v = x == y; break;
      case arith::CmpIPredicate::ne: v = x != y; break;
      case arith::CmpIPredicate::slt: v = x < y; break;
      case arith::CmpIPredicate::sle: v = x <= y; break;
      case arith::CmpIPredicate::sgt: v = x > y; break;
      case arith::CmpIPredicate::sge: v = x >= y; break;
      case arith::CmpIPredicate::ult: v = ux < uy; break;
      case arith::CmpIPredicate::ule: v = ux <= uy; break;
      case arith::CmpIPredicate::ugt: v = ux > uy; break;
      case arith::CmpIPredicate::uge: v = ux >= uy; break;
      }
      r.i[at] = v;
    });
    return;
  }
  if (name == "arith.index_cast" || name == "arith.extsi" ||
      name == "arith.trunci") {
    const Val &a = operand(0);
    elementwise([&](size_t at) { r.i[at] = wrap(a.i[at], bits); });
    return;
  }
  if (name == "arith.extui") {
    const Val &a = operand(0);
    int64_t from = bitWidth(scalarOf(op.getOperand(0).getType()));
    elementwise([&](size_t at) { r.i[at] = int64_t(unsignedOf(a.i[at], from)); });
    return;
  }
  if (name == "arith.addf")
    return floatBinary([](double a, double b) { return a + b; });
  if (name == "arith.subf")
    return floatBinary([](double a, double b) { return a - b; });
  if (name == "arith.mulf")
    return floatBinary([](double a, double b) { return a * b; });
  if (name == "arith.divf")
    return floatBinary([](double a, double b) { return a / b; });
  if (name == "arith.maximumf")
    return floatBinary([](double a, double b) {
      return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
    });
  if (name == "arith.negf") {
    const Val &a = operand(0);
    elementwise([&](size_t at) { r.f[at] = -a.f[at]; });
    return;
  }
  if (name == "arith.truncf" || name == "arith.extf") {
    const Val &a = operand(0);
    elementwise([&](size_t at) { r.f[at] = roundTo(rt, a.f[at]); });
    return;
  }
  if (name == "arith.sitofp") {
    const Val &a = operand(0);
    elementwise([&](size_t at) { r.f[at] = roundTo(rt, double(a.i[at])); });
    return;
  }
  if (auto o = dyn_cast<arith::CmpFOp>(op)) {
    const Val &a = operand(0), &b = operand(1);
    elementwise([&](size_t at) {
      double x = a.f[at], y = b.f[at];
      bool ordered = !std::isnan(x) && !std::isnan(y), v = false;
      switch (o.getPredicate()) {
      case arith::CmpFPredicate::OEQ: v = ordered && x == y; break;
      case arith::CmpFPredicate::OGT: v = ordered && x > y; break;
      case arith::CmpFPredicate::OGE: v = ordered && x >= y; break;
      case arith::CmpFPredicate::OLT: v = ordered && x < y; break;
      case arith::CmpFPredicate::OLE: v = ordered && x <= y; break;
      case arith::CmpFPredicate::ONE: v = ordered && x != y; break;
      case arith::CmpFPredicate::UNE: v = !ordered || x != y; break;
      default: fail("unsupported cmpf predicate");
      }
      r.i[at] = v;
    });
    return;
  }
  fail("the emulator does not know " + name.str());
}

void Cta::execVector(Operation &op, const std::vector<uint8_t> &mask) {
  auto each = [&](auto fn) {
    for (int64_t t = 0; t < T; ++t)
      if (mask[t])
        fn(t);
  };
  auto copyEl = [](Val &dst, size_t d, const Val &src, size_t s) {
    if (src.isFloat)
      dst.f[d] = src.f[s];
    else
      dst.i[d] = src.i[s];
  };
  /// Flattened offset and length of a static position in a vector type.
  auto slice = [&](VectorType vt, ArrayRef<int64_t> pos) {
    int64_t off = 0, len = vt.getNumElements();
    for (size_t d = 0; d < pos.size(); ++d) {
      len /= vt.getDimSize(int(d));
      off += pos[d] * len;
    }
    return std::pair{off, len};
  };
  if (auto o = dyn_cast<vector::ExtractOp>(op)) {
    if (!o.getDynamicPosition().empty())
      fail("dynamic vector.extract");
    Val &r = def(o);
    const Val &s = get(o.getSource());
    auto [off, len] = slice(o.getSourceVectorType(), o.getStaticPosition());
    each([&](int64_t t) {
      for (int64_t k = 0; k < len; ++k)
        copyEl(r, size_t(t * r.width + k), s, size_t(t * s.width + off + k));
    });
    return;
  }
  if (auto o = dyn_cast<vector::InsertOp>(op)) {
    if (!o.getDynamicPosition().empty())
      fail("dynamic vector.insert");
    Val r = get(o.getDest());
    const Val &s = get(o.getValueToStore());
    auto [off, len] = slice(o.getDestVectorType(), o.getStaticPosition());
    each([&](int64_t t) {
      for (int64_t k = 0; k < len; ++k)
        copyEl(r, size_t(t * r.width + off + k), s, size_t(t * s.width + k));
    });
    vals[o] = std::move(r);
    return;
  }
  if (auto o = dyn_cast<vector::BroadcastOp>(op)) {
    Val &r = def(o);
    const Val &s = get(o.getSource());
    each([&](int64_t t) {
      for (int64_t k = 0; k < r.width; ++k)
        copyEl(r, size_t(t * r.width + k), s,
               size_t(t * s.width + k % s.width));
    });
    return;
  }
  if (auto o = dyn_cast<vector::FromElementsOp>(op)) {
    Val &r = def(o);
    each([&](int64_t t) {
      for (int64_t k = 0; k < r.width; ++k)
        copyEl(r, size_t(t * r.width + k), get(o.getElements()[k]), size_t(t));
    });
    return;
  }
  if (auto o = dyn_cast<vector::ToElementsOp>(op)) {
    const Val &s = get(o.getSource());
    for (auto [k, res] : llvm::enumerate(o.getResults())) {
      Val &r = def(res);
      each([&](int64_t t) { copyEl(r, size_t(t), s, size_t(t * s.width) + k); });
    }
    return;
  }
  if (auto o = dyn_cast<vector::BitCastOp>(op)) {
    // Only 16-bit pairs <-> 32-bit words (mma operands).
    Val &r = def(o);
    const Val &s = get(o.getSource());
    Type se = o.getSourceVectorType().getElementType();
    Type re = o.getResultVectorType().getElementType();
    each([&](int64_t t) {
      if (re.isInteger(32) && (se.isBF16() || se.isF16())) {
        for (int64_t k = 0; k < r.width; ++k) {
          uint32_t lo = bits16(se, s.f[size_t(t * s.width + 2 * k)]);
          uint32_t hi = bits16(se, s.f[size_t(t * s.width + 2 * k + 1)]);
          r.i[size_t(t * r.width + k)] = wrap(int64_t(lo | (hi << 16)), 32);
        }
      } else if (se.isInteger(32) && (re.isBF16() || re.isF16())) {
        for (int64_t k = 0; k < s.width; ++k) {
          uint32_t w = uint32_t(s.i[size_t(t * s.width + k)]);
          r.f[size_t(t * r.width + 2 * k)] = from16(re, uint16_t(w));
          r.f[size_t(t * r.width + 2 * k + 1)] = from16(re, uint16_t(w >> 16));
        }
      } else {
        fail("unsupported vector.bitcast");
      }
    });
    return;
  }
  if (auto o = dyn_cast<vector::StoreOp>(op)) {
    const Mem &m = mem(o.getBase());
    const Val &s = get(o.getValueToStore());
    each([&](int64_t t) {
      std::vector<int64_t> idx = indices(o.getIndices(), t);
      for (int64_t k = 0; k < s.width; ++k) {
        std::vector<int64_t> at = idx;
        at.back() += k;
        storeElt(m.elt, address(m, at), s.f[size_t(t * s.width + k)]);
      }
    });
    return;
  }
  fail("the emulator does not know " + op.getName().getStringRef().str());
}

void Cta::ldmatrix(nvgpu::LdMatrixOp o, const std::vector<uint8_t> &mask) {
  if (o.getNumTiles() != 4)
    fail("ldmatrix: only x4 is emulated");
  const Mem &m = mem(o.getSrcMemref());
  Val &r = def(o);
  for (int64_t w = 0; w < T / 32; ++w) {
    // Row addresses: lanes 8i..8i+7 give the 8 rows of matrix i.
    double tile[4][8][8];
    for (int64_t l = 0; l < 32; ++l) {
      if (!mask[w * 32 + l])
        fail("ldmatrix with an inactive lane");
      std::vector<int64_t> idx = indices(o.getIndices(), w * 32 + l);
      for (int64_t c = 0; c < 8; ++c) {
        std::vector<int64_t> at = idx;
        at.back() += c;
        tile[l / 8][l % 8][c] = loadElt(m.elt, address(m, at));
      }
    }
    for (int64_t l = 0; l < 32; ++l)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t e = 0; e < 2; ++e) {
          int64_t row = l / 4, col = 2 * (l % 4) + e;
          r.f[size_t((w * 32 + l) * 8 + i * 2 + e)] =
              o.getTranspose() ? tile[i][col][row] : tile[i][row][col];
        }
  }
}

void Cta::mmaSync(Operation &op, const std::vector<uint8_t> &mask) {
  // Fragments of m16n8k16 (PTX ISA): with g = lane/4, c = lane%4,
  //   A: a0,a1 (g, 2c+{0,1}); a2,a3 (g+8, ..); a4,a5 (g, 2c+8+..);
  //      a6,a7 (g+8, 2c+8+..)
  //   B: b0,b1 (k = 2c+{0,1}, n = g); b2,b3 (k = 2c+8+.., n = g)
  //   C: c0,c1 (g, 2c+{0,1}); c2,c3 (g+8, ..)
  bool packed = isa<NVVM::MmaOp>(op); // bf16 pairs in i32 words
  Type elt;
  SmallVector<Value> aOps, bOps, cOps;
  if (auto o = dyn_cast<nvgpu::MmaSyncOp>(op)) {
    elt = cast<VectorType>(o.getMatrixA().getType()).getElementType();
    aOps = {o.getMatrixA()};
    bOps = {o.getMatrixB()};
    cOps = {o.getMatrixC()};
  } else {
    auto mma = cast<NVVM::MmaOp>(op);
    elt = BFloat16Type::get(op.getContext());
    aOps.assign(mma.getOperandA().begin(), mma.getOperandA().end());
    bOps.assign(mma.getOperandB().begin(), mma.getOperandB().end());
    cOps.assign(mma.getOperandC().begin(), mma.getOperandC().end());
  }
  // The k-th 16-bit element of a fragment of `n` elements for lane t.
  // The k-th 16-bit element of an A (8 per lane) or B (4) fragment: row k/2
  // of the nvgpu vector, or half k%2 of the k/2-th i32 word.
  auto element = [&](ArrayRef<Value> ops, int64_t t, int64_t k) -> double {
    if (!packed) {
      const Val &v = get(ops[0]);
      return v.f[size_t(t * v.width + k)];
    }
    uint32_t w = uint32_t(ival(ops[size_t(k / 2)], t));
    return from16(elt, uint16_t(k % 2 ? w >> 16 : w));
  };
  auto bElement = [&](int64_t t, int64_t k) { return element(bOps, t, k); };
  auto cElement = [&](int64_t t, int64_t k) -> double {
    if (!packed)
      return get(cOps[0]).f[size_t(t * 4 + k)];
    return fval(cOps[size_t(k)], t);
  };
  Val &r = def(op.getResult(0));
  for (int64_t w = 0; w < T / 32; ++w) {
    double A[16][16], B[16][8], C[16][8];
    for (int64_t l = 0; l < 32; ++l) {
      int64_t t = w * 32 + l;
      if (!mask[t])
        fail("mma.sync with an inactive lane");
      int64_t g = l / 4, c = l % 4;
      for (int64_t k = 0; k < 8; ++k) {
        int64_t row = g + 8 * ((k / 2) % 2), col = 2 * c + k % 2 + 8 * (k / 4);
        A[row][col] = element(aOps, t, k);
      }
      for (int64_t k = 0; k < 4; ++k)
        B[2 * c + k % 2 + 8 * (k / 2)][g] = bElement(t, k);
      for (int64_t k = 0; k < 4; ++k)
        C[g + 8 * (k / 2)][2 * c + k % 2] = cElement(t, k);
    }
    for (int64_t l = 0; l < 32; ++l) {
      int64_t g = l / 4, c = l % 4;
      for (int64_t k = 0; k < 4; ++k) {
        int64_t row = g + 8 * (k / 2), col = 2 * c + k % 2;
        double acc = C[row][col];
        for (int64_t x = 0; x < 16; ++x)
          acc += A[row][x] * B[x][col];
        r.f[size_t((w * 32 + l) * 4 + k)] = double(float(acc));
      }
    }
  }
}

namespace {
struct Descriptor {
  int64_t start, lbo, sbo;
};
} // namespace

static Descriptor decodeDescriptor(int64_t desc) {
  uint64_t d = uint64_t(desc);
  if ((d >> 62) != 1)
    fail("wgmma descriptor: only the 128-byte swizzle layout is emulated");
  if (((d >> 49) & 7) != 0)
    fail("wgmma descriptor: base offset must be 0");
  return {int64_t((d & 0x3FFF) << 4), int64_t(((d >> 16) & 0x3FFF) << 4),
          int64_t(((d >> 32) & 0x3FFF) << 4)};
}

std::vector<double> Cta::wgmmaB(int64_t desc, int64_t n, bool mnMajor,
                                Type elt) {
  Descriptor b = decodeDescriptor(desc);
  std::vector<double> B(16 * size_t(n));
  for (int64_t k = 0; k < 16; ++k)
    for (int64_t j = 0; j < n; ++j) {
      int64_t logical =
          mnMajor
              // MN-major: n contiguous in 64-element (128-byte) rows, one row
              // per k; LBO between 64-wide n chunks, SBO between 8-row k
              // groups.
              ? b.start + (j / 64) * b.lbo + (k / 8) * b.sbo + (k % 8) * 128 +
                    (j % 64) * 2
              // K-major: row j at (j/8)*SBO + (j%8)*128, k contiguous.
              : b.start + (j / 8) * b.sbo + (j % 8) * 128 + k * 2;
      B[size_t(k * n + j)] = readSwizzled(logical, elt);
    }
  return B;
}

void Cta::wgmmaAccumulate(Val &r, const Val &acc, int64_t g0, int64_t n,
                          const std::vector<double> &A,
                          const std::vector<double> &B) {
  // Accumulator: thread (warp w of the group, lane l), register 4c+i: row
  // 16w + l/4 (+8 for i >= 2), column 8c + 2(l%4) + i%2.
  for (int64_t t = g0; t < g0 + 128; ++t) {
    int64_t w = (t - g0) / 32, l = t % 32;
    for (int64_t c = 0; c < n / 8; ++c)
      for (int64_t i = 0; i < 4; ++i) {
        int64_t row = 16 * w + l / 4 + 8 * (i / 2);
        int64_t col = 8 * c + 2 * (l % 4) + i % 2;
        double x = acc.f[size_t(t * acc.width + 4 * c + i)];
        for (int64_t k = 0; k < 16; ++k)
          x += A[size_t(row * 16 + k)] * B[size_t(k * n + col)];
        r.f[size_t(t * r.width + 4 * c + i)] = double(float(x));
      }
  }
}

static void requireWarpgroup(const std::vector<uint8_t> &mask, int64_t g0) {
  for (int64_t t = g0; t < g0 + 128; ++t)
    if (!mask[size_t(t)])
      fail("wgmma with an inactive thread");
}

void Cta::wgmma(NVVM::WgmmaMmaAsyncOp o, const std::vector<uint8_t> &mask) {
  const int64_t n = o.getShape().getN();
  if (o.getShape().getM() != 64 || o.getShape().getK() != 16)
    fail("wgmma: only m64nNk16 is emulated");
  Type elt = o.getTypeA() == NVVM::WGMMATypes::bf16
                 ? Type(BFloat16Type::get(o.getContext()))
                 : Type(Float16Type::get(o.getContext()));
  const bool bMnMajor = o.getLayoutB() == NVVM::MMALayout::row;
  Val &r = def(o.getResult());
  const Val &acc = get(o.getInouts());
  for (int64_t g0 = 0; g0 < T; g0 += 128) {
    requireWarpgroup(mask, g0);
    for (int64_t t = g0; t < g0 + 128; ++t)
      if (ival(o.getDescriptorA(), t) != ival(o.getDescriptorA(), g0) ||
          ival(o.getDescriptorB(), t) != ival(o.getDescriptorB(), g0))
        fail("wgmma descriptors differ within a warpgroup");
    // A (64 x 16, K-major): row m at (m/8)*SBO + (m%8)*128, k contiguous.
    Descriptor a = decodeDescriptor(ival(o.getDescriptorA(), g0));
    std::vector<double> A(64 * 16);
    for (int64_t m = 0; m < 64; ++m)
      for (int64_t k = 0; k < 16; ++k)
        A[size_t(m * 16 + k)] =
            readSwizzled(a.start + (m / 8) * a.sbo + (m % 8) * 128 + k * 2, elt);
    wgmmaAccumulate(r, acc, g0, n,
                    A, wgmmaB(ival(o.getDescriptorB(), g0), n, bMnMajor, elt));
  }
}

/// The register-A form, as TiltToGPU writes it in inline PTX:
///   wgmma.mma_async.sync.aligned.m64n<N>k16.f32.<t>.<t> {d...}, {a0..a3},
///     descB, p, 1, 1, <trans-b>;
/// operands: the N/2 accumulators (tied), four packed A words, descB.
void Cta::wgmmaRegisterA(LLVM::InlineAsmOp o,
                         const std::vector<uint8_t> &mask) {
  StringRef text = o.getAsmString();
  size_t at = text.find(".m64n");
  if (at == StringRef::npos)
    fail("wgmma asm: no shape");
  int64_t n = 0;
  if (text.substr(at + 5).consumeInteger(10, n) || n % 8 != 0)
    fail("wgmma asm: bad shape");
  Type elt = text.contains(".bf16.bf16") ? Type(BFloat16Type::get(o.getContext()))
                                         : Type(Float16Type::get(o.getContext()));
  if (!text.rtrim("\n}").ends_with("p, 1, 1, 1;"))
    fail("wgmma asm: expected an MN-major (transposed) B");
  const int64_t regs = n / 2;
  if (int64_t(o.getOperands().size()) != regs + 5)
    fail("wgmma asm: unexpected operand count");
  // The accumulator inputs as one value.
  Val acc;
  acc.width = regs;
  acc.isFloat = true;
  acc.f.assign(size_t(T * regs), 0.0);
  for (int64_t i = 0; i < regs; ++i) {
    const Val &x = get(o.getOperands()[size_t(i)]);
    for (int64_t t = 0; t < T; ++t)
      acc.f[size_t(t * regs + i)] = x.f[size_t(t)];
  }
  Val &r = def(o.getResult(0));
  Value descB = o.getOperands()[size_t(regs + 4)];
  for (int64_t g0 = 0; g0 < T; g0 += 128) {
    requireWarpgroup(mask, g0);
    // A (64 x 16) from registers: warp w holds rows 16w..16w+15 in the
    // mma.sync m16n8k16 A layout (word j of lane l: row l/4 + 8*(j%2),
    // columns 2*(l%4) + 8*(j/2) and +1, low half first).
    std::vector<double> A(64 * 16);
    for (int64_t t = g0; t < g0 + 128; ++t) {
      int64_t w = (t - g0) / 32, l = t % 32;
      for (int64_t j = 0; j < 4; ++j) {
        uint32_t word = uint32_t(ival(o.getOperands()[size_t(regs + j)], t));
        int64_t row = 16 * w + l / 4 + 8 * (j % 2);
        int64_t col = 2 * (l % 4) + 8 * (j / 2);
        A[size_t(row * 16 + col)] = from16(elt, uint16_t(word));
        A[size_t(row * 16 + col + 1)] = from16(elt, uint16_t(word >> 16));
      }
    }
    for (int64_t t = g0; t < g0 + 128; ++t)
      if (ival(descB, t) != ival(descB, g0))
        fail("wgmma descriptors differ within a warpgroup");
    wgmmaAccumulate(r, acc, g0, n, A, wgmmaB(ival(descB, g0), n, true, elt));
  }
}

void Cta::tmaLoad(nvgpu::TmaAsyncLoadOp o, const std::vector<uint8_t> &mask) {
  std::vector<PendingWrite> &pending =
      barriers[uniform(o.getMbarId(), mask)].pending;
  auto it = mapOf.find(o.getTensorMapDescriptor());
  if (it == mapOf.end() || it->second >= int64_t(launch.maps.size()))
    fail("tma load from an unknown tensor map");
  const TensorMapArg &map = launch.maps[size_t(it->second)];
  const Mem &dst = mem(o.getDst());
  const int64_t e = map.elementBytes;
  for (int64_t t = 0; t < T; ++t) {
    if (!mask[t])
      continue;
    if (o.getCoordinates().size() != 4)
      fail("tma: the tensor maps are rank 4");
    int64_t c0 = ival(o.getCoordinates()[0], t);
    int64_t c1 = ival(o.getCoordinates()[1], t);
    int64_t c2 = ival(o.getCoordinates()[2], t);
    int64_t c3 = ival(o.getCoordinates()[3], t);
    int64_t base = simAddr(dst.base);
    if (base % 1024 != 0)
      fail("tma: a 128-byte swizzled tile must start 1024-byte aligned");
    if (reinterpret_cast<uintptr_t>(map.data) % 16 != 0 ||
        map.strides[0] % 16 != 0 || map.strides[1] % 16 != 0 ||
        map.strides[2] % 16 != 0)
      fail("tma: a tensor map's address and strides must be multiples of "
           "16 bytes");
    for (int64_t r = 0; r < map.boxRows; ++r)
      for (int64_t c = 0; c < 64; ++c) {
        int64_t x = c0 + c, y = c1 + r;
        double v = 0;
        if (x < map.dims[0] && y < map.dims[1] && c2 < map.dims[2] &&
            c3 < map.dims[3]) {
          const uint8_t *p = static_cast<const uint8_t *>(map.data) + x * e +
                             y * map.strides[0] + c2 * map.strides[1] +
                             c3 * map.strides[2];
          uint16_t h;
          std::memcpy(&h, p, 2);
          v = from16(dst.elt, h);
        }
        uint8_t *q = smem.data() + swizzle128(base + r * 128 + c * e);
        checkShared(q, e);
        PendingWrite w;
        w.dst = q;
        w.bytes.resize(size_t(e));
        storeElt(dst.elt, w.bytes.data(), v);
        poison(q, e);
        pending.push_back(std::move(w));
      }
  }
}

} // namespace

std::string run(gpu::GPUFuncOp kernel, const Launch &launch) {
  auto range = [](int64_t n, const std::vector<int64_t> &only) {
    std::vector<int64_t> r;
    for (int64_t i = 0; i < n; ++i)
      if (only.empty() || std::find(only.begin(), only.end(), i) != only.end())
        r.push_back(i);
    return r;
  };
  try {
    for (int64_t z = 0; z < launch.grid[2]; ++z)
      for (int64_t y : range(launch.grid[1], launch.onlyY))
        for (int64_t x : range(launch.grid[0], launch.onlyX))
          Cta(kernel, launch, x, y, z).run();
  } catch (const Failure &f) {
    return f.what();
  }
  return {};
}

} // namespace tilt::emu
