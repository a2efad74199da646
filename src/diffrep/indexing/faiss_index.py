"""FAISS index construction and search, chosen by name or by collection size.

All descriptors give unit vectors, so inner product = cosine similarity.
- ``flat``: exact search (default). Memory 4*dim bytes per vector.
- ``hnsw``: graph index, approximate, fast queries, ~2x flat memory; no training.
- ``ivf``: inverted lists over k-means cells (exact vectors inside cells); ``nprobe`` trades recall for speed.
- ``ivfpq``: IVF + product quantization (64 bytes per vector): for 10M+ vectors.
- ``auto``: flat below 250k vectors, ivf below 10M, ivfpq above; with a memory budget (``plan``), the first
  of flat (below 250k), ivf and ivfpq whose estimated size fits, ivfpq with the most bytes per vector that fit.
- inverted lists on disk (``--on-disk``, ``ondisk.py``): an IVF index's lists in a file beside it, filled shard
  by shard, merged on disk and memory-mapped at search, so neither the build nor a search holds them.

Searches of an ivfpq index are re-ranked exactly (``search_exact_rerank``): its quantized scores only pick
candidates (at least 256), the audit sees exact cosines computed from the stored vectors.

After an approximate build, ``self_recall`` searches a sample of the stored vectors for themselves: the share
found at rank 1 (an upper bound: an IVF index always finds a stored vector in its own cell). ``tune_probes``
measures what the audit needs instead, the share of synthetic edited copies (``edited_copies``, cosine 0.8 to
their source) whose source comes back at rank 1, and doubles an IVF index's ``nprobe`` until that share reaches ``COPY_RECALL_TARGET`` (or
a quarter of the cells are probed); ``diffrep info`` shows both.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from ..errors import DiffrepError
from ..progress import ProgressCallback

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq", "auto")


def resolve_type(index_type: str, n: int) -> str:
    if index_type not in INDEX_TYPES:
        raise DiffrepError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    if index_type != "auto":
        return index_type
    if n < 250_000:
        return "flat"
    return "ivf" if n < 10_000_000 else "ivfpq"


PQ_BYTES = (64, 32, 16, 8)  # product-quantizer codes per vector, largest first


def pq_sizes(dim: int) -> list[int]:
    """The code sizes of ``PQ_BYTES`` a ``dim``-d vector splits into evenly (FAISS needs dim % m == 0)."""
    return [b for b in PQ_BYTES if dim % b == 0]


def estimated_bytes(kind: str, n: int, dim: int, pq_m: int = 64) -> int:
    """Approximate memory of an index of ``n`` vectors (codes and ids; the coarse quantizer is small)."""
    per = {"flat": 4 * dim, "hnsw": 4 * dim + 2 * 32 * 4, "ivf": 4 * dim + 8, "ivfpq": pq_m + 8}[kind]
    return int(per * n)


KEPT = "the embedded vectors are kept: the rerun only builds the index"


def size_text(n_bytes: float) -> str:
    """A size in bytes as people write it: 1.50 GB, 250.00 MB, 12.00 KB or 640 bytes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{int(n_bytes)} bytes"


def check_request(index_type: str, on_disk: bool) -> None:
    """DiffrepError for an unknown ``index_type``, or ``on_disk`` with a type that has no inverted lists."""
    resolve_type(index_type, 0)
    if on_disk and index_type in ("flat", "hnsw"):
        raise DiffrepError(f"--on-disk keeps an IVF index's inverted lists in a file; a {index_type} index has none. "
                           "Use --index-type ivf, ivfpq or auto, or drop --on-disk")


def plan(index_type: str, n: int, dim: int, memory_budget: int | None = None,
         on_disk: bool = False) -> dict[str, Any]:
    """The index to build: ``{"type", "pq_m", "estimated_bytes", "reason"}`` (see the module docstring).
    ``on_disk``: IVF inverted lists go to a file (``ondisk.py``), so they need not fit ``memory_budget``: the
    type is the one ``auto`` picks by size (ivf rather than flat when a flat index would not fit)."""
    check_request(index_type, on_disk)
    kind = resolve_type(index_type, n)
    m = next(iter(pq_sizes(dim)), 8)
    if on_disk:
        if kind == "flat" and memory_budget is not None and estimated_bytes("flat", n, dim) > memory_budget:
            kind = "ivf"
        where = "in memory (on-disk lists apply to IVF indexes)" if kind in ("flat", "hnsw") else "on disk"
        return {"type": kind, "pq_m": m, "estimated_bytes": estimated_bytes(kind, n, dim, m),
                "reason": f"{kind} for {n} vectors, inverted lists {where}"}
    if memory_budget is None:
        return {"type": kind, "pq_m": m, "estimated_bytes": estimated_bytes(kind, n, dim, m),
                "reason": f"{index_type}" + (f" for {n} vectors" if index_type == "auto" else " (given)")}
    gb = size_text(memory_budget)
    if index_type != "auto":
        need = estimated_bytes(kind, n, dim, m)
        if need > memory_budget:
            raise DiffrepError(f"a {kind} index of {n} {dim}-d vectors needs about {size_text(need)}, over the "
                               f"--memory-budget of {gb}: use --index-type auto (or ivfpq) to fit it ({KEPT})")
        return {"type": kind, "pq_m": m, "estimated_bytes": need, "reason": f"{kind} (given; fits {gb})"}
    for kind in (["flat"] if n < 250_000 else []) + ["ivf"]:
        if estimated_bytes(kind, n, dim) <= memory_budget:
            return {"type": kind, "pq_m": m, "estimated_bytes": estimated_bytes(kind, n, dim),
                    "reason": f"{kind}: {n} vectors fit the {gb} budget uncompressed"}
    for b in pq_sizes(dim):
        if estimated_bytes("ivfpq", n, dim, b) <= memory_budget:
            return {"type": "ivfpq", "pq_m": b, "estimated_bytes": estimated_bytes("ivfpq", n, dim, b),
                    "reason": f"ivfpq with {b}-byte codes: the largest that fits {n} vectors in {gb}"}
    least = estimated_bytes("ivfpq", n, dim, min(pq_sizes(dim), default=8))
    raise DiffrepError(f"--memory-budget {gb} cannot hold {n} vectors even as 8-byte codes (about "
                       f"{size_text(least)}); give more memory ({KEPT})")


def self_recall(index: Any, vectors: np.ndarray, ids: np.ndarray) -> float:
    """Share of ``vectors`` (stored with FAISS ids ``ids``) whose top hit is themselves or an exact tie."""
    return copy_recall(lambda q, k: search(index, q, k), vectors, vectors, ids)


COPY_COSINE = 0.8  # edited copies used to tune an IVF index sit at this cosine to their source
COPY_RECALL_TARGET = 0.98
MAX_PROBE_SHARE = 0.25


def edited_copies(sample: np.ndarray, count: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic edited copies of ``count`` rows of ``sample`` (unit vectors) and the rows they copy: each is
    moved from its source, towards another sampled vector's deviation from the sample mean (so it stays among
    the data), to cosine ``COPY_COSINE`` with the source."""
    rng = np.random.default_rng(seed)
    src = rng.choice(len(sample), size=min(count, len(sample)), replace=False)
    v = sample[src].astype(np.float64)
    w = sample[rng.choice(len(sample), size=len(src))] - sample.mean(0)
    w -= np.einsum("ij,ij->i", w, v)[:, None] * v
    w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    q = COPY_COSINE * v + math.sqrt(1 - COPY_COSINE ** 2) * w
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), src


def copy_recall(search_fn: Any, queries: np.ndarray, sources: np.ndarray, ids: np.ndarray) -> float:
    """Share of ``queries`` whose top hit under ``search_fn(queries, k)`` is their source (FAISS id ``ids``,
    vector ``sources``) or scores at least as high (exact duplicates of the source)."""
    scores, hits = search_fn(queries, 1)
    own = np.einsum("ij,ij->i", queries, sources)
    return float(np.mean((hits[:, 0] == ids) | (scores[:, 0] >= own - 1e-5)))


TUNING_ROWS = 4000  # stored vectors the recall checks draw from


def tuning_rows(n: int, seed: int = 1) -> np.ndarray:
    """Rows of ``n`` stored vectors the recall checks use: drawn from all of them, independently of the
    training sample. The vectors the cells were trained on sit closer to their cell's centre than other stored
    vectors, so edited copies of training vectors alone overstate the recall (synthetic 512-d vectors, 1M
    stored: 0.997 at nprobe 125 on the training sample, benchmarks/bench_extend.py, docs/benchmarks.md)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, TUNING_ROWS), replace=False))


def tune_probes(index: Any, params: dict[str, Any], search_fn: Any, sample: np.ndarray,
                sample_ids: np.ndarray) -> None:
    """Record ``edited_copy_recall_at_1`` in ``params``; for IVF types first raise ``nprobe`` (doubling, from the
    stored value) until it reaches ``COPY_RECALL_TARGET`` or probes ``MAX_PROBE_SHARE`` of the cells."""
    queries, rows = edited_copies(sample)
    trials: list[list[float]] = []
    while True:
        configure(index, params)
        recall = copy_recall(search_fn, queries, sample[rows], sample_ids[rows])
        if "nprobe" not in params:
            break
        trials.append([params["nprobe"], round(recall, 4)])
        cap = max(1, int(params["nlist"] * MAX_PROBE_SHARE))
        if recall >= COPY_RECALL_TARGET or params["nprobe"] >= cap:
            params["nprobe_trials"] = trials
            break
        params["nprobe"] = min(2 * params["nprobe"], cap)
    params["edited_copy_recall_at_1"] = round(recall, 4)
    params["edited_copy_sample"] = int(len(queries))


def ivf_lists(n: int) -> int:
    """IVF cells for ``n`` vectors (4 sqrt(n), at most 65,536); training wants ~39 vectors per cell."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), 65536))


def min_train(kind: str, n: int) -> int:
    """Fewest vectors that train an ``ivf``/``ivfpq`` index of ``n`` vectors: 39 per IVF cell (FAISS's minimum;
    the product quantizer's 256 centroids want 39 x 256 too)."""
    nlist = ivf_lists(n)
    return 39 * nlist if kind == "ivf" else max(39 * nlist, 256 * 39)


def train_size(kind: str, n: int) -> int:
    """Vectors to sample for training: ``min_train``, at least 200,000 where there are that many."""
    return min(n, max(200_000, min_train(kind, n)))


def build(vectors_batches: Iterable[np.ndarray], n: int, dim: int, index_type: str,
          train_sample: np.ndarray | None = None, seed: int = 0, pq_m: int | None = None,
          fill: Any = None, on_disk: Path | None = None,
          progress: Optional[ProgressCallback] = None) -> tuple[Any, dict[str, Any]]:
    """Build an index of ``n`` vectors fed in batches. IVF types need ``train_sample`` (a subset). ``fill``, for
    IVF types: ``fill(trained_empty_index, on_disk) -> filled index`` adds the vectors elsewhere (shards on a
    cluster, ``distributed.ray_index.fill_ivf``) instead of from ``vectors_batches``. ``on_disk``, for IVF types:
    the inverted lists go to this file, filled shard by shard and merged on disk (``ondisk.py``).

    Returns the FAISS index and its search parameters (stored in index.json)."""
    import faiss

    kind = resolve_type(index_type, n)
    params: dict[str, Any] = {"type": kind}
    notes: list[str] = []
    if kind in ("ivf", "ivfpq"):
        nlist = ivf_lists(n)
        if train_sample is None or len(train_sample) < min(min_train(kind, n), n) or n < 1000:
            notes.append(f"{kind} needs more vectors to train; built an exact flat index instead")
            kind = "flat"
            params["type"] = "flat"
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        params["efSearch"] = 128
    else:
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            m = pq_m or next(iter(pq_sizes(dim)), 8)
            params["pq_m"] = m
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        assert train_sample is not None
        index.train(np.ascontiguousarray(train_sample, dtype=np.float32))
        index.own_fields = True
        quantizer.this.disown()
        params.update(nlist=nlist, nprobe=max(8, nlist // 32))
    added = 0
    if on_disk is not None and kind not in ("ivf", "ivfpq"):
        notes.append(f"inverted lists on disk apply to IVF indexes; this {kind} index is held in memory")
        on_disk = None
    if fill is not None and kind in ("ivf", "ivfpq"):
        index = fill(index, on_disk)
        added = index.ntotal
    elif on_disk is not None:
        from .ondisk import fill_on_disk

        index = fill_on_disk(index, vectors_batches, on_disk, progress=progress, total=n)
        added = index.ntotal
    else:
        for batch in vectors_batches:
            if len(batch):
                index.add(np.ascontiguousarray(batch, dtype=np.float32))
                added += len(batch)
    if added != n:
        raise RuntimeError(f"index build fed {added} vectors, expected {n}")
    if on_disk is not None:
        params["on_disk"] = on_disk.name
    if notes:
        params["notes"] = notes
    return index, params


def configure(index: Any, params: dict[str, Any]) -> None:
    """Apply stored search parameters (efSearch / nprobe) to a loaded index."""
    import faiss

    if "efSearch" in params and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(params["efSearch"])
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def search(index: Any, queries: np.ndarray, k: int, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner-product search in batches: (scores, ids) each (n, k); missing hits have id -1."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    n = len(queries)
    scores = np.full((n, k), -np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    if index.ntotal == 0 or n == 0:
        return scores, ids
    for s in range(0, n, batch):
        q = np.ascontiguousarray(queries[s:s + batch], dtype=np.float32)
        d, i = index.search(q, k)
        scores[s:s + batch], ids[s:s + batch] = d, i
    return scores, ids


RERANK_FACTOR = 4  # ivfpq: candidates per wanted hit, re-scored exactly ...
RERANK_MIN = 256  # ... and at least this many (PQ codes misorder close scores: 17 found 67% of exact top-1s at 10M)


def search_stored(index: Any, kind: str, queries: np.ndarray, k: int, stored: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top-k search as the audit runs it on an index of type ``kind``: an ivfpq index's candidates re-scored with
    the stored vectors (``search_exact_rerank``), any other searched directly."""
    if kind == "ivfpq":
        return search_exact_rerank(index, queries, k, stored)
    return search(index, queries, k)


def search_exact_rerank(index: Any, queries: np.ndarray, k: int, stored: Any,
                        rows_per_batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Top-k search whose scores are exact: ``max(RERANK_FACTOR * k, RERANK_MIN)`` candidates from ``index``
    (whose scores may be quantized, as IVF-PQ's are) re-scored with the stored vectors (``stored(ids)`` -> rows)
    and re-sorted, a batch of queries at a time."""
    n = len(queries)
    kk = max(1, min(index.ntotal, max(RERANK_FACTOR * k, RERANK_MIN)))
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    batch = max(1, rows_per_batch // kk)  # queries whose candidates' vectors are held at once (128 MB at 512-d)
    _, cand = search(index, queries, kk)
    scores = np.full((n, k), -np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    for s in range(0, n, batch):
        c = cand[s:s + batch]
        valid = c >= 0
        if not valid.any():
            continue
        uniq = np.unique(c[valid])
        vec = np.asarray(stored(uniq), np.float32)
        rows = vec[np.searchsorted(uniq, np.where(valid, c, uniq[0]))]
        exact = np.einsum("qd,qkd->qk", np.asarray(queries[s:s + batch], np.float32), rows)
        exact[~valid] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores[s:s + batch] = np.take_along_axis(exact, order, axis=1)
        ids[s:s + batch] = np.where(np.isfinite(scores[s:s + batch]), np.take_along_axis(c, order, axis=1), -1)
    return scores, ids
