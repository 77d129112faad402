//===- Artifacts.h - Readers and writers of the artifact formats -*- C++
//-*-===//
//
// One reader and one writer per artifact format (KernelABI.h), side by side:
// the compiler writes with them, the runtime and the tools read with them.
//
//   CPU:  the `tilt_kernel_info` string a kernel's shared object exports;
//   CUDA: the artifact's text header followed by the cubin and the PTX.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_ARTIFACTS_H
#define TILT_ARTIFACTS_H

#include "tilt/CpuIsa.h"
#include "tilt/KernelABI.h"
#include "tilt/KernelCompiler.h"
#include "tilt/Spec.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace tilt {

//===----------------------------------------------------------------------===//
// CPU kernel info
//===----------------------------------------------------------------------===//

/// The fields of `tilt_kernel_info` the runtime uses.
struct KernelInfo {
  int64_t abi = -1;
  int64_t blockM = 0;
  int64_t blockN = 0;
  int64_t numStages = 0; ///< the CPU decode kernels' (0 where not set)
  std::string variant;
  CpuClass isa = CpuClass::X86_64_V3;
  std::string spec;
};

/// The info string of a kernel of `config`, needing `isa`, for `spec`.
std::string formatKernelInfo(const TileConfig &config, CpuClass isa,
                             const AttentionSpec &spec);

/// Parses "key=value;...". `spec` must come last: its value is a canonical
/// spec, which itself contains ';' and '=', so it runs to the end of the
/// string. Returns "" or a one-line error.
std::string parseKernelInfo(std::string_view text, KernelInfo &info);

//===----------------------------------------------------------------------===//
// CUDA artifact
//===----------------------------------------------------------------------===//

/// The operands a CUDA artifact's `tma` key may name, in tma[] order.
inline constexpr const char *kTmaOperandNames[3] = {"q", "k", "v"};

/// The header of a CUDA artifact, and its module images.
struct CudaArtifact {
  int64_t abi = -1;
  std::string variant; ///< gpu_sm80 | gpu_sm90a
  std::string arch;    ///< the cubin's: sm_80 | sm_90a
  std::string kernel;  ///< the entry symbol
  int64_t blockM = 0, blockN = 0, numWarps = 0, numStages = 0;
  int64_t threads = 0; ///< per CTA
  int64_t smem = 0;    ///< dynamic shared memory bytes
  /// Which of q, k, v get a tensor map, in q, k, v order.
  bool tma[3] = {false, false, false};
  std::string ptxas;
  std::string spec;
  std::string cubin; ///< empty: none
  std::string ptx;   ///< may be empty when there is a cubin
  int numTma() const { return int(tma[0]) + int(tma[1]) + int(tma[2]); }
};

/// The artifact's bytes: header (KernelABI.h's keys, in its order;
/// cubin_bytes and ptx_bytes from the images) + cubin + PTX.
std::string writeCudaArtifact(const CudaArtifact &artifact);

/// Parses and checks the whole artifact: magic, every header key (a missing,
/// repeated, unknown or ill-formed key is an error naming it), and that the
/// payload is exactly cubin_bytes + ptx_bytes long. "" or a one-line error.
/// The ABI version and the spec are checked by the loader.
std::string parseCudaArtifact(std::string_view bytes, CudaArtifact &out);

} // namespace tilt

#endif // TILT_ARTIFACTS_H
