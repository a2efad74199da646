"""``summary.json`` of an audit: counts, the calibration, statistics per channel, partial-copy and
specificity blocks, duplication and caption analysis, warnings and timings, with one line per number saying
what it means."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from .. import __version__
from .captions import caption_analysis
from .channels import Evidence
from .duplication import duplication_summary
from .stats import score_stats

MEANING = {
    "replication_rate": "share of generated images whose closest training image scores above the threshold",
    "threshold": "score above which a match counts as a replica (see calibration.source)",
    "p_value": "per image: share of null images (reference, else background) scoring at least as high",
    "top1": "statistics of each generated image's best SSCD cosine (the paper's statistic)",
    "verdict": "statistics of the score the verdict thresholds (verified or global)",
    "reference": "statistics of held-out real images' best match score (the null when given)",
    "background": "train-vs-train second-nearest-neighbour scores (the paper's background)",
    "calibration_top": "the reference images with the highest verdict scores (they set the threshold), "
                       "with their channel scores and best training matches: look here when a warning "
                       "says some score like copies",
}


def _kinds(rows: list[dict[str, Any]], kind: str) -> int:
    return int(sum(1 for r in rows if r["rank"] == 1 and r["match_kind"] == kind))


def partial_block(stages: Any, q: Evidence, null: Optional[Evidence], rows: list[dict[str, Any]]) -> Optional[dict]:
    """The ``partial`` block: windows, timings, region and object statistics, local features."""
    reg, obj, c = q.regions, q.objects, stages.config
    if reg is None:
        return None
    null = null or Evidence()
    local = stages.local
    return {
        "windows_per_image": reg.windows, "seconds_per_image": round(reg.seconds / max(1, len(reg.ids)), 4),
        "config": stages.emb.config.describe(), "candidates_per_image": c.partial_k,
        "region": score_stats(q.get("region")),
        "null_region": score_stats(null.get("region")) if null.get("region") is not None else None,
        "object_matching": stages.matcher.config.describe(),
        "object_seconds_per_image": round(obj.seconds / max(1, len(obj.scores)), 4) if obj else None,
        "object": score_stats(q.get("object")),
        "null_object": score_stats(null.get("object")) if null.get("object") is not None else None,
        "object_matches": _kinds(rows, "object"), "partial_matches": _kinds(rows, "region"),
        "local_features": None if local is None else {
            **local.config.describe(), "candidates_per_image": c.local_k, "training_descriptors": local.descriptors,
            "index": local.params.get("type"),
            "seconds_per_image": round(reg.local_seconds / max(1, len(reg.ids)), 4),
            "local_matches": _kinds(rows, "local")},
    }


def build_summary(*, queries: Any, q: Evidence, ref: Optional[Evidence], ref_skipped: int, null: Optional[Evidence],
                  stages: Any, cal: Any, verdict: np.ndarray, rep: np.ndarray, best: np.ndarray, verdict_text: str,
                  calibration_top: Optional[list], dropped: list[str], rows: list[dict[str, Any]],
                  background: np.ndarray, dups: Optional[np.ndarray], idx: Any, top_k: int, warnings: list[str],
                  timings: dict[str, float]) -> dict[str, Any]:
    n_rep = int(rep.sum())
    verifier = stages.config.verifier
    spec = stages.spec
    train_cap = idx.lookup("caption")
    ref = ref or Evidence()
    missing = stages.missing
    return {
        "diffrep_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "queries": len(queries.records),
        "skipped": len(queries.skipped),
        "replicas": n_rep,
        "replication_rate": n_rep / len(queries.records),
        "calibration": cal.describe(),
        "calibration_top": calibration_top,
        "reference_copies_dropped": dropped,
        "verdict_score": verdict_text,
        "partial": partial_block(stages, q, null, rows),
        "verification": verifier.config.describe() if verifier is not None else None,
        "specificity": None if spec is None or q.void is None else {
            **spec.describe(), "queries_void": int(q.void.sum()),
            "null_void": None if null is None or null.void is None else int(null.void.sum())},
        "verdict": score_stats(verdict, paper_threshold=0.5),
        "verified": score_stats(q.get("verified")) if q.get("verified") is not None else None,
        "reference_verified": score_stats(ref.get("verified")) if ref.get("verified") is not None else None,
        "top1": score_stats(q.get("global")),
        "reference": score_stats(ref.get("global")) if ref.get("global") is not None else None,
        "reference_skipped": ref_skipped,
        "background": score_stats(background),
        "duplication": duplication_summary(dups, best, rep),
        "captions": caption_analysis([r.caption for r in queries.records], [train_cap[int(j)] for j in best],
                                     rep.tolist()),
        "index": {"path": str(idx.dir.root), "images": len(idx), "descriptor": idx.fingerprint,
                  "type": idx.meta.get("index", {}).get("type")},
        "top_k": top_k,
        "warnings": warnings + cal.warnings + ([f"{len(missing)} training image(s) named in the index could "
                                                 "not be read for verification (moved or deleted?); they "
                                                 "scored 0"] if missing else []),
        "timings_s": timings,
        "meaning": MEANING,
    }
