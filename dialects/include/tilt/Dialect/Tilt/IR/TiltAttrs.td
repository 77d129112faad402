//===- TiltAttrs.td - tilt attributes ----------------------*- tablegen -*-===//

#ifndef TILT_ATTRS_TD
#define TILT_ATTRS_TD

include "tilt/Dialect/Tilt/IR/TiltDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

class Tilt_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<Tilt_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

//===----------------------------------------------------------------------===//
// Bias
//===----------------------------------------------------------------------===//

def Tilt_BiasAttr : Tilt_Attr<"Bias", "bias"> {
  let summary = "The positional bias of an attention spec";
  let description = [{
    Which linear bias (ALIBI.md) is added to the scores and where its
    per-head slopes come from. The first keyword is the bias form:

    - `none`: plain attention;
    - `alibi`: `m_h * (j - i')` (relative, the default ALiBi form);
    - `alibi_symmetric`: `-m_h * |j - i'|` (bidirectional encoders);
    - `alibi_positions`: `m_h * (cumsum(kpm)_j - 1)` from a key padding mask.

    Optional keys follow:
    - `slopes = standard | custom`: standard slopes are derived from the head
      count and `max_bias` (default 8); custom slopes come from the op's
      `slopes` operand;
    - `head_offset = N, total_heads = T`: a tensor-parallel rank holding heads
      `[N, N + H)` of a model with `T` heads uses the slopes of the whole
      model.

    Example:

    ```mlir
    #tilt.bias<none>
    #tilt.bias<alibi>
    #tilt.bias<alibi_symmetric, max_bias = 4.0>
    #tilt.bias<alibi_positions, slopes = custom>
    #tilt.bias<alibi, head_offset = 8, total_heads = 32>
    ```
  }];
  let parameters = (ins
    AttrParameter<"::tilt::BiasKind", "bias form">:$kind,
    AttrParameter<"::tilt::SlopeSource", "where slopes come from">:$slopes,
    APFloatParameter<"max_bias of standard slopes">:$maxBias,
    AttrParameter<"int64_t", "first head of this rank">:$headOffset,
    AttrParameter<"int64_t", "heads of the whole model (0: local)">:$totalHeads
  );
  let hasCustomAssemblyFormat = 1;
  let builders = [
    AttrBuilder<(ins "::tilt::BiasKind":$kind), [{
      return $_get($_ctxt, kind, ::tilt::SlopeSource::Standard,
                  ::llvm::APFloat(8.0), 0, 0);
    }]>
  ];
  let extraClassDeclaration = [{
    bool isNone() const { return getKind() == ::tilt::BiasKind::None; }
    double getMaxBiasValue() const { return getMaxBias().convertToDouble(); }
  }];
}

//===----------------------------------------------------------------------===//
// Tile configuration
//===----------------------------------------------------------------------===//

def Tilt_KernelVariant : I32EnumAttr<"KernelVariant",
    "the code generation path a tile configuration targets", [
      I32EnumAttrCase<"cpu_avx2", 0>,
      I32EnumAttrCase<"cpu_avx512", 1>,
      I32EnumAttrCase<"cpu_amx", 2>,
      I32EnumAttrCase<"gpu_sm80", 3>,
      I32EnumAttrCase<"gpu_sm90a", 4>,
      I32EnumAttrCase<"cpu_decode_avx2", 5>,
      I32EnumAttrCase<"cpu_decode_avx512", 6>,
      I32EnumAttrCase<"cpu_bwd_avx2", 7>,
      I32EnumAttrCase<"cpu_bwd_avx512", 8>,
      I32EnumAttrCase<"gpu_decode_sm80", 9>,
      I32EnumAttrCase<"gpu_bwd_sm80", 10>,
      I32EnumAttrCase<"cpu_avx512bf16", 11>,
      I32EnumAttrCase<"cpu_bwd_avx512bf16", 12>
    ]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::tilt";
}

def Tilt_TileConfigAttr : Tilt_Attr<"TileConfig", "tile_config"> {
  let summary = "How an attention op is tiled: written by the tuner, read by lowerings";
  let description = [{
    A tile configuration pins the code generation choices for one
    `tilt.attention`: the kernel variant, the query block (`block_m`) and the
    key/value block (`block_n`). GPU variants add `num_warps` and
    `num_stages` (the depth of the K/V copy pipeline); CPU variants must leave
    them out. Because the choice is an attribute in the IR, a lit test can pin
    a configuration and the tuner can write one.

    Example:

    ```mlir
    #tilt.tile_config<variant = cpu_avx512, block_m = 64, block_n = 64>
    #tilt.tile_config<variant = gpu_sm80, block_m = 128, block_n = 64, num_warps = 4, num_stages = 2>
    ```
  }];
  let parameters = (ins
    EnumParameter<Tilt_KernelVariant>:$variant,
    "int64_t":$blockM,
    "int64_t":$blockN,
    DefaultValuedParameter<"int64_t", "0">:$numWarps,
    DefaultValuedParameter<"int64_t", "0">:$numStages
  );
  let assemblyFormat = [{
    `<` `variant` `=` $variant `,` `block_m` `=` $blockM `,` `block_n` `=` $blockN
    (`,` `num_warps` `=` $numWarps^)? (`,` `num_stages` `=` $numStages^)? `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    bool isBackward() const { return isBackwardVariant(getVariant()); }
    bool isDecode() const { return isDecodeVariant(getVariant()); }
    bool isGpu() const {
      return getVariant() == KernelVariant::gpu_sm80 ||
             getVariant() == KernelVariant::gpu_sm90a ||
             getVariant() == KernelVariant::gpu_decode_sm80 ||
             getVariant() == KernelVariant::gpu_bwd_sm80;
    }
  }];
}

#endif // TILT_ATTRS_TD
