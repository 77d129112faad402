//===- FuzzCudaArtifact.cpp - The CUDA artifact header parser -------------===//

#include "tilt/Artifacts.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tilt::CudaArtifact artifact;
  std::string_view bytes(reinterpret_cast<const char *>(data), size);
  if (!tilt::parseCudaArtifact(bytes, artifact).empty())
    return 0;
  // The writer renders what the reader accepted, and the reader takes it
  // back unchanged.
  std::string written = tilt::writeCudaArtifact(artifact);
  tilt::CudaArtifact again;
  if (!tilt::parseCudaArtifact(written, again).empty() ||
      tilt::writeCudaArtifact(again) != written)
    __builtin_trap();
  return 0;
}
