#!/usr/bin/env bash
# The build-machine half of the GPU suite: builds what a GPU machine needs (it
# has no LLVM/MLIR and no package registry) and assembles it in one directory,
# which is then carried there and given to tests/gpu/run.sh.
#
#   tests/gpu/prepare.sh [DIR]      DIR defaults to .gpu/ at the root (git-ignored)
#
# DIR receives
#   bin/tilt-run, bin/tilt-bench   the runtime-only, statically linked tools
#   kernels/                       the CUDA kernel bundle: every spec of
#                                  tests/gpu/cases.txt and of bench_torch.py's rows
#   bundle-cases.txt               the spec lines the bundle was made from
#
# ASSUMED tool options (being written alongside this script; adjust here when
# they land):
#   - build targets `tilt-run-rt` and `tilt-bench-rt` produce
#     $build/bin/tilt-run-rt and $build/bin/tilt-bench-rt, with no LLVM/MLIR
#     shared-library dependency; they load kernels from $TILT_KERNELS_DIR;
#   - `tilt-bundle --target cuda --arch sm_90a --cases FILE --out DIR` compiles
#     the CUDA kernel of every line of FILE: tilt-run/tilt-bench flag lines,
#     '#' comments and blank lines skipped, only the spec flags read (input
#     files, --seq, --batch ... ignored; --cu-seqlens-q marks a varlen spec).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${TILT_BUILD_DIR:-$root/build}"
arch="${TILT_CUDA_ARCH:-sm_90a}" # H200 / H100 (cc 9.0)
dir="${1:-$root/.gpu}"

log() { printf '[gpu-prepare] %s\n' "$*" >&2; }

log "building Tilt (set-up, configure, incremental build)"
"$root/tilt" build
log "building the runtime-only tools"
ninja -C "$build" tilt-run-rt tilt-bench-rt # ASSUMED target names

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
rm -rf "${dir:?}/bin" "${dir:?}/kernels"
mkdir -p "$dir/bin"
cp "$build/bin/tilt-run-rt" "$dir/bin/tilt-run"
cp "$build/bin/tilt-bench-rt" "$dir/bin/tilt-bench"
# The GPU machine has no LLVM/MLIR: a tool that needs their shared libraries
# would fail there with a loader error instead of a test result.
for tool in "$dir/bin/tilt-run" "$dir/bin/tilt-bench"; do
  if ldd "$tool" 2>/dev/null | grep -E 'lib(LLVM|MLIR)'; then
    log "error: $tool links LLVM/MLIR shared libraries; the GPU machine has none"
    exit 1
  fi
done

{
  cat "$here/cases.txt"
  echo
  echo "# benchmark rows (tests/gpu/bench_torch.py --list-tilt-flags)"
  python3 "$here/bench_torch.py" --list-tilt-flags
} >"$dir/bundle-cases.txt"
log "compiling the CUDA kernel bundle for $arch"
"$build/bin/tilt-bundle" --target cuda --arch "$arch" \
  --cases "$dir/bundle-cases.txt" --out "$dir/kernels" # ASSUMED options
if [ -z "$(ls -A "$dir/kernels" 2>/dev/null)" ]; then
  log "error: tilt-bundle wrote no kernels to $dir/kernels"
  exit 1
fi

log "ready: $dir ($(du -sh "$dir" | cut -f1)); on the GPU machine: tests/gpu/run.sh [--bench] DIR"
