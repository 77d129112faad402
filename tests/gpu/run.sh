#!/usr/bin/env bash
# Runs Tilt's GPU suite on a machine with an NVIDIA GPU, from the artifacts
# that tests/gpu/prepare.sh assembled on a build machine:
#
#   tests/gpu/run.sh [--bench] [--bench-out FILE] [DIR]
#
#   DIR          bin/tilt-run, bin/tilt-bench (runtime-only builds) and
#                kernels/ (the CUDA kernel bundle); default: .gpu/ at the root
#   --bench      after the numerics, run bench_torch.py (SDPA, FlexAttention
#                and Tilt on the same GPU) and write its markdown table
#   --bench-out  where the table goes (default: DIR/bench.md)
#
# Numerics: every line of tests/gpu/cases.txt runs through
# `tilt-run --target cuda --check` and prints PASS or FAIL with its error.
# Exit status: 0 when every case passes (and the benchmark ran, with --bench),
# 1 on any failure, 2 on a usage error, 77 when there is no GPU ("skipped: no
# GPU", the automake/ctest convention for a skipped test).
#
# Pass rule: tilt-run's own. --check prints the max abs error against the
# float64 reference, the error of a naive same-dtype implementation and
# ALIBI.md's bound (2x that + 1e-6), then PASS or FAIL, and exits 1 on FAIL,
# NaN and inf included. The output file is also checked to be all finite, in
# case a NaN escapes tilt-run's check.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
case_timeout=300

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

bench=0
bench_out=""
dir=""
while (($#)); do
  case "$1" in
    --bench) bench=1 ;;
    --bench-out)
      (($# >= 2)) || usage
      bench_out="$2"
      shift ;;
    -h | --help) usage ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *)
      [ -z "$dir" ] || usage
      dir="$1" ;;
  esac
  shift
done
dir="${dir:-$root/.gpu}"

# --- is there a GPU? ---------------------------------------------------------
has_gpu() {
  if command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
      >/dev/null 2>&1
}
if ! has_gpu; then
  echo "skipped: no GPU"
  exit 77
fi

# --- the carried artifacts ---------------------------------------------------
[ -d "$dir" ] || { echo "run.sh: no artifact directory $dir (run tests/gpu/prepare.sh on the build machine)" >&2; exit 2; }
dir="$(cd "$dir" && pwd)"
for f in bin/tilt-run bin/tilt-bench; do
  [ -x "$dir/$f" ] || { echo "run.sh: $dir/$f is missing or not executable" >&2; exit 2; }
done
[ -d "$dir/kernels" ] || { echo "run.sh: $dir/kernels (the CUDA kernel bundle) is missing" >&2; exit 2; }
command -v python3 >/dev/null 2>&1 || { echo "run.sh: python3 is needed (input files, output checks)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/tilt-gpu.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -m 700 "$work/cache" "$work/out" "$work/log"
export TILT_KERNELS_DIR="$dir/kernels"
# A private, empty kernel cache: every kernel must come from the bundle (the
# runtime-only tools have no compiler to fall back on).
export TILT_CACHE_DIR="$work/cache"
python3 "$here/inputs.py" make "$work/data"

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null |
  sed 's/^/GPU: /' || true

# --- numerics ----------------------------------------------------------------
# Prints "PASS|FAIL <detail>" for case $1: tilt-run's exit status $2, its
# output in $work/out/$1.npy, its log in file $3.
judge() {
  local n="$1" status="$2" log="$3" line
  line="$(grep -m1 '^max abs error vs float64 reference:' "$log" || true)"
  # "max abs error vs float64 reference: E (naive DT: N, bound B) PASS|FAIL"
  line="${line#max abs error vs float64 reference: }"
  if ((status == 124)); then
    echo "FAIL timed out after ${case_timeout}s"
  elif ((status != 0)); then
    echo "FAIL exit $status: ${line:+max err $line; }$(tail -n 1 "$log")"
  elif [ -z "$line" ]; then
    echo "FAIL no --check result: $(tail -n 1 "$log")"
  elif ! python3 "$here/inputs.py" finite "$work/out/$n.npy" >>"$log" 2>&1; then
    echo "FAIL max err $line, but the output has NaN/inf: $(tail -n 1 "$log")"
  else
    echo "PASS max err ${line% PASS}"
  fi
}

passed=0
failed=0
n=0
# The list is read on fd 3 so that nothing a case runs can consume it.
while IFS= read -r line <&3 || [ -n "$line" ]; do
  case "$line" in '' | '#'*) continue ;; esac
  n=$((n + 1))
  read -r -a flags <<<"$line"
  log="$work/log/$n.txt"
  status=0
  # Relative input paths (data/...) resolve against $work.
  (cd "$work" && timeout "$case_timeout" "$dir/bin/tilt-run" "${flags[@]}" \
    --target cuda --check -o "$work/out/$n.npy") </dev/null >"$log" 2>&1 ||
    status=$?
  verdict="$(judge "$n" "$status" "$log")"
  case "$verdict" in PASS*) passed=$((passed + 1)) ;; *) failed=$((failed + 1)) ;; esac
  printf '%-4s case %2d: %s\n      %s\n' "${verdict%% *}" "$n" "${verdict#* }" "$line"
done 3<"$here/cases.txt"

echo "GPU numerics: $passed passed, $failed failed"
status=0
((failed == 0 && n > 0)) || status=1

# --- benchmark ---------------------------------------------------------------
if ((bench)); then
  bench_out="${bench_out:-$dir/bench.md}"
  if python3 "$here/bench_torch.py" --tilt-bench "$dir/bin/tilt-bench" \
    --out "$bench_out"; then
    echo "benchmark table: $bench_out"
  else
    echo "benchmark: bench_torch.py failed (exit $?)"
    status=1
  fi
fi
exit "$status"
