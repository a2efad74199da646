"""Scale-out measurements; docs/benchmarks.md and docs/scale.md record the output with the command.

Part (a), ``--part engines``: copies --images packaged emoji into a folder (or reuses --work), then indexes it
twice from scratch: with the local engine and with ``--engine ray`` on a local Ray instance started for the run
(``--num-workers`` actors); checks that both indexes hold the same ids and vectors and prints the wall times and
their ratio. ``--shards N``: the images packed into N webdataset tar shards first, indexed shard by shard.
``--jpeg``: 1024x768 photo-like JPEG renders of the emoji instead (decoding then costs what it does on scraped
images).

Part (b), ``--part search`` (bench_scale_search.py): --queries audit queries against --stored synthetic vectors
drawn like real SSCD descriptors, with the index ``--memory-budget`` picks: build time, peak RSS, queries/s
and recall@1 against exact search on a sample.

Part (c), ``--part ondisk``, after part (b) in the same --work: the same index filled again with its inverted lists
on disk (``diffrep index --on-disk``): fill time and peak RSS, then the search at the tuned nprobe with the lists
memory-mapped: queries/s, peak RSS and the share of hits equal to the in-memory index's.

Usage:  python benchmarks/bench_scale.py [--part engines|search|ondisk|all] [--images 2000] [--num-workers 2]
            [--shards N] [--jpeg]
            [--stored 10000000] [--queries 10000] [--memory-budget 8G] [--exact-sample 1000] [--doublings 2]
            [--reuse-build] [--library-path] [--work DIR]
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from typing import Any
from pathlib import Path

import numpy as np

from diffrep.cli.commands import _bytes
from diffrep.datasets import get_dataset
from diffrep.distributed.ray_index import connect, embed_chunks, index_shards
from diffrep.indexing.build import index
from diffrep.indexing.load import open_index


def _images(work: Path, count: int, jpeg: bool = False) -> Path:
    """``count`` packaged emoji copied into a folder once, or with ``jpeg`` rendered as 1024x768 photo-like JPEGs
    (bench_index.make_sets), whose decoding costs about what a web-scraped image's does."""
    src = work / ("jpeg" if jpeg else "images")
    if not src.is_dir():
        emoji = get_dataset("emoji") / "images"
        if jpeg:
            from bench_index import make_sets

            shutil.move(str(make_sets(emoji, work / "render", 2 * count)["1024x768 JPEG"]), str(src))
            shutil.rmtree(work / "render", ignore_errors=True)
        else:
            src.mkdir(parents=True)
            for f in sorted(emoji.glob("*.png"))[:count]:
                shutil.copyfile(f, src / f.name)
    return src


def _tar_shards(work: Path, src: Path, count: int) -> list[str]:
    """The images of ``src`` packed into ``count`` webdataset tar shards (once)."""
    import tarfile

    files = sorted(p for p in src.iterdir() if p.suffix in (".png", ".jpg"))
    out = work / (f"shards-{count}" if src.name == "images" else f"shards-{src.name}-{count}")
    if not out.is_dir():
        out.mkdir()
        for k in range(count):
            with tarfile.open(out / f"s-{k:04d}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
                for f in files[k::count]:
                    tf.add(f, arcname=f.name)
    return sorted(str(p) for p in out.glob("*.tar"))


def engines(work: Path, count: int, workers: int, shards: int = 0, jpeg: bool = False) -> None:
    """Index the images with both engines; ``shards`` > 0: packed into that many tar shards (indexed shard by
    shard: one Ray Data decoding task per shard); ``jpeg``: 1024x768 JPEG renders instead of the 64 px PNGs."""
    src = _images(work, count, jpeg)
    n = len([p for p in src.iterdir() if p.suffix in (".png", ".jpg")])
    source: Any = _tar_shards(work, src, shards) if shards else src
    for name in ("local", "ray"):
        shutil.rmtree(work / name, ignore_errors=True)
    t0 = time.perf_counter()
    index(source, work / "local")
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    connect("local")
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index(source, work / "ray", embed=functools.partial(embed_chunks, address="local", workers=workers),
          shards=functools.partial(index_shards, address="local", workers=workers))
    ray_s = time.perf_counter() - t0
    la, ra = open_index(work / "local"), open_index(work / "ray")
    same = la.column("id") == ra.column("id") and bool(np.allclose(la.vectors(np.arange(len(la))),
                                                                    ra.vectors(np.arange(len(ra))), atol=1e-6))
    print(f"{n} images{f' in {shards} tar shards' if shards else ''}, {workers} Ray workers; same ids and vectors: "
          f"{same}")
    print("| engine | wall s | images/s |")
    print("|---|---|---|")
    print(f"| local | {local_s:.1f} | {n / local_s:.1f} |")
    print(f"| ray (cluster start {start_s:.1f} s not included) | {ray_s:.1f} | {n / ray_s:.1f} |")
    print(f"ray / local wall time: {ray_s / local_s:.2f}")


def search(work: Path, a: argparse.Namespace) -> None:
    """Part (b): each step in its own process (bench_scale_search.py)."""
    import bench_scale_search as bs

    work.mkdir(parents=True, exist_ok=True)
    like = work / "local"
    if not (like / "index.json").is_file():
        index(_images(work, a.images), like)
    budget = _bytes(a.memory_budget, "--memory-budget")
    bs.run_step("like", str(work), str(like))
    if not (work / "vectors.f32").is_file() or a.regenerate:
        bs.run_step("generate", str(work), str(a.stored), str(a.queries), "0")
    if not (work / "bench.faiss").is_file() or not a.reuse_build:
        bs.run_step("build", str(work), str(a.stored), str(budget))
    for stale in work.glob("found_*.npy"):
        stale.unlink()
    bs.run_step("search", str(work), str(a.doublings))
    bs.run_step("tune", str(work), str(a.stored))
    if a.library_path:
        nprobe = json.loads((work / "tuned.json").read_text())["nprobe"]
        bs.run_step("library-search", str(work), str(a.stored), str(nprobe))
    bs.run_step("exact", str(work), str(a.stored), str(a.exact_sample))


def on_disk(work: Path, a: argparse.Namespace) -> None:
    """Part (c): part (b)'s index filled again with its lists on disk, and searched (bench_scale_search.py)."""
    import bench_scale_search as bs

    if not (work / "tuned.json").is_file():
        raise SystemExit(f"--part ondisk needs an earlier --part search run in --work {work}")
    nprobe = json.loads((work / "tuned.json").read_text())["nprobe"]
    bs.run_step("empty-index", str(work))
    bs.run_step("ondisk-build", str(work), str(a.stored))
    bs.run_step("ondisk-search", str(work), str(nprobe))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("engines", "search", "ondisk", "all"), default="engines")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=0, help="engines: pack the images into this many tar shards")
    ap.add_argument("--jpeg", action="store_true", help="engines: 1024x768 JPEG renders instead of 64 px PNGs")
    ap.add_argument("--stored", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--memory-budget", default="8G")
    ap.add_argument("--doublings", type=int, default=2, help="also search at nprobe x2, x4, ... this many times")
    ap.add_argument("--reuse-build", action="store_true", help="search the index an earlier run built in --work")
    ap.add_argument("--library-path", action="store_true",
                    help="also search through the audit's LoadedIndex, writing the vectors as index chunk files")
    ap.add_argument("--exact-sample", type=int, default=1000)
    ap.add_argument("--regenerate", action="store_true", help="draw the stored vectors again")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="diffrep-bench-scale-"))
    if a.part in ("engines", "all"):
        engines(work, a.images, a.num_workers, a.shards, a.jpeg)
    if a.part in ("search", "all"):
        search(work, a)
    if a.part in ("ondisk", "all"):
        on_disk(work, a)


if __name__ == "__main__":
    main()
