"""``diffrep bench run``: rank descriptors on a benchmark built by ``diffrep bench make``.

For each descriptor the references are embedded once (cached in ``RESULT_DIR/embeddings`` with the
descriptor's fingerprint, so an interrupted or extended run re-embeds nothing), every query retrieves its
top ``k`` references (exact search: FAISS inner product for cosine descriptors, the descriptor's own
similarity, in chunks, otherwise), and the metrics of :mod:`diffrep.bench.metrics` are computed per
query kind and overall. A query that cannot be decoded counts as a miss, never as dropped.

``normalize=True`` adds, for each cosine descriptor, a ``+norm`` row with SSCD's score normalization
(Pizzi et al. 2022): score(q, r) = <q, r> - beta * mean of q's top-3 similarities to the benchmark's
``background/`` images (beta = 1). Per-query shift: rankings, hence mAP and recall@k, are unchanged;
pooled metrics (micro-AP, recall at 90% precision) can change.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...defaults import DEFAULTS
from ...descriptors import get_descriptor
from ...descriptors.base import Descriptor
from ...embedding import embed_source
from ...errors import DiffrepError, SourceError
from ...fsutil import parse_json, write_bytes, write_text
from ...progress import ProgressCallback, emit
from . import metrics as M
from .make import read_manifest

DEFAULT_DESCRIPTORS = ("sscd", "sscd-fast", "effnet-lite0", "pdq", "phash", "pixel")
METRICS = ("mAP", "muAP", "recall@1", "recall@5", "recall@10", "MRR", "P@1", "acc@1", "recall@P90")
BETA, NORM_K = 1.0, 3
REGIONS_SUFFIX = "+regions"  # e.g. sscd+regions: the partial-replication method on top of a descriptor
Preds = dict[str, list[tuple[str, float]]]


@dataclass
class BenchResult:
    out: Path
    rows: list[dict[str, Any]]  # descriptor, kind, metric, value
    descriptors: list[str]
    kinds: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    def value(self, descriptor: str, kind: str, metric: str) -> float:
        for r in self.rows:
            if (r["descriptor"], r["kind"], r["metric"]) == (descriptor, kind, metric):
                return float(r["value"])
        raise KeyError((descriptor, kind, metric))


def parse_descriptors(spec: str | Sequence[str | Descriptor]) -> list[str | Descriptor]:
    if isinstance(spec, str):
        spec = spec.split(",")
    items = [s.strip() if isinstance(s, str) else s for s in spec]
    items = [s for s in items if not isinstance(s, str) or s]
    if not items:
        raise DiffrepError("name at least one descriptor, e.g. --descriptors sscd,phash")
    return list(dict.fromkeys(items))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def _embed_cached(d: Descriptor, folder: Path, cache: Path, what: str, progress: ProgressCallback | None,
                  batch_size: int | None) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """(ids, vectors, skipped) of every image in ``folder``, cached under ``cache`` by fingerprint."""
    fp = json.dumps(d.fingerprint(), sort_keys=True)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fp:
                    skipped = parse_json(str(z["skipped"]))
                    return [str(x) for x in z["ids"]], np.asarray(z["vectors"], np.float32), [tuple(s) for s in skipped]
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache is embedded again
    es = embed_source(str(folder), d, stage=f"{d.name}: {what}", batch_size=batch_size, progress=progress)
    ids = [r.id for r in es.records]
    buf = io.BytesIO()
    np.savez(buf, ids=np.array(ids), vectors=es.vectors, fingerprint=np.array(fp),
             skipped=np.array(json.dumps(es.skipped)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(cache, buf.getvalue())
    return ids, es.vectors, es.skipped


def _topk(d: Descriptor, q: np.ndarray, r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, indices) of queries ``q`` against references ``r``."""
    k = min(k, len(r))
    if getattr(d, "metric", "cosine") == "cosine":
        from ...auditing.partial import FlatIndex

        return FlatIndex(r).search(q, k)
    scores = np.empty((len(q), k), np.float32)
    idx = np.empty((len(q), k), np.int64)
    step = 256
    for s in range(0, len(q), step):
        sim = np.asarray(d.similarity(q[s:s + step], r), np.float32)  # type: ignore[attr-defined]
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sim, part, axis=1)
        o = np.argsort(-ps, axis=1, kind="stable")
        idx[s:s + step] = np.take_along_axis(part, o, axis=1)
        scores[s:s + step] = np.take_along_axis(ps, o, axis=1)
    return scores, idx


def _region_topk(d: Descriptor, folder: Path, ref_vecs: np.ndarray, k: int,
                 progress: ProgressCallback | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The partial-replication method (``diffrep audit --partial``) as a benchmark row: every query's
    windows against the references; a reference's score is its best window's cosine (the whole image
    is one of the windows, so this is never below the global score)."""
    from ...auditing.partial import FlatIndex, region_search
    from ...decode import load_image
    from ...decode import DEFAULT_MAX_PIXELS
    from ...descriptors.regions import RegionEmbedder
    from ...sources import open_source

    records, _ = open_source(str(folder)).scan()  # the same records (and ids) the global rows embed
    emb = RegionEmbedder(d)
    side = max(emb.config.sizes)
    rm = region_search(lambda i: load_image(records[i].read, DEFAULT_MAX_PIXELS, side), len(records),
                       FlatIndex(ref_vecs), emb, k=k, stage=f"{d.name}: query regions", progress=progress)
    return [r.id for r in records], rm.scores, rm.ids


def _metrics(preds: Preds, truth: dict[str, set[str]]) -> dict[str, float]:
    return {"mAP": M.mean_average_precision(preds, truth), "muAP": M.micro_ap(preds, truth),
            "recall@1": M.recall_at_k(preds, truth, 1), "recall@5": M.recall_at_k(preds, truth, 5),
            "recall@10": M.recall_at_k(preds, truth, 10), "MRR": M.mrr(preds, truth),
            "P@1": M.precision_at_k(preds, truth, 1), "acc@1": M.accuracy_at_1(preds, truth),
            "recall@P90": M.recall_at_precision(preds, truth, 0.9)}


def run_bench(bench_dir: str | os.PathLike[str], descriptors: str | Sequence[str | Descriptor] = ("sscd",),
              out: str | os.PathLike[str] | None = None, *, k: int = DEFAULTS["bench"]["k"], normalize: bool = False,
              batch_size: int | None = None, progress: ProgressCallback | None = None) -> BenchResult:
    """Evaluate ``descriptors`` on the benchmark in ``bench_dir``; write results into ``out``
    (default ``BENCH_DIR/results``): results.csv, results.json, table.md, predictions/, pr_<kind>.png."""
    import time

    bench = Path(bench_dir)
    rows = read_manifest(bench)
    if not (bench / "references").is_dir():
        raise SourceError(f"{bench} has no references/ folder; rebuild it with `diffrep bench make`")
    if k < 1:
        raise DiffrepError(f"k must be at least 1, got {k}")
    names = parse_descriptors(descriptors)
    out_dir = Path(out) if out else bench / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    truth = {r["query"]: {r["source"]} for r in rows}
    kind_of = {r["query"]: r["kind"] for r in rows}
    results: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    seconds: dict[str, float] = {}
    labels: list[str] = []
    for di, spec in enumerate(names):
        t0 = time.perf_counter()
        regions = isinstance(spec, str) and spec.endswith(REGIONS_SUFFIX)
        d = get_descriptor(spec[: -len(REGIONS_SUFFIX)] if regions else spec)
        name = spec if isinstance(spec, str) else d.name
        emit(progress, "descriptors", di, len(names), unit="descriptor", message=name)
        cache = out_dir / "embeddings"
        ref_ids, ref_vecs, _ = _embed_cached(d, bench / "references", cache / f"{_safe(d.name)}.references.npz",
                                             "references", progress, batch_size)
        if not ref_ids:
            raise SourceError(f"no reference image of {bench} could be embedded with {name}")
        q_skipped: list = []
        if regions:  # unreadable queries get no predictions: counted as misses
            q_ids, scores, idx = _region_topk(d, bench / "queries", ref_vecs, k, progress)
        else:
            q_ids, q_vecs, q_skipped = _embed_cached(d, bench / "queries",
                                                     cache / f"{_safe(d.name)}.queries.npz", "queries", progress,
                                                     batch_size)
            scores, idx = _topk(d, q_vecs, ref_vecs, k) if q_ids else (np.zeros((0, 0)), np.zeros((0, 0), int))
        variants = [(name, scores)]
        if normalize and not regions and getattr(d, "metric", "cosine") == "cosine" and (bench / "background").is_dir():
            _, bg_vecs, _ = _embed_cached(d, bench / "background", cache / f"{_safe(d.name)}.background.npz",
                                          "background", progress, batch_size)
            if len(bg_vecs):
                bg_scores, _ = _topk(d, q_vecs, bg_vecs, NORM_K)
                variants.append((f"{name}+norm", scores - BETA * bg_scores.mean(axis=1, keepdims=True)))
        for label, sc in variants:
            preds: Preds = {f"queries/{qid}": [(f"references/{ref_ids[j]}", float(s))
                                               for j, s in zip(idx[i], sc[i]) if j >= 0]
                            for i, qid in enumerate(q_ids)}
            _write_predictions(out_dir / "predictions" / f"{_safe(label)}.csv", preds, truth)
            labels.append(label)
            curves[label] = {}
            for kind in kinds + ["all"]:
                t = {q: v for q, v in truth.items() if kind == "all" or kind_of[q] == kind}
                p = {q: v for q, v in preds.items() if q in t}
                for metric, value in _metrics(p, t).items():
                    results.append({"descriptor": label, "kind": kind, "metric": metric,
                                    "value": round(value, 6), "queries": len(t)})
                curves[label][kind] = M.pr_curve(p, t)
        seconds[name] = round(time.perf_counter() - t0, 2)
        if q_skipped:
            results.append({"descriptor": name, "kind": "all", "metric": "queries_skipped",
                            "value": len(q_skipped), "queries": len(truth)})
    emit(progress, "descriptors", len(names), len(names), unit="descriptor", message="done")
    result = BenchResult(out_dir, results, labels, kinds, seconds)
    _write_results(result)
    from .report import pr_figures, ranking_table

    write_text(out_dir / "table.md", ranking_table(result))
    pr_figures(curves, kinds, out_dir)
    return result


def _write_predictions(path: Path, preds: Preds, truth: dict[str, set[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query", "rank", "reference", "score", "correct"])
    for q in sorted(truth):
        for rank, (ref, s) in enumerate(preds.get(q, []), start=1):
            w.writerow([q, rank, ref, f"{s:.6f}", int(ref in truth[q])])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, buf.getvalue())


def _write_results(result: BenchResult) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["descriptor", "kind", "metric", "value", "queries"], lineterminator="\n")
    w.writeheader()
    w.writerows(result.rows)
    write_text(result.out / "results.csv", buf.getvalue())
    write_text(result.out / "results.json", json.dumps(
        {"descriptors": result.descriptors, "kinds": result.kinds, "seconds": result.seconds,
         "rows": result.rows}, indent=1) + "\n")


__all__ = ["BenchResult", "DEFAULT_DESCRIPTORS", "METRICS", "parse_descriptors", "run_bench"]
