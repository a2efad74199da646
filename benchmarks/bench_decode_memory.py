"""Peak memory of decoding huge images on several threads, with and without the decode pixel budget.

Each setting runs in a fresh process (its own high-water mark, VmHWM): six threads decode six copies of one
PNG that decodes to W x W RGBA pixels (a flat image compresses to a few hundred KB). Settings: the default
budget (32M pixels) with the CLI's heap bound (`decode.bound_heap`), the default budget alone, and no budget.

Usage:  python benchmarks/bench_decode_memory.py [--side 5000] [--threads 6]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r'''
import io, sys, time
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from diffrep.decode import bound_heap, decode_image
if sys.argv[3] == "1":
    bound_heap()
side, threads = int(sys.argv[1]), int(sys.argv[2])
buf = io.BytesIO()
Image.new("RGBA", (side, side), (10, 200, 30, 255)).save(buf, format="PNG")
data = buf.getvalue()
def hwm():
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
base, t0 = hwm(), time.perf_counter()
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(lambda _: decode_image(data).shape, range(threads)))
print(len(data), (hwm() - base) // 1024, round(time.perf_counter() - t0, 2))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=6)
    a = ap.parse_args()
    print("| setting | PNG size | peak memory above the start (MB) | wall (s) |\n|---|---|---|---|")
    for name, budget, heap in (("budget 32M px + bound_heap (the CLI)", "32000000", "1"),
                               ("budget 32M px, glibc defaults", "32000000", "0"),
                               ("no budget, glibc defaults", str(10**12), "0")):
        r = subprocess.run([sys.executable, "-c", CHILD, str(a.side), str(a.threads), heap], capture_output=True,
                           text=True, env={**os.environ, "DIFFREP_DECODE_BUDGET_PIXELS": budget}, check=True)
        size, mb, wall = r.stdout.split()
        print(f"| {name} | {int(size) // 1024} KB | {mb} | {wall} |", flush=True)


if __name__ == "__main__":
    main()
