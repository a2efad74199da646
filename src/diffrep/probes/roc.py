"""Detection metrics where ground truth exists: AUC, TPR at a fixed FPR, bootstrap confidence intervals.

Higher scores mean "positive" (memorized, member). TPR at FPR a follows Wen et al.'s harness: the TPR of the
last ROC operating point whose FPR stays below a (thresholds at the distinct scores; a threshold admits
scores >= it). Intervals are percentile bootstraps that resample positives and negatives separately.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (the Mann-Whitney statistic)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    both = np.concatenate([pos, neg])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    """The largest TPR among thresholds whose FPR is strictly below ``fpr``: at most k = ceil(fpr N) - 1
    negatives may reach the threshold, so it lies just above the (k+1)-th largest negative score."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    k = int(np.ceil(fpr * len(neg) - 1e-12)) - 1
    if k >= len(neg):
        return 1.0
    v = np.sort(neg)[::-1][k]
    return float(np.mean(pos > v))


def bootstrap(pos: np.ndarray, neg: np.ndarray, stat: Any, n: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``stat(pos, neg)`` over ``n`` resamples (positives and negatives apart)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = [stat(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
            for _ in range(n)]
    lo, hi = np.percentile(vals, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def detection_metrics(pos: np.ndarray, neg: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUC and TPR at 1% and 0.1% FPR, each with its 95% bootstrap interval, and the counts."""
    out: dict[str, Any] = {"positives": int(len(pos)), "negatives": int(len(neg))}
    for name, fn in (("auc", auc), ("tpr_at_1pct_fpr", lambda p, q: tpr_at_fpr(p, q, 0.01)),
                     ("tpr_at_0.1pct_fpr", lambda p, q: tpr_at_fpr(p, q, 0.001))):
        out[name] = fn(pos, neg)
        out[name + "_ci"] = list(bootstrap(pos, neg, fn, n_boot, seed))
    return out


def paired_auc_gain(pos: np.ndarray, neg: np.ndarray, base_pos: np.ndarray, base_neg: np.ndarray, n: int = 1000,
                    seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """AUC of (``pos``, ``neg``) minus AUC of (``base_pos``, ``base_neg``), two scores of the same images (rows
    aligned), with the percentile interval over ``n`` resamples of the images drawn once for both scores: a gain
    whose interval excludes 0 is more than resampling noise."""
    pos, neg, base_pos, base_neg = (np.asarray(a, np.float64) for a in (pos, neg, base_pos, base_neg))
    if pos.shape != base_pos.shape or neg.shape != base_neg.shape:
        raise ValueError("paired_auc_gain needs two scores of the same positives and negatives")
    gain = auc(pos, neg) - auc(base_pos, base_neg)
    if not len(pos) or not len(neg):
        return {"gain": float("nan"), "ci": [float("nan"), float("nan")]}
    # both scores as the columns of one row per image: ``bootstrap`` resamples the rows, so each draw holds the
    # same images for both
    lo, hi = bootstrap(np.column_stack([pos, base_pos]), np.column_stack([neg, base_neg]),
                       lambda p, q: auc(p[:, 0], q[:, 0]) - auc(p[:, 1], q[:, 1]), n, seed, level)
    return {"gain": float(gain), "ci": [lo, hi]}
