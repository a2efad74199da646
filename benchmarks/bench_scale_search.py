"""Audit-style search of many queries against millions of stored vectors with the index --memory-budget picks.

Part (b) of ``bench_scale.py`` (``--part search``); each step runs in its own process so its peak RSS is its own:

1. ``like``: the distribution to draw from, fitted to real SSCD descriptors (the mean and covariance of the
   vectors of an index of packaged emoji, built by part (a) or here).
2. ``generate``: ``--stored`` unit vectors drawn from that Gaussian, written in batches to a raw float32 file
   (``vectors.f32``, the stand-in for an index's chunk files), and ``--queries`` queries: half edited copies of
   random stored vectors (the source plus 0.6 of another draw's deviation from the mean), half fresh draws.
3. ``build``: ``faiss_index.plan`` under ``--memory-budget``, training on ``faiss_index.train_size`` sampled
   vectors, filling in batches of 262,144 read from the file (no memory map, so the peak RSS is what the index
   needs); writes ``bench.faiss``.
   ``search``: the audit's search in a fresh process, ``search_exact_rerank`` for the top 1 (candidates re-scored
   with the stored vectors read from the file), at the nprobe the build stores (1/32 of the cells) and at its
   doublings. Prints timings, queries/s and peak RSS.
4. ``tune``: the nprobe ``diffrep index`` stores (``faiss_index.tune_probes``: doubled until synthetic edited copies
   of training-sample vectors find their source at rank 1 in 98% of cases), and the search at that nprobe.
   ``library-search``: the search at a given nprobe through ``LoadedIndex.search`` (the audit's path), with the
   stored vectors as index chunk files.
5. ``ondisk-build``: the built index's trained quantizer (lists emptied) filled again from the file with its
   inverted lists on disk (``indexing.ondisk.fill_on_disk``: shards of 1M vectors, merged into one list file);
   ``ondisk-search``: the audit's top-1 search of every query with the lists memory-mapped, at a given nprobe,
   and the share of hits equal to the in-memory search's at that nprobe.
6. ``exact``: brute-force top 1 of a sample of the queries over every stored vector; recall@1 per nprobe is the
   share whose hit is the exact one (or scores the same), for copies and for fresh draws separately.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from diffrep.indexing import faiss_index

DIM = 512
BATCH = 262_144


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rows(fh, ids: np.ndarray, dim: int = DIM) -> np.ndarray:
    """Rows ``ids`` of the raw float32 file ``fh``, read with pread (ids sorted for sequential access)."""
    out = np.empty((len(ids), dim), np.float32)
    size = dim * 4
    fd = fh.fileno()
    order = np.argsort(ids, kind="stable")
    for j in order:
        out[j] = np.frombuffer(os.pread(fd, size, int(ids[j]) * size), np.float32)
    return out


def _batches(path: Path, n: int, dim: int = DIM):
    with open(path, "rb") as fh:
        for s in range(0, n, BATCH):
            yield np.fromfile(fh, np.float32, count=min(BATCH, n - s) * dim).reshape(-1, dim)


def like(work: Path, images_index: Path) -> None:
    from diffrep.indexing.load import open_index

    ix = open_index(images_index)
    v = ix.vectors(np.arange(len(ix)))
    mean = v.mean(0)
    w, u = np.linalg.eigh(np.cov(v - mean, rowvar=False))
    basis = (u * np.sqrt(np.clip(w, 0, None))).T.astype(np.float32)  # z @ basis ~ N(0, cov)
    np.savez(work / "like.npz", mean=mean.astype(np.float32), basis=basis, n=len(v))
    cos = v @ v.T
    off = cos[~np.eye(len(v), dtype=bool)]
    print(json.dumps({"step": "like", "real_vectors": len(v), "real_offdiag_cos_mean": round(float(off.mean()), 3),
                      "real_offdiag_cos_p99": round(float(np.quantile(off, 0.99)), 3)}))


def _draw(rng: np.random.Generator, n: int, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return (rng.standard_normal((n, basis.shape[0]), dtype=np.float32) @ basis + mean).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def generate(work: Path, stored: int, queries: int, seed: int) -> None:
    t0 = time.perf_counter()
    z = np.load(work / "like.npz")
    mean, basis = z["mean"], z["basis"]
    rng = np.random.default_rng(seed)
    raw_sources: list[np.ndarray] = []
    copies = queries // 2
    src_ids = np.sort(rng.choice(stored, size=copies, replace=False))
    tmp = work / "vectors.f32.tmp"
    with open(tmp, "wb") as fh:
        for s in range(0, stored, BATCH):
            raw = _draw(rng, min(BATCH, stored - s), mean, basis)
            take = src_ids[(src_ids >= s) & (src_ids < s + len(raw))] - s
            raw_sources.append(raw[take])
            _unit(raw).tofile(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, work / "vectors.f32")
    src_raw = np.concatenate(raw_sources)
    edits = _draw(rng, copies, mean, basis) - mean
    q_copy = _unit(src_raw + 0.6 * edits)
    q_fresh = _unit(_draw(rng, queries - copies, mean, basis))
    q = np.concatenate([q_copy, q_fresh]).astype(np.float32)
    src = np.concatenate([src_ids, np.full(queries - copies, -1)]).astype(np.int64)
    np.save(work / "queries.npy", q)
    np.save(work / "query_source.npy", src)
    cos = np.einsum("ij,ij->i", q_copy, _unit(src_raw))
    print(json.dumps({"step": "generate", "stored": stored, "queries": queries, "seconds": round(time.perf_counter() - t0, 1),
                      "copy_cos_p5_p50_p95": [round(float(x), 3) for x in np.quantile(cos, [0.05, 0.5, 0.95])]}))


def _search(index, kind: str, q: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    with open(path, "rb") as fh:
        t1 = time.perf_counter()
        scores, ids = faiss_index.search_stored(index, kind, q, 1, lambda i: _rows(fh, i))
        return scores[:, 0], ids[:, 0], time.perf_counter() - t1


def build(work: Path, stored: int, budget: float) -> None:
    """Build as ``diffrep index`` would (plan, training sample, batches) and write ``bench.faiss``."""
    import faiss

    path = work / "vectors.f32"
    choice = faiss_index.plan("auto", stored, DIM, int(budget))
    kind = choice["type"]
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(stored, size=faiss_index.train_size(kind, stored), replace=False))
    with open(path, "rb") as fh:
        sample = _rows(fh, pick)
    read_s = time.perf_counter() - t0
    marks: dict[str, float] = {}

    def fed():
        marks["trained"] = time.perf_counter()
        yield from _batches(path, stored)

    t0 = time.perf_counter()
    index, params = faiss_index.build(fed(), stored, DIM, kind, sample, pq_m=choice["pq_m"])
    built = time.perf_counter()
    faiss.write_index(index, str(work / "bench.faiss"))
    (work / "bench.json").write_text(json.dumps(params))
    print(json.dumps({
        "step": "build", "plan": choice["reason"], "type": params["type"], "nlist": params.get("nlist"),
        "pq_m": params.get("pq_m"), "train_vectors": len(pick), "read_sample_s": round(read_s, 1),
        "train_s": round(marks["trained"] - t0, 1), "add_s": round(built - marks["trained"], 1),
        "add_vectors_per_s": round(stored / (built - marks["trained"])),
        "index_file_mb": round((work / "bench.faiss").stat().st_size / 1e6), "peak_rss_mb": round(_rss_mb())}))


def search(work: Path, doublings: int) -> None:
    """The audit's top-1 search of every query at the index's stored nprobe and ``doublings`` doublings of it."""
    import faiss

    index = faiss.read_index(str(work / "bench.faiss"))
    params = json.loads((work / "bench.json").read_text())
    q = np.load(work / "queries.npy")
    probes = [params.get("nprobe", 1) * 2 ** i for i in range(doublings + 1 if "nprobe" in params else 1)]
    for p in probes:
        if "nprobe" in params:
            faiss_index.configure(index, {"nprobe": p})
        scores, ids, secs = _search(index, params["type"], q, work / "vectors.f32")
        np.save(work / f"found_ids_{p}.npy", ids)
        np.save(work / f"found_scores_{p}.npy", scores)
        print(json.dumps({"step": "search", "nprobe": p, "default": p == probes[0], "queries": len(q),
                          "candidates_rescored": max(faiss_index.RERANK_MIN, faiss_index.RERANK_FACTOR),
                          "search_s": round(secs, 1), "queries_per_s": round(len(q) / secs, 1),
                          "peak_rss_mb": round(_rss_mb())}), flush=True)


def tune(work: Path, stored: int) -> None:
    """The nprobe ``diffrep index`` would store (``faiss_index.tune_probes`` on the training sample), then the
    search at that nprobe."""
    import faiss

    index = faiss.read_index(str(work / "bench.faiss"))
    params = json.loads((work / "bench.json").read_text())
    kind = params["type"]
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(stored, size=faiss_index.train_size(kind, stored), replace=False))
    path = work / "vectors.f32"
    with open(path, "rb") as fh:
        sample = _rows(fh, pick)
        t0 = time.perf_counter()
        search = lambda q, k: faiss_index.search_stored(index, kind, q, k, lambda i: _rows(fh, i))  # noqa: E731
        faiss_index.tune_probes(index, params, search, sample, pick)
        tune_s = time.perf_counter() - t0
    del sample
    p = params["nprobe"]
    (work / "tuned.json").write_text(json.dumps({"nprobe": p}))
    out = {"step": "tune", "tune_s": round(tune_s, 1), "nprobe": p, "trials": params.get("nprobe_trials"),
           "edited_copy_recall_at_1": params["edited_copy_recall_at_1"]}
    if not (work / f"found_ids_{p}.npy").is_file():  # the search step did not search at this nprobe
        faiss_index.configure(index, params)
        scores, ids, secs = _search(index, kind, np.load(work / "queries.npy"), path)
        np.save(work / f"found_ids_{p}.npy", ids)
        np.save(work / f"found_scores_{p}.npy", scores)
        out.update(search_s=round(secs, 1), queries_per_s=round(len(ids) / secs, 1))
    print(json.dumps({**out, "peak_rss_mb": round(_rss_mb())}))


def library_search(work: Path, stored: int, nprobe: int) -> None:
    """The same search through ``LoadedIndex.search``, the audit's own path: candidates re-scored with vectors read
    from index chunk files (``chunks/cNNNNNN.npy``, 1,024 vectors each, written here once from vectors.f32)."""
    import faiss
    import pyarrow as pa

    from diffrep.indexing.load import LoadedIndex
    from diffrep.indexing.store import IndexDir

    root = work / "libidx"
    (root / "chunks").mkdir(parents=True, exist_ok=True)
    for n, batch in enumerate(_batches(work / "vectors.f32", stored)):
        for j in range(0, len(batch), 1024):
            path = root / "chunks" / f"c{(n * BATCH + j) // 1024 + 1:06d}.npy"
            if not path.is_file():
                np.save(path, batch[j:j + 1024])
    rows = np.arange(stored)
    manifest = pa.table({"chunk": (rows // 1024 + 1).astype(np.int32), "row": (rows % 1024).astype(np.int32)})
    index = faiss.read_index(str(work / "bench.faiss"))
    params = json.loads((work / "bench.json").read_text())
    faiss_index.configure(index, {"nprobe": nprobe})
    loaded = LoadedIndex(IndexDir(root), {"index": params, "descriptor": {"dim": DIM}}, manifest, index, 0)
    q = np.load(work / "queries.npy")
    t0 = time.perf_counter()
    _, ids = loaded.search(q, 1)
    secs = time.perf_counter() - t0
    same = float(np.mean(ids[:, 0] == np.load(work / f"found_ids_{nprobe}.npy")))
    print(json.dumps({"step": "library-search", "nprobe": nprobe, "queries": len(q), "search_s": round(secs, 1),
                      "queries_per_s": round(len(q) / secs, 1), "same_hits_as_search_step": round(same, 4),
                      "peak_rss_mb": round(_rss_mb())}))


def ondisk_build(work: Path, stored: int) -> None:
    """``bench.faiss``'s trained quantizer (its lists emptied in a child step, so this process never holds them)
    filled from vectors.f32 with its lists on disk: ``bench-ondisk.faiss`` + ``bench-ondisk.ivfdata``."""
    import faiss

    from diffrep.indexing import ondisk

    empty = faiss.read_index(str(work / "bench-empty.faiss"))
    t0 = time.perf_counter()
    index = ondisk.fill_on_disk(empty, _batches(work / "vectors.f32", stored), work / "bench-ondisk.ivfdata")
    secs = time.perf_counter() - t0
    faiss.write_index(index, str(work / "bench-ondisk.faiss"))
    print(json.dumps({"step": "ondisk-build", "vectors": int(index.ntotal), "fill_and_merge_s": round(secs, 1),
                      "vectors_per_s": round(stored / secs), "shard_vectors": ondisk.SHARD_VECTORS,
                      "index_file_mb": round((work / "bench-ondisk.faiss").stat().st_size / 1e6),
                      "list_file_mb": round((work / "bench-ondisk.ivfdata").stat().st_size / 1e6),
                      "peak_rss_mb": round(_rss_mb())}))


def empty_index(work: Path) -> None:
    import faiss

    index = faiss.read_index(str(work / "bench.faiss"))
    index.reset()
    faiss.write_index(index, str(work / "bench-empty.faiss"))


def ondisk_search(work: Path, nprobe: int) -> None:
    from diffrep.indexing import ondisk

    index = ondisk.read(work / "bench-ondisk.faiss")
    params = json.loads((work / "bench.json").read_text())
    faiss_index.configure(index, {"nprobe": nprobe})
    q = np.load(work / "queries.npy")
    scores, ids, secs = _search(index, params["type"], q, work / "vectors.f32")
    same = float(np.mean(ids == np.load(work / f"found_ids_{nprobe}.npy")))
    print(json.dumps({"step": "ondisk-search", "nprobe": nprobe, "queries": len(q), "search_s": round(secs, 1),
                      "queries_per_s": round(len(q) / secs, 1), "same_hits_as_in_memory": round(same, 4),
                      "peak_rss_mb": round(_rss_mb())}))


def exact(work: Path, stored: int, sample: int) -> None:
    q = np.load(work / "queries.npy")
    src = np.load(work / "query_source.npy")
    rng = np.random.default_rng(1)
    half = len(q) // 2
    pick = np.sort(np.concatenate([rng.choice(half, sample // 2, replace=False),
                                   half + rng.choice(len(q) - half, sample - sample // 2, replace=False)]))
    qs = q[pick]
    best = np.full(len(pick), -np.inf, np.float32)
    best_id = np.full(len(pick), -1, np.int64)
    t0 = time.perf_counter()
    start = 0
    for batch in _batches(work / "vectors.f32", stored):
        s = qs @ batch.T
        j = s.argmax(1)
        m = s[np.arange(len(pick)), j]
        better = m > best
        best[better], best_id[better] = m[better], start + j[better]
        start += len(batch)
    copy = src[pick] >= 0
    out = {"step": "exact", "sample": len(pick), "seconds": round(time.perf_counter() - t0, 1),
           "copies_whose_source_is_exact_top1": round(float((best_id[copy] == src[pick][copy]).mean()), 4),
           "exact_top1_cos_fresh_p50": round(float(np.median(best[~copy])), 3), "by_nprobe": []}
    for f in sorted(work.glob("found_ids_*.npy"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        p = int(f.stem.rsplit("_", 1)[1])
        found, fscore = np.load(f)[pick], np.load(work / f"found_scores_{p}.npy")[pick]
        hit = (found == best_id) | (fscore >= best - 1e-6)
        gap = best - fscore

        def gaps(sel: np.ndarray) -> list[float]:
            g = gap[sel & ~hit]
            return [round(float(x), 4) for x in np.quantile(g, [0.5, 1.0])] if len(g) else [0.0, 0.0]

        out["by_nprobe"].append({
            "nprobe": p, "recall_at_1": round(float(hit.mean()), 4),
            "recall_at_1_copies": round(float(hit[copy].mean()), 4),
            "recall_at_1_fresh": round(float(hit[~copy].mean()), 4),
            "missed_gap_p50_max_copies": gaps(copy), "missed_gap_p50_max_fresh": gaps(~copy)})
    print(json.dumps(out))


def run_step(*args: str) -> None:
    """Run one step in a child process; its JSON lines go to stdout."""
    subprocess.run([sys.executable, __file__, *args], check=True)


def main(argv: list[str]) -> None:
    step, work = argv[0], Path(argv[1])
    if step == "like":
        like(work, Path(argv[2]))
    elif step == "generate":
        generate(work, int(argv[2]), int(argv[3]), int(argv[4]))
    elif step == "build":
        build(work, int(argv[2]), float(argv[3]))
    elif step == "search":
        search(work, int(argv[2]))
    elif step == "tune":
        tune(work, int(argv[2]))
    elif step == "library-search":
        library_search(work, int(argv[2]), int(argv[3]))
    elif step == "empty-index":
        empty_index(work)
    elif step == "ondisk-build":
        ondisk_build(work, int(argv[2]))
    elif step == "ondisk-search":
        ondisk_search(work, int(argv[2]))
    elif step == "exact":
        exact(work, int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
