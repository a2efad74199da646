"""Rendering of ``diffrep bench run`` results: the ranking table (markdown) and PR-curve figures."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...fsutil import atomic_path

RANK_METRIC = "mAP"


def average_ranks(values: dict[str, dict[str, float]], kinds: list[str]) -> dict[str, float]:
    """Mean over kinds of each descriptor's rank (1 = best; tied values share their mean rank)."""
    names = list(values)
    ranks: dict[str, list[float]] = {n: [] for n in names}
    for kind in kinds:
        col = np.array([values[n].get(kind, float("nan")) for n in names])
        col = np.nan_to_num(col, nan=-np.inf)
        for n, v in zip(names, col):
            better = float(np.sum(col > v))
            equal = float(np.sum(col == v))
            ranks[n].append(better + (equal + 1) / 2)
    return {n: float(np.mean(r)) if r else float("nan") for n, r in ranks.items()}


def _table(result: Any, metric: str, with_rank: bool) -> list[str]:
    kinds = list(result.kinds)
    names = [d for d in result.descriptors if not (with_rank and d.endswith("+norm"))]
    vals: dict[str, dict[str, float]] = {d: {} for d in names}
    for r in result.rows:
        if r["metric"] == metric and r["descriptor"] in vals:
            vals[r["descriptor"]][r["kind"]] = float(r["value"])
    head = ["Descriptor"] + kinds + ["all"] + (["Average Rank"] if with_rank else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranks = average_ranks(vals, kinds) if with_rank else {}
    order = sorted(vals, key=lambda d: ranks.get(d, 0.0)) if with_rank else list(vals)
    for d in order:
        best = {k: max(v.get(k, -1) for v in vals.values()) for k in kinds + ["all"]}
        cells = []
        for k in kinds + ["all"]:
            v = vals[d].get(k)
            txt = "-" if v is None else f"{100 * v:.1f}"
            cells.append(f"**{txt}**" if v is not None and v == best[k] else txt)
        if with_rank:
            cells.append(f"{ranks[d]:.2f}")
        lines.append("| " + " | ".join([f"`{d}`"] + cells) + " |")
    return lines


def ranking_table(result: Any) -> str:
    """Markdown: the seed paper's layout (rows: descriptors, columns: kinds, Average Rank by mAP) plus
    tables of micro-AP and recall@1. Values in percent; best per column in bold."""
    parts = ["## mAP (%) per query kind, ranked", "",
             f"Average Rank: mean over query kinds of each descriptor's rank by {RANK_METRIC} (1 = best). "
             "Score normalization (+norm) shifts each query's scores by a constant, so its per-query ranking "
             "and mAP equal its base descriptor's; it appears in the pooled tables below.", ""]
    parts += _table(result, RANK_METRIC, True)
    for metric, title in (("muAP", "micro-AP (ISC2021 muAP, %)"), ("recall@1", "recall@1 (%)"),
                          ("recall@P90", "recall at 90% precision (%)")):
        parts += ["", f"## {title}", ""] + _table(result, metric, False)
    if result.seconds:
        parts += ["", "Seconds per descriptor (embedding references and queries, search, metrics): "
                  + ", ".join(f"`{d}` {s:.1f}" for d, s in result.seconds.items())]
    return "\n".join(parts) + "\n"


def curves_from_predictions(result_dir: Path, manifest: list[dict[str, Any]]
                            ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Pooled PR curves per descriptor and kind, re-read from ``predictions/*.csv`` (re-plotting a
    finished run needs no model)."""
    import csv

    from .metrics import pr_curve

    truth = {r["query"]: {r["source"]} for r in manifest}
    kind_of = {r["query"]: r["kind"] for r in manifest}
    kinds = list(dict.fromkeys(kind_of.values()))
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for path in sorted((Path(result_dir) / "predictions").glob("*.csv")):
        preds: dict[str, list[tuple[str, float]]] = {}
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                preds.setdefault(row["query"], []).append((row["reference"], float(row["score"])))
        curves[path.stem] = {}
        for kind in kinds + ["all"]:
            t = {q: v for q, v in truth.items() if kind == "all" or kind_of[q] == kind}
            curves[path.stem][kind] = pr_curve({q: v for q, v in preds.items() if q in t}, t)
    return curves


def pr_figures(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], kinds: list[str],
               out_dir: Path) -> list[Path]:
    """One PNG per query kind (and ``all``): pooled precision-recall curves, one line per descriptor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    bases = list(dict.fromkeys(n.removesuffix("+norm") for n in curves))
    colours = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")
    for kind in kinds + ["all"]:
        fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
        for name, per_kind in curves.items():
            rec, prec = per_kind.get(kind, (np.zeros(0), np.zeros(0)))
            if len(rec):
                base = name.removesuffix("+norm")
                ax.plot(rec, prec, label=name, lw=1.5, color=colours(bases.index(base)),
                        ls="--" if name.endswith("+norm") else "-")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{kind}: pooled precision-recall")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        path = out_dir / f"pr_{kind}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths
