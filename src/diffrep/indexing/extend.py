"""Extending the previous generation's IVF index when a run only adds images, instead of rebuilding it.

A FAISS id is a row of the manifest, and the manifest is sorted by image id, so images added by a later run
take rows between the old ones and move them. When every row of the previous manifest is in the new one
unchanged (same chunk, same row: nothing was re-embedded, deleted or dropped as damaged), the previous
index is read, the ids in its inverted lists are renumbered (an old row moves down by the number of added
rows sorted before it) and only the added vectors are assigned to the trained cells and added. An index whose
lists are on disk (``--on-disk``) is grown into the new generation's list file: its lists are read once,
memory-mapped, renumbered and written once, the added vectors going through shard files
(``ondisk.extend_on_disk``); the cells end up as the in-memory extension leaves them. At 1B images a rebuild
costs about 270 core-hours (training and filling, docs/scale.md); adding 1% this way fills only that 1%.

The cells stay those trained for ``trained_for`` vectors; once the index has grown past ``GROWTH_LIMIT``
of that, or anything else changed (index type or code size, lists moved to or from disk, a row replaced), the
caller rebuilds and retrains. The probes are tuned again on the grown index either way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa

from ..progress import ProgressCallback, emit
from . import ondisk
from .manifest import Manifest
from .store import IndexDir

GROWTH_LIMIT = 0.25  # vectors added since training, as a share of those the cells were trained for
BATCH = 65536  # manifest rows compared, and vectors added, at a time


def added_rows(old: Manifest, new: Manifest, last_chunk: int, batch: int = BATCH) -> Optional[np.ndarray]:
    """Rows of ``new`` that are not in ``old`` (those from chunks after ``last_chunk``, the last chunk ``old``
    was built from), sorted, when the others are exactly ``old``'s rows in ``old``'s order; None otherwise."""
    added, o = [], 0
    for s in range(0, new.num_rows, batch):
        t = new.slice(s, batch)
        chunk, row = t.column("chunk").to_numpy(), t.column("row").to_numpy()
        kept = chunk <= last_chunk
        added.append(s + np.flatnonzero(~kept))
        n = int(kept.sum())
        if o + n > old.num_rows:
            return None
        was = old.slice(o, n)
        if not (np.array_equal(was.column("chunk").to_numpy(), chunk[kept])
                and np.array_equal(was.column("row").to_numpy(), row[kept])):
            return None
        o += n
    if o != old.num_rows:
        return None
    return np.concatenate(added).astype(np.int64) if added else np.zeros(0, np.int64)


def shifted(ids: np.ndarray, added: np.ndarray) -> np.ndarray:
    """New rows of old rows ``ids`` once rows ``added`` (sorted new rows) are inserted: ``added[j]`` has
    ``added[j] - j`` old rows before it, so an old row moves down by the number of those counts <= it."""
    before = added - np.arange(len(added))
    return ids + np.searchsorted(before, ids, side="right")


def renumber(index: Any, added: np.ndarray) -> None:
    """Renumber the ids in an in-memory IVF index's inverted lists for rows ``added`` (``shifted``)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
        new = np.ascontiguousarray(shifted(ids, added), dtype=np.int64)
        lists.update_entries(number, 0, size, faiss.swig_ptr(new), faiss.swig_ptr(codes))


def extend_previous(idx: IndexDir, previous: dict[str, Any], manifest: Manifest, dim: int, choice: dict[str, Any],
                    gather: Any, progress: Optional[ProgressCallback] = None, on_disk: Optional[Path] = None,
                    fill: Any = None) -> Optional[tuple[Any, dict[str, Any]]]:
    """The previous generation's IVF index (``previous``: its index.json) grown by the rows ``manifest`` adds,
    with its search parameters, or None where it must be rebuilt (module docstring). ``choice``: the index
    ``faiss_index.plan`` picks for the new size; ``gather(rows_table) -> vectors`` reads stored vectors;
    ``on_disk``: the new generation's list file, when the index keeps its lists on disk (the previous one must
    have too); ``fill``: where the added vectors are assigned and encoded (``distributed.ray_index.RayFill``:
    Ray tasks; None: this process)."""
    params = dict(previous.get("index") or {})
    kind = params.get("type")
    if not previous.get("complete") or kind not in ("ivf", "ivfpq") or bool(params.get("on_disk")) != bool(on_disk):
        return None
    if choice["type"] != kind or (kind == "ivfpq" and choice["pq_m"] != params.get("pq_m")):
        return None
    trained_for = int(params.get("trained_for", previous.get("count", 0)))
    if manifest.num_rows > (1 + GROWTH_LIMIT) * trained_for:
        return None
    generation = int(previous.get("generation", 0))
    path, old_path = idx.faiss_path(generation), idx.manifest_file(generation)
    if not (path.is_file() and old_path.is_file()):
        return None
    try:
        old = Manifest(old_path)
    except (OSError, pa.ArrowException):
        return None
    added = added_rows(old, manifest, int(previous.get("last_chunk", 0)))
    if added is None or not len(added):  # nothing added: a rerun that still builds (new options, a damaged
        return None  # index file) rebuilds
    batches = (np.ascontiguousarray(gather(manifest.take(added[s:s + BATCH], ["chunk", "row"])), np.float32)
               for s in range(0, len(added), BATCH))
    grow = _grow_on_disk if on_disk else _grow_in_memory
    index = grow(path, old.num_rows, added, batches, on_disk, fill, progress)
    if index is None:
        return None
    for stale in ("self_recall_at_1", "self_recall_sample", "edited_copy_recall_at_1", "edited_copy_sample",
                  "nprobe_trials", "choice", "estimated_bytes"):
        params.pop(stale, None)
    params["trained_for"] = trained_for
    if on_disk:
        params["on_disk"] = on_disk.name  # the new generation's list file
    params["extended"] = {"from_generation": generation, "added": int(len(added)),
                          "since_training": int(manifest.num_rows - trained_for)}
    return index, params


def _grow_in_memory(path: Path, old_rows: int, added: np.ndarray, batches: Iterator[np.ndarray], _target: Any,
                    fill: Any, progress: Optional[ProgressCallback]) -> Any:
    """The index file ``path`` (``old_rows`` entries) read into memory, renumbered and given ``batches``
    (the vectors of rows ``added``; with ``fill``, its tasks read them); None when it cannot be read or holds
    another count."""
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError:
        return None
    if index.ntotal != old_rows:
        return None
    renumber(index, added)
    if fill is not None:
        return fill.into(index, added, ondisk.trained_empty(index))
    done = 0
    for vectors in batches:
        index.add_with_ids(vectors, added[done:done + len(vectors)])
        done += len(vectors)
        emit(progress, "build-index", old_rows + done, old_rows + len(added), unit="vec")
    return index


def _grow_on_disk(path: Path, old_rows: int, added: np.ndarray, batches: Iterator[np.ndarray], target: Path,
                  fill: Any, progress: Optional[ProgressCallback]) -> Any:
    """The on-disk index file ``path`` (its list file beside it) grown into the list file ``target``
    (``ondisk.extend_on_disk``: the old lists, renumbered, copied once; the added vectors filled in shards);
    None when it cannot be read (``ondisk.read``: a list file shorter than it records is unreadable) or holds
    another count."""
    try:
        old = ondisk.read(path)
    except (OSError, RuntimeError):
        return None
    if old.ntotal != old_rows:
        return None
    report = None if progress is None else (lambda p: progress(
        dataclasses.replace(p, done=old_rows + p.done, total=old_rows + len(added))))
    if fill is None:
        def shards(empty: Any, scratch: Path) -> list[Path]:
            return ondisk.fill_shards(empty, batches, scratch, progress=report, total=len(added), ids=added)
    else:
        def shards(empty: Any, scratch: Path) -> list[Path]:
            return fill.shards(empty, added, scratch)
    return ondisk.extend_on_disk(old, ondisk.trained_empty(old), lambda ids: shifted(ids, added), shards, target)


__all__ = ["GROWTH_LIMIT", "added_rows", "extend_previous", "renumber", "shifted"]
