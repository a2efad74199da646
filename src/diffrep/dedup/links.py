"""Dedup's candidate search depth on approximate indexes, and link thresholds calibrated on held-out images."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..defaults import DEFAULTS
from ..matching.verify import Verifier, VerifyConfig
from ..progress import ProgressCallback

PathLike = str | Path
# Candidate search on an approximate index: near-duplicates sit in the same or a neighbouring k-means cell /
# graph neighbourhood, so dedup probes far fewer cells than retrieval does (the index's stored nprobe is
# tuned for retrieval recall, e.g. 125 of 4,000 cells at 1M vectors). Measured in docs/dedup.md.
DEDUP_NPROBE = DEFAULTS["dedup"]["nprobe"]
DEDUP_EF_SEARCH = 64


def candidate_search_params(fx: Any, k: int, nprobe: int) -> dict[str, Any]:
    """Set dedup's search depth on a loaded FAISS index (IVF: ``nprobe`` cells at most; HNSW: efSearch
    ``max(DEDUP_EF_SEARCH, 2k)``; ``nprobe`` >= 1, checked by ``dedup``); returns what the search uses,
    for summary.json."""
    import faiss

    if hasattr(fx, "hnsw"):
        fx.hnsw.efSearch = min(int(fx.hnsw.efSearch), max(DEDUP_EF_SEARCH, 2 * k))
        return {"index": "hnsw", "efSearch": int(fx.hnsw.efSearch)}
    try:
        ivf = faiss.extract_index_ivf(fx)
    except RuntimeError:
        return {"index": "flat (exact)"}
    ivf.nprobe = min(int(ivf.nprobe), int(nprobe))
    return {"index": "ivf", "nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe)}


def calibrate_links(idx: Any, reference: PathLike | Sequence[PathLike], fpr: float, *, verify: bool,
                    verify_config: VerifyConfig | None, max_pixels: int,
                    progress: Optional[ProgressCallback]) -> tuple[float, float, dict[str, Any]]:
    """Link thresholds at a target false-link rate, from held-out ``reference`` images.

    Each reference image is matched against the collection (its nearest image by SSCD, then verified
    pixel-wise like a candidate pair): these are scores of images with *no* duplicate in the collection.
    Each rule's threshold is set so at most ``fpr / 2`` of them would pass it (Bonferroni over the two
    rules), so a held-out image would be linked to something with probability about ``fpr`` at most."""
    from ..decode import load_image
    from ..indexing.build import resolve_descriptor
    from ..matching.calibration import threshold_at_fpr
    from ..matching.reference import search_reference
    from ..matching.rerank import best_scores, verify_candidates

    ref = search_reference(idx, reference, resolve_descriptor(idx.dir, None), 1, max_pixels=max_pixels,
                           progress=progress)
    null_g = ref.scores[:, 0].astype(np.float64)
    per_rule = fpr / 2 if verify else fpr
    t_g, warnings = threshold_at_fpr(null_g, per_rule)
    t_v = float("inf")
    null_v = None
    if verify:
        verifier = Verifier(verify_config)
        readers = ref.readers
        rr = verify_candidates(lambda i: load_image(readers[i], max_pixels, verifier.config.size), len(readers),
                               ref.ids[:, :1], idx.lookup("path"), verifier, stage="verify-reference",
                               progress=progress)
        null_v = np.nan_to_num(best_scores(rr.scores), nan=0.0)
        t_v, more = threshold_at_fpr(null_v, per_rule)
        warnings += more
    # links need score >= threshold: step just above the calibrated order statistic (scores are float32)
    up = lambda t: float(np.nextafter(np.float32(t), np.float32(np.inf)))  # noqa: E731
    t_g, t_v = up(t_g), up(t_v)
    info = {"source": "reference", "target_fpr": fpr, "per_rule_fpr": per_rule, "reference_images": len(ref.images.records),
            "reference_skipped": len(ref.images.skipped), "global_threshold": t_g,
            "verified_threshold": t_v if verify else None,
            "null_global_p50_p99": [float(np.percentile(null_g, 50)), float(np.percentile(null_g, 99))],
            "null_verified_p50_p99": None if null_v is None else [float(np.percentile(null_v, 50)),
                                                                   float(np.percentile(null_v, 99))],
            "warnings": warnings,
            "meaning": "a held-out image with no duplicate in the collection passes each link rule with "
                       "probability <= per_rule_fpr (measured on the reference images)"}
    return t_g, t_v, info
