"""Slices and compares float32 .npy files for the command-line tests.

    npy_tool.py slice IN.npy OUT.npy AXIS BEGIN END
    npy_tool.py diff A.npy B.npy
    npy_tool.py shape A.npy

slice keeps [BEGIN, END) of AXIS; diff prints the max abs difference of two
arrays of one shape ("inf" where exactly one of them is infinite, 0 where
both are the same infinity); shape prints "shape D0,D1,...". Standard library only.
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
    else:
        sys.exit("unknown command " + sys.argv[1])


main()
