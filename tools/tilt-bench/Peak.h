//===- Peak.h - This machine's arithmetic peaks, measured -------*- C++ -*-===//

#ifndef TILT_TOOLS_PEAK_H
#define TILT_TOOLS_PEAK_H

namespace tilt::tools {

/// FP32 FMA throughput of `threads` threads running independent AVX-512 FMA
/// chains (AVX2 where AVX-512 is missing), in GFLOP/s.
double measureFp32Peak(int threads);

/// BF16 AMX throughput (TDPBF16PS on four accumulator tiles) of `threads`
/// threads in GFLOP/s, or 0 when the CPU or the kernel does not offer AMX.
double measureAmxPeak(int threads);

} // namespace tilt::tools

#endif // TILT_TOOLS_PEAK_H
