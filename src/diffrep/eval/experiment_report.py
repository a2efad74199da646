"""The experiment's outputs: ``results.csv`` / ``results.md`` (the table), ``similarity.png`` (the paper's
histogram figure) and each run's ``pairs.png`` (generation | rank-1 training image)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import atomic_path

COLUMNS = ["run", "cond", "mitigate", "training_images", "duplicated", "steps", "samples", "replicas",
           "replication_rate", "threshold", "top1_mean", "top1_p95", "reference_top1_mean", "reference_top1_p95",
           "kid_sscd_x1000",
           "dup_matches_per_image", "other_matches_per_image", "dup_nearest_per_image", "other_nearest_per_image",
           "pixel_threshold", "pixel_replication_rate", "pixel_rms_median", "reference_pixel_rms_median",
           "dup_pixel_matches_per_image", "other_pixel_matches_per_image",
           "train_seconds", "steps_per_s", "trained_on"]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_results(kind: str, results: list[dict[str, Any]], out: Path, fpr: float) -> None:
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in results:
            w.writerow([_fmt(r[c]) for c in COLUMNS])
    md_cols = ["run", "cond"] + (["mitigate"] if kind == "caption-mitigation" else []) + [
        "training_images", "steps", "samples", "replicas", "replication_rate", "pixel_replication_rate", "top1_mean",
        "top1_p95", "reference_top1_p95", "pixel_rms_median", "reference_pixel_rms_median", "kid_sscd_x1000"]
    if kind == "duplication":
        md_cols += ["duplicated", "dup_matches_per_image", "other_matches_per_image", "dup_pixel_matches_per_image",
                    "other_pixel_matches_per_image", "dup_nearest_per_image", "other_nearest_per_image"]
    lines = [f"# diffrep experiment {kind}", "",
             f"replicas / replication_rate: generations whose `diffrep audit` verdict exceeds the threshold "
             f"calibrated at {fpr:.0%} FPR on held-out reference images. pixel_replication_rate: generations whose "
             "pixel RMS (0-255, training resolution) to the nearest training image is below the same distance's "
             f"{fpr:.0%} quantile for the held-out images (pixel_rms_median: the generations' median distance; "
             "reference_pixel_rms_median: the held-out images'). top1: SSCD cosine of each generation to its "
             "nearest training image (reference_top1: the same for held-out real images). kid_sscd_x1000: KID "
             "(cubic-kernel unbiased MMD², ×1000) between generations and held-out images on SSCD descriptors "
             "(lower: closer to real data; not Inception KID)." + (
                 " dup/other_matches_per_image: replicas whose rank-1 training match is a duplicated / other "
                 "training image, divided by the number of such images (dup/other_pixel_matches_per_image: the "
                 "same for pixel replicas and their nearest training image); *_nearest_per_image: the same over "
                 "all generations." if kind == "duplication" else ""), "",
             "| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for r in results:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in md_cols) + " |")
    lines += ["", "![similarity](similarity.png)", ""]
    (out / "results.md").write_text("\n".join(lines), encoding="utf-8")
    histogram(results, out / "similarity.png")


def pairs_figure(audit_dir: Path, path: Path, n_flagged: int = 12, n_other: int = 6) -> None:
    """``generation | its rank-1 training image`` pairs from an audit's ``matches.csv``: the flagged
    generations with the lowest p-values first, then the highest-scoring unflagged ones (a strip to check
    the verdicts by eye). Pairs are stacked in rows, scaled up 4x (nearest neighbour)."""
    from PIL import Image

    with open(audit_dir / "matches.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["rank"] == "1" and r["train_path"]]
    flagged = sorted((r for r in rows if r["is_replica"] == "True"), key=lambda r: float(r["p_value"] or 1))
    other = sorted((r for r in rows if r["is_replica"] != "True"), key=lambda r: -float(r["verdict_score"] or 0))
    tile, gap = 128, 6
    chosen, tiles = [], []
    for r in flagged[:n_flagged] + other[:n_other]:
        try:  # a training file moved since indexing (the audit warns about it) leaves its pair out
            pair = [Image.open(r[key]).convert("RGB").resize((tile, tile), Image.NEAREST)
                    for key in ("query_path", "train_path")]
        except OSError:
            continue
        chosen.append(r)
        tiles.append(pair)
    if not chosen:
        return
    sheet = Image.new("RGB", (2 * tile + 3 * gap, len(chosen) * (tile + gap) + gap), "white")
    for i, (r, pair) in enumerate(zip(chosen, tiles)):
        for j, img in enumerate(pair):
            sheet.paste(img, (gap + j * (tile + gap), gap + i * (tile + gap)))
        if r["is_replica"] == "True":  # a red bar left of flagged pairs
            sheet.paste((214, 39, 40), (0, gap + i * (tile + gap), gap - 2, gap + i * (tile + gap) + tile))
    sheet.save(path)


def histogram(results: list[dict[str, Any]], path: Path) -> None:
    from ..report.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.0), sharey=False, squeeze=False)
    bins = np.linspace(0.0, 1.0, 41)
    for ax, r in zip(axes[0], results):
        for key, label, color in (("top1_scores", "generated vs train", "#d62728"),
                                  ("reference_top1_scores", "held-out vs train", "#1f77b4")):
            v = np.clip(np.asarray(r[key]), bins[0], bins[-1])
            ax.hist(v, bins=bins, density=True, alpha=0.45, color=color, edgecolor=color, histtype="stepfilled",
                    label=f"{label} (n={len(v)})")
        ax.set_title(f"{r['run']}: {r['replicas']}/{r['samples']} replicas", fontsize=9)
        ax.set_xlabel("top-1 SSCD cosine to training set", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("density", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
