"""report.html: one self-contained page (no network requests) that explains an audit.

Everything is inline: CSS, a little JavaScript (filter and sort), plots and thumbnails as data: URIs. A
Content-Security-Policy forbids any external load. The gallery is capped (``page_limit`` replicas plus
``borderline`` near misses); every row is in matches.csv.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..auditing.captions import shared_tokens
from ..decode import DEFAULT_MAX_PIXELS, load_path
from ..defaults import DEFAULTS
from ..errors import DiffrepError, brief
from ..fsutil import parse_json, write_text
from ..progress import ProgressCallback, emit
from .plots import similarity_histogram, verdict_histogram
from ..auditing.tables import MATCH_SCHEMA, read_distributions

#: the page's one script (filter and sort); the policy lets this exact script run and no other
SCRIPT = """
(function(){
  var g=document.getElementById('gallery'), f=document.getElementById('filter'),
      so=document.getElementById('sort'), sb=document.getElementById('showborder'), c=document.getElementById('count');
  var items=Array.prototype.slice.call(g.children);
  function update(){
    var q=f.value.toLowerCase(), k=so.value, n=0;
    items.sort(function(a,b){ var x=parseFloat(a.dataset[k]), y=parseFloat(b.dataset[k]);
      return k==='p' ? x-y : y-x; });
    items.forEach(function(it){ var ok=(!q || it.dataset.text.indexOf(q)>=0) &&
      (sb.checked || !it.classList.contains('borderline'));
      it.style.display=ok?'':'none'; if(ok) n++; g.appendChild(it); });
    c.textContent=n+' shown';
  }
  f.addEventListener('input',update); so.addEventListener('change',update); sb.addEventListener('change',update);
  update();
})();
"""
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       f"script-src 'sha256-{base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()}'; "
       "base-uri 'none'; form-action 'none'")


def _thumb(path: str, size: int) -> Optional[str]:
    from PIL import Image

    arr = load_path(path, DEFAULT_MAX_PIXELS, size)
    if arr is None:
        return None
    im = Image.fromarray(arr)
    im.thumbnail((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _png(path: Optional[Path]) -> str:
    if path is None or not path.is_file():
        return ""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _highlight(text: Optional[str], shared: set[str]) -> str:
    if not text:
        return '<span class="none">(no caption)</span>'
    import re

    out = []
    for part in re.split(r"(\W+)", text):
        esc = html.escape(part)
        out.append(f"<mark>{esc}</mark>" if part.lower() in shared else esc)
    return "".join(out)


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return format(v, spec)


def render_report(audit_dir: str | Path, *, page_limit: int = DEFAULTS["report"]["page_limit"],
                  borderline: int = DEFAULTS["report"]["borderline"], thumb: int = DEFAULTS["report"]["thumb"],
                  progress: Optional[ProgressCallback] = None) -> Path:
    """Write ``report.html`` (and the PNG plots) into ``audit_dir``; return the report's path."""
    root = Path(audit_dir)
    if not (root / "summary.json").is_file() or not (root / "matches.parquet").is_file():
        raise DiffrepError(f"{root} is not an audit directory (no summary.json / matches.parquet); "
                           "run `diffrep audit ... --out DIR` first")
    summary = _load_summary(root)
    try:
        table = pq.read_table(root / "matches.parquet", schema=MATCH_SCHEMA).to_pylist()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DiffrepError(f"{root / 'matches.parquet'} is damaged ({brief(exc)}); run the audit "
                           "again") from None
    top = [r for r in table if r["rank"] == 1]
    dist = read_distributions(root)
    plots = {"similarity": similarity_histogram(dist, summary, root / "similarity_hist.png"),
             "verdict": verdict_histogram(dist, summary, root / "verdict_hist.png")}

    def key(r: dict[str, Any]) -> tuple[float, float]:
        return (-(r["verdict_score"] or 0.0), -(r["score"] or 0.0))

    replicas = sorted((r for r in top if r["is_replica"]), key=key)
    near = sorted((r for r in top if not r["is_replica"]), key=key)[:borderline]
    shown = replicas[:page_limit] + near
    emit(progress, "report", 0, len(shown))
    items = []
    for n, r in enumerate(shown):
        items.append(_item(r, thumb, kind="replica" if r["is_replica"] else "borderline"))
        if n % 20 == 0:
            emit(progress, "report", n + 1, len(shown))
    emit(progress, "report", len(shown), len(shown))
    page = _page(summary, plots, items, n_replicas=len(replicas), shown=min(len(replicas), page_limit),
                 n_near=len(near))
    out = root / "report.html"
    write_text(out, page)
    return out


def _item(r: dict[str, Any], size: int, kind: str) -> str:
    shared = shared_tokens(r.get("query_caption"), r.get("train_caption"))
    imgs = []
    for label, p in (("generated", r["query_path"]), ("training match", r["train_path"])):
        uri = _thumb(p, size)
        body = (f'<img src="{uri}" width="{size}" height="{size}" alt="{html.escape(label)}">' if uri else
                f'<div class="missing" style="width:{size}px;height:{size}px">image not found</div>')
        imgs.append(f'<figure>{body}<figcaption>{html.escape(label)}</figcaption></figure>')
    mirrored = " (mirrored)" if r.get("mirrored") else ""
    text = " ".join(filter(None, [r.get("query_caption"), r.get("train_caption"), r["query_path"], r["train_path"]]))
    return (
        f'<div class="item {kind}" data-score="{r["score"] or 0:.6f}" data-verdict="{r["verdict_score"] or 0:.6f}" '
        f'data-p="{r["p_value"] if r["p_value"] is not None else 1:.6g}" data-text="{html.escape(text.lower())}">'
        f'<div class="pair">{"".join(imgs)}</div>'
        f'<table class="nums"><tr><th>SSCD</th><td>{_fmt(r["score"])}</td><th>verified</th>'
        f'<td>{_fmt(r.get("verify_score"))}{mirrored}</td></tr>'
        f'<tr><th>p-value</th><td>{_fmt(r["p_value"], ".3g")}</td><th>inliers</th>'
        f'<td>{_fmt(r.get("inliers"), "d") if r.get("inliers") is not None else "–"}</td></tr></table>'
        f'<p class="cap"><b>prompt:</b> {_highlight(r.get("query_caption"), shared)}</p>'
        f'<p class="cap"><b>training caption:</b> {_highlight(r.get("train_caption"), shared)}</p>'
        f'<p class="path" title="{html.escape(r["query_path"])}">{html.escape(Path(r["query_path"]).name)} → '
        f'{html.escape(Path(r["train_path"].split("::")[-1]).name)}</p></div>')


def _load_summary(root: Path) -> dict[str, Any]:
    """summary.json, checked: the fields the page shows have their types (strings are escaped where they are
    inserted); DiffrepError for a file that is not an audit summary."""
    path = root / "summary.json"
    s = checked_json(path, "audit")
    problem = None
    if not isinstance(s.get("calibration"), dict) or not isinstance(s.get("index"), dict):
        problem = "it is not an audit summary"
    elif _num(s["calibration"].get("threshold")) is None or _num(s.get("replication_rate")) is None:
        problem = "its threshold or replication rate is not a number"
    elif not all(_count(s.get(k)) is not None for k in ("replicas", "queries", "skipped")):
        problem = "its counts are not whole numbers"
    if problem:
        raise DiffrepError(f"{path} is damaged or was edited: {problem}. Run `diffrep audit` again.")
    for key in ("top1", "background", "reference", "captions"):
        if not isinstance(s.get(key), dict):
            s[key] = {} if key == "top1" else None
    s["verdict_score"] = str(s.get("verdict_score") or "")
    if not isinstance(s["index"].get("descriptor"), dict):
        s["index"]["descriptor"] = {}
    return s


def _num(v: Any) -> Optional[float]:
    """``v`` as a finite float, or None when it is not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        return None
    return float(v)


def _count(v: Any) -> Optional[int]:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def checked_json(path: Path, command: str, *, numbers: tuple[str, ...] = (), counts: tuple[str, ...] = (),
                 strings: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object a ``command`` wrote, with the fields a page shows checked: ``numbers`` finite, ``counts``
    whole numbers >= 0, ``strings`` text; DiffrepError in one line for a file that is unreadable or edited."""
    try:
        s = parse_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DiffrepError(f"{path} is unreadable ({getattr(exc, 'strerror', None) or exc}). Run `diffrep {command}` "
                           "again.") from None
    bad = ("it is not a JSON object" if not isinstance(s, dict) else
           next((f"{k} is not a number" for k in numbers if _num(s.get(k)) is None), None) or
           next((f"{k} is not a whole number" for k in counts if _count(s.get(k)) is None), None) or
           next((f"{k} is not text" for k in strings if not isinstance(s.get(k), str)), None))
    if bad:
        raise DiffrepError(f"{path} is damaged or was edited: {bad}. Run `diffrep {command}` again.")
    if not isinstance(s.get("warnings"), list) or not all(isinstance(w, str) for w in s["warnings"]):
        s["warnings"] = []
    return s


@contextlib.contextmanager
def tables_of(root: Path, command: str) -> Iterator[None]:
    """Reading the CSV tables a ``command`` wrote into ``root``: a value that is not what it wrote (a score
    that is not a number, a missing column) is DiffrepError in one line."""
    try:
        yield
    except (KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise DiffrepError(f"the tables in {root} are damaged or were edited ({type(exc).__name__}: {brief(exc)}). "
                           f"Run `diffrep {command}` again.") from None


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _achieved(cal: dict[str, Any]) -> str:
    """The rate this null achieves, in words ("" when the summary has no bound)."""
    got = cal.get("achieved_fpr")
    if not isinstance(got, dict) or _num(got.get("upper")) is None or _num(got.get("mean_at_most")) is None:
        return ""
    return (f"; with this null at most {100 * float(got['mean_at_most']):.2g}% on average and "
            f"{100 * float(got['upper']):.2g}% at 95% confidence")


def _page(s: dict[str, Any], plots: dict[str, Optional[Path]], items: list[str], n_replicas: int, shown: int,
          n_near: int) -> str:
    cal = s["calibration"]
    null_size = _count(cal.get("null_size"))
    src = {"reference": f"the top-1 scores of {null_size} held-out reference images (never trained on)",
           "background": f"{null_size} train-vs-train nearest-other-image scores (no reference given)",
           "explicit": "a fixed threshold set by the user", "fixed": "the paper's fixed 0.5 (not calibrated)"}
    verdict = str(s.get("verdict_score", ""))
    rate = 100 * float(s["replication_rate"])
    top1, bg, ref = s["top1"], s["background"] or {}, s["reference"]
    headline = [
        ("Replication rate", f"{rate:.2f}%",
         f"{s['replicas']} of {s['queries']} generated images are closer to a training image than unseen real "
         "images usually are."),
        ("Threshold", f"{float(cal['threshold']):.4f}",
         f"on the {'fused score (SSCD + pixel verification: p-values of the two strongest channels)' if verdict.startswith('fused') else 'SSCD cosine'}"
         f", set from {src.get(cal.get('source'), str(cal.get('source')))}."),
        ("Target false-positive rate", _fmt(_num(cal.get("target_fpr")), "g"),
         "share of unseen real images that would be wrongly called replicas at this threshold" + _achieved(cal)
         + "."),
        ("Mean top-1 similarity", _fmt(_num(top1.get("mean"))),
         f"SSCD cosine of each generation to its closest training image (p95 {_fmt(_num(top1.get('p95')))}; "
         f"background p95 {_fmt(_num(bg.get('p95')))}"
         + (f"; reference p95 {_fmt(_num(ref.get('p95')))}" if ref else "") + ")."),
        ("Skipped inputs", str(s["skipped"]), "generated files that could not be read (listed in skipped.csv)."),
    ]
    head_html = "".join(f'<div class="stat"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}'
                        f'</div><div class="m">{html.escape(m)}</div></div>' for k, v, m in headline)
    warn = "".join(f"<li>{_esc(w)}</li>" for w in s["warnings"])
    figs = "".join(f'<figure class="plot"><img src="{_png(p)}" alt="{name} histogram"><figcaption>{cap}'
                   "</figcaption></figure>" for name, p, cap in (
                       ("similarity", plots.get("similarity"), "Top-1 similarity of generations (red) against "
                        "held-out reference images (blue) and train-vs-train pairs (grey): the paper's key figure."),
                       ("verdict", plots.get("verdict"), "The score the verdict thresholds, generations against "
                        "the null, with the calibrated threshold.")) if p is not None)
    cap_html = _captions_html(s["captions"])
    more = (f"<p>Showing the {shown} strongest of {n_replicas} replicas; the rest are in matches.csv.</p>"
            if shown < n_replicas else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>diffrep audit: {rate:.2f}% replicas</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#222}}
h1{{font-size:22px}} h2{{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}}
.stats{{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:10px}}
.stat{{border:1px solid #ddd;border-radius:6px;padding:8px}} .stat .v{{font-size:22px;font-weight:600}}
.stat .k{{font-weight:600}} .stat .m{{color:#555;font-size:12px}}
.plot img{{max-width:100%}} .plot{{margin:8px 0}} figcaption{{font-size:12px;color:#555}}
#gallery{{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:10px}}
.item{{border:1px solid #ddd;border-radius:6px;padding:6px}} .item.borderline{{background:#fafafa;border-style:dashed}}
.pair{{display:flex;gap:6px}} .pair figure{{margin:0;text-align:center}} .missing{{background:#eee;font-size:11px;
display:flex;align-items:center;justify-content:center}} .nums{{font-size:12px}} .nums th{{text-align:left;color:#555;
font-weight:normal}} .cap{{margin:2px 0;font-size:12px}} mark{{background:#ffe08a}} .path{{font-size:11px;color:#777;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}} .none{{color:#999}} .controls{{margin:8px 0}}
table.words td,table.words th{{padding:2px 8px;text-align:left}}
</style></head><body>
<h1>Replication audit</h1>
<p>diffrep {_esc(s.get('diffrep_version'))}, {_esc(s.get('created'))}; index:
{_esc(s['index'].get('images'))} training images, descriptor {_esc(s['index']['descriptor'].get('name'))}.</p>
<div class="stats">{head_html}</div>
{f'<h2>Warnings</h2><ul>{warn}</ul>' if warn else ''}
<h2>Score distributions</h2>{figs}
{cap_html}
<h2>Replicas <small>({n_replicas})</small> and borderline cases <small>({n_near})</small></h2>
<p>Each card: the generated image, its matched training image, the SSCD similarity, the verified score (edge
correlation after alignment), the p-value (share of unseen real images scoring at least as high) and both
captions with shared words highlighted. Dashed cards are the strongest non-replicas, just under the threshold.</p>
{more}
<div class="controls"><input id="filter" type="search" placeholder="filter by caption or file name">
<select id="sort"><option value="verdict">sort by verdict score</option><option value="score">sort by SSCD
similarity</option><option value="p">sort by p-value</option></select>
<label><input id="showborder" type="checkbox" checked> show borderline</label> <span id="count"></span></div>
<div id="gallery">{''.join(items)}</div>
<script>{SCRIPT}</script>
</body></html>
"""


def _captions_html(c: Optional[dict[str, Any]]) -> str:
    if not c:
        return ""
    words = c.get("over_represented_words")
    rows = "".join(f"<tr><td>{_esc(w.get('word'))}</td><td>{_fmt(_num(w.get('replica_prompts')), 'g')}</td>"
                   f"<td>{_fmt(_num(w.get('other_prompts')), 'g')}</td><td>{_fmt(_num(w.get('log_odds')), '.2f')}</td></tr>"
                   for w in (words if isinstance(words, list) else []) if isinstance(w, dict))
    return (f"<h2>Do prompts explain the copies?</h2><p>Mean word overlap (Jaccard) between a generation's prompt "
            f"and its matched training caption: replicas {_fmt(_num(c.get('jaccard_replicas')))}, other generations "
            f"{_fmt(_num(c.get('jaccard_non_replicas')))}. Words most over-represented in the prompts of replicas:</p>"
            "<table class=\"words\"><tr><th>word</th><th>replica prompts</th><th>other prompts</th>"
            f"<th>log-odds</th></tr>{rows}</table>" if rows else "")
