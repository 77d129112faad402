/*===- tilt.h - C API of the Tilt runtime -------------------------*- C -*-===*\
|*                                                                            *|
|* A small C surface over tilt::Runtime for bindings (Python ctypes, Rust,    *|
|* ...): opaque handles, plain structs, int status plus a last-error string.  *|
|*                                                                            *|
|* Example:                                                                   *|
|*   tilt_compiler *jit = tilt_compiler_create(NULL, NULL, 0);                *|
|*   tilt_runtime *rt = tilt_runtime_create(NULL, 0, jit);                    *|
|*   tilt_spec spec = {0};                                                    *|
|*   spec.heads = 12; spec.kv_heads = 12; spec.head_dim = 64;                 *|
|*   spec.bias = TILT_BIAS_ALIBI; spec.causal = 1;                            *|
|*   tilt_attention_args args = {0};                                          *|
|*   args.q = (tilt_tensor){q, 4, {1, 12, 128, 64}};  ... k, v, o ...         *|
|*   if (tilt_attention(rt, &spec, &args) != 0)                               *|
|*     fprintf(stderr, "%s\n", tilt_runtime_last_error(rt));                  *|
|*   tilt_runtime_destroy(rt);                                                *|
|*   tilt_compiler_destroy(jit);                                              *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#ifndef TILT_TILT_H
#define TILT_TILT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The layout version of this header's structs. 2: tilt_tensor gained
 *  `strides` (32 more bytes), which moved every later field of the args
 *  structs: code built against an earlier header must be rebuilt. */
#define TILT_API_VERSION 2

/** TILT_API_VERSION of the header the library was built with: a binding
 *  that lays the structs out itself (ctypes, Rust) checks it at load time. */
int32_t tilt_api_version(void);

/** A tilt::Runtime: kernel caches and a thread pool. */
typedef struct tilt_runtime tilt_runtime;

/** A tilt::KernelCompiler: Tilt's JIT compiler, created and freed by the
 *  functions below, which the compiler library (TiltCompiler) defines. A
 *  program that only loads cached or bundled kernels links the runtime alone
 *  and passes NULL where a compiler is asked for. */
typedef struct tilt_compiler tilt_compiler;

/* Values of tilt_spec's enumerated fields. */
enum { TILT_DTYPE_F32 = 0, TILT_DTYPE_F16 = 1, TILT_DTYPE_BF16 = 2 };
enum {
  TILT_BIAS_NONE = 0,
  TILT_BIAS_ALIBI = 1,
  TILT_BIAS_ALIBI_SYMMETRIC = 2,
  TILT_BIAS_ALIBI_POSITIONS = 3
};
enum { TILT_SLOPES_STANDARD = 0, TILT_SLOPES_CUSTOM = 1 };

/** Mirrors tilt::AttentionSpec (see ALIBI.md). Zero means "default" for
 *  scale (1/sqrt(head_dim)), window (none) and max_bias (8), so a zeroed
 *  struct with heads, kv_heads and head_dim set is plain attention. */
typedef struct tilt_spec {
  int64_t heads;            /**< query heads H (local to this rank) */
  int64_t kv_heads;         /**< key/value heads, dividing H */
  int64_t head_dim;         /**< D */
  int32_t dtype;            /**< TILT_DTYPE_* */
  int32_t causal;           /**< nonzero: causal mask */
  double scale;             /**< 0: 1/sqrt(D) */
  int64_t window;           /**< 0: no sliding window */
  int32_t bias;             /**< TILT_BIAS_* */
  int32_t slopes;           /**< TILT_SLOPES_* */
  double max_bias;          /**< 0: 8 */
  int64_t head_offset;      /**< first head of this rank (standard slopes) */
  int64_t total_heads;      /**< heads of the whole model; 0: heads */
  int32_t key_padding_mask; /**< nonzero: a [B, Sk] mask is passed */
  int32_t varlen;           /**< nonzero: packed tensors with cu_seqlens */
  int32_t position_offsets; /**< nonzero: q_offset/k_offset give positions */
  /** 0: dense k/v. Else k/v are a paged KV cache [num_pages, page_size, Hkv,
   *  D] (a power of two from 8 to 256) read through block_table and
   *  context_lens. */
  int64_t page_size;
} tilt_spec;

/** A tensor owned by the caller; data == NULL and rank == 0 mean "not
 *  given". Element types are those of tilt::TensorRef. Row-major unless
 *  `strides` are given (elements, one per dim; all zero: row-major): the
 *  CPU target takes strided q, k, v, o (and grad_o, dq, dk, dv) with a unit
 *  innermost stride, e.g. [B, S, H, D] tensors viewed as [B, H, S, D]; see
 *  tilt::TensorRef for the rules. */
typedef struct tilt_tensor {
  void *data;
  int32_t rank;
  int64_t shape[4];
  int64_t strides[4];
} tilt_tensor;

/** The tensors of one attention; the optional ones may stay zeroed. */
typedef struct tilt_attention_args {
  tilt_tensor q, k, v, o;
  tilt_tensor lse;              /**< optional output, f32 */
  tilt_tensor slopes;           /**< custom slopes, f32 [H] or [B, H] */
  tilt_tensor key_padding_mask; /**< uint8 [B, Sk] */
  tilt_tensor cu_seqlens_q;     /**< int32 [B+1], varlen only */
  tilt_tensor cu_seqlens_k;
  /** With spec.position_offsets: query row i and key j sit at the absolute
   *  positions q_offset + i and k_offset + j (context parallelism). */
  int64_t q_offset, k_offset;
  /** With spec.page_size: int32 [B, max_pages] page indices and int32 [B]
   *  context lengths (ALIBI.md, paged KV). */
  tilt_tensor block_table;
  tilt_tensor context_lens;
} tilt_attention_args;

/** The backward's own tensors (ALIBI.md "Backward"). */
typedef struct tilt_backward_args {
  tilt_tensor grad_o;     /**< dO: o's shape, the spec's dtype */
  tilt_tensor grad_lse;   /**< optional: lse's upstream gradient, f32 */
  tilt_tensor dq, dk, dv; /**< outputs: q's, k's and v's shapes and dtype */
  /** Optional output with custom slopes: f32 shaped like the slopes, the
   *  gradient of trainable slopes. */
  tilt_tensor dslopes;
} tilt_backward_args;

/** Creates the JIT compiler. cpu_class NULL or "": code for this machine's
 *  ISA class (after $TILT_CPU_CLASS); else one of "x86-64-v3", "x86-64-v4",
 *  "x86-64-v4-bf16", "x86-64-v4-amx". Returns NULL on a bad cpu_class, with
 *  a one-line reason in error (when error_size > 0; always NUL-terminated).
 *  Defined in the compiler library. */
tilt_compiler *tilt_compiler_create(const char *cpu_class, char *error,
                                    size_t error_size);

/** Frees a compiler created by tilt_compiler_create(); NULL is allowed. The
 *  runtimes using it must be destroyed first. */
void tilt_compiler_destroy(tilt_compiler *compiler);

/** Creates a runtime. cache_dir NULL or "": $TILT_CACHE_DIR, else
 *  $XDG_CACHE_HOME/tilt, else $HOME/.cache/tilt. threads <= 0: every core.
 *  compiler_or_null: builds kernels missing from the caches; it must outlive
 *  the runtime. Returns NULL only when out of resources. */
tilt_runtime *tilt_runtime_create(const char *cache_dir, int threads,
                                  tilt_compiler *compiler_or_null);

/** Frees the runtime and unloads its kernels; NULL is allowed. */
void tilt_runtime_destroy(tilt_runtime *rt);

/** Runs one attention on the CPU. Returns 0, or nonzero with the reason in
 *  tilt_runtime_last_error(); on error nothing is written to the outputs. */
int tilt_attention(tilt_runtime *rt, const tilt_spec *spec,
                   const tilt_attention_args *args);

/** The gradients of one attention on the CPU: `args` as for
 *  tilt_attention() with o and lse holding what the forward wrote (lse is
 *  required). Deterministic. Returns 0, or nonzero with the reason in
 *  tilt_runtime_last_error(); on error nothing is written to the outputs. */
int tilt_attention_backward(tilt_runtime *rt, const tilt_spec *spec,
                            const tilt_attention_args *args,
                            const tilt_backward_args *grads);

/** The one-line error of rt's last failed call, "" after a success. Valid
 *  until the next call on rt; calls that read it must not overlap with other
 *  calls on the same runtime. */
const char *tilt_runtime_last_error(tilt_runtime *rt);

/** Merges partial results over disjoint key sets (context parallelism,
 *  split-KV): lse = log(sum exp(lse_n)), o = sum exp(lse_n - lse) * o_n;
 *  parts with lse_n = -inf count for nothing, rows where all are -inf give
 *  o = 0, lse = -inf. o tensors are in `dtype` (TILT_DTYPE_*), [..., D];
 *  lse tensors float32 of o's shape without D. o and lse may alias the first
 *  part's. Returns 0, or nonzero with a one-line reason in error (when
 *  error_size > 0) and nothing written. */
int tilt_merge_states(int dtype, int num_parts, const tilt_tensor *o_parts,
                      const tilt_tensor *lse_parts, tilt_tensor o,
                      tilt_tensor lse, char *error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* TILT_TILT_H */
