"""Per-shard indexing of webdataset ``.tar`` shards and Parquet tables: each shard is scanned, compared with what
the index holds for it, embedded and committed on its own (``index_shard``), so no process lists every record of
the source or every row of the index. ``distributed.ray_index.index_shards`` runs its halves on Ray Data
(``plan_shard`` and the decoding in a task per shard, the embedding in the actor pool, ``finish_shard`` in the
driver).

What the index holds for a shard (``known_rows``) is read from two places: the current manifest's rows whose id
starts with the shard's name (ids are ``<shard name>/<member>`` and the manifest is sorted by id, so they are one
range found by binary search), and every chunk written for the shard by earlier per-shard runs (their row
tables name the shard in their footer: ``IndexDir.chunk_shard``), including the chunks of a run that was killed
before it finished; the latest row of each id wins, as in the manifest. An image is embedded again when its
size or modification time changed, exactly as in the driver's scan (``build.index``); ids the shard no longer
holds get a ``deleted`` row; a shard's output is written as chunks of at most ``chunk_size`` rows that name the
shard.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..errors import SourceError
from ..progress import ProgressCallback, emit
from ..sources import Record, scan_shard
from .manifest import DELETED, Manifest, deleted_row
from .rows import embed_rows
from .store import IndexDir

#: embed(records) -> (chunk rows with vector rows from 0, vectors, images embedded, images skipped)
Embed = Callable[[list[Record]], tuple[list[dict[str, Any]], np.ndarray, int, int]]


@dataclass
class EmbedRun:
    """What the embedding stage of ``diffrep index`` did."""

    added: int = 0  # images embedded
    skipped: int = 0  # images that could not be decoded
    unchanged: int = 0  # already indexed, not embedded again
    removed: int = 0  # ids that left the source (deleted rows written)
    scan_skips: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) left out by the scan
    scan_seconds: float = 0.0  # listing the source (0 when scanning and embedding interleave)


@dataclass
class ShardWork:
    """What indexing one shard produced: chunk parts (rows, vectors) to commit in order, and counts."""

    shard: str
    parts: list[tuple[list[dict[str, Any]], np.ndarray]] = field(default_factory=list)
    added: int = 0
    skipped: int = 0
    unchanged: int = 0
    removed: int = 0
    scan_skips: list[tuple[str, str]] = field(default_factory=list)
    error: Optional[str] = None  # a reason to stop the whole run (an id indexed from another location)


def shard_ledger(idx: IndexDir) -> dict[str, list[int]]:
    """Chunk numbers per shard, for the chunks per-shard indexing wrote (read from the chunk footers)."""
    ledger: dict[str, list[int]] = {}
    for n in idx.chunk_numbers():
        shard = idx.chunk_shard(n)
        if shard is not None:
            ledger.setdefault(shard, []).append(n)
    return ledger


def prefix_range(ids: Any, prefix: str) -> tuple[int, int]:
    """The rows [lo, hi) of the sorted sequence ``ids`` that start with ``prefix``, which ends with "/"."""
    def first_at_least(value: str) -> int:
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if ids[mid] < value:
                lo = mid + 1
            else:
                hi = mid
        return lo

    return first_at_least(prefix), first_at_least(prefix[:-1] + chr(ord("/") + 1))


def known_rows(idx: IndexDir, chunks: list[int], manifest: Optional[Manifest] = None,
               shard: Optional[str] = None) -> dict[str, tuple[int, float, str, str]]:
    """id -> (bytes, mtime, status, path) of the latest row of each id in ``chunks`` and, with ``manifest`` and
    ``shard``, in the manifest's rows of that shard."""
    latest: dict[str, tuple[tuple[int, int], tuple[int, float, str, str]]] = {}
    if manifest is not None and shard is not None and manifest.num_rows:
        lo, hi = prefix_range(manifest.lookup("id"), os.path.basename(shard) + "/")
        t = manifest.slice(lo, hi - lo).select(["id", "bytes", "mtime", "path", "chunk"]).to_pydict()
        for i, b, m, p, c in zip(t["id"], t["bytes"], t["mtime"], t["path"], t["chunk"]):
            latest[i] = ((c, -1), (b, m, "ok", p))
    for n in chunks:
        t = idx.read_chunk(n).select(["id", "bytes", "mtime", "status", "path"]).to_pydict()
        for pos, (i, b, m, s, p) in enumerate(zip(t["id"], t["bytes"], t["mtime"], t["status"], t["path"])):
            if i not in latest or latest[i][0] < (n, pos):
                latest[i] = ((n, pos), (b, m, s, p))
    return {i: v for i, (_, v) in latest.items()}


def split_parts(rows: list[dict[str, Any]], vectors: np.ndarray,
                chunk_size: int) -> list[tuple[list[dict[str, Any]], np.ndarray]]:
    """``rows`` (ok rows point at ``vectors``) cut into chunks of at most ``chunk_size`` rows, each with its own
    vectors and vector rows from 0."""
    parts = []
    for s in range(0, len(rows), chunk_size):
        part = [dict(r) for r in rows[s:s + chunk_size]]
        take = [r["row"] for r in part if r["status"] == "ok"]
        for j, r in enumerate(r for r in part if r["status"] == "ok"):
            r["row"] = j
        parts.append((part, np.ascontiguousarray(vectors[np.asarray(take, np.int64)])
                      if take else np.zeros((0, vectors.shape[1]), np.float32)))
    return parts


@dataclass
class ShardPlan:
    """What a shard needs: its records to embed (new or changed), the ``deleted`` rows of ids it no longer holds,
    and its work so far (counts, scan skips; ``error`` when it cannot be indexed here)."""

    work: ShardWork
    todo: list[Record] = field(default_factory=list)
    gone: list[dict[str, Any]] = field(default_factory=list)


def plan_shard(root: Path, shard: str, chunks: list[int], generation: int) -> ShardPlan:
    """Scan ``shard`` and compare it with what the index at ``root`` holds for it (manifest of ``generation``, 0
    for none, and the shard's ``chunks``)."""
    idx = IndexDir(Path(root))
    manifest = Manifest(idx.manifest_file(generation)) if generation else None
    records, skips = scan_shard(shard)
    work = ShardWork(shard, scan_skips=[(s.path, s.reason) for s in skips])
    known = known_rows(idx, chunks, manifest, shard)
    live = {i: v for i, v in known.items() if v[2] != DELETED}
    for r in records:
        old = live.get(r.id)
        if old is not None and "::" in old[3] and old[3].partition("::")[0] != shard:
            work.error = (f"index {idx.root} already holds {r.id!r} from {old[3]}, not from {r.path}: two sources "
                          "with the same names would mix. Use another --out for this source.")
            return ShardPlan(work)
    present = {r.id for r in records}
    gone = sorted(i for i in live if i not in present)
    todo = [r for r in records if live.get(r.id, (None, None))[:2] != (r.size, r.mtime)]
    work.unchanged, work.removed = len(records) - len(todo), len(gone)
    return ShardPlan(work, todo, [deleted_row(i, live[i][3]) for i in gone])


def finish_shard(plan: ShardPlan, rows: list[dict[str, Any]], vectors: np.ndarray, added: int, skipped: int, *,
                 chunk_size: int) -> ShardWork:
    """The shard's work once its records are embedded (``rows`` with vector rows from 0 into ``vectors``): its
    chunk parts, the deleted rows last."""
    work = plan.work
    work.added, work.skipped = added, skipped
    work.parts = split_parts(rows + plan.gone, vectors, chunk_size)
    return work


def index_shard(root: Path, shard: str, chunks: list[int], generation: int, embed: Embed, *, dim: int,
                chunk_size: int) -> ShardWork:
    """``plan_shard``, ``embed`` what is new or changed, ``finish_shard``: the chunk parts to commit."""
    plan = plan_shard(root, shard, chunks, generation)
    if plan.work.error:
        return plan.work
    out = embed(plan.todo) if plan.todo else ([], np.zeros((0, dim), np.float32), 0, 0)
    return finish_shard(plan, *out, chunk_size=chunk_size)


def current_generation(idx: IndexDir) -> int:
    """The generation of the index's manifest (0 before the first build)."""
    return int(idx.read_meta().get("generation", 0)) if idx.meta_path.is_file() else 0


def commit(idx: IndexDir, works: Iterable[ShardWork], total: int,
           progress: Optional[ProgressCallback] = None) -> EmbedRun:
    """Write each shard's chunk parts as they come (atomically, naming the shard) and add up the counts;
    SourceError at the first shard that cannot be indexed here (what was committed before it stays)."""
    run = EmbedRun()
    number = idx.next_chunk_number()
    emit(progress, "embed", 0, total, unit="shard")
    for done, work in enumerate(works, start=1):
        if work.error:
            raise SourceError(work.error)
        for rows, vectors in work.parts:
            idx.write_chunk(number, rows, vectors, shard=work.shard)
            number += 1
        run.added += work.added
        run.skipped += work.skipped
        run.unchanged += work.unchanged
        run.removed += work.removed
        run.scan_skips += work.scan_skips
        emit(progress, "embed", done, total, unit="shard", message=f"{run.added} images embedded")
    return run


def index_shards_local(idx: IndexDir, d: Any, shards: list[str], *, batch_size: Optional[int], chunk_size: int,
                       max_pixels: int, progress: Optional[ProgressCallback] = None) -> EmbedRun:
    """Index ``shards`` one after another in this process (``build.index``'s default for shard sources)."""
    generation, ledger = current_generation(idx), shard_ledger(idx)
    state = {"shards": 0, "images": 0}

    def embed(records: list[Record]) -> tuple[list[dict[str, Any]], np.ndarray, int, int]:
        def note(n: int) -> None:
            emit(progress, "embed", state["shards"], len(shards), unit="shard",
                 message=f"{state['images'] + n} images embedded")

        out = embed_rows(records, d, batch_size=batch_size, max_pixels=max_pixels, on_batch=note)
        state["images"] += out[2] + out[3]
        return out

    def each() -> Iterable[ShardWork]:
        for s in shards:
            yield index_shard(idx.root, s, ledger.get(s, []), generation, embed, dim=d.dim, chunk_size=chunk_size)
            state["shards"] += 1

    return commit(idx, each(), len(shards), progress)


__all__ = ["Embed", "EmbedRun", "ShardPlan", "ShardWork", "commit", "current_generation", "finish_shard", "index_shard",
           "index_shards_local", "known_rows", "plan_shard", "prefix_range", "shard_ledger", "split_parts"]
