"""tilt.attention against the float64 reference of ALIBI.md, under its rule:
max abs error <= 1e-4 for float32, else <= 2 x a naive same-dtype
implementation's error + 1e-6; NaN or inf anywhere fails."""

import math

import pytest
import torch

import reference
import tilt

DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def inputs(B, H, Hkv, Sq, Sk, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Sq, D, generator=g).to(dtype)
    k = torch.randn(B, Hkv, Sk, D, generator=g).to(dtype)
    v = torch.randn(B, Hkv, Sk, D, generator=g).to(dtype)
    return q, k, v


def check(o, lse, q, k, v, **kw):
    want_o, want_lse = reference.attention(q, k, v, **kw)
    assert torch.isfinite(o).all(), "NaN or inf in o"
    err = (o.double() - want_o).abs().max().item()
    if q.dtype == torch.float32:
        bound = 1e-4
    else:
        naive, _ = reference.attention(q, k, v, dtype=q.dtype, **kw)
        bound = 2 * (naive.double().nan_to_num(0.0) - want_o).abs().max().item() + 1e-6
    assert err <= bound, f"max abs error {err:.3e} > bound {bound:.3e}"
    # lse: -inf exactly where the reference row is empty, else close.
    empty = torch.isinf(want_lse)
    assert torch.equal(torch.isinf(lse) & (lse < 0), empty)
    lse_err = (lse.double() - want_lse)[~empty].abs().max().item() if (~empty).any() else 0.0
    assert lse_err <= 1e-3, f"lse error {lse_err:.3e}"
    return err, bound


# (B, H, Hkv, Sq, Sk, D, dtype, options)
CASES = [
    (2, 12, 12, 129, 129, 64, "f32", dict(causal=True)),
    (1, 8, 2, 17, 300, 128, "f32", dict(causal=True)),                 # GQA, Sq != Sk
    (2, 40, 8, 33, 33, 64, "bf16", dict(bias="alibi_symmetric")),
    (1, 71, 71, 65, 65, 64, "f16", dict(causal=True, window=20)),
    (1, 56, 1, 1, 1000, 128, "bf16", dict(causal=True)),                # MQA decode row
    (2, 4, 4, 40, 40, 64, "f32", dict(bias=None)),
    (2, 12, 4, 50, 50, 64, "f32", dict(slopes="per_head", causal=True)),
    (2, 12, 4, 50, 50, 64, "bf16", dict(slopes="per_batch")),
    (1, 8, 8, 30, 30, 64, "f32", dict(head_offset=8, total_heads=24, causal=True)),
    (2, 16, 16, 60, 60, 64, "f32", dict(bias="alibi_positions", key_padding_mask=True)),
    (1, 4, 4, 128, 64, 64, "f32", dict(causal=True)),                  # rows with no key
    (1, 4, 2, 20, 20, 80, "f32", dict(scale=0.3, max_bias=4.0)),
]


def ids(c):
    B, H, Hkv, Sq, Sk, D, dt, opt = c
    return f"B{B}-H{H}-Hkv{Hkv}-Sq{Sq}-Sk{Sk}-D{D}-{dt}-" + "-".join(
        f"{k}={v}" for k, v in opt.items())


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_matches_float64_reference(case):
    B, H, Hkv, Sq, Sk, D, dt, opt = case
    q, k, v = inputs(B, H, Hkv, Sq, Sk, D, DT[dt])
    opt = dict(opt)
    g = torch.Generator().manual_seed(1)
    if opt.get("slopes") == "per_head":
        opt["slopes"] = torch.rand(H, generator=g) * 0.5
    elif opt.get("slopes") == "per_batch":
        opt["slopes"] = torch.rand(B, H, generator=g) * 0.5
    if opt.get("key_padding_mask"):
        m = torch.ones(B, Sk, dtype=torch.bool)
        m[0, :10] = False           # left padding
        m[-1, Sk // 2:] = False     # right padding
        opt["key_padding_mask"] = m
    o, lse = tilt.attention(q, k, v, return_lse=True, **opt)
    assert o.shape == q.shape and o.dtype == q.dtype
    assert lse.shape == (B, H, Sq) and lse.dtype == torch.float32
    check(o, lse, q, k, v, **opt)


def test_fully_padded_batch_row_gives_zero_and_minus_inf():
    q, k, v = inputs(2, 4, 4, 8, 8, 64, torch.float32)
    m = torch.ones(2, 8, dtype=torch.bool)
    m[1] = False
    o, lse = tilt.attention(q, k, v, bias="alibi_positions", key_padding_mask=m,
                            return_lse=True)
    assert torch.equal(o[1], torch.zeros_like(o[1]))
    assert torch.isneginf(lse[1]).all()
    check(o, lse, q, k, v, bias="alibi_positions", key_padding_mask=m)


def test_alibi_slopes_are_the_standard_ones():
    for h in (1, 8, 12, 40, 71, 112):
        got = tilt.alibi_slopes(h)
        want = reference.standard_slopes(h)
        assert torch.allclose(got.double(), want, rtol=1e-6), h
    assert tilt.alibi_slopes(8)[0].item() == 0.5


def test_bshd_layout_equals_bhsd():
    q, k, v = inputs(2, 8, 2, 40, 40, 64, torch.float32)
    o = tilt.attention(q, k, v, causal=True)
    o2 = tilt.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                        causal=True, layout="bshd")
    assert o2.shape == (2, 40, 8, 64)
    assert torch.equal(o2.transpose(1, 2), o)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="skipped: no GPU"))]
# The CUDA kernels take f16 and bf16 only.
DEVICE_DTYPE = {"cpu": torch.float32, "cuda": torch.bfloat16}


@pytest.mark.parametrize("device", DEVICES)
def test_strided_tensors_are_not_copied(monkeypatch, device):
    """q, k, v go to the kernels through their strides: [B, S, H, D]
    tensors and slices of a fused QKV tensor give the row-major results
    bit for bit, and no .contiguous() copy is made on the way."""
    torch.manual_seed(3)
    B, S, H, D = 2, 37, 8, 64
    qkv = torch.randn(B, S, 3, H, D, dtype=DEVICE_DTYPE[device], device=device)
    q, k, v = qkv.unbind(2)            # [B, S, H, D] views, row stride 3*H*D
    want = tilt.attention(*(t.transpose(1, 2).contiguous() for t in (q, k, v)),
                          causal=True)

    def no_copy(self, *args, **kwargs):
        raise AssertionError("a strided tensor was copied")
    monkeypatch.setattr(torch.Tensor, "contiguous", no_copy)
    o = tilt.attention(q, k, v, causal=True, layout="bshd")
    assert o.shape == (B, S, H, D)
    assert torch.equal(o.transpose(1, 2), want)
    # The same memory seen as [B, H, S, D] views (layout="bhsd").
    o2 = tilt.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                        causal=True)
    assert torch.equal(o2, want)
    monkeypatch.undo()
    # A last dimension that is not unit-stride is copied, not refused.
    o3 = tilt.attention(*(t.transpose(1, 2).transpose(2, 3).contiguous().transpose(2, 3)
                          for t in (q, k, v)), causal=True)
    assert torch.equal(o3, want)


@pytest.mark.parametrize("device", DEVICES)
def test_bshd_gradients_equal_bhsd(device):
    torch.manual_seed(4)
    B, S, H, Hkv, D = 2, 19, 8, 2, 64
    dt = DEVICE_DTYPE[device]
    slopes = tilt.alibi_slopes(H).to(device).requires_grad_()
    base = [torch.randn(B, S, h, D, dtype=dt, device=device) for h in (H, Hkv, Hkv)]
    bshd = [t.clone().requires_grad_() for t in base]
    bhsd = [t.transpose(1, 2).contiguous().requires_grad_() for t in base]
    grad = torch.randn(B, S, H, D, dtype=dt, device=device)
    s1 = slopes.detach().clone().requires_grad_()
    s2 = slopes.detach().clone().requires_grad_()
    tilt.attention(*bshd, causal=True, slopes=s1, layout="bshd").backward(grad)
    tilt.attention(*bhsd, causal=True, slopes=s2).backward(grad.transpose(1, 2))
    for a, b in zip(bshd, bhsd):
        assert torch.equal(a.grad.transpose(1, 2), b.grad)
    assert torch.equal(s1.grad, s2.grad)


def test_varlen_matches_each_sequence():
    torch.manual_seed(0)
    lens_q, lens_k, H, Hkv, D = [5, 17, 1], [5, 30, 9], 8, 4, 64
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32)
    q = torch.randn(sum(lens_q), H, D)
    k = torch.randn(sum(lens_k), Hkv, D)
    v = torch.randn(sum(lens_k), Hkv, D)
    o, lse = tilt.attention_varlen(q, k, v, cu_q, cu_k, causal=True, return_lse=True)
    assert lse.shape == (H, sum(lens_q))
    for b in range(3):
        qs = q[cu_q[b]:cu_q[b + 1]].transpose(0, 1)[None]
        ks = k[cu_k[b]:cu_k[b + 1]].transpose(0, 1)[None]
        vs = v[cu_k[b]:cu_k[b + 1]].transpose(0, 1)[None]
        ob = o[cu_q[b]:cu_q[b + 1]].transpose(0, 1)[None]
        lb = lse[:, cu_q[b]:cu_q[b + 1]][None]
        check(ob, lb, qs, ks, vs, causal=True)


def test_kernels_come_from_the_bundle_or_a_compile():
    s = tilt.stats()
    assert s["compiles"] + s["bundle_hits"] + s["disk_hits"] >= 1
    assert isinstance(s["bundle"], str) and s["bundle"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="skipped: no GPU")
@pytest.mark.parametrize("dt", ["f16", "bf16"])
def test_cuda_matches_float64_reference(dt):
    q, k, v = inputs(2, 12, 4, 300, 300, 128, DT[dt])
    o, lse = tilt.attention(q.cuda(), k.cuda(), v.cuda(), causal=True, return_lse=True)
    check(o.cpu(), lse.cpu(), q, k, v, causal=True)


@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_merge_states_of_key_chunks_equals_the_whole(dt):
    # Key padding masks pick disjoint key sets without moving the keys, so
    # each part is a real kernel run at the keys' true positions.
    B, H, Hkv, Sq, Sk, D = 2, 8, 2, 150, 150, 64
    q, k, v = inputs(B, H, Hkv, Sq, Sk, D, DT[dt])
    whole, whole_lse = tilt.attention(q, k, v, causal=True, key_padding_mask=torch.ones(B, Sk, dtype=torch.bool),
                                      return_lse=True)
    parts, lses = [], []
    for c in range(3):
        m = torch.zeros(B, Sk, dtype=torch.bool)
        m[:, c * Sk // 3:(c + 1) * Sk // 3] = True
        o, lse = tilt.attention(q, k, v, causal=True, key_padding_mask=m, return_lse=True)
        parts.append(o)
        lses.append(lse)
    assert torch.isneginf(torch.stack(lses)).any()   # rows empty in some chunk
    o, lse = tilt.merge_states(parts, lses)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(whole_lse))
    fin = ~torch.isneginf(whole_lse)
    assert (lse - whole_lse)[fin].abs().max() <= 1e-4
    if dt == "f32":
        assert (o - whole).abs().max() <= 1e-5
    check(o, lse, q, k, v, causal=True)


@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_chunks_with_position_offsets_merge_to_the_whole(dt):
    # Context parallelism: queries and keys cut into chunks that each run on
    # their own tensors with their absolute offsets, then merged per query
    # chunk.
    B, H, Hkv, Sq, Sk, D = 2, 8, 2, 120, 200, 64
    q, k, v = inputs(B, H, Hkv, Sq, Sk, D, DT[dt], seed=3)
    kw = dict(causal=True, window=90, bias="alibi")
    whole, whole_lse = tilt.attention(q, k, v, return_lse=True, **kw)
    for q0, q1 in ((0, 50), (50, 120)):
        parts, lses = [], []
        for k0, k1 in ((0, 70), (70, 140), (140, 200)):
            o, lse = tilt.attention(q[:, :, q0:q1].contiguous(), k[:, :, k0:k1].contiguous(),
                                    v[:, :, k0:k1].contiguous(), q_offset=Sk - Sq + q0,
                                    k_offset=k0, return_lse=True, **kw)
            check(o, lse, q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1],
                  q_offset=Sk - Sq + q0, k_offset=k0, **kw)
            parts.append(o)
            lses.append(lse)
        o, lse = tilt.merge_states(parts, lses)
        want_lse = whole_lse[:, :, q0:q1]
        assert torch.equal(torch.isneginf(lse), torch.isneginf(want_lse))
        fin = ~torch.isneginf(want_lse)
        assert (lse - want_lse)[fin].abs().max() <= 1e-4
        if dt == "f32":
            assert (o - whole[:, :, q0:q1]).abs().max() <= 1e-5
        check(o, lse, q[:, :, q0:q1], k, v, q_offset=Sk - Sq + q0, k_offset=0, **kw)


def test_merge_states_rejects_bad_parts():
    o = torch.randn(1, 2, 3, 8)
    l = torch.randn(1, 2, 3)
    with pytest.raises(ValueError, match="lses: need one per output"):
        tilt.merge_states([o, o], [l])
    with pytest.raises(ValueError, match=r"lses\[0\]: must be outputs\[0\]'s shape"):
        tilt.merge_states([o], [l[..., :2]])
    with pytest.raises(ValueError, match="lse is nan"):
        tilt.merge_states([o], [torch.full_like(l, float("nan"))])


# --- gradients ------------------------------------------------------------------
# The float64 reference's own autograd is the oracle. Bounds: float32 as
# ALIBI.md's f32 gradient rule (1e-4 x max |reference gradient| + 1e-6);
# 16-bit inputs 3e-2 x max |reference gradient| (the kernels' gradients are
# rounded to the dtype; tests/numerics/BackwardTest applies the exact rule).

GRAD_CASES = [
    (2, 4, 2, 33, 40, 32, "f32", dict(causal=True, slopes="per_head")),
    (2, 4, 4, 20, 20, 64, "f32", dict(bias="alibi_symmetric", window=7, slopes="per_batch")),
    (1, 6, 2, 17, 50, 32, "bf16", dict(causal=True)),
    (2, 4, 1, 24, 24, 64, "f32", dict(bias="alibi_positions", key_padding_mask=True, slopes="per_head")),
    (1, 4, 2, 40, 40, 32, "f32", dict(bias=None, causal=True)),
]


def make_slopes(kind, B, H, g):
    if kind == "per_head":
        return (torch.rand(H, generator=g) * 0.4 + 0.05).requires_grad_()
    if kind == "per_batch":
        return (torch.rand(B, H, generator=g) * 0.4 + 0.05).requires_grad_()
    return None


@pytest.mark.parametrize("case", GRAD_CASES, ids=[ids(c) for c in GRAD_CASES])
def test_gradients_match_float64_reference(case):
    B, H, Hkv, Sq, Sk, D, dt, opt = case
    opt = dict(opt)
    g = torch.Generator().manual_seed(3)
    q, k, v = (t.requires_grad_() for t in inputs(B, H, Hkv, Sq, Sk, D, DT[dt], seed=3))
    slopes = make_slopes(opt.pop("slopes", None), B, H, g)
    if opt.get("key_padding_mask"):
        kpm = torch.ones(B, Sk, dtype=torch.bool)
        kpm[:, 1::5] = False  # some keys padded, never a whole row
        opt["key_padding_mask"] = kpm
    do = torch.randn(B, H, Sq, D, generator=g).to(DT[dt])
    # A loss that reads lse too: its gradient joins D_i, and the rows of dS
    # then sum to it (which distances relative to a row constant must
    # account for in dslopes).
    dl = torch.randn(B, H, Sq, generator=g)
    o, lse = tilt.attention(q, k, v, slopes=slopes, return_lse=True, **opt)
    torch.autograd.backward([o, lse], [do, dl])

    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref_slopes = slopes.detach().double().requires_grad_() if slopes is not None else None
    want, want_lse = reference.attention(*leaves, slopes=ref_slopes, **opt)
    torch.autograd.backward([want, want_lse], [do.double(), dl.double()])
    pairs = [("dq", q.grad, leaves[0].grad), ("dk", k.grad, leaves[1].grad),
             ("dv", v.grad, leaves[2].grad)]
    if slopes is not None:
        pairs.append(("dslopes", slopes.grad, ref_slopes.grad))
    for name, got, ref in pairs:
        assert got is not None and got.shape == ref.shape, name
        assert torch.isfinite(got).all(), f"NaN or inf in {name}"
        scale = ref.abs().max().item()
        bound = (1e-4 * scale + 1e-6) if dt == "f32" else 3e-2 * scale
        err = (got.double() - ref).abs().max().item()
        assert err <= bound, f"{name}: max abs error {err:.3e} > bound {bound:.3e}"


def test_gradients_under_torch_compile_equal_eager():
    def loss(q, k, v, slopes):
        return tilt.attention(q, k, v, causal=True, slopes=slopes).square().sum()

    q, k, v = (t.requires_grad_() for t in inputs(2, 4, 2, 30, 30, 64, torch.float32))
    slopes = torch.full((4,), 0.25, requires_grad=True)
    loss(q, k, v, slopes).backward()
    eager = [t.grad.clone() for t in (q, k, v, slopes)]
    for t in (q, k, v, slopes):
        t.grad = None
    torch.compile(loss, fullgraph=True)(q, k, v, slopes).backward()
    for want, t in zip(eager, (q, k, v, slopes)):
        torch.testing.assert_close(t.grad, want)


def test_varlen_gradients_equal_each_sequence():
    # Packed sequences' gradients equal those of each sequence alone.
    H, Hkv, D = 4, 2, 32
    lens_q, lens_k = [7, 12], [9, 12]
    g = torch.Generator().manual_seed(5)
    qs = [torch.randn(1, H, n, D, generator=g) for n in lens_q]
    ks = [torch.randn(1, Hkv, n, D, generator=g) for n in lens_k]
    vs = [torch.randn(1, Hkv, n, D, generator=g) for n in lens_k]
    dos = [torch.randn(1, H, n, D, generator=g) for n in lens_q]
    pack = lambda ts: torch.cat([t[0].transpose(0, 1) for t in ts]).contiguous().requires_grad_()
    q, k, v = pack(qs), pack(ks), pack(vs)
    cu = lambda lens: torch.tensor([0, lens[0], sum(lens)], dtype=torch.int32)
    o = tilt.attention_varlen(q, k, v, cu(lens_q), cu(lens_k), causal=True)
    o.backward(torch.cat([d[0].transpose(0, 1) for d in dos]))
    row_q = row_k = 0
    for qi, ki, vi, doi in zip(qs, ks, vs, dos):
        leaves = [t.clone().requires_grad_() for t in (qi, ki, vi)]
        tilt.attention(*leaves, causal=True).backward(doi)
        nq, nk = qi.shape[2], ki.shape[2]
        torch.testing.assert_close(q.grad[row_q:row_q + nq], leaves[0].grad[0].transpose(0, 1))
        torch.testing.assert_close(k.grad[row_k:row_k + nk], leaves[1].grad[0].transpose(0, 1))
        torch.testing.assert_close(v.grad[row_k:row_k + nk], leaves[2].grad[0].transpose(0, 1))
        row_q, row_k = row_q + nq, row_k + nk


# --- paged KV cache ---------------------------------------------------------------

def to_paged(k, v, lens, page, seed=0):
    """Dense k, v [B, Hkv, S, D] as a paged cache holding each sequence's
    first lens[b] tokens in shuffled pages; table entries past them are -1."""
    B, Hkv, S, D = k.shape
    used = [(n + page - 1) // page for n in lens]
    ids = torch.randperm(sum(used) + 2, generator=torch.Generator().manual_seed(seed))
    max_pages = (S + page - 1) // page
    table = torch.full((B, max_pages), -1, dtype=torch.int32)
    kc = torch.zeros(len(ids), page, Hkv, D, dtype=k.dtype)
    vc = torch.zeros_like(kc)
    nxt = 0
    for b in range(B):
        for p in range(used[b]):
            table[b, p] = ids[nxt]
            nxt += 1
        for t in range(lens[b]):
            kc[table[b, t // page], t % page] = k[b, :, t]
            vc[table[b, t // page], t % page] = v[b, :, t]
    return kc, vc, table, torch.tensor(lens, dtype=torch.int32)


@pytest.mark.parametrize("dt,page,kw", [
    ("f32", 16, dict(causal=True)),
    ("bf16", 8, dict(bias="alibi_symmetric", window=30)),
    ("f16", 64, dict(bias=None, causal=True)),
])
def test_paged_cache_matches_each_sequence(dt, page, kw):
    q, k, v = inputs(3, 8, 2, 4, 100, 64, DT[dt])
    lens = [100, 37, 0]
    kc, vc, table, cl = to_paged(k, v, lens, page)
    o, lse = tilt.attention_paged(q, kc, vc, table, cl, return_lse=True, **kw)
    assert o.shape == q.shape and lse.shape == (3, 8, 4)
    for b, n in enumerate(lens):
        if n == 0:  # no keys: every row empty
            assert torch.equal(o[b], torch.zeros_like(o[b]))
            assert torch.isinf(lse[b]).all() and (lse[b] < 0).all()
            continue
        check(o[b:b + 1], lse[b:b + 1], q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n], **kw)


def test_paged_equals_dense_and_chunked_prefill():
    # Sq = 40 against the cache (chunked prefill) equals the dense call.
    q, k, v = inputs(2, 4, 4, 40, 96, 32, torch.float32, seed=3)
    kc, vc, table, cl = to_paged(k, v, [96, 96], 32)
    slopes = torch.rand(2, 4) * 0.3
    o = tilt.attention_paged(q, kc, vc, table, cl, causal=True, slopes=slopes)
    want = tilt.attention(q, k, v, causal=True, slopes=slopes)
    assert (o - want).abs().max().item() <= 1e-5
