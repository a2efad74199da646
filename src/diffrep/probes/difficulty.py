"""Difficulty calibration of membership scores: take out what the image's own statistics predict.

Most of a membership score's spread between images is how easy the image is to denoise, member or not: a
plain, dark image has a small error under every method. Watson et al. (ICLR 2022) calibrate each image's score
by its difficulty, measured with reference models trained without it; here the difficulty is predicted from the
image itself: its grayscale mean, standard deviation and mean gradient (``image_statistics``) and their
squares, fitted by least squares over the pooled tested and reference images. The calibrated score is the
residual (``without_difficulty``).

The gradient counts each step between neighbouring pixels by how far it exceeds ``GRADIENT_FLOOR`` (4 of 255
grey levels): JPEG's block edges and ringing are steps of a few levels, which the noise at the scored timesteps
swamps; counted in full they made re-compressed images look harder to denoise than their loss says, and the
calibration then moved re-compressed non-members towards "member" (docs/results/2026-12-membership.md).

The fit is a function of the pooled images only, symmetric in them: it treats a tested non-member and a
reference image alike, so calibrated scores of non-members stay exchangeable with the reference's, and the
conformal threshold and p-values (``matching.calibration``) and the permutation test (``setinfer``) keep their
guarantees. Below ``MIN_IMAGES`` pooled images the fit is not made (``fit_is_possible``): seven coefficients
from fewer images absorb the membership signal with the difficulty.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

METHOD = "image-stats"
MODES = (METHOD, "none")
GRADIENT_FLOOR = 4 / 255  # steps between neighbours count by how far they exceed this (grayscale in [0, 1])
FLOOR_WORDS = f"steps above {round(GRADIENT_FLOOR * 255)} of 255 levels"
DESCRIPTION = ("each score minus what a least-squares fit on the images' grayscale mean, spread and mean "
               f"gradient ({FLOOR_WORDS}; to the second degree), over the pooled tested and reference images, "
               "predicts of it")
MIN_IMAGES = 35  # five pooled images per fitted coefficient
PIXELS_PER_CHUNK = 1 << 21  # pixels converted to float at a time: 8 images of 512 px, 2,048 of 32 px


def gray_chunks(images: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Successive (slice of the first axis, float32 grayscale [n, H, W] in [0, 1]) of uint8 images [N, H, W, C], a
    bounded number of pixels (``PIXELS_PER_CHUNK``) at a time, so that no float copy of the whole stack is ever
    made. Grayscale is the channel mean, summed channel by channel (several times faster than ``mean(axis=-1)``)."""
    c = images.shape[-1]
    for part in chunk_slices(images.shape):
        chunk = images[part]
        yield part, sum(chunk[..., i].astype(np.float32) for i in range(c)) / np.float32(255.0 * c)


def chunk_slices(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices of the first axis of images of ``shape`` [N, H, W, ...] holding ``PIXELS_PER_CHUNK`` pixels or
    fewer (one image at least)."""
    n, h, w = shape[:3]
    step = max(1, PIXELS_PER_CHUNK // max(1, h * w))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def gray_statistics(g: np.ndarray, floor: float = GRADIENT_FLOOR) -> np.ndarray:
    """``image_statistics`` of grayscale images [N, H, W] in [0, 1]: mean, standard deviation, and the mean over
    horizontal plus the mean over vertical neighbour steps of max(|step| - ``floor``, 0) (``floor`` 0: the mean
    absolute gradient)."""
    f = np.float32(floor)
    grad = sum(np.maximum(np.abs(np.diff(g, axis=a)) - f, 0).mean(axis=(1, 2)) for a in (2, 1))
    return np.column_stack([g.mean(axis=(1, 2)), g.std(axis=(1, 2)), grad]).astype(np.float64)


def image_statistics(images: np.ndarray, floor: float = GRADIENT_FLOOR) -> np.ndarray:
    """Per image (uint8 [N, H, W, C]): grayscale mean, standard deviation and mean gradient above ``floor``
    (``gray_statistics``), in [0, 1] units: what makes an image easy to denoise, member or not."""
    parts = [gray_statistics(g, floor) for _, g in gray_chunks(images)]
    return np.vstack(parts) if parts else np.zeros((0, 3))


def fit_is_possible(n_images: int) -> bool:
    return n_images >= MIN_IMAGES


def without_difficulty(values: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Residuals of ``values`` (one score per row, or a column per feature) after least squares on
    [1, stats, stats^2] over the rows."""
    x = np.column_stack([np.ones(len(stats)), stats, stats ** 2])
    beta, *_ = np.linalg.lstsq(x, values, rcond=None)
    return values - x @ beta


def explained_share(values: np.ndarray, stats: np.ndarray) -> float:
    """The share of ``values``' variance the fit explains (R^2; 0 when the values do not vary)."""
    var = float(np.var(values))
    return 0.0 if var <= 0 else float(1.0 - np.var(without_difficulty(values, stats)) / var)


def calibrate_pooled(tested: np.ndarray, reference: np.ndarray, tested_stats: np.ndarray,
                     reference_stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tested, reference) scores freed of difficulty by one fit over both (module docstring)."""
    both = without_difficulty(np.concatenate([tested, reference]).astype(np.float64),
                              np.vstack([tested_stats, reference_stats]).astype(np.float64))
    return both[:len(tested)], both[len(tested):]
