//===- FuzzCudaArtifact.cpp - The CUDA artifact header parser -------------===//

#include "CudaKernel.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tilt::detail::CudaArtifact artifact;
  std::string_view bytes(reinterpret_cast<const char *>(data), size);
  (void)tilt::detail::parseCudaArtifact(bytes, artifact);
  return 0;
}
