"""Mitigations that steer sampling with the text-conditional noise, d = ||eps(x_t, c) - eps(x_t, empty)||_2:

- ``wen`` (Wen et al., ICLR 2024, "Detecting, Explaining, and Mitigating Memorization in Diffusion Models"):
  at the starting noise x_T the prompt embedding is optimized (AdamW, lr 0.05, at most 10 iterations) to
  lower d; an image stops once its d is at or below the target (the strength; 0 runs all 10 iterations).
  The image is then sampled from the same x_T with the optimized embedding. Recorded per image: the
  iterations run and d before and after.
- ``jain`` (Jain et al., CVPR 2025, "Classifier-Free Guidance inside the Attraction Basin May Cause
  Memorization"): each image is sampled with guidance scale 1 (the plain conditional prediction) until its d
  stops falling (the first local minimum along its trajectory), then with the normal scale (the strength;
  by default ``--guidance``). Recorded per image: the step at which guidance switched on.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import DiffrepError
from ..models.adapter import noise_gap
from ..models.sample import SamplingPlan
from .prompts import require_text

WEN_LR, WEN_ITERATIONS = 0.05, 10


class WenSteering(SamplingPlan):
    name = "wen"

    def __init__(self, target: float) -> None:
        self.target = float(target)
        self._rec: list[dict[str, Any]] = []

    def bind(self, model: Any, guidance: float) -> None:
        require_text(model, "wen")
        model.require_prompts("--mitigate wen")
        if self.target < 0:
            raise DiffrepError(f"--mitigate-strength {self.target}: wen's target noise norm must be >= 0")

    def needs_uncond(self) -> bool:
        return True

    def condition(self, model: Any, x: Any, t: Any, cond: Any, uncond: Any) -> Any:
        import torch

        with torch.no_grad():
            eps_u = model.predict(x, t, uncond).float()
        hidden = cond["hidden"].detach().clone().float().requires_grad_(True)
        opt = torch.optim.AdamW([hidden], lr=WEN_LR)
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        iters = np.zeros(len(x), int)
        first: Optional[np.ndarray] = None
        with torch.enable_grad():
            for _ in range(WEN_ITERATIONS + 1):
                d = noise_gap(model.predict(x, t, {**cond, "hidden": hidden.to(cond["hidden"].dtype)}), eps_u)
                if first is None:
                    first = d.detach().cpu().numpy()
                active &= d.detach() > self.target
                last = d.detach().cpu().numpy()
                if not bool(active.any()) or int(iters.max()) >= WEN_ITERATIONS:
                    break
                hidden.grad, = torch.autograd.grad((d * active).sum(), hidden)  # no gradients left on the model
                opt.step()
                iters += active.cpu().numpy()
        self._rec = [{"mitigation": "wen", "mitigation_strength": self.target, "wen_iterations": int(i),
                      "noise_norm_before": round(float(a), 5), "noise_norm_after": round(float(b), 5)}
                     for i, a, b in zip(iters, first, last)]
        return {**cond, "hidden": hidden.detach().to(cond["hidden"].dtype)}

    def records(self, n: int) -> list[dict[str, Any]]:
        return self._rec or [{"mitigation": "wen"} for _ in range(n)]


class JainSchedule(SamplingPlan):
    name = "jain"

    def __init__(self, scale: Optional[float]) -> None:
        self.scale = scale
        self._prev: Any = None
        self._on: Any = None
        self._switch: Any = None

    def bind(self, model: Any, guidance: float) -> None:
        require_text(model, "jain")
        model.require_prompts("--mitigate jain")
        self.scale = float(self.scale if self.scale is not None else guidance)
        if self.scale <= 1.0:
            raise DiffrepError("--mitigate jain turns guidance on after the first local minimum of the conditional "
                               "gap: give --guidance (or --mitigate-strength) above 1")

    def needs_uncond(self) -> bool:
        return True

    def condition(self, model: Any, x: Any, t: Any, cond: Any, uncond: Any) -> Any:
        import torch

        self._prev, self._switch = None, np.full(len(x), -1)
        self._on = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        return cond

    def eps(self, model: Any, x: Any, t: Any, step: int, cond: Any, uncond: Any, guidance: float) -> Any:
        import torch

        eps_u, eps_c = model.predict_pair(x, t, cond, uncond)
        gap = noise_gap(eps_c, eps_u)
        if self._prev is not None:
            turned = ~self._on & (gap > self._prev)  # the gap rose: the previous step was its first local minimum
            self._switch[turned.cpu().numpy()] = step
            self._on |= turned
        self._prev = gap
        scale = torch.where(self._on, torch.tensor(self.scale, device=x.device), torch.tensor(1.0, device=x.device))
        return eps_u + scale.view(-1, *([1] * (x.dim() - 1))).to(eps_c.dtype) * (eps_c - eps_u)

    def records(self, n: int) -> list[dict[str, Any]]:
        sw = self._switch if self._switch is not None else np.full(n, -1)
        return [{"mitigation": "jain", "mitigation_strength": self.scale,
                 "guidance_from_step": (int(s) if s >= 0 else None)} for s in sw]
