"""Swap a BLOOM-style attention's arithmetic for tilt.attention.

A BLOOM block computes its attention as Hugging Face's BloomAttention does:
an ALiBi tensor built from the padding mask (slope * position of each key,
positions counted over real tokens), scores = alibi + q.k^T / sqrt(D) in one
baddbmm, a causal + padding mask filled with the dtype's minimum, a float32
softmax, then P.V. That is ALIBI.md's "positions" form, which Tilt computes
without materializing any [B*H, S, S] tensor:

    tilt.attention(q, k, v, causal=True, bias="alibi_positions",
                   key_padding_mask=attention_mask)

This script builds a small random BLOOM-like attention block (batch 2,
16 heads of 64, 512 tokens, left padding on one sequence), runs it both ways
and against the same block in float64, and prints both errors on real tokens
and the speedup.

    ./tilt python runtime/python/examples/bloom_attention.py [--dtype bf16]
"""

import argparse
import math
import time

import torch
import torch.utils.benchmark

import tilt


def bloom_alibi(attention_mask: torch.Tensor, heads: int, dtype) -> torch.Tensor:
    """[B * H, 1, S]: slope_h * (position of key j among real tokens)."""
    batch, seq = attention_mask.shape
    slopes = tilt.alibi_slopes(heads)
    positions = ((attention_mask.cumsum(-1) - 1) * attention_mask)[:, None, :]
    alibi = slopes[None, :, None] * positions
    return alibi.reshape(batch * heads, 1, seq).to(dtype)


class BloomLikeAttention(torch.nn.Module):
    def __init__(self, hidden: int, heads: int, use_tilt: bool):
        super().__init__()
        self.heads, self.head_dim, self.use_tilt = heads, hidden // heads, use_tilt
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.dense = torch.nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, S, _ = x.shape
        H, D = self.heads, self.head_dim
        q, k, v = self.qkv(x).view(B, S, H, 3, D).unbind(3)
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [B, H, S, D]
        if self.use_tilt:
            ctx = tilt.attention(q, k, v, causal=True, bias="alibi_positions",
                                 key_padding_mask=attention_mask)
        else:
            alibi = bloom_alibi(attention_mask, H, x.dtype)
            scores = alibi.baddbmm(q.reshape(B * H, S, D),
                                   k.reshape(B * H, S, D).transpose(1, 2),
                                   beta=1.0, alpha=1.0 / math.sqrt(D))
            scores = scores.view(B, H, S, S)
            causal = torch.ones(S, S, dtype=torch.bool).triu(1)
            masked = causal[None, None] | ~attention_mask.bool()[:, None, None, :]
            scores = scores.masked_fill(masked, torch.finfo(scores.dtype).min)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(x.dtype)
            ctx = probs @ v
        return self.dense(ctx.transpose(1, 2).reshape(B, S, H * D))


def timed(fn, repeats):
    """Median seconds of `repeats` runs (torch.utils.benchmark, warm-up first)."""
    timer = torch.utils.benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.timeit(repeats).median


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    hidden, heads, batch, seq = 1024, 16, 2, 512
    ref = BloomLikeAttention(hidden, heads, use_tilt=False).to(dtype)
    fast = BloomLikeAttention(hidden, heads, use_tilt=True).to(dtype)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(batch, seq, hidden, dtype=dtype)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, :100] = 0  # left padding of the second sequence

    with torch.no_grad():
        # The float64 block is the yardstick for both (real tokens only: the
        # outputs at padded positions mean nothing).
        exact = BloomLikeAttention(hidden, heads, use_tilt=False).double()
        exact.load_state_dict(ref.state_dict())
        want = exact(x.double(), mask)
        real = mask.bool()
        err = {name: (m(x, mask).double() - want)[real].abs().max().item()
               for name, m in (("hf", ref), ("tilt", fast))}
        t_ref = timed(lambda: ref(x, mask), args.repeats)
        t_tilt = timed(lambda: fast(x, mask), args.repeats)
    print(f"BLOOM-like attention block, batch {batch} x {seq} tokens, {heads} heads "
          f"of {hidden // heads}, {args.dtype}, {torch.get_num_threads()} threads")
    print(f"max error vs the float64 block on real tokens: baddbmm/softmax "
          f"{err['hf']:.3e}, tilt {err['tilt']:.3e}")
    print(f"baddbmm + softmax: {t_ref * 1e3:8.2f} ms")
    print(f"tilt.attention:    {t_tilt * 1e3:8.2f} ms  ({t_ref / t_tilt:.2f}x)")
    # ALIBI.md's rule, applied to the block: no worse than twice the
    # same-dtype arithmetic it replaces (1e-4 at least, for float32).
    bound = max(2 * err["hf"] + 1e-6, 1e-4 if dtype == torch.float32 else 0.0)
    if err["tilt"] > bound:
        raise SystemExit(f"FAIL: tilt's error {err['tilt']:.3e} above {bound:.3e}")


if __name__ == "__main__":
    main()
