"""Chunk-table rows of embedded images (``store.CHUNK_SCHEMA``)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..embedding import EmbeddedBatch, Prepared, embed_records
from ..progress import ProgressCallback, emit


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


def commit_batches(idx: Any, d: Any, batches: Iterable[EmbeddedBatch], total: int, *, chunk_size: int,
                   progress: Optional[ProgressCallback] = None) -> tuple[int, int]:
    """Write embedded batches into new chunks of the index directory ``idx``, each cut after the batch that
    brings it to ``chunk_size`` rows and committed atomically as it is cut (a killed run keeps every chunk it
    cut); returns (images embedded, images skipped). Progress: stage ``embed``, images done of ``total``."""
    next_chunk = idx.next_chunk_number()
    rows: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []
    n_vec = added = skipped = 0
    emit(progress, "embed", 0, total)

    def flush() -> None:
        nonlocal next_chunk, rows, vecs, n_vec
        if rows:
            idx.write_chunk(next_chunk, rows, np.concatenate(vecs) if vecs else np.zeros((0, d.dim), np.float32))
            next_chunk += 1
            rows, vecs, n_vec = [], [], 0

    for batch in batches:
        rows += batch_rows(batch, n_vec)
        n_vec += len(batch.ok)
        vecs.append(batch.vectors)
        added += len(batch.ok)
        skipped += len(batch.skipped)
        emit(progress, "embed", added + skipped, total)
        if len(rows) >= chunk_size:
            flush()
    flush()
    return added, skipped
