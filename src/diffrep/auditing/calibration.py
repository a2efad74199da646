"""What a replica verdict means: thresholds at a target false-positive rate, and empirical p-values.

A verdict is the claim "this generation is closer to a training image than real, unseen images usually
are". The null distribution is, in order of preference (DESIGN.md, "Calibration"):

1. ``reference``: top-1 scores of held-out real images (never trained on) against the training index;
2. ``background``: train-vs-train second-nearest-neighbour scores (Somepalli et al. 2023's background,
   as in somepago/DCR ``diff_retrieval.py``; the nearest neighbour is the image itself);
3. ``fixed``: the paper's 0.5 for SSCD descriptors, labelled as uncalibrated;
and ``--threshold`` overrides all of them (``explicit``).

Threshold rule: with null scores n_1 >= ... >= n_N and target FPR a, the threshold is n_(k+1) with
k = floor(a*N), and a score is a replica when it is strictly greater. Then at most k null scores exceed
it: the empirical FPR on the null is <= a. The p-value of a score s is (1 + #{n_i >= s}) / (N + 1), the
standard conservative permutation p-value; a replica verdict at FPR a implies p <= (k + 1)/(N + 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationError

PAPER_SSCD_THRESHOLD = 0.5


@dataclass
class Calibration:
    threshold: float
    source: str  # "reference" | "background" | "explicit" | "fixed"
    target_fpr: float | None
    null: np.ndarray  # sorted ascending null scores (empty for explicit/fixed without a null)
    null_fpr: float | None = None  # empirical FPR of the threshold on the null
    warnings: list[str] = field(default_factory=list)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        return empirical_p_values(self.null, scores)

    def is_replica(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def describe(self) -> dict[str, Any]:
        return {
            "threshold": float(self.threshold), "source": self.source, "target_fpr": self.target_fpr,
            "null_size": int(len(self.null)),
            "null_fpr_at_threshold": None if self.null_fpr is None else float(self.null_fpr),
            "warnings": list(self.warnings),
        }


def threshold_at_fpr(null: np.ndarray, fpr: float) -> tuple[float, list[str]]:
    """The smallest order statistic t of ``null`` with #{null > t} <= floor(fpr * N)."""
    if not 0 < fpr < 1:
        raise CalibrationError(f"target false-positive rate must be between 0 and 1, got {fpr}")
    null = np.sort(np.asarray(null, np.float64))[::-1]
    n = len(null)
    if n == 0:
        raise CalibrationError("cannot calibrate a threshold from an empty null distribution; "
                               "give --reference images or an explicit --threshold")
    warnings = []
    k = int(np.floor(fpr * n + 1e-9))
    if k == 0:
        warnings.append(f"{n} null scores cannot resolve a false-positive rate of {fpr:g} (need at least "
                        f"{int(np.ceil(1 / fpr))}); the threshold is the largest null score, so the "
                        "achieved rate on the null is 0 but its uncertainty is about 1/N = "
                        f"{1 / n:.3g}. Give more reference images.")
    return float(null[k]) if k < n else float(null[-1]), warnings


def empirical_p_values(null: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{null >= s}) / (N + 1) per score; NaN when there is no null."""
    scores = np.asarray(scores, np.float64)
    null = np.sort(np.asarray(null, np.float64))
    if len(null) == 0:
        return np.full(scores.shape, np.nan)
    ge = len(null) - np.searchsorted(null, scores, side="left")
    return (1.0 + ge) / (len(null) + 1.0)


def calibrate(*, reference: np.ndarray | None = None, background: np.ndarray | None = None,
              fpr: float = 0.01, threshold: float | None = None, descriptor_name: str = "",
              min_null: int = 20) -> Calibration:
    """Choose the threshold by the preference order in the module docstring."""
    if reference is not None and len(reference):
        null, source = np.sort(np.asarray(reference, np.float64)), "reference"
    elif background is not None and len(background) >= min_null:
        null, source = np.sort(np.asarray(background, np.float64)), "background"
    else:
        null, source = np.zeros(0), ""
    warnings: list[str] = []
    if threshold is not None:
        t = float(threshold)
        cal = Calibration(t, "explicit", None, null)
    elif source:
        t, warnings = threshold_at_fpr(null, fpr)
        cal = Calibration(t, source, fpr, null)
    elif descriptor_name.startswith("sscd"):
        cal = Calibration(PAPER_SSCD_THRESHOLD, "fixed", None, null)
        warnings.append("no reference images and too few training images for a background: using the "
                        "paper's fixed SSCD threshold 0.5, which is NOT calibrated (on low-resolution or "
                        "single-domain data unrelated images often exceed it). Give --reference.")
    else:
        raise CalibrationError(f"cannot calibrate {descriptor_name!r} scores: give --reference images, "
                               f"index at least {min_null} training images, or set --threshold.")
    if len(null):
        cal.null_fpr = float(np.mean(null > cal.threshold))
    cal.warnings = warnings
    return cal


def fuse_min_p(null_channels: list[np.ndarray], channels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Fuse several scores into one by Tippett's rule: 1 - min over channels of the empirical p-value.

    ``null_channels[c][i]`` is channel c of null item i (paired across channels); ``channels[c][j]`` the
    same for query j. A query's p-value per channel is computed against the whole null; a null item's
    against the null *without itself* (leave-one-out), so null and queries are treated alike and the fused
    null is a valid null for ``threshold_at_fpr``/``empirical_p_values``. Returns (fused null, fused queries),
    both in [0, 1], larger = more replica-like."""
    n = len(null_channels[0])
    if n == 0:
        return np.zeros(0), np.full(len(channels[0]), np.nan)
    p_q = np.ones(len(channels[0]))
    p_n = np.ones(n)
    for null, x in zip(null_channels, channels):
        null = np.asarray(null, np.float64)
        p_q = np.minimum(p_q, empirical_p_values(null, np.asarray(x, np.float64)))
        srt = np.sort(null)
        ge = n - np.searchsorted(srt, null, side="left") - 1  # others >= self (self excluded)
        p_n = np.minimum(p_n, (1.0 + ge) / n)
    return 1.0 - p_n, 1.0 - p_q
