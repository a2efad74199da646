"""Masked template matching primitives: R^2 of a masked template at every placement in an image (by two
unmasked correlations, or by FFT for many templates at once), a mask's erosion that spares thin lines, and the
share of a placed mask's outline that is an edge in the image, and the share of a rectangle's frame that is a
step (an edge there and not at the lines parallel to it). Images and templates are float32 with 128
subtracted (``auditing.objects`` prepares them); R^2 = 1 - SSD / (the template's masked variance, floored)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def eroded_mask(tm: np.ndarray, erode: int) -> np.ndarray:
    """The mask ``tm`` eroded by ``erode`` px, by less where that would leave under half of it (a line
    drawing's thin lines), as float32."""
    import cv2

    for e in range(erode, 0, -1):
        eroded = cv2.erode(tm, np.ones((2 * e + 1, 2 * e + 1), np.uint8))
        if 2 * int(eroded.sum()) >= int(tm.sum()):
            return eroded.astype(np.float32)
    return tm.astype(np.float32)


def template_terms(tr: np.ndarray, tm: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(object pixels times mask, sum of the squared masked pixels, the denominator of R^2)."""
    m = tm.astype(np.float32, copy=False)
    trm = tr * m[..., None]
    n = float(m.sum())
    sums = (m.reshape(-1) @ tr.reshape(-1, 3)).astype(np.float64)  # BLAS; the images are centred, so float32
    sq = float(np.vdot(trm, tr))  # sums lose under 1e-4 of R^2's denominator
    var = sq - float((sums ** 2).sum()) / n  # masked sum of squared deviations from the object's mean colour
    return trm, sq, var


def r2_maps(spectra: tuple[np.ndarray, np.ndarray], shape: tuple[int, int],
            templates: list[tuple[np.ndarray, np.ndarray]], min_std: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``r2_map`` of many (centred object, mask) pairs in one image, and of their mirror images, given the
    rfft2 spectra of the image's three channels and their squares' sum, and of its mirror image's
    (``auditing.objects.Prepared.coarse_spectra``): the correlations by FFT, all templates in one batch. A
    correlation over the image's own size wraps around only at placements where the template would leave the
    image, which are cut off. The mirrored template at column x is the template in the mirrored image at
    column W - w - x, so one template spectrum serves both."""
    import scipy.fft as sf

    if not templates:
        return [], []
    h_img, w_img = shape
    planes = np.zeros((len(templates), 4, h_img, w_img), np.float32)
    terms = []
    for k, (tr, tm) in enumerate(templates):
        trm, sq, var = template_terms(tr, tm)
        h, w = tm.shape
        planes[k, :3, :h, :w] = trm.transpose(2, 0, 1)
        planes[k, 3, :h, :w] = tm
        terms.append((h, w, sq, max(var, 3 * float(tm.sum()) * min_std ** 2)))
    f = np.conjugate(sf.rfft2(planes, workers=1))
    out: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for side, spec in enumerate(spectra):
        cross = f[:, 3] * spec[3] - 2 * (f[:, :3] * spec[None, :3]).sum(1)
        ssd = sf.irfft2(cross, s=shape, workers=1)
        for k, (h, w, sq, den) in enumerate(terms):
            r = 1.0 - (ssd[k, :h_img - h + 1, :w_img - w + 1] + sq) / den
            out[side].append(np.ascontiguousarray(r[:, ::-1]) if side else r)
    return out


def r2_map(img: np.ndarray, img_sq: np.ndarray, tr: np.ndarray, tm: np.ndarray, min_std: float) -> np.ndarray:
    """R^2 of the masked object (centred like ``img``) at every placement in ``img``. The masked sum of
    squared differences expands to sum(m t^2) - 2 corr(img, m t) + corr(sum_c img^2, m): two unmasked
    correlations, cheaper than OpenCV's masked TM_SQDIFF, which computes the same sums."""
    import cv2

    trm, sq, var = template_terms(tr, tm)
    ssd = cv2.matchTemplate(img_sq, tm, cv2.TM_CCORR)
    ssd -= 2 * cv2.matchTemplate(img, trm, cv2.TM_CCORR)
    ssd += sq
    return 1.0 - ssd / max(var, 3 * float(tm.sum()) * min_std ** 2)


def outline_share(img: np.ndarray, tm: np.ndarray, x0: int, y0: int, contrast: float) -> float:
    """Share of the outline of the object mask ``tm`` placed at (x0, y0) in ``img`` across which the image
    changes: the mean colour of the 2 px band just inside the mask and of the 2 px ring just outside it,
    near each outline pixel (7 x 7 px), differ by >= ``contrast`` levels in some channel. 1.0 when no
    outline pixel has both sides inside the image. Directional on purpose: a black silhouette placed in a
    larger black area has texture nearby but no edge along its own outline."""
    import cv2

    pad = 3
    h, w = tm.shape
    big, bw = img.shape[:2]
    ya, xa = max(0, y0 - pad), max(0, x0 - pad)
    yb, xb = min(big, y0 + h + pad), min(bw, x0 + w + pad)
    if yb <= ya or xb <= xa:
        return 1.0
    m = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    m[pad:pad + h, pad:pad + w] = tm > 0
    m = np.ascontiguousarray(m[ya - (y0 - pad):yb - (y0 - pad), xa - (x0 - pad):xb - (x0 - pad)])
    crop = img[ya:yb, xa:xb].astype(np.float32)
    k5, k3 = np.ones((5, 5), np.uint8), np.ones((3, 3), np.uint8)
    inner = (m - cv2.erode(m, k5)).astype(np.float32)
    outer = (cv2.dilate(m, k5) - m).astype(np.float32)
    edge = (m - cv2.erode(m, k3)) > 0
    if not edge.any():
        return 1.0

    def mean_near(band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = cv2.boxFilter(crop * band[..., None], -1, (7, 7), normalize=False, borderType=cv2.BORDER_CONSTANT)
        n = cv2.boxFilter(band, -1, (7, 7), normalize=False, borderType=cv2.BORDER_CONSTANT)
        return s / np.maximum(n, 1e-6)[..., None], n

    mi, ni = mean_near(inner)
    mo, no = mean_near(outer)
    valid = edge & (ni > 0) & (no > 0)
    if not valid.any():
        return 1.0
    diff = np.abs(mi[valid] - mo[valid]).max(axis=-1)
    return float((diff >= contrast).mean())


def _line_contrast(img: np.ndarray, vertical: bool, p: int, lo: int, hi: int, band: int) -> Optional[np.ndarray]:
    """Per pixel from ``lo`` to ``hi`` along a straight line between rows (columns, ``vertical``) ``p - 1``
    and ``p``: the largest channel difference between the mean colours of the ``band`` rows on either side.
    None where the bands leave the image."""
    a = img if not vertical else img.transpose(1, 0, 2)
    if p - band < 0 or p + band > a.shape[0] or hi <= lo:
        return None
    before = a[p - band:p, lo:hi].mean(0)
    after = a[p:p + band, lo:hi].mean(0)
    return np.abs(after - before).max(-1)


def frame_step_share(img: np.ndarray, box: Sequence[int], contrast: float, parallels: Sequence[int] = (4, 8),
                     ratio: float = 1.5, band: int = 2) -> float:
    """Share of the frame of ``box`` = (x0, y0, x1, y1) in ``img`` that is a step: the contrast across the
    frame line (``band`` px either side, largest channel difference) is at least ``contrast`` levels and at
    least ``ratio`` times the largest contrast across the lines ``parallels`` px inside and outside it, at the same
    place along the side. A picture pasted onto a scene has its border there; texture has contrast across the
    parallel lines as well. A side whose frame line has no room outside the image counts as no step (a
    picture flush with the border shows its border on the other sides only); 0.0 for a box that fills the
    image."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = img.shape[:2]
    steps = []
    for vertical, p, sign in ((False, y0, -1), (False, y1, 1), (True, x0, -1), (True, x1, 1)):
        lo, hi = (max(0, y0), min(h, y1)) if vertical else (max(0, x0), min(w, x1))
        d0 = _line_contrast(img, vertical, p, lo, hi, band)
        if d0 is None:  # no room outside the image: no evidence of a border there
            steps.append(np.zeros(max(0, hi - lo), bool))
            continue
        side = np.zeros_like(d0)
        for off in parallels:
            for q in (p + sign * off, p - sign * off):
                d = _line_contrast(img, vertical, q, lo, hi, band)
                if d is not None:
                    np.maximum(side, d, out=side)
        steps.append((d0 >= contrast) & (d0 >= ratio * side))
    frame = np.concatenate(steps)
    return float(frame.mean()) if len(frame) else 0.0


__all__ = ["eroded_mask", "frame_step_share", "outline_share", "r2_map", "r2_maps", "template_terms"]
