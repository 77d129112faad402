#!/usr/bin/env python3
"""Tilt against PyTorch's attention with an ALiBi bias, on the same GPU.

For each shape (B, H, S, D), causal and not, bf16, ALiBi with the standard
slopes (max_bias 8, ALIBI.md), it times
  (a) torch.nn.functional.scaled_dot_product_attention given the bias as an
      explicit bf16 tensor [1, H, S, S] (m_h * (j - i), -inf above the diagonal
      when causal: SDPA does not take is_causal together with attn_mask);
  (b) flex_attention under torch.compile with an ALiBi score_mod (and a causal
      block mask when causal);
  (c) Tilt, through `tilt-bench --target cuda --json` with the same shape;
and prints a markdown table of TFLOP/s (4*B*H*S*S*D useful FLOPs, half when
causal) with the ratios Tilt/flex and Tilt/SDPA.

Timing of (a) and (b): CUDA events around each call, --warmup untimed calls,
then the median of --repeats timed calls (this script's own loop, not
triton.testing.do_bench). Tilt's time is tilt-bench's median with the same
--warmup and --repeats.

Before timing, SDPA's and flex's outputs are compared with each other and with
an fp32 computation on a small shape, so the bias construction is trusted.

Exit status: 0, or 1 when the bias check fails or a Tilt row failed (the table
is still written), 77 without torch or a CUDA GPU ("skipped: no GPU").

    bench_torch.py [--tilt-bench PATH] [--out FILE] [--repeats N] [--warmup N]
    bench_torch.py --list-tilt-flags    # tilt-bench flags of each row, no GPU needed
"""

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys

SHAPES = [  # (B, H, S, D)
    (2, 32, 4096, 128),
    (1, 32, 16384, 128),
    (16, 32, 512, 128),
    (1, 40, 8192, 128),
]
MAX_BIAS = 8.0
CHECK_SHAPE = (1, 12, 256, 128)  # H = 12 takes both halves of the slope rule
CHECK_TOLERANCE = 2e-2  # bf16 outputs of magnitude up to ~4: a few ulps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def standard_slopes(heads, max_bias=MAX_BIAS):
    """ALIBI.md's standard slopes: powers of 2^(-max_bias/p) for the first p
    heads, p = 2^floor(log2 H), then odd powers of the half step."""
    p = 1 << (heads.bit_length() - 1)
    slopes = [2.0 ** (-max_bias * k / p) for k in range(1, p + 1)]
    slopes += [2.0 ** (-max_bias * (2 * j - 1) / (2 * p))
               for j in range(1, heads - p + 1)]
    return slopes


def useful_flops(b, h, s, d, causal):
    return 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)


def tilt_flags(b, h, s, d, causal):
    """tilt-bench's spec and shape flags for one row (also the bundle's spec)."""
    flags = ["--heads", str(h), "--head-dim", str(d), "--dtype", "bf16",
             "--bias", "alibi", "--max-bias", f"{MAX_BIAS:g}",
             "--batch", str(b), "--seq", str(s)]
    return flags + (["--causal"] if causal else [])


def rows():
    for b, h, s, d in SHAPES:
        for causal in (False, True):
            yield b, h, s, d, causal


def one_line(text, limit=90):
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_tilt(tilt_bench, b, h, s, d, causal, warmup, repeats):
    """Tilt's TFLOP/s, or a short error message."""
    cmd = [tilt_bench, *tilt_flags(b, h, s, d, causal), "--target", "cuda",
           "--warmup", str(warmup), "--repeats", str(repeats), "--no-naive",
           "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"error: {one_line(str(e))}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        why = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return f"error: {one_line(why[-1] if why else f'exit {proc.returncode}')}"
    try:
        result = json.loads(lines[-1])
        if "median_ms" in result:
            return useful_flops(b, h, s, d, causal) / (result["median_ms"] * 1e-3) / 1e12
        return result["gflops"] / 1e3
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        return f"error: unreadable JSON ({one_line(str(e))})"


def driver_version():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True).stdout
        return out.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tilt-bench", default=os.path.join(ROOT, "build/bin/tilt-bench"),
                        help="tilt-bench with the CUDA target (default: build/bin/tilt-bench)")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--list-tilt-flags", action="store_true",
                        help="print the tilt-bench flags of every row and exit")
    args = parser.parse_args()
    if args.repeats < 10 or args.warmup < 1:
        parser.error("--repeats must be >= 10 and --warmup >= 1")

    if args.list_tilt_flags:
        for row in rows():
            print(" ".join(tilt_flags(*row)))
        return 0

    try:
        import torch
    except ImportError:
        print("skipped: no GPU")
        return 77
    if not torch.cuda.is_available():
        print("skipped: no GPU")
        return 77
    # Imported only where torch is: the helpers above run anywhere.
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    dev = torch.device("cuda")
    dtype = torch.bfloat16

    def inputs(b, h, s, d, seed=0):
        g = torch.Generator(device=dev).manual_seed(seed)
        return [torch.randn(b, h, s, d, device=dev, dtype=dtype, generator=g)
                for _ in range(3)]

    def sdpa_bias(h, s, causal):
        """[1, H, S, S] bf16: m_h * (j - i), built one head at a time in fp32."""
        idx = torch.arange(s, device=dev, dtype=torch.float32)
        rel = idx[None, :] - idx[:, None]  # j - i
        bias = torch.empty(1, h, s, s, device=dev, dtype=dtype)
        for head, m in enumerate(standard_slopes(h)):
            bh = rel * m
            if causal:
                bh.masked_fill_(rel > 0, -math.inf)
            bias[0, head].copy_(bh)
        return bias

    def flex_fn(h, s, causal):
        slopes = torch.tensor(standard_slopes(h), device=dev, dtype=torch.float32)

        def alibi(score, b, head, q_idx, kv_idx):
            return score + slopes[head] * (kv_idx - q_idx)

        block_mask = None
        if causal:
            block_mask = create_block_mask(lambda b, head, q, kv: q >= kv,
                                           None, None, s, s, device=dev)
        # A fresh compile per shape: no recompile limit to run into, no
        # silent fall-back to the eager implementation.
        torch._dynamo.reset()
        compiled = torch.compile(flex_attention, dynamic=False)
        return lambda q, k, v: compiled(q, k, v, score_mod=alibi, block_mask=block_mask)

    def median_ms(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def measure(build, row):
        """TFLOP/s of the callable that build() returns, "OOM" or an error."""
        try:
            fn = build()
            return useful_flops(*row) / (median_ms(fn) * 1e-3) / 1e12
        except torch.cuda.OutOfMemoryError:
            return "OOM"
        except Exception as e:  # a failed baseline is a table cell, not a crash
            return f"error: {one_line(f'{type(e).__name__}: {e}')}"
        finally:
            fn = None
            torch.cuda.empty_cache()

    # --- is the bias right? ----------------------------------------------
    b, h, s, d = CHECK_SHAPE
    check_lines, check_ok = [], True
    for causal in (False, True):
        q, k, v = inputs(b, h, s, d, seed=1)
        o_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_bias(h, s, causal))
        o_flex = flex_fn(h, s, causal)(q, k, v)
        # fp32 from the same bf16 inputs, the bias in fp32.
        idx = torch.arange(s, device=dev, dtype=torch.float32)
        rel = idx[None, :] - idx[:, None]
        slopes = torch.tensor(standard_slopes(h), device=dev).view(1, h, 1, 1)
        scores = q.float() @ k.float().transpose(-1, -2) / math.sqrt(d) + slopes * rel
        if causal:
            scores = scores.masked_fill(rel > 0, -math.inf)
        o_ref = torch.softmax(scores, dim=-1) @ v.float()
        diffs = [(o_sdpa.float() - o_flex.float()).abs().max().item(),
                 (o_sdpa.float() - o_ref).abs().max().item(),
                 (o_flex.float() - o_ref).abs().max().item()]
        check_ok &= all(x <= CHECK_TOLERANCE for x in diffs)
        check_lines.append(
            f"{'causal' if causal else 'non-causal'}: max |SDPA - flex| = {diffs[0]:.2e}, "
            f"|SDPA - fp32| = {diffs[1]:.2e}, |flex - fp32| = {diffs[2]:.2e}")
    del q, k, v, o_sdpa, o_flex, o_ref, scores

    # --- the table ---------------------------------------------------------
    cells = []
    for row in rows():
        b, h, s, d, causal = row
        print(f"B={b} H={h} S={s} D={d} {'causal' if causal else 'non-causal'} ...",
              file=sys.stderr, flush=True)

        def sdpa():
            q, k, v = inputs(b, h, s, d)
            bias = sdpa_bias(h, s, causal)
            return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

        def flex():
            q, k, v = inputs(b, h, s, d)
            fn = flex_fn(h, s, causal)
            return lambda: fn(q, k, v)

        cells.append((row, measure(sdpa, row), measure(flex, row),
                      run_tilt(args.tilt_bench, *row, args.warmup, args.repeats)))

    def fmt(x):
        return f"{x:.1f}" if isinstance(x, float) else x

    def ratio(a, b):
        return f"{a / b:.2f}x" if isinstance(a, float) and isinstance(b, float) else "—"

    major, minor = torch.cuda.get_device_capability()
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    out = [
        "# Tilt vs PyTorch: attention with ALiBi, bf16",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- GPU: {torch.cuda.get_device_name()} (cc {major}.{minor}), driver {driver_version()}",
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}",
        f"- tilt-bench: `{args.tilt_bench}`, kernels from "
        f"`{os.environ.get('TILT_KERNELS_DIR', '(its default)')}`",
        f"- timing: CUDA events, {args.warmup} warm-up calls, median of {args.repeats} "
        "(Tilt: tilt-bench's median with the same counts); "
        "TFLOP/s = 4·B·H·S²·D, half when causal, / median time",
        "- ALiBi: standard slopes, max_bias 8; SDPA gets the bias as a bf16 [1,H,S,S] "
        "tensor (causal folded in as -inf), flex_attention a score_mod "
        "(and a causal block mask)",
        f"- bias check at B={CHECK_SHAPE[0]} H={CHECK_SHAPE[1]} S={CHECK_SHAPE[2]} "
        f"D={CHECK_SHAPE[3]} (tolerance {CHECK_TOLERANCE:g}): "
        + "; ".join(check_lines) + ("" if check_ok else " — FAILED"),
        "",
        "| shape | causal | SDPA+bias TFLOP/s | flex+ALiBi TFLOP/s | Tilt TFLOP/s "
        "| Tilt/flex | Tilt/SDPA |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (b, h, s, d, causal), t_sdpa, t_flex, t_tilt in cells:
        out.append(f"| B={b} H={h} S={s} D={d} | {'yes' if causal else 'no'} "
                   f"| {fmt(t_sdpa)} | {fmt(t_flex)} | {fmt(t_tilt)} "
                   f"| {ratio(t_tilt, t_flex)} | {ratio(t_tilt, t_sdpa)} |")
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    tilt_failed = any(not isinstance(t, float) for *_, t in cells)
    return 0 if check_ok and not tilt_failed else 1


if __name__ == "__main__":
    sys.exit(main())
