//===- TiltDialect.td - The tilt dialect -------------------*- tablegen -*-===//

#ifndef TILT_DIALECT_TD
#define TILT_DIALECT_TD

include "mlir/IR/OpBase.td"

def Tilt_Dialect : Dialect {
  let name = "tilt";
  let cppNamespace = "::mlir::tilt";
  let summary = "Attention with a linear positional bias, stated declaratively";
  let description = [{
    The `tilt` dialect states *what* attention a user needs (heads, kv heads,
    head dim, element type, scale, causal/window masks, ALiBi bias forms and
    slope sources) as one op, `tilt.attention`, whose attributes are the
    spec. Lowerings read the spec and an optional `#tilt.tile_config` and
    produce tiled kernels; the verifier rejects every inconsistent spec with a
    message that names the field and what is allowed.
  }];
  let useDefaultAttributePrinterParser = 1;
}

class Tilt_Op<string mnemonic, list<Trait> traits = []>
    : Op<Tilt_Dialect, mnemonic, traits>;

#endif // TILT_DIALECT_TD
