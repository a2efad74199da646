"""Questions put to a model: which prompts it memorized (``probe``), with scores computed from its noise
predictions through ``models.adapter.DiffusionModel``.

Modules: ``scores`` (noise-norm, seed-ssim, one-step, per-token attribution), ``prompts`` (prompt lists from
files or run folders), ``memorization`` (the calibrated ``probe`` and its output files).
"""
from __future__ import annotations

from typing import Any


def probe(*args: Any, **kwargs: Any) -> Any:
    """Score prompts for memorization. See ``diffrep.probes.memorization.probe``."""
    from .memorization import probe as _probe

    return _probe(*args, **kwargs)


__all__ = ["probe"]
