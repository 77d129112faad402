//===- CudaKernel.cpp - A loaded CUDA kernel artifact ---------------------===//

#include "CudaKernel.h"

#include "CudaDriver.h"
#include "tilt/Artifacts.h"
#include "tilt/KernelABI.h"
#include "tilt/TilePolicy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <functional>

namespace tilt::detail {

namespace {

constexpr int64_t kDefaultSmemLimit = 48 * 1024; ///< without opting in

} // namespace

bool cubinRunsOn(std::string_view arch, int ccMajor, int ccMinor) {
  if (arch == "sm_80")
    return ccMajor == 8;
  if (arch == "sm_90a")
    return ccMajor == 9 && ccMinor == 0;
  return false;
}

bool artifactRunsOn(std::string_view arch, int ccMajor, int ccMinor) {
  // sm_80 PTX JIT-compiles for any later architecture; sm_90a PTX uses
  // features that exist on sm_90 only.
  if (arch == "sm_80")
    return ccMajor >= 8;
  return cubinRunsOn(arch, ccMajor, ccMinor);
}

} // namespace tilt::detail

namespace tilt::cuda {

std::string defaultVariant(const AttentionSpec &spec, const DeviceInfo &device,
                           std::string &variant) {
  if (device.ccMajor < 8)
    return fmt::format("target cuda: device {} is {}; Tilt's GPU kernels need "
                       "sm_80 or newer",
                       device.name, device.arch);
  // sm_90a kernels run on sm_90 only (KernelABI.h).
  const bool hopper = device.ccMajor == 9 && device.ccMinor == 0;
  variant =
      std::string(toString(defaultGpuVariant(spec, hopper ? "sm_90a" : "sm_80")));
  return {};
}

} // namespace tilt::cuda

namespace tilt::detail {

namespace {

/// Appends memref descriptors (KernelABI.h) to a KernelParams.
struct ParamPacker {
  KernelParams &out;

  void push(uint64_t v) { out.values[out.count++] = v; }
  void memref(const void *data, int rank, const int64_t *shape,
              const int64_t *strides) {
    const auto ptr = uint64_t(reinterpret_cast<uintptr_t>(data));
    push(ptr); // allocated
    push(ptr); // aligned
    push(0);   // offset
    for (int i = 0; i < rank; ++i)
      push(uint64_t(shape[i]));
    for (int i = 0; i < rank; ++i)
      push(uint64_t(strides[i]));
  }
  /// Row-major, of any rank up to 5.
  void contiguous(const void *data, int rank, const int64_t *shape) {
    int64_t strides[5], stride = 1;
    for (int i = rank - 1; i >= 0; --i) {
      strides[i] = stride;
      stride *= shape[i];
    }
    memref(data, rank, shape, strides);
  }
  void contiguous(const TensorRef &t) { contiguous(t.data, t.rank, t.shape); }
  /// Through its strides (the row-major ones when it has none).
  void strided(const TensorRef &t) {
    int64_t strides[4];
    for (int i = 0; i < t.rank; ++i)
      strides[i] = t.stride(i);
    memref(t.data, t.rank, t.shape, strides);
  }
  /// gpu_decode_sm80's parts: [S] + o's shape, [S] + lse's shape.
  void parts(const AttentionArgs &args, const DecodeParts &p) {
    for (auto [data, like] : {std::pair{p.o, &args.o}, {p.lse, &args.lse}}) {
      int64_t shape[5] = {p.splits};
      std::copy_n(like->shape, like->rank, shape + 1);
      contiguous(data, like->rank + 1, shape);
    }
  }
  void finish() {
    for (int i = 0; i < out.count; ++i)
      out.pointers[i] = &out.values[i];
  }
};

} // namespace

void packMergeParams(const AttentionSpec &, const AttentionArgs &args,
                     const DecodeParts &parts, KernelParams &out) {
  out.count = 0;
  ParamPacker p{out};
  p.parts(args, parts);
  p.strided(args.o);
  p.contiguous(args.lse);
  p.finish();
}

void packKernelParams(const AttentionSpec &spec, const AttentionArgs &args,
                      int64_t batch, const uint64_t *tmaMaps, int numTma,
                      KernelParams &out, const DecodeParts *parts) {
  out.count = 0;
  ParamPacker packer{out};
  auto push = [&](uint64_t v) { packer.push(v); };
  auto memref = [&](const void *data, int rank, const int64_t *shape,
                    const int64_t *strides) {
    packer.memref(data, rank, shape, strides);
  };
  auto contiguous = [&](const TensorRef &t) { packer.contiguous(t); };
  for (const TensorRef *t : {&args.q, &args.k, &args.v, &args.o})
    packer.strided(*t);
  contiguous(args.lse);
  if (spec.hasAlibi() && spec.slopes == SlopeSource::Custom) {
    // As on the CPU: [H] slopes are a [B, H] broadcast with batch stride 0.
    const int64_t shape[2] = {batch, spec.heads};
    const int64_t strides[2] = {args.slopes.rank == 1 ? 0 : spec.heads, 1};
    memref(args.slopes.data, 2, shape, strides);
  }
  if (spec.keyPaddingMask)
    contiguous(args.keyPaddingMask);
  if (spec.varlen) {
    contiguous(args.cuSeqlensQ);
    contiguous(args.cuSeqlensK);
  }
  if (spec.pageSize) {
    contiguous(args.blockTable);
    contiguous(args.contextLens);
  }
  if (parts)
    packer.parts(args, *parts);
  if (spec.positionOffsets) {
    push(uint64_t(args.qOffset));
    push(uint64_t(args.kOffset));
  }
  for (int i = 0; i < numTma; ++i)
    push(tmaMaps[i]);
  packer.finish();
}

void packBackwardParams(const AttentionSpec &spec, const AttentionArgs &args,
                        const BackwardArgs &grads, int64_t batch,
                        const BackwardScratch &scratch, KernelParams &out) {
  out.count = 0;
  ParamPacker packer{out};
  for (const TensorRef *t : {&args.q, &args.k, &args.v, &args.o, &grads.gradO})
    packer.strided(*t);
  packer.contiguous(args.lse);
  packer.contiguous(grads.gradLse);
  for (const TensorRef *t : {&grads.dq, &grads.dk, &grads.dv})
    packer.strided(*t);
  int64_t state[4] = {0, 0, 0, 4};
  std::copy_n(args.lse.shape, args.lse.rank, state);
  state[args.lse.rank] = 4;
  packer.contiguous(scratch.rowState, args.lse.rank + 1, state);
  const bool slopes = spec.hasAlibi() && spec.slopes == SlopeSource::Custom;
  if (slopes) {
    const int64_t shape[2] = {batch, spec.heads};
    const int64_t strides[2] = {args.slopes.rank == 1 ? 0 : spec.heads, 1};
    packer.memref(args.slopes.data, 2, shape, strides);
    const int64_t rows[2] = {args.slopes.rank == 1 ? 1 : batch, spec.heads};
    packer.contiguous(grads.dslopes.data, 2, rows);
  }
  if (spec.keyPaddingMask)
    packer.contiguous(args.keyPaddingMask);
  if (spec.varlen) {
    packer.contiguous(args.cuSeqlensQ);
    packer.contiguous(args.cuSeqlensK);
  }
  if (slopes) {
    const int64_t shape[3] = {batch, spec.heads, scratch.queryBlocks};
    packer.contiguous(scratch.parts, 3, shape);
  }
  if (spec.positionOffsets) {
    packer.push(uint64_t(args.qOffset));
    packer.push(uint64_t(args.kOffset));
  }
  packer.finish();
}

TensorMapGeometry tensorMapGeometry(const AttentionSpec &spec,
                                    const TensorRef &t, int64_t rows,
                                    int64_t usedRows) {
  const auto e = uint64_t(byteWidth(spec.dtype));
  auto bytes = [&](int dim) { return uint64_t(t.stride(dim)) * e; };
  TensorMapGeometry g{};
  if (spec.varlen) { // [total, Hx, D]: {D, used rows, Hx, 1}
    // (TMA takes no dim of 0; with no rows used no box is loaded.)
    const auto used = uint64_t(std::max<int64_t>(1, usedRows));
    g = {{uint64_t(t.shape[2]), used, uint64_t(t.shape[1]), 1},
         {bytes(0), bytes(1), 0}, // (the last: below)
         {}};
  } else { // [B, Hx, S, D]: {D, S, Hx, B}
    g = {{uint64_t(t.shape[3]), uint64_t(t.shape[2]), uint64_t(t.shape[1]),
          uint64_t(t.shape[0])},
         {bytes(2), bytes(1), bytes(0)},
         {}};
  }
  // A dim of one element is only ever at coordinate 0, so its stride is
  // free (torch gives such dims arbitrary strides, which TMA could refuse):
  // the one that nests it over the dim inside, rounded up to 16 bytes.
  for (int i = 1; i < TensorMapGeometry::kRank; ++i)
    if (g.dims[i] == 1) {
      const uint64_t inner =
          i == 1 ? g.dims[0] * e : g.strides[i - 2] * g.dims[i - 1];
      g.strides[i - 1] = (inner + 15) / 16 * 16;
    }
  g.box[0] = 64;
  g.box[1] = uint32_t(rows);
  g.box[2] = g.box[3] = 1;
  return g;
}

std::string tensorMapError(const char *name, const TensorRef &t,
                           const TensorMapGeometry &g) {
  bool aligned = reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
  for (uint64_t stride : g.strides)
    aligned = aligned && stride % 16 == 0 && stride < (uint64_t(1) << 40);
  if (aligned)
    return {};
  return fmt::format("{}: the TMA kernels (gpu_sm90a) need its address and "
                     "strides in multiples of 16 bytes (and strides below "
                     "2^40 bytes), got strides {} (elements)",
                     name, t.strideString());
}

//===----------------------------------------------------------------------===//
// CudaKernel
//===----------------------------------------------------------------------===//

std::string CudaKernel::load(std::string_view bytes,
                             const std::string &expectedSpec,
                             std::unique_ptr<CudaKernel> &out,
                             std::string_view label) {
  CudaArtifact a;
  if (std::string err = parseCudaArtifact(bytes, a); !err.empty())
    return fmt::format("kernel {}: {}", label, err);
  if (a.abi != kKernelAbiVersion)
    return fmt::format("kernel {}: built for ABI {}, this runtime needs ABI {}",
                       label, a.abi, kKernelAbiVersion);
  if (a.spec != expectedSpec)
    return fmt::format("kernel {}: built for spec '{}', expected '{}'", label,
                       a.spec, expectedSpec);
  std::string err;
  const CudaDriver *d = cudaDriver(err);
  if (!d || !(err = d->makeCurrent()).empty())
    return err;
  const cuda::DeviceInfo &dev = d->info;
  const bool cubin =
      !a.cubin.empty() && cubinRunsOn(a.arch, dev.ccMajor, dev.ccMinor);
  if (!cubin && a.ptx.empty())
    return fmt::format("kernel {}: its cubin is for {} and it has no PTX; "
                       "this device is {}",
                       label, a.arch, dev.arch);

  if (dev.maxSharedPerBlock > 0 && a.smem > dev.maxSharedPerBlock)
    return fmt::format("kernel {}: its tile config needs {} bytes of shared "
                       "memory; {} ({}) allows {} per block (choose a "
                       "smaller block_m, block_n or num_stages)",
                       label, a.smem, dev.name, dev.arch,
                       dev.maxSharedPerBlock);
  std::unique_ptr<CudaKernel> kernel(new CudaKernel());
  CUmodule module = nullptr;
  // c_str(): the driver reads PTX as a NUL-terminated string.
  const void *image = cubin ? a.cubin.data() : a.ptx.c_str();
  if (err = d->check(d->cuModuleLoadData(&module, image), "cuModuleLoadData");
      !err.empty())
    return fmt::format("kernel {}: {}", label, err);
  kernel->module = module;
  kernel->fromCubin = cubin;
  CUfunction function = nullptr;
  if (err = d->check(d->cuModuleGetFunction(&function, module,
                                            a.kernel.c_str()),
                     "cuModuleGetFunction");
      !err.empty())
    return fmt::format("kernel {}: {} (entry '{}')", label, err, a.kernel);
  kernel->function = function;
  if (parseKernelVariant(a.variant) == KernelVariant::GpuDecodeSm80) {
    CUfunction merge = nullptr;
    if (err = d->check(
            d->cuModuleGetFunction(&merge, module, kCudaMergeKernelName),
            "cuModuleGetFunction");
        !err.empty())
      return fmt::format("kernel {}: {} (entry '{}')", label, err,
                         kCudaMergeKernelName);
    kernel->mergeFunction = merge;
  }
  if (parseKernelVariant(a.variant) == KernelVariant::GpuBwdSm80) {
    CUfunction dkdv = nullptr;
    if (err = d->check(
            d->cuModuleGetFunction(&dkdv, module, kCudaBwdDkDvKernelName),
            "cuModuleGetFunction");
        !err.empty())
      return fmt::format("kernel {}: {} (entry '{}')", label, err,
                         kCudaBwdDkDvKernelName);
    kernel->dkdvFunction = dkdv;
  }
  // `smem` is the most any of the module's large kernels needs.
  for (void *f : {kernel->function, kernel->dkdvFunction})
    if (f && a.smem > kDefaultSmemLimit)
      if (err = d->check(d->cuFuncSetAttribute(
                             static_cast<CUfunction>(f),
                             CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                             int(a.smem)),
                         "cuFuncSetAttribute");
          !err.empty())
        return fmt::format("kernel {}: {} ({} bytes of shared memory)", label,
                           err, a.smem);
  // The images are in the driver now.
  a.cubin = std::string();
  a.ptx = std::string();
  kernel->header = std::move(a);
  out = std::move(kernel);
  return {};
}

std::string CudaKernel::reserveScratch(size_t bytes, void *stream) {
  // The scratch belongs to this kernel: a launch on another stream, or a
  // smaller buffer being replaced, must not overlap one still using it.
  std::string err;
  const CudaDriver *d = cudaDriver(err);
  if (!d)
    return err;
  if (partsStream != stream || partsBuffer.size() < bytes)
    if (err = d->check(d->cuCtxSynchronize(), "cuCtxSynchronize"); !err.empty())
      return err;
  if (partsBuffer.size() < bytes)
    if (err = partsBuffer.allocate(bytes); !err.empty())
      return err;
  partsStream = stream;
  return {};
}

std::string CudaKernel::launchBackward(const AttentionSpec &spec,
                                       const AttentionArgs &args,
                                       const BackwardArgs &grads, int64_t batch,
                                       int64_t maxSq, int64_t maxSk) {
  std::string err;
  const CudaDriver *d = cudaDriver(err);
  if (!d || !(err = d->makeCurrent()).empty())
    return err;
  if (!dkdvFunction)
    return fmt::format("cuda launch: kernel variant {} is not the backward's "
                       "(gpu_bwd_sm80)",
                       header.variant);
  // Grids (query blocks, H, B) and (key blocks, Hkv, B) (KernelABI.h).
  const int64_t queryBlocks = (maxSq + header.blockM - 1) / header.blockM;
  const int64_t keyBlocks = (maxSk + header.blockN - 1) / header.blockN;
  if (batch == 0)
    return {};
  if (queryBlocks > INT_MAX || keyBlocks > INT_MAX || spec.heads > 65535 ||
      batch > 65535)
    return fmt::format("cuda launch: the backward's grids ({}, {}, {}) and "
                       "({}, {}, {}) exceed the limits ({}, 65535, 65535)",
                       queryBlocks, spec.heads, batch, keyBlocks, spec.kvHeads,
                       batch, INT_MAX);
  const bool slopes = spec.hasAlibi() && spec.slopes == SlopeSource::Custom;
  const size_t stateBytes = size_t(args.lse.numElements()) * 4 * sizeof(float);
  const size_t partsBytes =
      slopes ? size_t(batch * spec.heads * std::max<int64_t>(1, queryBlocks)) *
                   sizeof(float)
             : 0;
  // Custom slopes whose gradient nobody asked for: the kernels write it
  // anyway, here (as [B, H]: room for either form).
  const bool unwanted = slopes && !grads.dslopes.present();
  const size_t unwantedBytes =
      unwanted ? size_t(batch * spec.heads) * sizeof(float) : 0;
  if (err = reserveScratch(stateBytes + partsBytes + unwantedBytes,
                           args.cudaStream);
      !err.empty())
    return err;
  char *base = static_cast<char *>(partsBuffer.data());
  BackwardScratch scratch;
  scratch.rowState = base;
  scratch.parts = base + stateBytes;
  scratch.queryBlocks = std::max<int64_t>(1, queryBlocks);
  BackwardArgs launchGrads = grads;
  if (unwanted)
    launchGrads.dslopes =
        args.slopes.rank == 1
            ? TensorRef(base + stateBytes + partsBytes, {spec.heads})
            : TensorRef(base + stateBytes + partsBytes, {batch, spec.heads});
  KernelParams params;
  packBackwardParams(spec, args, launchGrads, batch, scratch, params);
  const auto stream = static_cast<CUstream>(args.cudaStream);
  struct Grid {
    void *function;
    int64_t x, y;
    const char *name;
  };
  for (const Grid &g :
       {Grid{function, queryBlocks, spec.heads, kCudaBwdDqKernelName},
        Grid{dkdvFunction, std::max<int64_t>(1, keyBlocks), spec.kvHeads,
             kCudaBwdDkDvKernelName}}) {
    if (g.x == 0)
      continue;
    if (err = d->check(
            d->cuLaunchKernel(
                static_cast<CUfunction>(g.function), unsigned(g.x),
                unsigned(g.y), unsigned(batch), unsigned(header.threads), 1, 1,
                unsigned(header.smem), stream, params.pointers, nullptr),
            "cuLaunchKernel");
        !err.empty())
      return fmt::format("{} ({})", err, g.name);
  }
  return {};
}

CudaKernel::~CudaKernel() {
  std::string ignored;
  const CudaDriver *d = cudaDriver(ignored);
  if (!module || !d || !d->makeCurrent().empty())
    return;
  // A launch of this kernel may still be queued.
  d->cuCtxSynchronize();
  d->cuModuleUnload(static_cast<CUmodule>(module));
}

std::string CudaKernel::launch(const AttentionSpec &spec,
                               const AttentionArgs &args, const Extents &x) {
  const int64_t batch = x.batch, maxSq = x.maxSq, maxSk = x.maxSk;
  std::string err;
  const CudaDriver *d = cudaDriver(err);
  if (!d || !(err = d->makeCurrent()).empty())
    return err;
  // gpu_decode_sm80: grid (splits x row blocks, Hkv, B), the rows of a
  // block a GQA group's heads x queries (KernelABI.h); else (query blocks,
  // H, B).
  if (dkdvFunction)
    return fmt::format("cuda launch: kernel variant {} is the backward's; "
                       "call backward()",
                       header.variant);
  const bool decode = mergeFunction != nullptr;
  DecodeParts parts;
  int64_t gridX = (maxSq + header.blockM - 1) / header.blockM;
  int64_t gridY = spec.heads;
  if (decode) {
    const int64_t rows = spec.heads / spec.kvHeads * maxSq;
    const int64_t rowBlocks = (rows + header.blockM - 1) / header.blockM;
    parts.splits = gpuDecodeSplits(rowBlocks * spec.kvHeads * batch, maxSk,
                                   d->info.smCount);
    gridX = rowBlocks * std::max<int64_t>(1, parts.splits);
    gridY = spec.kvHeads;
  }
  if (gridX == 0 || gridY == 0 || batch == 0)
    return {};
  if (gridX > INT_MAX || gridY > 65535 || batch > 65535)
    return fmt::format("cuda launch: grid ({}, {}, {}) exceeds the limits "
                       "({}, 65535, 65535)",
                       gridX, gridY, batch, INT_MAX);
  if (parts.splits > 0 && (maxSq > INT_MAX || spec.heads > 65535))
    return fmt::format("cuda launch: the merge's grid ({}, {}, {}) exceeds "
                       "the limits ({}, 65535, 65535)",
                       maxSq, spec.heads, batch, INT_MAX);
  const auto stream = static_cast<CUstream>(args.cudaStream);
  if (parts.splits > 0) {
    const size_t rows = size_t(batch * spec.heads * maxSq);
    const size_t oBytes =
        size_t(parts.splits) * rows * size_t(spec.headDim) * sizeof(float);
    const size_t bytes = oBytes + size_t(parts.splits) * rows * sizeof(float);
    if (err = reserveScratch(bytes, args.cudaStream); !err.empty())
      return err;
    parts.o = partsBuffer.data();
    parts.lse = static_cast<char *>(partsBuffer.data()) + oBytes;
  }

  uint64_t maps[3] = {};
  const int numTma = header.numTma();
  if (numTma) {
    if (!d->cuTensorMapEncodeTiled)
      return "cuda: the driver lacks cuTensorMapEncodeTiled (TMA kernels need "
             "CUDA 12 or newer)";
    CUtensorMap host[3];
    const TensorRef *operands[3] = {&args.q, &args.k, &args.v};
    const int dataType = spec.dtype == DType::BF16
                             ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                             : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    const uint32_t elementStrides[TensorMapGeometry::kRank] = {1, 1, 1, 1};
    int n = 0;
    for (int i = 0; i < 3; ++i) {
      if (!header.tma[i])
        continue;
      const TensorMapGeometry g = tensorMapGeometry(
          spec, *operands[i], i == 0 ? header.blockM : header.blockN,
          i == 0 ? x.usedQ : x.usedK);
      if (err = tensorMapError(kTmaOperandNames[i], *operands[i], g);
          !err.empty())
        return err;
      // L2 promotion is a hint KernelABI.h leaves open; 128 B matches the
      // swizzle span.
      if (err = d->check(d->cuTensorMapEncodeTiled(
                             &host[n], dataType, TensorMapGeometry::kRank,
                             operands[i]->data, g.dims, g.strides, g.box,
                             elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                             CU_TENSOR_MAP_SWIZZLE_128B,
                             CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                         "cuTensorMapEncodeTiled");
          !err.empty())
        return fmt::format("{} (operand {})", err, kTmaOperandNames[i]);
      ++n;
    }
    const std::string_view bytes(reinterpret_cast<const char *>(host),
                                 sizeof(CUtensorMap) * size_t(n));
    if (!tmaBuffer.data())
      if (err = tmaBuffer.allocate(sizeof host); !err.empty())
        return err;
    if (bytes != tmaUploaded) {
      // A synchronous copy from pageable memory first waits for the default
      // stream, so no earlier launch still reads the maps it replaces; a
      // caller's stream may not synchronize with it, so it is waited for.
      if (args.cudaStream)
        if (err = d->check(d->cuStreamSynchronize(
                               static_cast<CUstream>(args.cudaStream)),
                           "cuStreamSynchronize");
            !err.empty())
          return err;
      if (err = tmaBuffer.upload(bytes.data(), bytes.size()); !err.empty()) {
        tmaUploaded.clear();
        return err;
      }
      tmaUploaded = std::string(bytes);
    }
    const auto base = uint64_t(reinterpret_cast<uintptr_t>(tmaBuffer.data()));
    for (int i = 0; i < n; ++i)
      maps[i] = base + uint64_t(i) * sizeof(CUtensorMap);
  }

  KernelParams params;
  packKernelParams(spec, args, batch, maps, numTma, params,
                   decode ? &parts : nullptr);
  if (err = d->check(d->cuLaunchKernel(
                         static_cast<CUfunction>(function), unsigned(gridX),
                         unsigned(gridY), unsigned(batch),
                         unsigned(header.threads), 1, 1, unsigned(header.smem),
                         stream, params.pointers, nullptr),
                     "cuLaunchKernel");
      !err.empty() || parts.splits == 0)
    return err;
  // The exact merge of the parts into o and lse: one warp per row.
  KernelParams merge;
  packMergeParams(spec, args, parts, merge);
  return d->check(d->cuLaunchKernel(static_cast<CUfunction>(mergeFunction),
                                    unsigned(maxSq), unsigned(spec.heads),
                                    unsigned(batch), 32, 1, 1, 0, stream,
                                    merge.pointers, nullptr),
                  "cuLaunchKernel (tilt_merge)");
}

} // namespace tilt::detail
