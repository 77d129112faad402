//===- CApi.cpp - The C API's compiler functions --------------------------===//
//
// tilt.h's tilt_compiler_create/destroy live here, beside the compiler they
// create, so that the runtime library never depends on the compiler.
//
//===----------------------------------------------------------------------===//

#include "tilt/Compiler/Compiler.h"
#include "tilt/tilt.h"

#include <cstring>
#include <new>

namespace {

void setError(char *error, size_t size, const std::string &text) {
  if (!error || size == 0)
    return;
  size_t n = std::min(size - 1, text.size());
  std::memcpy(error, text.data(), n);
  error[n] = '\0';
}

} // namespace

extern "C" tilt_compiler *tilt_compiler_create(const char *cpuClass,
                                               char *error, size_t errorSize) {
  setError(error, errorSize, "");
  tilt::CompilerOptions options;
  if (cpuClass && *cpuClass) {
    std::optional<tilt::CpuClass> cls = tilt::parseCpuClass(cpuClass);
    if (!cls) {
      setError(error, errorSize,
               "cpu_class must be " + tilt::cpuClassNames() + ", got '" +
                   cpuClass + "'");
      return nullptr;
    }
    options.machine = tilt::CpuMachine::forClass(*cls);
  }
  auto *compiler = new (std::nothrow) tilt::Compiler(options);
  if (!compiler) {
    setError(error, errorSize, "out of memory");
    return nullptr;
  }
  // The runtime sees a tilt_compiler as the KernelCompiler it is.
  return reinterpret_cast<tilt_compiler *>(
      static_cast<tilt::KernelCompiler *>(compiler));
}

extern "C" void tilt_compiler_destroy(tilt_compiler *compiler) {
  delete reinterpret_cast<tilt::KernelCompiler *>(compiler);
}
