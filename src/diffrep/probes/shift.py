"""Shift control: can the tested images be told from the reference without the model?

Membership scores compare the tested images with the reference; if the two differ in source, processing or
content, every score measures that difference too (CopyMark, 2024: most attacks on pretrained models measured
the shift between their member and non-member sets). The control is a blind baseline, a classifier two-sample
test (Lopez-Paz & Oquab, ICLR 2017) on features that do not involve the model, in two views:

- processing (``blind_features``): an 8x8 grayscale thumbnail, per-channel mean and spread, the difficulty
  statistics, the high-frequency energy and the power spectrum's share in 8 rings of spatial frequency, as
  they are (JPEG, blur and resizing show in the last ones);
- content: the first ``COMPONENTS`` principal components of those features and a 16x16 grayscale thumbnail,
  over the pooled images (what kind of picture it is; a classifier on all 338 values would drown in them).

Per view a ridge classifier is trained to tell tested from reference images in ``folds``-fold cross-validation
and scored by the AUC of its out-of-fold scores; the statistic is the larger of the two AUCs and the p-value
the share of ``permutations`` random relabellings of the pooled images whose statistic is at least as large,
(1 + #{>=}) / (P + 1). The features, the components and the folds do not depend on the labels, so images drawn
from one distribution (members and non-members of one source, as membership inference needs) give p < a in at
most a share a of runs; a small p says the reference is not a fair null for these images.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .difficulty import image_statistics
from .roc import auc

FEATURES = ("processing: 8x8 grayscale thumbnail, per-channel mean and standard deviation, grayscale mean, "
            "standard deviation and mean absolute gradient, mean absolute Laplacian, log power share in 8 "
            "spatial-frequency rings; content: the first 10 principal components of those and a 16x16 grayscale "
            "thumbnail over the pooled images")
COMPONENTS = 10
SPECTRUM_BINS = 8
ALPHA = 0.01
MIN_PER_SIDE = 10


def blind_features(images: np.ndarray) -> np.ndarray:
    """Model-free features per image (uint8 [N, H, W, C]); see ``FEATURES``."""
    x = np.asarray(images, np.float32) / 255.0
    n, h, w, c = x.shape
    g = x.mean(axis=-1)
    thumb = thumbnail(g, 8)
    lap = np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
    return np.column_stack([thumb.reshape(n, -1), x.mean(axis=(1, 2)), x.std(axis=(1, 2)), image_statistics(images),
                            lap.mean(axis=(1, 2)) if h > 2 and w > 2 else np.zeros(n),
                            spectrum(g)]).astype(np.float64)


def spectrum(gray: np.ndarray, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """Per image [N, H, W]: the log share of its power spectrum (mean removed) in ``bins`` rings of spatial
    frequency, low to high: compression, resampling and noise leave their mark at the high end."""
    n, h, w = gray.shape
    power = np.abs(np.fft.fft2(gray - gray.mean(axis=(1, 2), keepdims=True))) ** 2
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    ring = np.minimum((r / r.max() * bins).astype(int), bins - 1).ravel()
    sums = np.zeros((n, bins))
    np.add.at(sums, (slice(None), ring), power.reshape(n, -1))  # ring totals per image
    counts = np.maximum(np.bincount(ring, minlength=bins), 1)
    share = sums / counts / np.maximum(sums.sum(axis=1, keepdims=True), 1e-12)
    return np.log(share + 1e-12)


def thumbnail(gray: np.ndarray, side: int) -> np.ndarray:
    """[N, side, side] area averages of grayscale images [N, H, W] in [0, 1], any image size."""
    return _pool(gray.shape[1], side) @ gray @ _pool(gray.shape[2], side).T


def views(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(processing features, content inputs) per image: ``blind_features`` and those with the 16x16 thumbnail
    appended (the content view's principal components are taken over the pooled images in ``shift_test``)."""
    b = blind_features(images)
    g = np.asarray(images, np.float32).mean(axis=-1) / 255.0
    return b, np.column_stack([b, thumbnail(g, 16).reshape(len(g), -1)]).astype(np.float64)


def _components(x: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` principal component scores of the standardized rows of ``x``."""
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    u, sv, _ = np.linalg.svd(z, full_matrices=False)
    return u[:, :k] * sv[:k]


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


def shift_control(tested: np.ndarray, reference: np.ndarray, **kw: Any) -> dict[str, Any]:
    """The test of the module docstring on tested and reference images (uint8 [N, H, W, C]); ``shift_test``'s
    keywords and result."""
    return shift_test(views(tested), views(reference), **kw)


def shift_test(tested: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray], *,
               permutations: int = 199, folds: int = 5, ridge: float = 0.01, seed: int = 0,
               rng: Optional[np.random.Generator] = None) -> dict[str, Any]:
    """The test on precomputed ``views`` of both sides. Returns ``auc`` (the larger view's), ``auc_by_view``,
    ``p_value``, ``shift_detected`` (p < ``ALPHA``), the counts and a sentence; ``skipped`` instead when either
    side has fewer than ``MIN_PER_SIDE`` images."""
    n_a, n_b = len(tested[0]), len(reference[0])
    base = {"tested": int(n_a), "reference": int(n_b), "features": FEATURES, "alpha": ALPHA}
    if min(n_a, n_b) < MIN_PER_SIDE:
        return base | {"skipped": f"the shift control needs {MIN_PER_SIDE} or more images on each side"}
    rng = rng or np.random.default_rng(seed)
    processing = np.vstack([tested[0], reference[0]])
    content = _components(np.vstack([tested[1], reference[1]]), COMPONENTS)
    y = np.concatenate([np.ones(n_a), np.zeros(n_b)])
    k = int(min(folds, n_a, n_b))
    fold = rng.permutation(len(y)) % k

    def aucs(labels: np.ndarray) -> list[float]:
        out = []
        for x in (processing, content):
            s = _cv_scores(x, labels, fold, k, ridge)
            out.append(auc(s[labels == 1], s[labels == 0]))
        return out

    by_view = aucs(y)
    observed = max(by_view)
    ge = sum(max(aucs(rng.permutation(y))) >= observed - 1e-12 for _ in range(permutations))
    p = (1.0 + ge) / (permutations + 1.0)
    found = p < ALPHA
    sentence = (f"The tested images can be told from the reference without the model (blind classifier AUC "
                f"{observed:.2f}, p = {p:.2g}): the membership scores may measure that difference rather than "
                "training. Use a reference from the same source, processed the same way." if found else
                f"The tested images cannot be told from the reference without the model (blind classifier AUC "
                f"{observed:.2f}, p = {p:.2g}).")
    return base | {"auc": float(observed), "auc_by_view": {"processing": float(by_view[0]),
                                                          "content": float(by_view[1])},
                   "p_value": float(p), "permutations": permutations, "folds": k, "shift_detected": bool(found),
                   "sentence": sentence}
