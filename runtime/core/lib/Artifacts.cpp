//===- Artifacts.cpp - Readers and writers of the artifact formats --------===//

#include "tilt/Artifacts.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <functional>
#include <vector>

namespace tilt {

//===----------------------------------------------------------------------===//
// CPU: tilt_kernel_info
//===----------------------------------------------------------------------===//

std::string formatKernelInfo(const TileConfig &config, CpuClass isa,
                             const AttentionSpec &spec) {
  // num_stages only where it is set (the CPU decode kernels' option).
  return fmt::format(
      "abi={};variant={};block_m={};block_n={};{}isa={};spec={}",
      kKernelAbiVersion, config.variant, config.blockM, config.blockN,
      config.numStages ? fmt::format("num_stages={};", config.numStages)
                       : std::string(),
      toString(isa), spec.canonical());
}

namespace {

std::string parseInfoInt(std::string_view key, std::string_view value,
                         int64_t &out) {
  auto [end, ec] =
      std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || end != value.data() + value.size())
    return fmt::format("kernel info: {} must be an integer, got '{}'", key,
                       value);
  return {};
}

} // namespace

std::string parseKernelInfo(std::string_view text, KernelInfo &info) {
  info = KernelInfo();
  bool haveAbi = false, haveBlockM = false, haveBlockN = false,
       haveSpec = false, haveIsa = false;
  while (!text.empty()) {
    size_t eq = text.find('=');
    if (eq == std::string_view::npos)
      return fmt::format("kernel info: expected key=value, got '{}'", text);
    std::string_view key = text.substr(0, eq);
    text.remove_prefix(eq + 1);
    if (key == "spec") {
      info.spec = std::string(text);
      haveSpec = true;
      break;
    }
    size_t semi = text.find(';');
    std::string_view value = text.substr(0, semi);
    text.remove_prefix(semi == std::string_view::npos ? text.size() : semi + 1);
    std::string err;
    if (key == "abi") {
      err = parseInfoInt(key, value, info.abi);
      haveAbi = true;
    } else if (key == "block_m") {
      err = parseInfoInt(key, value, info.blockM);
      haveBlockM = true;
    } else if (key == "block_n") {
      err = parseInfoInt(key, value, info.blockN);
      haveBlockN = true;
    } else if (key == "num_stages") {
      err = parseInfoInt(key, value, info.numStages);
    } else if (key == "variant") {
      info.variant = std::string(value);
    } else if (key == "isa") {
      std::optional<CpuClass> isa = parseCpuClass(value);
      if (!isa)
        err = fmt::format("kernel info: isa must be {}, got '{}'",
                          cpuClassNames(), value);
      else
        info.isa = *isa;
      haveIsa = true;
    }
    // Other keys are informational (tools print them).
    if (!err.empty())
      return err;
  }
  if (!haveAbi || !haveBlockM || !haveBlockN || !haveIsa || !haveSpec)
    return fmt::format("kernel info: missing {}",
                       !haveAbi      ? "abi"
                       : !haveBlockM ? "block_m"
                       : !haveBlockN ? "block_n"
                       : !haveIsa    ? "isa"
                                     : "spec (it must be the last key)");
  if (info.blockM < 1 || info.blockN < 1)
    return fmt::format("kernel info: block_m and block_n must be >= 1, got "
                       "{} and {}",
                       info.blockM, info.blockN);
  return {};
}

//===----------------------------------------------------------------------===//
// CUDA: header + cubin + PTX
//===----------------------------------------------------------------------===//

std::string writeCudaArtifact(const CudaArtifact &a) {
  std::string out = kCudaArtifactMagic;
  auto line = [&](std::string_view key, const auto &value) {
    out += fmt::format("{}={}\n", key, value);
  };
  std::string tma;
  for (int i = 0; i < 3; ++i)
    if (a.tma[i])
      tma += std::string(tma.empty() ? "" : ",") + kTmaOperandNames[i];
  line("abi", a.abi);
  line("variant", a.variant);
  line("arch", a.arch);
  line("kernel", a.kernel);
  line("block_m", a.blockM);
  line("block_n", a.blockN);
  line("num_warps", a.numWarps);
  line("num_stages", a.numStages);
  line("threads", a.threads);
  line("smem", a.smem);
  line("cubin_bytes", a.cubin.size());
  line("ptx_bytes", a.ptx.size());
  line("tma", tma);
  line("ptxas", a.ptxas);
  line("spec", a.spec);
  return out + "\n" + a.cubin + a.ptx;
}

namespace {

std::string parseBoundedInt(std::string_view key, std::string_view value,
                            int64_t min, int64_t max, int64_t &out) {
  auto [end, ec] =
      std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || end != value.data() + value.size() || out < min ||
      out > max)
    return max == INT64_MAX
               ? fmt::format("cuda artifact: {} must be an integer >= {}, "
                             "got '{}'",
                             key, min, value)
               : fmt::format("cuda artifact: {} must be an integer from {} "
                             "to {}, got '{}'",
                             key, min, max, value);
  return {};
}

std::string parseTma(std::string_view value, bool (&tma)[3]) {
  std::fill_n(tma, 3, false);
  auto bad = [&] {
    return fmt::format("cuda artifact: tma must be empty or a ','-separated "
                       "subset of q,k,v, got '{}'",
                       value);
  };
  for (std::string_view rest = value; !rest.empty();) {
    size_t comma = rest.find(',');
    std::string_view name = rest.substr(0, comma);
    const auto *it =
        std::find(std::begin(kTmaOperandNames), std::end(kTmaOperandNames), name);
    if (it == std::end(kTmaOperandNames) || tma[it - kTmaOperandNames])
      return bad();
    tma[it - kTmaOperandNames] = true;
    if (comma == std::string_view::npos)
      break;
    rest.remove_prefix(comma + 1);
    if (rest.empty()) // a trailing comma
      return bad();
  }
  return {};
}

bool isSymbol(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
           c == '$' || c == '.';
  });
}

} // namespace

std::string parseCudaArtifact(std::string_view bytes, CudaArtifact &out) {
  out = CudaArtifact();
  const std::string_view magic = kCudaArtifactMagic;
  if (bytes.substr(0, magic.size()) != magic)
    return "cuda artifact: bad magic (expected TILTCUDA1)";
  bytes.remove_prefix(magic.size());

  int64_t cubinBytes = -1, ptxBytes = -1;
  std::string_view value;
  // Every key, in KernelABI.h's order; the handlers read `value`.
  struct Key {
    const char *name;
    std::function<std::string()> apply;
    bool seen = false;
  };
  const std::string_view *v = &value;
  auto intKey = [v](const char *name, int64_t min, int64_t max, int64_t &dst) {
    return Key{name, [v, name, min, max, out = &dst] {
                 return parseBoundedInt(name, *v, min, max, *out);
               }};
  };
  auto oneOf = [v](const char *name, std::string &dst,
                   std::vector<std::string_view> allowed) {
    return Key{name, [v, name, allowed, out = &dst]() -> std::string {
                 if (std::find(allowed.begin(), allowed.end(), *v) ==
                     allowed.end()) {
                   std::string names;
                   for (size_t i = 0; i < allowed.size(); ++i)
                     names += std::string(i == 0                    ? ""
                                          : i + 1 == allowed.size() ? " or "
                                                                    : ", ") +
                              std::string(allowed[i]);
                   return fmt::format("cuda artifact: {} must be {}, got '{}'",
                                      name, names, *v);
                 }
                 *out = std::string(*v);
                 return {};
               }};
  };
  Key keys[] = {
      intKey("abi", 0, INT64_MAX, out.abi),
      oneOf("variant", out.variant,
            {toString(KernelVariant::GpuSm80),
             toString(KernelVariant::GpuSm90a),
             toString(KernelVariant::GpuDecodeSm80),
             toString(KernelVariant::GpuBwdSm80)}),
      oneOf("arch", out.arch, {"sm_80", "sm_90a"}),
      {"kernel",
       [&]() -> std::string {
         if (!isSymbol(value))
           return fmt::format("cuda artifact: kernel must be a symbol name, "
                              "got '{}'",
                              value);
         out.kernel = std::string(value);
         return {};
       }},
      intKey("block_m", 1, INT64_MAX, out.blockM),
      intKey("block_n", 1, INT64_MAX, out.blockN),
      intKey("num_warps", 1, 32, out.numWarps),
      intKey("num_stages", 1, INT64_MAX, out.numStages),
      intKey("threads", 1, 1024, out.threads),
      intKey("smem", 0, INT_MAX, out.smem),
      intKey("cubin_bytes", 0, INT64_MAX, cubinBytes),
      intKey("ptx_bytes", 0, INT64_MAX, ptxBytes),
      {"tma", [&] { return parseTma(value, out.tma); }},
      {"ptxas",
       [&] {
         out.ptxas = std::string(value);
         return std::string();
       }},
      {"spec",
       [&]() -> std::string {
         if (value.empty())
           return "cuda artifact: spec must not be empty";
         out.spec = std::string(value);
         return {};
       }},
  };

  for (;;) {
    size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos)
      return "cuda artifact: the header does not end with an empty line";
    std::string_view line = bytes.substr(0, nl);
    bytes.remove_prefix(nl + 1);
    if (line.empty())
      break;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      return fmt::format("cuda artifact: header line '{}' is not key=value",
                         line);
    std::string_view name = line.substr(0, eq);
    value = line.substr(eq + 1);
    Key *key = std::find_if(std::begin(keys), std::end(keys),
                            [&](const Key &k) { return name == k.name; });
    if (key == std::end(keys))
      return fmt::format("cuda artifact: unknown header key '{}'", name);
    if (key->seen)
      return fmt::format("cuda artifact: header key '{}' is repeated", name);
    key->seen = true;
    if (std::string err = key->apply(); !err.empty())
      return err;
  }
  for (const Key &k : keys)
    if (!k.seen)
      return fmt::format("cuda artifact: missing header key '{}'", k.name);

  // Each size alone fits the payload before they are added: no overflow.
  const auto payload = int64_t(bytes.size());
  if (cubinBytes > payload || ptxBytes > payload ||
      cubinBytes + ptxBytes != payload)
    return fmt::format("cuda artifact: the payload is {} bytes, cubin_bytes "
                       "+ ptx_bytes = {} + {}",
                       payload, cubinBytes, ptxBytes);
  if (cubinBytes == 0 && ptxBytes == 0)
    return "cuda artifact: no module (cubin_bytes and ptx_bytes are both 0)";
  out.cubin = std::string(bytes.substr(0, size_t(cubinBytes)));
  out.ptx = std::string(bytes.substr(size_t(cubinBytes)));
  if (!out.cubin.empty() && out.cubin.compare(0, 4,
                                              "\x7f"
                                              "ELF") != 0)
    return "cuda artifact: cubin_bytes do not hold an ELF image";
  return {};
}

} // namespace tilt
