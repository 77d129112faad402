//===- Args.cpp - Command-line parsing shared by Tilt's tools -------------===//

#include "Args.h"

#include "tilt/TilePolicy.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>

namespace tilt::tools {

std::string parseArgs(int argc, char **argv, const std::vector<Option> &options,
                      std::vector<std::string> &positional) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    // "--name[=value]", or "-x" for a one-letter option such as -o.
    bool shortForm = arg.size() == 2 && arg[0] == '-' && std::isalpha(arg[1]);
    if (!shortForm && (arg.size() < 3 || arg.substr(0, 2) != "--")) {
      positional.emplace_back(arg);
      continue;
    }
    std::string_view name = arg.substr(shortForm ? 1 : 2);
    std::string_view value;
    bool inlineValue = false;
    if (size_t eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inlineValue = true;
    }
    const Option *opt = nullptr;
    for (const Option &o : options)
      if (o.name == name)
        opt = &o;
    if (!opt)
      return fmt::format("unknown flag {} (see --help)", arg);
    if (opt->valueName.empty()) {
      if (inlineValue)
        return fmt::format("--{} takes no value", name);
    } else if (!inlineValue) {
      if (i + 1 >= argc)
        return fmt::format("--{} needs a value ({})", name, opt->valueName);
      value = argv[++i];
    }
    if (std::string err = opt->apply(value); !err.empty())
      return err;
  }
  return {};
}

std::string helpText(const std::vector<Option> &options) {
  std::string out;
  for (const Option &o : options) {
    std::string left = "--" + o.name;
    if (!o.valueName.empty())
      left += " " + o.valueName;
    out += fmt::format("  {:<32} {}\n", left, o.help);
  }
  return out;
}

TensorRef tensorRef(void *data, const std::vector<int64_t> &shape) {
  TensorRef t;
  t.data = data;
  t.rank = static_cast<int>(shape.size());
  for (int i = 0; i < t.rank && i < 4; ++i)
    t.shape[i] = shape[size_t(i)];
  return t;
}

int toolError(std::string_view tool, std::string_view message) {
  std::fflush(stdout);
  fmt::print(stderr, "{}: error: {}\n", tool, message);
  return 1;
}

std::optional<int> parseCommandLine(int argc, char **argv,
                                    std::vector<Option> options,
                                    std::string_view tool,
                                    std::string_view usage,
                                    std::vector<std::string> &positional) {
  bool help = false;
  options.push_back(boolOption("help", "show this help", help));
  if (std::string err = parseArgs(argc, argv, options, positional);
      !err.empty())
    return toolError(tool, err);
  if (help) {
    fmt::print("usage: {}\n\n{}", usage, helpText(options));
    return 0;
  }
  return std::nullopt;
}

Option boolOption(std::string name, std::string help, bool &dst) {
  return {std::move(name), "", std::move(help), [&dst](std::string_view) {
            dst = true;
            return std::string();
          }};
}

Option stringOption(std::string name, std::string valueName, std::string help,
                    std::string &dst) {
  return {std::move(name), std::move(valueName), std::move(help),
          [&dst](std::string_view v) {
            dst = v;
            return std::string();
          }};
}

/// --name A|B: stores `a` or `b` in `dst`; anything else is an error.
static Option eitherOption(const char *name, const char *a, const char *b,
                           std::string help, std::string &dst) {
  return {name, fmt::format("{}|{}", a, b), std::move(help),
          [name, a, b, &dst](std::string_view v) -> std::string {
            if (v != a && v != b)
              return fmt::format("--{} must be {} or {}, got '{}'", name, a, b,
                                 v);
            dst = v;
            return {};
          }};
}

Option cpuClassOption(std::string help, std::optional<CpuClass> &dst) {
  return {"cpu-class", "NAME", std::move(help), [&dst](std::string_view v) {
            dst = parseCpuClass(v);
            if (!dst)
              return fmt::format("--cpu-class must be {}, got '{}'",
                                 cpuClassNames(), v);
            return std::string();
          }};
}

std::string jsonEscape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\')
      out += '\\';
    if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\u{:04x}", int(c));
    else
      out += c;
  }
  return out;
}

Option targetOption(std::string help, std::string &dst) {
  return eitherOption("target", "cpu", "cuda", std::move(help), dst);
}

Option archOption(std::string help, std::string &dst) {
  return eitherOption("arch", "sm_80", "sm_90a", std::move(help), dst);
}

std::string parseInt(std::string_view flag, std::string_view text,
                     int64_t &out, int64_t min) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size())
    return fmt::format("--{} expects an integer, got '{}'", flag, text);
  if (v < min)
    return fmt::format("--{} must be >= {}, got {}", flag, min, v);
  out = v;
  return {};
}

std::string parseDouble(std::string_view flag, std::string_view text,
                        double &out) {
  std::string s(text);
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
    return fmt::format("--{} expects a finite number, got '{}'", flag, text);
  out = v;
  return {};
}

void addSpecOptions(std::vector<Option> &options, SpecFlags &f) {
  AttentionSpec &s = f.spec;
  auto intFlag = [&](const char *name, const char *help, int64_t &dst,
                     int64_t min, bool *seen = nullptr) {
    options.push_back({name, "N", help, [name, &dst, min, seen](auto v) {
                         if (seen)
                           *seen = true;
                         return parseInt(name, v, dst, min);
                       }});
  };
  intFlag("heads", "query heads H (required)", s.heads, 1, &f.sawHeads);
  intFlag("kv-heads", "key/value heads (default: H); must divide H",
          s.kvHeads, 1, &f.sawKvHeads);
  intFlag("head-dim", "head dim D (required): a multiple of 16, 16..256",
          s.headDim, 1, &f.sawHeadDim);
  options.push_back({"dtype", "f32|f16|bf16", "input/output element type",
                     [&s](std::string_view v) -> std::string {
                       if (auto t = parseDType(v)) {
                         s.dtype = *t;
                         return {};
                       }
                       return fmt::format(
                           "--dtype must be f32, f16 or bf16, got '{}'", v);
                     }});
  options.push_back({"scale", "X", "score scale (default 1/sqrt(D))",
                     [&s](std::string_view v) {
                       double x = 0;
                       std::string err = parseDouble("scale", v, x);
                       if (err.empty())
                         s.scale = x;
                       return err;
                     }});
  options.push_back({"causal", "", "key j visible to row i only if j <= i'",
                     [&s](std::string_view) {
                       s.causal = true;
                       return std::string();
                     }});
  options.push_back({"window", "N", "sliding window: also i' - j < N",
                     [&s](std::string_view v) {
                       int64_t w = 0;
                       std::string err = parseInt("window", v, w, 1);
                       if (err.empty())
                         s.window = w;
                       return err;
                     }});
  options.push_back(
      {"bias", "KIND", "none|alibi|alibi-symmetric|alibi-positions",
       [&s](std::string_view v) -> std::string {
         if (auto k = parseBiasKind(v)) {
           s.bias = *k;
           return {};
         }
         return fmt::format("--bias must be none, alibi, alibi-symmetric or "
                            "alibi-positions, got '{}'",
                            v);
       }});
  options.push_back({"max-bias", "X", "max_bias of standard slopes (default 8)",
                     [&s](std::string_view v) {
                       return parseDouble("max-bias", v, s.maxBias);
                     }});
  options.push_back({"slopes", "FILE.npy",
                     "custom slopes, float32 [H] or [B,H]",
                     [&f](std::string_view v) {
                       f.slopesFile = v;
                       f.spec.slopes = SlopeSource::Custom;
                       return std::string();
                     }});
  options.push_back({"key-padding-mask", "FILE.npy",
                     "key padding mask [B,Sk] of 0/1",
                     [&f](std::string_view v) {
                       f.keyPaddingMaskFile = v;
                       f.spec.keyPaddingMask = true;
                       return std::string();
                     }});
  intFlag("head-offset", "first head of this tensor-parallel rank",
          s.headOffset, 0);
  intFlag("total-heads", "heads of the whole model (tensor parallelism)",
          s.totalHeads, 1);
}

void addTileConfigOptions(std::vector<Option> &options, TileConfig &config) {
  options.push_back({"variant", "NAME",
                     "kernel variant: " + kernelVariantNames() +
                         " (default: best for this CPU or GPU and dtype)",
                     [&config](std::string_view v) -> std::string {
                       if (!parseKernelVariant(v))
                         return fmt::format("--variant must be {}, got '{}'",
                                            kernelVariantNames(), v);
                       config.variant = v;
                       return {};
                     }});
  options.push_back({"block-m", "N", "query block rows (needs --variant)",
                     [&config](std::string_view v) {
                       return parseInt("block-m", v, config.blockM, 1);
                     }});
  options.push_back({"block-n", "N", "key/value block (needs --variant)",
                     [&config](std::string_view v) {
                       return parseInt("block-n", v, config.blockN, 1);
                     }});
  options.push_back({"num-warps", "N", "warps per CTA (gpu variants)",
                     [&config](std::string_view v) {
                       return parseInt("num-warps", v, config.numWarps, 1);
                     }});
  options.push_back({"num-stages", "N",
                     "K/V blocks in flight (gpu variants; cpu_decode: 1 "
                     "leaves a contiguous cache's keys ahead to the hardware "
                     "prefetchers, 2 asks for them into L2; unset, into L1)",
                     [&config](std::string_view v) {
                       return parseInt("num-stages", v, config.numStages, 1);
                     }});
}

std::string finishTileConfig(TileConfig &config) {
  if (config.variant.empty()) {
    if (config.blockM || config.blockN || config.numWarps ||
        config.numStages)
      return "--block-m, --block-n, --num-warps and --num-stages need "
             "--variant";
    return {};
  }
  // GPU block sizes left at 0 are the compiler's defaults for the variant.
  if (config.kind() && isGpuVariant(*config.kind()))
    return {};
  // The CPU decode kernels take num_stages 1 to kCpuDecodeMaxStages (0, the
  // default, cannot be passed).
  const bool cpuDecode = config.kind() && isDecodeVariant(*config.kind());
  if (config.numWarps || (config.numStages && !cpuDecode))
    return "--num-warps and --num-stages apply to gpu variants (and "
           "--num-stages 1 or 2 to cpu_decode ones)";
  if (config.numStages > kCpuDecodeMaxStages)
    return "--num-stages must be 1 or 2 for cpu_decode variants";
  // CPU block sizes left at 0: the tile policy's defaults for the variant.
  config = completeCpuConfig(config);
  return {};
}

/// The bundle next to an installed tool (<prefix>/bin/../share/tilt/kernels),
/// else the one of the build tree the tool was built in.
static std::string defaultKernelsDir() {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    std::filesystem::path installed =
        exe.parent_path().parent_path() / "share" / "tilt" / "kernels";
    if (std::filesystem::exists(installed / "index", ec))
      return installed.string();
  }
  return TILT_DEFAULT_KERNELS_DIR;
}

void addKernelsDirOption(std::vector<Option> &options, std::string &dir) {
  const char *env = std::getenv("TILT_KERNELS_DIR");
  dir = env && *env ? env : defaultKernelsDir();
  options.push_back({"kernels-dir", "DIR|none",
                     "tuned kernel bundle (default: $TILT_KERNELS_DIR, else "
                     "the installed one, else this build's)",
                     [&dir](std::string_view v) {
                       dir = v == "none" ? std::string() : std::string(v);
                       return std::string();
                     }});
}

std::string finishSpecFlags(SpecFlags &f) {
  if (!f.sawHeads)
    return "--heads is required";
  if (!f.sawHeadDim)
    return "--head-dim is required";
  if (!f.sawKvHeads)
    f.spec.kvHeads = f.spec.heads;
  if (std::string err = f.spec.validate(); !err.empty())
    return "invalid spec: " + err;
  return {};
}

} // namespace tilt::tools
