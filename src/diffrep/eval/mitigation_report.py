"""Tables and the replication-versus-quality figure of ``diffrep experiment mitigation``."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..fsutil import write_text

COLUMNS = ("row", "kind", "replica_rate", "replica_rate_ci", "replica_reduction", "prompts_copied", "sscd_mean",
           "sscd_top3", "sscd_share_above_0.5", "kid_x1000", "kid_ci_x1000", "kid_change_ci_x1000", "kid_kept",
           "adherence", "adherence_ci", "adherence_change", "adherence_change_ci", "adherence_kept", "quality_kept",
           "seconds_per_image", "memorized_generations",
           "ordinary_generations")


def pareto(rows: list[dict[str, Any]]) -> list[str]:
    """Rows no other row beats on both replica rate and KID (lower is better on both)."""
    front = []
    for r in rows:
        if not any(o is not r and o["replica_rate"] <= r["replica_rate"] and o["kid_x1000"] <= r["kid_x1000"]
                   and (o["replica_rate"], o["kid_x1000"]) != (r["replica_rate"], r["kid_x1000"]) for o in rows):
            front.append(r["row"])
    return front


def write_tables(root: Path, s: dict[str, Any]) -> None:
    """``results.csv``, ``results.md`` and ``pareto.png`` in ``root``."""
    rows = s["rows"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([json.dumps(r.get(k)) if isinstance(r.get(k), list) else r.get(k) for k in COLUMNS])
    write_text(root / "results.csv", buf.getvalue())
    write_text(root / "results.md", markdown(s))
    figure(rows, root / "pareto.png")


def _ci(v: float, ci: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(v)} ({fmt.format(ci[0])} to {fmt.format(ci[1])})"


def _change(r: dict[str, Any], key: str, fmt: str) -> str:
    if r["row"] == "none" or key not in r:
        return "-"
    lo, hi = r[key]
    return f"{fmt.format(lo)} to {fmt.format(hi)}"


def verdict(r: dict[str, Any]) -> str:
    """One phrase: what the row does to copies and to quality."""
    if r["row"] == "none":
        return "baseline"
    red = r.get("replica_reduction")
    cut = "copies unchanged" if red is None else (f"copies -{100 * red:.0f}%" if red >= 0 else
                                                  f"copies +{-100 * red:.0f}%")
    if r.get("quality_kept"):
        return f"{cut}, quality kept"
    lost = [w for w, kept in (("KID", r.get("kid_kept")), ("adherence", r.get("adherence_kept"))) if not kept]
    return f"{cut}, quality traded away ({' and '.join(lost)})"


def markdown(s: dict[str, Any]) -> str:
    p = s["preset"]
    lines = [f"# Mitigations on one memorizing model: replication against quality (seed {s['seed']})", "",
             f"{s['memorized_prompts']} memorized prompts x {p['per_memorized']} generations, {s['ordinary_prompts']}"
             f" held-out ordinary prompts x {p['per_ordinary']}; guidance {p['guidance']}, {p['sample_steps']} DDIM "
             f"steps; audit at {100 * s['fpr']:g}% FPR calibrated on held-out images. Adherence classifier accuracy "
             f"on real held-out images: {s['classifier_real_accuracy']:.3f}. Preset: `{json.dumps(p)}`.", "",
             "| mitigation | kind | replica rate (95% CI) | prompts copied | SSCD mean | SSCD top-3 | SSCD > 0.5 | "
             "KID x1000 (95% CI) | KID change vs none (95% CI) | adherence (95% CI) | adherence change (95% CI) | "
             "s/image | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(
            f"| {r['row']} | {r['kind']} | {_ci(r['replica_rate'], r['replica_rate_ci'])} | "
            f"{r['prompts_copied']}/{s['memorized_prompts']} | {r['sscd_mean']:.3f} | {r['sscd_top3']:.3f} | "
            f"{r['sscd_share_above_0.5']:.3f} | {_ci(r['kid_x1000'], r['kid_ci_x1000'], '{:.2f}')} | "
            f"{_change(r, 'kid_change_ci_x1000', '{:+.2f}')} | "
            f"{_ci(r['adherence'], r['adherence_ci'])} | {_change(r, 'adherence_change_ci', '{:+.3f}')} | "
            f"{r['seconds_per_image']:.3f} | {verdict(r)} |")
    front = pareto(s["rows"])
    if s.get("rows_left_out"):
        lines += ["", f"Rows not run (`--only`): {', '.join(s['rows_left_out'])}."]
    lines += ["", f"Pareto front (no other row has both fewer copies and lower KID): {', '.join(front)}.",
              "Quality kept: neither the 95% bootstrap interval of the KID difference to the unmitigated row nor the "
              "95% interval of the adherence difference (Newcombe) lies wholly on the worse side."]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Replica rate on memorized prompts against KID on ordinary prompts, one labelled point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = set(pareto(rows))
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    for r in rows:
        colour = {"none": "black", "inference": "tab:blue", "train": "tab:orange"}[r["kind"]]
        ax.errorbar(r["kid_x1000"], r["replica_rate"], xerr=[[r["kid_x1000"] - r["kid_ci_x1000"][0]],
                                                               [r["kid_ci_x1000"][1] - r["kid_x1000"]]],
                    fmt="o" if r["row"] in front else "s", color=colour, alpha=0.85, capsize=2, ms=5)
        ax.annotate(r["row"], (r["kid_x1000"], r["replica_rate"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_xlabel("KID x1000 on ordinary prompts (lower: closer to real images)")
    ax.set_ylabel("replica rate on memorized prompts")
    ax.set_title("Mitigations: copies vs quality (circles: Pareto front;\nblue inference-time, orange train-time)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
