"""Verify each query's top candidates (``verify.py``) and re-rank them by the verified score.

Runs in a thread pool (OpenCV releases the GIL). Training images are decoded from the paths in the
index manifest; their features are cached for the run, since popular training images recur as
candidates. A training file that has vanished since indexing scores 0 and is counted in ``missing``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..decode import decode_image, load_image, load_path
from ..progress import ProgressCallback
from ..sources import read_location
from .cache import LoadingCache, over_candidates
from .verify import Features, Verifier, VerifyConfig

ImageLoader = Callable[[int], Optional[np.ndarray]]


@dataclass
class Reranked:
    scores: np.ndarray  # (n, K) verified scores, NaN where the candidate id is -1
    inliers: np.ndarray  # (n, K) RANSAC inliers
    mirrored: np.ndarray  # (n, K) bool: the match used the mirrored query
    pixel: np.ndarray  # (n, K) blurred-intensity correlation, NaN where the candidate id is -1
    missing: list[str] = field(default_factory=list)  # training paths that could not be read

    @staticmethod
    def concat(parts: Sequence["Reranked"]) -> "Reranked":
        """The rows of ``parts`` in order (an engine's parts of one set of rows)."""
        return Reranked(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("scores", "inliers", "mirrored",
                                                                                    "pixel")),
                        sorted({m for p in parts for m in p.missing}))


def verify_candidates(load_query: ImageLoader, n: int, cand: np.ndarray, train_paths: Sequence[str],
                      verifier: Verifier, *, stage: str = "verify", workers: int | None = None,
                      progress: Optional[ProgressCallback] = None) -> Reranked:
    """Verified scores of ``cand`` (n, K FAISS ids) for queries ``load_query(i)`` (decoded RGB or None)."""
    k = cand.shape[1] if cand.ndim == 2 else 0
    scores = np.full((n, k), np.nan, np.float32)
    inliers = np.zeros((n, k), np.int32)
    mirrored = np.zeros((n, k), bool)
    pixel = np.full((n, k), np.nan, np.float32)
    cache: LoadingCache[Features] = LoadingCache(
        lambda j: verifier.features(decode_image(read_location(train_paths[j]), min_side=verifier.config.size)),
        lambda j: train_paths[j])

    def visit(i: int, r: int, views: list, tf: Optional[Features]) -> None:
        if tf is None:
            scores[i, r] = pixel[i, r] = 0.0
            return
        v = verifier.verify(views, tf)
        scores[i, r], inliers[i, r], mirrored[i, r], pixel[i, r] = v.score, v.inliers, v.mirrored, v.pixel

    over_candidates(load_query, n, cand, cache, verifier.query_features, visit, stage=stage, workers=workers,
                    progress=progress)
    return Reranked(scores, inliers, mirrored, pixel, sorted(set(cache.missing)))


def verify_rows(readers: Sequence[Callable[[], bytes]], cand: np.ndarray, train_paths: Any, *, config: VerifyConfig,
                max_pixels: int, stage: str = "verify", workers: int | None = None,
                progress: Optional[ProgressCallback] = None) -> Reranked:
    """``verify_candidates`` for images read by ``readers[i]()`` (the job an audit engine runs on rows)."""
    v = Verifier(config)
    return verify_candidates(lambda i: load_image(readers[i], max_pixels, config.size), len(readers), cand,
                             train_paths, v, stage=stage, workers=workers, progress=progress)


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
