"""Reads tilt-bench's --json line and prints what tilt-bench.test checks."""

import json
import sys


def main() -> None:
    with open(sys.argv[1]) as f:
        d = json.load(f)
    print("shape", d["shape"])
    print("variant", d["variant"])
    kv, bw, ratio = d["kv_read_gbps"], d["read_bandwidth_gbps"], d["ratio_read_bandwidth"]
    consistent = bw > 0 and abs(kv / bw - ratio) <= 1e-3 + 0.01 * ratio
    print(
        "kv_read_gbps", "positive" if kv > 0 else f"not positive ({kv})",
        end=", ",
    )
    print(
        "read_bandwidth_gbps", "positive" if bw > 0 else f"not positive ({bw})",
        end=", ",
    )
    print("ratio", "consistent" if consistent else f"inconsistent ({kv} / {bw} vs {ratio})")
    before = d["read_bandwidth_before_gbps"]
    print("read_bandwidth_before_gbps", "positive" if before > 0 else f"not positive ({before})")
    if d["cpu"] and d["isa_class"]:
        print("cpu and isa_class named")


if __name__ == "__main__":
    main()
