//===- CudaTest.cpp - The CUDA launcher, mostly without a GPU -------------===//
//
// The artifact parser, the architecture and variant rules, the kernel
// parameter layout and the tensor map geometry of KernelABI.h are checked
// on any machine; the runtime's CUDA path is checked for its errors without
// a driver, and, where there is a GPU, end to end with a PTX kernel that
// echoes its parameters.
//
//===----------------------------------------------------------------------===//

#include "tilt/Cuda.h"
#include "CudaKernel.h"
#include "RuntimeTestSupport.h"
#include "tilt/KernelABI.h"
#include "tilt/KernelBundle.h"

#include <utility>

namespace {

using namespace tilt;
using namespace tilt::test;
using tilt::CudaArtifact;
using detail::KernelParams;
using tilt::parseCudaArtifact;

//===----------------------------------------------------------------------===//
// Artifacts
//===----------------------------------------------------------------------===//

const std::string kCubin = std::string("\x7f"
                                       "ELF") +
                           std::string(60, '\1');
const std::string kPtx = ".version 7.0\n.target sm_80\n";

/// Header lines of a good artifact, in KernelABI.h's order.
std::vector<std::pair<std::string, std::string>>
goodHeader(const std::string &spec = "SPEC; with = and ;",
           size_t cubinBytes = kCubin.size(), size_t ptxBytes = kPtx.size()) {
  return {{"abi", std::to_string(tilt::kKernelAbiVersion)},
          {"variant", "gpu_sm90a"},
          {"arch", "sm_90a"},
          {"kernel", "tilt_attention"},
          {"block_m", "128"},
          {"block_n", "64"},
          {"num_warps", "8"},
          {"num_stages", "2"},
          {"threads", "256"},
          {"smem", "98304"},
          {"cubin_bytes", std::to_string(cubinBytes)},
          {"ptx_bytes", std::to_string(ptxBytes)},
          {"tma", "q,v"},
          {"ptxas", "Used 168 registers, 0 bytes spill stores"},
          {"spec", spec}};
}

std::string
render(const std::vector<std::pair<std::string, std::string>> &header,
       const std::string &payload = kCubin + kPtx) {
  std::string s = kCudaArtifactMagic;
  for (const auto &[k, v] : header)
    s += k + "=" + v + "\n";
  return s + "\n" + payload;
}

std::string withKey(const std::string &key, const std::string &value) {
  auto h = goodHeader();
  for (auto &[k, v] : h)
    if (k == key)
      v = value;
  return render(h);
}

std::string withoutKey(const std::string &key) {
  auto h = goodHeader();
  std::erase_if(h, [&](const auto &kv) { return kv.first == key; });
  return render(h);
}

TEST(CudaArtifact, ParsesAGoodOne) {
  CudaArtifact a;
  ASSERT_EQ(parseCudaArtifact(render(goodHeader()), a), "");
  EXPECT_EQ(a.abi, tilt::kKernelAbiVersion);
  EXPECT_EQ(a.variant, "gpu_sm90a");
  EXPECT_EQ(a.arch, "sm_90a");
  EXPECT_EQ(a.kernel, "tilt_attention");
  EXPECT_EQ(a.blockM, 128);
  EXPECT_EQ(a.blockN, 64);
  EXPECT_EQ(a.numWarps, 8);
  EXPECT_EQ(a.numStages, 2);
  EXPECT_EQ(a.threads, 256);
  EXPECT_EQ(a.smem, 98304);
  EXPECT_TRUE(a.tma[0]);
  EXPECT_FALSE(a.tma[1]);
  EXPECT_TRUE(a.tma[2]);
  EXPECT_EQ(a.numTma(), 2);
  EXPECT_EQ(a.ptxas, "Used 168 registers, 0 bytes spill stores");
  EXPECT_EQ(a.spec, "SPEC; with = and ;");
  EXPECT_EQ(a.cubin, kCubin);
  EXPECT_EQ(a.ptx, kPtx);
}

TEST(CudaArtifact, KeyOrderDoesNotMatterAndModulesAreOptional) {
  auto h = goodHeader("S", 0, kPtx.size());
  std::swap(h.front(), h.back());
  CudaArtifact a;
  ASSERT_EQ(parseCudaArtifact(render(h, kPtx), a), "");
  EXPECT_TRUE(a.cubin.empty());
  EXPECT_EQ(a.ptx, kPtx);
  EXPECT_EQ(a.spec, "S");

  ASSERT_EQ(parseCudaArtifact(render(goodHeader("S", kCubin.size(), 0), kCubin),
                              a),
            "");
  EXPECT_EQ(a.cubin, kCubin);
  EXPECT_TRUE(a.ptx.empty());

  ASSERT_EQ(parseCudaArtifact(withKey("tma", ""), a), "");
  EXPECT_EQ(a.numTma(), 0);
  ASSERT_EQ(parseCudaArtifact(withKey("tma", "v,k,q"), a), "");
  EXPECT_EQ(a.numTma(), 3);
}

struct BadKey {
  const char *key;
  const char *value;
  const char *error;
};

const BadKey kBadKeys[] = {
    {"abi", "x", "abi must be an integer >= 0, got 'x'"},
    {"abi", "", "abi must be an integer >= 0, got ''"},
    {"variant", "cpu_avx2",
     "variant must be gpu_sm80, gpu_sm90a, gpu_decode_sm80 or gpu_bwd_sm80, "
     "got 'cpu_avx2'"},
    {"arch", "sm_86", "arch must be sm_80 or sm_90a, got 'sm_86'"},
    {"kernel", "", "kernel must be a symbol name, got ''"},
    {"kernel", "a b", "kernel must be a symbol name, got 'a b'"},
    {"block_m", "0", "block_m must be an integer >= 1, got '0'"},
    {"block_n", "64x", "block_n must be an integer >= 1, got '64x'"},
    {"num_warps", "33", "num_warps must be an integer from 1 to 32, got '33'"},
    {"num_stages", "-1", "num_stages must be an integer >= 1, got '-1'"},
    {"threads", "2048",
     "threads must be an integer from 1 to 1024, got "
     "'2048'"},
    {"smem", "-4", "smem must be an integer from 0 to 2147483647, got '-4'"},
    {"cubin_bytes", "many",
     "cubin_bytes must be an integer >= 0, got "
     "'many'"},
    {"ptx_bytes", "1e3", "ptx_bytes must be an integer >= 0, got '1e3'"},
    {"tma", "o",
     "tma must be empty or a ','-separated subset of q,k,v, got "
     "'o'"},
    {"tma", "q,q",
     "tma must be empty or a ','-separated subset of q,k,v, "
     "got 'q,q'"},
    {"tma", "q,",
     "tma must be empty or a ','-separated subset of q,k,v, got "
     "'q,'"},
    {"spec", "", "spec must not be empty"},
};

TEST(CudaArtifact, EachMalformedKeyIsNamed) {
  for (const BadKey &b : kBadKeys) {
    CudaArtifact a;
    EXPECT_EQ(parseCudaArtifact(withKey(b.key, b.value), a),
              std::string("cuda artifact: ") + b.error)
        << b.key << "=" << b.value;
  }
}

TEST(CudaArtifact, EachMissingKeyIsNamed) {
  for (const auto &[key, value] : goodHeader()) {
    CudaArtifact a;
    EXPECT_EQ(parseCudaArtifact(withoutKey(key), a),
              fmt::format("cuda artifact: missing header key '{}'", key));
  }
}

TEST(CudaArtifact, UnknownRepeatedAndMalformedLines) {
  CudaArtifact a;
  auto h = goodHeader();
  h.emplace_back("registers", "168");
  EXPECT_EQ(parseCudaArtifact(render(h), a),
            "cuda artifact: unknown header key 'registers'");
  h = goodHeader();
  h.emplace_back("block_m", "64");
  EXPECT_EQ(parseCudaArtifact(render(h), a),
            "cuda artifact: header key 'block_m' is repeated");
  h = goodHeader();
  h.emplace_back("just text", "");
  std::string text = render(h);
  text.replace(text.find("just text="), 10, "just text");
  EXPECT_EQ(parseCudaArtifact(text, a),
            "cuda artifact: header line 'just text' is not key=value");
}

TEST(CudaArtifact, WrongMagic) {
  CudaArtifact a;
  std::string text = render(goodHeader());
  EXPECT_EQ(parseCudaArtifact("TILTCUDA2\n" + text.substr(10), a),
            "cuda artifact: bad magic (expected TILTCUDA1)");
  EXPECT_EQ(parseCudaArtifact("\x7f"
                              "ELF",
                              a),
            "cuda artifact: bad magic (expected TILTCUDA1)");
  EXPECT_EQ(parseCudaArtifact("", a),
            "cuda artifact: bad magic (expected TILTCUDA1)");
}

TEST(CudaArtifact, TruncatedOrOversizedPayload) {
  CudaArtifact a;
  std::string text = render(goodHeader());
  const size_t total = kCubin.size() + kPtx.size();
  EXPECT_EQ(parseCudaArtifact(text.substr(0, text.size() - 1), a),
            fmt::format("cuda artifact: the payload is {} bytes, cubin_bytes "
                        "+ ptx_bytes = {} + {}",
                        total - 1, kCubin.size(), kPtx.size()));
  EXPECT_EQ(parseCudaArtifact(text + "x", a),
            fmt::format("cuda artifact: the payload is {} bytes, cubin_bytes "
                        "+ ptx_bytes = {} + {}",
                        total + 1, kCubin.size(), kPtx.size()));
  // Sizes that would overflow when added.
  EXPECT_NE(parseCudaArtifact(withKey("cubin_bytes", "9223372036854775807"),
                              a)
                .find("the payload is"),
            std::string::npos);
  // Cut inside the header.
  EXPECT_EQ(parseCudaArtifact(text.substr(0, 40), a),
            "cuda artifact: the header does not end with an empty line");
  EXPECT_EQ(parseCudaArtifact(render(goodHeader("S", 0, 0), ""), a),
            "cuda artifact: no module (cubin_bytes and ptx_bytes are both 0)");
  EXPECT_EQ(parseCudaArtifact(render(goodHeader(), std::string(kCubin.size(),
                                                               'x') +
                                                       kPtx),
                              a),
            "cuda artifact: cubin_bytes do not hold an ELF image");
}

//===----------------------------------------------------------------------===//
// Architectures and variants
//===----------------------------------------------------------------------===//

cuda::DeviceInfo device(int major, int minor, const char *name = "GPU") {
  cuda::DeviceInfo d;
  d.name = name;
  d.ccMajor = major;
  d.ccMinor = minor;
  d.arch = fmt::format("sm_{}{}", major, minor);
  return d;
}

TEST(CudaArch, CubinAndArtifactRules) {
  using detail::artifactRunsOn;
  using detail::cubinRunsOn;
  EXPECT_TRUE(cubinRunsOn("sm_80", 8, 0));
  EXPECT_TRUE(cubinRunsOn("sm_80", 8, 6));
  EXPECT_TRUE(cubinRunsOn("sm_80", 8, 9));
  EXPECT_FALSE(cubinRunsOn("sm_80", 9, 0));
  EXPECT_FALSE(cubinRunsOn("sm_80", 7, 5));
  EXPECT_TRUE(cubinRunsOn("sm_90a", 9, 0));
  EXPECT_FALSE(cubinRunsOn("sm_90a", 10, 0));
  EXPECT_FALSE(cubinRunsOn("sm_90a", 8, 0));
  EXPECT_FALSE(cubinRunsOn("", 8, 0));
  // PTX for sm_80 JIT-compiles forward; sm_90a's does not.
  EXPECT_TRUE(artifactRunsOn("sm_80", 9, 0));
  EXPECT_TRUE(artifactRunsOn("sm_80", 12, 0));
  EXPECT_FALSE(artifactRunsOn("sm_80", 7, 5));
  EXPECT_TRUE(artifactRunsOn("sm_90a", 9, 0));
  EXPECT_FALSE(artifactRunsOn("sm_90a", 10, 0));
  EXPECT_FALSE(artifactRunsOn("", 9, 0));
}

TEST(CudaArch, DefaultVariant) {
  auto pick = [](DType dtype, int64_t headDim, cuda::DeviceInfo dev) {
    AttentionSpec s = makeSpec(8, 8, headDim);
    s.dtype = dtype;
    std::string variant;
    std::string err = cuda::defaultVariant(s, dev, variant);
    return err.empty() ? variant : err;
  };
  EXPECT_EQ(pick(DType::F16, 128, device(9, 0)), "gpu_sm90a");
  EXPECT_EQ(pick(DType::BF16, 64, device(9, 0)), "gpu_sm90a");
  // Above 128 the sm_80 kernels serve by default (Spec.h: register file).
  EXPECT_EQ(pick(DType::BF16, 192, device(9, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::BF16, 256, device(9, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 80, device(9, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 96, device(9, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F32, 128, device(9, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 128, device(8, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 128, device(8, 6)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 128, device(8, 9)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 128, device(10, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 128, device(12, 0)), "gpu_sm80");
  EXPECT_EQ(pick(DType::F16, 128, device(7, 5, "Tesla T4")),
            "target cuda: device Tesla T4 is sm_75; Tilt's GPU kernels need "
            "sm_80 or newer");
}

//===----------------------------------------------------------------------===//
// Kernel parameters (KernelABI.h, "Parameters, in order")
//===----------------------------------------------------------------------===//

void *at(uint64_t address) { return reinterpret_cast<void *>(address); }

std::vector<uint64_t> packed(const KernelParams &p) {
  std::vector<uint64_t> v(p.values, p.values + p.count);
  for (int i = 0; i < p.count; ++i)
    EXPECT_EQ(p.pointers[i], &p.values[i]) << i;
  return v;
}

TEST(CudaParams, DenseWithSlopesPerHeadPaddingMaskAndTensorMaps) {
  AttentionSpec s = makeSpec(2, 1, 64, BiasKind::AlibiPositions);
  s.dtype = DType::F16;
  s.slopes = SlopeSource::Custom;
  s.keyPaddingMask = true;
  AttentionArgs a;
  a.q = TensorRef(at(0x1000), {2, 2, 3, 64});
  a.k = TensorRef(at(0x2000), {2, 1, 5, 64});
  a.v = TensorRef(at(0x3000), {2, 1, 5, 64});
  a.o = TensorRef(at(0x4000), {2, 2, 3, 64});
  a.lse = TensorRef(at(0x5000), {2, 2, 3});
  a.slopes = TensorRef(at(0x6000), {2});
  a.keyPaddingMask = TensorRef(at(0x7000), {2, 5});
  const uint64_t maps[2] = {0xA000, 0xA080};
  KernelParams p;
  detail::packKernelParams(s, a, 2, maps, 2, p);
  const std::vector<uint64_t> want = {
      // q: allocated, aligned, offset, sizes[4], strides[4]
      0x1000, 0x1000, 0, 2, 2, 3, 64, 384, 192, 64, 1,
      // k
      0x2000, 0x2000, 0, 2, 1, 5, 64, 320, 320, 64, 1,
      // v
      0x3000, 0x3000, 0, 2, 1, 5, 64, 320, 320, 64, 1,
      // o
      0x4000, 0x4000, 0, 2, 2, 3, 64, 384, 192, 64, 1,
      // lse [B, H, Sq]
      0x5000, 0x5000, 0, 2, 2, 3, 6, 3, 1,
      // slopes [H] as [B, H] with batch stride 0
      0x6000, 0x6000, 0, 2, 2, 0, 1,
      // key padding mask [B, Sk]
      0x7000, 0x7000, 0, 2, 5, 5, 1,
      // the tensor maps
      0xA000, 0xA080};
  EXPECT_EQ(packed(p), want);
}

TEST(CudaParams, VarlenWithSlopesPerBatch) {
  AttentionSpec s = makeSpec(4, 2, 32, BiasKind::Alibi, true);
  s.dtype = DType::BF16;
  s.slopes = SlopeSource::Custom;
  s.varlen = true;
  AttentionArgs a;
  a.q = TensorRef(at(0x1000), {10, 4, 32});
  a.k = TensorRef(at(0x2000), {12, 2, 32});
  a.v = TensorRef(at(0x3000), {12, 2, 32});
  a.o = TensorRef(at(0x4000), {10, 4, 32});
  a.lse = TensorRef(at(0x5000), {4, 10});
  a.slopes = TensorRef(at(0x6000), {2, 4});
  a.cuSeqlensQ = TensorRef(at(0x8000), {3});
  a.cuSeqlensK = TensorRef(at(0x9000), {3});
  KernelParams p;
  detail::packKernelParams(s, a, 2, nullptr, 0, p);
  const std::vector<uint64_t> want = {
      0x1000, 0x1000, 0, 10, 4, 32, 128, 32, 1, // q [totalQ, H, D]
      0x2000, 0x2000, 0, 12, 2, 32, 64, 32, 1,  // k [totalK, Hkv, D]
      0x3000, 0x3000, 0, 12, 2, 32, 64, 32, 1,  // v
      0x4000, 0x4000, 0, 10, 4, 32, 128, 32, 1, // o
      0x5000, 0x5000, 0, 4, 10, 10, 1,          // lse [H, totalQ]
      0x6000, 0x6000, 0, 2, 4, 4, 1,            // slopes [B, H]
      0x8000, 0x8000, 0, 3, 1,                  // cu_seqlens_q
      0x9000, 0x9000, 0, 3, 1};                 // cu_seqlens_k
  EXPECT_EQ(packed(p), want);
}

TEST(CudaParams, PagedDecodeWithSplitKvPartsAndTheirMerge) {
  AttentionSpec s = makeSpec(8, 2, 64, BiasKind::Alibi);
  s.dtype = DType::BF16;
  s.pageSize = 16;
  AttentionArgs a;
  a.q = TensorRef(at(0x1000), {3, 8, 2, 64});
  a.k = TensorRef(at(0x2000), {10, 16, 2, 64});
  a.v = TensorRef(at(0x3000), {10, 16, 2, 64});
  a.o = TensorRef(at(0x4000), {3, 8, 2, 64});
  a.lse = TensorRef(at(0x5000), {3, 8, 2});
  a.blockTable = TensorRef(at(0x6000), {3, 4});
  a.contextLens = TensorRef(at(0x7000), {3});
  detail::DecodeParts parts{at(0x8000), at(0x9000), 5};
  KernelParams p;
  detail::packKernelParams(s, a, 3, nullptr, 0, p, &parts);
  const std::vector<uint64_t> want = {
      0x1000, 0x1000, 0, 3, 8, 2, 64, 1024, 128, 64, 1,   // q
      0x2000, 0x2000, 0, 10, 16, 2, 64, 2048, 128, 64, 1, // k cache
      0x3000, 0x3000, 0, 10, 16, 2, 64, 2048, 128, 64, 1, // v cache
      0x4000, 0x4000, 0, 3, 8, 2, 64, 1024, 128, 64, 1,   // o
      0x5000, 0x5000, 0, 3, 8, 2, 16, 2, 1,               // lse
      0x6000, 0x6000, 0, 3, 4, 4, 1,                      // block table
      0x7000, 0x7000, 0, 3, 1,                            // context lens
      // o_parts [S, B, H, Sq, D], lse_parts [S, B, H, Sq]
      0x8000, 0x8000, 0, 5, 3, 8, 2, 64, 3072, 1024, 128, 64, 1, 0x9000, 0x9000,
      0, 5, 3, 8, 2, 48, 16, 2, 1};
  EXPECT_EQ(packed(p), want);
  // tilt_merge: o_parts, lse_parts, o, lse.
  KernelParams m;
  detail::packMergeParams(s, a, parts, m);
  const std::vector<uint64_t> merge = {
      0x8000, 0x8000, 0,      5,      3, 8, 2, 64, 3072, 1024, 128,
      64,     1,      0x9000, 0x9000, 0, 5, 3, 8,  2,    48,   16,
      2,      1,      0x4000, 0x4000, 0, 3, 8, 2,  64,   1024, 128,
      64,     1,      0x5000, 0x5000, 0, 3, 8, 2,  16,   2,    1};
  EXPECT_EQ(packed(m), merge);
}

TEST(CudaParams, PlainDenseHasOnlyTheFiveTensors) {
  AttentionSpec s = makeSpec(1, 1, 16, BiasKind::Alibi); // standard slopes
  s.dtype = DType::F16;
  AttentionArgs a;
  a.q = a.o = TensorRef(at(0x10), {1, 1, 1, 16});
  a.k = a.v = TensorRef(at(0x20), {1, 1, 1, 16});
  a.lse = TensorRef(at(0x30), {1, 1, 1});
  KernelParams p;
  detail::packKernelParams(s, a, 1, nullptr, 0, p);
  EXPECT_EQ(p.count, 4 * 11 + 9);
}

TEST(CudaParams, DataTensorsCarryTheirStrides) {
  // q, k, v, o through their strides ([B, S, H, D] memory here), lse
  // row-major (KernelABI.h).
  AttentionSpec s = makeSpec(2, 2, 16, BiasKind::Alibi);
  s.dtype = DType::F16;
  AttentionArgs a;
  a.q = a.o = TensorRef(at(0x10), {1, 2, 3, 16}).withStrides({96, 16, 32, 1});
  a.k = a.v = TensorRef(at(0x20), {1, 2, 5, 16});
  a.lse = TensorRef(at(0x30), {1, 2, 3});
  KernelParams p;
  detail::packKernelParams(s, a, 1, nullptr, 0, p);
  ASSERT_EQ(p.count, 4 * 11 + 9);
  auto field = [&](int memref, int i) { return p.values[memref * 11 + i]; };
  for (int d = 0; d < 4; ++d) {
    EXPECT_EQ(field(0, 7 + d), uint64_t(a.q.strides[d])) << "q stride " << d;
    EXPECT_EQ(field(3, 7 + d), uint64_t(a.o.strides[d])) << "o stride " << d;
  }
  EXPECT_EQ(std::vector<uint64_t>(p.values + 11 + 7, p.values + 11 + 11),
            (std::vector<uint64_t>{160, 80, 16, 1})); // k row-major
  EXPECT_EQ(std::vector<uint64_t>(p.values + 44 + 6, p.values + 44 + 9),
            (std::vector<uint64_t>{6, 3, 1})); // lse
}

TEST(CudaTensorMaps, Geometry) {
  using G = detail::TensorMapGeometry;
  auto dims = [](const G &g) {
    return std::vector<uint64_t>(g.dims, g.dims + G::kRank);
  };
  auto strides = [](const G &g) {
    return std::vector<uint64_t>(g.strides, g.strides + G::kRank - 1);
  };
  AttentionSpec dense = makeSpec(3, 3, 128);
  dense.dtype = DType::BF16;
  // (Dense maps take the used rows from the shape: the last argument is
  // unused.)
  auto g = detail::tensorMapGeometry(
      dense, TensorRef(nullptr, {2, 3, 100, 128}), 128, 7);
  EXPECT_EQ(dims(g), (std::vector<uint64_t>{128, 100, 3, 2}));
  EXPECT_EQ(strides(g), (std::vector<uint64_t>{256, 100 * 256, 3 * 100 * 256}));
  EXPECT_EQ(std::vector<uint32_t>(g.box, g.box + G::kRank),
            (std::vector<uint32_t>{64, 128, 1, 1}));
  EXPECT_EQ(
      detail::tensorMapError("q", TensorRef(nullptr, {2, 3, 100, 128}), g), "");

  // [B, S, H, D] memory, and a slice of a fused [B, S, 3, H, D] tensor.
  const TensorRef bshd =
      TensorRef(nullptr, {2, 3, 100, 128}).withStrides({38400, 128, 384, 1});
  g = detail::tensorMapGeometry(dense, bshd, 64, 0);
  EXPECT_EQ(dims(g), (std::vector<uint64_t>{128, 100, 3, 2}));
  EXPECT_EQ(strides(g), (std::vector<uint64_t>{768, 256, 76800}));
  const TensorRef fused =
      TensorRef(nullptr, {2, 3, 100, 128}).withStrides({115200, 128, 1152, 1});
  g = detail::tensorMapGeometry(dense, fused, 64, 0);
  EXPECT_EQ(strides(g), (std::vector<uint64_t>{2304, 256, 230400}));
  EXPECT_EQ(detail::tensorMapError("k", fused, g), "");
  // A dim of one element: its stride (any, from torch) is replaced.
  const TensorRef one =
      TensorRef(nullptr, {1, 3, 100, 128}).withStrides({7, 128, 384, 1});
  g = detail::tensorMapGeometry(dense, one, 64, 0);
  EXPECT_EQ(strides(g), (std::vector<uint64_t>{768, 256, 3 * 256}));
  EXPECT_EQ(detail::tensorMapError("q", one, g), "");
  // Rows 8 bytes apart: TMA cannot.
  const TensorRef odd =
      TensorRef(nullptr, {2, 3, 100, 128}).withStrides({38404, 128, 388, 1});
  g = detail::tensorMapGeometry(dense, odd, 64, 0);
  EXPECT_EQ(detail::tensorMapError("v", odd, g),
            "v: the TMA kernels (gpu_sm90a) need its address and strides in "
            "multiples of 16 bytes (and strides below 2^40 bytes), got strides "
            "[38404, 128, 388, 1] (elements)");

  AttentionSpec varlen = makeSpec(4, 2, 64);
  varlen.dtype = DType::F16;
  varlen.varlen = true;
  // Varlen: 50 rows, of which cu_seqlens reach 41: the map stops there
  // (TMA reads zeros past it), and has one row when they reach none.
  g = detail::tensorMapGeometry(varlen, TensorRef(nullptr, {50, 2, 64}), 32,
                                41);
  EXPECT_EQ(dims(g), (std::vector<uint64_t>{64, 41, 2, 1}));
  EXPECT_EQ(strides(g),
            (std::vector<uint64_t>{2 * 64 * 2, 64 * 2, 2 * 64 * 2}));
  EXPECT_EQ(std::vector<uint32_t>(g.box, g.box + G::kRank),
            (std::vector<uint32_t>{64, 32, 1, 1}));
  g = detail::tensorMapGeometry(varlen, TensorRef(nullptr, {50, 2, 64}), 32, 0);
  EXPECT_EQ(dims(g), (std::vector<uint64_t>{64, 1, 2, 1}));
}

//===----------------------------------------------------------------------===//
// Bundles with CUDA kernels
//===----------------------------------------------------------------------===//

TEST(CudaBundle, IndexCarriesCudaKernels) {
  TempDir dir;
  TileConfig gpu;
  gpu.variant = "gpu_sm80";
  TileConfig cpu = naiveConfig(16);
  writeFile(dir / "index",
            fmt::format("tilt-bundle 2\nclass x86-64-v3 t.db\ncuda sm_80\n"
                        "tilt 0.1.0\nk0.so\tSPEC\t{}\tx86-64-v3\n"
                        "k1.cuda\tSPEC\t{}\tcuda\n",
                        cpu.str(), gpu.str()));
  KernelBundle b;
  ASSERT_EQ(KernelBundle::load(dir.path(), b, CpuClass::X86_64_V3), "");
  EXPECT_EQ(b.cudaArch, "sm_80");
  EXPECT_EQ(b.find("SPEC", cpu), dir / "k0.so");
  EXPECT_EQ(b.find("SPEC", gpu), "");
  EXPECT_EQ(b.find("SPEC", gpu, Target::CUDA), dir / "k1.cuda");
  EXPECT_EQ(b.find("SPEC", cpu, Target::CUDA), "");

  // A CUDA-only bundle from another machine: no class line needed.
  writeFile(dir / "index", fmt::format("tilt-bundle 2\ncuda sm_90a\n"
                                       "k1.cuda\tSPEC\t{}\tcuda\n",
                                       gpu.str()));
  ASSERT_EQ(KernelBundle::load(dir.path(), b), "");
  EXPECT_EQ(b.find("SPEC", gpu, Target::CUDA), dir / "k1.cuda");
  EXPECT_TRUE(b.files.empty());

  writeFile(dir / "index",
            fmt::format("tilt-bundle 2\nk1.cuda\tSPEC\t{}\tcuda\n", gpu.str()));
  EXPECT_EQ(KernelBundle::load(dir.path(), b),
            dir / "index" + ": CUDA kernels but no 'cuda <arch>' line");
  writeFile(dir / "index", "tilt-bundle 2\ncuda sm_86\n");
  EXPECT_EQ(KernelBundle::load(dir.path(), b),
            dir / "index" +
                ":2: cuda architecture must be sm_80 or sm_90a, got 'sm_86'");
}

//===----------------------------------------------------------------------===//
// The runtime's CUDA path
//===----------------------------------------------------------------------===//

/// A compiler of CUDA artifacts whose kernel (PTX, generated here) copies its
/// parameters, as 8-byte words, to the start of `o`: a launch shows exactly
/// what the runtime passed.
class EchoCompiler : public FakeCompiler {
public:
  std::string compile(const AttentionSpec &spec, const TileConfig &config,
                      Target target, std::string &artifact) override {
    ++compiles;
    if (target != Target::CUDA)
      return "EchoCompiler builds CUDA kernels only";
    // o is the fourth memref; its aligned pointer follows the allocated one.
    const int rank = spec.varlen ? 3 : 4;
    const int oAligned = 3 * (3 + 2 * rank) + 1;
    std::string ptx = fmt::format(".version 7.0\n.target sm_80\n"
                                  ".address_size 64\n"
                                  ".visible .entry {}(\n",
                                  kCudaKernelName);
    for (int i = 0; i < params; ++i)
      ptx += fmt::format("  .param .u64 p{}{}\n", i, i + 1 < params ? "," : "");
    ptx += fmt::format(")\n{{\n  .reg .u64 %rd<{}>;\n"
                       "  ld.param.u64 %rd0, [p{}];\n"
                       "  cvta.to.global.u64 %rd0, %rd0;\n",
                       2, oAligned);
    for (int i = 0; i < params; ++i)
      ptx += fmt::format("  ld.param.u64 %rd1, [p{}];\n"
                         "  st.global.u64 [%rd0+{}], %rd1;\n",
                         i, 8 * i);
    ptx += "  ret;\n}\n";
    artifact = fmt::format("{}abi={}\nvariant={}\narch=sm_80\nkernel={}\n"
                           "block_m=64\nblock_n=64\nnum_warps=1\n"
                           "num_stages=1\nthreads=32\nsmem=0\ncubin_bytes=0\n"
                           "ptx_bytes={}\ntma=\nptxas=\nspec={}\n\n{}",
                           kCudaArtifactMagic, kKernelAbiVersion,
                           config.variant, kCudaKernelName, ptx.size(),
                           spec.canonical(), ptx);
    return {};
  }
  int params = 0; ///< how many parameters the kernel takes
};

/// "" where there is a usable GPU, else why not.
std::string noGpu() {
  cuda::DeviceInfo info;
  return cuda::probe(info);
}

TEST(RuntimeCuda, F32IsRefusedBeforeTheDriver) {
  TempDir dir;
  EchoCompiler compiler;
  Runtime rt({dir.path(), 1, &compiler});
  Problem p = Problem::dense(makeSpec(4, 4, 32), 1, 4, 4);
  AttentionArgs args = p.args();
  EXPECT_EQ(rt.run(p.spec, args, Target::CUDA),
            "dtype f32: the cuda target supports f16 and bf16");
  EXPECT_EQ(rt.prepare(p.spec, Target::CUDA),
            "dtype f32: the cuda target supports f16 and bf16");
  EXPECT_EQ(compiler.compiles, 0);
}

TEST(RuntimeCuda, WithoutADriverRunReturnsItsErrorAndWritesNothing) {
  std::string why = noGpu();
  if (why.empty())
    GTEST_SKIP() << "skipped: this machine has a GPU";
  // The two errors this machine can give.
  EXPECT_TRUE(why == "cuda: no driver (libcuda.so.1 not found)" ||
              why == "cuda: no device")
      << why;
  TempDir dir;
  EchoCompiler compiler;
  Runtime rt({dir.path(), 1, &compiler});
  AttentionSpec spec = makeSpec(4, 4, 64);
  spec.dtype = DType::F16;
  std::vector<uint16_t> q(4 * 8 * 64, 1), o(q.size(), 7);
  AttentionArgs args;
  args.q = args.k = args.v = TensorRef(q.data(), {1, 4, 8, 64});
  args.o = TensorRef(o.data(), {1, 4, 8, 64});
  EXPECT_EQ(rt.run(spec, args, Target::CUDA), why);
  EXPECT_EQ(rt.prepare(spec, Target::CUDA), why);
  EXPECT_TRUE(std::all_of(o.begin(), o.end(), [](uint16_t x) { return x == 7; }));
  EXPECT_EQ(rt.stats().compiles, 0);
  EXPECT_EQ(compiler.compiles, 0);
  EXPECT_TRUE(dir.list().empty());

  cuda::DeviceBuffer buffer;
  EXPECT_EQ(buffer.allocate(64), why);
  EXPECT_EQ(buffer.data(), nullptr);
  EXPECT_EQ(cuda::synchronize(), why);
  std::vector<double> ms;
  EXPECT_EQ(cuda::timeKernel([] { return std::string(); }, 3, ms), why);
  EXPECT_TRUE(ms.empty());
}

TEST(RuntimeCuda, LaunchPassesTheAbiParameters) {
  if (std::string why = noGpu(); !why.empty())
    GTEST_SKIP() << "skipped: no GPU (" << why << ")";
  TempDir dir;
  EchoCompiler compiler;
  compiler.params = 4 * 11 + 9 + 7; // dense, lse, slopes
  Runtime rt({dir.path(), 1, &compiler});
  AttentionSpec spec = makeSpec(2, 1, 64, BiasKind::Alibi, true);
  spec.dtype = DType::F16;
  spec.slopes = SlopeSource::Custom;
  const int64_t B = 2, Sq = 3, Sk = 5;
  cuda::DeviceBuffer q, k, o, slopes;
  ASSERT_EQ(q.allocate(B * 2 * Sq * 64 * 2), "");
  ASSERT_EQ(k.allocate(B * 1 * Sk * 64 * 2), "");
  ASSERT_EQ(o.allocate(B * 2 * Sq * 64 * 2), "");
  ASSERT_EQ(slopes.allocate(2 * 4), "");
  ASSERT_EQ(o.fill(0), "");
  AttentionArgs args;
  args.q = TensorRef(q.data(), {B, 2, Sq, 64});
  args.k = args.v = TensorRef(k.data(), {B, 1, Sk, 64});
  args.o = TensorRef(o.data(), {B, 2, Sq, 64});
  args.slopes = TensorRef(slopes.data(), {2});
  ASSERT_EQ(rt.run(spec, args, Target::CUDA), "");
  ASSERT_EQ(cuda::synchronize(), "");
  std::vector<uint64_t> got(compiler.params);
  ASSERT_EQ(o.download(got.data(), got.size() * 8), "");

  // What packKernelParams makes of the same arguments, with the runtime's
  // lse scratch in the lse slot (its address is the kernel's to report).
  AttentionArgs expected = args;
  expected.lse = TensorRef(at(got[44]), {B, 2, Sq});
  KernelParams want;
  detail::packKernelParams(spec, expected, B, nullptr, 0, want);
  ASSERT_EQ(want.count, compiler.params);
  EXPECT_EQ(got, std::vector<uint64_t>(want.values, want.values + want.count));
  EXPECT_NE(got[44], 0u);
  EXPECT_EQ(rt.stats().compiles, 1);

  // The second run is a memory hit; a new runtime finds the disk entry.
  ASSERT_EQ(rt.run(spec, args, Target::CUDA), "");
  EXPECT_EQ(rt.stats().memoryHits, 1);
  Runtime again({dir.path(), 1, &compiler});
  ASSERT_EQ(again.prepare(spec, Target::CUDA), "");
  EXPECT_EQ(again.stats().diskHits, 1);
  EXPECT_EQ(compiler.compiles, 1);
}

} // namespace

TEST(CudaParams, BackwardWithRowStatePerHeadSlopesAndParts) {
  // gpu_bwd_sm80 (KernelABI.h): the backward's tensors, the row state
  // (lse's shape x 4), slopes [H] as [B, H] with batch stride 0, dslopes as
  // [1, H] (the kernel sums over the batch), the key padding mask, then the
  // slope gradient's parts [B, H, query blocks] and the offsets.
  AttentionSpec s = makeSpec(4, 2, 16, BiasKind::Alibi);
  s.dtype = DType::BF16;
  s.slopes = SlopeSource::Custom;
  s.keyPaddingMask = true;
  s.positionOffsets = true;
  AttentionArgs a;
  a.q = TensorRef(at(0x1000), {2, 4, 3, 16});
  a.k = TensorRef(at(0x2000), {2, 2, 5, 16});
  a.v = TensorRef(at(0x3000), {2, 2, 5, 16});
  a.o = TensorRef(at(0x4000), {2, 4, 3, 16});
  a.lse = TensorRef(at(0x5000), {2, 4, 3});
  a.slopes = TensorRef(at(0x6000), {4});
  a.keyPaddingMask = TensorRef(at(0x7000), {2, 5});
  a.qOffset = 7;
  a.kOffset = 9;
  BackwardArgs g;
  g.gradO = TensorRef(at(0x8000), {2, 4, 3, 16});
  g.gradLse = TensorRef(at(0x9000), {2, 4, 3});
  g.dq = TensorRef(at(0xa000), {2, 4, 3, 16});
  g.dk = TensorRef(at(0xb000), {2, 2, 5, 16});
  g.dv = TensorRef(at(0xc000), {2, 2, 5, 16});
  g.dslopes = TensorRef(at(0xd000), {4});
  detail::BackwardScratch scratch{at(0xe000), at(0xf000), 1};
  KernelParams p;
  detail::packBackwardParams(s, a, g, 2, scratch, p);
  const std::vector<uint64_t> want = {
      0x1000, 0x1000, 0, 2, 4, 3, 16, 192, 48, 16, 1, // q
      0x2000, 0x2000, 0, 2, 2, 5, 16, 160, 80, 16, 1, // k
      0x3000, 0x3000, 0, 2, 2, 5, 16, 160, 80, 16, 1, // v
      0x4000, 0x4000, 0, 2, 4, 3, 16, 192, 48, 16, 1, // o
      0x8000, 0x8000, 0, 2, 4, 3, 16, 192, 48, 16, 1, // grad_o
      0x5000, 0x5000, 0, 2, 4, 3, 12, 3,   1,         // lse
      0x9000, 0x9000, 0, 2, 4, 3, 12, 3,   1,         // grad_lse
      0xa000, 0xa000, 0, 2, 4, 3, 16, 192, 48, 16, 1, // dq
      0xb000, 0xb000, 0, 2, 2, 5, 16, 160, 80, 16, 1, // dk
      0xc000, 0xc000, 0, 2, 2, 5, 16, 160, 80, 16, 1, // dv
      0xe000, 0xe000, 0, 2, 4, 3, 4,  48,  12, 4,  1, // row state
      0x6000, 0x6000, 0, 2, 4, 0, 1,                  // slopes [B, H]
      0xd000, 0xd000, 0, 1, 4, 4, 1,                  // dslopes [1, H]
      0x7000, 0x7000, 0, 2, 5, 5, 1,                  // key padding mask
      0xf000, 0xf000, 0, 2, 4, 1, 4,  1,   1,         // parts
      7,      9};                                     // offsets
  EXPECT_EQ(packed(p), want);
}
