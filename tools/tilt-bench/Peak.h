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

/// Memory read bandwidth of `threads` threads, each streaming (summing) its
/// own 128 MiB buffer -- far beyond any cache -- for a fixed time, in GB/s:
/// the floor a memory-bound kernel (decode reading K and V) is held to.
double measureReadBandwidth(int threads);

} // namespace tilt::tools

#endif // TILT_TOOLS_PEAK_H
