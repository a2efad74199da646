"""Inference-time mitigations: change how a deployed model samples so it copies less, without retraining.

Each is a ``models.sample.SamplingPlan`` built by ``make_plan(name, strength)`` and passed to
``models.sample.sample`` (``diffrep sample --mitigate NAME [--mitigate-strength S]``); it acts through the
model adapter only, so it works on ``diffrep train`` caption runs and local Stable Diffusion folders alike,
and refuses a model it cannot act on with a one-line reason. Every image's line in ``prompts.jsonl`` records
the mitigation, its strength and what it did.

- ``gni``, ``rt``, ``cwr``, ``rna`` (Somepalli et al., NeurIPS 2023; ``prompts.py``): Gaussian noise on the
  prompt embedding, random tokens, repeated caption words, random numbers inserted into the prompt;
- ``wen`` (Wen et al., ICLR 2024; ``steering.py``): the prompt embedding is optimized at the first step until
  the text-conditional noise norm falls under a target, then the image is sampled from the same noise;
- ``jain`` (Jain et al., CVPR 2025; ``steering.py``): guidance scale 1 until ||eps_c - eps_u|| reaches its
  first local minimum, then the normal scale;
- ``attn-rescale`` (Ren et al., ECCV 2024; ``attention.py``): the beginning token's cross-attention logit is
  multiplied by a factor, drawing attention away from trigger tokens.

Train-time caption mitigations live in the training loop (``models/mitigate.py``).
"""
from __future__ import annotations

from typing import Any, Optional

from ..defaults import DEFAULTS
from ..errors import DiffrepError

INFERENCE = ("gni", "rt", "cwr", "rna", "wen", "jain", "attn-rescale")


def make_plan(name: str, strength: Optional[float] = None) -> Any:
    """The sampling plan of mitigation ``name`` at ``strength`` (None: its default in ``defaults.py``)."""
    if name not in INFERENCE:
        raise DiffrepError(f"--mitigate {name!r}: use one of {', '.join(INFERENCE)}")
    s = DEFAULTS["mitigate"].get(name) if strength is None else strength
    if name in ("gni", "rt", "cwr", "rna"):
        from .prompts import PromptEdit

        return PromptEdit(name, s)
    if name == "wen":
        from .steering import WenSteering

        return WenSteering(s)
    if name == "jain":
        from .steering import JainSchedule

        return JainSchedule(s)
    from .attention import BosRescale

    return BosRescale(s)


__all__ = ["INFERENCE", "make_plan"]
