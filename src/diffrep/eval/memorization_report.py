"""``results.csv`` and ``results.md`` of ``diffrep experiment memorization`` from its summary."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..fsutil import finite, write_text

KEYS = ["method", "positives", "negatives", "auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci",
        "tpr_at_0.1pct_fpr", "tpr_at_0.1pct_fpr_ci", "auc_vs_unmemorized_training", "tpr_at_threshold",
        "test_flagged_at_threshold", "seconds_per_prompt", "cheaper_than_brute_force"]
DUP_KEYS = ["positives", "auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci"]
BRIEF = ("consistent", "duplicated", "clean_test")  # the other labellings, scored with DUP_KEYS


def write_tables(root: Path, s: dict[str, Any]) -> None:
    """Write ``results.csv`` (one row per method; the columns against the consistent and the by-construction
    labels prefixed ``consistent_`` and ``duplicated_``, against the clean test captions ``clean_test_``) and
    ``results.md``."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(KEYS + [f"{name}_{k}" for name in BRIEF for k in DUP_KEYS])
    for r in s["methods"]:
        cells = [r[k] for k in KEYS] + [r.get(name, {}).get(k) for name in BRIEF for k in DUP_KEYS]
        w.writerow([_cell(c) for c in cells])
    write_text(root / "results.csv", buf.getvalue())
    write_text(root / "results.md", "\n".join(_markdown(s)) + "\n")


def _cell(value: Any) -> Any:
    """A CSV cell: an interval as a JSON list, an undefined number (no positives) empty / null."""
    value = finite(value)
    if isinstance(value, list):
        return json.dumps(value)
    return "" if value is None else value


def _ci(r: dict[str, Any], k: str) -> str:
    lo, hi = r[k + "_ci"]
    return f"{r[k]:.3f} ({lo:.3f}-{hi:.3f})"


def _markdown(s: dict[str, Any]) -> list[str]:
    lines = [f"# Memorization probes: {s['memorized']} memorized of {s['training_captions']} training captions "
             f"({s['memorized_duplicated']} of the {s['duplicated']} duplicated), {s['test_captions']} test captions",
             "", f"Preset {json.dumps(s['preset'])}, seed {s['seed']}. Memorized = the audit at "
             f"{100 * s['fpr']:g}% FPR flags a generation of the caption with its own training image. Brute force (generate and audit): "
             f"{s['brute_force_seconds_per_prompt']:.3f} s per prompt.", ""]
    if s["memorized"]:
        lines += ["| method (k steps) | AUC (95% CI) | TPR@1%FPR | TPR@0.1%FPR | AUC vs unmemorized training "
                  "captions | TPR at the reference threshold | test captions flagged | s/prompt | x cheaper |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {_ci(r, 'auc')} | {_ci(r, 'tpr_at_1pct_fpr')} | {_ci(r, 'tpr_at_0.1pct_fpr')} | "
                  f"{r['auc_vs_unmemorized_training']:.3f} | {r['tpr_at_threshold']:.3f} | "
                  f"{100 * r['test_flagged_at_threshold']:.1f}% | {r['seconds_per_prompt']:.4f} | "
                  f"{r['cheaper_than_brute_force']:.0f} |" for r in s["methods"]]
    else:
        lines += ["No training caption was memorized by the audit's standard: AUC and TPR against the audit's "
                  "labels need memorized captions. The calibrated verdict on the test captions and the cost:", "",
                  "| method (k steps) | test captions flagged at the reference threshold | s/prompt | x cheaper |",
                  "|---|---|---|---|"]
        lines += [f"| {r['method']} | {100 * r['test_flagged_at_threshold']:.1f}% | {r['seconds_per_prompt']:.4f} | "
                  f"{r['cheaper_than_brute_force']:.0f} |" for r in s["methods"]]
    n = s.get("generations_labelled")
    if n and all("consistent" in r for r in s["methods"]):
        lines += _brief(s, "consistent", f"Memorized consistently: the audit flags more than half of the caption's {n} "
                        f"audited generations as copies of its own picture ({s['memorized_consistently']} captions), "
                        "against the test captions.")
    if all("duplicated" in r for r in s["methods"]):
        lines += _brief(s, "duplicated", f"Labels by construction (not the audit's judgement): the {s['duplicated']} "
                        "duplicated training captions against the test captions.")
    k = s.get("test_captions_copying")
    if k is not None and all("clean_test" in r for r in s["methods"]):
        lines += _brief(s, "clean_test", f"Negatives without copies: {k} of the {s['test_captions']} test captions "
                        "had a generation the audit flags as a copy of some training image (the model reproduces "
                        "training pictures for prompts it never saw); the audit-memorized captions against the "
                        f"other {s['test_captions'] - k}.")
    if n and all("by_copies" in r for r in s["methods"]):
        counts = s["methods"][0]["by_copies"]
        lines += ["", "Median score of the training captions by the number of their generations flagged as copies "
                  "(captions in brackets):", "",
                  "| method (k steps) | " + " | ".join(f"{c['copies']} of {n} ({c['captions']})" for c in counts) + " |",
                  "|---" * (len(counts) + 1) + "|"]
        lines += [f"| {r['method']} | " + " | ".join("-" if c["median"] is None else f"{c['median']:.4g}"
                                                    for c in r["by_copies"]) + " |" for r in s["methods"]]
    return lines


def _brief(s: dict[str, Any], name: str, caption: str) -> list[str]:
    """A table of AUC and TPR@1%FPR against one of the other labellings, or a sentence when it has no positives."""
    if not s["methods"][0][name]["positives"]:
        return ["", caption.rstrip(".") + ": none, so no AUC."]
    return ["", caption, "", "| method (k steps) | AUC (95% CI) | TPR@1%FPR (95% CI) |", "|---|---|---|"] + [
        f"| {r['method']} | {_ci(r[name], 'auc')} | {_ci(r[name], 'tpr_at_1pct_fpr')} |" for r in s["methods"]]
