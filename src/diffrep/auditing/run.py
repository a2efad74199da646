"""``diffrep audit``: match generated images against a training index and give calibrated verdicts."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .. import __version__
from ..decode import DEFAULT_MAX_PIXELS
from ..descriptors import Descriptor
from ..embedding import embed_source
from ..errors import CalibrationError, DiffrepError, SourceError
from ..fsutil import DirLock, ensure_writable_dir
from ..indexing.build import check_options, resolve_descriptor
from ..indexing.load import LoadedIndex, open_index
from ..progress import ProgressCallback, emit
from ..report import REPORT_FILES
from ..report.tables import write_distributions, write_matches, write_skipped, write_summary
from .background import background_scores, train_null
from .duplication import dup_counts as dup_counts_for, duplication_summary
from .calibration import Calibration, calibrate, fuse_channels
from .captions import caption_analysis
from .evidence import GATED, PIXEL_LEVEL, copy_like, match_rows, reference_top
from .rerank import Reranked, best_scores, load_image, verify_candidates
from ..descriptors.regions import RegionConfig, RegionEmbedder
from ..sources import read_location
from .objects import ObjectConfig, ObjectMatcher, ObjectMatches, object_search
from ..indexing.local import LocalConfig, open_local
from .partial import RegionMatches, region_search
from .specificity import SpecificityConfig, gate_pixel_channels
from .stats import score_stats
from .verify import Verifier, VerifyConfig

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
    verdict_scores: np.ndarray | None = None  # (n,) the score the verdict thresholds
    query_vectors: np.ndarray | None = None  # (n, d) the queries' global descriptors
    reference_vectors: np.ndarray | None = None  # (m, d) the reference images' descriptors, when given

    @property
    def replication_rate(self) -> float:
        return float(self.summary["replication_rate"])


def audit(source: PathLike | Sequence[PathLike], index: PathLike | LoadedIndex, out: PathLike, *,
          reference: PathLike | Sequence[PathLike] | None = None, fpr: float = 0.01,
          threshold: float | None = None, top_k: int = 5, descriptor: str | Descriptor | None = None,
          captions: PathLike | None = None, reference_captions: PathLike | None = None,
          batch_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
          background_sample: int = 10_000, seed: int = 0, verify: bool = True, verify_k: int = 3,
          verify_config: VerifyConfig | None = None, verify_background_sample: int = 1000,
          dup_counts: bool | None = None, partial: bool = False, partial_k: int = 10,
          region_config: RegionConfig | None = None, partial_background_sample: int = 300,
          object_config: ObjectConfig | None = None, local_k: int = 10,
          local_config: LocalConfig | None = None, drop_reference_copies: bool = False,
          pixel: bool = True, specificity: SpecificityConfig | None = SpecificityConfig(),
          progress: Optional[ProgressCallback] = None) -> AuditResult:
    """Audit the generated images in ``source`` against the training ``index``; write results to ``out``.

    Verdict score: with ``verify`` (default) each query's top ``verify_k`` candidates are aligned and
    compared pixel-wise (``diffrep.auditing.verify``), re-ranked, and the verified score is fused with the
    SSCD top-1 cosine; without it, the SSCD top-1 cosine alone (the paper's statistic). With ``partial``
    every window of each generation is searched too (``diffrep.auditing.partial``): the best window's
    cosine joins the fusion as a channel, and each of the ``partial_k`` region candidates' objects is
    searched for in the generation at the pixel level (``diffrep.auditing.objects``), the best object
    score joining as another channel, so training objects pasted into part of a generation are found; up to
    ``local_k`` more candidates per image come from local features (``diffrep.indexing.local``, built in the
    index directory on first use; 0 turns it off). Threshold:
    calibrated at ``fpr`` on ``reference`` (held-out real images, scored by the same pipeline) if given,
    else on the train-vs-train background; ``threshold`` instead applies a fixed cosine threshold to the
    SSCD top-1 (the paper's rule, no verification). See ``diffrep.auditing.calibration``.
    ``drop_reference_copies``: reference images whose object or pixel score is >= ``evidence.COPY_LIKE``
    are taken to be copies of training images and left out of the null (listed in summary.json).
    ``specificity`` (with ``partial`` and verification; None turns it off): verified and pixel scores count
    only for candidates that the global or region score singles out among distinct training images
    (``diffrep.auditing.specificity``), for the queries and the null alike."""
    t0 = time.perf_counter()
    if not 0 < fpr < 1:  # checked before any work
        raise CalibrationError(f"target false-positive rate must be between 0 and 1, got {fpr}")
    if top_k < 1 or verify_k < 1 or partial_k < 1 or local_k < 0:
        raise DiffrepError(f"--top-k, --verify-k and --partial-k must be at least 1 and --local-k at least 0 "
                           f"(got {top_k}, {verify_k}, {partial_k}, {local_k})")
    check_options(batch_size=batch_size, max_pixels=max_pixels)
    out_dir = ensure_writable_dir(out, "output directory")
    with DirLock(out_dir, "audit directory"):
        return _audit(source, index, out_dir, reference=reference, fpr=fpr, threshold=threshold, top_k=top_k,
                      descriptor=descriptor, captions=captions, reference_captions=reference_captions,
                      batch_size=batch_size, max_pixels=max_pixels, background_sample=background_sample, seed=seed,
                      verify=verify, verify_k=verify_k, verify_config=verify_config,
                      verify_background_sample=verify_background_sample, dup_counts=dup_counts, partial=partial,
                      partial_k=partial_k, region_config=region_config,
                      partial_background_sample=partial_background_sample, object_config=object_config,
                      local_k=local_k, local_config=local_config, drop_reference_copies=drop_reference_copies,
                      pixel=pixel, specificity=specificity, progress=progress, t0=t0)


def _audit(source: PathLike | Sequence[PathLike], index: PathLike | LoadedIndex, out_dir: Path, *,
           reference: PathLike | Sequence[PathLike] | None, fpr: float, threshold: float | None, top_k: int,
           descriptor: str | Descriptor | None, captions: PathLike | None, reference_captions: PathLike | None,
           batch_size: int | None, max_pixels: int, background_sample: int, seed: int, verify: bool, verify_k: int,
           verify_config: VerifyConfig | None, verify_background_sample: int, dup_counts: bool | None, partial: bool,
           partial_k: int, region_config: RegionConfig | None, partial_background_sample: int,
           object_config: ObjectConfig | None, local_k: int, local_config: LocalConfig | None,
           drop_reference_copies: bool, pixel: bool, specificity: SpecificityConfig | None,
           progress: Optional[ProgressCallback], t0: float) -> AuditResult:
    idx = index if isinstance(index, LoadedIndex) else open_index(index)
    d = resolve_descriptor(idx.dir, descriptor, **({"batch_size": batch_size} if batch_size else {}))
    warnings: list[str] = []
    if idx.pending_chunks:
        warnings.append(f"the index has {idx.pending_chunks} chunk(s) from an unfinished indexing run that are "
                        "not searched; re-run `diffrep index` to include them")
    if len(idx) == 0:
        raise SourceError(f"index {idx.dir.root} holds no images; index a training set first")

    queries = embed_source(source, d, captions=captions, stage="embed-queries", max_pixels=max_pixels,
                           batch_size=batch_size, exclude=out_dir, progress=progress)
    write_skipped(out_dir / "skipped.csv", queries.skipped)
    if not queries.records:
        raise SourceError(f"none of the images in {source} could be decoded ({len(queries.skipped)} skipped, "
                          f"reasons in {out_dir / 'skipped.csv'})")
    t_embed = time.perf_counter()
    k = max(1, min(top_k, len(idx)))
    emit(progress, "search", 0, len(queries.records))
    scores, ids = idx.search(queries.vectors, k)
    emit(progress, "search", len(queries.records), len(queries.records))

    # an explicit threshold is the paper's rule (a fixed cosine): no verification, no calibration
    verifier = Verifier(verify_config) if verify and threshold is None else None
    kv = min(verify_k, k)
    train_path = idx.column("path")
    train_id = idx.column("id")
    train_cap = idx.column("caption")
    missing: set[str] = set()
    dups = dup_counts_for(idx, dup_counts, progress)

    def verified(records: list, cand: np.ndarray, stage: str) -> tuple[np.ndarray, Reranked]:
        assert verifier is not None
        rr = verify_candidates(lambda i: load_image(records[i].read, max_pixels, verifier.config.size), len(records),
                               cand[:, :kv], train_path, verifier, stage=stage, progress=progress)
        missing.update(rr.missing)
        return best_scores(rr.scores), rr

    q_rr: Reranked | None = None
    q_verified = q_pixel = None
    if verifier is not None:
        q_verified, q_rr = verified(queries.records, ids, "verify-queries")
        q_pixel = best_scores(q_rr.pixel)
    emb = RegionEmbedder(d, region_config) if partial else None
    local = open_local(idx, local_config or LocalConfig(), progress=progress) if partial and local_k else None

    def regions(readers: list, stage: str, self_ids: np.ndarray | None = None) -> RegionMatches:
        assert emb is not None
        side = max(emb.config.sizes)
        return region_search(lambda i: load_image(readers[i], max_pixels, side), len(readers), idx, emb,
                             k=min(partial_k, len(idx)), self_ids=self_ids, stage=stage, local=local,
                             local_k=min(local_k, len(idx)), train_vectors=idx.vectors, progress=progress)

    matcher = ObjectMatcher(object_config) if partial else None
    size_of = _train_size(train_path) if partial else None

    def objects(records: list, rm: RegionMatches, stage: str) -> ObjectMatches:
        assert matcher is not None
        return object_search(lambda i: load_image(records[i], max_pixels, matcher.config.fine), len(records),
                             rm.ids, train_path, matcher=matcher, stage=stage, progress=progress)

    q_reg = q_obj = None
    if emb is not None:
        q_readers = [r.read for r in queries.records]
        q_reg = regions(q_readers, "regions-queries")
        q_obj = objects(q_readers, q_reg, "objects-queries")
        missing.update(q_obj.missing)
    spec = specificity if emb is not None and verifier is not None else None
    q_allowed = q_void = null_void = None

    def gate(rr: Reranked, g_scores: np.ndarray, g_ids: np.ndarray,
             rm: RegionMatches | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(verified, pixel, void, allowed) of verified candidates g_ids[:, :kv] (specificity.py)."""
        assert spec is not None
        return gate_pixel_channels(rr.scores, rr.pixel, g_ids[:, :rr.scores.shape[1]], g_scores, g_ids,
                                   None if rm is None else rm.scores, None if rm is None else rm.ids,
                                   idx.vectors, spec)

    if spec is not None and q_rr is not None:
        q_verified, q_pixel, q_void, q_allowed = gate(q_rr, scores, ids, q_reg)
    ref_region = ref_object = ref_reg = ref_obj = None

    ref_scores = ref_verified = ref_pixel = ref_vectors = None
    ref_skipped: list[tuple[str, str]] = []
    if reference is not None:
        ref = embed_source(reference, d, captions=reference_captions, stage="embed-reference",
                           max_pixels=max_pixels, batch_size=batch_size, exclude=out_dir, progress=progress)
        ref_skipped, ref_vectors = ref.skipped, ref.vectors
        if not ref.records:
            raise SourceError(f"no reference image in {reference} could be decoded; check the folder")
        r_scores, r_ids = idx.search(ref.vectors, k if spec is not None else kv)
        ref_scores = r_scores[:, 0]
        if verifier is not None:
            ref_verified, ref_rr = verified(ref.records, r_ids, "verify-reference")
            ref_pixel = best_scores(ref_rr.pixel)
        if emb is not None:
            ref_readers = [r.read for r in ref.records]
            ref_reg = regions(ref_readers, "regions-reference")
            ref_region = ref_reg.top
            ref_obj = objects(ref_readers, ref_reg, "objects-reference")
            ref_object = ref_obj.top
        if spec is not None and verifier is not None:
            ref_verified, ref_pixel, null_void, _ = gate(ref_rr, r_scores, r_ids, ref_reg)
    bg = background_scores(idx, sample=background_sample, seed=seed, progress=progress)

    # the verdict score: the paper's global top-1 cosine, or its fusion with the verified score
    null_g = null_v = null_r = null_p = null_o = None
    if ref_scores is not None:
        null_g, null_v, null_r, null_p, null_o = ref_scores, ref_verified, ref_region, ref_pixel, ref_object
    elif threshold is None and (verifier is not None or emb is not None):
        sample = min(verify_background_sample, partial_background_sample) if emb else verify_background_sample

        def partial_null(readers: list, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, RegionMatches]:
            rm = regions(readers, "regions-background", ids)
            return rm.top, objects(readers, rm, "objects-background").top, rm

        null_g, null_v, null_r, null_p, null_o, null_void = train_null(
            idx, verifier, kv, sample, seed, max_pixels, progress, partial_null if emb else None,
            gate=(lambda *a: gate(*a)[:3]) if spec is not None else None, global_k=k)
    q_region = q_reg.top if q_reg is not None else None
    q_object = q_obj.top if q_obj is not None else None
    if not pixel:  # the pixel channel switched off: it neither joins the fusion nor orders the evidence
        q_pixel = null_p = None
    ref_keep = np.ones(0 if ref_scores is None else len(ref_scores), bool)
    if drop_reference_copies and ref_scores is not None:
        ref_keep = ~copy_like(null_p, null_o, len(ref_scores))
        if ref_keep.any():
            null_g, null_v, null_r, null_p, null_o, null_void = (
                None if c is None else c[ref_keep] for c in (null_g, null_v, null_r, null_p, null_o, null_void))
        else:
            ref_keep[:] = True
            warnings.append("every reference image scores like a copy of a training image; none was dropped")
    dropped = [r.path for r, k in zip(ref.records, ref_keep) if not k] if ref_scores is not None else []
    # (channel, description, null, queries): the pixel-level channels (evidence.PIXEL_LEVEL) compare the whole
    # content at one alignment and may decide on their own; the SSCD cosine, the edge score and the region
    # cosine are all fooled by look-alikes that share a drawn part, so they must agree
    # (calibration.fuse_channels); the gated channels (evidence.GATED: verified and pixel) are void (p = 1)
    # where no candidate is specific (specificity.py)
    channels = [c for c in (
        ("global", "SSCD top-1 cosine", null_g, scores[:, 0]),
        ("verified", f"verified score (aligned gradient correlation, best of the top {kv})", null_v, q_verified),
        ("region", "region score (best window cosine)", null_r, q_region),
        ("pixel", f"pixel score (blurred-intensity correlation, best of the top {kv})", null_p, q_pixel),
        ("object", "object score (masked template R^2, best of the region candidates)", null_o, q_object),
    ) if c[2] is not None and c[3] is not None]
    fused = bool(threshold is None and len(channels) > 1 and len(channels[0][2]))
    if fused:
        pixel_level = tuple(i for i, c in enumerate(channels) if c[0] in PIXEL_LEVEL)  # decide alone; saturate at 1
        void = None if null_void is None or q_void is None else \
            {i: (null_void, q_void) for i, c in enumerate(channels) if c[0] in GATED}
        null_verdict, q_verdict = fuse_channels([c[2] for c in channels], [c[3] for c in channels],
                                                alone=pixel_level, saturating=pixel_level, void=void)
        cal = calibrate(reference=null_verdict if ref_scores is not None else None,
                        background=null_verdict if ref_scores is None else None, fpr=fpr,
                        descriptor_name="fused")
    else:
        # explicit threshold with --partial: on the best of the global and the region cosine
        q_verdict = scores[:, 0] if q_region is None else np.maximum(scores[:, 0], q_region)
        cal = calibrate(reference=ref_scores, background=bg, fpr=fpr, threshold=threshold, descriptor_name=d.name)
    t_cal = time.perf_counter()
    ref_top: list[dict[str, Any]] | None = None
    if fused and ref_scores is not None:
        best_obj = _best_object_match(ref_reg, ref_obj, train_path)
        ref_top, top_warnings = reference_top(
            [r.path for r, k in zip(ref.records, ref_keep) if k], null_verdict, cal.threshold,
            {"global": null_g, "verified": null_v, "region": null_r, "pixel": null_p, "object": null_o},
            {"global": [train_path[int(j)] if j >= 0 else "" for j in r_ids[ref_keep, 0]],
             "object": None if best_obj is None else [b for b, k in zip(best_obj, ref_keep) if k]})
        if dropped:
            top_warnings.append(f"{len(dropped)} reference image(s) scored like copies of training images and "
                                "were left out of the null (--drop-reference-copies): reference_copies_dropped")
        warnings = warnings + top_warnings

    top1 = scores[:, 0]
    p = cal.p_values(q_verdict)
    rep = cal.is_replica(q_verdict)
    rows, best = match_rows(
        queries.records, scores, ids, kv=kv, q_rr=q_rr, q_verdict=q_verdict, rep=rep, p=p,
        train={"path": train_path, "id": train_id, "caption": train_cap}, dups=dups, q_reg=q_reg, q_obj=q_obj,
        q_vectors=queries.vectors, train_vectors=idx.vectors,
        nulls={"global": null_g, "verified": null_v, "region": null_r, "pixel": null_p, "object": null_o}
        if fused else None, train_size=size_of, specific=q_allowed)
    for name in REPORT_FILES:  # a report of earlier results must not sit beside these
        (out_dir / name).unlink(missing_ok=True)
    write_matches(out_dir, rows)
    write_distributions(out_dir, {
        "query_top1": top1, "query_verified": q_verified, "query_verdict": q_verdict, "query_region": q_region,
        "null_region": null_r, "query_pixel": q_pixel, "null_pixel": null_p, "query_object": q_object,
        "null_object": null_o,
        "reference_top1": ref_scores, "reference_verified": ref_verified, "background": bg,
        "null_verdict": cal.null, "threshold": np.array([cal.threshold]),
    })

    n_rep = int(rep.sum())
    summary = {
        "diffrep_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "queries": len(queries.records),
        "skipped": len(queries.skipped),
        "replicas": n_rep,
        "replication_rate": n_rep / len(queries.records),
        "calibration": cal.describe(),
        "calibration_top": ref_top,
        "reference_copies_dropped": dropped,
        "verdict_score": _verdict_description(fused, channels, q_region is not None)
        + ("; the verified and pixel p-values are 1 for an image none of whose verified candidates is specific "
           "(summary specificity)" if fused and q_void is not None and null_void is not None else ""),
        "partial": None if q_reg is None else {
            "windows_per_image": q_reg.windows, "seconds_per_image": round(q_reg.seconds / max(1, len(q_reg.ids)), 4),
            "config": emb.config.describe() if emb is not None else None, "candidates_per_image": partial_k,
            "region": score_stats(q_region), "reference_region": score_stats(null_r) if null_r is not None else None,
            "object_matching": matcher.config.describe() if matcher is not None else None,
            "object_seconds_per_image": round(q_obj.seconds / max(1, len(q_obj.scores)), 4) if q_obj else None,
            "object": score_stats(q_object), "reference_object": score_stats(null_o) if null_o is not None else None,
            "object_matches": int(sum(1 for r in rows if r["rank"] == 1 and r["match_kind"] == "object")),
            "partial_matches": int(sum(1 for r in rows if r["rank"] == 1 and r["match_kind"] == "region")),
            "local_features": None if local is None else {
                **local.config.describe(), "candidates_per_image": local_k, "training_descriptors": local.descriptors,
                "index": local.params.get("type"),
                "seconds_per_image": round(q_reg.local_seconds / max(1, len(q_reg.ids)), 4),
                "local_matches": int(sum(1 for r in rows if r["rank"] == 1 and r["match_kind"] == "local"))}},
        "verification": verifier.config.describe() if verifier is not None else None,
        "specificity": None if spec is None or q_void is None else {
            **spec.describe(), "queries_void": int(q_void.sum()),
            "null_void": None if null_void is None else int(null_void.sum())},
        "verdict": score_stats(q_verdict, paper_threshold=0.5),
        "verified": score_stats(q_verified) if q_verified is not None else None,
        "reference_verified": score_stats(ref_verified) if ref_verified is not None else None,
        "top1": score_stats(top1),
        "reference": score_stats(ref_scores) if ref_scores is not None else None,
        "reference_skipped": len(ref_skipped),
        "background": score_stats(bg),
        "duplication": duplication_summary(dups, best, rep),
        "captions": caption_analysis([r.caption for r in queries.records],
                                     [train_cap[int(j)] for j in best], rep.tolist()),
        "index": {"path": str(idx.dir.root), "images": len(idx), "descriptor": idx.fingerprint,
                  "type": idx.meta.get("index", {}).get("type")},
        "top_k": k,
        "warnings": warnings + cal.warnings + ([f"{len(missing)} training image(s) named in the index could "
                                                 "not be read for verification (moved or deleted?); they "
                                                 "scored 0"] if missing else []),
        "timings_s": {"embed_queries": round(t_embed - t0, 3), "calibrate": round(t_cal - t_embed, 3),
                      "total": round(time.perf_counter() - t0, 3)},
        "meaning": {
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
        },
    }
    write_summary(out_dir, summary)
    return AuditResult(out_dir, summary, cal, [r.path for r in queries.records], top1,
                       [train_path[int(j)] for j in best], rep, p, scores, ids, queries.skipped,
                       verdict_scores=q_verdict, query_vectors=queries.vectors, reference_vectors=ref_vectors)


def _best_object_match(rm: RegionMatches | None, om: ObjectMatches | None,
                       train_path: Sequence[str]) -> list[str] | None:
    """Per image, the training path of its best object score ("" when none was compared)."""
    if rm is None or om is None or not om.scores.shape[1]:
        return None
    s = np.where(np.isfinite(om.scores), om.scores, -np.inf)
    best = s.argmax(axis=1)
    return [train_path[int(rm.ids[i, c])] if np.isfinite(s[i, c]) and rm.ids[i, c] >= 0 else ""
            for i, c in enumerate(best)]


def _verdict_description(fused: bool, channels: list[tuple], partial: bool) -> str:
    if fused:
        alone = [c[1].split(" (")[0] for c in channels if c[0] in PIXEL_LEVEL]
        rest = [c[1] for c in channels if c[0] not in PIXEL_LEVEL]
        return (f"fused: 1 - min of the geometric mean of the two smallest p-values of ({'; '.join(rest)})"
                + (f" and the own p-values of the {' and the '.join(alone)}" if alone else "")
                + " against the null (smooth-tailed conformal p-values, leave-one-out for the null)")
    if partial:
        return "global: best of the SSCD top-1 cosine and the region score (explicit threshold)"
    return "global: SSCD top-1 cosine"


def _train_size(paths: list[str]) -> Callable[[int], tuple[int, int] | None]:
    """Width and height of a training image from its header (cached; None when unreadable)."""
    from ..decode import DecodeError, image_size

    @functools.lru_cache(maxsize=65536)
    def size(j: int) -> tuple[int, int] | None:
        try:
            return image_size(read_location(paths[j]))
        except (OSError, DecodeError):
            return None

    return size
