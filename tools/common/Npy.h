//===- Npy.h - Reading and writing NumPy .npy files -------------*- C++ -*-===//

#ifndef TILT_TOOLS_NPY_H
#define TILT_TOOLS_NPY_H

#include <cstdint>
#include <string>
#include <vector>

namespace tilt::tools {

/// A C-ordered array loaded from a .npy file, widened to double.
struct NpyArray {
  std::vector<int64_t> shape;
  std::string dtype; ///< numpy descr as written in the file, e.g. "<f4"
  std::vector<double> values;
  int64_t numElements() const;
  std::string shapeString() const; ///< "[2, 12, 128, 64]"
};

/// Loads `path`. Accepts little-endian float32/float64, int32/int64, uint8
/// and bool arrays in C order. Returns "" or a one-line error naming the file.
std::string readNpy(const std::string &path, NpyArray &out);

/// Writes a float32 C-ordered array.
std::string writeNpyF32(const std::string &path,
                        const std::vector<int64_t> &shape,
                        const std::vector<float> &values);

} // namespace tilt::tools

#endif // TILT_TOOLS_NPY_H
