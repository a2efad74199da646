"""Evidence channels: the scores a verdict is made of, one typed list.

Each channel is one kind of evidence that a generation copies a training image, scored for the generations
and, the same way, for the null images (held-out reference images, else a sample of the training set against
the rest of it). ``SPECS`` is the only place a channel is declared: its name, the ``matches.csv`` column that
holds a candidate's score, its description, whether it may decide alone and whether the specificity rule
gates it. The fusion (``matching.calibration.fuse_channels``), the candidate order (``evidence.py``), the
summary and ``scores.npz`` all read this list, so a sixth channel is one more line here and the stage that
computes it (``scoring.py``).

- ``global``: the SSCD top-1 cosine (the paper's statistic);
- ``verified``: the aligned edge correlation of the best verified candidate (``matching.verify``);
- ``region``: the best window cosine (``--partial``, ``partial.py``);
- ``pixel``: the blurred-intensity correlation of the best verified candidate;
- ``object``: the masked template R^2 of a region candidate's object found in the generation (``objects.py``).

The SSCD cosine, the edge score and the region cosine are each fooled by look-alikes that share a drawn
part, so they must agree (the fused p-value is the geometric mean of the two smallest); the pixel-level
channels (``alone``) compare the whole content's intensities at one alignment and may decide on their own,
from ``ALONE_FLOOR`` (0.5) on: below it, R^2 or a correlation is not evidence of a copy, however far below it
the null's tail lies (an unseen bull scored 0.15 against a training coconut whose null reached 0.12).
The gated channels are void (p = 1) for an image none of whose verified candidates the global or region
score singles out (``specificity.py``), for the generations and the null alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..defaults import DEFAULTS
from ..matching.calibration import fuse_channels


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    column: str  # the matches.csv column holding a candidate's score on this channel
    label: str  # what the score is ({kv}: the number of verified candidates)
    alone: bool = False  # pixel-level: may decide alone; its tail is fitted on -log(1 - s)
    gated: bool = False  # void where no verified candidate is specific (specificity.py)

    def description(self, kv: int) -> str:
        return self.label.format(kv=kv)


SPECS: tuple[ChannelSpec, ...] = (
    ChannelSpec("global", "score", "SSCD top-1 cosine"),
    ChannelSpec("verified", "verify_score", "verified score (aligned gradient correlation, best of the top {kv})",
                gated=True),
    ChannelSpec("region", "region_score", "region score (best window cosine)"),
    ChannelSpec("pixel", "pixel_score", "pixel score (blurred-intensity correlation, best of the top {kv})",
                alone=True, gated=True),
    ChannelSpec("object", "object_score", "object score (masked template R^2, best of the region candidates)",
                alone=True),
)
BY_NAME = {s.name: s for s in SPECS}
PIXEL_LEVEL = tuple(s.name for s in SPECS if s.alone)  # may decide alone; fused on -log(1 - s)
GATED = tuple(s.name for s in SPECS if s.gated)  # count only for a specific candidate
COPY_LIKE = DEFAULTS["audit"]["copy_like"]  # a pixel-level score (object R^2, blurred-intensity correlation)
# this high looks like a copy
LOOK_ALIKE = DEFAULTS["audit"]["look_alike"]  # a reference image this close (SSCD cosine) to a training image
# may share its drawing (a template, a series): named when it sets the threshold
ALONE_FLOOR = DEFAULTS["audit"]["alone_floor"]  # a pixel-level score decides alone only from this level on:
# R^2 = 0.5 is the object explaining half its own variance (set from that meaning, not fitted)


@dataclass
class Evidence:
    """One set of images scored by the audit's stages: per channel, each image's best score (channels the
    audit did not compute are absent), and the stage results behind them."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    void: Optional[np.ndarray] = None  # (n,) bool: the gated channels do not count (specificity)
    allowed: Optional[np.ndarray] = None  # (n, kv) bool: which verified candidates are specific
    reranked: Any = None  # matching.rerank.Reranked of the verified candidates
    regions: Any = None  # partial.RegionMatches
    objects: Any = None  # objects.ObjectMatches
    ids: Optional[np.ndarray] = None  # (n, k) global candidates' FAISS ids, best first
    topk: Optional[np.ndarray] = None  # (n, k) their SSCD cosines

    def get(self, name: str) -> Optional[np.ndarray]:
        return self.scores.get(name)

    def __len__(self) -> int:
        return len(self.scores["global"]) if "global" in self.scores else 0

    def concat(self, other: "Evidence") -> "Evidence":
        """This set's images followed by ``other``'s: channel scores both have, and the void masks."""
        void = None
        if self.void is not None or other.void is not None:
            void = np.concatenate([np.zeros(len(e), bool) if e.void is None else np.asarray(e.void, bool)
                                   for e in (self, other)])
        return Evidence({k: np.concatenate([v, other.scores[k]]) for k, v in self.scores.items() if k in other.scores},
                        void)

    def select(self, keep: np.ndarray) -> "Evidence":
        """The images ``keep`` (a boolean mask) of this set: channel scores and void mask only."""
        return Evidence({k: v[keep] for k, v in self.scores.items()},
                        None if self.void is None else self.void[keep])


@dataclass
class Channel:
    """A channel the fusion uses: its spec, the null's and the generations' scores, and the void masks."""

    spec: ChannelSpec
    null: np.ndarray
    queries: np.ndarray
    null_void: Optional[np.ndarray] = None
    query_void: Optional[np.ndarray] = None


def channels(null: Evidence, queries: Evidence) -> list[Channel]:
    """The channels both sets have, in ``SPECS`` order; gated ones carry the void masks when both have them."""
    voids = null.void is not None and queries.void is not None
    return [Channel(s, null.scores[s.name], queries.scores[s.name],
                    null.void if voids and s.gated else None, queries.void if voids and s.gated else None)
            for s in SPECS if null.get(s.name) is not None and queries.get(s.name) is not None]


def fuse(chans: list[Channel]) -> tuple[np.ndarray, np.ndarray]:
    """(fused null, fused generations): ``matching.calibration.fuse_channels`` over ``chans``."""
    alone = tuple(i for i, c in enumerate(chans) if c.spec.alone)
    void = {i: (c.null_void, c.query_void) for i, c in enumerate(chans) if c.null_void is not None}
    return fuse_channels([c.null for c in chans], [c.queries for c in chans], alone=alone, saturating=alone,
                         void=void or None, alone_floor=ALONE_FLOOR)


def describe(chans: list[Channel], kv: int, fused: bool, partial: bool, voided: bool) -> str:
    """``summary.json`` ``verdict_score``: what the thresholded score is."""
    if fused:
        alone = [c.spec.description(kv).split(" (")[0] for c in chans if c.spec.alone]
        rest = [c.spec.description(kv) for c in chans if not c.spec.alone]
        text = (f"fused: 1 - min of the geometric mean of the two smallest p-values of ({'; '.join(rest)})"
                + (f" and the own p-values of the {' and the '.join(alone)} where they are >= {ALONE_FLOOR}"
                   if alone else "")
                + " against the null (smooth-tailed conformal p-values, leave-one-out for the null)")
        if voided:
            text += ("; the verified and pixel p-values are 1 for an image none of whose verified candidates is "
                     "specific (summary specificity)")
        return text
    if partial:
        return "global: best of the SSCD top-1 cosine and the region score (explicit threshold)"
    return "global: SSCD top-1 cosine"


def copy_like(pixel: np.ndarray | None, obj: np.ndarray | None, n: int) -> np.ndarray:
    """Which of ``n`` images have a pixel-level score (blurred-intensity correlation or object R^2)
    >= ``COPY_LIKE``: a region that reproduces a training image's pixels."""
    out = np.zeros(n, bool)
    for c in (pixel, obj):
        if c is not None:
            out |= np.nan_to_num(np.asarray(c, np.float64), nan=-1.0) >= COPY_LIKE
    return out
