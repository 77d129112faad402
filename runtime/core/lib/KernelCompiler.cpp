//===- KernelCompiler.cpp - Targets, tile configs, the compiler seam ------===//

#include "tilt/KernelCompiler.h"

#include <fmt/format.h>

namespace tilt {

std::string_view toString(Target t) {
  return t == Target::CPU ? "cpu" : "cuda";
}

std::string TileConfig::str() const {
  return fmt::format("variant={};block_m={};block_n={};num_warps={};"
                     "num_stages={}",
                     variant, blockM, blockN, numWarps, numStages);
}

KernelCompiler::~KernelCompiler() = default;

} // namespace tilt
