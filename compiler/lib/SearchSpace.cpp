//===- SearchSpace.cpp - Tile configurations worth timing -----------------===//

#include "tilt/Compiler/SearchSpace.h"

namespace tilt {

int64_t cpuScratchBytes(const AttentionSpec &spec, const TileConfig &c) {
  const int64_t m = c.blockM, n = c.blockN, d = spec.headDim;
  int64_t rows = 4 * m * 4; // m, l, alpha, positions' references
  if (c.variant == "cpu_amx")
    return m * d * 2                 // Q rows
           + 2 * (d / 2) * (2 * n) * 2 // packed K^T, double-buffered
           + 2 * (n / 2) * (2 * d) * 2 // packed V
           + 2 * m * n * 4             // scores
           + 2 * m * n * 2             // P
           + 2 * m * 4                 // alphas
           + 2 * m * d * 4             // P.V and Acc
           + rows;
  int64_t staged = spec.dtype == DType::F32 ? 0 : 2 * n * d * 4;
  return d * m * 4 + staged + n * m * 4 + m * d * 4 + rows;
}

std::vector<TileConfig> cpuSearchSpace(const AttentionSpec &spec,
                                       const CpuMachine &machine) {
  std::vector<TileConfig> out;
  auto add = [&](const char *variant, int64_t m, int64_t n) {
    TileConfig c;
    c.variant = variant;
    c.blockM = m;
    c.blockN = n;
    if (cpuScratchBytes(spec, c) <= kMaxCpuScratchBytes)
      out.push_back(c);
  };
  bool avx512 = machine.has("avx512f");
  const char *vector = avx512 ? "cpu_avx512" : "cpu_avx2";
  const std::vector<int64_t> rows =
      avx512 ? std::vector<int64_t>{32, 64, 128} : std::vector<int64_t>{16, 32, 64};
  for (int64_t m : rows)
    for (int64_t n : {32, 64, 128})
      add(vector, m, n);
  if (spec.dtype == DType::BF16 && spec.headDim % 32 == 0 &&
      machine.has("amx-bf16"))
    for (int64_t m : {64, 128})
      for (int64_t n : {64, 128, 256})
        add("cpu_amx", m, n);
  return out;
}

} // namespace tilt
