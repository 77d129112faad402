//===- tilt-merge.cpp - Merge partial attention results -------------------===//
//
//   tilt-merge o1.npy lse1.npy o2.npy lse2.npy [...] -o o.npy [--lse lse.npy]
//
// Combines the (o, lse) pairs of attention over disjoint key sets -- the
// chunks of a context-parallel run, the splits of a split-KV decode -- into
// the result over all keys, exactly (ALIBI.md, "Merge"; tilt/Merge.h):
// lse = log(sum exp(lse_n)), o = sum exp(lse_n - lse) * o_n. Inputs are
// float32 .npy files as tilt-run writes them (o [..., D], lse of o's shape
// without D); outputs are float32.
//
//===----------------------------------------------------------------------===//

#include "Args.h"
#include "Npy.h"

#include "tilt/Merge.h"

#include <fmt/format.h>

using namespace tilt;
using namespace tilt::tools;

namespace {

int fail(const std::string &msg) { return toolError("tilt-merge", msg); }

struct Part {
  NpyArray o, lse;
  std::vector<float> of, lsef;
};

std::string load(const std::string &path, NpyArray &a, std::vector<float> &f,
                 size_t maxRank) {
  if (std::string err = readNpy(path, a); !err.empty())
    return err;
  if (a.dtype != "<f4" && a.dtype != "<f8")
    return fmt::format("{}: dtype '{}', expected float32", path, a.dtype);
  if (a.shape.empty() || a.shape.size() > maxRank)
    return fmt::format("{}: shape {} (rank 1 to {} expected)", path,
                       a.shapeString(), maxRank);
  f.assign(a.values.begin(), a.values.end());
  return {};
}

} // namespace

int main(int argc, char **argv) {
  std::string output, lseOutput;
  std::vector<Option> options;
  options.push_back(
      stringOption("o", "FILE.npy", "the merged o, float32 (required)", output));
  options.push_back(stringOption("lse", "FILE.npy",
                                 "also write the merged lse, float32",
                                 lseOutput));
  std::vector<std::string> files;
  if (std::optional<int> exit = parseCommandLine(
          argc, argv, options, "tilt-merge",
          "tilt-merge o1.npy lse1.npy o2.npy lse2.npy [...] -o o.npy "
          "[--lse lse.npy]",
          files))
    return *exit;
  if (files.empty() || files.size() % 2 != 0)
    return fail(fmt::format("expected pairs of o.npy lse.npy files, got {} "
                            "file(s)",
                            files.size()));
  if (output.empty())
    return fail("-o FILE.npy is required");

  std::vector<Part> parts(files.size() / 2);
  std::vector<AttentionState> states;
  for (size_t n = 0; n < parts.size(); ++n) {
    Part &p = parts[n];
    if (std::string err = load(files[2 * n], p.o, p.of, 4); !err.empty())
      return fail(err);
    if (std::string err = load(files[2 * n + 1], p.lse, p.lsef, 3);
        !err.empty())
      return fail(err);
    states.push_back({tensorRef(p.of.data(), p.o.shape),
                      tensorRef(p.lsef.data(), p.lse.shape)});
  }
  std::vector<float> o(parts[0].of.size()), lse(parts[0].lsef.size());
  if (std::string err = mergeAttentionStates(
          DType::F32, states, tensorRef(o.data(), parts[0].o.shape),
          tensorRef(lse.data(), parts[0].lse.shape));
      !err.empty())
    return fail(err);
  if (std::string err = writeNpyF32(output, parts[0].o.shape, o); !err.empty())
    return fail(err);
  if (!lseOutput.empty())
    if (std::string err = writeNpyF32(lseOutput, parts[0].lse.shape, lse);
        !err.empty())
      return fail(err);
  return 0;
}
