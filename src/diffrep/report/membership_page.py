"""report.html for a ``diffrep membership`` folder.

One self-contained page under the audit report's Content-Security-Policy (no scripts, no network): the
dataset-inference result in one sentence (with ``--set``), the per-image verdict, a histogram of the tested
images' scores against the reference's with the threshold, the ROC of every method when labels were given,
and the images that look most like members beside their scores.
"""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DiffrepError
from ..fsutil import write_text
from .html import _num, checked_json, tables_of
from .probe_page import CSP, figure_tag, score_histogram

TOP = 30  # images shown


def is_membership_folder(folder: str | Path) -> bool:
    root = Path(folder)
    return (root / "scores.csv").is_file() and (root / "features.npz").is_file()


def render_membership_report(folder: str | Path) -> Path:
    """Write ``folder/report.html``; returns its path."""
    root = Path(folder)
    if not is_membership_folder(root) or not (root / "summary.json").is_file():
        raise DiffrepError(f"{folder} is not a `diffrep membership` folder (no scores.csv, features.npz and "
                           "summary.json)")
    s = checked_json(root / "summary.json", "membership", numbers=("threshold", "target_fpr"),
                     counts=("flagged", "images", "reference_images"), strings=("method", "conditioning"))
    if not isinstance(s.get("methods"), list) or s["method"] not in s["methods"] \
            or _num((s.get("seconds_per_image") or {}).get(s["method"])) is None:
        raise DiffrepError(f"{root / 'summary.json'} is damaged or was edited: its methods or seconds per image do "
                           "not match its method. Run `diffrep membership` again.")
    head = ""
    if (root / "set.json").is_file():
        st = checked_json(root / "set.json", "membership --set", numbers=("p_value",),
                          counts=("n_images", "reference_images"), strings=("sentence", "statistic"))
        head = (f"<h2>Was this set trained on?</h2><p><b>{html.escape(st['sentence'])}</b></p>"
                f"<p><small>{html.escape(st['statistic'])}; p = {st['p_value']:.3g} with {st['n_images']} images "
                f"against {st['reference_images']} reference images.</small></p>")
    verdict = (f"{s['flagged']} of {s['images']} images score above what {s['reference_images']} images known not "
               f"to be trained on reach at a {100 * s['target_fpr']:g}% false-positive rate ({s['method']} attack): "
               "the model has probably seen them in training.")
    warn = "".join(f"<p class=warn>{html.escape(w)}</p>" for w in s.get("warnings", []))
    cal = s.get("difficulty") if isinstance(s.get("difficulty"), dict) else {}
    ease = ("scores freed of image difficulty (what each image's brightness, contrast and detail predict of "
            "them); " if cal.get("method") == "image-stats" else "")
    shift = s.get("shift") if isinstance(s.get("shift"), dict) else {}
    shift_line = (f"<p>Shift control: {html.escape(str(shift['sentence']))}</p>"
                  if "sentence" in shift and not shift.get("shift_detected") else "")  # a detected one is a warning
    with tables_of(root, "membership"):
        rows = list(csv.DictReader((root / "scores.csv").open(encoding="utf-8")))
        ref = [float(r[f"score_{s['method']}"])
               for r in csv.DictReader((root / "reference.csv").open(encoding="utf-8"))]
        scores = [float(r["score"]) for r in rows if r["score"]]
        plot = score_histogram(scores, ref, s["threshold"], s["method"],
                               ("tested images", "reference (not trained on)"))
        roc = _roc(rows, s) if rows and "label" in rows[0] else ""
        ranked = sorted(range(len(rows)), key=lambda i: -float(rows[i]["score"] or "-inf"))[:TOP]
        labelled = bool(rows) and "label" in rows[0]
        items = "".join(_image_row(rows[i], labelled) for i in ranked)
    page = f"""<!doctype html><html><head><meta charset=utf-8>
<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>diffrep membership report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} .warn{{color:#a40}}
table{{border-collapse:collapse}} td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}}
td img{{width:64px;image-rendering:pixelated}}</style></head><body>
<h1>Membership inference</h1>{head}<h2>Image by image</h2><p><b>{html.escape(verdict)}</b></p>
<p>Conditioning: {html.escape(s['conditioning'])}; {ease}threshold {s['threshold']:.4g} calibrated on the reference;
{s['seconds_per_image'][s['method']]:.4f} s per image.</p>{shift_line}{warn}{plot}{roc}
<h2>Most member-like images</h2><table><tr><th>image</th><th>path</th><th>score</th><th>p-value</th>
<th>member?</th>{"<th>label</th>" if labelled else ""}</tr>{items}</table></body></html>"""
    out = root / "report.html"
    write_text(out, page)
    return out


def _image_row(r: dict[str, str], labelled: bool) -> str:
    from .html import _thumb

    thumb = _thumb(r["path"], 64)
    img = f"<img src='{thumb}' alt=''>" if thumb else ""
    return (f"<tr><td>{img}</td><td>{html.escape(r['path'])}</td><td>{float(r['score']):.4g}</td>"
            f"<td>{html.escape(r['p_value'] or '-')}</td><td>{'yes' if r['is_member'] == 'True' else ''}</td>"
            + (f"<td>{ {'1': 'member', '0': 'non-member'}.get(r['label'], '') }</td>" if labelled else "") + "</tr>")


def _roc(rows: list[dict[str, str]], s: dict[str, Any]) -> str:
    """ROC curves of every method over the labelled images, with the AUCs of summary.json."""
    from .plots import _plt

    lab = np.array([float(r["label"]) if r["label"] != "" else np.nan for r in rows])
    if not (lab == 1).any() or not (lab == 0).any():
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for m in s["methods"]:
        col = "score" if m == s["method"] else f"score_{m}"
        sc = np.array([float(r[col]) for r in rows])
        keep = ~np.isnan(lab)
        order = np.argsort(-sc[keep], kind="mergesort")
        y = lab[keep][order]
        tpr = np.concatenate([[0], np.cumsum(y) / y.sum()])
        fpr = np.concatenate([[0], np.cumsum(1 - y) / (1 - y).sum()])
        auc = s.get("evaluation", {}).get(m, {}).get("auc", float("nan"))
        ax.plot(fpr, tpr, label=f"{m} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="#999", ls=":")
    ax.set_xlabel("false-positive rate (non-members)")
    ax.set_ylabel("true-positive rate (members)")
    ax.legend()
    return "<h2>ROC on the labelled images</h2>" + figure_tag(fig, "ROC")
