"""``diffrep audit``: match generated images against a training index and give calibrated verdicts.

``audit()`` only wires the stages, the way a pipeline's main function wires reader -> writer:
embed and search (``embedding``, ``indexing``) -> per-image evidence for the generations and the null
(``scoring.py``: verify, regions, objects, specificity) -> channels (``channels.py``) -> fused verdict and
calibration (``matching.calibration``) -> rows (``evidence.py``) -> files (``tables.py``, ``summary.py``).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..decode import DecodeError, image_size
from ..defaults import DEFAULTS, POOL_NULL_MODES
from ..descriptors import Descriptor
from ..descriptors.regions import RegionConfig
from ..embedding import EmbeddedSet, embed_source
from ..errors import DiffrepError, SourceError, check_settings
from ..fsutil import DirLock, ensure_writable_dir
from ..indexing.build import check_options, resolve_descriptor
from ..indexing.load import LoadedIndex, open_index
from ..indexing.local import LocalConfig
from ..matching.calibration import Calibration, calibrate, null_size_for
from ..matching.null import background_scores
from ..matching.reference import ReferenceSet, search_reference
from ..matching.verify import Verifier, VerifyConfig
from ..progress import ProgressCallback, emit
from ..sources import read_location, write_skipped
from . import channels as ch
from .channels import Evidence
from .duplication import dup_counts as dup_counts_for
from .evidence import match_rows, reference_top
from .objects import ObjectConfig, ObjectMatches
from .partial import RegionMatches
from .scoring import StageConfig, Stages
from .specificity import SpecificityConfig
from .summary import build_summary
from .tables import REPORT_FILES, write_distributions, write_matches, write_summary

PathLike = str | Path
A = DEFAULTS["audit"]


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
          reference: PathLike | Sequence[PathLike] | None = None, fpr: float = A["fpr"],
          threshold: float | None = None, top_k: int = A["top_k"], descriptor: str | Descriptor | None = None,
          captions: PathLike | None = None, reference_captions: PathLike | None = None,
          batch_size: int | None = None, max_pixels: int = DEFAULTS["decode"]["max_pixels"],
          background_sample: int = A["background_sample"], seed: int = A["seed"], verify: bool = True,
          verify_k: int = A["verify_k"], verify_config: VerifyConfig | None = None,
          verify_background_sample: int = A["verify_background_sample"], dup_counts: bool | None = None,
          partial: bool = False, partial_k: int = A["partial_k"], region_config: RegionConfig | None = None,
          partial_background_sample: int = A["partial_background_sample"], object_config: ObjectConfig | None = None,
          local_k: int = A["local_k"], local_config: LocalConfig | None = None, drop_reference_copies: bool = False,
          pixel: bool = True, specificity: SpecificityConfig | None = SpecificityConfig(),
          pool_null: str = A["pool_null"], embed: Any = None, rows: Any = None, device: str = "auto",
          progress: Optional[ProgressCallback] = None) -> AuditResult:
    """Audit the generated images in ``source`` against the training ``index``; write results to ``out``.

    Verdict score: with ``verify`` (default) each query's top ``verify_k`` candidates are aligned and
    compared pixel-wise (``diffrep.matching.verify``), re-ranked, and the verified score is fused with the
    SSCD top-1 cosine; without it, the SSCD top-1 cosine alone (the paper's statistic). With ``partial``
    every window of each generation is searched too (``diffrep.auditing.partial``): the best window's
    cosine joins the fusion as a channel, and each of the ``partial_k`` region candidates' objects is
    searched for in the generation at the pixel level (``diffrep.auditing.objects``), the best object
    score joining as another channel, so training objects pasted into part of a generation are found; up to
    ``local_k`` more candidates per image come from local features (``diffrep.indexing.local``, built in the
    index directory on first use; 0 turns it off). Threshold:
    calibrated at ``fpr`` on ``reference`` (held-out real images, scored by the same pipeline) if given,
    else on the train-vs-train background; ``threshold`` instead applies a fixed cosine threshold to the
    SSCD top-1 (the paper's rule, no verification). See ``diffrep.matching.calibration``.
    ``drop_reference_copies``: reference images whose object or pixel score is >= ``channels.COPY_LIKE``
    are taken to be copies of training images and left out of the null (listed in summary.json).
    ``specificity`` (with ``partial`` and verification; None turns it off): verified and pixel scores count
    only for candidates that the global or region score singles out among distinct training images
    (``diffrep.auditing.specificity``), for the queries and the null alike.
    ``pool_null`` (default ``"never"``): with reference images and a fused verdict, ``"auto"`` adds training
    images scored against the *other* training images (``matching.null.train_null``) to the null when the
    reference set is smaller than ``calibration.null_size_for(fpr)`` (313 at 1%), as many as that size needs
    (at most the background samples); ``"always"`` adds the full samples. A training image's nearest other
    training image is at least as close as an unrelated generation's usually is, so the pooled null errs
    toward fewer false alarms, and on a training set with series (several photographs of one object) toward
    missing copies: meant for deduplicated training sets (docs/audit.md).
    ``embed``: another engine for embedding the generations and the reference images
    (``distributed.ray_index.embed_set`` with its address and workers bound: ``--engine ray``); ``rows``: one
    for the per-candidate stages, verification and object matching (``distributed.ray_rows.map_rows``); the
    search, the region search, the training-set null and calibration run in this process."""
    t0 = time.perf_counter()
    check_settings(fpr=fpr)  # checked before any work
    if pool_null not in POOL_NULL_MODES:
        raise DiffrepError(f"pool_null must be one of {', '.join(POOL_NULL_MODES)}, got {pool_null!r}")
    if top_k < 1 or verify_k < 1 or partial_k < 1 or local_k < 0:
        raise DiffrepError(f"--top-k, --verify-k and --partial-k must be at least 1 and --local-k at least 0 "
                           f"(got {top_k}, {verify_k}, {partial_k}, {local_k})")
    check_options(batch_size=batch_size, max_pixels=max_pixels)
    out_dir = ensure_writable_dir(out, "output directory")
    with DirLock(out_dir, "audit directory"):
        idx = index if isinstance(index, LoadedIndex) else open_index(index)
        d = resolve_descriptor(idx.dir, descriptor, device=device, **({"batch_size": batch_size} if batch_size else {}))
        if len(idx) == 0:
            raise SourceError(f"index {idx.dir.root} holds no images; index a training set first")
        k = max(1, min(top_k, len(idx)))
        stages = Stages(idx, d, StageConfig(
            verifier=Verifier(verify_config) if verify and threshold is None else None, verify_k=min(verify_k, k),
            partial=partial, partial_k=partial_k, local_k=local_k, region_config=region_config,
            object_config=object_config, local_config=local_config, specificity=specificity, max_pixels=max_pixels),
            progress, rows=rows)
        queries = embed_source(source, d, captions=captions, stage="embed-queries", max_pixels=max_pixels,
                               batch_size=batch_size, exclude=out_dir, progress=progress, embed=embed)
        run = _Run(out_dir, idx, stages, k, fpr, threshold, seed, progress, t0, time.perf_counter(), pool_null)
        ref_set = None if reference is None else search_reference(
            idx, reference, d, k if stages.spec is not None else stages.config.verify_k, captions=reference_captions,
            max_pixels=max_pixels, batch_size=batch_size, exclude=out_dir, progress=progress, embed=embed)
        return run.audit(source, queries, ref_set, dup_counts, pixel, drop_reference_copies,
                         (background_sample, verify_background_sample, partial_background_sample))


@dataclass
class _Run:
    """One audit's wiring: the stages in order, each a short method."""

    out_dir: Path
    idx: LoadedIndex
    stages: Stages
    k: int
    fpr: float
    threshold: Optional[float]
    seed: int
    progress: Optional[ProgressCallback]
    t0: float  # start
    t_embed: float  # generations embedded
    pool: str = A["pool_null"]  # audit(pool_null=...)
    warnings: list[str] = field(default_factory=list)
    pooled: int = 0  # training images added to the reference null

    def audit(self, source: Any, queries: EmbeddedSet, ref_set: Optional[ReferenceSet], dup_counts: bool | None,
              pixel: bool, drop_copies: bool, samples: tuple[int, int, int]) -> AuditResult:
        write_skipped(self.out_dir / "skipped.csv", queries.skipped)
        if not queries.records:
            raise SourceError(f"none of the images in {source} could be decoded ({len(queries.skipped)} skipped, "
                              f"reasons in {self.out_dir / 'skipped.csv'})")
        if self.idx.pending_chunks:
            self.warnings.append(f"the index has {self.idx.pending_chunks} chunk(s) from an unfinished indexing run "
                                 "that are not searched; re-run `diffrep index` to include them")
        dups = dup_counts_for(self.idx, dup_counts)
        scores, ids = self.search(queries.vectors, self.k, len(queries.records))
        q = self.stages.score([r.read for r in queries.records], scores, ids, "queries")
        ref = self.stages.score(ref_set.readers, ref_set.scores, ref_set.ids, "reference") \
            if ref_set is not None else None
        background = background_scores(self.idx, sample=samples[0], seed=self.seed, progress=self.progress)
        null = ref if ref is not None else self.training_null(samples)
        keep = self.reference_kept(ref, drop_copies)
        if ref is not None and not keep.all():
            null = ref.select(keep)
        if ref is not None and null is not None:
            null = self.pooled_null(null, samples)
        if not pixel:  # the pixel channel switched off: it neither joins the fusion nor orders the evidence
            q.scores.pop("pixel", None)
            for e in (null, ref):
                if e is not None:
                    e.scores.pop("pixel", None)
        chans = ch.channels(null, q) if null is not None else []
        fused = bool(self.threshold is None and len(chans) > 1 and len(chans[0].null))
        cal, q_verdict, null_verdict = self.decide(chans, fused, q, ref, background)
        t_cal = time.perf_counter()
        return self.finish(queries, ref_set, q, ref, null, chans, fused, cal, q_verdict, null_verdict, keep,
                           background, dups, t_cal)

    def pooled_null(self, null: Evidence, samples: tuple[int, int, int]) -> Evidence:
        """The reference null ``null``, with training images against the other training images added
        (``audit(pool_null=...)``)."""
        if self.pool == "never" or self.threshold is not None:
            return null
        need = null_size_for(self.fpr) or 0
        if self.pool == "auto" and len(null) >= need:
            return null
        cap = min(samples[1], samples[2]) if self.stages.emb is not None else samples[1]
        size = cap if self.pool == "always" else min(cap, need - len(null))
        train = self.training_null((samples[0], size, size)) if size > 0 else None
        if train is None or not len(train):
            return null
        self.pooled = len(train)
        return null.concat(train)

    def search(self, vectors: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        emit(self.progress, "search", 0, n)
        scores, ids = self.idx.search(vectors, k)
        emit(self.progress, "search", n, n)
        return scores, ids

    def training_null(self, samples: tuple[int, int, int]) -> Optional[Evidence]:
        """Without reference images, the fused null is the training set against itself (no null for --threshold
        or for the plain SSCD cosine, whose background is ``background_scores``)."""
        st = self.stages
        if self.threshold is not None or (st.config.verifier is None and st.emb is None):
            return None
        sample = min(samples[1], samples[2]) if st.emb is not None else samples[1]
        return st.training_null(sample, self.seed, self.k)

    def reference_kept(self, ref: Optional[Evidence], drop_copies: bool) -> np.ndarray:
        """Which reference images stay in the null (``drop_reference_copies`` leaves out copy-like ones)."""
        if ref is None:
            return np.ones(0, bool)
        keep = np.ones(len(ref.scores["global"]), bool)
        if drop_copies:
            keep = ~ch.copy_like(ref.get("pixel"), ref.get("object"), len(keep))
            if not keep.any():
                keep[:] = True
                self.warnings.append("every reference image scores like a copy of a training image; none was dropped")
        return keep

    def decide(self, chans: list[ch.Channel], fused: bool, q: Evidence, ref: Optional[Evidence],
               background: np.ndarray) -> tuple[Calibration, np.ndarray, Optional[np.ndarray]]:
        """(calibration, verdict scores, fused null): the fusion calibrated on its null, else the SSCD top-1
        (best of it and the region score with --partial) against the reference / background / --threshold."""
        if fused:
            null_verdict, q_verdict = ch.fuse(chans)
            cal = calibrate(reference=null_verdict if ref is not None else None,
                            background=null_verdict if ref is None else None, fpr=self.fpr, descriptor_name="fused")
            if self.pooled:
                cal.source = "reference+training"
                cal.parts = {"reference": len(null_verdict) - self.pooled, "training": self.pooled}
            return cal, q_verdict, null_verdict
        region = q.get("region")
        q_verdict = q.scores["global"] if region is None else np.maximum(q.scores["global"], region)
        cal = calibrate(reference=None if ref is None else ref.scores["global"], background=background, fpr=self.fpr,
                        threshold=self.threshold, descriptor_name=self.stages.descriptor.name)
        return cal, q_verdict, None

    def calibration_top(self, ref_set: ReferenceSet, ref: Evidence, null: Evidence, keep: np.ndarray,
                        null_verdict: np.ndarray, threshold: float) -> tuple[list[dict[str, Any]], list[str]]:
        """The reference images that set the threshold, with their channel scores and best matches."""
        paths = self.stages.train_path
        best_obj = _best_object_match(ref.regions, ref.objects, paths)
        n = int(keep.sum())  # the reference part of a pooled null comes first
        top, warnings = reference_top(
            [r.path for r, k in zip(ref_set.images.records, keep) if k], null_verdict[:n], threshold,
            {s.name: None if null.get(s.name) is None else null.scores[s.name][:n] for s in ch.SPECS},
            {"global": [paths[int(j)] if j >= 0 else "" for j in ref.ids[keep, 0]],
             "object": None if best_obj is None else [b for b, k in zip(best_obj, keep) if k]})
        dropped = int((~keep).sum())
        if dropped:
            warnings.append(f"{dropped} reference image(s) scored like copies of training images and were left out "
                            "of the null (--drop-reference-copies): reference_copies_dropped")
        return top, warnings

    def finish(self, queries: EmbeddedSet, ref_set: Optional[ReferenceSet], q: Evidence, ref: Optional[Evidence],
               null: Optional[Evidence], chans: list[ch.Channel], fused: bool, cal: Calibration,
               q_verdict: np.ndarray, null_verdict: Optional[np.ndarray], keep: np.ndarray, background: np.ndarray,
               dups: Optional[np.ndarray], t_cal: float) -> AuditResult:
        """Rows, files and the result."""
        idx, st = self.idx, self.stages
        top = None
        if fused and ref is not None and ref_set is not None and null is not None and null_verdict is not None:
            top, more = self.calibration_top(ref_set, ref, null, keep, null_verdict, cal.threshold)
            self.warnings += more
        p, rep = cal.p_values(q_verdict), cal.is_replica(q_verdict)
        nulls = {s.name: null.get(s.name) for s in ch.SPECS} if fused and null is not None else None
        rows, best = match_rows(
            queries.records, q.ids, kv=st.config.verify_k, q=q, q_verdict=q_verdict, rep=rep, p=p,
            train={"path": st.train_path, "id": idx.lookup("id"), "caption": idx.lookup("caption")}, dups=dups,
            q_vectors=queries.vectors, train_vectors=idx.vectors, nulls=nulls,
            train_size=_train_size(st.train_path) if st.config.partial else None)
        for name in REPORT_FILES:  # a report of earlier results must not sit beside these
            (self.out_dir / name).unlink(missing_ok=True)
        write_matches(self.out_dir, rows)
        write_distributions(self.out_dir, _distributions(q, ref, null, q_verdict, background, cal))
        voided = fused and q.void is not None and null is not None and null.void is not None
        dropped = [r.path for r, k in zip(ref_set.images.records, keep) if not k] if ref_set is not None else []
        summary = build_summary(
            queries=queries, q=q, ref=ref, ref_skipped=len(ref_set.images.skipped) if ref_set is not None else 0,
            null=null,
            stages=st, cal=cal, verdict=q_verdict, rep=rep, best=best,
            verdict_text=ch.describe(chans, st.config.verify_k, fused, q.get("region") is not None, voided),
            calibration_top=top, dropped=dropped, rows=rows, background=background, dups=dups, idx=idx, top_k=self.k,
            warnings=self.warnings, timings={"embed_queries": round(self.t_embed - self.t0, 3),
                                             "calibrate": round(t_cal - self.t_embed, 3),
                                             "total": round(time.perf_counter() - self.t0, 3)})
        write_summary(self.out_dir, summary)
        return AuditResult(self.out_dir, summary, cal, [r.path for r in queries.records], q.scores["global"],
                           [st.train_path[int(j)] for j in best], rep, p, q.topk, q.ids, queries.skipped,
                           verdict_scores=q_verdict, query_vectors=queries.vectors,
                           reference_vectors=None if ref_set is None else ref_set.images.vectors)


def _distributions(q: Evidence, ref: Optional[Evidence], null: Optional[Evidence], q_verdict: np.ndarray,
                   background: np.ndarray, cal: Calibration) -> dict[str, Any]:
    """The arrays of ``scores.npz``."""
    null, ref = null or Evidence(), ref or Evidence()
    return {"query_top1": q.get("global"), "query_verified": q.get("verified"), "query_verdict": q_verdict,
            "query_region": q.get("region"), "null_region": null.get("region"), "query_pixel": q.get("pixel"),
            "null_pixel": null.get("pixel"), "query_object": q.get("object"), "null_object": null.get("object"),
            "reference_top1": ref.get("global"), "reference_verified": ref.get("verified"), "background": background,
            "null_verdict": cal.null, "threshold": np.array([cal.threshold])}


def _best_object_match(rm: RegionMatches | None, om: ObjectMatches | None,
                       train_path: Sequence[str]) -> list[str] | None:
    """Per image, the training path of its best object score ("" when none was compared)."""
    if rm is None or om is None or not om.scores.shape[1]:
        return None
    s = np.where(np.isfinite(om.scores), om.scores, -np.inf)
    best = s.argmax(axis=1)
    return [train_path[int(rm.ids[i, c])] if np.isfinite(s[i, c]) and rm.ids[i, c] >= 0 else ""
            for i, c in enumerate(best)]


def _train_size(paths: Sequence[str]) -> Callable[[int], tuple[int, int] | None]:
    """Width and height of a training image from its header (cached; None when unreadable)."""
    @functools.lru_cache(maxsize=65536)
    def size(j: int) -> tuple[int, int] | None:
        try:
            return image_size(read_location(paths[j]))
        except (OSError, DecodeError):
            return None

    return size
