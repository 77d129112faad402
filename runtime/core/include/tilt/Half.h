//===- Half.h - f16 / bf16 rounding on the host -----------------*- C++ -*-===//
//
// Round-to-nearest-even conversions between float and the 16-bit storage the
// kernels read for f16 and bf16 inputs: how tools and tests prepare inputs,
// and how the naive same-dtype yardstick (tilt/Reference.h) rounds.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_HALF_H
#define TILT_HALF_H

#include "tilt/Spec.h"

#include <cstdint>
#include <cstring>
#include <vector>

namespace tilt {

inline uint16_t floatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) // NaN stays a quiet NaN
    return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16ToFloat(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// _Float16 conversions round to nearest even (GCC >= 12, Clang on x86-64).
inline uint16_t floatToHalf(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

inline float halfToFloat(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

/// `values` rounded to `dtype`, as the float values the kernel will see.
inline float roundTo(DType dtype, float f) {
  switch (dtype) {
  case DType::F32:
    return f;
  case DType::F16:
    return halfToFloat(floatToHalf(f));
  case DType::BF16:
    return bf16ToFloat(floatToBf16(f));
  }
  return f;
}

/// A tensor in `dtype` storage (4 or 2 bytes an element).
struct TypedBuffer {
  DType dtype = DType::F32;
  std::vector<float> f32;
  std::vector<uint16_t> bits16;

  TypedBuffer() = default;
  TypedBuffer(DType t, size_t n) : dtype(t) {
    if (t == DType::F32)
      f32.assign(n, 0.0f);
    else
      bits16.assign(n, 0);
  }
  void *data() {
    return dtype == DType::F32 ? static_cast<void *>(f32.data())
                               : static_cast<void *>(bits16.data());
  }
  size_t size() const { return dtype == DType::F32 ? f32.size() : bits16.size(); }
  void set(size_t i, float v) {
    if (dtype == DType::F32)
      f32[i] = v;
    else
      bits16[i] = dtype == DType::F16 ? floatToHalf(v) : floatToBf16(v);
  }
  float get(size_t i) const {
    if (dtype == DType::F32)
      return f32[i];
    return dtype == DType::F16 ? halfToFloat(bits16[i]) : bf16ToFloat(bits16[i]);
  }
};

} // namespace tilt

#endif // TILT_HALF_H
