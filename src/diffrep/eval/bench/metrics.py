"""Retrieval metrics for copy detection, as the Image Similarity Challenge defines them (Douze et al. 2021:
micro-AP over all predictions) beside the usual per-query mAP, recall@k and MRR.

Predictions are per query: reference ids ranked by score (highest first), with their scores. Ground
truth: the set of correct reference ids per query (empty for a query with no source: a distractor).

- ``average_precision``: AP of one ranked list, sum over hits of precision@rank divided by the number of
  positives (positives never retrieved count as misses).
- ``mean_average_precision``: mean AP over queries that have at least one positive.
- ``micro_ap``: ISC2021 muAP: all (query, reference, score) predictions pooled and sorted globally by score,
  ties broken pessimistically (negatives first), AP over that single list against *all* ground-truth pairs.
- ``recall_at_k``: share of queries with a positive whose top k holds at least one positive.
- ``precision_at_k``: mean over those queries of (positives in top k) / k.
- ``mrr``: mean reciprocal rank of the first positive (0 when none is retrieved).
- ``accuracy_at_1``: share of queries with a positive whose rank-1 reference is a positive.
- ``recall_at_precision``: on the pooled list, the best recall at any threshold with precision >= p
  (p = 0.9: ISC2021's recall@P90).
"""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np

Ranked = Sequence[tuple[Hashable, float]]  # [(reference id, score), ...] highest score first


def _ranked(preds: Ranked) -> list[tuple[Hashable, float]]:
    return sorted(preds, key=lambda p: -p[1])


def average_precision(preds: Ranked, positives: set[Hashable]) -> float:
    if not positives:
        raise ValueError("AP is undefined for a query without positives")
    hits = 0
    total = 0.0
    for rank, (ref, _s) in enumerate(_ranked(preds), start=1):
        if ref in positives:
            hits += 1
            total += hits / rank
    return total / len(positives)


def _with_positives(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]]) -> list[Hashable]:
    return [q for q, pos in truth.items() if pos]


def mean_average_precision(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]]) -> float:
    qs = _with_positives(preds, truth)
    return float(np.mean([average_precision(preds.get(q, []), truth[q]) for q in qs])) if qs else 0.0


def _pooled(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]]) -> tuple[np.ndarray, int]:
    """Relevance of every prediction in global score order (ties: negatives first), and #GT pairs."""
    rows = [(s, ref in truth.get(q, set())) for q, lst in preds.items() for ref, s in lst]
    n_gt = sum(len(p) for p in truth.values())
    if not rows:
        return np.zeros(0, bool), n_gt
    scores = np.array([r[0] for r in rows], np.float64)
    rel = np.array([r[1] for r in rows], bool)
    order = np.lexsort((rel, -scores))  # by score desc, then negatives (False) before positives
    return rel[order], n_gt


def micro_ap(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]]) -> float:
    rel, n_gt = _pooled(preds, truth)
    if n_gt == 0:
        return 0.0
    hits = np.cumsum(rel)
    precision = hits / np.arange(1, len(rel) + 1)
    return float(precision[rel].sum() / n_gt)


def recall_at_precision(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]],
                        precision: float = 0.9) -> float:
    rel, n_gt = _pooled(preds, truth)
    if n_gt == 0 or not len(rel):
        return 0.0
    hits = np.cumsum(rel)
    prec = hits / np.arange(1, len(rel) + 1)
    ok = prec >= precision
    return float(hits[ok].max() / n_gt) if ok.any() else 0.0


def _per_query(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]], k: int,
               fn: str) -> float:
    vals = []
    for q in _with_positives(preds, truth):
        top = [ref for ref, _s in _ranked(preds.get(q, []))]
        pos = truth[q]
        if fn == "recall":
            vals.append(float(any(r in pos for r in top[:k])))
        elif fn == "precision":
            vals.append(sum(r in pos for r in top[:k]) / k)
        elif fn == "mrr":
            vals.append(next((1.0 / (i + 1) for i, r in enumerate(top) if r in pos), 0.0))
    return float(np.mean(vals)) if vals else 0.0


def recall_at_k(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]], k: int) -> float:
    return _per_query(preds, truth, k, "recall")


def precision_at_k(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]], k: int) -> float:
    return _per_query(preds, truth, k, "precision")


def mrr(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]]) -> float:
    return _per_query(preds, truth, 0, "mrr")


def accuracy_at_1(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]]) -> float:
    return recall_at_k(preds, truth, 1)


def pr_curve(preds: Mapping[Hashable, Ranked], truth: Mapping[Hashable, set[Hashable]]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (micro) precision-recall curve: (recall, precision) after each prediction in global
    score order, the curve whose area is :func:`micro_ap`."""
    rel, n_gt = _pooled(preds, truth)
    if n_gt == 0 or not len(rel):
        return np.zeros(0), np.zeros(0)
    hits = np.cumsum(rel)
    return hits / n_gt, hits / np.arange(1, len(rel) + 1)
