//===- SearchSpace.h - Tile configurations worth timing ---------*- C++ -*-===//

#ifndef TILT_COMPILER_SEARCHSPACE_H
#define TILT_COMPILER_SEARCHSPACE_H

#include "tilt/Compiler/CpuTarget.h"
#include "tilt/Runtime.h"

#include <vector>

namespace tilt {

/// Bytes of per-thread scratch (stack) a CPU kernel of `config` uses.
int64_t cpuScratchBytes(const AttentionSpec &spec, const TileConfig &config);

/// The most scratch a configuration may use: worker threads have 8 MiB
/// stacks, and a working set beyond L2 (2 MiB a core here) never wins.
inline constexpr int64_t kMaxCpuScratchBytes = 2 << 20;

/// CPU candidates for `spec` on `machine`: the widest vector ISA's block
/// sizes, plus AMX ones for bf16 where the CPU has AMX-BF16, pruned by
/// divisibility and scratch size. Always non-empty when the machine has
/// AVX2.
std::vector<TileConfig> cpuSearchSpace(const AttentionSpec &spec,
                                       const CpuMachine &machine);

} // namespace tilt

#endif // TILT_COMPILER_SEARCHSPACE_H
