"""Chunk-table rows of embedded images (``store.CHUNK_SCHEMA``)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..embedding import Prepared, embed_records


def _row(p: Prepared, status: str, row: int) -> dict[str, Any]:
    r = p.record
    return {"id": r.id, "path": r.path, "caption": r.caption, "sha256": p.sha256, "bytes": r.size,
            "mtime": r.mtime, "width": p.width, "height": p.height, "status": status,
            "reason": p.reason, "row": row}


def batch_rows(batch: Any, first_row: int) -> list[dict[str, Any]]:
    """Chunk-table rows of an embedded batch: its images with vector rows from ``first_row`` on, then the
    images it skipped."""
    return ([_row(p, "ok", first_row + j) for j, p in enumerate(batch.ok)]
            + [_row(p, "skipped", -1) for p in batch.skipped])


def embed_rows(records: list[Any], d: Any, *, batch_size: Optional[int], max_pixels: int,
               on_batch: Optional[Callable[[int], None]] = None) -> tuple[list[dict[str, Any]], np.ndarray, int, int]:
    """Embed ``records`` as one chunk: its rows (vector rows from 0), vectors, images embedded, images skipped;
    ``on_batch(images done)`` after each batch."""
    rows: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []
    ok = skipped = 0
    for batch in embed_records(records, d, batch_size=batch_size, max_pixels=max_pixels):
        rows += batch_rows(batch, ok)
        ok += len(batch.ok)
        vecs.append(batch.vectors)
        skipped += len(batch.skipped)
        if on_batch is not None:
            on_batch(ok + skipped)
    return rows, (np.concatenate(vecs) if vecs else np.zeros((0, d.dim), np.float32)), ok, skipped
