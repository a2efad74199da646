"""FAISS index construction and search, chosen by name or by collection size.

All descriptors give unit vectors, so inner product = cosine similarity.
- ``flat``: exact search (default). Memory 4*dim bytes per vector.
- ``hnsw``: graph index, approximate, fast queries, ~2x flat memory; no training.
- ``ivf``: inverted lists over k-means cells (exact vectors inside cells); ``nprobe`` trades recall for speed.
- ``ivfpq``: IVF + product quantization (64 bytes per vector): for 10M+ vectors.
- ``auto``: flat below 250k vectors, ivf below 10M, ivfpq above.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..errors import DiffrepError

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq", "auto")


def resolve_type(index_type: str, n: int) -> str:
    if index_type not in INDEX_TYPES:
        raise DiffrepError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    if index_type != "auto":
        return index_type
    if n < 250_000:
        return "flat"
    return "ivf" if n < 10_000_000 else "ivfpq"


def ivf_lists(n: int) -> int:
    """IVF cells for ``n`` vectors (4 sqrt(n), at most 65,536); training wants ~39 vectors per cell."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), 65536))


def build(vectors_batches: Iterable[np.ndarray], n: int, dim: int, index_type: str,
          train_sample: np.ndarray | None = None, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Build an index of ``n`` vectors fed in batches. IVF types need ``train_sample`` (a subset).

    Returns the FAISS index and its search parameters (stored in index.json)."""
    import faiss

    kind = resolve_type(index_type, n)
    params: dict[str, Any] = {"type": kind}
    notes: list[str] = []
    if kind in ("ivf", "ivfpq"):
        nlist = ivf_lists(n)
        need = 39 * nlist if kind == "ivf" else max(39 * nlist, 256 * 39)
        if train_sample is None or len(train_sample) < min(need, n) or n < 1000:
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
            m = 64 if dim % 64 == 0 else (32 if dim % 32 == 0 else 16)
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        assert train_sample is not None
        index.train(np.ascontiguousarray(train_sample, dtype=np.float32))
        index.own_fields = True
        quantizer.this.disown()
        params.update(nlist=nlist, nprobe=max(8, nlist // 32))
    added = 0
    for batch in vectors_batches:
        if len(batch):
            index.add(np.ascontiguousarray(batch, dtype=np.float32))
            added += len(batch)
    if added != n:
        raise RuntimeError(f"index build fed {added} vectors, expected {n}")
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
