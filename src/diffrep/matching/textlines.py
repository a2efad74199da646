"""Lines of text in the difference of two aligned pictures: a caption, watermark or label over a copy.

Text is the commonest overlay on web images ("preview", "stock", a date, a site name) and on small clip
art it covers much of the picture, so the edge and pixel correlations of a copy with text over it drop
to 0.4-0.9 (docs/dedup.md: most of the dedup benchmark's misses). :func:`text_line_mask` finds text in
the *difference* of the two aligned grayscale frames: letter-sized connected components (4-48 px high at
the 256 px verification size, at most 2.5 times as wide as high) of at least ``min_letters`` in a row,
side by side on one baseline with gaps under 1.5 letter heights, a line at least twice as wide as high.
A changed mouth or a redrawn part is one or two blobs, not a row of letters; a grid of teeth can be, so
the verification that uses the mask requires the remaining edges to agree almost perfectly
(``VerifyConfig.text_gate``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def text_line_mask(a: np.ndarray, b: np.ndarray, valid: np.ndarray, *, level: int = 40, min_height: int = 4,
                   max_height: int = 48, min_letters: int = 3, max_share: float = 0.3) -> Optional[np.ndarray]:
    """The boxes (padded by 3 px) of text lines where ``a`` and ``b`` (uint8 gray, one frame) differ by more
    than ``level`` inside ``valid``; None when there is no text line or the lines cover more than
    ``max_share`` of the frame (then the pictures differ by more than a caption)."""
    import cv2

    diff = ((np.abs(a.astype(np.int16) - b.astype(np.int16)) > level) & valid).astype(np.uint8)
    n, _, st, _ = cv2.connectedComponentsWithStats(diff, connectivity=8)
    x, y, w, h, area = (st[:, i] for i in range(5))
    letters = sorted((i for i in range(1, n) if min_height <= h[i] <= max_height and w[i] <= 2.5 * h[i]
                      and area[i] >= 6), key=lambda i: int(x[i]))
    if len(letters) < min_letters:
        return None
    mask = np.zeros(a.shape, bool)
    used: set[int] = set()
    for i in letters:
        if i in used:
            continue
        line, right, mid = [i], x[i] + w[i], y[i] + h[i] / 2
        for j in letters:  # left to right: extend the line with letters on its baseline
            if j in used or j in line or x[j] < x[line[-1]]:
                continue
            tall = max(h[i], h[j])
            if abs(y[j] + h[j] / 2 - mid) <= 0.5 * tall and x[j] - right <= 1.5 * tall and 0.5 <= h[j] / h[i] <= 2:
                line.append(j)
                right = max(right, x[j] + w[j])
        if len(line) < min_letters:
            continue
        x0, y0 = min(x[k] for k in line), min(y[k] for k in line)
        x1, y1 = max(x[k] + w[k] for k in line), max(y[k] + h[k] for k in line)
        if x1 - x0 >= 2 * (y1 - y0):
            mask[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = True
            used.update(line)
    if not used or mask.mean() > max_share:
        return None
    return mask
