"""Train-vs-train nulls: each sampled training image's best match among the *other* training images (the
paper's background for the global cosine; ``train_null`` for the fused score when no reference is given)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import numpy as np

from ..errors import OutputError
from ..fsutil import write_npy
from ..indexing.load import LoadedIndex
from ..progress import ProgressCallback, emit
from ..sources import read_location
from .rerank import Reranked, best_scores, verify_indexed
from .verify import Verifier


def background_scores(idx: LoadedIndex, sample: int = 10_000, seed: int = 0,
                      progress: Optional[ProgressCallback] = None) -> np.ndarray:
    """Second-nearest-neighbour scores of up to ``sample`` training images (the first is the image itself).

    Exact duplicates inside the training set legitimately score ~1 here. Cached in the index directory
    per (generation, sample, seed)."""
    n = len(idx)
    if n < 2:
        return np.zeros(0, np.float32)
    gen = idx.meta.get("generation", 0)
    cache = idx.dir.root / f"background-{gen:06d}-{sample}-{seed}.npy"
    if cache.is_file():
        try:
            return np.load(cache)
        except (OSError, ValueError):
            pass
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    vec = idx.vectors(pick)
    emit(progress, "background", 0, len(pick))
    scores, ids = idx.search(vec, 2)
    emit(progress, "background", len(pick), len(pick))
    # the image itself is normally rank 1; with exact duplicates the order may swap, so skip by id
    self_first = ids[:, 0] == pick
    out = np.where(self_first, scores[:, 1], scores[:, 0]).astype(np.float32)
    try:
        write_npy(cache, out)
    except (OSError, OutputError):
        pass  # a read-only index (or a full disk) still works, just without the cache
    return out


def train_null(idx: LoadedIndex, verifier: Verifier | None, k: int, sample: int, seed: int, max_pixels: int,
               progress: Optional[ProgressCallback],
               partial_fn: Callable[[list, np.ndarray], tuple[np.ndarray, np.ndarray, Any]] | None = None,
               gate: Callable[[Reranked, np.ndarray, np.ndarray, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]
               | None = None, global_k: int | None = None,
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None,
                          np.ndarray | None]:
    """Train-vs-train null for the fused score: each sampled training image against the *other* training
    images: (global second-neighbour cosine, verified score, region score, pixel score, object score),
    paired per image, and the void mask of the verified and pixel scores (None without ``gate``).
    ``partial_fn(readers, ids)`` -> (region score, object score, its region matches);
    ``gate(reranked, global scores, global ids, region matches)`` -> (verified, pixel, void) replaces the plain
    best verified and pixel scores (``specificity.py``), with ``global_k`` global neighbours (default ``k``)."""
    n = len(idx)
    if n < 2:
        return np.zeros(0, np.float32), None, None, None, None, None
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    kg = max(k, global_k or k)
    sims, cand = idx.search(idx.vectors(pick), kg + 1)
    keep = cand != pick[:, None]
    others = np.full((len(pick), kg), -1, np.int64)
    other_sims = np.full((len(pick), kg), -np.inf, np.float32)
    for i in range(len(pick)):
        row = cand[i][keep[i]][:kg]
        others[i, :len(row)] = row
        other_sims[i, :len(row)] = sims[i][keep[i]][:kg]
    glob = np.nan_to_num(other_sims[:, 0], neginf=0.0).astype(np.float32)
    paths = idx.lookup("path")
    region = obj = rm = None
    if partial_fn is not None:
        region, obj, rm = partial_fn([functools.partial(read_location, paths[int(j)]) for j in pick], pick)
    verified = pixel = void = None
    if verifier is not None:
        rr = verify_indexed(pick, others[:, :k], paths, verifier, max_pixels=max_pixels, stage="verify-background",
                            progress=progress)
        if gate is not None:
            verified, pixel, void = gate(rr, other_sims, others, rm)
        else:
            verified, pixel = best_scores(rr.scores), best_scores(rr.pixel)
    return glob, verified, region, pixel, obj, void
