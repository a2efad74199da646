"""SemDeDup (Abbas et al. 2023) for large collections: cluster, then compare only inside clusters.

Spherical k-means (FAISS) on the unit vectors; inside each cluster, an image is a duplicate when its
cosine to some higher-priority image of the cluster exceeds ``1 - eps``, and it joins that image's group.
Work per cluster is blocked (``block`` rows at a time), so memory is O(cluster size x block), never N x N.
No pixel verification here: this mode is for collections too large for it (use the default mode below
~10M images). Pointers are followed to the root, so unlike the default mode groups *can* chain.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..progress import ProgressCallback, emit


def semdedup_groups(vectors: np.ndarray, priority: np.ndarray, eps: float = 0.05, n_clusters: Optional[int] = None,
                    seed: int = 0, block: int = 2048, progress: Optional[ProgressCallback] = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(group of each vector = its representative's index, cosine to the image it was linked to)."""
    import faiss

    n, d = vectors.shape
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    k = n_clusters or max(1, min(int(math.sqrt(n)), n // 50 or 1))
    rank = np.empty(n, np.int64)
    rank[priority] = np.arange(n)  # lower rank = better representative
    if k > 1:
        km = faiss.Kmeans(d, k, niter=20, seed=seed, spherical=True, max_points_per_centroid=256)
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=min(n, 256 * k), replace=False)]
        km.train(sample)
        _, assign = km.index.search(x, 1)
        assign = assign[:, 0]
    else:
        assign = np.zeros(n, np.int64)
    parent = np.arange(n)
    link = np.ones(n, np.float32)
    order = np.argsort(assign, kind="stable")
    bounds = np.flatnonzero(np.diff(assign[order])) + 1
    clusters = np.split(order, bounds)
    emit(progress, "semdedup", 0, len(clusters), unit="cluster")
    for c, members in enumerate(clusters):
        members = members[np.argsort(rank[members], kind="stable")]  # priority order inside the cluster
        m = len(members)
        xm = x[members]
        for s in range(1, m, block):
            rows = xm[s:s + block]
            sims = rows @ xm[: s + len(rows)].T  # each row only needs earlier (higher-priority) members
            idx = np.arange(s, s + len(rows))
            mask = np.arange(sims.shape[1])[None, :] >= idx[:, None]
            sims[mask] = -np.inf
            j = sims.argmax(axis=1)
            best = sims[np.arange(len(rows)), j]
            dup = best > 1.0 - eps
            parent[members[idx[dup]]] = members[j[dup]]
            link[members[idx[dup]]] = best[dup]
        if c % 64 == 0:
            emit(progress, "semdedup", c + 1, len(clusters), unit="cluster")
    emit(progress, "semdedup", len(clusters), len(clusters), unit="cluster")
    # follow pointers to the root (the highest-priority image of the chain)
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return root, link
