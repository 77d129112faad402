// Runtime only (Tilt::runtime): the kernel comes from the installed bundle;
// there is no compiler, so a kernel missing there would be an error.
#include "Check.h"

int main() {
  tilt::AttentionSpec spec;
  spec.heads = spec.kvHeads = 8;
  spec.headDim = 64;
  spec.bias = tilt::BiasKind::Alibi;
  spec.causal = true;
  Problem p(spec, 200);

  tilt::RuntimeOptions options;
  options.kernelsDir = TILT_KERNELS;
  options.cacheDir = std::getenv("CONSUMER_CACHE_DIR");
  tilt::Runtime runtime(options);
  std::printf("runtime_app: kernel bundle: %s\n",
              runtime.bundleStatus().c_str());
  std::string err = runtime.run(spec, p.args);
  if (err.empty() && runtime.stats().bundleHits != 1)
    err = "the kernel did not come from the installed bundle";
  return verdict("runtime_app", err, p);
}
