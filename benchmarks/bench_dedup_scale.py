"""Dedup speed and memory at 10k / 100k / 1M vectors (synthetic 512-d unit vectors, planted duplicates).

Measures the parts that scale with N, each in a fresh process (peak RSS from getrusage):
  * knn: the default mode's candidate search, k = 10 nearest neighbours of every vector (FAISS flat
    below 250k vectors, IVF above, as `--index-type auto` chooses);
  * semdedup: `--mode semdedup` (spherical k-means + blocked within-cluster comparison).
Pixel verification is per candidate pair (~25 ms per image and candidate on 2 cores, docs/benchmarks.md),
so its cost is linear in N with that constant.

Usage:  python benchmarks/bench_dedup_scale.py [--sizes 10000 100000 1000000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
n, what = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
x = np.empty((n, 512), np.float32)
for s in range(0, n, 100_000):
    b = rng.standard_normal((min(100_000, n - s), 512), dtype=np.float32)
    x[s:s + len(b)] = b
planted = n // 100
x[n - planted:] = x[:planted] + 0.02 * rng.standard_normal((planted, 512), dtype=np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
t = time.perf_counter()
if what == "knn":
    from diffrep.indexing import faiss_index
    kind = faiss_index.resolve_type("auto", n)
    sample = x[rng.choice(n, size=min(n, 200_000), replace=False)] if kind != "flat" else None
    idx, params = faiss_index.build([x], n, 512, kind, sample)
    faiss_index.configure(idx, params)
    _, nb = faiss_index.search(idx, x, 11, batch=8192)
    found = float(np.mean([(i in nb[n - planted + i]) for i in range(planted)]))
    extra = {"index": params["type"]}
else:
    from diffrep.dedup.semdedup import semdedup_groups
    group, _ = semdedup_groups(x, np.arange(n), eps=0.05)
    found = float(np.mean(group[n - planted:] == np.arange(planted)))
    extra = {}
dt = time.perf_counter() - t
print(json.dumps({"n": n, "what": what, "seconds": dt, "planted_found": found,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--what", nargs="+", default=["knn", "semdedup"])
    a = ap.parse_args()
    rows = []
    for n in a.sizes:
        for what in a.what:
            r = subprocess.run([sys.executable, "-c", CHILD, str(n), what], capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print("\n| vectors | step | seconds | peak RSS (MB) | planted duplicates found |")
    print("|---|---|---|---|---|")
    for r in rows:
        step = f"knn ({r['index']})" if r["what"] == "knn" else "semdedup"
        print(f"| {r['n']:,} | {step} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {100 * r['planted_found']:.1f}% |")


if __name__ == "__main__":
    main()
