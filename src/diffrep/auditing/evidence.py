"""The rows of ``matches.csv``: each generated image's candidates with the evidence for each.

Without ``--partial`` the candidates are the global top-k, the first ``verify_k`` re-ranked by their
verified score. With it, training images found only by a window of the generation join the list
(``match_kind = region``), every region candidate carries its region score and the window's box and its
object score (``objects.py``: the training image's object found inside the generation, with its box in
both images), and the candidates are ordered by their strongest evidence: the smallest p-value over the
channels (global cosine, verified, region, pixel and object scores) against the calibration null, as the
fusion computes it (smooth tails), so rank 1 is the match that drives the verdict. ``match_kind`` names
that evidence: ``global``, ``region`` (a window covering under 80% of the generation), ``local`` (a
candidate only local-feature voting found, ``diffrep.indexing.local``; ``local_votes`` is its vote score)
or ``object`` (the object score).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..fsutil import finite
from ..matching.calibration import channel_p_values
from ..matching.rerank import rerank_order
from .channels import COPY_LIKE, GATED, LOOK_ALIKE, PIXEL_LEVEL, SPECS, Evidence, copy_like


def _box(b: Sequence[int] | None) -> str | None:
    return None if b is None else json.dumps([int(v) for v in b])


def match_rows(records: Sequence[Any], ids: np.ndarray, *, kv: int, q: Evidence, q_verdict: np.ndarray,
               rep: np.ndarray, p: np.ndarray, train: dict[str, list[Any]], dups: np.ndarray | None,
               q_vectors: np.ndarray | None = None,
               train_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
               nulls: Optional[dict[str, np.ndarray | None]] = None,
               train_size: Callable[[int], tuple[int, int] | None] | None = None,
               ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """(rows, rank-1 training id per query) from the generations' evidence ``q`` (``scoring.py``): global
    top-k ``ids`` and their cosines, the verified candidates (``q.reranked``; ``q.allowed`` says whether each
    one's verified and pixel scores count, ``specificity.py``: those that do not are left out of the
    ordering), region and object matches."""
    n, k = ids.shape
    order = np.tile(np.arange(k), (n, 1))
    if q.reranked is not None:
        order = np.concatenate([rerank_order(q.reranked.scores, q.topk[:, :kv]), order[:, kv:]], axis=1)
    extra_cos = _region_only_cosines(q, ids, q_vectors, train_vectors)
    nulls = nulls or {}
    rows: list[dict[str, Any]] = []
    best = np.full(n, -1, np.int64)
    for qi, rec in enumerate(records):
        cands = _global_candidates(q, qi, order[qi], ids[qi], kv)
        if q.regions is not None:
            _add_region_candidates(cands, q, qi, extra_cos, nulls)
            cands.sort(key=lambda c: _strength(c, nulls))
        for r, c in enumerate(cands):
            if r == 0:
                best[qi] = c["j"]
            rows.append(_row(rec, r, c, train, train_size, dups, (q_verdict[qi], rep[qi], p[qi])))
    return rows, best


def _region_only_cosines(q: Evidence, ids: np.ndarray, q_vectors: np.ndarray | None,
                         train_vectors: Callable[[np.ndarray], np.ndarray] | None) -> dict[tuple[int, int], float]:
    """Exact global cosine of each candidate only the region search found, fetched in one batch."""
    if q.regions is None or q_vectors is None or train_vectors is None:
        return {}
    pairs = [(qi, int(j)) for qi in range(len(ids)) for j in q.regions.ids[qi] if j >= 0 and j not in ids[qi]]
    if not pairs:
        return {}
    uniq = np.unique([j for _, j in pairs])
    vecs = dict(zip(uniq.tolist(), train_vectors(uniq)))
    return {(qi, j): float(q_vectors[qi] @ vecs[j]) for qi, j in pairs}


def _global_candidates(q: Evidence, qi: int, order: np.ndarray, ids: np.ndarray, kv: int) -> list[dict[str, Any]]:
    """Image ``qi``'s global top-k in ``order`` (verified ones re-ranked), with their verification."""
    rr, specific = q.reranked, q.allowed
    cands = []
    for c in order:
        j = int(ids[c])
        if j < 0:
            continue
        v = rr is not None and c < kv
        vs = float(rr.scores[qi, c]) if v else None
        cands.append({"j": j, "score": float(q.topk[qi, c]), "global_rank": int(c) + 1,
                      "verify_score": vs if vs is not None and np.isfinite(vs) else None,
                      "inliers": int(rr.inliers[qi, c]) if v else None,
                      "mirrored": bool(rr.mirrored[qi, c]) if v else None,
                      "pixel_score": finite(rr.pixel[qi, c]) if v else None,
                      "specific": bool(specific[qi, c]) if specific is not None and c < kv else None,
                      "match_kind": "global"})
    return cands


def _add_region_candidates(cands: list[dict[str, Any]], q: Evidence, qi: int,
                           extra_cos: dict[tuple[int, int], float], nulls: dict[str, np.ndarray | None]) -> None:
    """Region candidates of image ``qi`` join ``cands`` (or add their region and object evidence to a global
    candidate); ``match_kind`` names the evidence that decides."""
    reg, obj = q.regions, q.objects
    listed = {c["j"] for c in cands}
    for rc, (s, j, b) in enumerate(zip(reg.scores[qi], reg.ids[qi], reg.boxes[qi])):
        j = int(j)
        if j < 0:
            continue
        hit = next((c for c in cands if c["j"] == j), None)
        if hit is None and j not in listed:
            hit = {"j": j, "score": extra_cos.get((qi, j)), "global_rank": None, "verify_score": None,
                   "inliers": None, "mirrored": None, "match_kind": "region"}
            cands.append(hit)
        if hit is None:
            continue
        hit["region_score"] = float(s)
        hit["query_box"] = _box(b)
        if reg.votes is not None and np.isfinite(reg.votes[qi, rc]):
            hit["local_votes"] = float(reg.votes[qi, rc])
        if reg.local_only is not None and reg.local_only[qi, rc] and hit["match_kind"] != "global":
            hit["match_kind"] = "local"  # no window ranked it: local features brought it in
        elif reg.is_partial(qi, rc):
            hit["match_kind"] = "region"  # the best evidence is a window, not the whole image
        if obj is not None and np.isfinite(obj.scores[qi, rc]):
            hit["object_score"] = float(obj.scores[qi, rc])
            hit["object_box"] = _box(obj.query_boxes[qi, rc])
            hit["object_train_box"] = _box(obj.train_boxes[qi, rc])
            if nulls.get("object") is not None and \
                    _strength(hit, nulls, only="object") <= _strength(hit, nulls, skip="object"):
                hit["match_kind"] = "object"  # the object found in the generation decides


def _row(rec: Any, r: int, c: dict[str, Any], train: dict[str, list[Any]],
         train_size: Callable[[int], tuple[int, int] | None] | None, dups: np.ndarray | None,
         verdict: tuple[float, bool, float]) -> dict[str, Any]:
    """One ``matches.csv`` row: rank ``r`` (0-based) candidate ``c`` of record ``rec``; the verdict on rank 1."""
    j = c["j"]
    windowed = c["match_kind"] in ("region", "local")  # the evidence box is its best window
    size = train_size(j) if train_size is not None and windowed else None
    obj = c["match_kind"] == "object"
    v, rep, p = verdict
    return {
        "query_path": rec.path, "query_id": rec.id, "query_caption": rec.caption, "rank": r + 1,
        "train_path": train["path"][j], "train_id": train["id"][j], "train_caption": train["caption"][j],
        "score": c["score"], "global_rank": c["global_rank"], "verify_score": c["verify_score"],
        "inliers": c["inliers"], "mirrored": c["mirrored"], "pixel_score": c.get("pixel_score"),
        "specific": c.get("specific"), "match_kind": c["match_kind"], "region_score": c.get("region_score"),
        "object_score": c.get("object_score"), "local_votes": c.get("local_votes"),
        "query_box": c.get("object_box") if obj else c.get("query_box") if windowed else None,
        "train_box": c.get("object_train_box") if obj else _box([0, 0, size[0], size[1]]) if size else None,
        "verdict_score": float(v) if r == 0 else None,
        "is_replica": bool(rep) if r == 0 else None,
        "p_value": float(p) if r == 0 and np.isfinite(p) else None,
        "train_dup_count": int(dups[j]) if dups is not None else None,
    }


def _strength(c: dict[str, Any], nulls: dict[str, np.ndarray | None], only: str | None = None,
              skip: str | None = None) -> tuple[float, float]:
    """Sort key: (smallest channel p-value, -best raw score); without nulls, by the raw score alone. The
    p-values are the fusion's (smooth tails, pixel-level channels on -log(1 - s): ``calibration.channel_p_values``),
    so two candidates beyond every null score do not tie: a pasted object at R^2 0.998 outranks a look-alike
    at 0.94 whose global cosine is higher.
    ``only`` / ``skip``: restrict to, or leave out, one channel (by its null's name). A candidate marked not
    ``specific`` has no verified or pixel evidence."""
    pv = []
    for key, name in ((c.column, c.name) for c in SPECS):
        if (only is not None and name != only) or name == skip:
            continue
        if c.get("specific") is False and name in GATED:
            continue
        null = nulls.get(name)
        v = c.get(key)
        if v is not None and null is not None and len(null):
            pv.append(float(channel_p_values(null, np.array([v]), name in PIXEL_LEVEL)[0]))
    raw = max((c.get(x) for x in ("score", "region_score") if c.get(x) is not None), default=-np.inf)
    return (min(pv) if pv else 1.0, -raw)


__all__ = ["match_rows", "reference_top"]


def reference_top(paths: Sequence[str], verdict: np.ndarray, threshold: float, channels: dict[str, np.ndarray | None],
                  matched: dict[str, Sequence[str] | None], n: int = 5) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``n`` reference images with the highest verdict scores: the images that set a ``--reference``
    threshold, each with its channel scores and best-matching training image (``matched``: per channel,
    the training path behind that channel's score), and a warning when one of those at or above the
    threshold has a pixel-level score >= ``COPY_LIKE``. A reference set meant to hold no copies sometimes
    does (an icon theme's emblem drawn into another icon of the theme): such images raise the threshold and
    hide real replicas, so the user should look at them. A second warning names a reference image at or above
    the threshold whose SSCD cosine to its best training match is ``LOOK_ALIKE`` or more without a copy-like
    pixel score: a held-out image that shares a drawing with a training image (a template, a series, a shared
    frame) raises the threshold over every copy less similar than it."""
    order = np.argsort(-np.asarray(verdict, np.float64), kind="stable")[:n]
    likes = copy_like(channels.get("pixel"), channels.get("object"), len(verdict))
    top, named, alike = [], [], []
    for i in order:
        row: dict[str, Any] = {"path": paths[int(i)], "verdict": round(float(verdict[i]), 6),
                               "at_or_above_threshold": bool(verdict[i] >= threshold)}
        for name, vals in channels.items():
            if vals is not None and np.isfinite(vals[i]):
                row[name] = round(float(vals[i]), 6)
        for name, who in matched.items():
            if who is not None and who[int(i)]:
                row[f"{name}_match"] = who[int(i)]
        if row["at_or_above_threshold"] and likes[i]:
            named.append(row["path"])
        elif row["at_or_above_threshold"] and row.get("global", -1.0) >= LOOK_ALIKE:
            alike.append(f"{row['path']} (SSCD {row['global']:.2f} to {row.get('global_match', '?')})")
        top.append(row)
    warnings = [f"{len(named)} reference image(s) that set the threshold score like copies of training "
                f"images (pixel-level score >= {COPY_LIKE}): {', '.join(named)}. If they are copies, the "
                "threshold is too high and hides replicas: look at summary.json calibration_top and remove "
                "them from the reference set (or audit with --drop-reference-copies)"] if named else []
    if alike:
        warnings.append(f"the threshold is set by {len(alike)} reference image(s) that look like a training image "
                        f"(SSCD cosine >= {LOOK_ALIKE}, SSCD's own copy threshold): {'; '.join(alike)}. If one "
                        "shares a drawing or photograph with its match (a template, a series, a shared frame), "
                        "every copy that scores under it goes unflagged: remove such images from the reference set, "
                        "or add more reference images so that one pair does not set the threshold")
    return top, warnings
