"""``probe``: which prompts has a model memorized? Scores, a calibrated verdict and per-token explanations.

Each prompt gets the scores of ``probes.scores``. The verdict is calibrated like the audit's
(``matching.calibration``): the reference prompts (known not to be memorized, e.g. held-out captions of the
same kind) are scored the same way and form the null; the threshold is the split-conformal order statistic
at the target false-positive rate and each prompt gets the conformal p-value (1 + #{null >= s}) / (N + 1).
Without reference prompts nothing can be calibrated: the prompts are then judged by an outlier rule among
themselves (score above median + 3 scaled MADs of the tested prompts), labelled ``uncalibrated`` in the
summary and the CLI output.

Outputs in ``out``: ``prompts.csv`` (``prompt, score, p_value, is_memorized`` for the verdict's method, then
``score_<method>`` / ``p_<method>`` for each further method, and ``truncated``), ``summary.json`` and, for the
verdict's method ``noise-norm``, ``tokens.csv`` (each prompt's tokens with their share of the attribution),
and with reference prompts ``reference.csv`` (their scores: the null).
"""
from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError, check_settings
from ..fsutil import DirLock, ensure_writable_dir, write_json, write_text
from ..progress import ProgressCallback
from .journal import Journal, close_all, digest, model_stamp
from .scores import METHODS, score_prompts

P = DEFAULTS["probe"]
MAD_RULE = 3.0  # uncalibrated fallback: flagged above median + 3 scaled MADs of the tested prompts


@dataclass
class ProbeResult:
    out: Path
    method: str
    prompts: int
    flagged: int
    threshold: float
    source: str  # "reference" | "uncalibrated"
    seconds_per_prompt: float
    warnings: list[str] = field(default_factory=list)
    truncated: int = 0
    threshold_set_by: list[dict[str, Any]] = field(default_factory=list)  # top reference prompts, highest first


def probe(model_path: str | os.PathLike[str], prompts: str | os.PathLike[str] | Sequence[str],
          out: str | os.PathLike[str], *, reference_prompts: str | os.PathLike[str] | Sequence[str] | None = None,
          method: str = P["method"], fpr: float = P["fpr"], seeds: int = P["seeds"], steps: int = P["steps"],
          sample_steps: int = P["sample_steps"], guidance: float = P["guidance"], batch: int = P["batch"],
          device: str = P["device"], explain: bool = True,
          progress: Optional[ProgressCallback] = None) -> ProbeResult:
    """Score ``prompts`` on the model at ``model_path`` and write the outputs described in the module
    docstring. ``method``: one of ``METHODS`` or ``all`` (the verdict then follows noise-norm)."""
    from ..models.adapter import load_model
    from .prompts import load_prompts, reference_without_tested

    methods = list(METHODS) if method == "all" else [method]
    if method != "all" and method not in METHODS:
        raise DiffrepError(f"--method {method!r}: use {', '.join(METHODS)} or all")
    _check(fpr, seeds, steps, sample_steps, batch)
    tested = load_prompts(prompts) if isinstance(prompts, (str, os.PathLike)) else list(prompts)
    ref = (load_prompts(reference_prompts, "--reference-prompts") if isinstance(reference_prompts, (str, os.PathLike))
           else list(reference_prompts or []))
    if not tested:
        raise DiffrepError("no prompts to probe")
    ref, overlap = reference_without_tested(tested, ref)
    if "seed-ssim" in methods and seeds < 2:
        raise DiffrepError("--method seed-ssim compares seeds: give --seeds 2 or more")
    model = load_model(model_path, device)
    model.require_prompts("a memorization probe")
    out_dir = ensure_writable_dir(out)
    with DirLock(out_dir, "probe folder"):
        t0 = time.perf_counter()
        kw = dict(seeds=seeds, steps=steps, sample_steps=sample_steps, guidance=guidance, batch=batch)
        attribute = explain and methods[0] == "noise-norm"
        stamp = model_stamp(model_path)
        journals = [Journal(out_dir, "prompts", digest(stamp, methods, kw, attribute, tested)),
                    Journal(out_dir, "reference", digest(stamp, methods, kw, ref))]
        main = score_prompts(model, tested, methods, attribute=attribute, progress=progress, journal=journals[0],
                             **kw)
        null = (score_prompts(model, ref, methods, progress=progress, stage="reference", journal=journals[1], **kw)
                if ref else None)
        truncated = [model.truncated(p) for p in tested]
        verdicts = {m: prompt_verdict(main.scores[m], None if null is None else null.scores[m], fpr)
                    for m in methods}
        _write_prompts(out_dir, tested, methods, main.scores, verdicts, truncated)
        if main.tokens:
            _write_tokens(out_dir, tested, main.tokens)
        if null is not None:
            _write_reference(out_dir, ref, methods, null.scores)
        seconds = time.perf_counter() - t0
        v = verdicts[methods[0]]
        warnings = overlap + list(v["warnings"])
        if sum(truncated):
            warnings.append(f"{sum(truncated)} prompts are longer than the model's {model.max_prompt_tokens} "
                            "tokens and were cut (see the truncated column)")
        summary = {"model": str(model_path), "model_kind": model.kind, "method": methods[0], "methods": methods,
                   "threshold": v["threshold"], "threshold_source": v["source"], "target_fpr": fpr,
                   "prompts": len(tested), "flagged": int(np.sum(v["flags"])), "reference_prompts": len(ref),
                   "calibration": v["describe"], "seeds": seeds, "steps": steps, "sample_steps": sample_steps,
                   "guidance": guidance, "seconds": round(seconds, 3),
                   "seconds_per_prompt": round(main.seconds / len(tested), 4),
                   "model_calls_per_prompt": round(main.model_calls / len(tested), 2), "truncated": int(sum(truncated)),
                   "other_methods": {m: {k: verdicts[m][k] for k in ("threshold", "source")} | {
                       "flagged": int(np.sum(verdicts[m]["flags"]))} for m in methods[1:]},
                   "threshold_set_by": (_set_by(ref, null.scores[methods[0]], v["threshold"])
                                        if null is not None else []),
                   "warnings": warnings}
        write_json(out_dir / "summary.json", summary)
        close_all(journals)
    return ProbeResult(out_dir, methods[0], len(tested), summary["flagged"], v["threshold"], v["source"],
                       summary["seconds_per_prompt"], warnings, int(sum(truncated)), summary["threshold_set_by"])


def _set_by(ref: list[str], scores: np.ndarray, threshold: float, show: int = 3) -> list[dict[str, Any]]:
    """The reference prompts scoring at or above the threshold, highest first (at most ``show``).

    At a small target FPR the threshold is one of the top reference scores (with 100 prompts at 1%, the
    highest): a reference prompt the model memorized itself raises it, so the user should see which ones set it.
    """
    top = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold][:show]
    return [{"prompt": ref[i], "score": round(float(scores[i]), 6)} for i in top]


def _check(fpr: float, seeds: int, steps: int, sample_steps: int, batch: int) -> None:
    check_settings(fpr=fpr, seeds=seeds, batch=batch)
    if not 1 <= steps <= sample_steps <= 1000:
        raise DiffrepError(f"--steps {steps}: score between 1 and the {sample_steps} sampling steps")


def prompt_verdict(scores: np.ndarray, null: Optional[np.ndarray], fpr: float) -> dict[str, Any]:
    """Threshold, its source, flags and p-values (NaN without a null) for one method's scores: diffrep probe's
    verdict, which extract's noise-norm prefilter shares."""
    from ..matching.calibration import calibrate

    if null is not None and len(null):
        cal = calibrate(reference=null, fpr=fpr, noun="prompt")
        return {"threshold": float(cal.threshold), "source": "reference", "flags": cal.is_replica(scores),
                "p": cal.p_values(scores), "warnings": list(cal.warnings), "describe": cal.describe()}
    med = float(np.median(scores))
    mad = 1.4826 * float(np.median(np.abs(scores - med)))
    t = med + MAD_RULE * mad
    warnings = ["no reference prompts: the verdict is NOT calibrated (prompts above the median + 3 scaled MADs "
                "of the tested prompts are flagged); give --reference-prompts, prompts known not to be "
                "memorized (e.g. held-out captions), for a threshold at the target false-positive rate"]
    return {"threshold": t, "source": "uncalibrated", "flags": scores > t, "p": np.full(len(scores), np.nan),
            "warnings": warnings, "describe": {"threshold": t, "source": "uncalibrated", "rule": "median + 3 MAD"}}


def _write_prompts(out: Path, prompts: list[str], methods: list[str], scores: dict[str, np.ndarray],
                   verdicts: dict[str, dict[str, Any]], truncated: list[bool]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["prompt", "score", "p_value", "is_memorized"]
    for m in methods[1:]:
        head += [f"score_{m}", f"p_{m}", f"flag_{m}"]
    w.writerow(head + ["truncated"])
    v0 = verdicts[methods[0]]
    for i, p in enumerate(prompts):
        row = [p, _num(scores[methods[0]][i]), _num(v0["p"][i]), bool(v0["flags"][i])]
        for m in methods[1:]:
            row += [_num(scores[m][i]), _num(verdicts[m]["p"][i]), bool(verdicts[m]["flags"][i])]
        w.writerow(row + [truncated[i]])
    write_text(out / "prompts.csv", buf.getvalue())


def _write_reference(out: Path, prompts: list[str], methods: list[str], scores: dict[str, np.ndarray]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["prompt"] + [f"score_{m}" for m in methods])
    for i, p in enumerate(prompts):
        w.writerow([p] + [_num(scores[m][i]) for m in methods])
    write_text(out / "reference.csv", buf.getvalue())


def _write_tokens(out: Path, prompts: list[str], tokens: list[list[tuple[str, float]]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["prompt_index", "prompt", "position", "token", "share"])
    for i, (p, toks) in enumerate(zip(prompts, tokens)):
        for j, (tok, share) in enumerate(toks):
            w.writerow([i, p, j, tok, f"{share:.4f}"])
    write_text(out / "tokens.csv", buf.getvalue())


def _num(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.6g}"
