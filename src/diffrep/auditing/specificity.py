"""Specificity: pixel evidence counts for a candidate that retrieval singles out among the training images.

The verified and pixel scores compare a generation with one candidate at one alignment. On simple line
art they are fooled by look-alike sets: one author's warning signs share the triangle, an icon theme its
frame, and a blurred triangle with a different pictogram still correlates ~0.8 with its sibling. Such a
generation is about as close to several *different* training images as to its best one, while a copy of a
training image is closer to its source than to anything else in the training set (its near-duplicates
aside). The margin of a candidate is its score minus the best score of a candidate of the same query that
is *not* a near-duplicate of it (training-vector cosine < ``same``): SSCD's score normalization
(Pizzi et al., CVPR 2022: subtract the query's similarity to a background set) with the training index itself as the
background and the candidate's own near-duplicates left out of it, or Lowe's ratio test at the level of
whole images.

A candidate is *specific* when its SSCD global cosine or its region score (best window) beats every
distinct candidate by at least ``margin``. With ``gate_pixel_channels`` the verified and pixel channels
only count specific candidates, and candidates whose pixel score is ``evidence.COPY_LIKE`` or more (a
pixel-exact reproduction is specific by itself, whatever the retrieval scores); a query with neither gets
0, the value of a query with nothing verified. The reference (or train-vs-train) null goes through the same
gate, so the calibration contract is unchanged. The object and region channels are not gated: the object
matcher already looks for one training image's object, and its copies stand far above their competitors.

Lists are top-k lists, so a distinct training image that is not listed scores at most the lowest listed
score: when a row holds no distinct candidate the margin is taken against that lowest score (a lower
bound on the true margin: conservative).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError
from .channels import COPY_LIKE
from ..matching.rerank import best_scores

MARGIN = DEFAULTS["audit"]["specificity_margin"]  # a specific candidate beats the best distinct one by this much
SAME = 0.9  # training images whose SSCD cosine is at least this are one image (recolours, resizes, copies)

VectorLookup = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SpecificityConfig:
    margin: float = MARGIN
    same: float = SAME

    def __post_init__(self) -> None:
        if not (self.margin >= 0 and 0 < self.same <= 1):
            raise DiffrepError(f"specificity margin must be >= 0 and the near-duplicate cosine in (0, 1], got "
                               f"margin {self.margin}, same {self.same}")

    def describe(self) -> dict[str, Any]:
        return {"margin": self.margin, "same": self.same,
                "rule": "verified and pixel scores count only for candidates whose SSCD global cosine or region "
                        f"score beats every candidate that is not a near-duplicate (training cosine < {self.same}) "
                        f"by >= {self.margin}, or whose pixel score is >= {COPY_LIKE}"}


def _unit_vectors(ids: np.ndarray, vectors: VectorLookup) -> dict[int, np.ndarray]:
    uniq = np.unique(ids[ids >= 0])
    if not len(uniq):
        return {}
    return dict(zip(uniq.tolist(), np.asarray(vectors(uniq), np.float32)))


def distinct_margins(scores: np.ndarray, ids: np.ndarray, vectors: VectorLookup | dict[int, np.ndarray],
                     same: float = SAME) -> np.ndarray:
    """(n, k) per candidate: its score minus the best score of the row's other candidates that are not its
    near-duplicates (cosine of their stored vectors < ``same``); against the row's lowest score when every
    other candidate is a near-duplicate; +inf for a row's only candidate; NaN where the candidate is
    missing (id -1 or a non-finite score). ``vectors``: FAISS ids -> stored unit vectors, or such a dict."""
    scores = np.asarray(scores, np.float64)
    ids = np.asarray(ids, np.int64)
    vec = vectors if isinstance(vectors, dict) else _unit_vectors(ids, vectors)
    out = np.full(scores.shape, np.nan)
    for i in range(len(scores)):
        ok = np.flatnonzero((ids[i] >= 0) & np.isfinite(scores[i]))
        if not len(ok):
            continue
        if len(ok) == 1:
            out[i, ok[0]] = np.inf
            continue
        v = np.stack([vec[int(ids[i, c])] for c in ok])
        near = (v @ v.T) >= same
        s = scores[i, ok]
        for a, c in enumerate(ok):
            others = np.arange(len(ok)) != a
            distinct = others & ~near[a]
            rival = s[distinct].max() if distinct.any() else s[others].min()
            out[i, c] = s[a] - rival
    return out


def specific(margin_sets: list[tuple[np.ndarray, np.ndarray]], cand: np.ndarray, margin: float) -> np.ndarray:
    """(n, K) bool: whether candidate ``cand[i, c]`` has a margin >= ``margin`` in any of ``margin_sets``
    (pairs of (ids, margins), each (n, k_s); a candidate absent from a set has no margin there)."""
    out = np.zeros(cand.shape, bool)
    for ids, marg in margin_sets:
        for i in range(len(cand)):
            row = {int(j): m for j, m in zip(ids[i], marg[i]) if j >= 0 and not np.isnan(m)}
            for c, j in enumerate(cand[i]):
                if j >= 0 and row.get(int(j), -np.inf) >= margin:
                    out[i, c] = True
    return out


def gated_best(values: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``values`` (n, K; NaN = not compared): (the best over ``allowed`` candidates, or over all
    when none is allowed; 0 when nothing was compared, as ``rerank.best_scores``) and whether the row's
    evidence is void (compared, but no allowed candidate)."""
    ok = np.isfinite(values)
    sel = ok & allowed
    void = ok.any(axis=1) & ~sel.any(axis=1)
    pick = np.where(void[:, None], ok, sel)
    return best_scores(np.where(pick, values, np.nan)).astype(np.float32), void


def gate_pixel_channels(verified: np.ndarray, pixel: np.ndarray, cand: np.ndarray, global_scores: np.ndarray,
                        global_ids: np.ndarray, region_scores: np.ndarray | None, region_ids: np.ndarray | None,
                        vectors: VectorLookup, config: SpecificityConfig = SpecificityConfig(),
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(verified channel, pixel channel, void, (n, K) allowed) for verified candidates ``cand`` (n, K) with
    per-candidate ``verified`` and ``pixel`` scores, margins from the global top-k (``global_scores``,
    ``global_ids``) and, when given, the region candidates. A channel value is the best over allowed
    candidates (specific, or pixel >= ``COPY_LIKE``); ``void`` rows have none, their value is the plain best
    and their p-value is set to 1 in the fusion (``calibration.fuse_channels``: ``void``)."""
    all_ids = [global_ids] + ([region_ids] if region_ids is not None else [])  # cand is within global_ids
    vec = _unit_vectors(np.concatenate([np.asarray(a, np.int64).ravel() for a in all_ids]), vectors)
    sets = [(global_ids, distinct_margins(global_scores, global_ids, vec, config.same))]
    if region_scores is not None and region_ids is not None:
        sets.append((region_ids, distinct_margins(region_scores, region_ids, vec, config.same)))
    allowed = specific(sets, cand, config.margin) | (np.nan_to_num(pixel, nan=-1.0) >= COPY_LIKE)
    v, void = gated_best(verified, allowed)
    px, _ = gated_best(pixel, allowed)
    return v, px, void, allowed


__all__ = ["MARGIN", "SAME", "SpecificityConfig", "distinct_margins", "gate_pixel_channels", "gated_best",
           "specific"]
