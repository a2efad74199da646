"""The commands: each turns parsed arguments into one library call and prints its result."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..defaults import DEFAULTS
from ..errors import DiffrepError
from .bars import ProgressBars, _out
from .options import given, refuse_unused


def _engine(a: argparse.Namespace, stage: str) -> Any:
    """None for --engine local; for --engine ray, ``distributed.ray_index.<stage>`` (or ``ray_rows.map_rows``)
    bound to the cluster (connected now: an unreachable address fails before anything is written)."""
    if a.engine != "ray":
        refuse_unused((flag, value is not None, False, "it applies to --engine ray (a Ray cluster)")
                      for flag, value in (("--address", a.address), ("--num-workers", a.num_workers)))
        return None
    import functools

    from ..distributed import ray_index, ray_rows

    address = DEFAULTS["engine"]["address"] if a.address is None else a.address
    workers = DEFAULTS["engine"]["num_workers"] if a.num_workers is None else a.num_workers
    if workers < 1:
        raise DiffrepError(f"--num-workers {workers}: give at least one worker")
    ray = ray_index.connect(address)
    if a.device == "cuda":  # a cluster without GPUs fails now, before anything is written
        ray_index.gpu_workers(ray, workers)
    if not getattr(a, "quiet", False) and not getattr(a, "_cluster_shown", False):
        from ..distributed.ray_data import describe

        _out(describe(ray, address, workers, a.device))
        a._cluster_shown = True
    module = ray_rows if stage == "map_rows" else ray_index
    return functools.partial(getattr(module, stage), address=address, workers=workers, device=a.device)


def _driver_device(a: argparse.Namespace) -> str:
    """--device for this process: as given with --engine local; with --engine ray the actors take it (they
    reserve the GPUs) and this process, which may have none, keeps auto."""
    return a.device if a.engine != "ray" else "auto"


def cmd_index(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..indexing.build import index

    src = a.source if len(a.source) > 1 else a.source[0]
    budget = _bytes(a.memory_budget, "--memory-budget") if a.memory_budget else None
    embed = _engine(a, "embed_chunks")
    r = index(src, a.out, descriptor=a.descriptor, index_type=a.index_type, captions=a.captions,
              batch_size=a.batch_size, chunk_size=a.chunk_size, max_pixels=a.max_pixels, memory_budget=budget,
              embed=embed, fill=_engine(a, "fill_ivf"), shards=_engine(a, "index_shards"), on_disk=a.on_disk,
              device=_driver_device(a), check_chunks=a.check_chunks, progress=bars)
    rate = r.added / r.timings["embed"] if r.timings["embed"] > 0 and r.added else 0.0
    for number, reason in r.repaired:
        _out(f"Repaired: chunk c{number:06d} {reason}; it was dropped and its images embedded again.")
    _out(f"Indexed {r.images} images into {r.index_dir} ({r.index_type} FAISS index): "
         f"{r.added} embedded now ({rate:.1f} img/s), {r.unchanged} unchanged, "
         + (f"{r.removed} removed (no longer in the source), " if r.removed else "") + f"{r.skipped} skipped"
         + (f" (reasons in {r.index_dir / 'skipped.csv'})" if r.skipped else "") + f", {r.seconds:.1f}s.")
    if a.local:
        from ..indexing.load import open_index
        from ..indexing.local import open_local

        loc = open_local(open_index(r.index_dir), progress=bars)
        _out(f"Local-feature index (for `audit --partial`): {loc.descriptors} RootSIFT descriptors, "
             f"{loc.params.get('type')} FAISS index.")
    return 0


def _bytes(text: str, flag: str) -> int:
    """A size such as 16G, 500M, 2.5T or a plain number of bytes."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    t = text.strip().upper().removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1
    if not value > 0:
        raise DiffrepError(f"{flag} {text!r}: give a size such as 16G, 500M or a number of bytes")
    return int(value)


def cmd_audit(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..auditing.run import audit
    from ..auditing.specificity import SpecificityConfig
    from ..matching.verify import VerifyConfig

    src = a.source if len(a.source) > 1 else a.source[0]
    if a.dup_counts:
        from ..dedup.run import ensure_dup_counts

        ensure_dup_counts(a.index, progress=bars)
    margin = {} if a.specificity_margin is None else {"margin": a.specificity_margin}
    refuse_unused([*((flag, value is not None, a.partial, "it applies with --partial")
                     for flag, value in (("--partial-k", a.partial_k), ("--local-k", a.local_k),
                                         ("--specificity-margin", a.specificity_margin))),
                   ("--no-specificity", not a.specificity, a.partial, "it applies with --partial"),
                   ("--verify-k", a.verify_k is not None, a.verify, "verification is off (--no-verify)"),
                   ("--no-ecc", not a.ecc, a.verify, "verification is off (--no-verify)"),
                   ("--page-limit", a.page_limit is not None, a.report, "it applies with --report"),
                   ("--reference-captions", a.reference_captions is not None, a.reference is not None,
                    "it captions the --reference images; add --reference DIR")])
    r = audit(src, a.index, a.out, reference=a.reference, fpr=a.fpr, threshold=a.threshold, top_k=a.top_k,
              descriptor=a.descriptor, captions=a.captions, reference_captions=a.reference_captions,
              batch_size=a.batch_size, max_pixels=a.max_pixels, seed=a.seed, verify=a.verify,
              verify_config=VerifyConfig(ecc=a.ecc), dup_counts=a.dup_counts, partial=a.partial,
              drop_reference_copies=a.drop_reference_copies, pool_null=a.pool_null,
              specificity=SpecificityConfig(**margin) if a.specificity else None,
              embed=_engine(a, "embed_set"), rows=_engine(a, "map_rows"), device=_driver_device(a), progress=bars,
              **given(a, "verify_k", "partial_k", "local_k"))
    print_audit_summary(r.summary, Path(a.out))
    if a.report:
        from ..report.html import render_report

        _out(f"Report: {render_report(a.out, progress=bars, **given(a, 'page_limit'))}")
    return 0


def cmd_report(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..report.html import render_report
    from ..report.membership_page import is_membership_folder, render_membership_report

    root = Path(a.audit_dir)
    kind = ("membership" if is_membership_folder(a.audit_dir) else "probe" if (root / "prompts.csv").is_file()
            else "audit")
    if kind == "audit" and not ((root / "summary.json").is_file() and (root / "matches.parquet").is_file()):
        raise DiffrepError(f"{root} is not a folder that `diffrep audit`, `probe` or `membership` wrote (no "
                           "summary.json with matches.parquet, prompts.csv or scores.csv); give their --out folder")
    refuse_unused([("--extract", a.extract is not None, kind == "probe", "it applies to the report of a `diffrep "
                    "probe` folder"), ("--page-limit", a.page_limit is not None, kind == "audit", "it applies to "
                    "the report of a `diffrep audit` folder")])
    if kind == "membership":
        _out(f"Report: {render_membership_report(a.audit_dir)}")
        return 0
    if kind == "probe":
        from ..report.probe_page import render_probe_report

        _out(f"Report: {render_probe_report(a.audit_dir, a.extract)}")
        return 0
    _out(f"Report: {render_report(a.audit_dir, progress=bars, **given(a, 'page_limit'))}")
    return 0


def calibration_text(cal: dict[str, Any]) -> str:
    """How the threshold was set, in words (only the calibrated sources have a target FPR), and the false-positive
    rate it achieves for this null (average and 95% bound)."""
    got = cal.get("achieved_fpr")
    achieved = (f" (achieved: at most {100 * got['mean_at_most']:.2g}% on average, {100 * got['upper']:.2g}% at "
                f"{100 * got['confidence']:g}% confidence)") if got else ""
    if cal["source"] == "reference":
        return f"calibrated on {cal['null_size']} held-out reference images at FPR {cal['target_fpr']:g}{achieved}"
    if cal["source"] == "background":
        return (f"calibrated on {cal['null_size']} train-vs-train background scores at FPR {cal['target_fpr']:g}"
                f"{achieved} (give --reference for a better null)")
    return "set by --threshold" if cal["source"] == "explicit" else "the paper's fixed SSCD 0.5 (uncalibrated)"


def print_audit_summary(s: dict[str, Any], out: Path) -> None:
    cal = s["calibration"]
    how = calibration_text(cal)
    what = "fused score (SSCD + pixel verification)" if s.get("verdict_score", "").startswith("fused") \
        else "SSCD cosine"
    if s.get("partial"):
        what = what.replace("verification)", "verification + regions)") if "fused" in what else "best of SSCD and region cosine"
    _out(f"Replicas: {s['replicas']} of {s['queries']} generated images "
         f"({100 * s['replication_rate']:.2f}%), threshold {cal['threshold']:.4f} on the {what}, {how}.")
    t = s["top1"]
    _out(f"Top-1 scores: mean {t['mean']:.3f}, p50 {t['p50']:.3f}, p95 {t['p95']:.3f}, max {t['max']:.3f}"
         + (f"; reference p95 {s['reference']['p95']:.3f}" if s.get("reference") else "")
         + (f"; background p95 {s['background']['p95']:.3f}" if s.get("background", {}).get("n") else ""))
    part = s.get("partial")
    if part:
        _out(f"Partial: {part['windows_per_image']} windows per image ({part['seconds_per_image']:.2f} s per image); "
             f"{part['partial_matches']} images whose strongest match is a region (match_kind=region).")
    dup = s.get("duplication")
    if dup and dup.get("mean_dup_count_replica_matches") is not None:
        _out(f"Duplication: training images copied by replicas have {dup['mean_dup_count_replica_matches']:.2f} "
             f"near-duplicates on average, training images overall {dup['mean_dup_count_training']:.2f}.")
    if s["skipped"]:
        _out(f"Skipped {s['skipped']} unreadable inputs (reasons in {out / 'skipped.csv'}).")
    for w in s.get("warnings", []):
        _out(f"Warning: {w}")
    _out(f"Results: {out / 'matches.csv'}, {out / 'summary.json'}")


def _dedup_options(a: argparse.Namespace) -> dict[str, Any]:
    """The link-rule options of ``diffrep dedup`` as given (the library's defaults otherwise); DiffrepError for
    one given where the mode, --fpr, --no-verify or --no-pixel leaves it nothing to do."""
    semdedup, calibrated = a.mode == "semdedup", a.fpr is not None
    on = {"--threshold": a.global_threshold is not None, "--verified-threshold": a.verified_threshold is not None,
          "--pixel-threshold": a.pixel_threshold is not None, "--no-pixel": not a.pixel, "--no-verify": not a.verify,
          "--no-text-lines": not a.text_overlay, "--k": a.k is not None, "--nprobe": a.nprobe is not None}
    checks = [("--eps", a.eps is not None, semdedup, "it applies to --mode semdedup")]
    checks += [(flag, on[flag], not semdedup, "--mode semdedup links by --eps alone") for flag in on]
    checks += [(flag, on[flag], not calibrated, "--fpr calibrates the link thresholds")
               for flag in ("--threshold", "--verified-threshold", "--pixel-threshold")]
    checks += [(flag, on[flag], a.verify, "verification is off (--no-verify)")
               for flag in ("--verified-threshold", "--no-text-lines")]
    checks += [("--pixel-threshold", on["--pixel-threshold"], a.pixel, "the pixel rule is off (--no-pixel)")]
    refuse_unused(checks)
    opts = given(a, "global_threshold", "verified_threshold", "pixel_threshold", "eps", "k", "nprobe")
    if not a.pixel:  # --pixel-threshold was refused above
        opts["pixel_threshold"] = None
    return opts


def cmd_dedup(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..dedup import dedup

    src = (a.source if len(a.source) > 1 else a.source[0]) if a.source else None
    r = dedup(src, a.out, index=a.index, descriptor=a.descriptor, verify=a.verify, captions=a.captions,
              max_pixels=a.max_pixels, mode=a.mode, fpr=a.fpr, reference=a.reference, text_overlay=a.text_overlay,
              progress=bars, **_dedup_options(a))
    s = r.summary
    cal = s["rule"].get("calibration") or {}
    if cal.get("source") == "reference":
        v = cal["verified_threshold"]
        _out(f"Link thresholds calibrated on {cal['reference_images']} reference images at FPR {cal['target_fpr']:g}: "
             f"SSCD cosine >= {cal['global_threshold']:.4f}" + (f", verified >= {v:.4f}" if v is not None else "") + ".")
        for w in cal.get("warnings", []):
            _out(f"Warning: {w}")
    _out(f"{s['images']} images: {s['groups']} groups of near-duplicates, {s['duplicates']} removable "
         f"({100 * s['share_removable']:.1f}%), largest group {s['largest_group']}.")
    for w in s.get("warnings", []):
        _out(f"Warning: {w}")
    _out(f"Results: {Path(a.out) / 'groups.csv'}, keep.txt and remove.txt (one path per line), keep.nul and "
         "remove.nul (NUL-separated, for xargs -0), summary.json")
    return 0


def cmd_demo(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..eval.demo import run_demo

    res = run_demo(Path(a.out), seed=a.seed, descriptor=a.descriptor, progress=bars)
    _out("")
    print_audit_summary(res["summary"], Path(a.out) / "audit")
    ev = res["evaluation"]
    _out(f"Against the known truth: {ev['copies_found']}/{ev['copies']} edited copies found with the correct "
         f"source (recall {100 * ev['recall']:.1f}%), {ev['false_alarms']}/{ev['unseen']} unseen images "
         f"flagged (false-positive rate {100 * ev['fpr']:.1f}%).")
    if ev.get("twin_hits"):
        _out(f"({ev['twin_hits']} of them matched a training file with exactly the same pixels as the source.)")
    if ev.get("recall_same_group") is not None:
        _out(f"Counting a near-identical variant of the source in the training set (skin tone, recolour) as "
             f"correct: recall {100 * ev['recall_same_group']:.1f}%.")
    per = ", ".join(f"{k} {100 * v['recall']:.0f}%" for k, v in ev["per_edit"].items())
    _out(f"Recall per edit: {per}")
    _out(f"Evaluation: {Path(a.out) / 'evaluation.json'}")
    from ..report.html import render_report

    _out(f"Report: {render_report(Path(a.out) / 'audit', progress=bars)}")
    return 0


def cmd_bench_make(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..eval.bench.make import make_bench

    src = a.source if len(a.source) > 1 else a.source[0]
    r = make_bench(src, a.out, kinds=a.kinds, n=a.n, seed=a.seed, fill=a.fill, masks=a.masks,
                   groups=a.groups, max_references=a.max_references, progress=bars)
    kinds = ", ".join(f"{k} {v}" for k, v in r.by_kind.items())
    _out(f"Benchmark in {r.out}: {r.queries} queries ({kinds}) against {r.references} references; "
         f"{r.fill_images} held-out fill images; {r.skipped} skipped (skipped.csv).")
    return 0


def cmd_bench_run(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..eval.bench.run import run_bench

    r = run_bench(a.bench_dir, a.descriptors, a.out, k=a.k, normalize=a.normalize,
                  batch_size=a.batch_size, progress=bars)
    _out("")
    _out((r.out / "table.md").read_text(encoding="utf-8"))
    _out(f"Results: {r.out / 'results.csv'}, table: {r.out / 'table.md'}, PR curves: {r.out}/pr_*.png")
    return 0


def cmd_data_get(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..datasets import get_dataset

    path = get_dataset(a.name, progress=bars)
    _out(str(path))
    return 0


def cmd_descriptors(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..descriptors import available

    for name, desc in available().items():
        _out(f"{name:<18} {desc}")
    return 0


def cmd_info(a: argparse.Namespace, bars: ProgressBars) -> int:
    from ..indexing.load import open_index

    idx = open_index(a.index)
    _out(json.dumps({**idx.meta, "pending_chunks": idx.pending_chunks}, indent=2))
    return 0
