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

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..defaults import DEFAULTS
from ..errors import DiffrepError
from ..fsutil import DirLock, ensure_writable_dir, write_text
from ..progress import ProgressCallback, emit
from .nets import CONDS, DEFAULT_CHANNELS, TEXT_DIM, TEXT_HEADS, TEXT_LAYERS

GRID_SIZE, GRID_STEPS = 16, 25
LOG_EVERY = 50

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
    from .mitigate import MITIGATIONS, CaptionMitigation, WenFilter, check as check_mitigation

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
        from .checkpoint import (CHECKPOINT, check_resumable, load_checkpoint, save_checkpoint, write_config,
                                 write_log_csv)
        from .cond import Conditioner, drop_captions
        from .data import BatchSampler, duplication_weights, load_training_set
        from .nets import build_model, count_parameters, ema_update, model_config, predict_noise, scheduler

        ts = load_training_set(data, size=size, subset=subset, seed=seed, captions=captions, color=color,
                               keep=keep, progress=progress)
        ckpt = load_checkpoint(run_dir) if (run_dir / CHECKPOINT).is_file() else None
        conditioner, text_cfg, clip = _conditioning(cond, ts, text_encoder, mitigate, dev)
        mcfg = model_config(cond, image_channels=ts.channels, size=size, channels=tuple(channels),
                            num_classes=len(conditioner.classes), text=text_cfg)
        weights, dup = duplication_weights(len(ts), dup_frac, dup_weight, seed)
        config = {"data": str(ts.root), "captions": ts.caption_file, "cond": cond, "subset": subset,
                  "dup_frac": dup_frac, "dup_weight": dup_weight, "batch": batch, "lr": lr, "ema": ema, "seed": seed,
                  "size": size, "color": color, "model": mcfg, "steps": steps, "sample_every": sample_every,
                  "checkpoint_every": checkpoint_every, "device": str(dev), "images": len(ts),
                  "duplicated": len(dup), "uncond_p": uncond_p, "torch": str(torch.__version__),
                  "diffusers": str(diffusers.__version__)}
        if mitigate:
            config.update(mitigate=mitigate, mitigate_p=mitigate_p)
        if mitigate == "wen-filter":
            config.update(wen_threshold=wen_threshold)
        if keep is not None:
            config.update(keep=str(Path(keep).resolve()))
        if ckpt is not None:
            check_resumable(run_dir, ckpt["config"], config)
            conditioner = Conditioner.from_state(ckpt["conditioning"], clip)

        torch.manual_seed(seed)
        model = build_model(mcfg)
        ema_model = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=dev.type == "cuda")
        gen = torch.Generator().manual_seed(seed)
        step, log = 0, []
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            ema_model.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["rng"]["generator"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            step, log = int(ckpt["step"]), list(ckpt["log"])
        model.to(dev).train()
        ema_model.to(dev).eval()
        _move_optimizer(opt, dev)
        config["params"] = count_parameters(model)
        write_config(run_dir, config)
        if ckpt is None:
            _write_training_set(run_dir, ts, weights, dup)

        # uint8 NCHW, kept on the device (a 10,000-image 32 px set is 10 MB); batches are drawn by index there
        images = torch.from_numpy(ts.images).permute(0, 3, 1, 2).contiguous().to(dev)
        sampler = BatchSampler(weights, gen)
        cond_for = conditioner.for_training(ts.class_keys, ts.captions, dev)
        empty = conditioner.encode([{"caption": ""}], dev) if uncond_p > 0 else None
        mitigation = (CaptionMitigation(mitigate, mitigate_p, len(conditioner.tokenizer.vocab) if conditioner.tokenizer
                                        else 0, gen) if mitigate in MITIGATIONS else None)
        wen = WenFilter(wen_threshold, empty) if mitigate == "wen-filter" else None
        sched = scheduler("ddpm")
        alphas = sched.alphas_cumprod
        resumed_from, start_step = step, step
        grids: list[str] = []
        train_s, loss_sum, loss_n, interval_t = 0.0, 0.0, 0, 0.0
        wen_sum: list[Any] = [0.0, 0.0, 0]  # wen-filter: samples left out, summed noise norm, samples seen
        emit(progress, "train", step, steps, unit="step")

        def checkpoint() -> None:
            save_checkpoint(run_dir, {"step": step, "config": config, "model": model.state_dict(),
                                      "ema": ema_model.state_dict(), "optimizer": opt.state_dict(),
                                      "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
                                      "conditioning": conditioner.state(), "log": log})
            write_log_csv(run_dir, log)

        while step < steps:
            t0 = time.perf_counter()
            idx = sampler.draw(batch)
            x0 = images[idx.to(dev)].float().div_(127.5).sub_(1.0)
            noise = torch.randn(x0.shape, generator=gen).to(dev)
            t = torch.randint(0, alphas.shape[0], (batch,), generator=gen)
            a = alphas[t].to(dev).view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            c = cond_for(idx)
            c = mitigation.apply(c) if mitigation else c
            if empty is not None:
                c = drop_captions(c, empty, torch.rand(batch, generator=gen) < uncond_p)
            pred = predict_noise(model, xt, t.to(dev), c)
            loss, filtered = _loss(model, xt, t.to(dev), c, pred, noise, wen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            ema_update(ema_model, model, ema, step)
            # summed on the device: no host sync per step (it halves the speed of small models on a GPU)
            loss_sum, loss_n = loss_sum + loss.detach(), loss_n + 1
            if filtered is not None:
                wen_sum = [wen_sum[0] + filtered[0], wen_sum[1] + filtered[1], wen_sum[2] + batch]
            dt = time.perf_counter() - t0
            train_s, interval_t = train_s + dt, interval_t + dt
            if step % LOG_EVERY == 0 or step == steps:
                mean_loss = float(loss_sum) / loss_n
                if not math.isfinite(mean_loss):
                    raise DiffrepError(f"training diverged before step {step} (mean loss {mean_loss}); lower --lr "
                                       f"(now {lr:g}) and train into a new --out folder")
                log.append({"step": step, "loss": mean_loss, "steps_per_s": loss_n / max(interval_t, 1e-9)})
                if wen is not None:
                    log[-1].update(wen_dropped=float(wen_sum[0]) / wen_sum[2], noise_norm=float(wen_sum[1]) / wen_sum[2])
                loss_sum, loss_n, interval_t, wen_sum = 0.0, 0, 0.0, [0.0, 0.0, 0]
            rate = (step - start_step) / max(train_s, 1e-9)
            emit(progress, "train", step, steps, unit="step",
                 message=f"loss {log[-1]['loss']:.4f}, {rate:.1f} steps/s" if log else f"{rate:.1f} steps/s")
            if step % checkpoint_every == 0 or step == steps:
                checkpoint()
            if (sample_every and step % sample_every == 0) or step == steps:
                grids.append(str(_grid(run_dir, ema_model, conditioner, mcfg, step, seed, dev)))
                emit(progress, "train", step, steps, unit="step", message=f"sample grid {grids[-1]}")
        return TrainResult(run_dir, step, resumed_from, log[-1]["loss"] if log else float("nan"),
                           time.perf_counter() - t_start, (step - start_step) / train_s if train_s else 0.0,
                           config["params"], len(ts), [ts.ids[i] for i in dup], grids)


def _loss(model: Any, xt: Any, t: Any, cond: Any, pred: Any, noise: Any, wen: Any) -> tuple[Any, Any]:
    """(the step's MSE loss, None), or with ``wen`` (``mitigate.WenFilter``) the loss over the samples it keeps
    and (samples left out, summed noise norm) as device tensors."""
    import torch

    if wen is None:
        return torch.nn.functional.mse_loss(pred.float(), noise), None
    keep, d = wen.keep(model, xt, t, cond, pred)
    per = ((pred.float() - noise) ** 2).flatten(1).mean(1)
    return (per * keep).sum() / keep.sum().clamp(min=1), ((~keep).sum(), d.sum())


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
    if batch < 1:
        raise DiffrepError(f"--batch {batch}: give a positive batch size")
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


def _move_optimizer(opt: Any, dev: Any) -> None:
    """Optimizer state onto ``dev`` after loading a checkpoint (saved on the CPU). Step counters (0-dim) move
    too when the optimizer is fused, which needs them on the device; other optimizers keep them on the CPU."""
    fused = bool(opt.defaults.get("fused"))
    for state in opt.state.values():
        for k, v in state.items():
            if hasattr(v, "to") and (fused or getattr(v, "dim", lambda: 1)() > 0):
                state[k] = v.to(dev)


def _grid(run_dir: Path, ema_model: Any, conditioner: Any, mcfg: dict[str, Any], step: int, seed: int,
          dev: Any) -> Path:
    """16 DDIM samples of the EMA weights (fixed noise per run, so grids of different steps compare)."""
    import torch

    from .adapter import RunModel
    from .sample import generate, save_grid

    model = RunModel(ema_model, conditioner, mcfg, step=step, device=dev)
    gen = torch.Generator().manual_seed(seed + 1)
    imgs = generate(model, conditioner.default_prompts(GRID_SIZE), GRID_SIZE, sampler="ddim", steps=GRID_STEPS,
                    generator=gen)
    (run_dir / "samples").mkdir(exist_ok=True)
    path = run_dir / "samples" / f"step_{step:06d}.png"
    save_grid(imgs, path)
    return path


def _write_training_set(run_dir: Path, ts: Any, weights: Any, dup: list[int]) -> None:
    rows = []
    for i, rid in enumerate(ts.ids):
        row = {"id": rid, "path": ts.paths[i], "caption": ts.captions[i], "weight": float(weights[i])}
        if ts.class_keys is not None:
            row["class"] = ts.class_keys[i]
        rows.append(json.dumps(row, ensure_ascii=False))
    write_text(run_dir / "training_set.jsonl", "\n".join(rows) + "\n")
    write_text(run_dir / "duplicated.txt", "".join(f"{ts.ids[i]}\n" for i in dup))
