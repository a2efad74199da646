"""Memorization scores of prompts, computed from a ``DiffusionModel``'s noise predictions (no images made).

Every score is higher for a prompt the model has memorized. Seeds are paired across prompts: seed ``s``
draws the same starting noise x_T for every prompt, so prompts are compared on the same noise.

- ``noise-norm`` (Wen et al., ICLR 2024, "Detecting, Explaining, and Mitigating Memorization in Diffusion
  Models"): the mean over seeds and the first ``k`` sampling steps of ||eps(x_t, c) - eps(x_t, empty)||_2,
  the text-conditional part of the noise prediction; x_t follows the DDIM trajectory of the prompt (at
  guidance ``guidance``). ``k`` = 1 looks at x_T alone, the cheap mode. Since x_T depends on the seed
  only, the first step's eps(x_T, empty) is the same for every prompt: it is predicted once per seed and
  shared, so the first step costs one noise prediction per prompt and seed instead of two.
- ``seed-ssim`` (NeMo, Hintersdorf et al., NeurIPS 2024): the mean pairwise SSIM, across seeds, of the
  first-step text-conditional noise eps(x_T, c) - eps(x_T, empty) (as NeMo's code compares it; the raw
  prediction at x_T is dominated by x_T itself): a memorized prompt predicts the same noise whatever the seed.
- ``one-step`` (Webster, 2023, "A Reproducible Extraction of Training Images from Diffusion Models",
  white-box): the distance ||x_T - x0_hat||_2 between the starting noise and the one-step denoised estimate
  x0_hat = (x_T - sqrt(1 - a_T) eps(x_T, c)) / sqrt(a_T), clipped to the model's range, averaged over seeds.
  A memorized prompt is denoised in one step to its training image, far from the noise; an ordinary prompt
  to a faint average. The paper states the idea, not a formula: this is our reading, and its orientation
  (higher = memorized) was checked on a development model (docs/probes.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..models.adapter import noise_gap, repeat_cond
from ..progress import ProgressCallback, emit
from .journal import Journal, kept

METHODS = ("noise-norm", "seed-ssim", "one-step")


@dataclass
class PromptScores:
    """Per-prompt scores, one array per method computed (NaN where a prompt was not scored)."""

    scores: dict[str, np.ndarray]
    seconds: float
    model_calls: int  # noise predictions made, all methods together (a guided call counts two)
    tokens: list[list[tuple[str, float]]] = field(default_factory=list)  # per prompt: (token, share of |grad|)


def score_prompts(model: Any, prompts: Sequence[str], methods: Sequence[str] = ("noise-norm",), *,
                  seeds: int = 4, steps: int = 1, sample_steps: int = 50, guidance: float = 1.0, batch: int = 32,
                  attribute: bool = False, progress: Optional[ProgressCallback] = None,
                  stage: str = "probe", journal: Optional[Journal] = None,
                  share_first_uncond: bool = True) -> PromptScores:
    """Score ``prompts`` with ``methods`` (see the module docstring); ``steps`` is Wen's k, ``sample_steps``
    the DDIM schedule the trajectory follows. ``attribute`` adds Wen's per-token attribution of the
    first-step noise-norm (the gradient norm with respect to each token's text state). ``journal``: where
    finished batches are kept, and read back when the same run resumes (``journal.py``).
    ``share_first_uncond=False`` predicts the first step's eps(x_T, empty) again beside every prompt instead of
    once per seed (same scores within float32 batching; for benchmarks and tests)."""
    import time

    import torch

    n = len(prompts)
    out = {m: np.full(n, np.nan) for m in methods}
    tokens: list[list[tuple[str, float]]] = []
    per_batch = max(1, batch // max(1, seeds))
    calls, seconds = 0, 0.0
    noise = torch.cat([model.noise(1, torch.Generator().manual_seed(s)) for s in range(seeds)])
    shared: dict[str, Any] = {}

    def first_uncond() -> Any:
        """eps(x_T, empty) at the first timestep for each seed, predicted on first use (None when not shared)."""
        nonlocal calls, seconds
        if not share_first_uncond:
            return None
        if "eps" not in shared:
            t0 = time.perf_counter()
            with torch.no_grad():
                shared["eps"] = model.predict(noise, _first_timestep(model, sample_steps), model.empty(seeds))
            calls, seconds = calls + seeds, seconds + time.perf_counter() - t0
        return shared["eps"]

    emit(progress, stage, 0, n, unit="prompt")
    for start in range(0, n, per_batch):
        chunk = list(prompts[start:start + per_batch])
        done = kept(journal, start,
                    lambda: _score_batch(model, chunk, methods, noise, steps, sample_steps, guidance, attribute,
                                         first_uncond))
        for m in methods:
            out[m][start:start + len(chunk)] = done[f"score/{m}"]
        if attribute:
            tokens.extend([(str(t), float(v)) for t, v in row] for row in json.loads(str(done["tokens"])))
        calls += int(done["calls"])
        seconds += float(done["seconds"])
        emit(progress, stage, start + len(chunk), n, unit="prompt")
    return PromptScores(out, seconds, calls, tokens)


def _score_batch(model: Any, chunk: list[str], methods: Sequence[str], noise: Any, steps: int, sample_steps: int,
                 guidance: float, attribute: bool, first_uncond: Callable[[], Any]) -> dict[str, Any]:
    """One batch of prompts: ``score/<method>`` arrays, ``tokens`` (JSON), ``calls`` and ``seconds``.
    ``first_uncond()``: the seeds' shared first-step eps(x_T, empty), or None to predict it with the batch."""
    import time

    import torch

    b, seeds = len(chunk), len(noise)
    first_step = "noise-norm" in methods or "seed-ssim" in methods or attribute
    shared = first_uncond() if first_step else None  # timed and counted where it is predicted, once
    t0 = time.perf_counter()
    eps_u0 = None if shared is None else shared.repeat(b, 1, 1, 1)
    res: dict[str, Any] = {}
    calls = 0
    x_t = noise.repeat(b, 1, 1, 1)  # prompt-major: rows i*seeds .. (i+1)*seeds-1 are prompt i
    cond = repeat_cond(model.encode(chunk), seeds)
    uncond = repeat_cond(model.empty(1), b * seeds)  # the empty prompt encoded once
    with torch.no_grad():
        if "noise-norm" in methods or "seed-ssim" in methods:
            norms, first, c = _trajectory(model, x_t, cond, uncond, steps if "noise-norm" in methods else 1,
                                          sample_steps, guidance, first_uncond=eps_u0)
            calls += c
            if "noise-norm" in methods:
                res["score/noise-norm"] = norms.view(b, seeds, -1).mean(dim=(1, 2)).double().cpu().numpy()
            if "seed-ssim" in methods:
                res["score/seed-ssim"] = np.array([_mean_pairwise_ssim(first[i * seeds:(i + 1) * seeds])
                                                   for i in range(b)])
        if "one-step" in methods:
            res["score/one-step"] = _one_step(model, x_t, cond).view(b, seeds).mean(1).double().cpu().numpy()
            calls += b * seeds
    toks = []
    if attribute:
        toks = _attribution(model, chunk, cond, uncond, x_t, seeds, sample_steps, eps_u0)
        calls += (1 if eps_u0 is not None else 2) * b * seeds
    return res | {"tokens": json.dumps(toks), "calls": calls, "seconds": time.perf_counter() - t0}


def _trajectory(model: Any, x: Any, cond: dict[str, Any], uncond: dict[str, Any], k: int, sample_steps: int,
                guidance: float, observe: Optional[Callable[[Any, Any, Any, Any], None]] = None,
                first_uncond: Any = None) -> tuple[Any, Any, int]:
    """(||eps_c - eps_u|| per sample and step [B, k], the first step's eps_c - eps_u, model calls).
    ``observe(t, x_t, eps_u, eps_c)``, when given, sees each step's state and predictions before the step.
    ``first_uncond``: eps(x, empty) at the first step when already known (it is then not predicted again)."""
    import torch

    sched = model.make_scheduler("ddim")
    sched.set_timesteps(sample_steps)
    norms, first, calls = [], None, 0
    for t in sched.timesteps[:k]:
        if first is None and first_uncond is not None:
            eps_u, eps_c = first_uncond, model.predict(x, t.to(model.device), cond)
            calls += x.shape[0]
        else:
            eps_u, eps_c = model.predict_pair(x, t.to(model.device), cond, uncond)
            calls += 2 * x.shape[0]
        diff = eps_c.float() - eps_u.float()
        if first is None:
            first = diff
        norms.append(noise_gap(eps_c, eps_u))
        if observe is not None:
            observe(t, x, eps_u, eps_c)
        x = sched.step((eps_u + guidance * diff).to(x.dtype), t, x).prev_sample
    return torch.stack(norms, dim=1), first, calls


def _one_step(model: Any, x_T: Any, cond: dict[str, Any]) -> Any:
    """||x_T - x0_hat||_2: the distance between the starting noise and the one-step denoised estimate made
    from it at the first timestep (clipped to the model's range)."""
    import torch

    T = model.train_steps - 1
    a_T = model.alphas[T].to(model.device)
    eps = model.predict(x_T, torch.tensor(T, device=model.device), cond).float()
    x0 = ((x_T - (1 - a_T).sqrt() * eps) / a_T.sqrt()).clamp(-_clip(model), _clip(model))
    return (x_T.float() - x0).flatten(1).norm(dim=1)


def _clip(model: Any) -> float:
    """Range of x0 in model space: pixels live in [-1, 1]; latents are unbounded (a loose clip)."""
    return 1.0 if model.kind == "run" else 10.0


def _mean_pairwise_ssim(x: Any) -> float:
    """Mean SSIM over pairs of rows of ``x`` [S, C, H, W] (Gaussian window, sigma 1.5, per channel)."""
    s = x.shape[0]
    if s < 2:
        return float("nan")
    vals = [ssim(x[i], x[j]) for i in range(s) for j in range(i + 1, s)]
    return float(np.mean(vals))


def ssim(a: Any, b: Any, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two [C, H, W] tensors, data range from both."""
    import torch
    import torch.nn.functional as F

    a, b = a.float()[:, None], b.float()[:, None]  # channels as a batch of gray images
    rng = float(torch.maximum(a.max(), b.max()) - torch.minimum(a.min(), b.min())) or 1.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    r = max(1, min(int(3 * sigma + 0.5), (min(a.shape[-2:]) - 1) // 2))
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32, device=a.device) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]

    def blur(z: Any) -> Any:
        return F.conv2d(F.pad(z, (r, r, r, r), mode="reflect"), w)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def _first_timestep(model: Any, sample_steps: int) -> Any:
    """The first timestep of the DDIM schedule the noise-norm trajectory follows, on the model's device."""
    sched = model.make_scheduler("ddim")
    sched.set_timesteps(sample_steps)
    return sched.timesteps[0].to(model.device)


def _attribution(model: Any, prompts: list[str], cond: dict[str, Any], uncond: dict[str, Any], x_T: Any,
                 seeds: int, sample_steps: int, eps_u: Any = None) -> list[list[tuple[str, float]]]:
    """Per prompt, each conditioning position's share of the L2 norm of d(first-step noise-norm)/d(text state).
    ``eps_u``: the first step's eps(x_T, empty) when already known (it does not depend on the text)."""
    import torch

    hidden = cond["hidden"].detach().clone().requires_grad_(True)
    c = dict(cond, hidden=hidden)
    t = _first_timestep(model, sample_steps)
    with torch.enable_grad():
        if eps_u is None:
            eps_u, eps_c = model.predict_pair(x_T, t, c, uncond)
        else:
            eps_c = model.predict(x_T, t, c)
        d = noise_gap(eps_c, eps_u).sum()
        (grad,) = torch.autograd.grad(d, hidden)
    per_pos = grad.float().norm(dim=-1).view(len(prompts), seeds, -1).mean(1).cpu().numpy()
    out = []
    for i, p in enumerate(prompts):
        toks = model.tokens(p)
        g = per_pos[i, :len(toks)]
        total = float(g.sum()) or 1.0
        out.append([(tok, float(v) / total) for tok, v in zip(toks, g)])
    return out
