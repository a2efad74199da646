"""Local engine against the Ray engine on the same images, measured in one run.

Copies --images packaged emoji into a folder (or reuses --work), then indexes it twice from scratch: with the
local engine and with ``--engine ray`` on a local Ray instance started for the run (``--num-workers``
actors); checks that both indexes hold the same ids and vectors and prints the wall times and their ratio.
docs/benchmarks.md records the output with the command.

Usage:  python benchmarks/bench_scale.py [--images 2000] [--num-workers 2] [--work DIR]
"""
from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from diffrep.datasets import get_dataset
from diffrep.distributed.ray_index import connect, embed_chunks
from diffrep.indexing.build import index
from diffrep.indexing.load import open_index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="diffrep-bench-scale-"))
    src = work / "images"
    if not src.is_dir():
        src.mkdir(parents=True)
        files = sorted((get_dataset("emoji") / "images").glob("*.png"))[:a.images]
        for f in files:
            shutil.copyfile(f, src / f.name)
    n = len(list(src.glob("*.png")))
    for name in ("local", "ray"):
        shutil.rmtree(work / name, ignore_errors=True)
    t0 = time.perf_counter()
    index(src, work / "local")
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    connect("local")
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index(src, work / "ray", embed=functools.partial(embed_chunks, address="local", workers=a.num_workers))
    ray_s = time.perf_counter() - t0
    la, ra = open_index(work / "local"), open_index(work / "ray")
    same = la.column("id") == ra.column("id") and bool(np.allclose(la.vectors(np.arange(len(la))),
                                                                    ra.vectors(np.arange(len(ra))), atol=1e-6))
    print(f"{n} images, {a.num_workers} Ray workers; same ids and vectors: {same}")
    print("| engine | wall s | images/s |")
    print("|---|---|---|")
    print(f"| local | {local_s:.1f} | {n / local_s:.1f} |")
    print(f"| ray (cluster start {start_s:.1f} s not included) | {ray_s:.1f} | {n / ray_s:.1f} |")
    print(f"ray / local wall time: {ray_s / local_s:.2f}")


if __name__ == "__main__":
    main()
