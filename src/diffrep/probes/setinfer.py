"""Dataset inference: was this *set* of images trained on? A one-sided permutation test against a reference.

Following the idea of CDI (Dubinski et al., 2025: aggregate membership features over a set of images from
one owner and test against held-out data of the same source), each image gets membership features of
``probes.mia`` (the caller's methods at each of their timesteps, all oriented "higher = member-like";
``diffrep membership --set`` uses the loss alone unless ``--method`` asks for others: SecMI's and PIA's
features also rise on JPEG-compressed images, and with them the test calls re-compressed non-members "trained
on", docs/results/2026-12-membership.md).

Difficulty calibration (``probes.difficulty``: the idea of Watson et al., ICLR 2022, with the image's own
statistics in place of reference models): each feature is replaced by its residual after a least-squares fit
on the images' grayscale mean, standard deviation and mean gradient (steps above 4 of 255 levels) and their
squares, fitted over the pooled set and reference (``--difficulty none`` leaves the features as they are). Then
each feature is standardized on the pooled images and the per-image evidence is the sum of the standardized
features. The statistic is the set's mean evidence minus the reference's; its p-value is the share of
``permutations`` random relabellings of the pooled images whose statistic is at least as large,
(1 + #{>=}) / (P + 1). The fit and the standardization are functions of the pooled values only, so they do not
change when the labels are permuted: when the set and the reference are exchangeable (both drawn from a
distribution the model did not train on) the p-value is valid at every level, P(p<=a) <= a. CDI fits feature
weights on a split of the data; a fixed sum needs no split, so every image counts in the test.

``smallest_set`` answers "how many of these images does the test need?": for growing sizes it draws
``draws`` random subsets of the set, tests each against the whole reference and reports the first size
whose median p-value is below ``alpha``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .difficulty import FLOOR_WORDS, without_difficulty

KEYS_PER_CHUNK = 1 << 22  # random keys drawn at a time by the permutation test
SIZES = (5, 10, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000)
STATISTIC = ("mean over the set minus mean over the reference of the per-image sum of pooled-standardized "
             "membership features, each first freed of what the images' own statistics (grayscale mean, spread "
             f"and mean gradient of {FLOOR_WORDS}, to the second degree) predict of it over the pooled images; "
             "one-sided permutation p-value")
STATISTIC_PLAIN = ("mean over the set minus mean over the reference of the per-image sum of pooled-standardized "
                   "membership features; one-sided permutation p-value")


def evidence(set_feats: np.ndarray, ref_feats: np.ndarray, set_stats: Optional[np.ndarray] = None,
             ref_stats: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image evidence (sum of pooled z-scores) of the set's and the reference's images; features are
    columns, rows images. With the images' statistics (``difficulty.image_statistics``), each feature is first
    replaced by its residual after a least-squares fit on them over the pooled images (module docstring)."""
    both = np.vstack([set_feats, ref_feats]).astype(np.float64)
    if set_stats is not None and ref_stats is not None:
        both = without_difficulty(both, np.vstack([set_stats, ref_stats]).astype(np.float64))
    sd = both.std(axis=0)
    z = (both - both.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    e = z.sum(axis=1)
    return e[:len(set_feats)], e[len(set_feats):]


def permutation_p(set_e: np.ndarray, ref_e: np.ndarray, permutations: int = 9999,
                  rng: Optional[np.random.Generator] = None) -> tuple[float, float]:
    """(statistic, one-sided permutation p-value) of mean(set) - mean(reference)."""
    rng = rng or np.random.default_rng(0)
    pooled = np.concatenate([set_e, ref_e])
    n, total = len(set_e), pooled.sum()
    stat = set_e.mean() - ref_e.mean()
    # the set's mean under relabelling: the images with the n smallest of uniform random keys form a uniform
    # random n-subset (argpartition finds them in linear time; the smaller side is summed); a bounded number of
    # keys at a time
    ge, done = 0, 0
    m = len(pooled) - n
    rows = max(1, min(2000, KEYS_PER_CHUNK // len(pooled)))
    while done < permutations:
        k = min(rows, permutations - done)
        part = np.argpartition(rng.random((k, len(pooled))), n - 1, axis=1)
        s = pooled[part[:, :n]].sum(axis=1) if n <= m else total - pooled[part[:, n:]].sum(axis=1)
        perm = s / n - (total - s) / m
        ge += int(np.sum(perm >= stat - 1e-12))
        done += k
    return float(stat), (1.0 + ge) / (permutations + 1.0)


def set_test(set_feats: np.ndarray, ref_feats: np.ndarray, *, set_stats: Optional[np.ndarray] = None,
             ref_stats: Optional[np.ndarray] = None, alpha: float = 0.01, permutations: int = 9999,
             draws: int = 20, seed: int = 0) -> dict[str, Any]:
    """The test of the module docstring (with the images' statistics when given, as ``evidence`` takes them)
    and the smallest set size reaching ``alpha`` (None if none does)."""
    rng = np.random.default_rng(seed)
    set_e, ref_e = evidence(set_feats, ref_feats, set_stats, ref_stats)
    stat, p = permutation_p(set_e, ref_e, permutations, rng)
    curve = []
    smallest = None
    for size in [s for s in SIZES if s < len(set_e)] + [len(set_e)]:
        ps = []
        for _ in range(draws if size < len(set_e) else 1):
            pick = rng.choice(len(set_feats), size, replace=False)
            se, re = evidence(set_feats[pick], ref_feats, None if set_stats is None else set_stats[pick], ref_stats)
            ps.append(permutation_p(se, re, min(permutations, 999), rng)[1])
        med = float(np.median(ps))
        curve.append({"n_images": int(size), "median_p_value": med, "draws": len(ps)})
        if smallest is None and med < alpha:
            smallest = int(size)
    return {"statistic": stat, "p_value": p, "permutations": permutations, "subsets": curve,
            "smallest_set_for_alpha": smallest}
