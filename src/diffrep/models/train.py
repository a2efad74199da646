"""Train a small DDPM on an image folder, resumably and deterministically.

One training step: draw ``batch`` image indices with replacement in proportion to the sampling weights
(duplicated images weigh ``dup_weight``), draw Gaussian noise and timesteps from the same seeded
generator, noise the images with the 1,000-step DDPM schedule, regress the noise (MSE), AdamW with
gradient-norm clipping at 1, then update the EMA copy. Random draws happen on the CPU generator whatever
the device, so a run is a function of its seed; on the CPU it is reproducible bit for bit.

The run directory holds ``config.json``, ``checkpoint.pt`` (every ``checkpoint_every`` steps and at the
end), ``log.csv`` (mean loss and steps/s per interval), ``training_set.jsonl`` (each image with caption,
class and sampling weight), ``duplicated.txt`` and ``samples/step_NNNNNN.png`` grids (16 DDIM samples of
the EMA weights). Running the same command again continues from the last checkpoint and ends with the
same weights as an uninterrupted run; a larger ``steps`` extends a finished run.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..defaults import DEFAULTS
from ..errors import DiffrepError, check_settings
from ..fsutil import DirLock, ensure_writable_dir, write_text
from ..progress import ProgressCallback
from .loop import Batches, State, fit
from .nets import CONDS, DEFAULT_CHANNELS, TEXT_DIM, TEXT_HEADS, TEXT_LAYERS

T = DEFAULTS["train"]


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # steps completed in total
    resumed_from: int  # 0 for a fresh run
    loss: float  # mean loss of the last logged interval (nan if none)
    seconds: float  # wall time of this call
    steps_per_s: float  # training steps per second in this call (grids and checkpoints excluded)
    params: int
    images: int
    duplicated: list[str] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)


def train(data: str | os.PathLike[str], out: str | os.PathLike[str], *, cond: str = T["cond"],
          subset: Optional[int] = None, dup_frac: float = T["dup_frac"], dup_weight: float = T["dup_weight"],
          steps: int = T["steps"], batch: int = T["batch"], lr: float = T["lr"], ema: float = T["ema"],
          seed: int = T["seed"], device: str = T["device"], size: int = T["size"],
          channels: Sequence[int] = DEFAULT_CHANNELS, sample_every: int = T["sample_every"],
          checkpoint_every: int = T["checkpoint_every"], captions: str | os.PathLike[str] | None = None,
          text_encoder: str | os.PathLike[str] | None = None, color: str = "auto",
          mitigate: Optional[str] = None, mitigate_p: float = T["mitigate_p"], uncond_p: float = T["uncond_p"],
          keep: str | os.PathLike[str] | None = None, wen_threshold: Optional[float] = None, progress: Optional[ProgressCallback] = None) -> TrainResult:
    """Train (or continue training) a diffusion model on the images in ``data``; see the module docstring.

    ``cond``: none, class (parent folder names, else captions) or caption (a small text encoder trained
    jointly, or the frozen local CLIP text encoder at ``text_encoder``). ``channels``: UNet widths per
    resolution level. ``sample_every`` 0 saves only the final grid. ``mitigate``: a train-time caption
    mitigation (rc, rt, cwr, gn; see ``mitigate.py``) applied to each sample with probability ``mitigate_p``,
    or ``wen-filter`` (samples whose text-conditional noise norm exceeds ``wen_threshold`` leave the loss).
    ``uncond_p``: caption models train on the empty caption for this share of samples (caption dropout, as
    Stable Diffusion was trained), so they also learn the unconditional prediction that classifier-free
    guidance and the memorization probes need. ``keep``: train only on the images this list names (e.g.
    ``diffrep dedup``'s ``keep.nul``: deduplication before training as a mitigation).
    """
    _validate(cond, steps, batch, lr, ema, sample_every, checkpoint_every, channels, text_encoder)
    if not 0.0 <= uncond_p < 1.0:
        raise DiffrepError(f"--uncond-p {uncond_p}: give a share in [0, 1) (0.1 by default; 0 trains no "
                           "unconditional prediction)")
    uncond_p = float(uncond_p) if cond == "caption" else 0.0
    from .mitigate import check as check_mitigation

    check_mitigation(mitigate, mitigate_p, cond, bool(text_encoder), wen_threshold, uncond_p)
    from .deps import require_models, resolve_device

    torch, diffusers = require_models()
    dev = resolve_device(device)
    if dev.type == "cuda":  # TF32 matmuls/convolutions: the usual speed-up on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    data_root, out_path = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
    if out_path == data_root or data_root in out_path.parents:
        raise DiffrepError(f"--out {out} is inside the training folder {data}: its sample grids would become "
                           "training images. Choose a run directory outside it.")
    from .data import check_size

    check_size(size, len(tuple(channels)))
    run_dir = ensure_writable_dir(out, "run directory")
    with DirLock(run_dir, "run directory"):
        from .checkpoint import CHECKPOINT, check_resumable, load_checkpoint, write_config
        from .cond import Conditioner
        from .data import duplication_weights, load_training_set
        from .nets import count_parameters, model_config

        ts = load_training_set(data, size=size, subset=subset, seed=seed, captions=captions, color=color,
                               keep=keep, progress=progress)
        ckpt = load_checkpoint(run_dir) if (run_dir / CHECKPOINT).is_file() else None
        conditioner, text_cfg, clip = _conditioning(cond, ts, text_encoder, mitigate, dev)
        mcfg = model_config(cond, image_channels=ts.channels, size=size, channels=tuple(channels),
                            num_classes=len(conditioner.classes), text=text_cfg)
        weights, dup = duplication_weights(len(ts), dup_frac, dup_weight, seed)
        config = _run_config(ts, mcfg, dev, len(dup), torch, diffusers, cond=cond, subset=subset,
                             dup_frac=dup_frac, dup_weight=dup_weight, batch=batch, lr=lr, ema=ema, seed=seed,
                             size=size, color=color, steps=steps, sample_every=sample_every,
                             checkpoint_every=checkpoint_every, uncond_p=uncond_p, mitigate=mitigate,
                             mitigate_p=mitigate_p, wen_threshold=wen_threshold, keep=keep)
        if ckpt is not None:
            check_resumable(run_dir, ckpt["config"], config)
            conditioner = Conditioner.from_state(ckpt["conditioning"], clip)

        state = State.start(mcfg, ckpt, lr, seed, dev)
        config["params"] = count_parameters(state.model)
        write_config(run_dir, config)
        if ckpt is None:
            _write_training_set(run_dir, ts, weights, dup)
        batches = Batches(ts, weights, conditioner, state.gen, dev, batch, uncond_p, mitigate, mitigate_p)
        resumed_from = state.step
        grids, rate = fit(state, batches, run_dir, config, conditioner, mcfg, progress)
        return TrainResult(run_dir, state.step, resumed_from, state.log[-1]["loss"] if state.log else float("nan"),
                           time.perf_counter() - t_start, rate, config["params"], len(ts), [ts.ids[i] for i in dup],
                           grids)


def _run_config(ts: Any, mcfg: dict[str, Any], dev: Any, duplicated: int, torch: Any, diffusers: Any,
                **o: Any) -> dict[str, Any]:
    """``config.json``: the options a resumed run must share with the first (``checkpoint.check_resumable``),
    the data, the model and the library versions."""
    config = {"data": str(ts.root), "captions": ts.caption_file, "cond": o["cond"], "subset": o["subset"],
              "dup_frac": o["dup_frac"], "dup_weight": o["dup_weight"], "batch": o["batch"], "lr": o["lr"],
              "ema": o["ema"], "seed": o["seed"], "size": o["size"], "color": o["color"], "model": mcfg,
              "steps": o["steps"], "sample_every": o["sample_every"], "checkpoint_every": o["checkpoint_every"],
              "device": str(dev), "images": len(ts), "duplicated": duplicated, "uncond_p": o["uncond_p"],
              "torch": str(torch.__version__), "diffusers": str(diffusers.__version__)}
    if o["mitigate"]:
        config.update(mitigate=o["mitigate"], mitigate_p=o["mitigate_p"])
    if o["mitigate"] == "wen-filter":
        config.update(wen_threshold=o["wen_threshold"])
    if o["keep"] is not None:
        config.update(keep=str(Path(o["keep"]).resolve()))
    return config


def _conditioning(cond: str, ts: Any, text_encoder: Any, mitigate: Optional[str],
                  dev: Any) -> tuple[Any, Optional[dict[str, Any]], Any]:
    """(Conditioner, the text encoder's model config, the loaded CLIP encoder or None) for a fresh run."""
    from .cond import Conditioner, distinct
    from .mitigate import INSERTED

    if cond == "class":
        if ts.class_keys is None:
            raise DiffrepError(f"--cond class needs labels: put each class's images in a subfolder named after it "
                               f"(e.g. {ts.root}/<class>/img.png), or give every image a caption")
        return Conditioner("class", classes=ts.classes(), class_captions=ts.class_captions(),
                           prompts=ts.classes()), None, None
    if cond != "caption":
        return Conditioner("none"), None, None
    if all(not c for c in ts.captions):
        raise DiffrepError(f"--cond caption needs captions: none of the {len(ts)} images has one. Put "
                           f"a captions.jsonl ({{\"file\", \"caption\"}} per line) in {ts.root} or "
                           "pass --captions")
    if text_encoder:
        from .text import load_clip_text_encoder

        clip = load_clip_text_encoder(text_encoder).to(dev)
        return (Conditioner("caption", clip=clip, prompts=distinct(ts.captions)),
                {"kind": "clip", "path": clip.path, "dim": clip.dim}, clip)
    from .text import WordTokenizer

    tok = WordTokenizer.build(ts.captions, extra=INSERTED if mitigate in ("rt", "cwr") else 0)
    return (Conditioner("caption", tokenizer=tok, prompts=distinct(ts.captions)),
            {"kind": "word", "vocab_size": len(tok.vocab), "max_len": tok.max_len, "dim": TEXT_DIM,
             "layers": TEXT_LAYERS, "heads": TEXT_HEADS}, None)


def _validate(cond: str, steps: int, batch: int, lr: float, ema: float, sample_every: int, checkpoint_every: int,
              channels: Sequence[int], text_encoder: Any) -> None:
    if cond not in CONDS:
        raise DiffrepError(f"--cond {cond!r}: use one of {', '.join(CONDS)}")
    if steps < 1:
        raise DiffrepError(f"--steps {steps}: train for at least one step")
    check_settings(batch=batch)
    if not lr > 0:
        raise DiffrepError(f"--lr {lr}: give a positive learning rate (2e-3 suits the small default model)")
    if not 0.0 <= ema < 1.0:
        raise DiffrepError(f"ema {ema}: give an EMA decay in [0, 1) (0.999 by default)")
    if sample_every < 0 or checkpoint_every < 1:
        raise DiffrepError("--sample-every must be >= 0 (0: only a final grid) and checkpoint_every >= 1")
    if not channels or any(int(c) < 1 for c in channels):
        raise DiffrepError(f"channels {tuple(channels)}: give positive UNet widths, e.g. 16,32,32")
    if text_encoder and cond != "caption":
        raise DiffrepError("--text-encoder only applies to --cond caption")


def _write_training_set(run_dir: Path, ts: Any, weights: Any, dup: list[int]) -> None:
    rows = []
    for i, rid in enumerate(ts.ids):
        row = {"id": rid, "path": ts.paths[i], "caption": ts.captions[i], "weight": float(weights[i])}
        if ts.class_keys is not None:
            row["class"] = ts.class_keys[i]
        rows.append(json.dumps(row, ensure_ascii=False))
    write_text(run_dir / "training_set.jsonl", "\n".join(rows) + "\n")
    write_text(run_dir / "duplicated.txt", "".join(f"{ts.ids[i]}\n" for i in dup))
