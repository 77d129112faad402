#!/usr/bin/env bash
# run.sh BUILD_DIR SOURCE_DIR WORK_DIR: installs the build into a fresh
# prefix, configures and builds tests/install/consumer against it with
# find_package(Tilt), and runs both programs. The runtime-only program must
# not load LLVM.
set -euo pipefail
build=$1 src=$2 work=$3
rm -rf "$work"
mkdir -p "$work/cache"
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
echo "installed into $work/prefix: $(find "$work/prefix" -type f | wc -l) files"
cmake -S "$src/tests/install/consumer" -B "$work/consumer" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/configure.log"
cmake --build "$work/consumer" >"$work/build.log"
if ldd "$work/consumer/runtime_app" | grep -Ei 'libLLVM|libMLIR'; then
  echo "FAIL: runtime_app links LLVM/MLIR"
  exit 1
fi
export CONSUMER_CACHE_DIR="$work/cache"
"$work/consumer/runtime_app"
"$work/consumer/jit_app"
# The installed tool finds the installed bundle on its own.
env -u TILT_KERNELS_DIR "$work/prefix/bin/tilt-run" --heads 8 --head-dim 64 \
  --bias alibi --causal --seq 200 --cache-dir "$work/cache" --time --check |
  tee "$work/tool.log"
grep -q "kernel from the tuned kernel bundle" "$work/tool.log" || {
  echo "FAIL: the installed tilt-run did not use the installed bundle"
  exit 1
}
