"""Memory of the manifest at build and at audit time: ``indexing.manifest`` against the in-memory resolution it
replaced (kept below as the baseline, ``_resolve_in_memory``), on synthetic chunk tables shaped like a
webdataset index (ids ``shard/key.jpg``, tar member paths, 60-character captions, SHA-256 hex).

Steps, each in its own process so its peak RSS is its own:
  make      writes --rows rows as chunk tables of --chunk-size rows (1 in 20 ids re-embedded in a later chunk,
            1 in 100 a skip), no vectors (the manifest never reads them)
  old       the baseline: every chunk table and a dict of every id in memory, one sort, one Parquet file
  new       ``write_manifest`` at --max-rows, then at its default bound (``MAX_ROWS``; its file is the one compared
            and opened)
  open-old  open the Parquet manifest and read the rows of 10,000 random FAISS ids and their paths
  open-new  the same through ``Manifest`` (memory-mapped): the columns an audit reads (chunk, row, path)

With ``--merge-added N`` the steps are a rerun's instead (``indexing.merge``):
  make      as above
  prev      the previous generation: ``write_manifest`` with its skips table
  add       N more rows as new chunks (1 in 10 re-embeds an indexed id, 1 in 100 a skip, the rest new ids)
  full      the next manifest resolved from every chunk (``write_manifest``, the baseline)
  merge     the next manifest merged from the previous one and the new chunks (``merge_manifest``)
and the two files are compared. These two also report their peak anonymous memory (``peak_anon_mb``): the
merge reads the previous manifest through a memory map, whose file pages ru_maxrss counts.

Usage:  python benchmarks/bench_manifest.py [--rows 5000000] [--chunk-size 1024] [--max-rows 4000000] [--work DIR]
            [--no-baseline] [--merge-added N]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep.indexing import manifest as mf
from diffrep.indexing.merge import merge_manifest
from diffrep.indexing.store import CHUNK_SCHEMA, IndexDir


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now() -> dict:
    """Resident memory now: anonymous (the process's own) and file pages (a memory-mapped file's pages read,
    which the kernel can drop), in MB."""
    with open("/proc/self/status") as fh:
        rows = dict(line.split(":", 1) for line in fh if line.startswith(("RssAnon", "RssFile")))
    return {"anon_mb": int(rows["RssAnon"].split()[0]) // 1024, "file_mb": int(rows["RssFile"].split()[0]) // 1024}


def _write_chunks(idx: IndexDir, order: np.ndarray, chunk_size: int, rng: np.random.Generator, first: int) -> None:
    for number, s in enumerate(range(0, len(order), chunk_size), start=first):
        keys = order[s:s + chunk_size]
        skip = rng.random(len(keys)) < 0.01
        ok_rows = np.cumsum(~skip) - 1
        table = pa.table({
            "id": [f"{k // 10000:05d}/{k:09d}.jpg" for k in keys],
            "path": [f"/data/laion/{k // 10000:05d}.tar::{k:09d}.jpg" for k in keys],
            "caption": [f"a photograph of object {k} on a table, high quality, trending {k % 97}" for k in keys],
            "sha256": [f"{k:064x}" for k in keys], "bytes": (keys * 7 % 90000 + 10000).astype(np.int64),
            "mtime": np.full(len(keys), 1.7e9), "width": np.full(len(keys), 512, np.int32),
            "height": np.full(len(keys), 512, np.int32),
            "status": np.where(skip, "skipped", "ok").astype(object),
            "reason": np.where(skip, "cannot decode", None).astype(object),
            "row": np.where(skip, -1, ok_rows).astype(np.int32)}, schema=CHUNK_SCHEMA)
        idx.chunks_dir.mkdir(parents=True, exist_ok=True)
        np.save(idx.chunks_dir / f"c{number:06d}.npy", np.zeros((int((~skip).sum()), 1), np.float32))
        pq.write_table(table, idx.chunks_dir / f"c{number:06d}.parquet")


def _make(work: Path, rows: int, chunk_size: int) -> None:
    idx = IndexDir(work / "idx")
    rng = np.random.default_rng(0)
    redo = rng.random(rows) < 0.05
    order = np.concatenate([np.arange(rows), np.flatnonzero(redo)])  # re-embedded ids come again at the end
    _write_chunks(idx, order, chunk_size, rng, 1)
    print(json.dumps({"step": "make", "rows": int(len(order)), "ids": rows,
                      "chunks": len(idx.chunk_numbers())}), flush=True)


def _add(work: Path, rows: int, added: int, chunk_size: int) -> None:
    """``added`` rows in new chunks: 1 in 10 re-embeds an id of the first ``rows``, the others are new ids."""
    idx = IndexDir(work / "idx")
    rng = np.random.default_rng(1)
    again = rng.random(added) < 0.1
    keys = np.where(again, rng.integers(0, rows, added), rows + np.arange(added))
    first = idx.next_chunk_number()
    _write_chunks(idx, keys, chunk_size, rng, first)
    print(json.dumps({"step": "add", "rows": added, "chunks": len(idx.chunk_numbers()) - first + 1}), flush=True)


def _resolve_in_memory(idx: IndexDir, out: Path) -> int:
    """The baseline: the latest row per id in a dict over every chunk table held in memory, then one sort."""
    latest: dict[str, tuple[int, int]] = {}
    tables: dict[int, pa.Table] = {}
    for ch in idx.iter_chunks():
        tables[ch.number] = ch.table
        for pos, i in enumerate(ch.table.column("id").to_pylist()):
            latest[i] = (ch.number, pos)
    parts = []
    for number, table in tables.items():
        keep = [pos for pos, i in enumerate(table.column("id").to_pylist()) if latest[i] == (number, pos)]
        t = table.take(pa.array(keep, pa.int64()))
        t = t.filter(pa.compute.equal(t.column("status"), "ok"))
        parts.append(t.append_column("chunk", pa.array([number] * len(t), pa.int32())))
    manifest = pa.concat_tables(parts).sort_by("id")
    n = manifest.num_rows
    manifest = manifest.drop_columns(["status", "reason"]).add_column(0, "idx", pa.array(np.arange(n), pa.int64()))
    pq.write_table(manifest, out)
    return n


def _open_and_read(path: Path, parquet: bool) -> dict:
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    if parquet:
        table = pq.read_table(path)
        n = table.num_rows
        ids = rng.choice(n, 10_000, replace=False)
        rows = table.take(pa.array(ids))
        paths = [table.column("path")[int(j)].as_py() for j in ids]
    else:
        m = mf.Manifest(path)
        n = m.num_rows
        ids = rng.choice(n, 10_000, replace=False)
        rows = m.take(ids, ["chunk", "row", "path"])  # what an audit reads: vector locations and paths
        lookup = m.lookup("path")
        paths = [lookup[int(j)] for j in ids]
    assert rows.num_rows == len(paths) == 10_000 and rows.column("path").to_pylist() == paths
    return {"rows": n, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(_rss_mb()), **_rss_now()}


class _AnonPeak:
    """The largest anonymous RSS seen while it runs (sampled every 20 ms): memory-mapped file pages, which
    ru_maxrss counts too, are left out."""

    def __enter__(self) -> "_AnonPeak":
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_now()["anon_mb"])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _step(step: str, work: Path, args: argparse.Namespace) -> None:
    if step in ("full", "merge"):
        with _AnonPeak() as anon:
            _run_step(step, work, args)
        print(json.dumps({"step": step, "peak_anon_mb": anon.peak}), flush=True)
        return None
    return _run_step(step, work, args)


def _run_step(step: str, work: Path, args: argparse.Namespace) -> None:
    idx = IndexDir(work / "idx")
    t0 = time.perf_counter()
    if step == "make":
        return _make(work, args.rows, args.chunk_size)
    if step == "old":
        out = {"rows": _resolve_in_memory(idx, work / "old.parquet")}
    elif step == "new":
        n, _ = mf.write_manifest(idx, work / "new.arrow", max_rows=args.max_rows)
        out = {"rows": n, "max_rows": args.max_rows}
    elif step == "prev":
        n, _ = mf.write_manifest(idx, work / "prev.arrow", skips_path=work / "prev.parquet")
        (work / "prev.json").write_text(json.dumps({"rows": n, "last_chunk": idx.chunk_numbers()[-1]}))
        out = {"rows": n}
    elif step == "add":
        return _add(work, args.rows, args.merge_added, args.chunk_size)
    elif step == "full":
        n, _ = mf.write_manifest(idx, work / "full.arrow", skips_path=work / "full.parquet")
        out = {"rows": n}
    elif step == "merge":
        prev = json.loads((work / "prev.json").read_text())
        n, _ = merge_manifest(idx, work / "merged.arrow", work / "merged.parquet", work / "prev.arrow",
                              work / "prev.parquet", prev["last_chunk"], expected_rows=prev["rows"])
        out = {"rows": n}
    elif step in ("open-old", "open-new"):
        out = _open_and_read(work / ("old.parquet" if step == "open-old" else "new.arrow"), step == "open-old")
        print(json.dumps({"step": step, **out}), flush=True)
        return None
    out.update(seconds=round(time.perf_counter() - t0, 1), peak_rss_mb=round(_rss_mb()))
    print(json.dumps({"step": step, **out}), flush=True)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--max-rows", type=int, default=4_000_000)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--no-baseline", action="store_true", help="leave out the in-memory baseline (old, open-old)")
    ap.add_argument("--merge-added", type=int, default=0, help="measure a rerun's merge with this many new rows")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-manifest-"))
    if args.step:
        return _step(args.step, work, args)
    base = [sys.executable, __file__, "--work", str(work), "--rows", str(args.rows), "--chunk-size",
            str(args.chunk_size)]
    if args.merge_added:
        for step in ("make", "prev", "add", "full", "merge"):
            subprocess.run(base + ["--step", step, "--merge-added", str(args.merge_added)], check=True)
        same = mf.Manifest(work / "full.arrow").table.equals(mf.Manifest(work / "merged.arrow").table)
        same_skips = pq.read_table(work / "full.parquet").equals(pq.read_table(work / "merged.parquet"))
        print(json.dumps({"same_manifest": same, "same_skips": same_skips, "work": str(work)}))
        return None
    runs = [("make", []), ("old", []), ("new", ["--max-rows", str(args.max_rows)]),
            ("new", ["--max-rows", str(mf.MAX_ROWS)]), ("open-old", []), ("open-new", [])]
    for step, extra in runs:
        if not (args.no_baseline and step in ("old", "open-old")):
            subprocess.run(base + ["--step", step] + extra, check=True)
    if args.no_baseline:
        return None
    old = pq.read_table(work / "old.parquet")
    new = mf.Manifest(work / "new.arrow").table
    print(json.dumps({"same_manifest": old.equals(new.select(old.column_names).cast(old.schema)),
                      "work": str(work)}))
    return None


if __name__ == "__main__":
    main()
