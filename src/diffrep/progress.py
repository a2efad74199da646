"""Progress reporting contract: library code calls a callback, the CLI draws bars.

A callback receives ``Progress`` events. ``total`` may be ``None`` when unknown. Library code never
prints; pass ``progress=None`` for silence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Progress:
    stage: str  # e.g. "scan", "embed", "search", "calibrate"
    done: int  # units finished so far in this stage
    total: Optional[int]  # units expected, None when unknown
    unit: str = "img"
    message: str = ""


ProgressCallback = Callable[[Progress], None]


def emit(cb: Optional[ProgressCallback], stage: str, done: int, total: Optional[int],
         unit: str = "img", message: str = "") -> None:
    """Call ``cb`` if given. Exceptions raised by the callback propagate (e.g. KeyboardInterrupt)."""
    if cb is not None:
        cb(Progress(stage, done, total, unit, message))
