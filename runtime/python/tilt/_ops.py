"""tilt.attention and friends as torch.library custom ops.

The ops (tilt::attention, tilt::attention_varlen) take only what a schema can
say (tensors, bools, ints, floats, strings) and always return (o, lse), so
that torch.compile traces them through their fake implementations without a
graph break. The public functions check every argument first and raise a
ValueError naming it.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Tuple

import torch

from . import _tilt

_BIASES = ("alibi", "alibi_symmetric", "alibi_positions", None)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_NO_MERGE_BACKWARD = ("tilt.merge_states: gradients are not available yet; "
                      "call it under torch.no_grad() or on tensors that do "
                      "not require grad")
_NO_PAGED_BACKWARD = ("tilt.attention_paged: a paged KV cache is for "
                      "inference and has no backward; call it under "
                      "torch.no_grad() (train with tilt.attention)")
_configured = False


def configure(*, kernels_dir: Optional[str] = None,
              cache_dir: Optional[str] = None, threads: int = 0) -> None:
    """Sets where kernels come from, before the first call.

    kernels_dir: an ahead-of-time kernel bundle (default: $TILT_KERNELS_DIR,
    else the one shipped in the package); "" for none. cache_dir: the disk
    cache (default: $TILT_CACHE_DIR, else ~/.cache/tilt). threads: CPU
    threads (0: every core).
    """
    global _configured
    if kernels_dir is None:
        kernels_dir = os.environ.get("TILT_KERNELS_DIR") or os.path.join(
            os.path.dirname(__file__), "kernels")
        if not os.path.exists(os.path.join(kernels_dir, "index")):
            kernels_dir = ""
    if not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads: must be an int >= 0, got {threads!r}")
    _tilt.configure(kernels_dir, cache_dir or "", threads)
    _configured = True


def stats() -> dict:
    """Counters of the process's runtime: compiles, bundle/disk/memory hits."""
    _ensure_configured()
    return _tilt.stats()


def _ensure_configured() -> None:
    if not _configured:
        configure()


def alibi_slopes(heads: int, max_bias: float = 8.0) -> torch.Tensor:
    """The standard ALiBi slopes of `heads` heads (float32 [heads])."""
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
        raise ValueError(f"heads: must be an int >= 1, got {heads!r}")
    if (not isinstance(max_bias, (int, float)) or isinstance(max_bias, bool)
            or not 0 < max_bias < math.inf):
        raise ValueError(f"max_bias: must be a finite positive number, got {max_bias!r}")
    return torch.tensor(_tilt.standard_slopes(heads, float(max_bias)),
                        dtype=torch.float32)


# --- the custom ops -----------------------------------------------------------

def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _empty_in_order(t: torch.Tensor) -> torch.Tensor:
    """An uninitialized tensor shaped like `t` [B, H, S, D] in `t`'s memory
    order: [B, S, H, D] memory when t's heads lie inside its rows (a
    layout="bshd" view, a fused QKV slice), else row-major [B, H, S, D]. The
    outputs and gradients of in-place strided inputs so come back in the
    caller's layout without a copy."""
    if t.dim() == 4 and t.stride(1) < t.stride(2):
        B, H, S, D = t.shape
        return t.new_empty((B, S, H, D)).transpose(1, 2)
    return t.new_empty(t.shape)


def _grads_like(q, k, v):
    """dq, dk, dv in the inputs' memory order."""
    return tuple(_empty_in_order(t) for t in (q, k, v))


@torch.library.custom_op("tilt::attention", mutates_args=(), device_types=("cpu", "cuda"))
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  slopes: Optional[torch.Tensor],
                  key_padding_mask: Optional[torch.Tensor], causal: bool,
                  window: int, bias: str, max_bias: float, head_offset: int,
                  total_heads: int, scale: float, q_offset: int,
                  k_offset: int) -> Tuple[torch.Tensor, torch.Tensor]:
    _ensure_configured()
    o = _empty_in_order(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    _tilt.forward(q, k, v, o, lse, slopes, key_padding_mask, None, None,
                  causal, window, bias, max_bias, head_offset, total_heads,
                  scale, q_offset, k_offset, _stream(q))
    return o, lse


@_attention_op.register_fake
def _(q, k, v, slopes, key_padding_mask, causal, window, bias, max_bias,
      head_offset, total_heads, scale, q_offset, k_offset):
    return (_empty_in_order(q),
            q.new_empty(q.shape[:3], dtype=torch.float32))


def _fill_past(t: torch.Tensor, cu_seqlens: torch.Tensor, value: float,
               dim: int = 0) -> None:
    """Sets the rows of packed `t` (along `dim`) past cu_seqlens[-1] to
    `value`: tokens no sequence covers (padding to a fixed count), which the
    runtime leaves alone. On the device, without a host sync."""
    n = t.shape[dim]
    if n == 0:
        return
    past = torch.arange(n, device=t.device) >= cu_seqlens[-1].to(t.device)
    shape = [1] * t.dim()
    shape[dim] = n
    t.masked_fill_(past.view(shape), value)


@torch.library.custom_op("tilt::attention_varlen", mutates_args=(), device_types=("cpu", "cuda"))
def _attention_varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
                         slopes: Optional[torch.Tensor], causal: bool,
                         window: int, bias: str, max_bias: float,
                         head_offset: int, total_heads: int,
                         scale: float, q_offset: int,
                         k_offset: int) -> Tuple[torch.Tensor, torch.Tensor]:
    _ensure_configured()
    o = torch.empty_like(q)
    lse = torch.empty((q.shape[1], q.shape[0]), dtype=torch.float32,
                      device=q.device)
    _tilt.forward(q, k, v, o, lse, slopes, None, cu_seqlens_q, cu_seqlens_k,
                  causal, window, bias, max_bias, head_offset, total_heads,
                  scale, q_offset, k_offset, _stream(q))
    _fill_past(o, cu_seqlens_q, 0.0)
    _fill_past(lse, cu_seqlens_q, -math.inf, dim=1)
    return o, lse


@_attention_varlen_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, slopes, causal, window, bias,
      max_bias, head_offset, total_heads, scale, q_offset, k_offset):
    return (torch.empty_like(q),
            q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32))


@torch.library.custom_op("tilt::attention_paged", mutates_args=(), device_types=("cpu", "cuda"))
def _attention_paged_op(q: torch.Tensor, k_cache: torch.Tensor,
                        v_cache: torch.Tensor, block_table: torch.Tensor,
                        context_lens: torch.Tensor,
                        slopes: Optional[torch.Tensor], causal: bool,
                        window: int, bias: str, max_bias: float,
                        head_offset: int, total_heads: int,
                        scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    _ensure_configured()
    o = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    _tilt.forward_paged(q, k_cache, v_cache, o, lse, block_table, context_lens,
                        slopes, causal, window, bias, max_bias, head_offset,
                        total_heads, scale)
    return o, lse


@_attention_paged_op.register_fake
def _(q, k_cache, v_cache, block_table, context_lens, slopes, causal, window,
      bias, max_bias, head_offset, total_heads, scale):
    return (torch.empty_like(q),
            q.new_empty(q.shape[:3], dtype=torch.float32))


@torch.library.custom_op("tilt::merge_states", mutates_args=(), device_types=("cpu",))
def _merge_op(outputs: List[torch.Tensor], lses: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    o = torch.empty_like(outputs[0])
    lse = torch.empty_like(lses[0])
    _tilt.merge(outputs, lses, o, lse)
    return o, lse


@_merge_op.register_fake
def _(outputs, lses):
    return torch.empty_like(outputs[0]), torch.empty_like(lses[0])


@torch.library.register_kernel("tilt::merge_states", "cuda")
def _(outputs, lses):
    # The same formula with torch's operations, in float32, on the device.
    lse_all = torch.stack(lses)                       # [N, ...]
    lse = torch.logsumexp(lse_all, dim=0)
    w = torch.exp(lse_all - lse).nan_to_num(0.0)      # rows of all -inf: 0
    o = (w[..., None] * torch.stack(outputs).float()).sum(0)
    return o.to(outputs[0].dtype), lse


@torch.library.custom_op("tilt::attention_backward", mutates_args=(), device_types=("cpu", "cuda"))
def _attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           o: torch.Tensor, lse: torch.Tensor,
                           grad_o: torch.Tensor,
                           grad_lse: Optional[torch.Tensor],
                           slopes: Optional[torch.Tensor],
                           key_padding_mask: Optional[torch.Tensor],
                           cu_seqlens_q: Optional[torch.Tensor],
                           cu_seqlens_k: Optional[torch.Tensor],
                           want_dslopes: bool, causal: bool, window: int,
                           bias: str, max_bias: float, head_offset: int,
                           total_heads: int, scale: float, q_offset: int,
                           k_offset: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv and dslopes (f32 like slopes; empty unless want_dslopes).
    grad_lse: the upstream gradient of lse, or None."""
    _ensure_configured()
    dq, dk, dv = _grads_like(q, k, v)
    dslopes = (torch.empty_like(slopes) if want_dslopes and slopes is not None
               else q.new_empty((0,), dtype=torch.float32))
    _tilt.backward(q, k, v, o, lse, _kernel_view(grad_o),
                   None if grad_lse is None else grad_lse.contiguous(),
                   dq, dk, dv,
                   dslopes if dslopes.numel() else None, slopes,
                   key_padding_mask, cu_seqlens_q, cu_seqlens_k, causal,
                   window, bias, max_bias, head_offset, total_heads, scale,
                   q_offset, k_offset, _stream(q))
    if cu_seqlens_q is not None:
        _fill_past(dq, cu_seqlens_q, 0.0)
        _fill_past(dk, cu_seqlens_k, 0.0)
        _fill_past(dv, cu_seqlens_k, 0.0)
    return dq, dk, dv, dslopes


@_attention_backward_op.register_fake
def _(q, k, v, o, lse, grad_o, grad_lse, slopes, key_padding_mask, cu_seqlens_q,
      cu_seqlens_k, want_dslopes, causal, window, bias, max_bias, head_offset,
      total_heads, scale, q_offset, k_offset):
    dslopes = (torch.empty_like(slopes) if want_dslopes and slopes is not None
               else q.new_empty((0,), dtype=torch.float32))
    return (*_grads_like(q, k, v), dslopes)


def _setup_attention(ctx, inputs, output):
    (q, k, v, slopes, kpm, causal, window, bias, max_bias, head_offset,
     total_heads, scale, q_offset, k_offset) = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, slopes, kpm, o, lse)
    ctx.options = (causal, window, bias, max_bias, head_offset, total_heads,
                   scale, q_offset, k_offset)


def _attention_backward(ctx, grad_o, grad_lse):
    q, k, v, slopes, kpm, o, lse = ctx.saved_tensors
    want_dslopes = slopes is not None and ctx.needs_input_grad[3]
    dq, dk, dv, dslopes = _attention_backward_op(
        q, k, v, o, lse, grad_o, grad_lse, slopes, kpm, None, None,
        want_dslopes, *ctx.options)
    return (dq, dk, dv, dslopes if want_dslopes else None) + (None,) * 10


def _setup_attention_varlen(ctx, inputs, output):
    (q, k, v, cu_q, cu_k, slopes, causal, window, bias, max_bias, head_offset,
     total_heads, scale, q_offset, k_offset) = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, cu_q, cu_k, slopes, o, lse)
    ctx.options = (causal, window, bias, max_bias, head_offset, total_heads,
                   scale, q_offset, k_offset)


def _attention_varlen_backward(ctx, grad_o, grad_lse):
    q, k, v, cu_q, cu_k, slopes, o, lse = ctx.saved_tensors
    want_dslopes = slopes is not None and ctx.needs_input_grad[5]
    dq, dk, dv, dslopes = _attention_backward_op(
        q, k, v, o, lse, grad_o, grad_lse, slopes, None, cu_q, cu_k,
        want_dslopes, *ctx.options)
    return ((dq, dk, dv, None, None, dslopes if want_dslopes else None)
            + (None,) * 9)


def _no_merge_backward(ctx, grad_o, grad_lse):
    raise NotImplementedError(_NO_MERGE_BACKWARD)


def _no_context(ctx, inputs, output):
    pass


def _no_paged_backward(ctx, grad_o, grad_lse):
    raise NotImplementedError(_NO_PAGED_BACKWARD)


_attention_op.register_autograd(_attention_backward,
                                setup_context=_setup_attention)
_attention_varlen_op.register_autograd(_attention_varlen_backward,
                                       setup_context=_setup_attention_varlen)
_merge_op.register_autograd(_no_merge_backward, setup_context=_no_context)
_attention_paged_op.register_autograd(_no_paged_backward,
                                      setup_context=_no_context)


# --- argument checks ----------------------------------------------------------

def _check_tensor(name: str, t, rank: int, what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise ValueError(f"{name}: dtype must be float32, float16 or bfloat16, got {t.dtype}")
    if t.dim() != rank:
        raise ValueError(f"{name}: must be {what} (rank {rank}), got shape {list(t.shape)}")
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name}: device must be cpu or cuda, got {t.device}")


def _check_same(name: str, t: torch.Tensor, q: torch.Tensor) -> None:
    if t.dtype != q.dtype:
        raise ValueError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
    if t.device != q.device:
        raise ValueError(f"{name}: device {t.device} differs from q's {q.device}")


def _kernel_view(t: torch.Tensor) -> torch.Tensor:
    """`t` as the kernels take it. The CPU kernels read q, k, v (and write
    o and the gradients) through their strides, so [B, S, H, D] tensors and
    slices of a fused QKV tensor are used in place; only a last dimension
    that is not unit-stride (an expanded gradient, say) is copied. So do the
    CUDA kernels (which also need addresses and strides in multiples of 16
    bytes: the runtime names a tensor that has not)."""
    if t.stride(-1) != 1:
        return t.contiguous()
    return t


def _is_int(x, low: int) -> bool:
    """An int (not a bool) from `low` to 2**62 (the runtime's int64 fields
    with room to spare)."""
    return isinstance(x, int) and not isinstance(x, bool) and low <= x <= 2**62


def _check_options(causal, window, bias, max_bias, head_offset, total_heads,
                   scale, heads):
    if not isinstance(causal, bool):
        raise ValueError(f"causal: must be a bool, got {causal!r}")
    if window is not None and not _is_int(window, 1):
        raise ValueError(f"window: must be None or an int from 1 to 2**62, got {window!r}")
    if bias not in _BIASES:
        raise ValueError(f"bias: must be one of 'alibi', 'alibi_symmetric', "
                         f"'alibi_positions' or None, got {bias!r}")
    if not isinstance(max_bias, (int, float)) or isinstance(max_bias, bool) or not max_bias > 0:
        raise ValueError(f"max_bias: must be a positive number, got {max_bias!r}")
    if not _is_int(head_offset, 0):
        raise ValueError(f"head_offset: must be an int from 0 to 2**62, got {head_offset!r}")
    if total_heads is not None and not _is_int(total_heads, heads + head_offset):
        raise ValueError(f"total_heads: must be None or an int from head_offset + H "
                         f"({head_offset + heads}) to 2**62, got {total_heads!r}")
    if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0):
        raise ValueError(f"scale: must be None or a positive number, got {scale!r}")


def _check_slopes(slopes, q: torch.Tensor, heads: int, batch: Optional[int], bias):
    if slopes is None:
        return None
    if bias is None:
        raise ValueError("slopes: given with bias=None (slopes need an alibi bias)")
    if not isinstance(slopes, torch.Tensor):
        raise ValueError(f"slopes: must be a torch.Tensor, got {type(slopes).__name__}")
    ok = (slopes.dim() == 1 and slopes.shape[0] == heads) or (
        batch is not None and slopes.dim() == 2 and tuple(slopes.shape) == (batch, heads))
    if not ok:
        want = f"[{heads}]" + (f" or [{batch}, {heads}]" if batch is not None else "")
        raise ValueError(f"slopes: must be {want}, got shape {list(slopes.shape)}")
    if slopes.device != q.device:
        raise ValueError(f"slopes: device {slopes.device} differs from q's {q.device}")
    if not slopes.is_floating_point():
        raise ValueError(f"slopes: must be a floating tensor, got {slopes.dtype}")
    # float32 as the kernels read it; a copy only when it is not already.
    # Not detached: trainable slopes get their gradient through the op.
    return slopes.to(torch.float32).contiguous()


def _bias_name(bias) -> str:
    return "none" if bias is None else bias


def _check_offsets(q_offset, k_offset, bias) -> Tuple[int, int]:
    """The op's (q_offset, k_offset): (-1, -1) when neither is given."""
    if q_offset is None and k_offset is None:
        return -1, -1
    for name, x in (("q_offset", q_offset), ("k_offset", k_offset)):
        if not isinstance(x, int) or isinstance(x, bool) or x < 0:
            raise ValueError(f"{name}: must be an int >= 0 given together with "
                             f"{'k_offset' if name == 'q_offset' else 'q_offset'}, got {x!r}")
    if bias == "alibi_positions":
        raise ValueError("q_offset: position offsets cannot be combined with "
                         "bias='alibi_positions' (its positions come from the mask)")
    return q_offset, k_offset


# --- public API -----------------------------------------------------------------

def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
              causal: bool = False, window: Optional[int] = None,
              bias: Optional[str] = "alibi", slopes: Optional[torch.Tensor] = None,
              max_bias: float = 8.0, head_offset: int = 0,
              total_heads: Optional[int] = None,
              key_padding_mask: Optional[torch.Tensor] = None,
              scale: Optional[float] = None, return_lse: bool = False,
              layout: str = "bhsd", q_offset: Optional[int] = None,
              k_offset: Optional[int] = None):
    """Attention with a linear position bias.

    q: [B, H, Sq, D]; k, v: [B, Hkv, Sk, D] (H % Hkv == 0: GQA/MQA); with
    layout="bshd" all three are [B, S, H, D] and so is the output.
    bias: "alibi" (m_h * (j - i')), "alibi_symmetric" (-m_h * |j - i'|),
    "alibi_positions" (m_h * pos_j, pos from key_padding_mask), or None.
    slopes: float [H] or [B, H] (default: the standard slopes for max_bias,
    of total_heads heads starting at head_offset, for tensor parallelism).
    key_padding_mask: bool or integer [B, Sk], True/nonzero = a real key.
    causal and window (i' - j < window) mask keys; a row that sees no key
    gives o = 0 and lse = -inf. Returns o, and lse [B, H, Sq] (float32,
    natural log) with return_lse=True.
    Autograd (CPU; CUDA: gpu_bwd_sm80, not yet run on a GPU): gradients
    for q, k, v and, when they require grad, the slopes (trainable ALiBi
    slopes), from Tilt's fused backward kernels, through o and lse alike.
    q_offset, k_offset (context parallelism, given together): query row i
    and key j sit at the absolute positions q_offset + i and k_offset + j
    instead of the bottom-right rule (i' = i + Sk - Sq); run each chunk of
    keys with its offsets and combine the results with merge_states().

    Strides: q, k, v go to the runtime through their strides (the last
    dimension unit-stride; on CUDA addresses and strides must also be
    multiples of 16 bytes, else a ValueError names the tensor), so
    layout="bshd" tensors and slices of a fused QKV tensor are not copied
    here, and o (like the gradients) comes back in q's memory
    order (bshd: a contiguous [B, S, H, D]); for long CPU prefill the
    runtime gathers strided K and V into its scratch once per call, which is
    faster than rereading them. (The CUDA kernels' strided addressing is
    verified by the CTA emulator, not yet on a GPU.)
    """
    if layout not in ("bhsd", "bshd"):
        raise ValueError(f"layout: must be 'bhsd' or 'bshd', got {layout!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 4, "[B, S, H, D]" if layout == "bshd" else "[B, H, S, D]")
    for name, t in (("k", k), ("v", v)):
        _check_same(name, t, q)
    if layout == "bshd":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    q, k, v = (_kernel_view(t) for t in (q, k, v))
    B, H, Sq, D = q.shape
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k: shape {list(k.shape)} does not match q's batch {B} and head dim {D}")
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"v: shape {list(v.shape)} differs from k's {list(k.shape)}")
    Hkv = k.shape[1]
    if Hkv < 1 or H % Hkv != 0:
        raise ValueError(f"k: {Hkv} kv heads do not divide q's {H} heads")
    _check_options(causal, window, bias, max_bias, head_offset, total_heads, scale, H)
    slopes = _check_slopes(slopes, q, H, B, bias)
    kpm = None
    if key_padding_mask is not None:
        m = key_padding_mask
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != (B, k.shape[2]):
            raise ValueError(f"key_padding_mask: must be a tensor [B, Sk] = [{B}, {k.shape[2]}], "
                             f"got {list(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__}")
        if m.device != q.device:
            raise ValueError(f"key_padding_mask: device {m.device} differs from q's {q.device}")
        if m.dtype not in (torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64):
            raise ValueError(f"key_padding_mask: must be a bool or integer tensor, got {m.dtype}")
        kpm = (m != 0).to(torch.uint8).contiguous()  # any nonzero: a real key
    elif bias == "alibi_positions":
        raise ValueError("key_padding_mask: bias='alibi_positions' needs one")
    qo, ko = _check_offsets(q_offset, k_offset, bias)
    o, lse = _attention_op(q, k, v, slopes, kpm, causal, window or 0,
                           _bias_name(bias), float(max_bias), head_offset,
                           total_heads or 0, float(scale or 0.0), qo, ko)
    if layout == "bshd":
        o = o.transpose(1, 2)  # [B, S, H, D] memory (_empty_in_order)
    return (o, lse) if return_lse else o


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor, *,
                     causal: bool = False, window: Optional[int] = None,
                     bias: Optional[str] = "alibi",
                     slopes: Optional[torch.Tensor] = None, max_bias: float = 8.0,
                     head_offset: int = 0, total_heads: Optional[int] = None,
                     scale: Optional[float] = None, return_lse: bool = False,
                     q_offset: Optional[int] = None,
                     k_offset: Optional[int] = None):
    """Ragged batches: q [total_q, H, D], k, v [total_k, Hkv, D] packed, with
    cumulative offsets cu_seqlens_q / cu_seqlens_k (int32 [B+1]). lse is
    [H, total_q]. Rows past cu_seqlens_q[-1] (cu_seqlens_k[-1]), padding to
    a fixed token count, belong to no sequence: o = 0 and lse = -inf there,
    and their gradients are 0. Other arguments as for attention()."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 3, "[total, H, D]")
    for name, t in (("k", k), ("v", v)):
        _check_same(name, t, q)
    q, k, v = (_kernel_view(t) for t in (q, k, v))
    for name, c in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not isinstance(c, torch.Tensor) or c.dim() != 1 or c.shape[0] < 2:
            raise ValueError(f"{name}: must be an int32 tensor [B+1] with B >= 1")
        if c.dtype != torch.int32:
            raise ValueError(f"{name}: dtype must be int32, got {c.dtype}")
        if c.device != q.device:
            raise ValueError(f"{name}: device {c.device} differs from q's {q.device}")
    if cu_seqlens_k.shape[0] != cu_seqlens_q.shape[0]:
        raise ValueError("cu_seqlens_k: must have as many entries as cu_seqlens_q")
    H, D = q.shape[1], q.shape[2]
    if k.shape[2] != D or tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"k, v: shapes {list(k.shape)}, {list(v.shape)} do not match q's head dim {D}")
    if k.shape[1] < 1 or H % k.shape[1] != 0:
        raise ValueError(f"k: {k.shape[1]} kv heads do not divide q's {H} heads")
    _check_options(causal, window, bias, max_bias, head_offset, total_heads, scale, H)
    if bias == "alibi_positions":
        raise ValueError("bias: 'alibi_positions' needs a key padding mask, which "
                         "ragged batches do not take")
    slopes = _check_slopes(slopes, q, H, cu_seqlens_q.shape[0] - 1, bias)
    o, lse = _attention_varlen_op(q, k, v, cu_seqlens_q.contiguous(),
                                  cu_seqlens_k.contiguous(), slopes, causal,
                                  window or 0, _bias_name(bias),
                                  float(max_bias), head_offset,
                                  total_heads or 0, float(scale or 0.0),
                                  *_check_offsets(q_offset, k_offset, bias))
    return (o, lse) if return_lse else o


def attention_paged(q: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, block_table: torch.Tensor,
                    context_lens: torch.Tensor, *, causal: bool = False,
                    window: Optional[int] = None,
                    bias: Optional[str] = "alibi",
                    slopes: Optional[torch.Tensor] = None,
                    max_bias: float = 8.0, head_offset: int = 0,
                    total_heads: Optional[int] = None,
                    scale: Optional[float] = None, return_lse: bool = False):
    """Attention against a paged KV cache (decode and chunked prefill; CPU).

    q: [B, H, Sq, D]; k_cache, v_cache: [num_pages, page_size, Hkv, D]
    (page_size a power of two from 8 to 256); block_table: int32
    [B, max_pages], the pages of each sequence in order; context_lens:
    int32 [B], its keys. Token t of sequence b is
    k_cache[block_table[b, t // page_size], t % page_size]; entries past a
    sequence's pages are never read. Queries sit bottom-right:
    i' = context_lens[b] - Sq + i. bias "alibi", "alibi_symmetric" or None;
    other arguments as for attention(). Inference only (no autograd).
    """
    _check_tensor("q", q, 4, "[B, H, Sq, D]")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        _check_tensor(name, t, 4, "[num_pages, page_size, Hkv, D]")
        _check_same(name, t, q)
    q, k_cache, v_cache = (_kernel_view(t) for t in (q, k_cache, v_cache))
    B, H, Sq, D = q.shape
    if k_cache.shape[3] != D or tuple(v_cache.shape) != tuple(k_cache.shape):
        raise ValueError(f"k_cache, v_cache: shapes {list(k_cache.shape)}, "
                         f"{list(v_cache.shape)} must match and end in q's head dim {D}")
    Hkv = k_cache.shape[2]
    if Hkv < 1 or H % Hkv != 0:
        raise ValueError(f"k_cache: {Hkv} kv heads do not divide q's {H} heads")
    for name, t, shape in (("block_table", block_table, "[B, max_pages]"),
                           ("context_lens", context_lens, "[B]")):
        rank = 2 if name == "block_table" else 1
        if not isinstance(t, torch.Tensor) or t.dim() != rank or t.shape[0] != B:
            raise ValueError(f"{name}: must be an int32 tensor {shape} with B = {B}, got "
                             f"{list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.dtype != torch.int32:
            raise ValueError(f"{name}: dtype must be int32, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: device {t.device} differs from q's {q.device}")
    _check_options(causal, window, bias, max_bias, head_offset, total_heads, scale, H)
    if bias == "alibi_positions":
        raise ValueError("bias: 'alibi_positions' needs a key padding mask, which a "
                         "paged cache does not take")
    slopes = _check_slopes(slopes, q, H, B, bias)
    o, lse = _attention_paged_op(q, k_cache, v_cache, block_table.contiguous(),
                                 context_lens.contiguous(), slopes, causal,
                                 window or 0, _bias_name(bias), float(max_bias),
                                 head_offset, total_heads or 0, float(scale or 0.0))
    return (o, lse) if return_lse else o


def merge_states(outputs, lses):
    """Combines attention over disjoint key sets exactly (ALIBI.md, "Merge").

    outputs: o_n [..., D] (one dtype), lses: lse_n float32 [...] as
    tilt.attention(..., return_lse=True) returns them. Returns (o, lse):
    lse = log(sum exp(lse_n)), o = sum exp(lse_n - lse) * o_n; parts with
    lse_n = -inf count for nothing; rows where all are -inf give 0 and -inf.
    Context parallelism: run each chunk of keys where it lives, merge here.
    """
    if not isinstance(outputs, (list, tuple)) or not isinstance(lses, (list, tuple)):
        raise ValueError("outputs, lses: must be lists of tensors")
    if not outputs or len(outputs) != len(lses):
        raise ValueError(f"lses: need one per output and at least one, got "
                         f"{len(lses)} for {len(outputs)}")
    o0, l0 = outputs[0], lses[0]
    for n, (o, l) in enumerate(zip(outputs, lses)):
        if not isinstance(o, torch.Tensor) or o.dtype not in _DTYPES:
            raise ValueError(f"outputs[{n}]: must be a float32/float16/bfloat16 tensor")
        if not isinstance(l, torch.Tensor) or l.dtype != torch.float32:
            raise ValueError(f"lses[{n}]: must be a float32 tensor")
        if o.dtype != o0.dtype or o.device != o0.device or l.device != o0.device:
            raise ValueError(f"outputs[{n}]: dtype/device differ from outputs[0]'s")
        if tuple(o.shape) != tuple(o0.shape) or tuple(l.shape) != tuple(o.shape[:-1]):
            raise ValueError(f"lses[{n}]: must be outputs[{n}]'s shape without the last "
                             f"dimension ({list(o0.shape[:-1])}), got {list(l.shape)}")
        if o.device.type not in ("cpu", "cuda"):
            raise ValueError(f"outputs[{n}]: device must be cpu or cuda, got {o.device}")
    return _merge_op([o.contiguous() for o in outputs], [l.contiguous() for l in lses])
