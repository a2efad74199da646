"""``diffrep audit``: match generated images against a training index and give calibrated verdicts."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .. import __version__
from ..decode import DEFAULT_MAX_PIXELS
from ..descriptors import Descriptor
from ..embedding import embed_source
from ..errors import SourceError
from ..fsutil import ensure_writable_dir
from ..indexing.build import resolve_descriptor
from ..indexing.load import LoadedIndex, open_index
from ..progress import ProgressCallback, emit
from ..report.tables import write_matches, write_skipped, write_summary
from .background import background_scores
from .calibration import Calibration, calibrate
from .stats import score_stats

PathLike = str | Path


@dataclass
class AuditResult:
    """Everything ``audit()`` computed; the same content as the files in ``out_dir``."""

    out_dir: Path
    summary: dict[str, Any]
    calibration: Calibration
    query_paths: list[str]
    top1_scores: np.ndarray  # (n,)
    top1_train_paths: list[str]
    is_replica: np.ndarray  # (n,) bool
    p_values: np.ndarray  # (n,)
    scores: np.ndarray  # (n, k)
    train_ids: np.ndarray  # (n, k) FAISS ids, -1 when missing
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def replication_rate(self) -> float:
        return float(self.summary["replication_rate"])


def audit(source: PathLike | Sequence[PathLike], index: PathLike | LoadedIndex, out: PathLike, *,
          reference: PathLike | Sequence[PathLike] | None = None, fpr: float = 0.01,
          threshold: float | None = None, top_k: int = 5, descriptor: str | Descriptor | None = None,
          captions: PathLike | None = None, reference_captions: PathLike | None = None,
          batch_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
          background_sample: int = 10_000, seed: int = 0,
          progress: Optional[ProgressCallback] = None) -> AuditResult:
    """Audit the generated images in ``source`` against the training ``index``; write results to ``out``.

    Threshold: ``threshold`` if given, else calibrated at ``fpr`` on ``reference`` (held-out real images)
    if given, else on the train-vs-train background. See ``diffrep.auditing.calibration``."""
    t0 = time.perf_counter()
    out_dir = ensure_writable_dir(out, "output directory")
    idx = index if isinstance(index, LoadedIndex) else open_index(index)
    d = resolve_descriptor(idx.dir, descriptor, batch_size=batch_size) if batch_size else \
        resolve_descriptor(idx.dir, descriptor)
    warnings: list[str] = []
    if idx.pending_chunks:
        warnings.append(f"the index has {idx.pending_chunks} chunk(s) from an unfinished indexing run that are "
                        "not searched; re-run `diffrep index` to include them")
    if len(idx) == 0:
        raise SourceError(f"index {idx.dir.root} holds no images; index a training set first")

    queries = embed_source(source, d, captions=captions, stage="embed-queries", max_pixels=max_pixels,
                           progress=progress)
    write_skipped(out_dir / "skipped.csv", queries.skipped)
    if not queries.records:
        raise SourceError(f"none of the images in {source} could be decoded ({len(queries.skipped)} skipped, "
                          f"reasons in {out_dir / 'skipped.csv'})")
    t_embed = time.perf_counter()
    k = max(1, min(top_k, len(idx)))
    emit(progress, "search", 0, len(queries.records))
    scores, ids = idx.search(queries.vectors, k)
    emit(progress, "search", len(queries.records), len(queries.records))

    ref_scores = None
    ref_skipped: list[tuple[str, str]] = []
    if reference is not None:
        ref = embed_source(reference, d, captions=reference_captions, stage="embed-reference",
                           max_pixels=max_pixels, progress=progress)
        ref_skipped = ref.skipped
        if not ref.records:
            raise SourceError(f"no reference image in {reference} could be decoded; check the folder")
        ref_scores = idx.search(ref.vectors, 1)[0][:, 0]
    bg = background_scores(idx, sample=background_sample, seed=seed, progress=progress)
    cal = calibrate(reference=ref_scores, background=bg, fpr=fpr, threshold=threshold, descriptor_name=d.name)
    t_cal = time.perf_counter()

    top1 = scores[:, 0]
    p = cal.p_values(top1)
    rep = cal.is_replica(top1)
    train_path = idx.column("path")
    train_id = idx.column("id")
    train_cap = idx.column("caption")
    rows: list[dict[str, Any]] = []
    for qi, rec in enumerate(queries.records):
        for r in range(k):
            j = int(ids[qi, r])
            if j < 0:
                continue
            rows.append({
                "query_path": rec.path, "query_id": rec.id, "query_caption": rec.caption, "rank": r + 1,
                "train_path": train_path[j], "train_id": train_id[j], "train_caption": train_cap[j],
                "score": float(scores[qi, r]), "is_replica": bool(rep[qi]) if r == 0 else None,
                "p_value": float(p[qi]) if r == 0 and np.isfinite(p[qi]) else None,
            })
    write_matches(out_dir, rows)

    n_rep = int(rep.sum())
    summary = {
        "diffrep_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "queries": len(queries.records),
        "skipped": len(queries.skipped),
        "replicas": n_rep,
        "replication_rate": n_rep / len(queries.records),
        "calibration": cal.describe(),
        "top1": score_stats(top1),
        "reference": score_stats(ref_scores) if ref_scores is not None else None,
        "reference_skipped": len(ref_skipped),
        "background": score_stats(bg),
        "index": {"path": str(idx.dir.root), "images": len(idx), "descriptor": idx.fingerprint,
                  "type": idx.meta.get("index", {}).get("type")},
        "top_k": k,
        "warnings": warnings + cal.warnings,
        "timings_s": {"embed_queries": round(t_embed - t0, 3), "calibrate": round(t_cal - t_embed, 3),
                      "total": round(time.perf_counter() - t0, 3)},
        "meaning": {
            "replication_rate": "share of generated images whose closest training image scores above the threshold",
            "threshold": "score above which a match counts as a replica (see calibration.source)",
            "p_value": "per image: share of null images (reference, else background) scoring at least as high",
            "top1": "statistics of each generated image's best match score",
            "reference": "statistics of held-out real images' best match score (the null when given)",
            "background": "train-vs-train second-nearest-neighbour scores (the paper's background)",
        },
    }
    write_summary(out_dir, summary)
    return AuditResult(out_dir, summary, cal, [r.path for r in queries.records], top1,
                       [train_path[int(j)] for j in ids[:, 0]], rep, p, scores, ids, queries.skipped)
