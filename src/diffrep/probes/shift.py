"""Shift control: can the tested images be told from the reference without the model?

Membership scores compare the tested images with the reference; if the two differ in source, processing or
content, every score measures that difference too (CopyMark, 2024: most attacks on pretrained models measured
the shift between their member and non-member sets). The control is a blind baseline, a classifier two-sample
test (Lopez-Paz & Oquab, ICLR 2017) on features that do not involve the model, in two views:

- processing: an 8x8 grayscale thumbnail, per-channel mean and spread, the grayscale mean, spread and mean
  absolute gradient (the difficulty statistics without their gradient floor: JPEG's small steps belong here),
  the high-frequency energy and the power spectrum's share in 8 rings of spatial frequency, as they are (JPEG,
  blur and resizing show in the last ones);
- content: the first ``COMPONENTS`` principal components of those features and a 16x16 grayscale thumbnail,
  over the pooled images (what kind of picture it is; a classifier on all 338 values would drown in them).

Per view a ridge classifier is trained to tell tested from reference images in ``folds``-fold cross-validation
and scored by the AUC of its out-of-fold scores; the statistic is the larger of the two AUCs and the p-value
the share of ``permutations`` random relabellings of the pooled images whose statistic is at least as large,
(1 + #{>=}) / (P + 1). The features, the components and the folds do not depend on the labels, so images drawn
from one distribution (members and non-members of one source, as membership inference needs) give p < a in at
most a share a of runs; a small p says the reference is not a fair null for these images.

The features are made a bounded number of pixels at a time, and the permuted labellings are scored as columns
of one ridge system per fold, so the control costs a few milliseconds per image (docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import scipy.fft as sfft

from ..progress import ProgressCallback, emit
from .difficulty import gray_chunks, gray_statistics

FEATURES = ("processing: 8x8 grayscale thumbnail, per-channel mean and standard deviation, grayscale mean, "
            "standard deviation and mean absolute gradient, mean absolute Laplacian, log power share in 8 "
            "spatial-frequency rings; content: the first 10 principal components of those and a 16x16 grayscale "
            "thumbnail over the pooled images")
COMPONENTS = 10
SPECTRUM_BINS = 8
ALPHA = 0.01
MIN_PER_SIDE = 10
STAGE = "shift control"
LABEL_BLOCK = 64  # label columns (the observed labels and permutations) scored at a time


def views(images: np.ndarray, progress: Optional[ProgressCallback] = None, *, stage: str = STAGE,
          offset: int = 0, total: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """(processing features, content inputs) per image (uint8 [N, H, W, C]): the processing view of the module
    docstring (``FEATURES``) and those features with the 16x16 thumbnail appended (the content view's principal
    components are taken over the pooled images in ``shift_test``). Computed a bounded number of pixels at a
    time (``difficulty.gray_chunks``); ``progress`` counts the images from ``offset`` of ``total`` (N by
    default)."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    total = n if total is None else total
    rings = _RingSums(h, w)
    processing, thumbs = [], []
    emit(progress, stage, offset, total)
    for part, g in gray_chunks(images):
        lap = (np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2]
                      - g[:, 1:-1, 2:]).mean(axis=(1, 2)) if h > 2 and w > 2 else np.zeros(len(g)))
        processing.append(np.column_stack([
            thumbnail(g, 8).reshape(len(g), -1), *_channel_stats(images[part]), gray_statistics(g, 0.0), lap,
            rings.log_shares(g)]).astype(np.float64))
        thumbs.append(thumbnail(g, 16).reshape(len(g), -1).astype(np.float64))
        emit(progress, stage, offset + part.stop, total)
    if not processing:  # no images: empty views of the right width
        width = 64 + 2 * (images.shape[-1] if images.ndim == 4 else 1) + 4 + SPECTRUM_BINS
        return np.zeros((0, width)), np.zeros((0, width + 256))
    b = np.vstack(processing)
    return b, np.column_stack([b, np.vstack(thumbs)])


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image and channel of uint8 ``images`` [n, H, W, C], the mean and the standard deviation in [0, 1]
    units, from sums of the values and their squares (integers, summed exactly in float64 by a matrix product:
    faster than a reduction over the middle axes, and free of float32 rounding)."""
    flat = images.reshape(len(images), -1, images.shape[-1]).astype(np.float64)
    ones = np.ones(flat.shape[1])
    mean = (ones @ flat) / flat.shape[1]
    var = np.maximum((ones @ (flat * flat)) / flat.shape[1] - mean * mean, 0.0)
    return mean / 255.0, np.sqrt(var) / 255.0


def spectrum(gray: np.ndarray, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """Per image [N, H, W]: the log share of its power spectrum (mean removed) in ``bins`` rings of spatial
    frequency, low to high: compression, resampling and noise leave their mark at the high end."""
    return _RingSums(gray.shape[1], gray.shape[2], bins).log_shares(gray)


class _RingSums:
    """The power spectrum's mean per ring of spatial frequency, from the half spectrum of a real image (the other
    half mirrors it: |F(-u, -v)| = |F(u, v)| and both lie on one ring), as a matrix product."""

    def __init__(self, h: int, w: int, bins: int = SPECTRUM_BINS):
        r = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.rfftfreq(w), indexing="ij"))
        ring = np.minimum((r / max(float(r.max()), 1e-12) * bins).astype(int), bins - 1).ravel()
        col = np.arange(w // 2 + 1)
        weight = np.broadcast_to(np.where((col > 0) & (2 * col != w), 2.0, 1.0), r.shape).ravel()
        self.matrix = np.zeros((ring.size, bins))
        self.matrix[np.arange(ring.size), ring] = weight  # each half-spectrum frequency, counted with its mirror
        self.counts = np.maximum(self.matrix.sum(axis=0), 1.0)  # frequencies per ring in the full spectrum

    def log_shares(self, gray: np.ndarray) -> np.ndarray:
        g = np.asarray(gray, np.float32)
        power = np.abs(sfft.rfft2(g - g.mean(axis=(1, 2), keepdims=True), axes=(1, 2))) ** 2
        power[:, 0, 0] = 0.0  # the mean, removed exactly (what float rounding leaves of it is noise)
        sums = power.reshape(len(power), -1).astype(np.float64) @ self.matrix
        share = sums / self.counts / np.maximum(sums.sum(axis=1, keepdims=True), 1e-12)
        return np.log(share + 1e-12)


def thumbnail(gray: np.ndarray, side: int) -> np.ndarray:
    """[N, side, side] area averages of grayscale images [N, H, W] in [0, 1], any image size."""
    return _pool(gray.shape[1], side) @ gray @ _pool(gray.shape[2], side).T


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
    """Out-of-fold ridge scores from standardized ``x`` of each column of labels ``y`` (0/1, [N, L]): the folds'
    systems are solved once for all the columns."""
    out = np.empty(y.shape)
    for f in range(k):
        test = folds == f
        tr = ~test
        xt = x[tr]
        mu, sd = xt.mean(axis=0), xt.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        a = np.column_stack([(xt - mu) / sd, np.ones(len(xt))])
        reg = ridge * len(xt) * np.eye(a.shape[1])
        reg[-1, -1] = 0.0
        w = np.linalg.solve(a.T @ a + reg, a.T @ (y[tr] - y[tr].mean(axis=0)))
        out[test] = np.column_stack([(x[test] - mu) / sd, np.ones(int(test.sum()))]) @ w
    return out


def _label_blocks(y: np.ndarray, permutations: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The observed labels ``y`` then ``permutations`` random relabellings, as columns, ``LABEL_BLOCK`` at a time."""
    cols = [y]
    for _ in range(permutations):
        cols.append(rng.permutation(y))
        if len(cols) == LABEL_BLOCK:
            yield np.column_stack(cols)
            cols = []
    if cols:
        yield np.column_stack(cols)


def _column_aucs(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per column, the AUC (``roc.auc``: ties count one half) of ``scores`` for the rows whose label is 1 against
    those whose label is 0; every column has the same number of 1s."""
    from scipy.stats import rankdata  # imported here: scipy.stats adds ~0.4 s to any import of this module

    ranks = rankdata(scores, axis=0)  # ties share the mean of their ranks
    n1 = labels[:, 0].sum()
    n0 = len(labels) - n1
    return ((ranks * labels).sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def shift_control(tested: np.ndarray, reference: np.ndarray, progress: Optional[ProgressCallback] = None,
                  **kw: Any) -> dict[str, Any]:
    """The test of the module docstring on tested and reference images (uint8 [N, H, W, C]); ``shift_test``'s
    keywords and result. ``progress`` counts the images whose features are made (stage ``STAGE``)."""
    total = len(tested) + len(reference)
    return shift_test(views(tested, progress, total=total), views(reference, progress, offset=len(tested), total=total),
                      **kw)


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
    first, best = None, []
    for block in _label_blocks(y, permutations, rng):
        view_aucs = np.array([_column_aucs(_cv_scores(x, block, fold, k, ridge), block)
                              for x in (processing, content)])
        first = view_aucs[:, 0] if first is None else first
        best.append(view_aucs.max(axis=0))
    stat = np.concatenate(best)
    observed = float(stat[0])
    ge = int(np.sum(stat[1:] >= observed - 1e-12))
    p = (1.0 + ge) / (permutations + 1.0)
    found = p < ALPHA
    sentence = (f"The tested images can be told from the reference without the model (blind classifier AUC "
                f"{observed:.2f}, p = {p:.2g}): the membership scores may measure that difference rather than "
                "training. Use a reference from the same source, processed the same way." if found else
                f"The tested images cannot be told from the reference without the model (blind classifier AUC "
                f"{observed:.2f}, p = {p:.2g}).")
    return base | {"auc": observed, "auc_by_view": {"processing": float(first[0]), "content": float(first[1])},
                   "p_value": float(p), "permutations": permutations, "folds": k, "shift_detected": bool(found),
                   "sentence": sentence}
