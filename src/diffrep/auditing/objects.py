"""Object matching: is a training image's *object* (its foreground) pasted, rescaled, into a generation?

Region search (``partial.py``) finds which training images a window of the generation resembles; on
look-alike domains (icons, emoji) unrelated windows score nearly as high as a pasted object, so its
calibrated verdict rarely fires. Object matching checks the shortlist at the pixel level:

1. The candidate's object: the training image's alpha channel, else a foreground estimate on a plain
   background (``matching.masks``), cropped to its box. A training image with neither (a photograph of a
   scene, a full-bleed picture: mask method ``whole``) is searched as a whole rectangle; its frame is its
   outline (step 5), so it fits only where the generation shows the rectangle's edges, as a pasted
   picture does. Uncapped, such templates fitted regions of unrelated photographs at R^2 0.57-0.74
   (GCompris photographs, development seed 1); capped, at most 0.474, while 6 more of openclipart seed 15's
   160 pasted objects were found (docs/results/2026-12-cross-kind.md).
2. Coarse search: the generation resized so its longer side is ``coarse`` px (80); the object resized so
   its longer side spans ``scales`` of that side (30-85%, 28 steps of 3.8%), mirrored too (the mirror
   image of the resized object); at every position the masked sum of squared differences, from two
   correlations computed by FFT for all scales at once (``matching.templates.r2_maps``).
   The ``hypotheses`` (3) best distinct placements go on (a placement and its mirror image at the same
   place and scale are one; the mirror image is refined too when it scores within 0.05 at coarse).
3. Refinement at ``fine`` px (256) around each: the object's longer side at every whole pixel within
   +-2.5% of the coarse size (the middle size searched +-6 px, the others +-2 px of its centre), the mask
   eroded by two pixels so resampled or blended object borders do not count (by less where two pixels
   would remove over half of it: a line drawing's mask is its thin lines, and eroding them left a few
   pixels that matched anywhere, R^2 0.994-0.998 for an apple drawing "found" in unrelated pictures on
   openclipart seed 5). Whole pixels, because R^2 of a detailed object is that sharp: an exact paste of a cat
   drawing scored 0.996 at its size, 0.92 at 0.5% off and 0.82 at 2% off (openclipart seed 2; the
   earlier 7 steps over +-6% from the single best of 14 coarse scales left 48 of 160 exact pastes
   below 0.93).
4. Score: R^2 = 1 - SSD / (masked variance of the object, at least ``min_std`` levels per pixel): 1 for
   a pixel-exact paste, near 0 when the region differs from the object by as much as the object varies.
   Unlike a correlation it demands the object's own colours, and flat objects (a coloured disc) need an
   almost exact match to score high.
5. Outline: the object's pixels alone cannot tell a flat silhouette from any larger area of its colour (a
   black chipmunk silhouette "matched" inside a black costume at R^2 = 0.9997, a chevron pattern inside an
   orange sign at 1.0, a cow silhouette inside a fawn's black body at 0.996: openclipart,
   docs/partial.md). A pasted object's outline is an edge in the generation, so the score is capped at
   ``share / outline_share`` where ``share`` is the part of the object's outline (alpha or estimated
   mask) across which the generation changes: the mean colours of the 2 px band inside and the 2 px ring
   outside, near each outline pixel, differ by ``outline_contrast`` levels in some channel (at 256 px);
   mere texture next to a silhouette is not its edge. A full-canvas template's frame must instead be a
   step at the fine size (``matching.templates.frame_step_share``): the contrast across the frame line is at
   least ``outline_contrast`` levels and ``frame_ratio`` times the contrast across the lines ``frame_parallels`` px
   inside and outside it, as a pasted picture's border is and the texture of a photograph is not; a side
   at the image's border counts as no step. On seen seeds (photographs 111-120, openclipart 15-19) pasted
   full-canvas pictures had step shares 0.49-1.00 and the best full-canvas matches of unseen images
   0.00-0.41; the neighbourhood test had let two unseen photographs reach 0.60
   (docs/results/2026-12-cross-kind.md).

The object score joins the audit's fused verdict as one more channel, calibrated on the same reference
images (their shortlist gets the same test), so its false-positive rate is controlled like the others.
Cost: about 22 ms per (generation, candidate) pair on one core (256 px emoji; benchmarks/bench_partial_audit.py
measures it within an audit); ``--partial-k`` + ``--local-k`` candidates per image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..decode import decode_with_alpha, image_size
from ..matching.masks import bbox, object_mask
from ..matching.templates import eroded_mask, frame_step_share, outline_share, r2_map, r2_maps
from ..progress import ProgressCallback
from ..sources import read_location
from ..matching.cache import LoadingCache, over_candidates

ImageLoader = Callable[[int], Optional[np.ndarray]]


@dataclass(frozen=True)
class ObjectConfig:
    coarse: int = 80  # generation's longer side in the coarse search
    fine: int = 256  # ... in the refinement
    scale_min: float = 0.30  # object's longer side / generation's longer side
    scale_max: float = 0.85
    scale_steps: int = 28
    hypotheses: int = 3  # distinct coarse placements refined
    mirror_margin: float = 0.05  # ... each with its mirror image too when that scores within this at coarse
    good_enough: float = 0.98  # ... unless one already scores this much
    refine: float = 0.025  # +- relative size in the refinement, tried at every whole pixel
    margin: int = 6  # +- px around the coarse placement (fine resolution)
    erode: int = 2  # px of the object's border left out in the refinement (resampled or blended edges)
    min_std: float = 5.0  # floor of the object's per-pixel standard deviation (levels) in R^2
    min_pixels: int = 16  # objects smaller than this at a scale are skipped
    outline_contrast: float = 24.0  # levels: a pasted object's outline is an edge in the generation ...
    outline_share: float = 0.5  # ... along at least this share of it for full credit
    frame_parallels: tuple[int, ...] = (4, 8)  # px: a full-canvas template's frame is a step: its contrast beats ...
    frame_ratio: float = 1.5  # ... at least this many times the contrast across the lines this far inside and outside

    def describe(self) -> dict[str, Any]:
        return {"method": "masked template matching (R^2 of the object's pixels)", **asdict(self)}


@dataclass
class ObjectTemplate:
    rgb: np.ndarray  # (h, w, 3) float32, the object's box
    mask: np.ndarray  # (h, w) bool
    box: list[int]  # the object's box in the training image as decoded, [x0, y0, x1, y1]
    scale: float  # decoded pixels per original pixel (decoding may reduce large images)
    method: str  # how the mask was found: alpha | estimate | whole


@dataclass
class ObjectMatch:
    score: float  # R^2, -inf when nothing could be compared
    query_box: list[int]  # where the object lies in the generation, its pixels
    train_box: list[int]  # the object's box in the training image, its pixels
    mirrored: bool


NO_MATCH = ObjectMatch(-np.inf, [0, 0, 0, 0], [0, 0, 0, 0], False)


def object_template(data: bytes, max_side: int = 256) -> ObjectTemplate:
    """The object of a training image (encoded ``data``); its box is reported in the original pixels even
    when decoding reduced the image (the header of the same bytes gives the original size)."""
    rgb, alpha = decode_with_alpha(data, min_side=max_side)
    mask, method = object_mask(rgb, alpha)
    x0, y0, x1, y1 = bbox(mask)
    scale = max(rgb.shape[:2]) / max(image_size(data))  # orientation-independent
    return ObjectTemplate(rgb[y0:y1, x0:x1].astype(np.float32), np.ascontiguousarray(mask[y0:y1, x0:x1]),
                          [x0, y0, x1, y1], scale, method)


def _resized(t: ObjectTemplate, f: float, mirrored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The object at ``f`` times its size, 128 subtracted like the prepared images (float32), and its mask
    (uint8); ``mirrored``: the mirror image of both, taken after resizing."""
    import cv2

    h, w = t.mask.shape
    size = (max(2, round(w * f)), max(2, round(h * f)))
    tr = cv2.resize(t.rgb, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    tr -= 128.0
    tm = cv2.resize(t.mask.view(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    if mirrored:
        tr, tm = np.ascontiguousarray(tr[:, ::-1]), np.ascontiguousarray(tm[:, ::-1])
    return tr, tm


@dataclass
class Prepared:
    """A generation ready for object matching: its coarse and fine images, float32 with 128 subtracted (the
    squared differences do not change, the sums the correlations add up get smaller), and per pixel the
    sum of their squares over the colour channels."""
    coarse: np.ndarray
    fine: np.ndarray
    f_gen: float  # fine pixels per generation pixel
    coarse_sq: np.ndarray
    fine_sq: np.ndarray
    _spectra: Optional[tuple[np.ndarray, np.ndarray]] = None

    def coarse_spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """Spectra (rfft2) of the coarse image's three channels and of its squares, and of its mirror
        image's, computed once."""
        if self._spectra is None:
            import scipy.fft as sf

            planes = np.concatenate([self.coarse.transpose(2, 0, 1), self.coarse_sq[None]])
            self._spectra = (sf.rfft2(planes, workers=1), sf.rfft2(planes[:, :, ::-1], workers=1))
        return self._spectra


class ObjectMatcher:
    def __init__(self, config: ObjectConfig | None = None) -> None:
        self.config = config or ObjectConfig()

    def prepare(self, img: np.ndarray) -> Prepared:
        """The generation at the coarse and fine sizes (``Prepared``)."""
        import cv2

        h, w = img.shape[:2]
        c = self.config
        out = []
        for side in (c.coarse, c.fine):
            f = side / max(h, w)
            size = (max(1, round(w * f)), max(1, round(h * f)))
            im = cv2.resize(img, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR).astype(np.float32)
            im -= 128.0
            out += [im, np.ascontiguousarray((im * im).sum(-1))]
        return Prepared(out[0], out[2], c.fine / max(h, w), out[1], out[3])

    def _capped(self, r: float, img: np.ndarray, tm: np.ndarray, x: int, y: int, frame: bool = False) -> float:
        """R^2 capped by the share of the object's outline visible in the generation (step 5); ``frame``: by
        the share of the rectangle's frame that is a step (a full-canvas template, at the fine size)."""
        c = self.config
        if r <= 0:
            return r
        if frame:
            h, w = tm.shape
            share = frame_step_share(img, (x, y, x + w, y + h), c.outline_contrast, c.frame_parallels, c.frame_ratio)
        else:
            share = outline_share(img, tm, x, y, c.outline_contrast)
        return min(r, share / c.outline_share)

    def _coarse(self, prepared: Prepared, t: ObjectTemplate) -> list[tuple[float, float, bool, int, int]]:
        """The ``hypotheses`` best distinct coarse placements: (capped R^2, scale, mirrored, y, x)."""
        c = self.config
        coarse = prepared.coarse
        side_c, long_side = max(coarse.shape[:2]), max(t.mask.shape)
        tried = []
        for s in np.geomspace(c.scale_min, c.scale_max, c.scale_steps):
            tr, tm = _resized(t, s * side_c / long_side)
            if tm.sum() >= c.min_pixels and tr.shape[0] <= coarse.shape[0] and tr.shape[1] <= coarse.shape[1]:
                tried.append((float(s), tr, tm))
        maps = r2_maps(prepared.coarse_spectra(), coarse.shape[:2], [(tr, tm) for _, tr, tm in tried], c.min_std)
        found = []
        for mirrored, side in ((False, maps[0]), (True, maps[1])):
            for (s, _, tm), r in zip(tried, side):
                tm = np.ascontiguousarray(tm[:, ::-1]) if mirrored else tm
                for _ in range(2):  # the best two placements at this scale, 4+ px apart
                    y, x = np.unravel_index(int(np.argmax(r)), r.shape)
                    if not np.isfinite(r[y, x]):
                        break
                    found.append((self._capped(float(r[y, x]), coarse, tm, int(x), int(y)), s, mirrored,
                                  int(y), int(x)))
                    r[max(0, y - 3):y + 4, max(0, x - 3):x + 4] = -np.inf
        def near(h: tuple, g: tuple) -> bool:
            return abs(np.log(h[1] / g[1])) <= 0.05 and abs(h[3] - g[3]) + abs(h[4] - g[4]) <= 3

        ranked = sorted(found, key=lambda h: -h[0])
        chosen: list[tuple[float, float, bool, int, int]] = []
        for h in ranked:
            # a mirrored placement at the same place and scale is not another hypothesis (for a symmetric
            # object it scores the same and would take the slot of the next distinct placement) ...
            if all(not near(h, g) for g in chosen):
                chosen.append(h)
                if len(chosen) == c.hypotheses:
                    break
        # ... but it is refined too when the coarse scale cannot tell the two apart (a near-symmetric line
        # drawing with an asymmetric letter in it)
        twins = [max((h for h in ranked if h[2] != g[2] and near(h, g)), key=lambda h: h[0], default=None)
                 for g in chosen]
        return chosen + [t for t, g in zip(twins, chosen) if t is not None and t[0] >= g[0] - c.mirror_margin]

    def match(self, prepared: Prepared, t: ObjectTemplate) -> ObjectMatch:
        c = self.config
        coarse, fine, f_gen = prepared.coarse, prepared.fine, prepared.f_gen
        side_c, side_f = max(coarse.shape[:2]), max(fine.shape[:2])
        long_side = max(t.mask.shape)
        k = side_f / side_c
        top: tuple[float, list[int], bool] = (-np.inf, [0, 0, 0, 0], False)
        for _, s, mirrored, y, x in self._coarse(prepared, t):
            if top[0] >= c.good_enough:
                break  # an earlier placement already matches: the other hypotheses cannot change the verdict
            centre = s * side_f
            sizes = range(int(np.floor(centre * (1 - c.refine))), int(np.ceil(centre * (1 + c.refine))) + 1)
            mid = (round(x * k), round(y * k))  # top-left at fine resolution
            cx = cy = None  # the object's centre found at the middle size
            for px in sorted(sizes, key=lambda v: abs(v - centre)):
                f = px / long_side  # every whole-pixel size: R^2 of detailed objects falls within 1% of scale
                tr, outline_mask = _resized(t, f, mirrored)
                tm = eroded_mask(outline_mask, c.erode)
                th, tw = tm.shape
                if tm.sum() < c.min_pixels:
                    continue
                if cx is None:  # the middle size searches the whole margin, the others +-2 px of its centre
                    gx, gy, mg = mid[0], mid[1], c.margin
                else:
                    gx, gy, mg = round(cx - tw / 2), round(cy - th / 2), 2
                y0, x0 = max(0, gy - mg), max(0, gx - mg)
                y1, x1 = min(fine.shape[0], y0 + th + 2 * mg), min(fine.shape[1], x0 + tw + 2 * mg)
                if y1 - y0 < th or x1 - x0 < tw:
                    continue
                r = r2_map(fine[y0:y1, x0:x1], prepared.fine_sq[y0:y1, x0:x1], tr, tm, c.min_std)
                yy, xx = np.unravel_index(int(np.argmax(r)), r.shape)
                if cx is None:
                    cx, cy = x0 + xx + tw / 2, y0 + yy + th / 2
                score = float(r[yy, xx])
                if score > top[0]:  # the outline of the uneroded mask
                    score = self._capped(score, fine, outline_mask, x0 + int(xx), y0 + int(yy), t.method == "whole")
                if score > top[0]:
                    top = (score, [x0 + xx, y0 + yy, x0 + xx + tw, y0 + yy + th], mirrored)
        if not np.isfinite(top[0]):
            return NO_MATCH
        qb = [int(round(v / f_gen)) for v in top[1]]
        tb = [int(round(v / t.scale)) for v in t.box]
        return ObjectMatch(float(np.clip(top[0], -1.0, 1.0)), qb, tb, top[2])


@dataclass
class ObjectMatches:
    scores: np.ndarray  # (n, K) R^2 per candidate, NaN where the candidate id is -1 or unreadable
    query_boxes: np.ndarray  # (n, K, 4)
    train_boxes: np.ndarray  # (n, K, 4)
    mirrored: np.ndarray  # (n, K) bool
    missing: list[str]
    seconds: float

    @staticmethod
    def concat(parts: Sequence["ObjectMatches"], seconds: float) -> "ObjectMatches":
        """The rows of ``parts`` in order (an engine's parts of one set of rows), ``seconds`` of wall time."""
        return ObjectMatches(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("scores", "query_boxes",
                                                                                         "train_boxes", "mirrored")),
                             sorted({m for p in parts for m in p.missing}), seconds)

    @property
    def top(self) -> np.ndarray:
        """Best object score per image (-1 when no candidate could be compared)."""
        s = np.where(np.isfinite(self.scores), self.scores, -1.0)
        return s.max(axis=1) if s.shape[1] else np.full(len(s), -1.0)


def object_search(load_query: ImageLoader, n: int, cand: np.ndarray, train_paths: Sequence[str], *,
                  matcher: ObjectMatcher | None = None, stage: str = "objects", workers: int | None = None,
                  progress: Optional[ProgressCallback] = None) -> ObjectMatches:
    """Object scores of the candidates ``cand`` (n, K training FAISS ids, -1 = none) in each query."""
    import time

    t0 = time.perf_counter()
    matcher = matcher or ObjectMatcher()
    k = cand.shape[1] if cand.ndim == 2 else 0
    scores = np.full((n, k), np.nan, np.float32)
    qbox = np.zeros((n, k, 4), np.int64)
    tbox = np.zeros((n, k, 4), np.int64)
    mirrored = np.zeros((n, k), bool)
    cache: LoadingCache[ObjectTemplate] = LoadingCache(
        lambda j: object_template(read_location(train_paths[j])),
        lambda j: train_paths[j], capacity=2048)

    def visit(i: int, r: int, prepared: Prepared, t: Optional[ObjectTemplate]) -> None:
        m = matcher.match(prepared, t) if t is not None else NO_MATCH
        if np.isfinite(m.score):
            scores[i, r], qbox[i, r], tbox[i, r], mirrored[i, r] = m.score, m.query_box, m.train_box, m.mirrored

    over_candidates(load_query, n, cand, cache, matcher.prepare, visit, stage=stage, workers=workers,
                    progress=progress)
    return ObjectMatches(scores, qbox, tbox, mirrored, sorted(set(cache.missing)), time.perf_counter() - t0)


def object_rows(readers: Sequence[Callable[[], bytes]], cand: np.ndarray, train_paths: Any, *, config: ObjectConfig,
                max_pixels: int, stage: str = "objects", workers: int | None = None,
                progress: Optional[ProgressCallback] = None) -> ObjectMatches:
    """``object_search`` for images read by ``readers[i]()`` (the job an audit engine runs on rows)."""
    from ..decode import load_image

    return object_search(lambda i: load_image(readers[i], max_pixels, config.fine), len(readers), cand, train_paths,
                         matcher=ObjectMatcher(config), stage=stage, workers=workers, progress=progress)


__all__ = ["NO_MATCH", "ObjectConfig", "ObjectMatch", "ObjectMatcher", "ObjectMatches", "ObjectTemplate", "Prepared",
           "object_rows", "object_search", "object_template"]
