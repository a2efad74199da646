"""Which prompts ``extract`` generates for: a cheap model-side score first, then generation only where it points.

- ``one-step`` (Webster, white-box): the one-step score of every prompt; the top ``keep`` share is kept.
- ``noise-norm`` (Wen et al., ICLR 2024): the first-step text-conditional noise magnitude (k = 1, the probe's
  default seeds), with the threshold calibrated on the reference prompts at ``fpr`` exactly as ``diffrep
  probe`` sets it (split-conformal); the prompts it flags are kept. A clique is then a second, separate sign
  of memorization: training prompts the model saw without memorizing them form cliques more readily than the
  unseen reference prompts (``cliques.excess_cliques_warning``), and the probe does not flag most of them.

Every prompt's prefilter score and whether it was kept go to ``prefilter.csv`` in the extract folder.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError
from ..fsutil import write_text
from ..progress import ProgressCallback
from .journal import Journal

PREFILTERS = ("one-step", "noise-norm")
P = DEFAULTS["probe"]


@dataclass
class Prefiltered:
    chosen: list[str]
    method: str
    threshold: Optional[float]  # noise-norm: the calibrated threshold; one-step: the lowest kept score
    source: str  # how the prompts were chosen, in words
    warnings: list[str] = field(default_factory=list)


def check_prefilter(method: Optional[str], keep: float) -> Optional[str]:
    """The prefilter to run: ``method``, or None for no prefilter (None or ``"none"``, as the CLI spells it)."""
    if method in (None, "none"):
        method = None
    elif method not in PREFILTERS:
        raise DiffrepError(f"--prefilter {method!r}: use {' or '.join(PREFILTERS)}")
    if not 0 < keep <= 1:
        raise DiffrepError(f"--keep {keep}: give the share of prompts to keep, in (0, 1]")
    return method


def prefilter(model: Any, prompts: list[str], reference: list[str], method: str, *, keep: float, fpr: float,
              sample_steps: int, out: Path, journals: tuple[Journal, Journal],
              progress: Optional[ProgressCallback] = None) -> Prefiltered:
    """Score ``prompts`` with ``method`` and choose the ones to generate for (module docstring); ``journals``:
    where the tested and the reference prompts' finished batches are kept. Writes ``out/prefilter.csv``."""
    from .scores import score_prompts

    if method == "one-step":
        s = score_prompts(model, prompts, ("one-step",), progress=progress, stage="prefilter",
                          journal=journals[0]).scores["one-step"]
        k = max(1, int(round(keep * len(prompts))))
        kept = np.zeros(len(prompts), bool)
        kept[np.argsort(-s, kind="stable")[:k]] = True
        res = Prefiltered([p for p, c in zip(prompts, kept) if c], method, float(np.min(s[kept])),
                          f"the top {keep:g} share of the one-step scores ({k} of {len(prompts)} prompts)")
    else:
        from .memorization import prompt_verdict

        kw = dict(seeds=P["seeds"], steps=1, sample_steps=sample_steps, batch=P["batch"], progress=progress)
        s = score_prompts(model, prompts, ("noise-norm",), stage="prefilter", journal=journals[0],
                          **kw).scores["noise-norm"]
        null = score_prompts(model, reference, ("noise-norm",), stage="prefilter-reference", journal=journals[1],
                             **kw).scores["noise-norm"]
        v = prompt_verdict(s, null, fpr)  # diffrep probe's verdict: the same threshold, flags and warnings
        kept = np.asarray(v["flags"], bool)
        res = Prefiltered([p for p, c in zip(prompts, kept) if c], method, float(v["threshold"]),
                          f"first-step noise-norm of the reference prompts ({len(reference)}) at {fpr:g}",
                          [f"noise-norm prefilter: {w}" for w in v["warnings"]])
        if not kept.any():
            res.warnings.append("the noise-norm prefilter flagged none of the prompts, so none was generated for: "
                                "by the probe, the model memorized none of them (prefilter.csv has the scores)")
    _write(out / "prefilter.csv", prompts, s, kept)
    return res


def _write(path: Path, prompts: list[str], scores: np.ndarray, kept: np.ndarray) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["prompt", "score", "generated"])
    for p, s, k in zip(prompts, scores, kept):
        w.writerow([p, f"{s:.6g}", int(k)])
    write_text(path, buf.getvalue())
