//===- GlibcCompat.cpp - Run the -rt tools on glibc 2.35 ------------------===//
//
// The runtime-only tools link libstdc++ statically so that they run on other
// distributions. Its random_device code, linked in whether used or not,
// calls arc4random(), which glibc has only from 2.36 on; defining it here
// keeps the tools' requirement at glibc 2.35 (Ubuntu 22.04, a common base of
// GPU machines). Nothing in Tilt draws from random_device.
//
//===----------------------------------------------------------------------===//

#include <cstdint>
#include <sys/random.h>

extern "C" uint32_t arc4random() {
  uint32_t value = 0;
  while (getrandom(&value, sizeof value, 0) != sizeof value) {
  }
  return value;
}
