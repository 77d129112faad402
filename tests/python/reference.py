"""float64 attention with a linear bias, written from ALIBI.md, for the tests."""

import math

import torch


def standard_slopes(total_heads: int, max_bias: float = 8.0) -> torch.Tensor:
    p = 2 ** int(math.floor(math.log2(total_heads)))
    m = [2.0 ** (-max_bias * k / p) for k in range(1, p + 1)]
    m += [2.0 ** (-max_bias * (2 * j - 1) / (2 * p)) for j in range(1, total_heads - p + 1)]
    return torch.tensor(m, dtype=torch.float64)


def scores(q, k, *, causal=False, window=None, bias="alibi", slopes=None,
           max_bias=8.0, head_offset=0, total_heads=None, key_padding_mask=None,
           scale=None, q_offset=None, k_offset=None, dtype=torch.float64):
    """Masked scores [B, H, Sq, Sk] in `dtype` (-inf where masked)."""
    B, H, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    k = k.repeat_interleave(H // Hkv, dim=1)
    scale = scale if scale is not None else 1.0 / math.sqrt(D)
    s = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale
    # Positions: bottom-right, or absolute from the offsets.
    i = torch.arange(Sq, dtype=torch.float64)[:, None] + (
        Sk - Sq if q_offset is None else q_offset)
    j = torch.arange(Sk, dtype=torch.float64)[None, :] + (k_offset or 0)
    if slopes is None:
        m = standard_slopes(total_heads or H, max_bias)[head_offset:head_offset + H]
        m = m.expand(B, H)
    else:
        m = slopes.to(torch.float64).expand(B, H)
    m = m[:, :, None, None]
    visible = torch.ones(B, 1, Sq, Sk, dtype=torch.bool)
    if bias == "alibi":
        b = m * (j - i)
    elif bias == "alibi_symmetric":
        b = -m * (j - i).abs()
    elif bias == "alibi_positions":
        kpm = key_padding_mask.to(torch.float64)
        pos = kpm.cumsum(-1) - 1
        b = m * pos[:, None, None, :]
    else:
        b = torch.zeros(1, dtype=torch.float64)
    if key_padding_mask is not None:
        visible = visible & key_padding_mask.bool()[:, None, None, :]
    if causal:
        visible = visible & (j <= i)
    if window is not None:
        visible = visible & (i - j < window)
    s = s + b.to(dtype)
    return s.masked_fill(~visible, float("-inf"))


def attention(q, k, v, dtype=torch.float64, **kw):
    """(o, lse) computed in `dtype`; rows that see no key give 0 and -inf."""
    s = scores(q, k, dtype=dtype, **kw)
    H, Hkv = q.shape[1], k.shape[1]
    v = v.repeat_interleave(H // Hkv, dim=1).to(dtype)
    lse = torch.logsumexp(s.to(torch.float64), dim=-1)
    empty = torch.isinf(lse)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    o = (p @ v).masked_fill(empty[..., None], 0.0)
    return o, lse
