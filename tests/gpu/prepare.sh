#!/usr/bin/env bash
# The build-machine half of the GPU suite: builds what a GPU machine needs (it
# has no LLVM/MLIR and no package registry) and assembles it in one directory,
# which is then carried there and given to tests/gpu/run.sh.
#
#   tests/gpu/prepare.sh [DIR]      DIR defaults to .gpu/ at the root (git-ignored)
#
# Environment: TILT_BUILD_DIR (the build to use, default build/ at the root;
# configured and built by ./tilt build when it has no build.ninja yet),
# TILT_JOBS (parallel jobs for ninja and tilt-bundle, default all cores),
# TILT_CUDA_ARCH (default sm_90a).
#
# DIR receives
#   bin/tilt-run, bin/tilt-bench   the runtime-only tools (CMake targets
#                                  tilt-run-rt, tilt-bench-rt: no compiler, no
#                                  LLVM/MLIR; libstdc++ and libgcc linked in)
#   lib/                           libfmt, found by the tools' rpath
#                                  ($ORIGIN/../lib): there is no static fmt
#   kernels/                       the CUDA kernel bundle: every spec of
#                                  tests/gpu/cases.txt and of bench_torch.py's rows
#   bundle-cases.txt               the spec lines the bundle was made from
# The tools need glibc 2.35 and libstdc++ GLIBCXX 3.4.29 (GCC 11) or newer on
# the GPU machine (printed below).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$(realpath -m "${TILT_BUILD_DIR:-$root/build}")"
jobs="${TILT_JOBS:-$(nproc)}"
arch="${TILT_CUDA_ARCH:-sm_90a}" # H200 / H100 (cc 9.0)
dir="${1:-$root/.gpu}"

log() { printf '[gpu-prepare] %s\n' "$*" >&2; }

if [ ! -f "$build/build.ninja" ]; then
  log "no build in $build yet: set-up, configure and build it"
  TILT_BUILD_DIR="$build" "$root/tilt" build
fi
log "building the runtime-only tools and tilt-bundle in $build"
ninja -C "$build" -j "$jobs" tilt-run-rt tilt-bench-rt tilt-bundle

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
rm -rf "${dir:?}/bin" "${dir:?}/lib" "${dir:?}/kernels"
mkdir -p "$dir/bin" "$dir/lib"
cp "$build/bin/tilt-run-rt" "$dir/bin/tilt-run"
cp "$build/bin/tilt-bench-rt" "$dir/bin/tilt-bench"
# fmt's shared library travels with the tools (this system has no static
# one); the copy in lib/ is what their rpath finds.
fmt_lib="$(ldd "$dir/bin/tilt-run" | awk '$1 ~ /^libfmt\.so/ { print $3 }')"
if [ -n "$fmt_lib" ]; then
  cp -L "$fmt_lib" "$dir/lib/"
fi
# The GPU machine has no LLVM/MLIR: a tool that needs their shared libraries
# would fail there with a loader error instead of a test result.
for tool in "$dir/bin/tilt-run" "$dir/bin/tilt-bench"; do
  if ldd "$tool" 2>/dev/null | grep -E 'lib(LLVM|MLIR)|not found'; then
    log "error: $tool needs shared libraries the GPU machine lacks"
    exit 1
  fi
  found="$(ldd "$tool" | awk '$1 ~ /^libfmt\.so/ { print $3 }')"
  if [ -n "$fmt_lib" ] && [ "$(realpath "$found")" != "$dir/lib/$(basename "$fmt_lib")" ]; then
    log "error: $tool does not find libfmt in $dir/lib"
    exit 1
  fi
done
# What the GPU machine's C and C++ libraries must provide (libfmt uses the
# system's libstdc++).
needs="$(objdump -T "$dir/bin/tilt-run" "$dir/bin/tilt-bench" "$dir"/lib/* |
  grep -oE 'GLIBC(XX)?_[0-9.]+' | sort -V | awk -F_ '{ max[$1] = $2 }
    END { for (l in max) { printf "%s%s %s", sep, l, max[l]; sep = ", " } }')"
log "the tools need $needs or newer on the GPU machine"

{
  cat "$here/cases.txt"
  echo
  echo "# benchmark rows (tests/gpu/bench_torch.py --list-tilt-flags)"
  python3 "$here/bench_torch.py" --list-tilt-flags
} >"$dir/bundle-cases.txt"
log "compiling the CUDA kernel bundle for $arch"
"$build/bin/tilt-bundle" --target cuda --arch "$arch" --jobs "$jobs" \
  --cases "$dir/bundle-cases.txt" --out "$dir/kernels"
if [ -z "$(ls -A "$dir/kernels" 2>/dev/null)" ]; then
  log "error: tilt-bundle wrote no kernels to $dir/kernels"
  exit 1
fi

log "ready: $dir ($(du -sh "$dir" | cut -f1)); on the GPU machine: tests/gpu/run.sh [--bench] DIR"
