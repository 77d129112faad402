//===- FuzzNpy.cpp - The .npy reader on arbitrary files -------------------===//

#include "FuzzSupport.h"
#include "Npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tilt::tools::NpyArray array;
  std::string err = tilt::tools::readNpy(
      tilt::fuzz::writeScratch("input.npy", data, size), array);
  if (err.empty()) {
    // A file that loads holds exactly as many values as its shape says.
    size_t n = 1;
    for (int64_t d : array.shape)
      n *= size_t(d);
    if (n != array.values.size())
      __builtin_trap();
  }
  return 0;
}
