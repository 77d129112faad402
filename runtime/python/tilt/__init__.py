"""Tilt: attention with ALiBi and other linear position biases, for PyTorch.

    import tilt
    o = tilt.attention(q, k, v, causal=True)               # ALiBi, standard slopes
    o, lse = tilt.attention(q, k, v, bias="alibi_symmetric", return_lse=True)

q is [B, H, Sq, D], k and v [B, Hkv, Sk, D] (or all [B, S, H, D] with
layout="bshd"); float32, float16 or bfloat16; CPU or CUDA. The math is that
of Tilt's ALIBI.md: scores scale * q.k + m_h * (j - i'), i' = i + Sk - Sq.
tilt.attention_paged reads k and v from a paged KV cache through a block
table (decode, chunked prefill). Kernels are Tilt's: tuned ones from the package's bundle, others
JIT-compiled on first use and kept in the disk cache ($TILT_CACHE_DIR,
default ~/.cache/tilt).
"""

from ._ops import (alibi_slopes, attention, attention_paged, attention_varlen,
                   configure, merge_states, stats)

__all__ = ["alibi_slopes", "attention", "attention_paged", "attention_varlen",
           "configure", "merge_states", "stats"]
__version__ = "0.1.0"
