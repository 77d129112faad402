// The JIT (Tilt::compiler): a GQA spec compiled on first use.
#include "Check.h"

#include "tilt/Compiler/Compiler.h"

int main() {
  tilt::AttentionSpec spec;
  spec.heads = 6;
  spec.kvHeads = 2;
  spec.headDim = 64;
  spec.bias = tilt::BiasKind::Alibi;
  spec.causal = true;
  Problem p(spec, 77);

  tilt::Compiler compiler;
  tilt::RuntimeOptions options;
  options.compiler = &compiler;
  options.cacheDir = std::getenv("CONSUMER_CACHE_DIR");
  tilt::Runtime runtime(options);
  std::string err = runtime.run(spec, p.args);
  if (err.empty() && runtime.stats().compiles != 1)
    err = "the kernel was not JIT-compiled";
  return verdict("jit_app", err, p);
}
