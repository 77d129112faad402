#!/usr/bin/env python3
"""Input files of the GPU numerics cases, and a finiteness check of outputs.

    inputs.py make DIR       write every .npy that tests/gpu/cases.txt names
                             (as data/NAME.npy) into DIR
    inputs.py finite FILE    exit 1 if a float32 .npy holds a NaN or an inf

Only the standard library is used: the GPU machine has no package registry,
and numpy is not guaranteed there. The files are deterministic (seeded), so
the build machine and the GPU machine make identical ones.
"""

import array
import math
import os
import random
import struct
import sys

# --- .npy (format 1.0) -------------------------------------------------------

_DESCR = {"f": "<f4", "i": "<i4", "B": "|u1"}


def write_npy(path, typecode, shape, values):
    """Writes values (flat, row-major) as an .npy of the given shape."""
    assert math.prod(shape) == len(values), (path, shape, len(values))
    data = array.array(typecode, values)
    assert data.itemsize == int(_DESCR[typecode][-1])
    if sys.byteorder == "big" and data.itemsize > 1:
        data.byteswap()
    dims = f"{shape[0]}," if len(shape) == 1 else ", ".join(map(str, shape))
    header = f"{{'descr': '{_DESCR[typecode]}', 'fortran_order': False, 'shape': ({dims}), }}"
    # The magic, version and length take 10 bytes; the whole header is padded
    # with spaces to a multiple of 64 and ends with a newline.
    pad = -(10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)))
        f.write(header.encode("latin1"))
        f.write(data.tobytes())


def read_npy_f32(path):
    """Returns the values of a little-endian float32 .npy file."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not an .npy file")
    if blob[6] == 1:
        start = 10 + struct.unpack_from("<H", blob, 8)[0]
    else:
        start = 12 + struct.unpack_from("<I", blob, 8)[0]
    header = blob[10:start].decode("latin1")
    if "'<f4'" not in header:
        raise ValueError(f"{path}: expected float32, header {header.strip()}")
    data = array.array("f")
    data.frombytes(blob[start:])
    if sys.byteorder == "big":
        data.byteswap()
    return data


# --- the inputs --------------------------------------------------------------


def slopes(rng, *shape):
    """Custom slopes: log-uniform in [2^-10, 1], not the standard ones."""
    n = math.prod(shape)
    return list(shape), [2.0 ** -rng.uniform(0.0, 10.0) for _ in range(n)]


def padding_mask(rows):
    """A key padding mask [B, Sk] from one list of 0/1 per batch entry."""
    assert len({len(r) for r in rows}) == 1
    return [len(rows), len(rows[0])], [v for r in rows for v in r]


def left_pad(sk, n):
    return [0] * n + [1] * (sk - n)


def right_pad(sk, n):
    return [1] * (sk - n) + [0] * n


def holes(rng, sk, p):
    return [0 if rng.random() < p else 1 for _ in range(sk)]


def varlen(out, name, rng, heads, kv_heads, head_dim, q_lens, k_lens):
    """Packed q [total_q, H, D], k and v [total_k, Hkv, D], and the offsets."""
    def offsets(lens):
        cu = [0]
        for n in lens:
            cu.append(cu[-1] + n)
        return cu

    cu_q, cu_k = offsets(q_lens), offsets(k_lens)
    for tensor, rows, h in (("q", cu_q[-1], heads), ("k", cu_k[-1], kv_heads),
                            ("v", cu_k[-1], kv_heads)):
        shape = [rows, h, head_dim]
        values = [rng.gauss(0.0, 1.0) for _ in range(math.prod(shape))]
        write_npy(os.path.join(out, f"{name}-{tensor}.npy"), "f", shape, values)
    write_npy(os.path.join(out, f"{name}-cuq.npy"), "i", [len(cu_q)], cu_q)
    write_npy(os.path.join(out, f"{name}-cuk.npy"), "i", [len(cu_k)], cu_k)


def paged(out, name, rng, heads, kv_heads, head_dim, seq_q, lens, page):
    """q [B, H, Sq, D], k and v caches [pages, page, Hkv, D] with the pages
    of every sequence in shuffled order and three spare ones, the block table
    [B, max_pages] (entries past a sequence's pages hold garbage the kernel
    must never follow) and the context lengths [B]."""
    used = [-(-n // page) for n in lens]
    max_pages = max(used) + 2
    pages = sum(used) + 3
    ids = list(range(pages))
    rng.shuffle(ids)
    garbage = [-1, pages + 7, 2**31 - 1, -2**31]
    table, next_id = [], 0
    for b, n in enumerate(used):
        for p in range(max_pages):
            if p < n:
                table.append(ids[next_id])
                next_id += 1
            else:
                table.append(garbage[(b + p) % 4])
    batch = len(lens)
    for tensor, shape in (("q", [batch, heads, seq_q, head_dim]),
                          ("k", [pages, page, kv_heads, head_dim]),
                          ("v", [pages, page, kv_heads, head_dim])):
        values = [rng.gauss(0.0, 1.0) for _ in range(math.prod(shape))]
        write_npy(os.path.join(out, f"{name}-{tensor}.npy"), "f", shape, values)
    write_npy(os.path.join(out, f"{name}-bt.npy"), "i", [batch, max_pages],
              table)
    write_npy(os.path.join(out, f"{name}-cl.npy"), "i", [batch], lens)


def dense_backward(out, name, rng, batch, heads, kv_heads, head_dim, seq_q,
                   seq_k):
    """q [B, H, Sq, D], k and v [B, Hkv, Sk, D] and the upstream gradient dO
    like q, for a backward case."""
    for tensor, shape in (("q", [batch, heads, seq_q, head_dim]),
                          ("k", [batch, kv_heads, seq_k, head_dim]),
                          ("v", [batch, kv_heads, seq_k, head_dim]),
                          ("do", [batch, heads, seq_q, head_dim])):
        values = [rng.gauss(0.0, 1.0) for _ in range(math.prod(shape))]
        write_npy(os.path.join(out, f"{name}-{tensor}.npy"), "f", shape, values)


def make(out):
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20261125)

    def save_f32(name, shape_values):
        shape, values = shape_values
        write_npy(os.path.join(out, name), "f", shape, values)

    def save_mask(name, shape_values):
        shape, values = shape_values
        write_npy(os.path.join(out, name), "B", shape, values)

    save_f32("slopes-h12.npy", slopes(rng, 12))
    save_f32("slopes-b2-h40.npy", slopes(rng, 2, 40))
    save_f32("slopes-b2-h56.npy", slopes(rng, 2, 56))
    save_f32("slopes-b3-h56.npy", slopes(rng, 3, 56))

    # Fully padded rows: batch entry 2 has no key at all; with --causal, left
    # padding leaves the first rows of an entry without a visible key.
    save_mask("kpm-b3-s129.npy",
              padding_mask([[1] * 129, left_pad(129, 40), [0] * 129]))
    save_mask("kpm-b2-s128.npy",
              padding_mask([left_pad(128, 37),
                            [0 if j >= 100 or j % 7 == 3 else 1
                             for j in range(128)]]))
    save_mask("kpm-b2-s2048.npy",
              padding_mask([holes(rng, 2048, 0.3),
                            [0] * 3 + right_pad(2045, 548)]))
    save_mask("kpm-b2-s8193.npy",
              padding_mask([left_pad(8193, 100), right_pad(8193, 1)]))

    # Ragged batches. Sequences with more queries than keys (under --causal),
    # or with no key at all, have rows that see no key.
    varlen(out, "vl-a", rng, 12, 4, 64, [17, 1, 129, 5, 128],
           [17, 2048, 127, 0, 128])
    varlen(out, "vl-b", rng, 40, 40, 128, [127, 128, 1], [128, 129, 17])
    varlen(out, "vl-c", rng, 71, 1, 80, [1, 129], [8192, 129])
    varlen(out, "vl-d", rng, 56, 8, 96, [128, 17, 129], [128, 2048, 1])

    # Paged KV caches (the decode family, gpu_decode_sm80): a sequence with
    # no keys gives rows that see nothing.
    paged(out, "pg-a", rng, 32, 8, 128, 1, [8192, 3001, 0], 16)
    paged(out, "pg-b", rng, 40, 40, 64, 2, [1000, 17, 0], 64)
    paged(out, "pg-c", rng, 71, 1, 128, 7, [32768, 1], 256)
    paged(out, "pg-d", rng, 12, 4, 64, 16, [2048, 129], 16)

    # The backward (gpu_bwd_sm80): GQA causal, trainable [H] slopes with a
    # window and Sq != Sk, trainable [B, H] slopes with a padding mask whose
    # second batch entry is all padding (rows that see no key), and below
    # the positions form.
    dense_backward(out, "bw-a", rng, 2, 8, 2, 128, 300, 300)
    dense_backward(out, "bw-b", rng, 1, 12, 12, 64, 129, 257)
    dense_backward(out, "bw-c", rng, 2, 4, 1, 96, 200, 200)
    save_f32("slopes-b2-h4.npy", slopes(rng, 2, 4))
    save_mask("kpm-b2-s200.npy",
              padding_mask([holes(rng, 200, 0.2), [0] * 200]))
    # alibi_positions (positions from kpm-b3-s129: a left-padded entry and
    # an all-padding one), GQA 3:1, trainable [H] slopes.
    dense_backward(out, "bw-d", rng, 3, 12, 4, 64, 129, 129)


def finite(path):
    data = read_npy_f32(path)
    if all(map(math.isfinite, data)):
        return 0
    bad = sum(1 for x in data if not math.isfinite(x))
    print(f"{path}: {bad} of {len(data)} values are NaN or inf")
    return 1


def main(argv):
    if len(argv) == 3 and argv[1] == "make":
        make(argv[2])
        return 0
    if len(argv) == 3 and argv[1] == "finite":
        return finite(argv[2])
    print("usage: inputs.py make DIR | inputs.py finite FILE.npy",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
