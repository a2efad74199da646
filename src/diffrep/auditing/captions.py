"""Caption analysis: does the prompt explain the copy?

Somepalli et al. (CVPR 2023) found replicas triggered by a few caption words ("Canvas Wall Art Print").
For each generation with a prompt and a matched training caption we compute the token overlap (Jaccard)
and, over the whole audit, the prompt words most over-represented among replicas (smoothed log-odds).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
STOPWORDS = frozenset(
    "a an the and or of in on at to for with by from as is are was were be been this that these those it its "
    "into over under up down out off than then so no not".split())


def tokens(text: Optional[str]) -> list[str]:
    """Lowercase word tokens without stopwords."""
    return [t for t in _TOKEN.findall((text or "").lower()) if t not in STOPWORDS]


def jaccard(a: Optional[str], b: Optional[str]) -> Optional[float]:
    """Token-set Jaccard overlap; None when either text is missing or has no tokens."""
    ta, tb = set(tokens(a)), set(tokens(b))
    if not ta or not tb:
        return None
    return len(ta & tb) / len(ta | tb)


def shared_tokens(a: Optional[str], b: Optional[str]) -> set[str]:
    return set(tokens(a)) & set(tokens(b))


def over_represented(prompts: Sequence[Optional[str]], is_replica: Sequence[bool], top: int = 15,
                     min_count: int = 2) -> list[dict[str, Any]]:
    """Prompt words most over-represented among replicas vs non-replicas (log-odds, add-0.5 smoothing)."""
    rep: Counter[str] = Counter()
    non: Counter[str] = Counter()
    n_rep = n_non = 0
    for text, r in zip(prompts, is_replica):
        toks = set(tokens(text))
        if not toks:
            continue
        if r:
            rep.update(toks)
            n_rep += 1
        else:
            non.update(toks)
            n_non += 1
    if not n_rep:
        return []
    out = []
    for w, c in rep.items():
        if c < min_count:
            continue
        a = (c + 0.5) / (n_rep - c + 0.5)
        b = (non[w] + 0.5) / (n_non - non[w] + 0.5)
        out.append({"word": w, "replica_prompts": c, "other_prompts": non[w],
                    "share_replicas": c / n_rep, "share_others": non[w] / n_non if n_non else None,
                    "log_odds": math.log(a / b)})
    out.sort(key=lambda d: (-d["log_odds"], -d["replica_prompts"], d["word"]))
    return out[:top]


def caption_analysis(prompts: Sequence[Optional[str]], matched: Sequence[Optional[str]],
                     is_replica: Iterable[bool]) -> Optional[dict[str, Any]]:
    """Summary for summary.json; None when no generation has a prompt."""
    reps = [bool(r) for r in is_replica]
    if not any(tokens(p) for p in prompts):
        return None
    jac = [jaccard(p, m) for p, m in zip(prompts, matched)]

    def mean(sel: bool) -> Optional[float]:
        v = [j for j, r in zip(jac, reps) if r == sel and j is not None]
        return float(np.mean(v)) if v else None

    return {
        "with_prompt": sum(1 for p in prompts if tokens(p)),
        "jaccard_replicas": mean(True),
        "jaccard_non_replicas": mean(False),
        "over_represented_words": over_represented(prompts, reps),
        "meaning": {
            "jaccard_*": "mean word overlap between a generation's prompt and its matched training caption",
            "over_represented_words": "prompt words far more frequent among replicas than other generations",
        },
    }
