"""Image quality of a set of generations against real images: KID on EfficientNet-Lite0 features.

KID (Binkowski et al., ICLR 2018, "Demystifying MMD GANs") is the unbiased estimate of the squared maximum
mean discrepancy between the feature distributions of generated and real images under the cubic polynomial
kernel k(x, y) = (x . y / d + 1)^3. Unlike FID it is unbiased at small sample sizes (it can come out slightly
negative when the two sets are from one distribution), which is what the small experiments here have. As in
the paper, the estimate is the mean over ``subsets`` random subsets of ``subset_size`` images of each set; the
95% interval is the percentile interval of the same estimator on bootstrap subsets of both sets (drawn with
replacement; pairs of an image with its own copy are left out of the within-set sums, so the resampled
estimator stays unbiased). With subsets as large as the sets, the interval is that of the whole-set value.

Features: the ``effnet-lite0`` descriptor (1280-d ImageNet features, packaged weights), the replacement for
the Inception network that cannot be downloaded here. Values are on that feature scale, not comparable to
published Inception KIDs.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ..progress import ProgressCallback

FEATURES = "effnet-lite0"


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, ix: Optional[np.ndarray] = None,
                  iy: Optional[np.ndarray] = None) -> float:
    """Unbiased MMD^2 of the rows of ``x`` and ``y`` under the cubic polynomial kernel. ``ix`` / ``iy``: the
    original image of each row when rows were resampled with replacement; pairs of one image with itself
    are left out of the within-set sums (not only the diagonal), so a bootstrap resample stays unbiased."""
    d = x.shape[1]

    def within(a: np.ndarray, ids: Optional[np.ndarray]) -> float:
        k = (a @ a.T / d + 1.0) ** 3
        same = np.eye(len(a), dtype=bool) if ids is None else ids[:, None] == ids[None, :]
        return float(k[~same].mean())

    return within(x, ix) + within(y, iy) - 2.0 * float(((x @ y.T / d + 1.0) ** 3).mean())


def kid(gen: np.ndarray, real: np.ndarray, *, subsets: int = 50, subset_size: int = 1000, boot: int = 500,
        seed: int = 0) -> dict[str, Any]:
    """KID of feature rows ``gen`` against ``real``: the mean over ``subsets`` random subsets of
    ``subset_size`` (without replacement), and the 2.5-97.5 percentiles of the same estimator on ``boot``
    bootstrap subsets (drawn with replacement, self-pairs left out)."""
    gen, real = np.asarray(gen, np.float64), np.asarray(real, np.float64)
    if len(gen) < 2 or len(real) < 2:
        raise ValueError("KID needs at least two images on each side")
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(gen), len(real))
    value = float(np.mean([mmd2_unbiased(gen[rng.choice(len(gen), m, replace=False)],
                                         real[rng.choice(len(real), m, replace=False)]) for _ in range(subsets)]))
    reps = []
    for _ in range(boot):
        ia, ib = rng.integers(0, len(gen), m), rng.integers(0, len(real), m)
        reps.append(mmd2_unbiased(gen[ia], real[ib], ia, ib))
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {"kid": value, "ci": [float(lo), float(hi)], "generated": int(len(gen)), "real": int(len(real)),
            "subset_size": int(m), "subsets": int(subsets), "features": FEATURES}


def image_features(source: str | os.PathLike[str], progress: Optional[ProgressCallback] = None) -> np.ndarray:
    """``effnet-lite0`` features of every readable image of ``source`` (a folder or .tar shards)."""
    from ..descriptors import get_descriptor
    from ..embedding import embed_source

    return embed_source(os.fspath(source), get_descriptor(FEATURES), stage="features", progress=progress).vectors
