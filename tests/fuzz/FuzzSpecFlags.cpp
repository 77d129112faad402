//===- FuzzSpecFlags.cpp - The tools' flag parser on arbitrary argv -------===//
//
// Words are the input split at NUL and whitespace; the spec and tile-config
// flags every tool shares are parsed, and an accepted spec must validate.

#include "Args.h"

#include <cctype>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<std::string> words{"tilt-fuzz"};
  std::string word;
  for (size_t i = 0; i <= size; ++i) {
    if (i == size || data[i] == 0 || std::isspace(data[i])) {
      if (!word.empty())
        words.push_back(word);
      word.clear();
    } else {
      word += char(data[i]);
    }
  }
  std::vector<char *> argv;
  for (std::string &w : words)
    argv.push_back(w.data());
  tilt::tools::SpecFlags flags;
  tilt::TileConfig config;
  std::vector<tilt::tools::Option> options;
  tilt::tools::addSpecOptions(options, flags);
  tilt::tools::addTileConfigOptions(options, config);
  std::vector<std::string> positional;
  if (!tilt::tools::parseArgs(int(argv.size()), argv.data(), options,
                              positional)
           .empty())
    return 0;
  if (tilt::tools::finishSpecFlags(flags).empty()) {
    if (!flags.spec.validate().empty())
      __builtin_trap();
    (void)flags.spec.canonical();
  }
  (void)tilt::tools::finishTileConfig(config);
  return 0;
}
