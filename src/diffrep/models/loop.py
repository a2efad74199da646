"""The training loop of ``train.train``: the state a checkpoint restores, the batches drawn from the run's
seeded generator, the loss log per interval and the sample grids (see ``train``'s module docstring for
what one step does)."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit

GRID_SIZE, GRID_STEPS = 16, 25
LOG_EVERY = 50


@dataclass
class State:
    """What a checkpoint restores: the model, its EMA copy, the optimizer, the random generator every draw
    comes from, the step and the loss log."""
    model: Any
    ema_model: Any
    opt: Any
    gen: Any
    step: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, mcfg: dict[str, Any], ckpt: Optional[dict[str, Any]], lr: float, seed: int, dev: Any) -> "State":
        """A fresh model from ``seed``, or the checkpoint's state; on ``dev``, the model in training mode."""
        import torch

        from .nets import build_model

        torch.manual_seed(seed)
        model = build_model(mcfg)
        s = cls(model, copy.deepcopy(model).requires_grad_(False),
                torch.optim.AdamW(model.parameters(), lr=lr, fused=dev.type == "cuda"),
                torch.Generator().manual_seed(seed))
        if ckpt is not None:
            s.model.load_state_dict(ckpt["model"])
            s.ema_model.load_state_dict(ckpt["ema"])
            s.opt.load_state_dict(ckpt["optimizer"])
            s.gen.set_state(ckpt["rng"]["generator"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            s.step, s.log = int(ckpt["step"]), list(ckpt["log"])
        s.model.to(dev).train()
        s.ema_model.to(dev).eval()
        _move_optimizer(s.opt, dev)
        return s

    def save(self, run_dir: Path, config: dict[str, Any], conditioner: Any) -> None:
        import torch

        from .checkpoint import save_checkpoint, write_log_csv

        save_checkpoint(run_dir, {"step": self.step, "config": config, "model": self.model.state_dict(),
                                  "ema": self.ema_model.state_dict(), "optimizer": self.opt.state_dict(),
                                  "rng": {"generator": self.gen.get_state(), "torch": torch.get_rng_state()},
                                  "conditioning": conditioner.state(), "log": self.log})
        write_log_csv(run_dir, self.log)


class Batches:
    """Training batches from the run's generator (module docstring): image indices by sampling weight, noise,
    timesteps, the noised images and their conditioning, with the caption mitigation and caption dropout."""

    def __init__(self, ts: Any, weights: Any, conditioner: Any, gen: Any, dev: Any, batch: int, uncond_p: float,
                 mitigate: Optional[str], mitigate_p: float) -> None:
        import torch

        from .data import BatchSampler
        from .mitigate import MITIGATIONS, CaptionMitigation
        from .nets import scheduler

        # uint8 NCHW, kept on the device (a 10,000-image 32 px set is 10 MB); batches are drawn by index there
        self.images = torch.from_numpy(ts.images).permute(0, 3, 1, 2).contiguous().to(dev)
        self.sampler = BatchSampler(weights, gen)
        self.cond_for = conditioner.for_training(ts.class_keys, ts.captions, dev)
        self.empty = conditioner.encode([{"caption": ""}], dev) if uncond_p > 0 else None
        vocab = len(conditioner.tokenizer.vocab) if conditioner.tokenizer else 0
        self.mitigation = CaptionMitigation(mitigate, mitigate_p, vocab, gen) if mitigate in MITIGATIONS else None
        self.alphas = scheduler("ddpm").alphas_cumprod
        self.gen, self.dev, self.batch, self.uncond_p = gen, dev, batch, uncond_p

    def draw(self) -> tuple[Any, Any, Any, Any]:
        """(noised images x_t, timesteps, conditioning, the noise to predict), all on the device."""
        import torch

        from .cond import drop_captions

        gen, dev, batch = self.gen, self.dev, self.batch
        idx = self.sampler.draw(batch)
        x0 = self.images[idx.to(dev)].float().div_(127.5).sub_(1.0)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        t = torch.randint(0, self.alphas.shape[0], (batch,), generator=gen)
        a = self.alphas[t].to(dev).view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        c = self.cond_for(idx)
        c = self.mitigation.apply(c) if self.mitigation else c
        if self.empty is not None:
            c = drop_captions(c, self.empty, torch.rand(batch, generator=gen) < self.uncond_p)
        return xt, t.to(dev), c, noise


class Interval:
    """Sums over one logging interval, kept on the device: no host sync per step (it halves the speed of small
    models on a GPU)."""

    def __init__(self) -> None:
        self.loss: Any = 0.0
        self.n, self.seconds = 0, 0.0
        self.wen: list[Any] = [0.0, 0.0, 0]  # wen-filter: samples left out, summed noise norm, samples seen

    def add(self, loss: Any, filtered: Any, batch: int, seconds: float) -> None:
        self.loss, self.n, self.seconds = self.loss + loss.detach(), self.n + 1, self.seconds + seconds
        if filtered is not None:
            self.wen = [self.wen[0] + filtered[0], self.wen[1] + filtered[1], self.wen[2] + batch]

    def row(self, step: int, lr: float, wen: bool) -> dict[str, Any]:
        """The log row of the interval ending at ``step``; a diverged run stops here with a clear error."""
        mean_loss = float(self.loss) / self.n
        if not math.isfinite(mean_loss):
            raise DiffrepError(f"training diverged before step {step} (mean loss {mean_loss}); lower --lr "
                               f"(now {lr:g}) and train into a new --out folder")
        row = {"step": step, "loss": mean_loss, "steps_per_s": self.n / max(self.seconds, 1e-9)}
        if wen:
            row.update(wen_dropped=float(self.wen[0]) / self.wen[2], noise_norm=float(self.wen[1]) / self.wen[2])
        return row


def fit(s: State, batches: Batches, run_dir: Path, config: dict[str, Any], conditioner: Any,
        mcfg: dict[str, Any], progress: Optional[ProgressCallback]) -> tuple[list[str], float]:
    """Train from ``s.step`` to ``config["steps"]``: checkpoints, log rows and sample grids on their schedules.
    Returns the grids written and the training steps per second (grids and checkpoints excluded)."""
    import torch

    from .mitigate import WenFilter
    from .nets import ema_update, predict_noise

    steps, batch, lr = config["steps"], config["batch"], config["lr"]
    wen = WenFilter(config["wen_threshold"], batches.empty) if config.get("mitigate") == "wen-filter" else None
    start_step, train_s, interval, grids = s.step, 0.0, Interval(), []
    emit(progress, "train", s.step, steps, unit="step")
    while s.step < steps:
        t0 = time.perf_counter()
        xt, t, c, noise = batches.draw()
        pred = predict_noise(s.model, xt, t, c)
        loss, filtered = _loss(s.model, xt, t, c, pred, noise, wen)
        s.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), 1.0)
        s.opt.step()
        s.step += 1
        ema_update(s.ema_model, s.model, config["ema"], s.step)
        dt = time.perf_counter() - t0
        train_s += dt
        interval.add(loss, filtered, batch, dt)
        if s.step % LOG_EVERY == 0 or s.step == steps:
            s.log.append(interval.row(s.step, lr, wen is not None))
            interval = Interval()
        rate = (s.step - start_step) / max(train_s, 1e-9)
        emit(progress, "train", s.step, steps, unit="step",
             message=f"loss {s.log[-1]['loss']:.4f}, {rate:.1f} steps/s" if s.log else f"{rate:.1f} steps/s")
        if s.step % config["checkpoint_every"] == 0 or s.step == steps:
            s.save(run_dir, config, conditioner)
        every = config["sample_every"]
        if (every and s.step % every == 0) or s.step == steps:
            grids.append(str(_grid(run_dir, s.ema_model, conditioner, mcfg, s.step, config["seed"], batches.dev)))
            emit(progress, "train", s.step, steps, unit="step", message=f"sample grid {grids[-1]}")
    return grids, (s.step - start_step) / train_s if train_s else 0.0


def _loss(model: Any, xt: Any, t: Any, cond: Any, pred: Any, noise: Any, wen: Any) -> tuple[Any, Any]:
    """(the step's MSE loss, None), or with ``wen`` (``mitigate.WenFilter``) the loss over the samples it keeps
    and (samples left out, summed noise norm) as device tensors."""
    import torch

    if wen is None:
        return torch.nn.functional.mse_loss(pred.float(), noise), None
    keep, d = wen.keep(model, xt, t, cond, pred)
    per = ((pred.float() - noise) ** 2).flatten(1).mean(1)
    return (per * keep).sum() / keep.sum().clamp(min=1), ((~keep).sum(), d.sum())


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
