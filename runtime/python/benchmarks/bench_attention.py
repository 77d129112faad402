"""tilt.attention vs PyTorch's own ALiBi attention, in one process.

Peers: scaled_dot_product_attention with the ALiBi bias (and the causal mask)
as a float attn_mask [H, Sq, Sk], and flex_attention with an ALiBi score_mod
under torch.compile. Medians of --repeats runs after a warm-up; FLOPs are
4 * B * H * Sq * Sk * D (half when causal). Prints a markdown table.

    ./tilt python runtime/python/benchmarks/bench_attention.py \
        [--heads 32 --seq 2048 --head-dim 128 --dtypes f32,bf16]
"""

import argparse
import platform
import time

import torch
import torch.nn.functional as F

import tilt

try:
    from torch.nn.attention.flex_attention import flex_attention
except ImportError:  # older torch
    flex_attention = None


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args()
    B, H, S, D = args.batch, args.heads, args.seq, args.head_dim
    slopes = tilt.alibi_slopes(H)
    rows = []
    flex = torch.compile(flex_attention) if flex_attention and not args.no_flex else None
    for dt in args.dtypes.split(","):
        dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dt]
        for causal in (False, True):
            torch.manual_seed(0)
            q, k, v = (torch.randn(B, H, S, D, dtype=dtype) for _ in range(3))
            flops = 4.0 * B * H * S * S * D * (0.5 if causal else 1.0)
            i = torch.arange(S)
            bias = slopes[:, None, None] * (i[None, None, :] - i[None, :, None])
            if causal:
                bias = bias.masked_fill(i[None, :] > i[:, None], float("-inf"))
            bias = bias.to(dtype)
            t = {}
            with torch.no_grad():
                t["tilt"] = median_time(lambda: tilt.attention(q, k, v, causal=causal), args.repeats)
                t["sdpa"] = median_time(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), args.repeats)
                if flex is not None:
                    def score_mod(score, b, h, qi, kj):
                        return score + slopes[h].to(score.dtype) * (kj - qi).to(score.dtype)

                    def mask_mod(b, h, qi, kj):
                        return qi >= kj

                    block = None
                    if causal:
                        from torch.nn.attention.flex_attention import create_block_mask
                        block = create_block_mask(mask_mod, None, None, S, S, device="cpu")
                    t["flex"] = median_time(lambda: flex(q, k, v, score_mod=score_mod, block_mask=block),
                                            args.repeats)
            rows.append((dt, "causal" if causal else "full", t, flops))
    print(f"cpu: {cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"B={B} H={H} S={S} D={D}, ALiBi standard slopes")
    cols = ["tilt", "sdpa"] + (["flex"] if flex is not None else [])
    print("| dtype | mask | " + " | ".join(f"{c} ms (GFLOP/s)" for c in cols)
          + " | tilt / sdpa |" + (" tilt / flex |" if flex is not None else ""))
    print("|---|---|" + "---|" * (len(cols) + 1 + (flex is not None)))
    for dt, mask, t, flops in rows:
        cells = [f"{t[c] * 1e3:.1f} ({flops / t[c] / 1e9:.0f})" for c in cols]
        ratios = [f"{t['sdpa'] / t['tilt']:.2f}x"]
        if flex is not None:
            ratios.append(f"{t['flex'] / t['tilt']:.2f}x")
        print(f"| {dt} | {mask} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
