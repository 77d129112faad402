//===- Passes.td - Tilt's compiler passes ------------------*- tablegen -*-===//

#ifndef TILT_COMPILER_PASSES_TD
#define TILT_COMPILER_PASSES_TD

include "mlir/Pass/PassBase.td"

def TiltCpuEntry : Pass<"tilt-cpu-entry", "mlir::ModuleOp"> {
  let summary = "Turn a spec function on tensors into a CPU kernel entry point";
  let description = [{
    Rewrites every `func.func` whose body is one tensor-form
    `tilt.attention` into the kernel ABI of Tilt's runtime (KernelABI.h):
    memref arguments `q, k, v, o, lse`, then the optional `slopes`, key
    padding mask (i8) and `cu_seqlens`, then the work range
    `%item_begin, %item_end : index`. The body becomes one memref-form
    `tilt.attention ... items(%item_begin, %item_end)` carrying a tile
    configuration: the op's own, else the one given by the options, else the
    default for `variant`. The function is renamed to `kernel-name` and marked
    `llvm.emit_c_interface`.

    Example:

    ```mlir
    func.func @tilt_attention(%q: tensor<1x8x?x64xf32>, ...) -> tensor<1x8x?x64xf32>
    // becomes
    func.func @tilt_kernel(%q: memref<1x8x?x64xf32>, ..., %o: memref<1x8x?x64xf32>,
                           %lse: memref<1x8x?xf32>, %begin: index, %end: index)
    ```
  }];
  let options = [
    Option<"kernelName", "kernel-name", "std::string", "\"tilt_kernel\"",
           "name of the entry function">,
    Option<"variant", "variant", "std::string", "\"cpu_avx512\"",
           "kernel variant when the op has no tile_config: cpu_avx2, "
           "cpu_avx512 or cpu_amx">,
    Option<"blockM", "block-m", "int64_t", "0",
           "query block (0: the variant's default)">,
    Option<"blockN", "block-n", "int64_t", "0",
           "key/value block (0: the variant's default)">,
  ];
  let dependentDialects = ["mlir::memref::MemRefDialect",
                           "mlir::func::FuncDialect"];
}

def ConvertTiltToCPU : Pass<"convert-tilt-to-cpu", "mlir::ModuleOp"> {
  let summary = "Lower memref-form tilt.attention to a tiled streaming-softmax loop nest";
  let description = [{
    Lowers each memref-form `tilt.attention` with an `items` range and a CPU
    `tile_config` into a FlashAttention-style loop nest on the vector
    dialect: for each work item (batch, head, query block of `block_m`
    rows) the query block is loaded once, pre-scaled by `scale * log2(e)`;
    keys and values stream in blocks of `block_n`, restricted to the range
    that causal and window masks leave visible (blocks outside it are never
    touched); scores come from a register-tiled `vector.fma` micro-kernel
    against a transposed key block; the ALiBi bias is formed from indices
    in f32 (`slope * log2(e) * (j - i')`, its symmetric and positions forms);
    an online softmax keeps the running max and sum per row with `exp2`
    (a polynomial, so it vectorizes); P·V accumulates in f32. Rows that see
    no key produce 0 and lse = -inf. f16/bf16 inputs are widened to f32 when
    blocks are staged and outputs rounded back.

    The `cpu_amx` variant (bf16) computes Q K^T and P V with AMX tiles
    (`amx.tile_mulf`, f32 accumulation) on VNNI-packed K^T and V blocks,
    with the same f32 softmax between them.
  }];
  let dependentDialects = ["mlir::amx::AMXDialect",
                           "mlir::arith::ArithDialect",
                           "mlir::math::MathDialect",
                           "mlir::memref::MemRefDialect",
                           "mlir::scf::SCFDialect",
                           "mlir::vector::VectorDialect"];
}

#endif // TILT_COMPILER_PASSES_TD
