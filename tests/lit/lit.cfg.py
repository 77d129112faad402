# -*- Python -*-
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "TILT"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.tilt_obj_root)

# Captured names must not leak between CHECK-LABEL blocks.
config.environment["FILECHECK_OPTS"] = "--enable-var-scope --dump-input=fail"

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.add_tool_substitutions(
    ["tilt-opt", "tilt-compile", "tilt-run", "tilt-tune", "tilt-bundle",
     "tilt-bench", "tilt-merge"],
    [config.tilt_tools_dir])

# The build's tuned-kernel bundle serves this CPU only where kernels/ holds a
# tuning database for its class (KernelBundle.h); tests that need it say
# REQUIRES: tilt-bundle and are reported unsupported elsewhere.
bundle_index = os.path.join(config.tilt_obj_root, "..", "..", "kernels", "index")
if os.path.exists(bundle_index):
    with open(bundle_index) as f:
        if any("\t" in line for line in f):
            config.available_features.add("tilt-bundle")

# CUDA's assembler: the CUDA target's cubin and resource checks need it; the
# PTX-level tests do not.
import shutil
ptxas = shutil.which("ptxas") or (
    "/usr/local/cuda/bin/ptxas" if os.access("/usr/local/cuda/bin/ptxas", os.X_OK) else None)
if ptxas:
    config.available_features.add("ptxas")
