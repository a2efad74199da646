"""Partial replication: training images whose content fills only part of a generated image.

Every window of the generation's SSCD feature map (``diffrep.descriptors.regions``, two scales, a few
thousand windows) becomes a descriptor on the global scale and is searched in the ordinary training
index; each training image's region score is its best window's cosine, and the window is the evidence
(its box in the generated image). The index needs nothing new, and the cost per generation is two
forward passes plus one batched index search of its windows: it does not grow with an N x M loop (a
flat index costs O(windows x N) dot products per generation; HNSW/IVF indexes make it sub-linear).

Calibration treats the region score like any other channel: the same procedure on held-out reference
images (or training images against the rest of the index, self excluded) gives its null, and
``fuse_channels`` folds it into the verdict.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np

from ..descriptors.regions import RegionEmbedder
from ..progress import ProgressCallback, emit


class Searchable(Protocol):
    """What region search needs of an index (``LoadedIndex`` or a bare FAISS wrapper)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


class FlatIndex:
    """Exact inner-product search over vectors held in memory (benchmarks, small reference sets)."""

    def __init__(self, vectors: np.ndarray) -> None:
        import faiss

        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(np.ascontiguousarray(vectors, np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(np.ascontiguousarray(queries, np.float32), k)

    def __len__(self) -> int:
        return int(self._index.ntotal)

ImageLoader = Callable[[int], Optional[np.ndarray]]
PER_WINDOW_K = 3  # training neighbours kept per window before aggregating per training image


@dataclass
class RegionMatches:
    scores: np.ndarray  # (n, k) best window cosine per candidate, descending; -inf where missing
    ids: np.ndarray  # (n, k) training FAISS ids, -1 where missing
    boxes: np.ndarray  # (n, k, 4) the best window per candidate, [x0, y0, x1, y1] in query pixels
    windows: int  # windows searched per image
    seconds: float  # wall time of the whole search
    sizes: np.ndarray  # (n, 2) width, height of each image (0, 0 when it could not be read)

    def is_partial(self, qi: int, c: int, share: float = 0.8) -> bool:
        """Whether candidate ``c``'s best window covers less than ``share`` of image ``qi``."""
        w, h = self.sizes[qi]
        x0, y0, x1, y1 = self.boxes[qi, c]
        return bool(w and h and (x1 - x0) * (y1 - y0) < share * w * h)

    @property
    def top(self) -> np.ndarray:
        return self.scores[:, 0] if self.scores.shape[1] else np.full(len(self.scores), -np.inf)


def aggregate(scores: np.ndarray, ids: np.ndarray, boxes: np.ndarray, k: int,
              exclude: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per training id, its best window: from (R, kw) window search results to the top ``k`` ids."""
    flat_s, flat_i = scores.ravel(), ids.ravel()
    win = np.repeat(np.arange(len(scores)), scores.shape[1])
    ok = flat_i >= 0
    if exclude is not None:
        ok &= flat_i != exclude
    order = np.argsort(-flat_s[ok], kind="stable")
    s, i, w = flat_s[ok][order], flat_i[ok][order], win[ok][order]
    _, first = np.unique(i, return_index=True)
    first = np.sort(first)[:k]  # first occurrence = best window, in score order
    out_s = np.full(k, -np.inf, np.float32)
    out_i = np.full(k, -1, np.int64)
    out_b = np.zeros((k, 4), np.int64)
    out_s[:len(first)], out_i[:len(first)], out_b[:len(first)] = s[first], i[first], boxes[w[first]]
    return out_s, out_i, out_b


def region_search(load: ImageLoader, n: int, index: Searchable, embedder: RegionEmbedder, *, k: int = 5,
                  self_ids: np.ndarray | None = None, stage: str = "regions",
                  progress: Optional[ProgressCallback] = None) -> RegionMatches:
    """Region matches of ``n`` images (``load(i)`` -> RGB array or None when it cannot be read).

    ``self_ids[i]``, when given, is image i's own id in the index (for training images used as a
    null), excluded from its matches."""
    t0 = time.perf_counter()
    scores = np.full((n, k), -np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    boxes = np.zeros((n, k, 4), np.int64)
    windows = 0
    sizes = np.zeros((n, 2), np.int64)
    emit(progress, stage, 0, n)
    for i in range(n):
        img = load(i)
        if img is not None:
            vecs, bx = embedder.regions(img)
            sizes[i] = img.shape[1], img.shape[0]
            windows = len(vecs)
            kw = min(PER_WINDOW_K + (self_ids is not None), len(index))
            s, j = index.search(vecs, kw)
            scores[i], ids[i], boxes[i] = aggregate(s, j, bx, k,
                                                    None if self_ids is None else int(self_ids[i]))
        emit(progress, stage, i + 1, n)
    return RegionMatches(scores, ids, boxes, windows, time.perf_counter() - t0, sizes)


__all__ = ["FlatIndex", "RegionMatches", "Searchable", "aggregate", "region_search"]
