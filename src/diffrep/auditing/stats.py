"""Summary statistics of top-1 scores, as the replication literature reports them (somepago/DCR)."""
from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"p50": 50, "p75": 75, "p90": 90, "p95": 95, "p99": 99}


def score_stats(scores: np.ndarray, paper_threshold: float = 0.5) -> dict[str, Any]:
    """n, mean, std, p50..p99, max and the share above the paper's fixed 0.5 (reported for comparison)."""
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return {"n": 0}
    out: dict[str, Any] = {"n": int(len(s)), "mean": float(s.mean()), "std": float(s.std())}
    for name, q in QUANTILES.items():
        out[name] = float(np.percentile(s, q))
    out["max"] = float(s.max())
    out[f"share_above_{paper_threshold:g}"] = float(np.mean(s > paper_threshold))
    return out
