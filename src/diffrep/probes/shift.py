"""Shift control: can the tested images be told from the reference without the model?

Membership scores compare the tested images with the reference; if the two differ in source, processing or
content, every score measures that difference too (CopyMark, 2024: most attacks on pretrained models measured
the shift between their member and non-member sets). The control is a blind baseline, a classifier two-sample
test (Lopez-Paz & Oquab, ICLR 2017) on features that do not involve the model (``blind_features``: an 8x8
grayscale thumbnail, per-channel mean and spread, the difficulty statistics and the high-frequency energy).
A ridge classifier is trained to tell tested from reference images in ``folds``-fold cross-validation; the
statistic is the AUC of its out-of-fold scores and the p-value the share of ``permutations`` random relabellings
of the pooled images whose AUC is at least as large, (1 + #{>=}) / (P + 1). Images drawn from one distribution
(members and non-members of one source, as membership inference needs) give p < a in at most a share a of
runs; a small p says the reference is not a fair null for these images.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .difficulty import image_statistics
from .roc import auc

FEATURES = ("8x8 grayscale thumbnail, per-channel mean and standard deviation, grayscale mean, standard "
            "deviation and mean absolute gradient, mean absolute Laplacian")
ALPHA = 0.01
MIN_PER_SIDE = 10


def blind_features(images: np.ndarray) -> np.ndarray:
    """Model-free features per image (uint8 [N, H, W, C]); see ``FEATURES``."""
    x = np.asarray(images, np.float32) / 255.0
    n, h, w, c = x.shape
    g = x.mean(axis=-1)
    thumb = _pool(h) @ g @ _pool(w).T  # area average onto 8 x 8, any image size
    lap = np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
    return np.column_stack([thumb.reshape(n, -1), x.mean(axis=(1, 2)), x.std(axis=(1, 2)), image_statistics(images),
                            lap.mean(axis=(1, 2)) if h > 2 and w > 2 else np.zeros(n)]).astype(np.float64)


def _pool(size: int, out: int = 8) -> np.ndarray:
    """[out, size] matrix averaging ``size`` pixels into ``out`` bins of (nearly) equal width."""
    m = np.zeros((out, size), np.float32)
    m[(np.arange(size) * out) // size, np.arange(size)] = 1.0
    if size < out:  # fewer pixels than bins: each bin takes its nearest pixel
        m = np.zeros((out, size), np.float32)
        m[np.arange(out), (np.arange(out) * size) // out] = 1.0
    return m / m.sum(axis=1, keepdims=True)


def _cv_scores(x: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int, ridge: float) -> np.ndarray:
    """Out-of-fold ridge scores of ``y`` (0/1) from standardized ``x``."""
    out = np.empty(len(y))
    for f in range(k):
        test = folds == f
        tr = ~test
        xt = x[tr]
        mu, sd = xt.mean(axis=0), xt.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        a = np.column_stack([(xt - mu) / sd, np.ones(len(xt))])
        reg = ridge * len(xt) * np.eye(a.shape[1])
        reg[-1, -1] = 0.0
        w = np.linalg.solve(a.T @ a + reg, a.T @ (y[tr] - y[tr].mean()))
        out[test] = np.column_stack([(x[test] - mu) / sd, np.ones(int(test.sum()))]) @ w
    return out


def shift_control(tested: np.ndarray, reference: np.ndarray, *, permutations: int = 199, folds: int = 5,
                  ridge: float = 0.01, seed: int = 0, rng: Optional[np.random.Generator] = None) -> dict[str, Any]:
    """The blind two-sample test of the module docstring on the tested and reference images (uint8 arrays, or
    feature rows when 2-D). Returns ``auc``, ``p_value``, ``shift_detected`` (p < ``ALPHA``), the counts and a
    sentence; ``skipped`` instead when either side has fewer than ``MIN_PER_SIDE`` images."""
    a = tested if np.ndim(tested) == 2 else blind_features(tested)
    b = reference if np.ndim(reference) == 2 else blind_features(reference)
    base = {"tested": int(len(a)), "reference": int(len(b)), "features": FEATURES, "alpha": ALPHA}
    if min(len(a), len(b)) < MIN_PER_SIDE:
        return base | {"skipped": f"the shift control needs {MIN_PER_SIDE} or more images on each side"}
    rng = rng or np.random.default_rng(seed)
    x = np.vstack([a, b])
    y = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    k = int(min(folds, len(a), len(b)))
    fold = rng.permutation(len(y)) % k

    def stat(labels: np.ndarray) -> float:
        s = _cv_scores(x, labels, fold, k, ridge)
        return auc(s[labels == 1], s[labels == 0])

    observed = stat(y)
    ge = sum(stat(rng.permutation(y)) >= observed - 1e-12 for _ in range(permutations))
    p = (1.0 + ge) / (permutations + 1.0)
    found = p < ALPHA
    sentence = (f"The tested images can be told from the reference without the model (blind classifier AUC "
                f"{observed:.2f}, p = {p:.2g}): the membership scores may measure that difference rather than "
                "training. Use a reference from the same source, processed the same way." if found else
                f"The tested images cannot be told from the reference without the model (blind classifier AUC "
                f"{observed:.2f}, p = {p:.2g}).")
    return base | {"auc": float(observed), "p_value": float(p), "permutations": permutations, "folds": k,
                   "shift_detected": bool(found), "sentence": sentence}
