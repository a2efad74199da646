"""The model-side commands' arguments (train, sample, experiment, probe, extract, membership); defaults from
``diffrep.defaults.DEFAULTS``."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from ..defaults import DEFAULTS
from . import model_commands as mc

Sub = Any  # argparse's sub-parser action


def seed(text: str) -> int:
    """An argparse type: a random seed, a whole number >= 0 (numpy and torch refuse negative ones)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: give a whole number >= 0")
    return value


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress lines")


def _train(sub: Sub) -> None:
    d = DEFAULTS["train"]
    p = sub.add_parser("train", help="train a small diffusion model on an image folder (resumable; needs "
                       "diffrep[models])")
    p.add_argument("data", help="folder of training images (captions.jsonl in it or a parent folder)")
    p.add_argument("--out", required=True, help="run directory; run the same command again to resume")
    p.add_argument("--cond", default=d["cond"], choices=("none", "class", "caption"),
                   help="conditioning: none (default), class (subfolder names, else captions), caption")
    p.add_argument("--subset", type=int, default=None, help="train on N images drawn with --seed (default: all)")
    p.add_argument("--keep", default=None, help="train only on the images this list names (one path per line or "
                   "NUL-separated), e.g. `diffrep dedup`'s keep.nul: deduplicate before training")
    p.add_argument("--dup-frac", type=float, default=d["dup_frac"],
                   help="fraction of images duplicated by sampling weight (e.g. 0.05; default %(default)s)")
    p.add_argument("--dup-weight", type=float, default=None, help="sampling weight of the images --dup-frac "
                   f"duplicates (default {d['dup_weight']:g})")
    p.add_argument("--steps", type=int, default=d["steps"], help="training steps in total (default %(default)s)")
    p.add_argument("--batch", type=int, default=d["batch"], help="images per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"], help="AdamW learning rate (default %(default)s)")
    p.add_argument("--ema", type=float, default=d["ema"], help="EMA decay of the sampled weights "
                   "(default %(default)s)")
    p.add_argument("--seed", type=seed, default=d["seed"], help="seed for subset, duplication, init and noise "
                   "(default %(default)s)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    p.add_argument("--size", type=int, default=d["size"], help="image size in pixels, 16-256, a multiple of 4 "
                   "(default %(default)s)")
    p.add_argument("--channels", default=None, help="UNet widths per resolution level (default 16,32,32: the "
                   "measured CPU recipe; wider, e.g. 64,128,128, on a GPU)")
    p.add_argument("--mitigate", default=None, choices=("rc", "rt", "cwr", "gn", "wen-filter"),
                   help="train-time mitigation (caption models): rc random caption, rt random tokens, cwr caption "
                   "word repetition, gn Gaussian noise on the text embedding (NeurIPS 2023); wen-filter: leave out "
                   "of the loss samples whose text-conditional noise norm exceeds --wen-threshold (Wen et al. 2024)")
    p.add_argument("--wen-threshold", type=float, default=None, help="--mitigate wen-filter: the noise-norm "
                   "threshold (log.csv reports the observed mean norm and the share left out)")
    p.add_argument("--mitigate-p", type=float, default=None, help="probability per sample of the "
                   f"mitigation (default {d['mitigate_p']:g})")
    p.add_argument("--uncond-p", type=float, default=None, help="--cond caption: share of samples "
                   "trained on the empty caption, so the model learns the unconditional prediction that "
                   f"--guidance and `diffrep probe` need (default {d['uncond_p']:g}; 0: none)")
    p.add_argument("--sample-every", type=int, default=d["sample_every"],
                   help="save a 16-image sample grid every K steps (default %(default)s; 0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"], help="write checkpoint.pt every "
                   "K steps (default %(default)s)")
    p.add_argument("--captions", default=None, help="captions file (jsonl/csv: file + caption) if not found by itself")
    p.add_argument("--text-encoder", default=None,
                   help="local CLIP text encoder folder for --cond caption (needs transformers; default: a small "
                        "encoder trained jointly)")
    _quiet(p)
    p.set_defaults(func=mc.cmd_train)

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
    p.add_argument("--seed", type=seed, default=d["seed"])
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
    p.set_defaults(func=mc.cmd_sample)


def _experiment(sub: Sub) -> None:
    d = DEFAULTS["experiment"]
    p = sub.add_parser("experiment", help="train a grid of models, sample, audit: data-size, duplication, "
                       "conditioning or caption-mitigation; mitigation: every mitigation's replication-versus-quality "
                       "trade-off on one memorizing model; memorization: score the probes against the audit's labels; "
                       "membership: membership and dataset inference against a known member split "
                       "(resumable; needs diffrep[models])")
    p.add_argument("kind", choices=("data-size", "duplication", "conditioning", "caption-mitigation", "mitigation",
                                    "memorization", "membership"))
    p.add_argument("--data", default=None, help="fashion-mnist, or a folder of training images (with --reference); "
                   "memorization uses the packaged captioned emoji")
    p.add_argument("--reference", default=None,
                   help="held-out images never trained on, for calibration (default for fashion-mnist: its test split)")
    p.add_argument("--out", required=True, help="experiment folder; run the same command again to resume")
    p.add_argument("--preset", default=d["preset"], choices=("smoke", "full"),
                   help="smoke (sized for a 2-core CPU, default) or full (for a GPU)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    p.add_argument("--seed", type=seed, default=d["seed"])
    p.add_argument("--fpr", type=float, default=d["fpr"], help="false-positive rate of the audit threshold "
                   "(default %(default)s)")
    p.add_argument("--dup-frac", type=float, default=None, help="duplication and memorization experiments: "
                   f"fraction of training images duplicated (default: duplication {d['dup_frac']}, memorization "
                   "the preset's)")
    p.add_argument("--dup-weight", type=float, default=None, help="duplication and memorization experiments: how "
                   f"many times as often they are sampled (default: duplication {d['dup_weight']}, memorization "
                   "the preset's)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    p.add_argument("--samples", type=int, default=None, help="override the preset's generations per run")
    p.add_argument("--batch", type=int, default=None, help="override the preset's training batch size")
    p.add_argument("--channels", default=None, help="override the preset's UNet widths, e.g. 32,64,64")
    p.add_argument("--sizes", default=None, help="data-size and membership experiments: training-set sizes, "
                   "e.g. 16,512")
    p.add_argument("--subset", type=int, default=None,
                   help="duplication / conditioning / mitigation: training images per run; memorization: "
                   "training captions (overrides the preset)")
    p.add_argument("--only", default=None, help="comma-separated run names: run only these of the grid "
                   "(e.g. to train runs in parallel); the results table needs the whole grid")
    p.add_argument("--generate-only", action="store_true",
                   help="train and sample only (e.g. on a GPU machine); a later call without it audits")
    p.add_argument("--label-per-prompt", type=int, default=None, help="memorization: audit only the first N "
                   "generations of each training caption for the labels (default: all)")
    p.add_argument("--label-reference", type=int, default=None, help="memorization: calibrate the labelling "
                   "audit on the first N held-out images (default: all)")
    _quiet(p)
    p.set_defaults(func=mc.cmd_experiment)


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
    p.add_argument("--steps", type=int, default=None, help="noise-norm: sampling steps averaged "
                   f"(default {d['steps']}: the first step alone)")
    p.add_argument("--sample-steps", type=int, default=d["sample_steps"], help="DDIM schedule the steps follow "
                   "(default %(default)s)")
    p.add_argument("--batch", type=int, default=d["batch"], help="noise predictions per model call "
                   "(default %(default)s)")
    p.add_argument("--no-explain", action="store_true", help="noise-norm: skip the per-token attribution "
                   "(tokens.csv)")
    p.add_argument("--report", action="store_true", help="also write report.html (diffrep report DIR re-renders it)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    _quiet(p)
    p.set_defaults(func=mc.cmd_probe)


def _extract(sub: Sub) -> None:
    d = DEFAULTS["extract"]
    p = sub.add_parser("extract", help="extract training images by generate-and-filter: cliques of near-identical "
                       "generations per prompt, audited against the training index")
    p.add_argument("model", help="`diffrep train` run folder (--cond caption) or local Stable Diffusion folder")
    p.add_argument("--prompts", required=True, help="prompts to try (text, jsonl, csv, or a run folder)")
    p.add_argument("--index", required=True, help="index directory of the training images (diffrep index)")
    p.add_argument("--out", required=True, help="output folder: extracted.csv, summary.json, cliques/, audit/, "
                   "reference_cliques/, reference_audit/ (below_floor.csv with --min-share)")
    p.add_argument("--reference-prompts", required=True, help="prompts known not to be memorized: their "
                   "generations calibrate what counts as near-identical")
    p.add_argument("--reference", default=None, help="held-out real images never trained on, for the audit's "
                   "calibration (as diffrep audit --reference)")
    p.add_argument("--per-prompt", type=int, default=d["per_prompt"], help="generations per prompt "
                   "(default %(default)s)")
    p.add_argument("--min-clique", type=int, default=d["min_clique"], help="near-identical generations needed "
                   "(default %(default)s)")
    p.add_argument("--min-share", type=float, default=d["min_share"], help="list a prompt's clique only when it "
                   "holds more than this share of its --per-prompt generations (default %(default)s: more than "
                   "half); the cliques below go to below_floor.csv; 0: no floor")
    p.add_argument("--fpr", type=float, default=d["fpr"], help="share of unmemorized prompts allowed to form a "
                   "clique: the edge is this quantile of the reference prompts' clique radii (default %(default)s)")
    p.add_argument("--drop-reference-copies", action=argparse.BooleanOptionalAction,
                   default=d["drop_reference_copies"], help="leave the reference prompts whose tightest clique the "
                   "audit flags as a copy of a training image out of the edge's calibration (listed in "
                   "summary.json; the default); --no-drop-reference-copies keeps them, a stricter edge, and a "
                   "warning names them")
    p.add_argument("--prefilter", default=d["prefilter"], choices=("noise-norm", "one-step", "none"),
                   help="score prompts with a probe first and generate only for the prompts it points to: noise-norm "
                   "(default) the prompts the first-step noise-norm probe flags at --prefilter-fpr (default --fpr) "
                   "against the reference prompts, one-step the top --keep share of the one-step scores, none every "
                   "prompt (prefilter.csv has every prompt's score)")
    p.add_argument("--prefilter-fpr", type=float, default=d["prefilter_fpr"], help="the false-positive rate at "
                   "which --prefilter noise-norm flags prompts against the reference prompts (default: --fpr)")
    p.add_argument("--keep", type=float, default=None, help=f"share kept by --prefilter one-step (default "
                   f"{d['keep']})")
    p.add_argument("--steps", type=int, default=d["sample_steps"], help="DDIM steps (default %(default)s)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    _quiet(p)
    p.set_defaults(func=mc.cmd_extract)


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
                   help="score of the per-image verdict and, with --set, the features the set test sums (default "
                   "%(default)s; all: every score, the verdict by loss; SecMI and PIA also rise on re-compressed "
                   "images)")
    p.add_argument("--fpr", type=float, default=d["fpr"], help="target false-positive rate (default %(default)s)")
    p.add_argument("--timesteps", default=None, help="comma-separated diffusion timesteps each score averages over "
                   "(default: the papers' choices, loss 100, secmi 100, pia 200)")
    p.add_argument("--seeds", type=int, default=None, help=f"loss: noise draws per image (default {d['seeds']})")
    p.add_argument("--captions", default=None, help="captions.jsonl/.csv for conditional models (by file name or "
                   "path); without it a caption model is scored with the empty prompt")
    p.add_argument("--labels", default=None, help="evaluation: CSV with path,member (1 = trained on): adds AUC and "
                   "TPR at 1%% / 0.1%% FPR with bootstrap intervals to summary.json (never used for the threshold)")
    p.add_argument("--difficulty", default=d["difficulty"], choices=("image-stats", "none"),
                   help="image-stats (default): free every score of what the image's own brightness, contrast and "
                   "detail predict of it (one fit over tested and reference images); none: the methods' own scores")
    p.add_argument("--batch", type=int, default=d["batch"], help="images per model call (default %(default)s)")
    p.add_argument("--report", action="store_true", help="also write report.html (diffrep report DIR re-renders it)")
    p.add_argument("--device", default=d["device"], help="cpu (default) or cuda")
    _quiet(p)
    p.set_defaults(func=mc.cmd_membership)


MODEL_COMMANDS: tuple[Callable[[Sub], None], ...] = (_train, _experiment, _probe, _extract, _membership)
