//===- Merge.cpp - gpu_decode_sm80's merge of split-KV parts --------------===//
//
// The second kernel of a gpu_decode_sm80 module, `tilt_merge`, combines the
// S split-KV parts of every query row exactly (ALIBI.md, "Merge"):
//
//   m = max_n lse_n;  w_n = exp(lse_n - m);  L = sum_n w_n
//   o = sum_n w_n * o_n / L;  lse = m + log L + c
//
// c being the row constant split 0 left in lse (what the position-offset
// anchors took out of the scores; 0 without offsets). A row whose parts all
// saw nothing (every lse_n = -inf) gets o = 0 and lse = -inf. One CTA of
// one warp per row (grid (Sq, H, B)); each lane owns column pairs 2 * lane
// + 64 k. The arithmetic is f32 with the kernels' exp2 / log2.
//
//===----------------------------------------------------------------------===//

#include "GpuEmitter.h"

#include "tilt/Compiler/Log2Units.h"

#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <limits>

using namespace mlir;
using namespace mlir::tilt;

namespace {

class MergeEmitter : GpuBuilder {
public:
  MergeEmitter(const ::tilt::AttentionSpec &spec, ImplicitLocOpBuilder &b)
      : GpuBuilder(b), spec(spec) {}

  void emit(ValueRange args) {
    Value oParts = args[0], lseParts = args[1], o = args[2], lse = args[3];
    Type index = b.getIndexType();
    Value lane = gpu::ThreadIdOp::create(b, index, gpu::Dimension::x);
    Value query = gpu::BlockIdOp::create(b, index, gpu::Dimension::x);
    Value head = gpu::BlockIdOp::create(b, index, gpu::Dimension::y);
    Value batch = gpu::BlockIdOp::create(b, index, gpu::Dimension::z);
    Value parts = memref::DimOp::create(b, oParts, 0);
    Value negInf = f32c(-std::numeric_limits<double>::infinity());
    auto partLse = [&](Value n) {
      return memref::LoadOp::create(b, lseParts,
                                    ValueRange{n, batch, head, query})
          .getResult();
    };
    // The largest part lse.
    auto maxLoop = scf::ForOp::create(
        b, idx(0), parts, idx(1), ValueRange{negInf},
        [&](OpBuilder &, Location, Value n, ValueRange acc) {
          scf::YieldOp::create(b, ValueRange{fmax(acc[0], partLse(n))});
        });
    Value m = maxLoop.getResult(0);
    Value empty =
        arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, m, negInf);
    Value mSafe = select(empty, f32c(0.0), m);

    // The weighted sum of the parts' columns this lane owns (pairs, as
    // scalars).
    const int64_t d = spec.headDim, pairs = (d / 2 + 31) / 32;
    SmallVector<Value> init(size_t(2 * pairs) + 1, f32c(0.0));
    auto column = [&](int64_t k) {
      return add(mul(lane, idx(2)), idx(64 * k));
    };
    auto sumLoop = scf::ForOp::create(
        b, idx(0), parts, idx(1), init,
        [&](OpBuilder &, Location, Value n, ValueRange acc) {
          Value w = exp2(fmul(fsub(partLse(n), mSafe), f32c(kLog2E)));
          SmallVector<Value> next = {fadd(acc[0], w)};
          for (int64_t k = 0; k < pairs; ++k) {
            // Columns past D read column 0 and are never stored.
            Value c = column(k);
            Value safe = select(lt(c, idx(d)), c, idx(0));
            for (int64_t e = 0; e < 2; ++e) {
              Value x = memref::LoadOp::create(
                  b, oParts,
                  ValueRange{n, batch, head, query, add(safe, idx(e))});
              next.push_back(fma(w, x, acc[size_t(1 + 2 * k + e)]));
            }
          }
          scf::YieldOp::create(b, next);
        });
    Value total = sumLoop.getResult(0);
    Value has =
        arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, total, f32c(0.0));
    Value inv =
        select(has, arith::DivFOp::create(b, f32c(1.0), total), f32c(0.0));
    Type elt = cast<MemRefType>(o.getType()).getElementType();
    VectorType pair = VectorType::get({2}, elt);
    for (int64_t k = 0; k < pairs; ++k) {
      Value c = column(k);
      auto store = [&] {
        Value x = arith::ConstantOp::create(
            b, DenseElementsAttr::get(pair, b.getZeroAttr(elt)));
        for (int64_t e = 0; e < 2; ++e) {
          Value y = fmul(sumLoop.getResult(size_t(1 + 2 * k + e)), inv);
          x = vector::InsertOp::create(b, arith::TruncFOp::create(b, elt, y), x,
                                       ArrayRef<int64_t>{e});
        }
        vector::StoreOp::create(b, x, o, ValueRange{batch, head, query, c},
                                /*nontemporal=*/false, llvm::MaybeAlign(4));
      };
      if (64 * (k + 1) <= d)
        store();
      else
        ifThen(lt(c, idx(d)), store);
    }
    ifThen(cmpI(arith::CmpIPredicate::eq, lane, idx(0)), [&] {
      SmallVector<Value> at = {batch, head, query};
      Value constant = memref::LoadOp::create(b, lse, at);
      Value merged =
          fadd(fadd(m, fmul(log2(select(has, total, f32c(1.0))), f32c(kLn2))),
               constant);
      memref::StoreOp::create(b, select(has, merged, negInf), lse, at);
    });
  }

private:
  const ::tilt::AttentionSpec &spec;
};

} // namespace

void mlir::tilt::emitMergeKernel(const ::tilt::AttentionSpec &spec,
                                 ImplicitLocOpBuilder &b, ValueRange args) {
  MergeEmitter(spec, b).emit(args);
}
