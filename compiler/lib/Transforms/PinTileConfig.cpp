//===- PinTileConfig.cpp - Choose and pin #tilt.tile_config ---------------===//
//
// The one place a tile configuration is put on a tilt.attention op. The
// values come from the tile policy (tilt/TilePolicy.h); the lowerings
// (tilt-cpu-entry, convert-tilt-to-cpu, convert-tilt-to-gpu) only read the
// attribute this pins.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Configs.h"
#include "tilt/Compiler/Passes.h"
#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/TilePolicy.h"

#include "llvm/ADT/TypeSwitch.h"

namespace mlir::tilt {
#define GEN_PASS_DEF_TILTPINTILECONFIG
#include "tilt/Compiler/Passes.h.inc"
} // namespace mlir::tilt

using namespace mlir;
using namespace mlir::tilt;

TileConfigAttr mlir::tilt::toTileConfigAttr(MLIRContext *ctx,
                                            const ::tilt::TileConfig &c) {
  std::optional<KernelVariant> v = symbolizeKernelVariant(c.variant);
  if (!v)
    return {};
  return TileConfigAttr::get(ctx, *v, c.blockM, c.blockN, c.numWarps,
                             c.numStages);
}

TileConfigAttr mlir::tilt::getDefaultCpuConfig(MLIRContext *ctx,
                                               KernelVariant variant) {
  return toTileConfigAttr(ctx, ::tilt::defaultCpuConfig(toCore(variant)));
}

TileConfigAttr mlir::tilt::getDefaultGpuConfig(MLIRContext *ctx,
                                               KernelVariant variant,
                                               int64_t headDim) {
  return toTileConfigAttr(
      ctx, ::tilt::defaultGpuConfig(toCore(variant), headDim));
}

namespace {

/// Completes `requested` by the policy and checks it against the spec and
/// the op it goes on (`backward`: tilt.attention_backward).
FailureOr<TileConfigAttr>
completeAndCheck(MLIRContext *ctx, const ::tilt::AttentionSpec &spec,
                 bool backward, ::tilt::TileConfig requested,
                 function_ref<InFlightDiagnostic()> emitError) {
  std::optional<::tilt::KernelVariant> kind = requested.kind();
  std::optional<KernelVariant> variant =
      symbolizeKernelVariant(requested.variant);
  if (!kind || !variant)
    return emitError() << "variant must be one of "
                       << ::tilt::kernelVariantNames() << ", got '"
                       << requested.variant << "'";
  if (::tilt::isBackwardVariant(*kind) != backward)
    return emitError() << "variant " << requested.variant
                       << (backward ? " is a forward variant; the backward "
                                      "takes " +
                                          ::tilt::backwardVariantNames()
                                    : std::string(" is for the backward pass"));
  const bool gpu = ::tilt::isGpuVariant(*kind);
  // The policy fills what the request leaves open (zero fields).
  const ::tilt::TileConfig c =
      gpu ? ::tilt::completeGpuConfig(spec, requested, "")
          : ::tilt::completeCpuConfig(requested);
  if (failed(TileConfigAttr::verifyInvariants(emitError, *variant, c.blockM,
                                              c.blockN, c.numWarps,
                                              c.numStages)))
    return failure();
  auto attr = TileConfigAttr::get(ctx, *variant, c.blockM, c.blockN, c.numWarps,
                                  c.numStages);
  if (gpu) {
    if (std::string err = checkGpuConfig(spec, attr); !err.empty())
      return emitError() << err;
  } else if ((*kind == ::tilt::KernelVariant::CpuAmx ||
              *kind == ::tilt::KernelVariant::CpuAvx512Bf16 ||
              *kind == ::tilt::KernelVariant::CpuBwdAvx512Bf16) &&
             spec.dtype != ::tilt::DType::BF16) {
    return emitError() << "variant " << requested.variant
                       << " needs bf16 inputs";
  }
  return attr;
}

} // namespace

FailureOr<TileConfigAttr>
mlir::tilt::pinTileConfig(AttentionOp op, ::tilt::TileConfig requested,
                          function_ref<InFlightDiagnostic()> emitError) {
  FailureOr<TileConfigAttr> attr = completeAndCheck(
      op.getContext(), op.getSpec(), /*backward=*/false, requested, emitError);
  if (succeeded(attr))
    op.setConfigAttr(*attr);
  return attr;
}

FailureOr<TileConfigAttr>
mlir::tilt::pinTileConfig(AttentionBackwardOp op, ::tilt::TileConfig requested,
                          function_ref<InFlightDiagnostic()> emitError) {
  FailureOr<TileConfigAttr> attr = completeAndCheck(
      op.getContext(), op.getSpec(), /*backward=*/true, requested, emitError);
  if (succeeded(attr))
    op.setConfigAttr(*attr);
  return attr;
}

namespace {

struct TiltPinTileConfig
    : mlir::tilt::impl::TiltPinTileConfigBase<TiltPinTileConfig> {
  using Base::Base;

  void runOnOperation() override {
    WalkResult r = getOperation().walk([&](Operation *o) {
      return TypeSwitch<Operation *, WalkResult>(o)
          .Case<AttentionOp, AttentionBackwardOp>(
              [&](auto op) { return pin(op); })
          .Default([](Operation *) { return WalkResult::advance(); });
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }

  template <typename OpT> WalkResult pin(OpT op) {
    {
      if (op.hasBufferSemantics() || op.getConfigAttr())
        return WalkResult::advance();
      if (variant.empty()) {
        op.emitOpError("has no tile_config and tilt-pin-tile-config was "
                       "given no variant");
        return WalkResult::interrupt();
      }
      ::tilt::TileConfig requested;
      requested.variant = variant;
      requested.blockM = blockM;
      requested.blockN = blockN;
      requested.numWarps = numWarps;
      requested.numStages = numStages;
      auto emitError = [&] { return op.emitOpError(); };
      return failed(pinTileConfig(op, requested, emitError))
                 ? WalkResult::interrupt()
                 : WalkResult::advance();
    }
  }
};

} // namespace
