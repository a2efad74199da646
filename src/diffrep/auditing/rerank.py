"""Verify each query's top candidates (``verify.py``) and re-rank them by the verified score.

Runs in a thread pool (OpenCV releases the GIL). Training images are decoded from the paths in the
index manifest; their features are cached for the run, since popular training images recur as
candidates. A training file that has vanished since indexing scores 0 and is counted in ``missing``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ..decode import DecodeError, decode_image
from ..progress import ProgressCallback, emit
from ..sources import read_location
from .verify import Features, Verifier

ImageLoader = Callable[[int], Optional[np.ndarray]]


@dataclass
class Reranked:
    scores: np.ndarray  # (n, K) verified scores, NaN where the candidate id is -1
    inliers: np.ndarray  # (n, K) RANSAC inliers
    mirrored: np.ndarray  # (n, K) bool: the match used the mirrored query
    pixel: np.ndarray  # (n, K) blurred-intensity correlation, NaN where the candidate id is -1
    missing: list[str] = field(default_factory=list)  # training paths that could not be read


class _FeatureCache:
    def __init__(self, verifier: Verifier, paths: Sequence[str], capacity: int = 4096) -> None:
        self.verifier, self.paths, self.capacity = verifier, paths, capacity
        self._items: OrderedDict[int, Optional[Features]] = OrderedDict()
        self._lock = threading.Lock()
        self.missing: list[str] = []

    def get(self, j: int) -> Optional[Features]:
        with self._lock:
            if j in self._items:
                self._items.move_to_end(j)
                return self._items[j]
        try:
            feats: Optional[Features] = self.verifier.features(decode_image(read_location(self.paths[j]),
                                                                            min_side=self.verifier.config.size))
        except (OSError, DecodeError):
            feats = None
            with self._lock:
                self.missing.append(self.paths[j])
        with self._lock:
            self._items[j] = feats
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return feats


def verify_candidates(load_query: ImageLoader, n: int, cand: np.ndarray, train_paths: Sequence[str],
                      verifier: Verifier, *, stage: str = "verify", workers: int | None = None,
                      progress: Optional[ProgressCallback] = None) -> Reranked:
    """Verified scores of ``cand`` (n, K FAISS ids) for queries ``load_query(i)`` (decoded RGB or None)."""
    import os

    k = cand.shape[1] if cand.ndim == 2 else 0
    scores = np.full((n, k), np.nan, np.float32)
    inliers = np.zeros((n, k), np.int32)
    mirrored = np.zeros((n, k), bool)
    pixel = np.full((n, k), np.nan, np.float32)
    cache = _FeatureCache(verifier, train_paths)

    def one(i: int) -> None:
        img = load_query(i)
        if img is None:
            return
        views = verifier.query_features(img)
        for r in range(k):
            j = int(cand[i, r])
            if j < 0:
                continue
            tf = cache.get(j)
            if tf is None:
                scores[i, r] = pixel[i, r] = 0.0
                continue
            v = verifier.verify(views, tf)
            scores[i, r], inliers[i, r], mirrored[i, r], pixel[i, r] = v.score, v.inliers, v.mirrored, v.pixel

    emit(progress, stage, 0, n)
    done = 0
    with ThreadPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 1)) as pool:
        for _ in pool.map(one, range(n)):
            done += 1
            if done % 16 == 0 or done == n:
                emit(progress, stage, done, n)
    return Reranked(scores, inliers, mirrored, pixel, sorted(set(cache.missing)))


def load_image(read: Callable[[], bytes], max_pixels: int, min_side: int) -> Optional[np.ndarray]:
    """Decoded image from ``read()`` (e.g. ``Record.read``), or None when it cannot be read or decoded."""
    try:
        return decode_image(read(), max_pixels=max_pixels, min_side=min_side)
    except (OSError, DecodeError):
        return None


def load_path(path: str, max_pixels: int, min_side: int) -> Optional[np.ndarray]:
    """Decoded image at ``path`` (file or tar member), or None when it cannot be read."""
    return load_image(lambda: read_location(path), max_pixels, min_side)


def verify_indexed(members: np.ndarray, cand: np.ndarray, paths: Sequence[str], verifier: Verifier, *,
                   max_pixels: int, stage: str, progress: Optional[ProgressCallback] = None) -> Reranked:
    """Verify indexed images ``members`` (FAISS ids) against their candidate rows ``cand``."""
    return verify_candidates(lambda i: load_path(paths[int(members[i])], max_pixels, verifier.config.size),
                             len(members), cand, paths, verifier, stage=stage, progress=progress)


def best_scores(scores: np.ndarray) -> np.ndarray:
    """Best verified score per row; 0 where nothing was verified."""
    if scores.size == 0:
        return np.zeros(len(scores), np.float32)
    return np.nan_to_num(np.max(np.where(np.isnan(scores), -np.inf, scores), axis=1), neginf=0.0)


RANK_GLOBAL_WEIGHT = 0.25


def rerank_order(verified: np.ndarray, global_scores: np.ndarray,
                 weight: float = RANK_GLOBAL_WEIGHT) -> np.ndarray:
    """Per-row candidate order by ``verified + weight * global`` descending (unverified last).

    Verification compares edges and is blind to colour, so near-identical training images that differ
    only in colour (skin-tone variants, recoloured icons) verify equally; the small global term (SSCD
    sees colour) then puts the one that also matches in appearance first."""
    v = np.where(np.isnan(verified), -np.inf, verified)
    key = v + weight * np.asarray(global_scores, np.float64)
    return np.argsort(-key, axis=-1, kind="stable")
