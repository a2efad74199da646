"""Prompt-level inference-time mitigations of Somepalli et al. (NeurIPS 2023, "Understanding and Mitigating
Copying in Diffusion Models"), applied to every generated image:

- ``gni``: lambda * N(0, I) added to the prompt's text embedding (the paper's lambda 0.1), drawn from its
  own seeded stream (the starting noise of every image is the unmitigated one);
- ``rt``: k random words of the model's vocabulary inserted at random positions;
- ``cwr``: k of the prompt's own words repeated at random positions;
- ``rna``: k random numbers (0-999,999) inserted at random positions.

k is the strength (2 by default, as in the paper). The edited prompt is recorded per image
(``prompt_used``); for a word-level tokenizer a number is one unknown token.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DiffrepError
from ..models.sample import SamplingPlan


def require_text(model: Any, what: str) -> None:
    """Refuse models without a prompt embedding (unconditional and class models)."""
    if not model.conditional or model.cross_attention_unet() is None:
        raise DiffrepError(f"--mitigate {what} changes the prompt, and {model.path} takes no prompt (an unconditional "
                           "or class-conditional model): prompt mitigations need a caption model or an SD folder")


class PromptEdit(SamplingPlan):
    def __init__(self, name: str, strength: float) -> None:
        self.name, self.strength = name, strength
        self.words: list[str] = []
        self._seed = 0

    def bind(self, model: Any, guidance: float) -> None:
        require_text(model, self.name)
        if self.name == "gni":
            if not self.strength > 0:
                raise DiffrepError(f"--mitigate-strength {self.strength}: gni needs a noise scale > 0 (0.1 in the paper)")
            return
        if self.strength < 1 or self.strength != int(self.strength):
            raise DiffrepError(f"--mitigate-strength {self.strength}: {self.name} inserts a whole number of words (>= 1)")
        if self.name == "rt":
            self.words = model.vocabulary()
            if not self.words:
                raise DiffrepError(f"{model.path}: its tokenizer lists no whole words to draw random tokens from")

    def prompts(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        self._seed = int(rng.integers(2**31))  # gni's noise: its own stream, the starting noise stays the same
        if self.name == "gni":
            return texts
        return [self._edit(t, rng) for t in texts]

    def _edit(self, text: str, rng: np.random.Generator) -> str:
        words = text.split()
        for _ in range(int(self.strength)):
            if self.name == "rt":
                new = self.words[int(rng.integers(len(self.words)))]
            elif self.name == "cwr":
                new = words[int(rng.integers(len(words)))] if words else ""
            else:
                new = str(int(rng.integers(1_000_000)))
            if new:
                words.insert(int(rng.integers(len(words) + 1)), new)
        return " ".join(words)

    def condition(self, model: Any, x: Any, t: Any, cond: Any, uncond: Any) -> Any:
        if self.name != "gni":
            return cond
        import torch

        h = cond["hidden"]
        noise = torch.randn(h.shape, generator=torch.Generator().manual_seed(self._seed)).to(h.device, h.dtype)
        return {**cond, "hidden": h + float(self.strength) * noise}

    def records(self, n: int) -> list[dict[str, Any]]:
        return [{"mitigation": self.name, "mitigation_strength": self.strength} for _ in range(n)]
