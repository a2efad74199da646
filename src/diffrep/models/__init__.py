"""Small diffusion models trained from scratch: the "understanding" side of replication research.

``train`` fits a diffusers UNet (unconditional, class- or caption-conditioned) on an image folder with
optional subsetting and duplication by sampling weight; ``sample`` writes generations and their
prompts, ready for ``diffrep audit``. torch and diffusers come with the optional extra
``pip install 'diffrep[models]'`` and are imported only inside the functions that need them.

Modules: ``deps`` (the extra's import check), ``data`` (training folder, subset, duplication weights,
seeded batch sampler), ``text`` (word tokenizer, small jointly-trained text encoder, local CLIP),
``nets`` (UNet construction, conditioning, EMA), ``checkpoint`` (resumable atomic checkpoints),
``train`` and ``sample``.
"""
from __future__ import annotations

from typing import Any


def train(*args: Any, **kwargs: Any) -> Any:
    """Train a diffusion model. See ``diffrep.models.train.train``."""
    from .train import train as _train

    return _train(*args, **kwargs)


def sample(*args: Any, **kwargs: Any) -> Any:
    """Sample a trained run. See ``diffrep.models.sample.sample``."""
    from .sample import sample as _sample

    return _sample(*args, **kwargs)


__all__ = ["train", "sample"]
