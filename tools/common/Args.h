//===- Args.h - Command-line parsing shared by Tilt's tools -----*- C++ -*-===//
//
// A small table-driven parser: every tool lists its options, the spec flags
// are one shared list, and every error is one line naming the flag and what
// it accepts.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TOOLS_ARGS_H
#define TILT_TOOLS_ARGS_H

#include "tilt/CpuIsa.h"
#include "tilt/Runtime.h"
#include "tilt/Spec.h"

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tilt::tools {

struct Option {
  std::string name;      ///< without the leading "--"
  std::string valueName; ///< empty for a boolean flag
  std::string help;
  /// Applies the value ("" for booleans); returns an error or "".
  std::function<std::string(std::string_view)> apply;
};

/// Parses argv[1..] against `options`. Arguments not starting with "--" go to
/// `positional`. Returns "" or a one-line error.
std::string parseArgs(int argc, char **argv, const std::vector<Option> &options,
                      std::vector<std::string> &positional);

/// "--name VALUE  help" lines for every option.
std::string helpText(const std::vector<Option> &options);

/// Prints "<tool>: error: <message>" to stderr (after flushing stdout, so it
/// follows what the tool printed) and returns 1, the tools' failure status.
int toolError(std::string_view tool, std::string_view message);

/// A TensorRef over `data` with `shape` (rank at most 4, as the tools'
/// .npy readers and callers ensure).
TensorRef tensorRef(void *data, const std::vector<int64_t> &shape);

/// Every tool's command line: parses argv against `options` plus --help.
/// Returns nothing when the tool should go on; else the status to exit with:
/// 0 after printing "usage: <usage>" and the options for --help, 1 after
/// reporting a bad argument through toolError().
std::optional<int> parseCommandLine(int argc, char **argv,
                                    std::vector<Option> options,
                                    std::string_view tool,
                                    std::string_view usage,
                                    std::vector<std::string> &positional);

/// A flag without value that sets `dst`.
Option boolOption(std::string name, std::string help, bool &dst);
/// A flag whose value is stored in `dst` as given.
Option stringOption(std::string name, std::string valueName, std::string help,
                    std::string &dst);
/// --target cpu|cuda, stored in `dst` as given; anything else is an error.
Option targetOption(std::string help, std::string &dst);
/// --arch sm_80|sm_90a: the CUDA architecture, stored in `dst` as given.
Option archOption(std::string help, std::string &dst);

/// --cpu-class NAME: an ISA class of CpuIsa.h, stored in `dst`.
Option cpuClassOption(std::string help, std::optional<CpuClass> &dst);

/// `text` as the inside of a JSON string.
std::string jsonEscape(std::string_view text);

/// Typed value parsers for Option::apply; they name the flag in errors.
std::string parseInt(std::string_view flag, std::string_view text,
                     int64_t &out, int64_t min);
std::string parseDouble(std::string_view flag, std::string_view text,
                        double &out);

/// The spec as users write it on a command line.
struct SpecFlags {
  AttentionSpec spec;
  std::string slopesFile;         ///< --slopes FILE.npy (custom slopes)
  std::string keyPaddingMaskFile; ///< --key-padding-mask FILE.npy
  bool sawHeads = false, sawKvHeads = false, sawHeadDim = false;
};

/// Appends the shared spec flags, writing into `flags`.
void addSpecOptions(std::vector<Option> &options, SpecFlags &flags);

/// Fills defaults (kv heads = heads) and validates; returns "" or an error.
std::string finishSpecFlags(SpecFlags &flags);

/// --variant, --block-m, --block-n: a tile configuration for tools that
/// compile or run kernels. Left untouched, the compiler picks its default.
void addTileConfigOptions(std::vector<Option> &options, TileConfig &config);
/// Checks the combination and fills unset block sizes; "" or an error.
std::string finishTileConfig(TileConfig &config);

/// --kernels-dir DIR|none: the ahead-of-time bundle the runtime uses. The
/// default is $TILT_KERNELS_DIR, else the one this build made.
void addKernelsDirOption(std::vector<Option> &options, std::string &dir);

} // namespace tilt::tools

#endif // TILT_TOOLS_ARGS_H
