//===- TiltOps.td - tilt operations ------------------------*- tablegen -*-===//

#ifndef TILT_OPS_TD
#define TILT_OPS_TD

include "tilt/Dialect/Tilt/IR/TiltDialect.td"
include "tilt/Dialect/Tilt/IR/TiltAttrs.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/OpBase.td"

def Tilt_Buffer : AnyTypeOf<[AnyRankedTensor, AnyStridedMemRef],
                            "ranked tensor or strided memref">;

def Tilt_AttentionOp : Tilt_Op<"attention", [AttrSizedOperandSegments,
                                            AttrSizedResultSegments]> {
  let summary = "Attention with a linear positional bias, stated declaratively";
  let description = [{
    Computes, for every batch `b`, query head `h`, query row `i`:

    ```
    s[j] = scale * dot(q[b,h,i,:], k[b,h',j,:]) + bias(b, h, i', j)
    o[b,h,i,:] = sum_j softmax_j(s masked) * v[b,h',j,:]
    ```

    with `h' = h / (H / Hkv)` (GQA/MQA) and `i' = i + Sk - Sq` (bottom-right
    alignment). The spec lives in attributes:

    - `bias`: a `#tilt.bias<...>` (absent: no bias);
    - `causal`: key `j` is visible to row `i` only if `j <= i'`;
    - `window = w`: additionally `i' - j < w`;
    - `scale`: f64, defaults to `1/sqrt(D)`;
    - `config`: an optional `#tilt.tile_config<...>` for lowerings.

    Operands: `q` `[B,H,Sq,D]`, `k`/`v` `[B,Hkv,Sk,D]`; optional `slopes`
    (f32 `[H]` or `[B,H]`, required by `slopes = custom`),
    `key_padding_mask` (`[B,Sk]` of i1/i8/i32, 0 = padded; required by
    `alibi_positions`), and ragged offsets `cu_seqlens_q`/`cu_seqlens_k`
    (i32 `[B+1]`) under which q/k/v are packed `[total,H,D]`.

    `offsets(%q_offset, %k_offset)` (two `index` values) replace the
    bottom-right rule for context parallelism: query row `i` sits at the
    absolute position `i' = q_offset + i` and key `j` at `j' = k_offset + j`;
    bias and masks use `j' - i'`. Not with `alibi_positions`, whose positions
    come from the mask.

    `paged(%block_table, %context_lens)` reads k and v from a paged KV cache
    instead: `k`/`v` are `[num_pages, page_size, Hkv, D]` (page_size a
    static power of two from 8 to 256), `block_table` i32 `[B, max_pages]`
    and `context_lens` i32 `[B]`. Token `t` of sequence `b` (`t <
    context_lens[b]`) is `k[block_table[b, t / page_size], t % page_size]`;
    entries of the block table past a sequence's used pages are never read.
    Sequence `b` has `Sk = context_lens[b]`, queries bottom-right. Not with
    cu_seqlens, a key padding mask or offsets; lowered by every CPU forward
    variant and, on the GPU, by gpu_decode_sm80.

    On tensors the op returns `o` (q's type) and, when asked for, `lse`
    (f32 `[B,H,Sq]`, or `[H,totalQ]` when ragged). On memrefs it writes the
    `out` operand (and `lse_out`, if given) and returns nothing; there an
    optional `items(%begin, %end)` restricts the op to the work items
    `[begin, end)` of the row-major space (batch, head, query block), query
    blocks being the tile configuration's `block_m` rows. That is the form a
    kernel entry point takes: the runtime hands item ranges to its threads.

    `splits(%out_parts, %lse_parts)` (memref form, decode family only) is
    split-KV: f32 memrefs shaped like `out` and `lse` with a leading dynamic
    dimension S. With S > 0 the keys each row may see are cut into S
    contiguous chunks of whole key blocks, the work items become (batch,
    split, kv head), and split `s` writes its partial result (normalized
    over its chunk; o = 0 and lse = -inf when it saw no key) to
    `out_parts[s]` and `lse_parts[s]` instead of `out` and `lse_out`. The
    parts' lse leave out each row's constant (what position offsets' anchors
    took out of the scores; 0 without offsets), which split 0 writes to
    `lse_out` (required). The result is that constant plus the exact merge
    of the parts (ALIBI.md, "Merge"). With S = 0 the op writes `out` and
    `lse_out` as without splits.

    Example:

    ```mlir
    %o, %lse = tilt.attention q(%q : tensor<2x12x128x64xbf16>)
        k(%k : tensor<2x4x128x64xbf16>) v(%v : tensor<2x4x128x64xbf16>)
        {bias = #tilt.bias<alibi>, causal}
        -> tensor<2x12x128x64xbf16>, tensor<2x12x128xf32>
    ```
  }];

  let arguments = (ins
    Tilt_Buffer:$q,
    Tilt_Buffer:$k,
    Tilt_Buffer:$v,
    Optional<Tilt_Buffer>:$slopes,
    Optional<Tilt_Buffer>:$key_padding_mask,
    Optional<Tilt_Buffer>:$cu_seqlens_q,
    Optional<Tilt_Buffer>:$cu_seqlens_k,
    Optional<Tilt_Buffer>:$block_table,
    Optional<Tilt_Buffer>:$context_lens,
    Optional<Index>:$q_offset,
    Optional<Index>:$k_offset,
    Optional<AnyStridedMemRef>:$out,
    Optional<AnyStridedMemRef>:$lse_out,
    Optional<AnyStridedMemRef>:$out_parts,
    Optional<AnyStridedMemRef>:$lse_parts,
    Optional<Index>:$item_begin,
    Optional<Index>:$item_end,
    OptionalAttr<Tilt_BiasAttr>:$bias,
    UnitAttr:$causal,
    OptionalAttr<I64Attr>:$window,
    OptionalAttr<F64Attr>:$scale,
    OptionalAttr<Tilt_TileConfigAttr>:$config
  );
  let results = (outs
    Optional<AnyRankedTensor>:$o,
    Optional<AnyRankedTensor>:$lse
  );

  let assemblyFormat = [{
    `q` `(` $q `:` type($q) `)`
    `k` `(` $k `:` type($k) `)`
    `v` `(` $v `:` type($v) `)`
    (`slopes` `(` $slopes^ `:` type($slopes) `)`)?
    (`key_padding_mask` `(` $key_padding_mask^ `:` type($key_padding_mask) `)`)?
    (`cu_seqlens_q` `(` $cu_seqlens_q^ `:` type($cu_seqlens_q) `)`)?
    (`cu_seqlens_k` `(` $cu_seqlens_k^ `:` type($cu_seqlens_k) `)`)?
    (`paged` `(` $block_table^ `:` type($block_table) `,`
                 $context_lens `:` type($context_lens) `)`)?
    (`offsets` `(` $q_offset^ `,` $k_offset `)`)?
    (`out` `(` $out^ `:` type($out) `)`)?
    (`lse_out` `(` $lse_out^ `:` type($lse_out) `)`)?
    (`splits` `(` $out_parts^ `:` type($out_parts) `,`
                  $lse_parts `:` type($lse_parts) `)`)?
    (`items` `(` $item_begin^ `,` $item_end `)`)?
    attr-dict (`->` type($o)^)? (`,` type($lse)^)?
  }];

  let hasVerifier = 1;

  let extraClassDeclaration = [{
    /// The spec this op states, with sizes taken from its operand types.
    ::tilt::AttentionSpec getSpec();
    /// True when the op works on memrefs (destination-passing form).
    bool hasBufferSemantics() { return getOut() != nullptr; }
  }];
}

def Tilt_AttentionBackwardOp : Tilt_Op<"attention_backward",
    [AttrSizedOperandSegments, AttrSizedResultSegments]> {
  let summary = "Gradients of tilt.attention, with the fused slope gradient";
  let description = [{
    The backward pass of the `tilt.attention` with the same operands and
    attributes (ALIBI.md, "Backward"). From the forward's output `o`, its
    `lse` and the upstream gradient `grad_o` (both like `q`), with
    `P = exp(s - lse)` recomputed and `D_i = sum_d grad_o * o`:

    ```
    dP = grad_o V^T;   dS = P * (dP - D_i)      (0 where masked)
    dq = scale * dS K; dk = scale * dS^T Q;  dv = P^T grad_o
    dslopes[b, h] = sum_(i, j) dS * dist         (custom slopes only)
    ```

    with `dist` the bias's distance (`j - i'`, `-|j - i'|` or `pos_j`). An
    optional `grad_lse` (f32, lse's shape) is the upstream gradient of lse:
    since d lse_i / d s_ij = P_ij, it enters as D_i - grad_lse_i. dk
    and dv of a kv head sum over the query heads of its group. Rows that see
    no key contribute nothing.

    On tensors the op returns `dq`, `dk`, `dv` (the types of q, k, v) and,
    when asked for with custom slopes, `dslopes` (f32 `[B, H]`: per
    sequence; a caller with per-head slopes sums over B). On memrefs it
    writes `grads(%dq, %dk, %dv)` and `dslopes_out` and returns nothing.
    There `items(%begin, %end)` selects work items of a two-part space: first
    the key blocks (`block_n` keys) of every (batch, kv head), each computing
    its dk and dv rows over all query heads of the group; then one item per
    (batch, head), computing that head's dq and slope gradient. Every output
    element is written by exactly one item in a fixed order, so the result
    is deterministic and needs no atomics.

    `row_scale` (f32, lse's shape; kernel form only) is scratch between the
    two parts: each (batch, head) item writes, per row, 1 / sum_j P -- the
    factor that makes the recomputed P sum to one whatever the rounding of
    the given lse -- and the key-block items scale P by it. With it, every
    (batch, head) item must finish before any key-block item starts.

    Example:

    ```mlir
    %dq, %dk, %dv = tilt.attention_backward q(%q : tensor<1x8x128x64xf32>)
        k(%k : tensor<1x2x128x64xf32>) v(%v : tensor<1x2x128x64xf32>)
        o(%o : tensor<1x8x128x64xf32>) grad_o(%do : tensor<1x8x128x64xf32>)
        lse(%lse : tensor<1x8x128xf32>) {bias = #tilt.bias<alibi>, causal}
        -> tensor<1x8x128x64xf32>, tensor<1x2x128x64xf32>,
           tensor<1x2x128x64xf32>
    ```
  }];

  let arguments = (ins
    Tilt_Buffer:$q,
    Tilt_Buffer:$k,
    Tilt_Buffer:$v,
    Tilt_Buffer:$o,
    Tilt_Buffer:$grad_o,
    Tilt_Buffer:$lse,
    Optional<Tilt_Buffer>:$grad_lse,
    Optional<Tilt_Buffer>:$slopes,
    Optional<Tilt_Buffer>:$key_padding_mask,
    Optional<Tilt_Buffer>:$cu_seqlens_q,
    Optional<Tilt_Buffer>:$cu_seqlens_k,
    Optional<Index>:$q_offset,
    Optional<Index>:$k_offset,
    Optional<AnyStridedMemRef>:$dq_out,
    Optional<AnyStridedMemRef>:$dk_out,
    Optional<AnyStridedMemRef>:$dv_out,
    Optional<AnyStridedMemRef>:$dslopes_out,
    Optional<AnyStridedMemRef>:$row_scale,
    Optional<Index>:$item_begin,
    Optional<Index>:$item_end,
    OptionalAttr<Tilt_BiasAttr>:$bias,
    UnitAttr:$causal,
    OptionalAttr<I64Attr>:$window,
    OptionalAttr<F64Attr>:$scale,
    OptionalAttr<Tilt_TileConfigAttr>:$config
  );
  let results = (outs
    Optional<AnyRankedTensor>:$dq,
    Optional<AnyRankedTensor>:$dk,
    Optional<AnyRankedTensor>:$dv,
    Optional<AnyRankedTensor>:$dslopes
  );

  let assemblyFormat = [{
    `q` `(` $q `:` type($q) `)`
    `k` `(` $k `:` type($k) `)`
    `v` `(` $v `:` type($v) `)`
    `o` `(` $o `:` type($o) `)`
    `grad_o` `(` $grad_o `:` type($grad_o) `)`
    `lse` `(` $lse `:` type($lse) `)`
    (`grad_lse` `(` $grad_lse^ `:` type($grad_lse) `)`)?
    (`slopes` `(` $slopes^ `:` type($slopes) `)`)?
    (`key_padding_mask` `(` $key_padding_mask^ `:` type($key_padding_mask) `)`)?
    (`cu_seqlens_q` `(` $cu_seqlens_q^ `:` type($cu_seqlens_q) `)`)?
    (`cu_seqlens_k` `(` $cu_seqlens_k^ `:` type($cu_seqlens_k) `)`)?
    (`offsets` `(` $q_offset^ `,` $k_offset `)`)?
    (`grads` `(` $dq_out^ `,` $dk_out `,` $dv_out `:` type($dq_out) `,`
        type($dk_out) `,` type($dv_out) `)`)?
    (`dslopes_out` `(` $dslopes_out^ `:` type($dslopes_out) `)`)?
    (`row_scale` `(` $row_scale^ `:` type($row_scale) `)`)?
    (`items` `(` $item_begin^ `,` $item_end `)`)?
    attr-dict (`->` type($dq)^ `,` type($dk) `,` type($dv))?
    (`,` type($dslopes)^)?
  }];

  let hasVerifier = 1;

  let extraClassDeclaration = [{
    /// The spec of the forward this op differentiates.
    ::tilt::AttentionSpec getSpec();
    bool hasBufferSemantics() { return getDqOut() != nullptr; }
  }];
}

#endif // TILT_OPS_TD
