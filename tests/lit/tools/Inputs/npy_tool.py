"""Slices and compares float32 .npy files for the command-line tests.

    npy_tool.py slice IN.npy OUT.npy AXIS BEGIN END
    npy_tool.py diff A.npy B.npy
    npy_tool.py shape A.npy
    npy_tool.py set IN.npy OUT.npy INDEX VALUE
    npy_tool.py page PAGE SEED LENS K.npy V.npy KC.npy VC.npy BT.npy CL.npy

slice keeps [BEGIN, END) of AXIS; diff prints the max abs difference of two
arrays of one shape ("inf" where exactly one of them is infinite, 0 where
both are the same infinity); shape prints "shape D0,D1,..."; set writes a
copy with element INDEX (flat) set to VALUE. page stores dense K and V
[B, Hkv, S, D] as a paged KV cache [num_pages, PAGE, Hkv, D] (ALIBI.md):
sequence b keeps its first LENS[b] tokens (LENS: comma-separated), its pages
shuffled (SEED) among two spare ones, and the block table [B, max_pages]
holds -1 past each sequence's used pages. Standard library only.
"""
import ast
import math
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    n = struct.unpack("<H", data[8:10])[0]
    header = ast.literal_eval(data[10:10 + n].decode())
    assert header["descr"] == "<f4" and not header["fortran_order"], path
    shape = tuple(header["shape"])
    count = math.prod(shape)
    return shape, list(struct.unpack("<%df" % count, data[10 + n:10 + n + 4 * count]))


def write(path, shape, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (shape,)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % len(values), *values))


def page(size, seed, lens, kin, vin, kout, vout, btout, clout):
    import random
    size = int(size)
    lens = [int(x) for x in lens.split(",")]
    (B, hkv, S, D), k = read(kin)
    _, v = read(vin)
    assert len(lens) == B and max(lens) <= S
    used = [(n + size - 1) // size for n in lens]
    ids = list(range(sum(used) + 2))
    random.Random(int(seed)).shuffle(ids)
    max_pages = (S + size - 1) // size
    table, kc, vc = [], [0.0] * (len(ids) * size * hkv * D), None
    vc = list(kc)
    nxt = 0
    for b in range(B):
        for p in range(max_pages):
            if p < used[b]:
                table.append(ids[nxt])
                nxt += 1
            else:
                table.append(-1)
        for t in range(lens[b]):
            page_id = table[b * max_pages + t // size]
            for h in range(hkv):
                src = ((b * hkv + h) * S + t) * D
                dst = ((page_id * size + t % size) * hkv + h) * D
                kc[dst:dst + D] = k[src:src + D]
                vc[dst:dst + D] = v[src:src + D]
    write(kout, (len(ids), size, hkv, D), kc)
    write(vout, (len(ids), size, hkv, D), vc)
    write(btout, (B, max_pages), [float(x) for x in table])
    write(clout, (B,), [float(x) for x in lens])


def main():
    if sys.argv[1] == "slice":
        shape, values = read(sys.argv[2])
        axis, begin, end = (int(x) for x in sys.argv[4:7])
        outer = math.prod(shape[:axis])
        inner = math.prod(shape[axis + 1:])
        out = []
        for o in range(outer):
            base = o * shape[axis] * inner
            out += values[base + begin * inner:base + end * inner]
        write(sys.argv[3], shape[:axis] + (end - begin,) + shape[axis + 1:], out)
    elif sys.argv[1] == "diff":
        sa, a = read(sys.argv[2])
        sb, b = read(sys.argv[3])
        assert sa == sb, (sa, sb)
        worst = 0.0
        for x, y in zip(a, b):
            if math.isinf(x) or math.isinf(y):
                worst = max(worst, 0.0 if x == y else math.inf)
            else:
                worst = max(worst, abs(x - y))
        print("max abs diff %.3e" % worst)
    elif sys.argv[1] == "shape":
        shape, _ = read(sys.argv[2])
        print("shape " + ",".join(str(d) for d in shape))
    elif sys.argv[1] == "set":
        shape, values = read(sys.argv[2])
        values[int(sys.argv[4])] = float(sys.argv[5])
        write(sys.argv[3], shape, values)
    elif sys.argv[1] == "page":
        page(*sys.argv[2:])
    else:
        sys.exit("unknown command " + sys.argv[1])


main()
