//===- KernelBundle.cpp - Ahead-of-time compiled kernels ------------------===//

#include "tilt/KernelBundle.h"

#include "Sha256.h"

#include <cpuid.h>
#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace tilt {

std::string hostTuningClass() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    return "x86_64";
  bool avx2 = ebx >> 5 & 1, avx512f = ebx >> 16 & 1;
  bool amxBf16 = edx >> 22 & 1, amxTile = edx >> 24 & 1;
  if (avx512f && amxBf16 && amxTile)
    return "x86_64-amx";
  if (avx512f)
    return "x86_64-avx512";
  return avx2 ? "x86_64-avx2" : "x86_64";
}

std::string hostCpuDigest() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line) && (model.empty() || flags.empty())) {
    if (model.empty() && line.rfind("model name", 0) == 0)
      model = line;
    else if (flags.empty() && line.rfind("flags", 0) == 0)
      flags = line;
  }
  return detail::sha256Hex(model + "\n" + flags);
}

std::string KernelBundle::load(const std::string &dir, KernelBundle &out) {
  out = KernelBundle();
  out.dir = dir;
  std::string path = dir + "/index";
  std::ifstream in(path);
  if (!in)
    return {};
  std::string line;
  int lineNo = 0;
  std::string cpu;
  std::unordered_map<std::string, std::string> files, cudaFiles;
  while (std::getline(in, line)) {
    ++lineNo;
    if (line.empty() || line[0] == '#')
      continue;
    if (lineNo == 1) {
      if (line != fmt::format("tilt-bundle {}", kFormat))
        return fmt::format("{}:1: not a Tilt kernel bundle index of format "
                           "{}",
                           path, kFormat);
      continue;
    }
    if (line.rfind("cpu ", 0) == 0) {
      cpu = line.substr(4);
      continue;
    }
    if (line.rfind("cuda ", 0) == 0) {
      out.cudaArch = line.substr(5);
      if (out.cudaArch != "sm_80" && out.cudaArch != "sm_90a")
        return fmt::format("{}:{}: cuda architecture must be sm_80 or sm_90a, "
                           "got '{}'",
                           path, lineNo, out.cudaArch);
      continue;
    }
    if (line.rfind("tilt ", 0) == 0)
      continue;
    // A trailing "\tcuda" marks a CUDA kernel; older indexes have none.
    const std::string_view cudaMark = "\tcuda";
    const bool isCuda = line.size() > cudaMark.size() &&
                        line.compare(line.size() - cudaMark.size(),
                                     cudaMark.size(), cudaMark) == 0;
    if (isCuda)
      line.resize(line.size() - cudaMark.size());
    size_t t1 = line.find('\t'), t2 = line.rfind('\t');
    if (t1 == std::string::npos || t1 == t2)
      return fmt::format("{}:{}: expected 'file<TAB>spec<TAB>config[<TAB>"
                         "cuda]'",
                         path, lineNo);
    (isCuda ? cudaFiles : files)[line.substr(t1 + 1)] = line.substr(0, t1);
  }
  if (!cudaFiles.empty() && out.cudaArch.empty())
    return fmt::format("{}: CUDA kernels but no 'cuda <arch>' line", path);
  if (!files.empty() && cpu == hostCpuDigest())
    out.files = std::move(files);
  out.cudaFiles = std::move(cudaFiles);
  return {};
}

std::string KernelBundle::find(const std::string &canonicalSpec,
                               const TileConfig &config, Target target) const {
  const auto &map = target == Target::CUDA ? cudaFiles : files;
  if (map.empty())
    return {};
  auto it = map.find(canonicalSpec + "\t" + config.str());
  return it == map.end() ? std::string() : dir + "/" + it->second;
}

} // namespace tilt
