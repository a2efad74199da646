"""Pixel-level verification of candidate matches: align, then compare structure.

A global descriptor ranks candidates well but scores poorly on single-domain data: unrelated emoji, icons
or digits already score 0.8-0.95 with SSCD, as high as edited copies. Verification asks a
sharper question of the top few candidates: *after the best geometric alignment, do the two images have
the same edges?*

1. SIFT keypoints (OpenCV) on both images at ``size`` px, grayscale, described as RootSIFT (Arandjelovic &
   Zisserman, CVPR 2012); the query is also tried mirrored.
2. Lowe's ratio test (``ratio``), then RANSAC for a full affine map (6 DOF: crops resized to another aspect
   ratio are anisotropic scalings), reprojection error ``ransac_px``. Only plausible maps count (axis
   scalings within ``scale_range``, at most ``max_anisotropy`` apart, no reflection): an unconstrained
   affine map turns a square into a minus sign and a circle into a crescent's bounding ellipse.
3. Keypoints are few on small flat pictures (icons, emoji: a handful per image), so RANSAC often finds no
   map for a crop or rotation of one. A second alignment therefore needs no keypoints: the query, shrunk
   by each of ``ecc_scales``, is located in the training image by template matching (a crop shows part
   of the training image enlarged), and each such start is refined to a full affine map by maximizing
   the correlation of the two blurred images (ECC, Evangelidis & Psarakis, PAMI 2008; OpenCV's
   ``findTransformECC``) at ``ecc_size`` px. The start that converges to the highest correlation gives a
   second candidate map; the edge score below is the better of the two maps. The pixel score (below) uses
   the ECC map only when its edge score is at least ``ecc_pixel_gate``: ECC maximizes that very
   correlation, and over all plausible maps a crescent moon reaches 0.96 against a filled circle.
4. The training image is warped into the query's frame; both are smoothed (Gaussian ``sigma``) and the
   score is the normalized cross-correlation of their gradient magnitudes over the pixels where either
   image has content (non-white) inside the warped frame. Gradients make the score insensitive to colour
   shifts and grayscale conversion; smoothing to blur, JPEG and downscaling.

The score lies in [-1, 1]: edited copies score ~0.9-1.0; different pictures with similar layout much
lower. It is calibrated like any score (reference null, target FPR), never read on a fixed scale.

A second, coarser score (``pixel``) compares intensities rather than edges: the normalized correlation of
the two grayscale images blurred to about 32 px of detail (Gaussian ``pixel_sigma`` at ``size``), in the
query's frame without alignment, after the RANSAC map and after the gated ECC map (step 3); the best of these and of the
mirrored query. It needs no keypoints, so it still sees small or noisy images where SIFT finds too few
(the speckled samples of small diffusion models, Carlini et al.'s pixel-space copies), and its blur
makes it insensitive to noise; gradients (the first score) cannot tell noise from structure there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import DiffrepError
from .textlines import text_line_mask


@dataclass(frozen=True)
class VerifyConfig:
    size: int = 256
    ratio: float = 0.9
    ransac_px: float = 5.0
    sigma: float = 1.0
    contrast_threshold: float = 0.02
    min_content_px: int = 200
    mirror: bool = True
    root_sift: bool = True
    pixel_sigma: float = 4.0  # blur of the intensity score, in px at `size` (256 / 4 / 2 -> ~32 px of detail)
    ecc: bool = True  # keypoint-free alignment (template-matched starts refined by ECC) besides RANSAC
    ecc_size: int = 64
    ecc_scales: tuple[float, ...] = (1.0, 0.8, 0.64)
    ecc_iterations: int = 50
    ecc_pixel_gate: float = 0.9  # edge score an ECC map needs before the pixel score may use it
    max_anisotropy: float = 1.6  # largest/smallest axis scaling of an alignment (a crop resized to square)
    scale_range: tuple[float, float] = (0.25, 4.0)  # allowed axis scalings of an alignment
    max_rotation: float = 45.0  # degrees; larger turns are other pictures (decoding applies EXIF orientation)
    text_overlay: bool = False  # also score the pair without the text lines where it differs (dedup: on)
    text_gate: float = 0.95  # edge score the rest of the picture needs before the text-free scores count
    frame_background: bool = False  # a flat coloured frame counts as background like white (dedup: on)

    def describe(self) -> dict[str, Any]:
        return {"method": "sift-ransac-affine|ecc-affine+gradient-ncc; blurred-intensity-ncc"
                + ("; text lines left out" if self.text_overlay else ""), **self.__dict__}


@dataclass
class Features:
    gray: np.ndarray  # (size, size) uint8
    points: np.ndarray  # (n, 2) float32
    desc: Optional[np.ndarray]  # (n, 128) float32
    blur: Optional[np.ndarray] = None  # (size, size) float32, gray blurred by pixel_sigma
    small: Optional[np.ndarray] = None  # (ecc_size, ecc_size) float32, blurred gray for ECC alignment
    frame: Optional[float] = None  # gray level of a flat non-white frame around the picture (pad, letterbox)


@dataclass
class Verification:
    score: float
    inliers: int  # RANSAC inliers of the map that gave `score` (0 when the keypoint-free ECC map gave it)
    mirrored: bool
    affine: Optional[np.ndarray] = None  # 2x3, query px -> training px (at `size`)
    pixel: float = 0.0  # blurred-intensity correlation (best over views and alignments)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise DiffrepError("verification needs OpenCV: pip install opencv-python-headless "
                           "(or run the audit with --no-verify)") from None
    return cv2


class Verifier:
    """Computes features and verification scores. Thread-safe: OpenCV objects are created per call."""

    def __init__(self, config: VerifyConfig | None = None) -> None:
        self.config = config or VerifyConfig()
        self.cv2 = _cv2()

    def features(self, image: np.ndarray, mirrored: bool = False) -> Features:
        cv2, s = self.cv2, self.config.size
        interp = cv2.INTER_AREA if max(image.shape[:2]) > s else cv2.INTER_CUBIC
        gray = cv2.cvtColor(cv2.resize(image, (s, s), interpolation=interp), cv2.COLOR_RGB2GRAY)
        if mirrored:
            gray = np.ascontiguousarray(gray[:, ::-1])
        sift = cv2.SIFT_create(contrastThreshold=self.config.contrast_threshold)
        kps, desc = sift.detectAndCompute(gray, None)
        if desc is not None and self.config.root_sift:  # RootSIFT: Hellinger kernel on SIFT histograms
            desc = np.sqrt(desc / (np.abs(desc).sum(axis=1, keepdims=True) + 1e-7)).astype(np.float32)
        pts = np.float32([k.pt for k in kps]) if kps else np.zeros((0, 2), np.float32)
        blur = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), self.config.pixel_sigma)
        small = None
        if self.config.ecc:
            n = self.config.ecc_size
            small = cv2.GaussianBlur(cv2.resize(gray, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32),
                                     (0, 0), n / 64.0)
        return Features(gray, pts, desc, blur, small, _frame_level(gray) if self.config.frame_background else None)

    def query_features(self, image: np.ndarray) -> list[tuple[Features, bool]]:
        views = [(self.features(image), False)]
        if self.config.mirror:
            views.append((self.features(image, mirrored=True), True))
        return views

    def verify(self, query_views: list[tuple[Features, bool]], train: Features) -> Verification:
        best = Verification(0.0, 0, False)
        pixel = -1.0
        for q, mirrored in query_views:
            v = self._pair(q, train, mirrored)
            pixel = max(pixel, self.pixel_ncc(q, train, None))
            if v.affine is not None:
                pixel = max(pixel, self.pixel_ncc(q, train, v.affine))
            if v.score > best.score:
                best = v
            a = self._ecc(q, train)
            if a is not None:
                score = self.aligned_ncc(q, train, a)
                if score >= self.config.ecc_pixel_gate:
                    # the pixel score uses the ECC map only once the edges confirm it: ECC maximizes the
                    # blurred correlation itself, so over all plausible maps it is high for simple
                    # look-alike shapes (a crescent moon against a filled circle) whose edges disagree
                    pixel = max(pixel, self.pixel_ncc(q, train, a))
                if score > best.score:  # no keypoints support this map: 0 inliers, not the RANSAC map's count
                    best = Verification(score, 0, mirrored, a)
        if self.config.text_overlay and best.affine is not None:
            q = next(f for f, m in query_views if m == best.mirrored)
            text = self.without_text(q, train, best.affine)
            if text is not None and text[0] >= self.config.text_gate:
                best.score, pixel = max(best.score, text[0]), max(pixel, text[1])
        best.pixel = pixel
        return best

    def without_text(self, q: Features, t: Features, affine: np.ndarray) -> Optional[tuple[float, float]]:
        """(edge, pixel) correlations of the aligned pair leaving out the text lines where they differ
        (``textlines.text_line_mask``: a caption or watermark over a copy), or None without such lines."""
        warped, valid = self._warp(t.gray, affine, 255, self.edge_margin)
        lines = text_line_mask(q.gray, warped, valid)
        content = self._content(q.gray, warped, valid, (q.frame, t.frame)) if lines is not None else None
        if content is None:
            return None
        keep = content & ~lines
        if int(keep.sum()) < self.config.min_content_px:
            return None
        edge = _masked_ncc(self._grad(q.gray), self._grad(warped), keep)
        pixel = 0.0
        if q.blur is not None and t.blur is not None:
            blur, inside = self._warp(t.blur, affine, 255.0, self.pixel_margin)
            if int((keep & inside).sum()) >= self.config.min_content_px:
                pixel = _masked_ncc(q.blur, blur, keep & inside)
        return edge, pixel

    def plausible(self, affine: np.ndarray) -> bool:
        """Whether an alignment is an edit a copy plausibly went through: each axis scaled within
        ``scale_range`` and the two axes by at most ``max_anisotropy`` relative to each other, no reflection
        (mirroring is its own query view), turned by at most ``max_rotation`` degrees. Without it an affine
        map turns any rectangle into any other (a minus sign into a square) and any ellipse into a circle,
        and simple shapes would "align"; without the rotation limit, distinct drawings that are one picture
        turned (the "upside-down face" is the "slightly smiling face" turned 180 degrees, the "rightwards
        hand" the "raised back of hand" turned 90) align as copies. Camera quarter turns are undone by
        decoding (EXIF orientation) before any of this."""
        lin = np.asarray(affine, np.float64)[:, :2]
        if not np.all(np.isfinite(affine)) or np.linalg.det(lin) <= 0:
            return False
        u, s, vt = np.linalg.svd(lin)
        rot = u @ vt  # the rotation of the polar decomposition lin = rot @ (symmetric positive part)
        angle = abs(np.degrees(np.arctan2(rot[1, 0], rot[0, 0])))
        lo, hi = self.config.scale_range
        return bool(lo <= s[1] and s[0] <= hi and s[0] <= self.config.max_anisotropy * s[1]
                    and angle <= self.config.max_rotation)

    def _ecc(self, q: Features, t: Features) -> Optional[np.ndarray]:
        """The keypoint-free alignment (step 3): query px -> training px at ``size``, or None."""
        cv2, c = self.cv2, self.config
        if q.small is None or t.small is None or float(q.small.std()) < 1e-3 or float(t.small.std()) < 1e-3:
            return None
        n = q.small.shape[0]
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, c.ecc_iterations, 1e-4)
        best, best_cc = None, -np.inf
        for s in c.ecc_scales:
            m = int(round(n * s))
            if m >= n:
                start = np.float32([[1, 0, 0], [0, 1, 0]])
            elif m >= 8:
                r = cv2.matchTemplate(t.small, cv2.resize(q.small, (m, m), interpolation=cv2.INTER_AREA),
                                      cv2.TM_CCOEFF_NORMED)
                x0, y0 = cv2.minMaxLoc(r)[3]
                start = np.float32([[m / n, 0, x0], [0, m / n, y0]])
            else:
                continue
            try:
                cc, warp = cv2.findTransformECC(q.small, t.small, start, cv2.MOTION_AFFINE, crit, None, 1)
            except cv2.error:  # did not converge
                continue
            if cc > best_cc and self.plausible(warp):
                best, best_cc = warp, cc
        if best is None:
            return None
        a = best.astype(np.float64)
        a[:, 2] *= c.size / n  # translation from the ECC frame to `size`; the linear part is scale-free
        return a

    def pixel_ncc(self, q: Features, t: Features, affine: Optional[np.ndarray]) -> float:
        """Correlation of the blurred intensities in the query frame (identity, or ``affine`` query->train)."""
        if q.blur is None or t.blur is None:
            return 0.0
        if affine is None:
            warped, valid = t.blur, np.ones(q.blur.shape, bool)
        else:
            warped, valid = self._warp(t.blur, affine, 255.0, self.pixel_margin)
        content = self._content(q.blur, warped, valid, (q.frame, t.frame))
        return _masked_ncc(q.blur, warped, content) if content is not None else 0.0

    def _pair(self, q: Features, t: Features, mirrored: bool) -> Verification:
        cv2, c = self.cv2, self.config
        if q.desc is None or t.desc is None or len(q.desc) < 3 or len(t.desc) < 3:
            return Verification(0.0, 0, mirrored)
        knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(q.desc, t.desc, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < c.ratio * m[1].distance]
        if len(good) < 3:
            return Verification(0.0, len(good), mirrored)
        a = q.points[[g.queryIdx for g in good]]
        b = t.points[[g.trainIdx for g in good]]
        affine, mask = cv2.estimateAffine2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=c.ransac_px)
        if affine is None or not self.plausible(affine):
            return Verification(0.0, 0, mirrored)
        inliers = int(mask.sum())
        return Verification(self.aligned_ncc(q, t, affine), inliers, mirrored, affine)

    def aligned_ncc(self, q: Features, t: Features, affine: np.ndarray) -> float:
        """NCC of smoothed gradient magnitudes after warping the training image into the query frame."""
        warped, valid = self._warp(t.gray, affine, 255, self.edge_margin)
        content = self._content(q.gray, warped, valid, (q.frame, t.frame))
        return _masked_ncc(self._grad(q.gray), self._grad(warped), content) if content is not None else 0.0

    @property
    def edge_margin(self) -> int:
        """Pixels a gradient magnitude reaches (smoothing at ``sigma`` and a 3 x 3 Sobel kernel)."""
        return int(np.ceil(3 * self.config.sigma)) + 1

    @property
    def pixel_margin(self) -> int:
        """Pixels the intensity blur reaches (3 ``pixel_sigma``)."""
        return int(np.ceil(3 * self.config.pixel_sigma))

    def _warp(self, img: np.ndarray, affine: np.ndarray, border: float,
              margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``img`` (training frame) warped into the query frame by the inverse of ``affine``, and the mask of
        query pixels the training frame covers, at least ``margin`` px (at most as many as the strip it
        leaves uncovered is thick) inside its edge where that edge lies inside the query (the query's image
        border is not an edge). The query's smoothed values near the edge mix in what lies beyond the
        training image (the border a padded copy was given: the frame's step across that edge made a padded
        drawing's edge score 0.51 and its pixel score 0.70 under the exact map, 0.99 and 0.99 without that
        band), which the training image cannot have."""
        cv2, s = self.cv2, self.config.size
        inv = cv2.invertAffineTransform(affine)
        warped = cv2.warpAffine(img, inv, (s, s), flags=cv2.INTER_LINEAR, borderValue=border)
        valid = cv2.warpAffine(np.ones(img.shape, np.uint8), inv, (s, s), flags=cv2.INTER_NEAREST, borderValue=0)
        uncovered = (valid == 0).astype(np.uint8)
        if margin > 0 and uncovered.any():
            # the band is no wider than the uncovered strip is thick: a 1-2 px strip left by a map a
            # hair off identity is the copy's own content, not a border, and mixes in little
            strip = float(cv2.distanceTransform(uncovered, cv2.DIST_C, 3).max())  # chessboard: corners too
            m = min(margin, int(np.ceil(strip)))
            # erode's default border value leaves the query's own image border alone
            valid = cv2.erode(valid, np.ones((2 * m + 1, 2 * m + 1), np.uint8))
        return warped, valid > 0

    def _content(self, q: np.ndarray, warped: np.ndarray, valid: np.ndarray,
                 frames: tuple[Optional[float], Optional[float]]) -> Optional[np.ndarray]:
        """Pixels where either image has content inside the shared frame; None when too few. Background is
        white, and with ``frame_background`` also the level of a flat coloured frame around each picture
        (``Features.frame``): two different pictures padded with frames of one colour must not correlate
        through their frames."""
        content = valid & ~(_background(q, frames[0]) & _background(warped, frames[1]))
        return content if int(content.sum()) >= self.config.min_content_px else None

    def _grad(self, g: np.ndarray) -> np.ndarray:
        cv2 = self.cv2
        f = cv2.GaussianBlur(g.astype(np.float32), (0, 0), self.config.sigma) if self.config.sigma else \
            g.astype(np.float32)
        gx = cv2.Sobel(f, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(f, cv2.CV_32F, 0, 1)
        return np.sqrt(gx * gx + gy * gy)


def _frame_level(gray: np.ndarray, ring: int = 3) -> Optional[float]:
    """The gray level of a flat, non-white frame around the picture (its outer ``ring`` px all within a few
    levels of one another: a pad or letterbox bars), or None."""
    edge = np.concatenate([gray[:ring].ravel(), gray[-ring:].ravel(), gray[:, :ring].ravel(), gray[:, -ring:].ravel()])
    level = float(np.median(edge))
    if level >= 250 or np.percentile(np.abs(edge.astype(np.float32) - level), 95) > 4:
        return None
    return level


def _background(img: np.ndarray, frame: Optional[float]) -> np.ndarray:
    white = img >= 250
    return white if frame is None else white | (np.abs(img - np.float32(frame)) <= 6)


def _masked_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalized cross-correlation of ``a`` and ``b`` over ``mask``; 0 when either is flat there."""
    x = a[mask] - a[mask].mean()
    y = b[mask] - b[mask].mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 1e-9 else 0.0
