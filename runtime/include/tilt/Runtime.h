//===- Runtime.h - Tilt's small runtime -------------------------*- C++ -*-===//
//
// Finds the kernel for a spec (memory cache -> bundle -> disk cache -> the
// compiler, on a miss) and launches it over batch x heads x query blocks: on
// its own thread pool (Target::CPU) or as one grid on the current CUDA device
// (Target::CUDA, see tilt/Cuda.h). No LLVM/MLIR dependency: the compiler is
// reached only through the KernelCompiler interface, so a process that only
// loads cached or bundled artifacts never links it. No CUDA dependency
// either: the driver is loaded when a CUDA call first needs it.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_RUNTIME_H
#define TILT_RUNTIME_H

#include "tilt/KernelCompiler.h"
#include "tilt/Spec.h"

#include <cstdint>
#include <memory>
#include <string>

namespace tilt {

/// A tensor owned by the caller. Elements of q/k/v/o are of the spec's
/// dtype (f16 and bf16 as 16-bit storage); lse and slopes are f32, the key
/// padding mask uint8 (0 = padded), cu_seqlens int32. For Target::CPU `data`
/// is a host pointer, for Target::CUDA a device pointer (every tensor,
/// cu_seqlens included).
///
/// Row-major unless `strides` are given (in elements, not bytes). Strides
/// are taken by the kernels' data tensors -- q, k, v, o and the backward's
/// grad_o, dq, dk, dv -- so that [B, S, H, D] tensors (a view [B, H, S, D]
/// with strides {S*H*D, D, H*D, 1}) and slices of a fused QKV tensor run in
/// place: the innermost stride must be 1, the others >= 0, and an output's
/// elements must not overlap (on Target::CUDA, whose kernels copy them in
/// 16-byte pieces, their addresses and strides must also be multiples of
/// 16 bytes). Every other
/// tensor must be row-major (strides absent, or equal to the row-major
/// ones). All-zero strides (the default) mean "absent": a given innermost
/// stride is never 0.
struct TensorRef {
  void *data = nullptr;
  int rank = 0;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t strides[4] = {0, 0, 0, 0};

  TensorRef() = default;
  TensorRef(void *data, std::initializer_list<int64_t> dims);
  /// The same tensor with element strides (one per dim).
  TensorRef withStrides(std::initializer_list<int64_t> elementStrides) const;
  bool present() const { return data != nullptr; }
  /// Strides were given (they may still equal the row-major ones).
  bool hasStrides() const;
  /// The element stride of dim `i`: the given one, else the row-major one.
  int64_t stride(int i) const;
  /// Row-major: no strides, or strides that agree with it on every dim of
  /// more than one element.
  bool rowMajor() const;
  int64_t numElements() const;
  std::string shapeString() const;  ///< "[1, 12, 128, 64]"
  std::string strideString() const; ///< "[98304, 64, 768, 1]"
};

struct AttentionArgs {
  TensorRef q, k, v, o;
  TensorRef lse;            ///< optional output, f32 [B,H,Sq] ([H,totalQ] varlen)
  TensorRef slopes;         ///< custom slopes, f32 [H] or [B,H], finite
                            ///< (checked on the CPU target)
  TensorRef keyPaddingMask; ///< uint8 [B,Sk]
  /// int32 [B+1], varlen only. Rows of q (k) past cu_seqlens_q[B]
  /// (cu_seqlens_k[B]) belong to no sequence (padding to a fixed token
  /// count): no kernel reads them (they may hold anything, NaN included)
  /// and their o, lse (dq; dk, dv) are left as the caller's buffers hold
  /// them.
  TensorRef cuSeqlensQ;
  TensorRef cuSeqlensK;
  /// Paged KV cache (spec.pageSize != 0; ALIBI.md): k and v are the caches
  /// [num_pages, page_size, Hkv, D]; the block table int32 [B, max_pages]
  /// names each sequence's pages in order, context_lens int32 [B] its keys.
  /// Entries past a sequence's ceil(context_lens / page_size) pages are
  /// never read; those it uses must be in [0, num_pages).
  TensorRef blockTable;
  TensorRef contextLens;
  /// Position offsets (spec.positionOffsets only; ALIBI.md): query row i and
  /// key j sit at the absolute positions qOffset + i and kOffset + j. Each
  /// >= 0, and offset + sequence length <= 2^24 (kMaxPosition).
  int64_t qOffset = 0, kOffset = 0;
  /// Target::CUDA: the stream (a CUstream) the kernel is enqueued on, e.g.
  /// PyTorch's current stream; null: the default stream. Ignored on the CPU.
  void *cudaStream = nullptr;
};

/// The backward's own tensors (ALIBI.md "Backward"); the forward's q, k, v,
/// o and lse (required here), slopes, mask, cu_seqlens and offsets come in
/// AttentionArgs as for run().
struct BackwardArgs {
  TensorRef gradO;      ///< dO, the shape of o, the spec's dtype
  /// Optional: the upstream gradient of lse (f32, lse's shape), for losses
  /// that use lse (merging context-parallel chunks, z-losses).
  TensorRef gradLse;
  TensorRef dq, dk, dv; ///< outputs: the shapes and dtype of q, k, v
  /// Optional output with custom slopes: f32 shaped like the slopes ([H] or
  /// [B,H]), the gradient of the loss by each slope (trainable slopes).
  TensorRef dslopes;
};

/// Counters since the Runtime was created (or since resetStats()).
/// How a CPU backward's work is cut (KernelABI.h): two passes (the dq of
/// every (batch, head), then every key block's dk/dv; S and dP computed in
/// both), or one pass per (batch, kv head) doing all three (five products
/// instead of seven, parallel over B x Hkv only).
enum class BackwardSchedule { Auto, TwoPass, Fused };

struct RunStats {
  int64_t compiles = 0;
  int64_t diskHits = 0;
  int64_t memoryHits = 0;
  int64_t bundleHits = 0; ///< kernels loaded from the ahead-of-time bundle
  /// Disk entries found corrupt, truncated or stale, removed (then rebuilt).
  int64_t diskRejected = 0;
  double seconds = 0; ///< wall time spent inside run(), compiles included
  /// The kernel the last successful run() or backward() launched: its
  /// variant and blocks (and, on CUDA, warps and stages), whether the
  /// caller, the bundle's tuning database or the default chose them.
  TileConfig lastKernel;
  /// The schedule the last CPU backward() ran (Auto: none yet).
  BackwardSchedule lastBackwardSchedule = BackwardSchedule::Auto;
};

struct RuntimeOptions {
  /// Disk cache directory. Empty: $TILT_CACHE_DIR, else
  /// $XDG_CACHE_HOME/tilt, else $HOME/.cache/tilt. Created with mode 0700 if
  /// missing. It holds code the runtime executes, so a directory owned by
  /// another user or writable by group or others is refused: run() and
  /// prepare() then fail with an error naming it until it is fixed.
  std::string cacheDir;
  int threads = 0;                    ///< 0: every core
  KernelCompiler *compiler = nullptr; ///< not owned; null: cached only
  /// Disk cache size cap; each write evicts the least recently used entries
  /// beyond it. 0: $TILT_CACHE_MAX_BYTES (bytes, or with a K, M or G
  /// suffix), else 1 GiB.
  uint64_t cacheMaxBytes = 0;
  /// An ahead-of-time kernel bundle (KernelBundle.h, built from kernels/).
  /// The tuning database of the bundle class that serves this CPU picks the tile configuration of run() calls that
  /// give none (nearest-bucket rule of TuningDb.h); its kernels load without
  /// compiling. Empty: no bundle, the compiler's default configurations.
  std::string kernelsDir = {};
  /// Split-KV for the decode family: the chunks each (batch, kv head)'s
  /// keys are cut into, their partial results merged exactly. 0 (or less):
  /// by shape (TilePolicy.h's decodeSplits rule: only where the items would
  /// leave threads idle or uneven); 1: never; N > 1: N (at most
  /// kDecodeMaxSplits). Either way the parts are held to 256 MiB.
  int decodeSplits = 0;
  /// The CPU backward's schedule (KernelABI.h): Auto by shape (TilePolicy.h's
  /// fusedBackward rule), or always one of the two -- Fused only where its
  /// per-item heap stays within kFusedBackwardMaxHeapBytes (else two passes;
  /// RunStats::lastBackwardSchedule says which ran).
  BackwardSchedule backwardSchedule = BackwardSchedule::Auto;
};

/// Calls may come from several threads: they are serialized, since one
/// launch already spreads over the whole thread pool.
class Runtime {
public:
  explicit Runtime(RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime &) = delete;
  Runtime &operator=(const Runtime &) = delete;

  /// Runs one attention. Returns "" or a one-line error naming the bad
  /// argument and what was expected; on error nothing is written to `o`.
  ///
  /// Target::CUDA: the tensors are device memory of device 0 (tilt/Cuda.h);
  /// f16 and bf16 only. The kernel is enqueued on the default stream and
  /// run() returns without waiting for it (cuda::synchronize() does; errors
  /// of the kernel itself surface there). Varlen checks copy cu_seqlens to
  /// the host, which waits for earlier work on the default stream. Without a
  /// driver or a device, run() returns the driver's one-line error. With no
  /// configuration the variant follows the device (TilePolicy.h's
  /// defaultGpuVariant: gpu_sm90a on sm_90 for f16/bf16 with head_dim 64 or
  /// 128, else gpu_sm80) and the block sizes the policy's defaults; paged
  /// caches and dense calls with Sq <= kDecodeMaxSq (not varlen, not
  /// alibi_positions) take the decode family, gpu_decode_sm80, which splits
  /// the keys across CTAs and merges the parts with a second kernel where
  /// the call would not fill the device. Paged calls copy the block table
  /// and context lengths to the host for the checks (a blocking copy each
  /// call). The tuning database is for the CPU only.
  std::string run(const AttentionSpec &spec, const AttentionArgs &args,
                  Target target = Target::CPU,
                  const TileConfig &config = TileConfig());

  /// Computes dq, dk, dv (and dslopes) of the attention `args` describes,
  /// from its output o and lse (as run() wrote them) and the upstream
  /// gradient. Deterministic: the same call gives the same bits on any
  /// thread count. dk and dv of a kv head sum over its query heads.
  /// `config`, when given, must be a backward variant of the target:
  /// cpu_bwd_avx2, cpu_bwd_avx512 or cpu_bwd_avx512bf16 (bf16) on the CPU
  /// (by default the best the CPU has, TilePolicy.h), gpu_bwd_sm80 on CUDA (two
  /// kernels enqueued on args.cudaStream, f16/bf16;
  /// deterministic too: no atomics). Returns "" or a
  /// one-line error naming the bad argument; on error no output is written
  /// (on CUDA, should the second kernel's launch fail after the first's
  /// succeeded, dq has been written).
  std::string backward(const AttentionSpec &spec, const AttentionArgs &args,
                       const BackwardArgs &grads, Target target = Target::CPU,
                       const TileConfig &config = TileConfig());

  /// Makes the kernel for (spec, config, target) resident without running
  /// it; "" or an error. Used by benchmarks to time JIT latencies. It knows
  /// no query length: with no configuration a dense spec gets the prefill
  /// kernel (name the decode variant to prepare that one), a paged one the
  /// decode kernel. run() picks by the call's query length, so a paged
  /// chunked prefill (Sq > 16) or a short one whose query block run()
  /// fits to Sq (TilePolicy's fitQueryBlock) runs another kernel: prepare
  /// that configuration by name to have it resident.
  std::string prepare(const AttentionSpec &spec, Target target = Target::CPU,
                      const TileConfig &config = TileConfig());

  /// Drops loaded kernels (the disk cache stays).
  void clearMemoryCache();
  RunStats stats() const; ///< a copy, taken between calls
  void resetStats();
  const std::string &cacheDir() const;
  /// Which CPU class of the kernel bundle serves this CPU, or why none does
  /// (no bundle, none of its classes runs here), in one line.
  const std::string &bundleStatus() const;
  uint64_t cacheMaxBytes() const;
  int threads() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace tilt

#endif // TILT_RUNTIME_H
