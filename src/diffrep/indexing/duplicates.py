"""Near-duplicate counts stored beside an index: per FAISS id, how many *other* indexed images share its
duplicate group. ``diffrep dedup`` writes them (``dup_counts-GGGGGG.npy``, one file per index generation);
audits read them to report how duplicated the copied training images are (duplication drives
memorization)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import OutputError
from ..fsutil import write_npy


def dup_counts_path(idx: Any) -> Path:
    return idx.dir.root / f"dup_counts-{idx.meta.get('generation', 0):06d}.npy"


def save_dup_counts(idx: Any, group: np.ndarray) -> None:
    """Store the counts implied by ``group`` (group id per FAISS id); a read-only index keeps none."""
    counts = (np.bincount(group, minlength=len(group))[group] - 1).astype(np.int32)
    try:
        write_npy(dup_counts_path(idx), counts)
    except (OSError, OutputError):
        pass  # a read-only index (or a full disk): the counts stay in groups.csv only


def load_dup_counts(idx: Any) -> Optional[np.ndarray]:
    """The stored counts of this index generation, or None when there are none (or they are damaged)."""
    p = dup_counts_path(idx)
    if not p.is_file():
        return None
    try:
        counts = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # damaged: recomputed by the next `diffrep dedup` of this index
    return counts if counts.ndim == 1 and len(counts) == len(idx) and counts.dtype.kind == "i" else None
