//===- CApi.cpp - C API of the Tilt runtime -------------------------------===//

#include "tilt/Merge.h"
#include "tilt/Runtime.h"
#include "tilt/tilt.h"

#include <cstring>

#include <fmt/format.h>

struct tilt_runtime {
  explicit tilt_runtime(tilt::RuntimeOptions options)
      : runtime(std::move(options)) {}
  tilt::Runtime runtime;
  std::string lastError;
};

namespace {

tilt::TensorRef toTensorRef(const tilt_tensor &t) {
  tilt::TensorRef ref;
  ref.data = t.data;
  ref.rank = t.rank;
  for (int i = 0; i < 4; ++i) {
    ref.shape[i] = t.shape[i];
    ref.strides[i] = t.strides[i];
  }
  return ref;
}

/// "" and fills `out`, or an error naming the bad field.
std::string toSpec(const tilt_spec &c, tilt::AttentionSpec &out) {
  if (c.dtype < TILT_DTYPE_F32 || c.dtype > TILT_DTYPE_BF16)
    return fmt::format("spec.dtype: expected 0 (f32), 1 (f16) or 2 (bf16), "
                       "got {}",
                       c.dtype);
  if (c.bias < TILT_BIAS_NONE || c.bias > TILT_BIAS_ALIBI_POSITIONS)
    return fmt::format("spec.bias: expected 0 (none), 1 (alibi), 2 "
                       "(alibi_symmetric) or 3 (alibi_positions), got {}",
                       c.bias);
  if (c.slopes != TILT_SLOPES_STANDARD && c.slopes != TILT_SLOPES_CUSTOM)
    return fmt::format("spec.slopes: expected 0 (standard) or 1 (custom), got "
                       "{}",
                       c.slopes);
  out = tilt::AttentionSpec();
  out.heads = c.heads;
  out.kvHeads = c.kv_heads;
  out.headDim = c.head_dim;
  out.dtype = tilt::DType(c.dtype);
  if (c.scale != 0)
    out.scale = c.scale;
  out.causal = c.causal != 0;
  if (c.window != 0)
    out.window = c.window;
  out.bias = tilt::BiasKind(c.bias);
  out.slopes = tilt::SlopeSource(c.slopes);
  if (c.max_bias != 0)
    out.maxBias = c.max_bias;
  out.headOffset = c.head_offset;
  out.totalHeads = c.total_heads;
  out.keyPaddingMask = c.key_padding_mask != 0;
  out.varlen = c.varlen != 0;
  out.positionOffsets = c.position_offsets != 0;
  out.pageSize = c.page_size;
  return {};
}

} // namespace

namespace {

tilt::AttentionArgs toArgs(const tilt_attention_args &args) {
  tilt::AttentionArgs a;
  a.q = toTensorRef(args.q);
  a.k = toTensorRef(args.k);
  a.v = toTensorRef(args.v);
  a.o = toTensorRef(args.o);
  a.lse = toTensorRef(args.lse);
  a.slopes = toTensorRef(args.slopes);
  a.keyPaddingMask = toTensorRef(args.key_padding_mask);
  a.cuSeqlensQ = toTensorRef(args.cu_seqlens_q);
  a.cuSeqlensK = toTensorRef(args.cu_seqlens_k);
  a.qOffset = args.q_offset;
  a.kOffset = args.k_offset;
  a.blockTable = toTensorRef(args.block_table);
  a.contextLens = toTensorRef(args.context_lens);
  return a;
}

/// Runs `call` with the converted spec, recording its error on `rt`; no
/// exception leaves the C API.
template <typename Call>
int callRuntime(tilt_runtime *rt, const tilt_spec *spec, const void *args,
                Call &&call) {
  if (!rt)
    return 1;
  try {
    if (!spec || !args) {
      rt->lastError = !spec ? "spec: null pointer" : "args: null pointer";
      return 1;
    }
    tilt::AttentionSpec s;
    if (std::string err = toSpec(*spec, s); !err.empty()) {
      rt->lastError = std::move(err);
      return 1;
    }
    rt->lastError = call(s);
  } catch (const std::exception &e) {
    rt->lastError = fmt::format("internal error: {}", e.what());
  } catch (...) {
    rt->lastError = "internal error: unknown exception";
  }
  return rt->lastError.empty() ? 0 : 1;
}

} // namespace

extern "C" {

int32_t tilt_api_version(void) { return TILT_API_VERSION; }

tilt_runtime *tilt_runtime_create(const char *cache_dir, int threads,
                                  tilt_compiler *compiler_or_null) {
  tilt::RuntimeOptions options;
  if (cache_dir)
    options.cacheDir = cache_dir;
  options.threads = threads > 0 ? threads : 0;
  options.compiler = reinterpret_cast<tilt::KernelCompiler *>(compiler_or_null);
  // Exceptions must not cross the C boundary; the only ones possible here
  // are resource exhaustion (memory, threads).
  try {
    return new tilt_runtime(std::move(options));
  } catch (...) {
    return nullptr;
  }
}

void tilt_runtime_destroy(tilt_runtime *rt) { delete rt; }

int tilt_attention(tilt_runtime *rt, const tilt_spec *spec,
                   const tilt_attention_args *args) {
  return callRuntime(rt, spec, args, [&](const tilt::AttentionSpec &s) {
    return rt->runtime.run(s, toArgs(*args));
  });
}

int tilt_attention_backward(tilt_runtime *rt, const tilt_spec *spec,
                            const tilt_attention_args *args,
                            const tilt_backward_args *grads) {
  if (rt && args && !grads) {
    rt->lastError = "grads: null pointer";
    return 1;
  }
  return callRuntime(rt, spec, args, [&](const tilt::AttentionSpec &s) {
    tilt::BackwardArgs g;
    g.gradO = toTensorRef(grads->grad_o);
    g.gradLse = toTensorRef(grads->grad_lse);
    g.dq = toTensorRef(grads->dq);
    g.dk = toTensorRef(grads->dk);
    g.dv = toTensorRef(grads->dv);
    g.dslopes = toTensorRef(grads->dslopes);
    return rt->runtime.backward(s, toArgs(*args), g);
  });
}

int tilt_merge_states(int dtype, int num_parts, const tilt_tensor *o_parts,
                      const tilt_tensor *lse_parts, tilt_tensor o,
                      tilt_tensor lse, char *error, size_t error_size) {
  std::string err;
  try {
    if (dtype < TILT_DTYPE_F32 || dtype > TILT_DTYPE_BF16)
      err = fmt::format("dtype: expected 0 (f32), 1 (f16) or 2 (bf16), got {}",
                        dtype);
    else if (num_parts < 1 || !o_parts || !lse_parts)
      err = "num_parts: at least one part, with o_parts and lse_parts";
    std::vector<tilt::AttentionState> parts;
    for (int n = 0; err.empty() && n < num_parts; ++n) {
      for (const tilt_tensor *t : {&o_parts[n], &lse_parts[n]})
        if (t->rank < 0 || t->rank > 4)
          err = fmt::format("part {}: rank {} (at most 4)", n + 1, t->rank);
      parts.push_back({toTensorRef(o_parts[n]), toTensorRef(lse_parts[n])});
    }
    for (const tilt_tensor *t : {&o, &lse})
      if (err.empty() && (t->rank < 0 || t->rank > 4))
        err = fmt::format("output: rank {} (at most 4)", t->rank);
    if (err.empty())
      err = tilt::mergeAttentionStates(static_cast<tilt::DType>(dtype), parts,
                                       toTensorRef(o), toTensorRef(lse));
  } catch (const std::exception &e) {
    err = fmt::format("internal error: {}", e.what());
  } catch (...) {
    err = "internal error: unknown exception";
  }
  if (error && error_size > 0) {
    const size_t n = std::min(err.size(), error_size - 1);
    std::memcpy(error, err.data(), n);
    error[n] = '\0';
  }
  return err.empty() ? 0 : 1;
}

const char *tilt_runtime_last_error(tilt_runtime *rt) {
  return rt ? rt->lastError.c_str() : "tilt: null runtime";
}

} // extern "C"
