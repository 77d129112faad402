//===- Sha256.h - SHA-256 (FIPS 180-4) for disk cache keys ------*- C++ -*-===//
//
// The disk cache names each artifact by a digest of everything that changes
// its bytes. A private, dependency-free implementation keeps the runtime free
// of crypto libraries; speed is irrelevant (it runs only on a memory miss).
//
//===----------------------------------------------------------------------===//

#ifndef TILT_RUNTIME_SHA256_H
#define TILT_RUNTIME_SHA256_H

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace tilt::detail {

class Sha256 {
public:
  Sha256();
  void update(std::string_view data);
  /// Pads, finishes and returns the digest; the object must not be reused.
  std::array<uint8_t, 32> finish();

private:
  void compress(const uint8_t *block);

  uint32_t state[8];
  uint8_t buffer[64];
  size_t buffered = 0;
  uint64_t totalBytes = 0;
};

/// Lower-case hex digest of `data`.
std::string sha256Hex(std::string_view data);

} // namespace tilt::detail

#endif // TILT_RUNTIME_SHA256_H
