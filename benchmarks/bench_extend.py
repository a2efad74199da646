"""A rerun of ``diffrep index`` that adds images: the FAISS work of rebuilding the IVF index (train + fill, what
every such rerun did before ``indexing.extend``) against extending the previous one (read it, compare the
manifests, renumber the ids of its inverted lists, add the new vectors), in one run on the same vectors.

    python benchmarks/bench_extend.py --stored 1000000 --added 10000
    python benchmarks/bench_extend.py --stored 1000000 --added 10000 --on-disk

With ``--on-disk`` both indexes keep their lists in list files (``diffrep index --on-disk``): the rebuild fills
shards and merges them into a new file, the extension copies the old lists renumbered into a new file and adds
the new vectors through a shard file (``ondisk.extend_on_disk``). The vectors themselves are held in memory
by this script either way (peak RSS is the script's, not the index's).

Synthetic unit vectors (Gaussian, 512-d, the SSCD size); the added rows take random places in the id order,
as new file names do. Both indexes then get the probes ``diffrep index`` tunes (``faiss_index.tune_probes`` on
``faiss_index.tuning_rows``, the same cost either way, not timed) and report the share of synthetic edited
copies whose source comes back at rank 1; the rebuilt index also as tuned on its own training sample (what
``diffrep index`` did before ``tuning_rows``). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from diffrep.indexing import faiss_index, ondisk
from diffrep.indexing.extend import added_rows, renumber, shifted
from diffrep.indexing.manifest import Manifest

DIM = 512


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _manifest(path: Path, chunk: np.ndarray, row: np.ndarray) -> Manifest:
    table = pa.table({"chunk": pa.array(chunk, pa.int32()), "row": pa.array(row, pa.int32())})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table, max_chunksize=65536)
    return Manifest(path)


def _batches(x: np.ndarray, batch: int = 262144):
    for s in range(0, len(x), batch):
        yield x[s:s + batch]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stored", type=int, default=1_000_000, help="vectors in the previous generation")
    ap.add_argument("--added", type=int, default=10_000, help="vectors the rerun adds")
    ap.add_argument("--type", choices=("ivf", "ivfpq"), default="ivf", help="index type (what auto picks below 10M)")
    ap.add_argument("--on-disk", action="store_true", help="lists in list files, as `diffrep index --on-disk`")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import faiss

    rng = np.random.default_rng(a.seed)
    n = a.stored + a.added
    x = _unit(rng, n)  # in the new id order
    is_added = np.zeros(n, bool)
    is_added[rng.choice(n, a.added, replace=False)] = True
    old_x = x[~is_added]
    kind = a.type
    out: dict = {"stored": a.stored, "added": a.added, "type": kind, "on_disk": a.on_disk}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # the previous generation: trained on and filled with the old rows (not timed)
        pick = np.sort(rng.choice(a.stored, faiss_index.train_size(kind, a.stored), replace=False))
        lists = (lambda name: work / f"{name}.ivfdata") if a.on_disk else (lambda name: None)
        old_index, params = faiss_index.build(_batches(old_x), a.stored, DIM, kind, old_x[pick],
                                              on_disk=lists("old"))
        faiss.write_index(old_index, str(work / "old.faiss"))
        del old_index
        # the old rows sit in chunks 1.., 1,024 rows each; the added rows in the chunk after the last
        old_rows = np.arange(a.stored)
        old_m = _manifest(work / "old.arrow", old_rows // 1024 + 1, old_rows % 1024)
        chunk, row = np.empty(n, np.int64), np.empty(n, np.int64)
        chunk[~is_added], row[~is_added] = old_rows // 1024 + 1, old_rows % 1024
        last = int(old_rows[-1] // 1024 + 1)
        chunk[is_added], row[is_added] = last + 1, np.arange(a.added)
        new_m = _manifest(work / "new.arrow", chunk, row)

        t0 = time.perf_counter()
        pick = np.sort(rng.choice(n, faiss_index.train_size(kind, n), replace=False))
        rebuilt, rebuilt_params = faiss_index.build(_batches(x), n, DIM, kind, x[pick], on_disk=lists("rebuilt"))
        out["rebuild_s"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        grown = ondisk.read(work / "old.faiss") if a.on_disk else faiss.read_index(str(work / "old.faiss"))
        added = added_rows(old_m, new_m, last)
        t_compare = time.perf_counter()
        if a.on_disk:  # renumbering and adding are one pass here: the old lists are copied as they are renumbered
            grown = ondisk.extend_on_disk(
                grown, ondisk.trained_empty(grown), lambda ids: shifted(ids, added),
                lambda empty, scratch: ondisk.fill_shards(empty, _batches(x[added]), scratch, ids=added),
                lists("extended"))
            t_renumber = t_compare
        else:
            renumber(grown, added)
            t_renumber = time.perf_counter()
            grown.add_with_ids(x[added], added)
        out["extend_s"] = round(time.perf_counter() - t0, 2)
        out["extend_parts_s"] = {"read_and_compare": round(t_compare - t0, 2),
                                 "renumber": round(t_renumber - t_compare, 2),
                                 "add": round(time.perf_counter() - t_renumber, 2)}
        out["speedup"] = round(out["rebuild_s"] / out["extend_s"], 1)
        assert np.array_equal(added, np.flatnonzero(is_added)) and grown.ntotal == n
        if a.on_disk:
            out["list_file_gb"] = round(lists("extended").stat().st_size / 1e9, 2)

        check = faiss_index.tuning_rows(n)
        runs = (("rebuilt", rebuilt, rebuilt_params, check), ("extended", grown, params, check),
                ("rebuilt, tuned on its training sample", rebuilt, rebuilt_params, pick))
        for name, index, start, rows in runs:
            p = dict(start)
            faiss_index.tune_probes(index, p, lambda q, k, ix=index: faiss_index.search(ix, q, k), x[rows], rows)
            out[name] = {"nprobe": p.get("nprobe"), "edited_copy_recall_at_1": p["edited_copy_recall_at_1"]}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
