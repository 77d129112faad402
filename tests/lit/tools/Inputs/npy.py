"""Writes a float32 .npy of seeded normal values for tilt-run tests.

    npy.py OUT.npy D0,D1,... [--scale S] [--nan] [--seed N]

--scale multiplies the values (default 1); --nan makes the first one NaN;
--seed picks the values (default 0).
Standard library only.
"""
import argparse
import math
import random
import struct

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("shape")
p.add_argument("--scale", type=float, default=1.0)
p.add_argument("--nan", action="store_true")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
shape = tuple(int(d) for d in a.shape.split(","))
rng = random.Random(a.seed)
values = [a.scale * rng.gauss(0.0, 1.0) for _ in range(math.prod(shape))]
if a.nan:
    values[0] = math.nan
header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (shape,)
header += " " * (63 - (10 + len(header)) % 64) + "\n"
with open(a.out, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%df" % len(values), *values))
