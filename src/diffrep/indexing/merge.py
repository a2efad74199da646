"""The next generation's manifest from the previous one and the chunks written since, instead of from every chunk.

A rerun that adds, changes or removes images writes new chunks; the older chunks are as they were when the
previous generation was resolved (chunks are never rewritten; a dropped or replaced one changes the digest of
their sizes and modification times the generation recorded, which ``mergeable`` checks). So
the latest row of an id is its latest row in the new chunks when they hold it, else the previous manifest's row
(or its entry in the previous generation's skipped images, ``skips-G.parquet``). ``merge_manifest`` resolves the
new chunks' rows in memory (at most ``max_rows``; more and the caller resolves every chunk), then streams the
previous manifest batch by batch: drops the ids the new chunks hold, slots in the new live rows of the same id
range, and writes the result in id order. Reading the previous manifest is a sequential read of a memory-mapped
file, where resolving every chunk opens and decodes each chunk table (a million files at a billion images).
The file written is the one ``write_manifest`` would write from every chunk (tested).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..progress import ProgressCallback, emit
from .manifest import (_TAGGED, MANIFEST_SCHEMA, MAX_ROWS, SKIP_SCHEMA, Manifest, ManifestWriter, _chunk_rows,
                       _tagged_chunks, latest_rows, skip_pairs, split_latest, write_skips)
from .store import IndexDir


def mergeable(idx: IndexDir, previous: dict[str, Any]) -> Optional[tuple[Path, Path, int]]:
    """(previous manifest, its skips table, its last chunk) when the previous generation can be merged with the
    chunks written since: it is complete, its manifest is an Arrow file and its skipped images were recorded
    with their ids, and the chunks it was built from are as they were then (``IndexDir.chunks_digest``: none was
    dropped as damaged, replaced or rewritten)."""
    if not previous.get("complete") or "chunks_sha256" not in previous:
        return None
    gen, last = int(previous.get("generation", 0)), int(previous.get("last_chunk", 0))
    manifest, skips = idx.manifest_path(gen), idx.skips_path(gen)
    if not (manifest.is_file() and skips.is_file()) or idx.chunks_digest(last) != previous["chunks_sha256"]:
        return None
    return manifest, skips, last


def _sorted_ids(table: pa.Table) -> np.ndarray:
    return np.array(table.column("id").to_pylist(), dtype=object)


def _increasing(ids: Any) -> bool:
    """Whether the ids of a manifest batch are strictly increasing."""
    return len(ids) < 2 or bool(pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py())


def merge_manifest(idx: IndexDir, path: Path, skips_path: Path, previous: Path, previous_skips: Path, since: int, *,
                   expected_rows: int, max_rows: int = MAX_ROWS,
                   progress: Optional[ProgressCallback] = None) -> Optional[tuple[int, list[tuple[str, str]]]]:
    """Write the manifest ``path`` and skips table ``skips_path`` of the next generation from the ``previous``
    manifest (``expected_rows`` rows), its skips table and the chunks numbered above ``since``; returns what
    ``write_manifest`` returns, or None, writing nothing, when the new chunks hold more than ``max_rows`` rows or
    the previous files are not what their generation recorded (unreadable, another row count or schema, ids out
    of order)."""
    numbers = [n for n in idx.chunk_numbers() if n > since]
    if _chunk_rows(idx, numbers) > max_rows:
        return None
    try:
        old = Manifest(previous)
        old_skips = pq.read_table(previous_skips).cast(SKIP_SCHEMA)
    except (OSError, pa.ArrowException):
        return None
    if old.num_rows != expected_rows or not old.table.schema.equals(MANIFEST_SCHEMA):
        return None
    latest = latest_rows(pa.concat_tables(list(_tagged_chunks(idx, numbers))) if numbers else _TAGGED.empty_table())
    touched = latest.column("id") if latest.num_rows else pa.array([], pa.string())
    live, new_skips = split_latest(latest)
    new_ids = _sorted_ids(live)
    skips = pa.concat_tables([old_skips.filter(pc.invert(pc.is_in(old_skips.column("id"), value_set=touched))),
                              new_skips]).sort_by("id")
    batches = [pa.Table.from_batches([b]) for b in old.table.to_batches() if b.num_rows]
    try:
        with ManifestWriter(path) as out:
            taken, last_id = 0, None
            for k, batch in enumerate(batches):
                ids = batch.column("id")
                if not _increasing(ids) or (last_id is not None and ids[0].as_py() <= last_id):
                    raise _OutOfOrder
                last_id = ids[-1].as_py()
                keep = batch.drop_columns(["idx"]).filter(pc.invert(pc.is_in(ids, value_set=touched)))
                upto = (len(new_ids) if k + 1 == len(batches)
                        else int(np.searchsorted(new_ids, batches[k + 1].column("id")[0].as_py(), side="left")))
                add = live.slice(taken, upto - taken).select(keep.column_names).cast(keep.schema)
                taken = upto
                out.write(pa.concat_tables([keep, add]).sort_by("id"))
                emit(progress, "manifest", k + 1, len(batches), unit="batch", message="merging")
            if not batches:
                out.write(live)
    except (_OutOfOrder, pa.ArrowException):
        return None
    write_skips(skips_path, skips)
    return out.rows, skip_pairs(skips)


class _OutOfOrder(Exception):
    """The previous manifest's ids are not strictly increasing: it is not one diffrep wrote."""


__all__ = ["merge_manifest", "mergeable"]
