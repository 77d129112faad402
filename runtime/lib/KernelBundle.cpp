//===- KernelBundle.cpp - Ahead-of-time compiled kernels ------------------===//

#include "tilt/KernelBundle.h"

#include <fmt/format.h>

#include <fstream>
#include <map>
#include <sstream>

namespace tilt {

std::string KernelBundle::load(const std::string &dir, KernelBundle &out) {
  return load(dir, out, hostCpu().cls);
}

std::string KernelBundle::load(const std::string &dir, KernelBundle &out,
                               std::optional<CpuClass> host) {
  out = KernelBundle();
  out.dir = dir;
  std::string path = dir + "/index";
  std::ifstream in(path);
  if (!in) {
    out.status = fmt::format("no kernel bundle in {}", dir);
    return {};
  }
  std::string line;
  int lineNo = 0;
  std::map<CpuClass, std::string> tuningFiles;
  std::map<CpuClass, std::unordered_map<std::string, std::string>> files;
  std::unordered_map<std::string, std::string> cudaFiles;
  auto bad = [&](const std::string &what) {
    return fmt::format("{}:{}: {}", path, lineNo, what);
  };
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
    if (line.rfind("class ", 0) == 0) {
      std::istringstream words(line.substr(6));
      std::string name, file;
      words >> name >> file;
      std::optional<CpuClass> cls = parseCpuClass(name);
      if (!cls)
        return bad(fmt::format("class must be {}, got '{}'", cpuClassNames(),
                               name));
      if (file.empty())
        return bad("expected 'class <cpu class> <tuning database file>'");
      if (tuningFiles.count(*cls))
        return bad(fmt::format("class {} listed twice", name));
      tuningFiles[*cls] = file;
      out.classes.push_back(*cls);
      continue;
    }
    if (line.rfind("cuda ", 0) == 0) {
      out.cudaArch = line.substr(5);
      if (out.cudaArch != "sm_80" && out.cudaArch != "sm_90a")
        return bad(fmt::format("cuda architecture must be sm_80 or sm_90a, "
                               "got '{}'",
                               out.cudaArch));
      continue;
    }
    if (line.rfind("tilt ", 0) == 0)
      continue;
    // file \t spec \t config \t (class | cuda)
    size_t t1 = line.find('\t');
    size_t t3 = line.rfind('\t');
    size_t t2 = t3 == std::string::npos || t3 == 0
                    ? std::string::npos
                    : line.rfind('\t', t3 - 1);
    if (t1 == std::string::npos || t2 == std::string::npos || t2 <= t1)
      return bad("expected 'file<TAB>spec<TAB>config<TAB>class or cuda'");
    const std::string file = line.substr(0, t1);
    const std::string key = line.substr(t1 + 1, t3 - t1 - 1);
    const std::string where = line.substr(t3 + 1);
    if (where == "cuda") {
      cudaFiles[key] = file;
      continue;
    }
    std::optional<CpuClass> cls = parseCpuClass(where);
    if (!cls || !tuningFiles.count(*cls))
      return bad(fmt::format("kernel of class '{}', which no 'class' line "
                             "names before it",
                             where));
    files[*cls][key] = file;
  }
  if (!cudaFiles.empty() && out.cudaArch.empty())
    return fmt::format("{}: CUDA kernels but no 'cuda <arch>' line", path);
  out.cudaFiles = std::move(cudaFiles);

  std::string held;
  for (CpuClass c : out.classes) {
    held += (held.empty() ? "" : ", ") + std::string(toString(c));
    if (host && c <= *host && (!out.cpuClass || c > *out.cpuClass))
      out.cpuClass = c;
  }
  if (out.classes.empty()) {
    out.status = fmt::format("the bundle in {} has no CPU kernels", dir);
  } else if (!out.cpuClass) {
    out.status = fmt::format(
        "no class of the bundle in {} ({}) runs on this CPU ({})", dir, held,
        host ? toString(*host) : std::string_view("below x86-64-v3"));
  } else {
    const std::string &file = tuningFiles[*out.cpuClass];
    out.tuningDb = file == "-" ? std::string() : dir + "/" + file;
    out.files = std::move(files[*out.cpuClass]);
    out.status = fmt::format("bundle class {} serves this CPU ({}; the "
                             "bundle holds {})",
                             toString(*out.cpuClass), toString(*host), held);
  }
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
