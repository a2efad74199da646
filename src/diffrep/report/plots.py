"""Figures of an audit (matplotlib, Agg backend): PNG files for papers and slides, embedded in report.html."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..fsutil import atomic_path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _hist(ax: Any, data: Optional[np.ndarray], label: str, color: str, bins: np.ndarray) -> None:
    if data is None or len(data) == 0:
        return
    ax.hist(np.clip(data, bins[0], bins[-1]), bins=bins, density=True, alpha=0.45, color=color,
            label=f"{label} (n={len(data)})", histtype="stepfilled", edgecolor=color)


def similarity_histogram(dist: dict[str, np.ndarray], summary: dict[str, Any], path: Path) -> Optional[Path]:
    """The paper's key figure: top-1 SSCD similarity of generations vs held-out reference vs train-vs-train."""
    q = dist.get("query_top1")
    if q is None or len(q) == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    bins = np.linspace(min(0.0, float(np.nanmin(q))), 1.0, 51)
    _hist(ax, dist.get("background"), "train vs train (background)", "#7f7f7f", bins)
    _hist(ax, dist.get("reference_top1"), "held-out reference vs train", "#1f77b4", bins)
    _hist(ax, q, "generations vs train", "#d62728", bins)
    ax.axvline(0.5, color="black", ls=":", lw=1, label="paper's fixed 0.5")
    if summary.get("verdict_score", "").startswith("global"):
        ax.axvline(summary["calibration"]["threshold"], color="#d62728", ls="--", lw=1.5, label="threshold")
    ax.set_xlabel("similarity to the closest training image (SSCD cosine)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def verdict_histogram(dist: dict[str, np.ndarray], summary: dict[str, Any], path: Path) -> Optional[Path]:
    """Distribution of the verdict score for generations vs the null, with the calibrated threshold."""
    q, null = dist.get("query_verdict"), dist.get("null_verdict")
    if q is None or len(q) == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    fused = summary.get("verdict_score", "").startswith("fused")
    # fused scores are 1 - p: show -log10(1 - s) so the tail is visible
    tr = (lambda x: -np.log10(np.clip(1.0 - np.asarray(x, np.float64), 1e-6, 1.0))) if fused else (lambda x: x)
    allv = np.concatenate([tr(q)] + ([tr(null)] if null is not None and len(null) else []))
    bins = np.linspace(float(allv.min()), float(allv.max()) + 1e-6, 41)
    source = str(summary["calibration"].get("source")).replace("$", "")  # no mathtext from a hand-edited file
    _hist(ax, tr(null) if null is not None else None, f"null ({source})", "#1f77b4", bins)
    _hist(ax, tr(q), "generations", "#d62728", bins)
    ax.axvline(float(tr(np.array([summary["calibration"]["threshold"]]))[0]), color="#d62728", ls="--", lw=1.5,
               label=f"threshold (FPR {summary['calibration'].get('target_fpr') or 'fixed'})".replace("$", ""))
    ax.set_xlabel("-log10 p (fused SSCD + verification)" if fused else "verdict score (SSCD cosine)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
