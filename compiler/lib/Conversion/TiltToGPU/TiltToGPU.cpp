//===- TiltToGPU.cpp - tilt.attention -> tensor-core kernel in a gpu.module
//===//
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
// This file is the pass: it pins and checks the tile config, builds the
// kernel's signature and hands the body to the variant's emitter
// (GpuEmitter.h: the shared part; Sm80.cpp and Sm90a.cpp: the loads and
// matrix products of each variant).
//
// gpu_decode_sm80 is the same kernel for the decode family: its CTAs own
// rows of a GQA group (every query head of a kv head times every query)
// and a split of the keys, and also read paged caches (GpuEmitter.cpp).
//
// tilt.attention_backward lowers (gpu_bwd_sm80) to two kernels of one
// module, a dQ kernel per query block and a dK/dV kernel per key block,
// with the backward's parameters (GpuBackward.cpp, KernelABI.h).
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

#include "GpuEmitter.h"
#include "tilt/Compiler/Configs.h"
#include "tilt/Compiler/Log2Units.h"
#include "tilt/Compiler/Passes.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/KernelABI.h"
#include "tilt/TilePolicy.h"
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

int64_t mlir::tilt::gpuSharedMemoryBytes(const ::tilt::AttentionSpec &spec,
                                         TileConfigAttr config) {
  if (config.getVariant() == KernelVariant::gpu_bwd_sm80)
    return std::max(gpuBackwardSharedMemoryBytes(spec, config, false),
                    gpuBackwardSharedMemoryBytes(spec, config, true));
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
    const int64_t row = (spec.headDim + kGpuRowPad) * e;
    bytes = config.getBlockM() * row + 2 * config.getNumStages() * bn * row;
  }
  // Per key block: the key mask / positions bias (f32) and per-warp counts.
  if (spec.keyPaddingMask)
    bytes += bn * 4 + 4 * 64;
  return bytes;
}

namespace {

struct ConvertTiltToGPU
    : mlir::tilt::impl::ConvertTiltToGPUBase<ConvertTiltToGPU> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<Operation *> ops;
    module.walk([&](Operation *op) {
      if (isa<AttentionOp, AttentionBackwardOp>(op))
        ops.push_back(op);
    });
    if (ops.size() != 1) {
      module.emitError("convert-tilt-to-gpu expects exactly one "
                       "tilt.attention or tilt.attention_backward, found ")
          << ops.size();
      return signalPassFailure();
    }
    LogicalResult done =
        isa<AttentionOp>(ops.front())
            ? rewrite(module, cast<AttentionOp>(ops.front()))
            : rewrite(module, cast<AttentionBackwardOp>(ops.front()));
    if (failed(done))
      signalPassFailure();
  }

  /// The configuration tilt-pin-tile-config pinned, checked against the
  /// spec; this pass chooses nothing.
  template <typename OpT> FailureOr<TileConfigAttr> pinnedConfig(OpT op) {
    TileConfigAttr config = op.getConfigAttr();
    if (!config) {
      op.emitOpError("has no tile_config; run tilt-pin-tile-config first");
      return failure();
    }
    if (!config.isGpu()) {
      op.emitOpError("convert-tilt-to-gpu needs a GPU tile_config, got ")
          << stringifyKernelVariant(config.getVariant());
      return failure();
    }
    if (std::string err = checkGpuConfig(op.getSpec(), config); !err.empty()) {
      op.emitOpError(err);
      return failure();
    }
    return config;
  }

  /// The spec function around `op` (in `func`) and its pinned config.
  template <typename OpT>
  FailureOr<TileConfigAttr> prepare(OpT op, func::FuncOp &func) {
    if (op.hasBufferSemantics())
      return op.emitOpError("convert-tilt-to-gpu expects the tensor form "
                            "(a spec function)");
    func = dyn_cast<func::FuncOp>(op->getParentOp());
    if (!func)
      return op.emitOpError("convert-tilt-to-gpu expects the op in a "
                            "func.func");
    return pinnedConfig(op);
  }

  /// The gpu.module (inserted before the spec function) that will hold the
  /// kernels.
  gpu::GPUModuleOp makeGpuModule(ModuleOp module, func::FuncOp func) {
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    UnitAttr::get(&getContext()));
    OpBuilder top(func);
    return gpu::GPUModuleOp::create(top, func.getLoc(), "tilt_kernels");
  }

  /// A kernel of `config`'s block size with what the target and the
  /// runtime read from it.
  gpu::GPUFuncOp makeKernel(gpu::GPUModuleOp gpuModule, Location loc,
                            StringRef name, ArrayRef<Type> argTypes,
                            TileConfigAttr config,
                            const ::tilt::AttentionSpec &spec, int64_t smem) {
    MLIRContext *ctx = &getContext();
    OpBuilder inner = OpBuilder::atBlockEnd(gpuModule.getBody());
    auto kernel = gpu::GPUFuncOp::create(inner, loc, name,
                                         inner.getFunctionType(argTypes, {}));
    kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                    UnitAttr::get(ctx));
    const int32_t threads = int32_t(32 * config.getNumWarps());
    kernel.setKnownBlockSizeAttr(DenseI32ArrayAttr::get(ctx, {threads, 1, 1}));
    // One CTA per SM is the design point (up to 227 KiB of shared memory,
    // up to 255 registers a thread): without this ptxas may cap registers
    // to fit two CTAs and spill.
    kernel->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                    IntegerAttr::get(IntegerType::get(ctx, 32), 1));
    kernel->setAttr("tilt.config", config);
    kernel->setAttr("tilt.smem",
                    IntegerAttr::get(IntegerType::get(ctx, 64), smem));
    kernel->setAttr("tilt.spec", StringAttr::get(ctx, spec.canonical()));
    return kernel;
  }

  /// gpu_bwd_sm80: tilt_attention_bwd_dq, then tilt_attention_bwd_dkdv,
  /// with the same parameters (KernelABI.h).
  LogicalResult rewrite(ModuleOp module, AttentionBackwardOp op) {
    func::FuncOp func;
    FailureOr<TileConfigAttr> config = prepare(op, func);
    if (failed(config))
      return failure();
    const ::tilt::AttentionSpec spec = op.getSpec();
    MLIRContext *ctx = &getContext();
    SmallVector<Type> argTypes = kernelAbiMemRefTypes(op);
    // row_scale becomes the row state: f32, lse's shape x 4.
    auto lseType = cast<MemRefType>(argTypes[5]);
    SmallVector<int64_t> stateShape(lseType.getShape());
    stateShape.push_back(4);
    Type f32 = Float32Type::get(ctx);
    argTypes[10] = MemRefType::get(stateShape, f32);
    const bool withSlopes = bool(op.getSlopes());
    if (withSlopes) // the slope gradient's parts [B, H, query blocks]
      argTypes.push_back(MemRefType::get(
          {ShapedType::kDynamic, ShapedType::kDynamic, ShapedType::kDynamic},
          f32));
    if (spec.positionOffsets)
      argTypes.append(2, IndexType::get(ctx));
    gpu::GPUModuleOp gpuModule = makeGpuModule(module, func);
    for (bool dkdv : {false, true}) {
      gpu::GPUFuncOp kernel = makeKernel(
          gpuModule, func.getLoc(),
          dkdv ? ::tilt::kCudaBwdDkDvKernelName : ::tilt::kCudaBwdDqKernelName,
          argTypes, *config, spec,
          gpuBackwardSharedMemoryBytes(spec, *config, dkdv));
      ImplicitLocOpBuilder b(func.getLoc(), ctx);
      b.setInsertionPointToStart(&kernel.getBody().front());
      emitBackwardKernel(spec, *config, b, kernel.getArguments(), withSlopes,
                         dkdv);
      gpu::ReturnOp::create(b);
    }
    func.erase();
    return success();
  }

  LogicalResult rewrite(ModuleOp module, AttentionOp op) {
    func::FuncOp func;
    FailureOr<TileConfigAttr> config = prepare(op, func);
    if (failed(config))
      return failure();
    const ::tilt::AttentionSpec spec = op.getSpec();
    MLIRContext *ctx = &getContext();

    SmallVector<Type> argTypes = kernelAbiMemRefTypes(op);
    // gpu_decode_sm80's merge kernel: o_parts, lse_parts (the ABI's last
    // memrefs), o, lse.
    SmallVector<Type> mergeTypes;
    if (config->isDecode())
      mergeTypes = {argTypes[argTypes.size() - 2], argTypes.back(), argTypes[3],
                    argTypes[4]};
    // Position offsets: q_offset, k_offset as i64 parameters.
    if (spec.positionOffsets)
      argTypes.append(2, IndexType::get(ctx));
    // sm_90a: the tensor maps of q, k and v (KernelABI.h), as pointers.
    if (config->getVariant() == KernelVariant::gpu_sm90a)
      argTypes.append(3, LLVM::LLVMPointerType::get(ctx));

    gpu::GPUModuleOp gpuModule = makeGpuModule(module, func);
    gpu::GPUFuncOp kernel =
        makeKernel(gpuModule, func.getLoc(), ::tilt::kCudaKernelName, argTypes,
                   *config, spec, gpuSharedMemoryBytes(spec, *config));

    ImplicitLocOpBuilder b(func.getLoc(), ctx);
    b.setInsertionPointToStart(&kernel.getBody().front());
    std::unique_ptr<GpuEmitter> emitter =
        makeGpuEmitter(spec, *config, b, kernel.getArguments());
    if (!emitter)
      return op.emitOpError("convert-tilt-to-gpu: no emitter for variant ")
             << stringifyKernelVariant(config->getVariant());
    emitter->emit();
    gpu::ReturnOp::create(b);
    if (!mergeTypes.empty()) {
      OpBuilder inner = OpBuilder::atBlockEnd(gpuModule.getBody());
      auto merge = gpu::GPUFuncOp::create(
          inner, func.getLoc(), ::tilt::kCudaMergeKernelName,
          inner.getFunctionType(mergeTypes, {}));
      merge->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                     UnitAttr::get(ctx));
      merge.setKnownBlockSizeAttr(DenseI32ArrayAttr::get(ctx, {32, 1, 1}));
      b.setInsertionPointToStart(&merge.getBody().front());
      emitMergeKernel(spec, b, merge.getArguments());
      gpu::ReturnOp::create(b);
    }
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
  if (config.getVariant() == KernelVariant::gpu_decode_sm80) {
    if (spec.varlen)
      return "variant gpu_decode_sm80 takes dense or paged k/v, not varlen "
             "cu_seqlens; use gpu_sm80";
    if (spec.bias == ::tilt::BiasKind::AlibiPositions)
      return "variant gpu_decode_sm80 does not take bias alibi_positions; use "
             "gpu_sm80";
  }
  if (config.getVariant() == KernelVariant::gpu_bwd_sm80) {
    if (spec.pageSize)
      return "variant gpu_bwd_sm80 takes dense or varlen k/v, not a paged "
             "cache";
    // The dK/dV kernel's keys are the rows of its products: 16 per warp.
    if (bn % (16 * config.getNumWarps()) != 0)
      return "variant gpu_bwd_sm80 needs block_n a multiple of 16 * "
             "num_warps (the dK/dV kernel's keys are its rows)";
  }
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
  const int64_t limit =
      ::tilt::maxGpuSharedMemory(toCore(config.getVariant()));
  if (smem > limit)
    return "tile config needs " + std::to_string(smem) +
           " bytes of shared memory; at most " + std::to_string(limit) +
           " fit (smaller block_m, block_n or num_stages)";
  return {};
}

