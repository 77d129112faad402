//===- NaiveKernel.h - The test kernel's info slot --------------*- C++ -*-===//
//
// Shared by the test kernel and the tests' FakeCompiler, which "compiles" a
// spec by writing the kernel info into the slot of a copy of the kernel's
// bytes.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_TESTS_NAIVEKERNEL_H
#define TILT_TESTS_NAIVEKERNEL_H

#include <cstddef>

/// What tilt_kernel_info holds before stamping; exactly once in the library.
/// A macro, not a constant, so no second copy of the text is ever emitted.
#define TILT_TEST_INFO_SLOT_MARKER "@@TILT_TEST_KERNEL_INFO_SLOT@@"

namespace tilt::test {
/// Bytes reserved for tilt_kernel_info, its terminating NUL included.
inline constexpr size_t kInfoSlotSize = 1024;
} // namespace tilt::test

#endif // TILT_TESTS_NAIVEKERNEL_H
