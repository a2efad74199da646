"""Dedup speed and memory at 10k / 100k / 1M vectors (synthetic 512-d unit vectors, planted duplicates).

Measures the parts that scale with N, each in a fresh process (peak RSS from getrusage):
  * knn: the default mode's candidate search, k = 10 nearest neighbours of every vector (FAISS flat
    below 250k vectors, IVF above, as `--index-type auto` chooses);
  * semdedup: `--mode semdedup` (spherical k-means + blocked within-cluster comparison).
Pixel verification is per candidate pair (~25 ms per image and candidate on 2 cores, docs/benchmarks.md),
so its cost is linear in N with that constant.

Usage:  python benchmarks/bench_dedup_scale.py [--sizes 10000 100000 1000000] [--nprobe 8] [--noise 0.02]
        [--index-type auto|flat|ivf|hnsw]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
n, what, nprobe, noise, index_type = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rng = np.random.default_rng(0)
x = np.empty((n, 512), np.float32)
for s in range(0, n, 100_000):
    b = rng.standard_normal((min(100_000, n - s), 512), dtype=np.float32)
    x[s:s + len(b)] = b
planted = n // 100
x[n - planted:] = x[:planted] + noise * rng.standard_normal((planted, 512), dtype=np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
pair_cos = float(np.median((x[:planted] * x[n - planted:]).sum(1)))
t = time.perf_counter()
if what == "knn":
    from diffrep.indexing import faiss_index
    kind = faiss_index.resolve_type(index_type, n)
    sample = x[rng.choice(n, size=min(n, 200_000), replace=False)] if kind != "flat" else None
    idx, params = faiss_index.build([x], n, 512, kind, sample)
    faiss_index.configure(idx, params)
    if nprobe:  # dedup's candidate search depth (diffrep dedup --nprobe), not the retrieval default
        from diffrep.dedup.run import candidate_search_params
        params = {**params, **candidate_search_params(idx, 11, nprobe)}
    t_search = time.perf_counter()
    _, nb = faiss_index.search(idx, x, 11, batch=8192)
    found = float(np.mean([(i in nb[n - planted + i]) for i in range(planted)]))
    extra = {"index": params.get("type", params.get("index")), "nprobe": params.get("nprobe"),
             "search_seconds": time.perf_counter() - t_search}
else:
    from diffrep.dedup.semdedup import semdedup_groups
    group, _ = semdedup_groups(x, np.arange(n), eps=0.05)
    found = float(np.mean(group[n - planted:] == np.arange(planted)))
    extra = {}
dt = time.perf_counter() - t
print(json.dumps({"n": n, "what": what, "seconds": dt, "planted_found": found, "pair_cos": pair_cos,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--what", nargs="+", default=["knn", "semdedup"])
    ap.add_argument("--nprobe", type=int, default=8, help="IVF cells probed by the kNN candidate search: dedup's "
                    "default 8 (`diffrep dedup --nprobe`); 0 keeps the index's retrieval setting")
    ap.add_argument("--noise", type=float, default=0.02, help="per-dimension noise of the planted copies "
                    "(0.02: cosine ~0.9998; 0.5: ~0.89; 1.0: ~0.71)")
    ap.add_argument("--index-type", default="auto", help="auto (flat below 250k, IVF above), flat, ivf, hnsw")
    a = ap.parse_args()
    rows = []
    for n in a.sizes:
        for what in a.what:
            r = subprocess.run([sys.executable, "-c", CHILD, str(n), what, str(a.nprobe), str(a.noise), a.index_type],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print("\n| vectors | step | seconds | peak RSS (MB) | planted pair cosine (median) | planted duplicates found |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        step = "semdedup"
        if r["what"] == "knn":
            step = f"knn ({r['index']}" + (f", nprobe {r['nprobe']}" if r.get("nprobe") else "") + ")"
        print(f"| {r['n']:,} | {step} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['pair_cos']:.3f} | "
              f"{100 * r['planted_found']:.1f}% |")


if __name__ == "__main__":
    main()
