//===- Passes.td - Tilt's compiler passes ------------------*- tablegen -*-===//

#ifndef TILT_COMPILER_PASSES_TD
#define TILT_COMPILER_PASSES_TD

include "mlir/Pass/PassBase.td"

def TiltPinTileConfig : Pass<"tilt-pin-tile-config", "mlir::ModuleOp"> {
  let summary = "Pin the tile configuration (#tilt.tile_config) on every spec op";
  let description = [{
    The one place a `#tilt.tile_config` is chosen. For each tensor-form
    `tilt.attention` without one, it takes `variant` and the given block
    sizes, warps and stages, fills the rest from the tile policy
    (runtime/core/include/tilt/TilePolicy.h: the CPU defaults per variant,
    the GPU defaults per variant and head dim), checks the result against
    the spec (power-of-two blocks, cpu_amx only for bf16, the GPU variants'
    shared-memory and shape limits) and sets it. An op that already carries
    a configuration keeps it. The lowerings that follow only read the
    attribute; the JIT compiler pins through the same function
    (`mlir::tilt::pinTileConfig`), with its tuned or requested values.

    Example:

    ```mlir
    %o = tilt.attention q(%q : ...) k(%k : ...) v(%v : ...) -> ...
    // with variant=cpu_avx2 block-n=128 becomes
    %o = tilt.attention ... {config = #tilt.tile_config<variant = cpu_avx2,
                                       block_m = 32, block_n = 128>} -> ...
    ```
  }];
  let options = [
    Option<"variant", "variant", "std::string", "\"\"",
           "kernel variant for ops without a tile_config: cpu_avx2, "
           "cpu_avx512, cpu_amx, gpu_sm80 or gpu_sm90a">,
    Option<"blockM", "block-m", "int64_t", "0",
           "query block (0: the policy's default)">,
    Option<"blockN", "block-n", "int64_t", "0",
           "key/value block (0: the policy's default)">,
    Option<"numWarps", "num-warps", "int64_t", "0",
           "GPU warps (0: the policy's default)">,
    Option<"numStages", "num-stages", "int64_t", "0",
           "GPU K/V pipeline depth (0: the policy's default)">,
  ];
}

def TiltCpuEntry : Pass<"tilt-cpu-entry", "mlir::ModuleOp"> {
  let summary = "Turn a spec function on tensors into a CPU kernel entry point";
  let description = [{
    Rewrites every `func.func` whose body is one tensor-form
    `tilt.attention` into the kernel ABI of Tilt's runtime (KernelABI.h):
    memref arguments `q, k, v, o, lse`, then the optional `slopes`, key
    padding mask (i8) and `cu_seqlens`, then the work range
    `%item_begin, %item_end : index`. The body becomes one memref-form
    `tilt.attention ... items(%item_begin, %item_end)` carrying the op's
    tile configuration, which `tilt-pin-tile-config` put there. The function is renamed to `kernel-name` and marked
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
    with the same f32 softmax between them. The `cpu_avx512bf16` variant
    (bf16) runs cpu_avx512's loop nest with bf16 pair dot products
    (`x86vector.avx512.dot`, vdpbf16ps) for both products, or, without
    `native-bf16-dot`, two f32 FMAs per pair (the same arithmetic).
  }];
  let options = [
    Option<"nativeBf16Dot", "native-bf16-dot", "bool", "true",
           "cpu_avx512bf16: emit x86vector.avx512.dot (the target has "
           "AVX512_BF16); false: two f32 FMAs of the widened pairs">,
  ];
  let dependentDialects = ["mlir::amx::AMXDialect",
                           "mlir::LLVM::LLVMDialect",
                           "mlir::x86vector::X86VectorDialect",
                           "mlir::arith::ArithDialect",
                           "mlir::math::MathDialect",
                           "mlir::memref::MemRefDialect",
                           "mlir::scf::SCFDialect",
                           "mlir::vector::VectorDialect"];
}

def TiltRoundBf16 : Pass<"tilt-round-bf16", "mlir::ModuleOp"> {
  let summary = "Expand vector f32 -> bf16 truncations into integer rounding";
  let description = [{
    For CPUs without AVX512_BF16: rewrites every `arith.truncf` of a float32
    vector to bfloat16 as round-to-nearest-even on the 32-bit lanes
    (`bits + 0x7fff + ((bits >> 16) & 1)`, then the high half), a NaN kept a
    NaN by setting its quiet bit. Every operation stays in 32-bit lanes;
    `arith-expand-ops` selects a constant NaN, which LLVM sinks into a
    select of bfloat vectors that the x86 backend scalarizes (about 800
    instructions per stored row of D = 128). Runs before `arith-expand-ops`,
    which still expands the widening `arith.extf`.
  }];
  let dependentDialects = ["mlir::arith::ArithDialect"];
}

def ConvertTiltToGPU : Pass<"convert-tilt-to-gpu", "mlir::ModuleOp"> {
  let summary = "Lower a spec function to tensor-core kernels in a gpu.module";
  let description = [{
    Replaces the spec function (one tensor-form `tilt.attention`) by
    `gpu.module @tilt_kernels` holding the kernel `tilt_attention` with the
    CUDA parameter ABI of runtime/include/tilt/KernelABI.h (the memref
    arguments of the CPU ABI, no work range: the grid is
    (query blocks, heads, batch)). The tile configuration is the op's, as
    `tilt-pin-tile-config` pinned it.

    `gpu_sm80`: one CTA per query block of `block_m` rows, 16 rows per warp;
    the Q block is staged once (`nvgpu.device_async_copy`) and read as
    `nvgpu.ldmatrix` fragments; K/V blocks of `block_n` keys stream through
    `num_stages` shared-memory buffers with cp.async groups; Q K^T and P V
    run on `mma.sync` m16n8k16 (f32 accumulation); the online softmax uses
    `exp2` on scores in log2 units, with the ALiBi term formed from indices
    per key column; key blocks outside the causal/window range are never
    loaded, and blocks that need no per-element mask skip it.

    `gpu_sm90a` (Hopper): two (or one) warpgroups of 64 query rows; Q and
    the K/V stages arrive by TMA (`nvgpu.tma.async.load`, 64-column boxes,
    128-byte swizzle) completing on `nvgpu.mbarrier`s, `num_stages` key
    blocks in flight; S = Q K^T is one `nvvm.wgmma.mma_async` m64nNk16 chain
    per block from shared-memory descriptors; O += P V is a second wgmma
    chain with P kept in registers (the A operand) and V the MN-major
    descriptor operand. The tensor maps of q, k and v are
    extra `!llvm.ptr` parameters (KernelABI.h). The wgmma accumulators are
    LLVM structs whose per-warp layout equals 8-column mma.sync tiles, so
    both variants share the softmax, bias and mask code.

    A spec function of `tilt.attention_backward` (`gpu_bwd_sm80`) becomes
    two kernels with the backward's parameters: `tilt_attention_bwd_dq`
    (grid: query blocks, heads, batch; dq, each row's state and the slope
    gradient's per-block parts) and `tilt_attention_bwd_dkdv` (grid: key
    blocks, kv heads, batch; dk and dv summed over the GQA group, dslopes
    from the parts), both on mma.sync with P recomputed from lse.

    The kernel carries `tilt.config`, `tilt.smem` (dynamic shared memory
    bytes) and `tilt.spec` attributes for the target and the runtime.
  }];
  let dependentDialects = ["mlir::arith::ArithDialect",
                           "mlir::gpu::GPUDialect",
                           "mlir::LLVM::LLVMDialect",
                           "mlir::math::MathDialect",
                           "mlir::memref::MemRefDialect",
                           "mlir::NVVM::NVVMDialect",
                           "mlir::nvgpu::NVGPUDialect",
                           "mlir::scf::SCFDialect",
                           "mlir::vector::VectorDialect"];
}

#endif // TILT_COMPILER_PASSES_TD
