"""Train-vs-train background: each sampled training image's best match among the *other* training images."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..fsutil import atomic_path
from ..indexing.load import LoadedIndex
from ..progress import ProgressCallback, emit


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
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, out)
    except OSError:
        pass  # a read-only index still works, just without the cache
    return out
