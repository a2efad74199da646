"""report.html for a ``diffrep probe`` folder (and, beside it, a ``diffrep extract`` folder).

One self-contained page, under the same Content-Security-Policy as the audit report (no scripts, no network):
the verdict in one sentence, a histogram of the tested prompts' scores against the reference prompts' with
the threshold, the top prompts with their trigger words highlighted (Wen et al.'s per-token attribution from
``tokens.csv``), and, when an extract folder is given, each extracted generation beside the training image
the audit matched it to.
"""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DiffrepError
from ..fsutil import write_text
from .html import checked_json, tables_of

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
TOP = 50  # prompts listed
TRIGGER_SHARE = 1.5  # a token is highlighted when its share is this many times the prompt's average share


def render_probe_report(probe_dir: str | Path, extract_dir: str | Path | None = None) -> Path:
    """Write ``probe_dir/report.html``; returns its path."""
    root = Path(probe_dir)
    if not (root / "prompts.csv").is_file() or not (root / "summary.json").is_file():
        raise DiffrepError(f"{probe_dir} is not a `diffrep probe` folder (no prompts.csv and summary.json)")
    s = checked_json(root / "summary.json", "probe", numbers=("threshold", "target_fpr", "seconds_per_prompt"),
                     counts=("flagged", "prompts", "reference_prompts", "seeds", "steps"),
                     strings=("method", "threshold_source"))
    with tables_of(root, "probe"):
        rows = list(csv.DictReader((root / "prompts.csv").open(encoding="utf-8")))
        ref = _reference_scores(root)
        tokens = _tokens(root)
        plot = score_histogram([float(r["score"]) for r in rows if r["score"]], ref, s["threshold"], s["method"])
        ranked = sorted(range(len(rows)), key=lambda i: -float(rows[i]["score"] or "-inf"))[:TOP]
        items = "".join(_prompt_row(rows[i], tokens.get(i)) for i in ranked)
        pairs = _pairs(Path(extract_dir)) if extract_dir else ""
    calibrated = s["threshold_source"] == "reference"
    verdict = (f"{s['flagged']} of {s['prompts']} prompts score above what {s['reference_prompts']} prompts known "
               f"not to be memorized reach at a {100 * s['target_fpr']:g}% false-positive rate: the model has "
               f"probably memorized them." if calibrated else
               f"{s['flagged']} of {s['prompts']} prompts stand out from the others (uncalibrated: no reference "
               "prompts were given).")
    warn = "".join(f"<p class=warn>{html.escape(w)}</p>" for w in s.get("warnings", []))
    page = f"""<!doctype html><html><head><meta charset=utf-8>
<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>diffrep probe report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} .warn{{color:#a40}}
table{{border-collapse:collapse}} td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}}
mark{{background:#fd6}} .pair img{{width:128px;image-rendering:pixelated;margin-right:6px}}</style></head><body>
<h1>Memorized prompts</h1><p><b>{html.escape(verdict)}</b></p>
<p>Method {html.escape(s['method'])} ({s['seeds']} seeds, {s['steps']} step(s)), threshold {s['threshold']:.4g}
({html.escape(s['threshold_source'])}), {s['seconds_per_prompt']:.3f} s per prompt.</p>{warn}
{plot}<h2>Top prompts</h2><p>Highlighted: the words that carry the score (per-token attribution).</p>
<table><tr><th>prompt</th><th>score</th><th>p-value</th><th>memorized</th></tr>{items}</table>{pairs}
</body></html>"""
    out = root / "report.html"
    write_text(out, page)
    return out


def _reference_scores(root: Path) -> list[float]:
    path = root / "reference.csv"
    if not path.is_file():
        return []
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    col = next((c for c in rows[0] if c.startswith("score_")), None) if rows else None
    return [float(r[col]) for r in rows if col and r[col]]


def _tokens(root: Path) -> dict[int, list[tuple[str, float]]]:
    path = root / "tokens.csv"
    out: dict[int, list[tuple[str, float]]] = {}
    if path.is_file():
        for r in csv.DictReader(path.open(encoding="utf-8")):
            out.setdefault(int(r["prompt_index"]), []).append((r["token"], float(r["share"])))
    return out


def _prompt_row(r: dict[str, str], toks: Optional[list[tuple[str, float]]]) -> str:
    text = html.escape(r["prompt"])
    if toks:
        mean = 1.0 / len(toks)
        words = [("<mark>" + html.escape(t) + "</mark>") if share > TRIGGER_SHARE * mean else html.escape(t)
                 for t, share in toks]
        text += f"<br><small>{' '.join(words)}</small>"
    return (f"<tr><td>{text}</td><td>{float(r['score']):.4g}</td><td>{html.escape(r['p_value'] or '-')}</td>"
            f"<td>{'yes' if r['is_memorized'] == 'True' else ''}</td></tr>")


def score_histogram(scores: list[float], ref: list[float], threshold: float, method: str,
               names: tuple[str, str] = ("tested prompts", "reference prompts")) -> str:
    from .plots import _plt

    if not scores:
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    both = np.array(scores + ref)
    bins = np.linspace(both.min(), both.max(), 40) if np.ptp(both) > 0 else 10
    ax.hist(scores, bins=bins, alpha=0.6, label=f"{names[0]} ({len(scores)})", color="#c33")
    if ref:
        ax.hist(ref, bins=bins, alpha=0.6, label=f"{names[1]} ({len(ref)})", color="#36c")
    ax.axvline(threshold, color="k", ls="--", label="threshold")
    ax.set_xlabel(f"{method} score")
    ax.legend()
    return figure_tag(fig, "score histogram")


def figure_tag(fig: Any, alt: str) -> str:
    """A matplotlib figure as an inline PNG <img> (closed after)."""
    import base64
    import io

    from .plots import _plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _pairs(root: Path) -> str:
    from .html import _thumb

    path = root / "extracted.csv"
    if not path.is_file():
        raise DiffrepError(f"{root} is not a `diffrep extract` folder (no extracted.csv)")
    every = list(csv.DictReader(path.open(encoding="utf-8")))
    rows = [r for r in every if r.get("is_copy") == "True"]
    other = len(every) - len(rows)
    note = (f"<p>{other} further clique(s) of near-identical generations were not verified by the audit as copies of "
            "a training image (in extracted.csv with is_copy false).</p>" if other else "")
    cells = []
    for r in rows:
        gen, train = _thumb(str(root / r["generated"]), 128), _thumb(r["training_image"], 128)
        if gen and train:
            cells.append(f"<div class=pair><p>{html.escape(r['prompt'])} (clique {r['clique_size']}, p "
                         f"{html.escape(r['p_value'])})</p><img src='{gen}' alt='generated'><img src='{train}' "
                         "alt='training image'></div>")
    s = checked_json(root / "summary.json", "extract") if (root / "summary.json").is_file() else {}
    return (f"<h2>Extracted training images ({len(rows)})</h2>" + _prefiltered(s) + note + _below_floor(s)
            + _reference_copies(s) + "".join(cells))


def _prefiltered(s: dict) -> str:
    """A sentence saying which prompts were generated for, when a prefilter chose them (from summary.json)."""
    method, n, of = s.get("prefilter"), s.get("generated_for"), s.get("prompts")
    if method not in ("noise-norm", "one-step") or not isinstance(n, int) or not isinstance(of, int):
        return ""
    how = ("the noise-norm probe flagged" if method == "noise-norm" else "the one-step score ranked highest")
    return f"<p>Generated for {n} of {of} prompts: those {how} (prefilter.csv).</p>"


def _reference_copies(s: dict) -> str:
    """A warning naming the reference prompts whose own generations the audit flagged as training images (from
    the extract folder's summary.json; nothing for a folder written before extract recorded them)."""
    copies = [c["prompt"] for c in s.get("reference_copies") or []
              if isinstance(c, dict) and isinstance(c.get("prompt"), str)]
    if not copies:
        return ""
    how = "left out of" if s.get("reference_copies_dropped") else "kept in"
    names = "; ".join(html.escape(c) for c in copies[:10]) + (" …" if len(copies) > 10 else "")
    return (f"<p class=warn>{len(copies)} reference prompt(s) generate training images themselves ({how} the "
            f"calibration of what counts as near-identical; see summary.json): {names}</p>")


def _below_floor(s: dict) -> str:
    """A sentence counting the cliques the ``--min-share`` floor left out of extracted.csv (from summary.json)."""
    n, copies, share = s.get("below_floor"), s.get("below_floor_copies"), s.get("min_share")
    if not isinstance(n, int) or not n or not isinstance(copies, int) or not isinstance(share, (int, float)):
        return ""
    cls = " class=warn" if copies else ""
    return (f"<p{cls}>{n} smaller clique(s), of at most {share:g} of a prompt's generations, are below the "
            f"--min-share floor and not shown (below_floor.csv); the audit verifies {copies} of them as copies.</p>")
