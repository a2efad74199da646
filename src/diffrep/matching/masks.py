"""An image's object: which pixels belong to the thing in the picture (not its background).

Used by the synthetic partial-copy benchmark (``diffrep.eval.bench.generate``: the object pasted into new
scenes) and by the audit's object matching (``diffrep.auditing.objects``: the object searched for inside
generations). Order of preference: the alpha channel, a user mask, a foreground estimate; when none
covers 2-97% of the image, the whole image is the object (method ``whole``).

The foreground estimate needs a plain background to stand out of: at least ``PLAIN_BORDER`` (90%) of the
image's border pixels within ``BACKGROUND_LEVELS`` (32) levels of their median colour. A photograph of a scene
(a street, a monument, an animal in a field) has no such border, and the largest region that differs from
its border's median is an arbitrary part of the scene, not an object; such images get ``whole``. Both numbers
were set from what the rule means (most of the frame is one colour, at the estimate's own level tolerance),
not fitted to a dataset.
"""
from __future__ import annotations

import numpy as np

MIN_MASK_SHARE, MAX_MASK_SHARE = 0.02, 0.97
PLAIN_BORDER = 0.9  # share of border pixels at the background colour for the image to have a plain background
BACKGROUND_LEVELS = 32  # levels (any channel) within which a pixel is the background colour


def object_mask(rgb: np.ndarray, alpha: np.ndarray | None = None,
                user_mask: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(mask, method) for an (H, W, 3) uint8 image composited on white, its alpha channel (H, W) if it
    had one, and an optional user mask (bool, same size; True = object)."""
    h, w = rgb.shape[:2]
    candidates: list[tuple[np.ndarray, str]] = []
    if alpha is not None:
        candidates.append((np.asarray(alpha) > 127, "alpha"))
    if user_mask is not None:
        candidates.append((np.asarray(user_mask, bool), "user"))
    candidates.append((foreground_estimate(rgb), "estimate"))
    for mask, method in candidates:
        share = float(mask.mean())
        if MIN_MASK_SHARE <= share <= MAX_MASK_SHARE:
            return mask, method
    return np.ones((h, w), bool), "whole"


def _background(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """(the median colour of the image's border, whether at least ``PLAIN_BORDER`` of the border pixels lie
    within ``BACKGROUND_LEVELS`` of it)."""
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg = np.median(border, axis=0)
    return bg, bool((np.abs(border - bg).max(axis=1) <= BACKGROUND_LEVELS).mean() >= PLAIN_BORDER)


def plain_background(rgb: np.ndarray) -> bool:
    """Whether the image is an object on a plain background, not a scene: at least ``PLAIN_BORDER`` of its
    border pixels within ``BACKGROUND_LEVELS`` of their median colour."""
    return _background(np.asarray(rgb, dtype=np.int16))[1]


def foreground_estimate(rgb: np.ndarray) -> np.ndarray:
    """The median colour of the image border is background; pixels that differ from it by more than
    ``BACKGROUND_LEVELS`` in any channel are foreground; small gaps are closed, the largest connected
    component kept and its holes filled. Empty when the background is not plain (:func:`plain_background`)."""
    import cv2

    a = np.asarray(rgb, dtype=np.int16)
    bg, plain = _background(a)
    if not plain:
        return np.zeros(a.shape[:2], bool)
    fg = (np.abs(a - bg).max(axis=2) > BACKGROUND_LEVELS).astype(np.uint8)
    k = max(3, (min(fg.shape) // 64) | 1)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.zeros(fg.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    comp = (labels == largest).astype(np.uint8)
    # fill holes: flood the background from the border, everything not reached is object
    inv = 1 - comp
    _, bg_labels = cv2.connectedComponents(inv, connectivity=4)
    edge = set(np.unique(np.concatenate([bg_labels[0], bg_labels[-1], bg_labels[:, 0], bg_labels[:, -1]])))
    outside = np.isin(bg_labels, list(edge)) & (inv == 1)
    return ~outside


def bbox(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1] (exclusive ends) of the True pixels; the whole array when there are none."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, int(mask.shape[1]), int(mask.shape[0])]
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


__all__ = ["BACKGROUND_LEVELS", "MAX_MASK_SHARE", "MIN_MASK_SHARE", "PLAIN_BORDER", "bbox", "foreground_estimate",
           "object_mask", "plain_background"]
