//===- SpecBuilder.h - From a user's spec to the tilt dialect ---*- C++ -*-===//

#ifndef TILT_COMPILER_SPECBUILDER_H
#define TILT_COMPILER_SPECBUILDER_H

#include "tilt/Spec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir {
class MLIRContext;
class OpBuilder;
class Value;
} // namespace mlir

namespace tilt {

/// Registers the dialects a spec module uses (tilt, func) with `ctx`.
void loadSpecDialects(mlir::MLIRContext &ctx);

struct SpecModuleOptions {
  Extents extents;            ///< batch and sequence lengths; 0 = dynamic
  bool withLse = false;       ///< also return lse
  bool slopesPerBatch = false; ///< custom slopes are [B,H] rather than [H]
  std::string funcName = "tilt_attention";
  /// Build the backward instead: func.func(q, k, v, o, grad_o, lse,
  /// [slopes], ...) -> (dq, dk, dv[, dslopes]) around
  /// tilt.attention_backward; dslopes (f32 [B, H]) with custom slopes.
  bool backward = false;
};

/// Builds `module { func.func @<name>(q, k, v, [slopes], [kpm], [cu_q, cu_k])
/// -> (o[, lse]) { tilt.attention ... } }` on tensors. The returned module
/// has been verified; on failure the diagnostics went to `ctx`'s handler and
/// the result is null.
mlir::OwningOpRef<mlir::ModuleOp>
buildSpecModule(mlir::MLIRContext &ctx, const AttentionSpec &spec,
                const SpecModuleOptions &options);

} // namespace tilt

#endif // TILT_COMPILER_SPECBUILDER_H
