//===- TiltModule.cpp - tilt._tilt: the runtime for Python tensors --------===//
//
// The extension under the `tilt` package (runtime/python/tilt). Tensors
// arrive through DLPack (nanobind ndarrays), so PyTorch tensors on the CPU
// or a CUDA device are used in place, never copied. One process-wide Runtime
// with the JIT compiler serves every call: kernels come from the package's
// bundle, the disk cache or a compile. The Python layer (tilt/_ops.py)
// checks arguments and names them; this layer checks again what it relies
// on, so nothing passed here can crash the process.
//
//===----------------------------------------------------------------------===//

#include "ToolCompiler.h"

#include "tilt/Cuda.h"
#include "tilt/Merge.h"
#include "tilt/Runtime.h"
#include "tilt/Slopes.h"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <fmt/format.h>

#include <memory>
#include <mutex>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Array = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

/// The process's runtime, made on first use with the options configure()
/// set until then.
struct State {
  std::mutex mutex;
  tilt::RuntimeOptions options;
  std::unique_ptr<tilt::KernelCompiler> compiler;
  std::unique_ptr<tilt::Runtime> runtime;

  tilt::Runtime &get() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!runtime) {
      // The tools' compiler for this process's device (none: the CPU).
      tilt::cuda::DeviceInfo device;
      if (!tilt::cuda::probe(device).empty())
        device = {};
      compiler = tilt::tools::makeToolCompiler(device);
      options.compiler = compiler.get();
      runtime = std::make_unique<tilt::Runtime>(options);
    }
    return *runtime;
  }
};

State &state() {
  static State *s = new State; // never destroyed: kernels outlive atexit
  return *s;
}

[[noreturn]] void bad(const std::string &msg) { throw nb::value_error(msg.c_str()); }

std::optional<tilt::DType> dtypeOf(const nb::dlpack::dtype &t) {
  if (t.lanes != 1)
    return std::nullopt;
  if (t.code == uint8_t(nb::dlpack::dtype_code::Float) && t.bits == 32)
    return tilt::DType::F32;
  if (t.code == uint8_t(nb::dlpack::dtype_code::Float) && t.bits == 16)
    return tilt::DType::F16;
  if (t.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && t.bits == 16)
    return tilt::DType::BF16;
  return std::nullopt;
}

/// A TensorRef of `a`, of rank 1..4, with `bits`-bit elements, on the
/// device of the call; strides passed along when it is not row-major (the
/// runtime takes them for q, k, v, o and the gradients, and names any
/// other tensor that is not row-major).
template <typename A>
tilt::TensorRef ref(const char *name, const A &a, int bits, int deviceType) {
  if (a.ndim() < 1 || a.ndim() > 4)
    bad(fmt::format("{}: rank {} (expected 1 to 4)", name, a.ndim()));
  if (a.dtype().bits != bits || a.dtype().lanes != 1)
    bad(fmt::format("{}: {}-bit elements expected, got {}-bit", name, bits,
                    a.dtype().bits));
  if (a.device_type() != deviceType)
    bad(fmt::format("{}: on another device than q", name));
  tilt::TensorRef t;
  t.data = const_cast<void *>(static_cast<const void *>(a.data()));
  t.rank = int(a.ndim());
  bool rowMajor = true;
  int64_t expect = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    t.shape[i] = int64_t(a.shape(i));
    rowMajor = rowMajor && (a.shape(i) == 1 || a.stride(i) == expect);
    expect *= int64_t(a.shape(i));
  }
  rowMajor = rowMajor || expect == 0; // no element to place
  if (!rowMajor) {
    for (size_t i = 0; i < a.ndim(); ++i)
      t.strides[i] = int64_t(a.stride(i));
    // All-zero strides would read as "absent" (TensorRef).
    if (!t.hasStrides())
      bad(fmt::format("{}: broadcast over every dim (all strides 0); the "
                      "innermost stride must be 1",
                      name));
  }
  if (!t.data) // zero-size tensors: any non-null pointer, never read
    t.data = reinterpret_cast<void *>(uintptr_t(64));
  return t;
}

std::optional<tilt::BiasKind> parseBias(const std::string &s) {
  if (s == "alibi")
    return tilt::BiasKind::Alibi;
  if (s == "alibi_symmetric")
    return tilt::BiasKind::AlibiSymmetric;
  if (s == "alibi_positions")
    return tilt::BiasKind::AlibiPositions;
  if (s == "none")
    return tilt::BiasKind::None;
  return std::nullopt;
}

/// One call's spec and arguments, from what both directions take: q, k, v
/// and the options; the caller adds o and lse (outputs of the forward,
/// inputs of the backward). Dense ([B, H, S, D]) or, with cu_seqlens,
/// packed ([total, H, D]).
struct Call {
  tilt::AttentionSpec spec;
  tilt::AttentionArgs args;
  tilt::Target target = tilt::Target::CPU;
  int bits = 0, dev = 0;
};

Call prepareCall(Array q, Array k, Array v, std::optional<Array> slopes,
                 std::optional<Array> keyPaddingMask,
                 std::optional<Array> cuSeqlensQ,
                 std::optional<Array> cuSeqlensK, bool causal, int64_t window,
                 const std::string &bias, double maxBias, int64_t headOffset,
                 int64_t totalHeads, double scale, int64_t qOffset,
                 int64_t kOffset, uintptr_t stream, bool paged = false) {
  const auto dtype = dtypeOf(q.dtype());
  if (!dtype)
    bad("q: dtype must be float32, float16 or bfloat16");
  for (auto [name, a] : {std::pair{"k", &k}, std::pair{"v", &v}})
    if (dtypeOf(a->dtype()) != dtype)
      bad(fmt::format("{}: dtype differs from q's", name));
  Call c;
  c.dev = q.device_type();
  if (c.dev != nb::device::cpu::value && c.dev != nb::device::cuda::value)
    bad("q: must be a CPU or CUDA tensor");
  if (c.dev == nb::device::cuda::value && q.device_id() != 0)
    bad("q: Tilt runs on CUDA device 0 of the process (select it with "
        "CUDA_VISIBLE_DEVICES)");
  const bool varlen = cuSeqlensQ.has_value();
  if (varlen != cuSeqlensK.has_value())
    bad("cu_seqlens_q and cu_seqlens_k go together");
  const size_t rank = varlen ? 3 : 4;
  if (q.ndim() != rank || k.ndim() != rank)
    bad(fmt::format("q, k: rank {} expected", rank));

  tilt::AttentionSpec &spec = c.spec;
  spec.heads = int64_t(q.shape(1)); // [B, H, S, D] or [total, H, D]
  // A paged cache is [num_pages, page_size, Hkv, D].
  spec.kvHeads = int64_t(k.shape(paged ? 2 : 1));
  if (paged)
    spec.pageSize = int64_t(k.shape(1));
  spec.headDim = int64_t(q.shape(rank - 1));
  spec.dtype = *dtype;
  spec.causal = causal;
  if (window > 0)
    spec.window = window;
  const auto kind = parseBias(bias);
  if (!kind)
    bad("bias: must be alibi, alibi_symmetric, alibi_positions or none");
  spec.bias = *kind;
  spec.slopes =
      slopes ? tilt::SlopeSource::Custom : tilt::SlopeSource::Standard;
  spec.maxBias = maxBias;
  spec.headOffset = headOffset;
  spec.totalHeads = totalHeads;
  if (scale > 0)
    spec.scale = scale;
  spec.keyPaddingMask = keyPaddingMask.has_value();
  spec.varlen = varlen;
  // Position offsets (-1: not given, the bottom-right rule).
  spec.positionOffsets = qOffset >= 0;
  if (std::string err = spec.validate(); !err.empty())
    bad(err);

  c.bits = tilt::byteWidth(*dtype) * 8;
  tilt::AttentionArgs &args = c.args;
  args.q = ref("q", q, c.bits, c.dev);
  args.k = ref("k", k, c.bits, c.dev);
  args.v = ref("v", v, c.bits, c.dev);
  if (slopes)
    args.slopes = ref("slopes", *slopes, 32, c.dev);
  if (keyPaddingMask)
    args.keyPaddingMask = ref("key_padding_mask", *keyPaddingMask, 8, c.dev);
  if (varlen) {
    args.cuSeqlensQ = ref("cu_seqlens_q", *cuSeqlensQ, 32, c.dev);
    args.cuSeqlensK = ref("cu_seqlens_k", *cuSeqlensK, 32, c.dev);
  }
  if (spec.positionOffsets) {
    args.qOffset = qOffset;
    args.kOffset = kOffset;
  }
  args.cudaStream = reinterpret_cast<void *>(stream);
  c.target =
      c.dev == nb::device::cuda::value ? tilt::Target::CUDA : tilt::Target::CPU;
  return c;
}

/// Runs the call into `o` and `lse`, the GIL released; a runtime error
/// becomes a ValueError.
void runInto(Call &c, OutArray o, OutArray lse) {
  c.args.o = ref("out", o, c.bits, c.dev);
  c.args.lse = ref("lse", lse, 32, c.dev);
  tilt::Runtime &runtime = state().get();
  std::string err;
  {
    nb::gil_scoped_release release;
    err = runtime.run(c.spec, c.args, c.target);
  }
  if (!err.empty())
    throw nb::value_error(err.c_str());
}

/// Runs one attention into `o` and `lse`.
void forward(Array q, Array k, Array v, OutArray o, OutArray lse,
             std::optional<Array> slopes, std::optional<Array> keyPaddingMask,
             std::optional<Array> cuSeqlensQ, std::optional<Array> cuSeqlensK,
             bool causal, int64_t window, const std::string &bias,
             double maxBias, int64_t headOffset, int64_t totalHeads,
             double scale, int64_t qOffset, int64_t kOffset, uintptr_t stream) {
  Call c = prepareCall(q, k, v, slopes, keyPaddingMask, cuSeqlensQ, cuSeqlensK,
                       causal, window, bias, maxBias, headOffset, totalHeads,
                       scale, qOffset, kOffset, stream);
  runInto(c, o, lse);
}

/// Runs one attention over a paged KV cache into `o` and `lse` (CPU).
void forwardPaged(Array q, Array kCache, Array vCache, OutArray o, OutArray lse,
                  Array blockTable, Array contextLens,
                  std::optional<Array> slopes, bool causal, int64_t window,
                  const std::string &bias, double maxBias, int64_t headOffset,
                  int64_t totalHeads, double scale) {
  Call c = prepareCall(q, kCache, vCache, slopes, std::nullopt, std::nullopt,
                       std::nullopt, causal, window, bias, maxBias, headOffset,
                       totalHeads, scale, -1, -1, 0, /*paged=*/true);
  c.args.blockTable = ref("block_table", blockTable, 32, c.dev);
  c.args.contextLens = ref("context_lens", contextLens, 32, c.dev);
  runInto(c, o, lse);
}

/// The gradients of one attention (CPU, or CUDA on `stream`): dq, dk, dv and,
/// for custom slopes, dslopes (f32, shaped like them) from the forward's o and
/// lse and the upstream gradient.
void backward(Array q, Array k, Array v, Array o, Array lse, Array gradO,
              std::optional<Array> gradLse, OutArray dq, OutArray dk,
              OutArray dv, std::optional<OutArray> dslopes,
              std::optional<Array> slopes, std::optional<Array> keyPaddingMask,
              std::optional<Array> cuSeqlensQ, std::optional<Array> cuSeqlensK,
              bool causal, int64_t window, const std::string &bias,
              double maxBias, int64_t headOffset, int64_t totalHeads,
              double scale, int64_t qOffset, int64_t kOffset,
              uintptr_t stream) {
  Call c = prepareCall(q, k, v, slopes, keyPaddingMask, cuSeqlensQ, cuSeqlensK,
                       causal, window, bias, maxBias, headOffset, totalHeads,
                       scale, qOffset, kOffset, stream);
  c.args.o = ref("o", o, c.bits, c.dev);
  c.args.lse = ref("lse", lse, 32, c.dev);
  tilt::BackwardArgs grads;
  grads.gradO = ref("grad_o", gradO, c.bits, c.dev);
  if (gradLse)
    grads.gradLse = ref("grad_lse", *gradLse, 32, c.dev);
  grads.dq = ref("dq", dq, c.bits, c.dev);
  grads.dk = ref("dk", dk, c.bits, c.dev);
  grads.dv = ref("dv", dv, c.bits, c.dev);
  if (dslopes)
    grads.dslopes = ref("dslopes", *dslopes, 32, c.dev);
  tilt::Runtime &runtime = state().get();
  std::string err;
  {
    nb::gil_scoped_release release;
    err = runtime.backward(c.spec, c.args, grads, c.target);
  }
  if (!err.empty())
    throw nb::value_error(err.c_str());
}

/// Merges CPU partial results (o_n [..., D] in one dtype, lse_n f32) into
/// `o` and `lse`.
void merge(const std::vector<Array> &os, const std::vector<Array> &lses,
           OutArray o, OutArray lse) {
  if (os.empty() || os.size() != lses.size())
    bad("merge_states: give as many lse tensors as outputs, at least one");
  const auto dtype = dtypeOf(o.dtype());
  if (!dtype)
    bad("outputs: dtype must be float32, float16 or bfloat16");
  const int bits = tilt::byteWidth(*dtype) * 8;
  const int dev = nb::device::cpu::value;
  std::vector<tilt::AttentionState> parts;
  for (size_t n = 0; n < os.size(); ++n) {
    if (dtypeOf(os[n].dtype()) != dtype)
      bad(fmt::format("outputs[{}]: dtype differs from outputs[0]'s", n));
    const std::string on = fmt::format("outputs[{}]", n),
                      ln = fmt::format("lses[{}]", n);
    parts.push_back({ref(on.c_str(), os[n], bits, dev),
                     ref(ln.c_str(), lses[n], 32, dev)});
  }
  const tilt::TensorRef ro = ref("out", o, bits, dev),
                        rl = ref("lse", lse, 32, dev);
  std::string err;
  {
    nb::gil_scoped_release release;
    err = tilt::mergeAttentionStates(*dtype, parts, ro, rl);
  }
  if (!err.empty())
    throw nb::value_error(err.c_str());
}

} // namespace

NB_MODULE(_tilt, m) {
  m.def("merge", &merge, "outputs"_a, "lses"_a, "out"_a, "lse"_a);
  m.doc() = "Tilt's runtime and JIT compiler (use the tilt package's API)";
  m.def("forward", &forward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a,
        "slopes"_a.none(), "key_padding_mask"_a.none(), "cu_seqlens_q"_a.none(),
        "cu_seqlens_k"_a.none(), "causal"_a, "window"_a, "bias"_a, "max_bias"_a,
        "head_offset"_a, "total_heads"_a, "scale"_a, "q_offset"_a, "k_offset"_a,
        "stream"_a);
  m.def("forward_paged", &forwardPaged, "q"_a, "k_cache"_a, "v_cache"_a,
        "out"_a, "lse"_a, "block_table"_a, "context_lens"_a, "slopes"_a.none(),
        "causal"_a, "window"_a, "bias"_a, "max_bias"_a, "head_offset"_a,
        "total_heads"_a, "scale"_a);
  m.def("backward", &backward, "q"_a, "k"_a, "v"_a, "o"_a, "lse"_a, "grad_o"_a,
        "grad_lse"_a.none(), "dq"_a, "dk"_a, "dv"_a, "dslopes"_a.none(),
        "slopes"_a.none(), "key_padding_mask"_a.none(), "cu_seqlens_q"_a.none(),
        "cu_seqlens_k"_a.none(), "causal"_a, "window"_a, "bias"_a, "max_bias"_a,
        "head_offset"_a, "total_heads"_a, "scale"_a, "q_offset"_a, "k_offset"_a,
        "stream"_a);
  m.def(
      "configure",
      [](const std::string &kernelsDir, const std::string &cacheDir,
         int threads) {
        State &s = state();
        std::lock_guard<std::mutex> lock(s.mutex);
        if (s.runtime)
          throw nb::value_error("configure: the runtime is already running "
                                "(configure before the first call)");
        s.options.kernelsDir = kernelsDir;
        s.options.cacheDir = cacheDir;
        s.options.threads = threads;
      },
      "kernels_dir"_a, "cache_dir"_a, "threads"_a);
  m.def(
      "standard_slopes",
      [](int64_t totalHeads, double maxBias) {
        if (totalHeads < 1 || totalHeads > tilt::kMaxHeads)
          throw nb::value_error(fmt::format("heads: must be in [1, {}], got {}",
                                            tilt::kMaxHeads, totalHeads)
                                    .c_str());
        if (!(maxBias > 0))
          throw nb::value_error("max_bias: must be positive");
        return tilt::standardSlopes(totalHeads, maxBias);
      },
      "heads"_a, "max_bias"_a);
  m.def("stats", [] {
    const tilt::RunStats &s = state().get().stats();
    nb::dict d;
    d["compiles"] = s.compiles;
    d["bundle_hits"] = s.bundleHits;
    d["disk_hits"] = s.diskHits;
    d["memory_hits"] = s.memoryHits;
    d["bundle"] = state().get().bundleStatus();
    d["cache_dir"] = state().get().cacheDir();
    return d;
  });
}
