"""The torch.library registration (opcheck, torch.compile), the errors, and
what happens under autograd."""

import pytest
import torch

import tilt


def qkv(B=1, H=4, Hkv=4, S=16, D=64, dtype=torch.float32, **kw):
    return (torch.randn(B, H, S, D, dtype=dtype, **kw),
            torch.randn(B, Hkv, S, D, dtype=dtype, **kw),
            torch.randn(B, Hkv, S, D, dtype=dtype, **kw))


def test_opcheck_attention():
    q, k, v = qkv(2, 8, 2, 24)
    slopes = torch.rand(8)
    kpm = torch.ones(2, 24, dtype=torch.uint8)
    kpm[1, :5] = 0
    for args in [
        (q, k, v, None, None, True, 0, "alibi", 8.0, 0, 0, 0.0, -1, -1),
        (q, k, v, slopes, None, False, 7, "alibi_symmetric", 8.0, 0, 0, 0.0, -1, -1),
        (q, k, v, None, kpm, False, 0, "alibi_positions", 8.0, 0, 0, 0.125, -1, -1),
        (q.bfloat16(), k.bfloat16(), v.bfloat16(), None, None, True, 0, "none", 8.0, 0, 0, 0.0, -1, -1),
        (q, k, v, None, None, True, 0, "alibi", 8.0, 0, 0, 0.0, 100, 90),
    ]:
        torch.library.opcheck(torch.ops.tilt.attention.default, args)


def test_opcheck_attention_varlen():
    q = torch.randn(30, 4, 64)
    k = torch.randn(40, 2, 64)
    v = torch.randn(40, 2, 64)
    cu_q = torch.tensor([0, 10, 30], dtype=torch.int32)
    cu_k = torch.tensor([0, 15, 40], dtype=torch.int32)
    torch.library.opcheck(torch.ops.tilt.attention_varlen.default,
                          (q, k, v, cu_q, cu_k, None, True, 0, "alibi", 8.0, 0, 0, 0.0, -1, -1))


def test_torch_compile_fullgraph():
    def block(x, wq, wk, wv):
        B, S, _ = x.shape
        # [B, S, H, D] projections, handed over through their strides.
        q = (x @ wq).view(B, S, 4, 64)
        k = (x @ wk).view(B, S, 4, 64)
        v = (x @ wv).view(B, S, 4, 64)
        o = tilt.attention(q, k, v, causal=True, layout="bshd")
        return o.reshape(B, S, 256).relu().sum(-1)

    x = torch.randn(2, 33, 256)
    w = [torch.randn(256, 256) / 16 for _ in range(3)]
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x, *w), block(x, *w))


@pytest.mark.parametrize("call, arg", [
    (lambda q, k, v: tilt.attention(q.int(), k, v), "q: dtype"),
    (lambda q, k, v: tilt.attention(q, k.double(), v), "k: dtype"),
    (lambda q, k, v: tilt.attention(q, k.half(), v), "k: dtype torch.float16 differs"),
    (lambda q, k, v: tilt.attention(q[0], k, v), "q: must be [B, H, S, D]"),
    (lambda q, k, v: tilt.attention(q, k[:, :3], v[:, :3]), "kv heads do not divide"),
    (lambda q, k, v: tilt.attention(q, k, v[:, :, :8].contiguous()), "v: shape"),
    (lambda q, k, v: tilt.attention(q, k, v, bias="mpt"), "bias: must be one of"),
    (lambda q, k, v: tilt.attention(q, k, v, window=0), "window: must be"),
    (lambda q, k, v: tilt.attention(q, k, v, slopes=torch.ones(3)), "slopes: must be [4]"),
    (lambda q, k, v: tilt.attention(q, k, v, bias=None, slopes=torch.ones(4)), "slopes: given with bias=None"),
    (lambda q, k, v: tilt.attention(q, k, v, bias="alibi_positions"), "key_padding_mask: bias='alibi_positions' needs"),
    (lambda q, k, v: tilt.attention(q, k, v, key_padding_mask=torch.ones(1, 5)), "key_padding_mask: must be a tensor [B, Sk]"),
    (lambda q, k, v: tilt.attention(q, k, v, layout="sbhd"), "layout: must be"),
    (lambda q, k, v: tilt.attention(q, k, v, scale=-1.0), "scale: must be"),
    (lambda q, k, v: tilt.attention(q, k, v, total_heads=2), "total_heads: must be"),
    (lambda q, k, v: tilt.attention(q, k.to("meta"), v), "k: device meta differs"),
    (lambda q, k, v: tilt.attention(q, k, v, max_bias=0), "max_bias: must be"),
    (lambda q, k, v: tilt.attention(q, k, v, q_offset=5), "k_offset: must be an int >= 0 given together"),
    (lambda q, k, v: tilt.attention(q, k, v, q_offset=-1, k_offset=0), "q_offset: must be an int >= 0"),
    (lambda q, k, v: tilt.attention(q, k, v, q_offset=2**24, k_offset=0), "q_offset: must be in [0, 16777200]"),
    (lambda q, k, v: tilt.attention_varlen(q[0], k[0], v[0], torch.tensor([0, 4]), torch.tensor([0, 16], dtype=torch.int32)), "cu_seqlens_q: dtype must be int32"),
    # Values that would wrap or overflow on the way to the kernels.
    (lambda q, k, v: tilt.attention(q, k, v, window=2**63), "window: must be"),
    (lambda q, k, v: tilt.attention(q, k, v, total_heads=True), "total_heads: must be"),
    (lambda q, k, v: tilt.attention(q, k, v, scale=1e39), "scale must be below 2"),
    (lambda q, k, v: tilt.attention(q, k, v, slopes=torch.tensor([0.5, float("nan"), 0.1, 0.2])),
     "slopes: element 1 is nan"),
    (lambda q, k, v: tilt.alibi_slopes(4, float("inf")), "max_bias: must be a finite"),
    (lambda q, k, v: tilt.alibi_slopes(2**40), "heads: must be in [1, 65535]"),
    (lambda q, k, v: tilt.attention(q, k, v, total_heads=2**40), "total_heads"),
])
def test_bad_arguments_raise_value_error_naming_them(call, arg):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=arg.replace("[", r"\[").replace("]", r"\]")):
        call(q, k, v)


def test_runtime_checks_reach_python_as_value_error():
    # cu_seqlens past the packed tensors: caught by the runtime, not a crash.
    q = torch.randn(10, 4, 64)
    k = torch.randn(10, 4, 64)
    bad = torch.tensor([0, 50], dtype=torch.int32)
    with pytest.raises(ValueError, match="cu_seqlens"):
        tilt.attention_varlen(q, k, k, bad, bad)


def test_varlen_rows_after_the_last_sequence_are_defined():
    # Tokens past the last offsets (padding to a fixed count) belong to no
    # sequence and are never read (NaN here): o = 0, lse = -inf, zero
    # gradients, and the covered rows equal a run without the padding.
    torch.manual_seed(6)
    q, k, v = torch.randn(9, 2, 32), torch.randn(12, 2, 32), torch.randn(12, 2, 32)
    q[4:], k[9:], v[9:] = float("nan"), float("nan"), float("nan")
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    cu_q = torch.tensor([0, 3, 4], dtype=torch.int32)
    cu_k = torch.tensor([0, 5, 9], dtype=torch.int32)
    o, lse = tilt.attention_varlen(q, k, v, cu_q, cu_k, causal=True, return_lse=True)
    assert torch.equal(o[4:], torch.zeros_like(o[4:]))
    assert torch.isneginf(lse[:, 4:]).all()
    want, want_lse = tilt.attention_varlen(q[:4], k[:9], v[:9], cu_q, cu_k, causal=True,
                                           return_lse=True)
    assert torch.equal(o[:4], want) and torch.equal(lse[:, :4], want_lse)
    (o[:4].square().sum() + lse[:, :4].sum()).backward()
    for g, n in ((q.grad, 4), (k.grad, 9), (v.grad, 9)):
        assert torch.isfinite(g).all()
        assert torch.equal(g[n:], torch.zeros_like(g[n:]))


def test_integer_padding_masks_count_any_nonzero_as_a_key():
    q, k, v = qkv()
    m = torch.ones(q.shape[0], k.shape[2], dtype=torch.int64)
    m[:, 1::3] = 0
    wide = m * 256     # would wrap to 0 as uint8
    want = tilt.attention(q, k, v, key_padding_mask=m.bool())
    assert torch.equal(tilt.attention(q, k, v, key_padding_mask=wide), want)
    assert torch.equal(tilt.attention(q, k, v, key_padding_mask=-m), want)


def test_gradients_through_lse_match_the_reference():
    # d lse / d s = P: a loss on lse (z-loss, merging context-parallel
    # chunks) gets its gradient from the same kernels.
    import reference
    q, k, v = qkv(2, 4, 2, 20, requires_grad=True)
    o, lse = tilt.attention(q, k, v, causal=True, return_lse=True)
    (o.square().sum() + 0.5 * lse.square().sum()).backward()
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ro, rlse = reference.attention(*leaves, causal=True)
    (ro.square().sum() + 0.5 * rlse.square().sum()).backward()
    for got, want in zip((q.grad, k.grad, v.grad), (t.grad for t in leaves)):
        err = (got.double() - want).abs().max().item()
        assert err <= 1e-4 * want.abs().max().item() + 1e-6, err


def test_merge_states_backward_says_it_is_not_available():
    o = [torch.randn(1, 2, 3, 16, requires_grad=True) for _ in range(2)]
    l = [torch.randn(1, 2, 3) for _ in range(2)]
    with pytest.raises(NotImplementedError, match="merge_states: gradients"):
        tilt.merge_states(o, l)[0].sum().backward()


def test_opcheck_attention_with_gradients():
    # With inputs that require grad, opcheck also runs the registered
    # backward (autograd registration, AOT dispatch with gradients).
    q, k, v = qkv(2, 8, 2, 24, requires_grad=True)
    slopes = (torch.rand(8) * 0.5).requires_grad_()
    for args in [
        (q, k, v, None, None, True, 0, "alibi", 8.0, 0, 0, 0.0, -1, -1),
        (q, k, v, slopes, None, False, 7, "alibi_symmetric", 8.0, 0, 0, 0.0, -1, -1),
    ]:
        torch.library.opcheck(torch.ops.tilt.attention.default, args)


def test_opcheck_attention_backward():
    q, k, v = qkv(2, 8, 2, 24)
    o, lse = torch.ops.tilt.attention(q, k, v, None, None, True, 0, "alibi",
                                      8.0, 0, 0, 0.0, -1, -1)
    slopes = torch.rand(2, 8)
    torch.library.opcheck(
        torch.ops.tilt.attention_backward.default,
        (q, k, v, o, lse, torch.randn_like(o), torch.randn_like(lse), slopes,
         None, None, None, True, True, 0, "alibi", 8.0, 0, 0, 0.0, -1, -1))


def test_no_grad_inputs_run_under_no_grad():
    q, k, v = qkv(requires_grad=True)
    with torch.no_grad():
        o = tilt.attention(q, k, v)
    assert o.shape == q.shape and not o.requires_grad


def test_opcheck_merge_states():
    o = [torch.randn(2, 3, 5, 16) for _ in range(3)]
    l = [torch.randn(2, 3, 5) for _ in range(3)]
    l[1][0, 0, 0] = float("-inf")
    torch.library.opcheck(torch.ops.tilt.merge_states.default, (o, l))


def test_paged_cache_errors_name_the_argument():
    q = torch.randn(2, 4, 1, 64)
    kc = torch.randn(6, 16, 2, 64)
    table = torch.tensor([[0, 1], [2, -1]], dtype=torch.int32)
    lens = torch.tensor([20, 9], dtype=torch.int32)
    with pytest.raises(ValueError, match="block_table: dtype must be int32"):
        tilt.attention_paged(q, kc, kc, table.long(), lens)
    with pytest.raises(ValueError, match=r"context_lens: must be an int32 tensor \[B\]"):
        tilt.attention_paged(q, kc, kc, table, lens[:1])
    with pytest.raises(ValueError, match="k_cache: 3 kv heads do not divide"):
        tilt.attention_paged(q, torch.randn(6, 16, 3, 64), torch.randn(6, 16, 3, 64), table, lens)
    # Checked by the runtime against the cache: a used entry out of range,
    # a page size that is not a power of two.
    bad = table.clone()
    bad[0, 1] = 6
    with pytest.raises(ValueError, match=r"block_table: entry \[0, 1\] is 6"):
        tilt.attention_paged(q, kc, kc, bad, lens)
    with pytest.raises(ValueError, match="page_size must be 0"):
        tilt.attention_paged(q, torch.randn(6, 12, 2, 64), torch.randn(6, 12, 2, 64), table, lens)


def test_opcheck_attention_paged():
    q = torch.randn(2, 4, 3, 64)
    kc = torch.randn(5, 16, 2, 64)
    table = torch.tensor([[3, 0], [1, 99]], dtype=torch.int32)
    lens = torch.tensor([30, 12], dtype=torch.int32)
    torch.library.opcheck(torch.ops.tilt.attention_paged.default,
                          (q, kc, kc, table, lens, None, True, 0, "alibi", 8.0, 0, 0, 0.0))


def test_paged_backward_says_it_is_inference_only():
    q = torch.randn(1, 4, 1, 64, requires_grad=True)
    kc = torch.randn(2, 16, 4, 64)
    table = torch.tensor([[1]], dtype=torch.int32)
    lens = torch.tensor([10], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="attention_paged: a paged KV cache is for"):
        tilt.attention_paged(q, kc, kc, table, lens).sum().backward()
