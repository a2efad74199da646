"""Membership scores of images, computed from a ``DiffusionModel``'s noise predictions.

Every score is higher for an image that looks like a training member (the attacks' errors are negated).
Images are mapped to the model's space first (pixels in [-1, 1], or VAE latents for a Stable Diffusion
folder); a_t below is the training schedule's alpha-bar and eps(x, t) the model's noise prediction under the
image's caption (the empty prompt, or nothing, for an unconditional score).

- ``loss`` (the loss-threshold attack; Matsumoto et al. 2023, Hu & Pang 2023): minus the denoising loss
  ||eps(x_t, t) - e||^2 / d with x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e, averaged over the timesteps and over
  ``seeds`` noise draws e. Seed ``s`` draws the same e for every image (paired, as in ``probes.scores``).
- ``secmi`` (SecMI, Duan et al., ICML 2023): x0 is carried to x_{t-k} by deterministic DDIM inversion in
  steps of k = 10; one more inversion step gives x_t and one DDIM denoising step brings it back to x~_{t-k};
  the score is minus ||x~_{t-k} - x_{t-k}||^2 / d. With the paper's t_SEC = 100 this compares at step 90 as
  the authors' code does (t/k + 1 model calls).
- ``pia`` (PIA, Kong et al., ICLR 2024): e0 = eps(x0, 0); x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e0; the score
  is minus mean |eps(x_t, t) - e0|^4 (the paper's l4 norm to the fourth power, per element; two model calls).

With several timesteps a method's score is the mean of its per-timestep scores. ``features`` keeps every
(method, timestep) score apart, for dataset inference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..models.adapter import repeat_cond
from ..progress import ProgressCallback, emit
from .journal import Journal, kept

METHODS = ("loss", "secmi", "pia")
DEFAULT_TIMESTEPS = {"loss": (100,), "secmi": (100,), "pia": (200,)}  # the papers' choices on DDPM (T = 1000)
SECMI_INTERVAL = 10


@dataclass
class ImageScores:
    """Per-image scores (one array per method) and per-(method, timestep) features."""

    scores: dict[str, np.ndarray]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # "loss@100" -> (n,)
    seconds: dict[str, float] = field(default_factory=dict)  # per method, all images
    model_calls: dict[str, int] = field(default_factory=dict)  # per method, per image


def timesteps_for(method: str, timesteps: Optional[Sequence[int]], train_steps: int) -> tuple[int, ...]:
    """The timesteps ``method`` scores at: the given ones (each once: the paired noise draws make a repeated
    timestep's score a copy), else the paper's, each within the schedule."""
    from ..errors import DiffrepError

    ts = tuple(dict.fromkeys(int(t) for t in (timesteps or DEFAULT_TIMESTEPS[method])))
    low = SECMI_INTERVAL if method == "secmi" else 1
    for t in ts:
        if not low <= t <= train_steps - 1:
            raise DiffrepError(f"--timesteps {t}: {method} needs timesteps between {low} and {train_steps - 1} "
                               f"(the model has {train_steps} training steps)")
        if method == "secmi" and t % SECMI_INTERVAL:
            raise DiffrepError(f"--timesteps {t}: secmi inverts in steps of {SECMI_INTERVAL}; give a multiple of it")
    return ts


def score_images(model: Any, images: np.ndarray, cond: Any, methods: Sequence[str] = ("loss",), *,
                 timesteps: Optional[Sequence[int]] = None, seeds: int = 2, batch: int = 64,
                 progress: Optional[ProgressCallback] = None, stage: str = "membership",
                 journal: Optional[Journal] = None) -> ImageScores:
    """Score uint8 ``images`` [N, H, W, C] with ``methods``. ``cond`` is the conditioning batch, row i for
    image i (``{}`` for an unconditional model), built by the caller. ``journal``: where finished batches are
    kept, and read back when the same run resumes (``journal.py``)."""
    import torch

    n = len(images)
    res = ImageScores({m: np.zeros(n) for m in methods})
    plans = {m: timesteps_for(m, timesteps, model.train_steps) for m in methods}
    for m in methods:
        for t in plans[m]:
            res.features[f"{m}@{t}"] = np.zeros(n)
        res.seconds[m] = 0.0
    noise = torch.cat([model.noise(1, torch.Generator().manual_seed(10_000 + s)) for s in range(seeds)])
    emit(progress, stage, 0, n, unit="img")
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        done = kept(journal, start, lambda: _score_batch(model, images[start:stop],
                                                         {k: v[start:stop] for k, v in cond.items()}, plans, noise))
        for m in methods:
            for t in plans[m]:
                res.features[f"{m}@{t}"][start:stop] = done[f"{m}@{t}"]
            res.seconds[m] += float(done[f"seconds/{m}"])
        emit(progress, stage, stop, n, unit="img")
    for m in methods:
        res.scores[m] = np.mean([res.features[f"{m}@{t}"] for t in plans[m]], axis=0)
        res.model_calls[m] = int(sum(_calls(m, t, seeds) for t in plans[m]))
    return res


def _score_batch(model: Any, images: np.ndarray, cond: Any, plans: dict[str, tuple[int, ...]],
                 noise: Any) -> dict[str, Any]:
    """One batch: ``<method>@<t>`` per-image arrays and ``seconds/<method>``."""
    import torch

    out: dict[str, Any] = {}
    with torch.no_grad():
        x0 = model.to_model(images).float()
        for m, ts in plans.items():
            t0 = time.perf_counter()
            for t in ts:
                if m == "loss":
                    out[f"{m}@{t}"] = _loss(model, x0, cond, t, noise)
                elif m == "secmi":
                    out[f"{m}@{t}"] = _secmi(model, x0, cond, t)
                else:
                    out[f"{m}@{t}"] = _pia(model, x0, cond, t)
            out[f"seconds/{m}"] = time.perf_counter() - t0
    return out


def _calls(method: str, t: int, seeds: int) -> int:
    """Noise predictions per image for one timestep of ``method``."""
    return seeds if method == "loss" else (t // SECMI_INTERVAL + 1 if method == "secmi" else 2)


def _per_image(sq: Any) -> np.ndarray:
    return sq.flatten(1).mean(1).double().cpu().numpy()


def _loss(model: Any, x0: Any, cond: Any, t: int, noise: Any) -> np.ndarray:
    """Minus the denoising loss at ``t``, averaged over the paired noise draws."""
    b, k = x0.shape[0], noise.shape[0]
    a = model.alphas[t].item()
    e = noise.repeat(b, 1, 1, 1).to(x0.dtype)  # image-major: rows i*k .. (i+1)*k-1 are image i
    x = x0.repeat_interleave(k, dim=0)
    x_t = a ** 0.5 * x + (1 - a) ** 0.5 * e
    eps = model.predict(x_t, t, repeat_cond(cond, k)).float()
    return -_per_image((eps - e) ** 2).reshape(b, k).mean(1)


def _ddim_step(model: Any, x: Any, cond: Any, t_from: int, t_to: int) -> Any:
    """One deterministic DDIM step from ``t_from`` to ``t_to`` (either direction) with eps(x, t_from)."""
    a_from, a_to = model.alphas[t_from].item(), model.alphas[t_to].item()
    eps = model.predict(x, t_from, cond).float()
    x0_hat = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
    return a_to ** 0.5 * x0_hat + (1 - a_to) ** 0.5 * eps


def _secmi(model: Any, x0: Any, cond: Any, t: int, k: int = SECMI_INTERVAL) -> np.ndarray:
    """Minus SecMI's t-error: deterministic inversion to ``t - k``, one step on to ``t`` and one step back."""
    x = x0
    for s in range(0, t - k, k):
        x = _ddim_step(model, x, cond, s, s + k)
    x_next = _ddim_step(model, x, cond, t - k, t)
    x_back = _ddim_step(model, x_next, cond, t, t - k)
    return -_per_image((x_back - x) ** 2)


def _pia(model: Any, x0: Any, cond: Any, t: int) -> np.ndarray:
    """Minus PIA's error: the model's own noise at t = 0 carried to ``t`` and predicted back."""
    a = model.alphas[t].item()
    e0 = model.predict(x0, 0, cond).float()
    x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * e0
    eps = model.predict(x_t, t, cond).float()
    return -_per_image((eps - e0).abs() ** 4)
