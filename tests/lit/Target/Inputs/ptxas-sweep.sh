#!/bin/bash
# Every default GPU tile configuration through ptxas: head dims 16..256 x
# f16/bf16 x the targets sm_80 and sm_90a (each with its default variant:
# gpu_sm90a where it serves the spec, else gpu_sm80), plus the bias/mask
# forms that add code (positions with a padding mask, window, GQA with custom
# slopes) at D = 64, 128, 256, and the backward's (gpu_bwd_sm80, both of its
# kernels: the worse one's report) at D = 64 and 128. Prints one line per
# kernel with ptxas's
# resource report and a summary line; exits 1 on a compile failure.
set -u
compile=$1
tmp=$2
mkdir -p "$tmp"
python3 -c "import sys; sys.stdout.buffer.write(b'\x93NUMPY\x01\x00v\x00' + b\"{'descr': '<f4', 'fortran_order': False, 'shape': (12,), }\".ljust(117) + b'\n' + bytes(48))" > "$tmp/slopes.npy"
n=0 spilling=0 failed=0
run() {
  local label=$1; shift
  n=$((n + 1))
  if ! "$compile" --heads 12 "$@" --target cuda --emit artifact -o "$tmp/k.bin" 2> "$tmp/err"; then
    echo "FAILED $label: $(cat "$tmp/err")"
    failed=$((failed + 1))
    return
  fi
  local report variant
  report=$(head -c 1024 "$tmp/k.bin" | grep -a '^ptxas=' | cut -d= -f2-)
  variant=$(head -c 1024 "$tmp/k.bin" | grep -a '^variant=' | cut -d= -f2-)
  case "$report" in
    *"spill stores 0 B, spill loads 0 B"*) ;;
    *) spilling=$((spilling + 1)) ;;
  esac
  echo "$label ($variant): $report"
}
for arch in sm_80 sm_90a; do
  for dtype in f16 bf16; do
    for d in 16 32 48 64 80 96 112 128 144 160 176 192 208 224 240 256; do
      run "$arch $dtype d=$d alibi causal" --head-dim "$d" --dtype "$dtype" \
        --bias alibi --causal --arch "$arch"
    done
  done
  for d in 64 128 256; do
    run "$arch bf16 d=$d positions" --head-dim "$d" --dtype bf16 \
      --bias alibi-positions --key-padding-mask "$tmp/unused" --causal \
      --arch "$arch"
    run "$arch bf16 d=$d symmetric window" --head-dim "$d" --dtype bf16 \
      --bias alibi-symmetric --window 100 --arch "$arch"
    run "$arch f16 d=$d gqa custom slopes" --head-dim "$d" --dtype f16 \
      --kv-heads 4 --bias alibi --slopes "$tmp/slopes.npy" \
      --arch "$arch"
  done
done
# The backward above D = 128 holds dK and dV of 16 keys x D in one warp's
# registers (256 f32 a thread at D = 256) and spills: not swept.
for d in 64 128; do
  run "sm_80 bf16 d=$d backward alibi causal" --variant gpu_bwd_sm80 \
    --head-dim "$d" --dtype bf16 --bias alibi --causal
  run "sm_80 bf16 d=$d backward symmetric window" --variant gpu_bwd_sm80 \
    --head-dim "$d" --dtype bf16 --bias alibi-symmetric --window 100
  run "sm_80 f16 d=$d backward gqa custom slopes padding" \
    --variant gpu_bwd_sm80 --head-dim "$d" --dtype f16 --kv-heads 4 \
    --bias alibi --slopes "$tmp/slopes.npy" --key-padding-mask "$tmp/unused" \
    --causal
done
echo "kernels: $n, failed: $failed, spilling: $spilling"
[ "$failed" -eq 0 ]
