"""The manifest: one row per live image, in FAISS id order (``idx``, ``id``, ``path``, ``caption``, ``sha256``,
``bytes``, ``mtime``, ``width``, ``height``, ``row``, ``chunk``), sorted by id.

``write_manifest`` resolves it from the chunk tables with bounded memory: the latest row of each id (highest
chunk, then last in its chunk) wins. When the chunks hold more than ``max_rows`` rows, they are first spilled
into id-range partitions (split points from a sample of the ids; at most ``MAX_PARTS``) in a scratch folder
beside the index, and each partition is sorted and resolved on its own, so no step holds more than about
``max_rows`` rows (``total / MAX_PARTS`` past 256 million); otherwise all rows are resolved at once. The file is an uncompressed Arrow IPC file written in batches of ``BATCH_ROWS``.

``Manifest`` memory-maps it: opening costs nothing, and ``take`` and ``lookup`` read only the batches that hold
the rows asked for (Arrow's own ``Table.take`` would concatenate every batch of a column first). Manifests of
indexes written before (``manifest-G.parquet``) are read whole.
"""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..fsutil import atomic_path
from ..progress import ProgressCallback, emit
from . import ondisk
from .store import CHUNK_SCHEMA, IndexDir

BATCH_ROWS = 65_536  # rows per record batch of the manifest file
MAX_ROWS = 1_000_000  # rows resolved in memory at once (a peak RSS of about 1.2 GB, benchmarks/bench_manifest.py)
MAX_PARTS = 256  # partitions at most (files open at once); past 256 million rows each partition holds more
SAMPLE_IDS = 100_000  # ids sampled to choose the partitions' split points
DELETED = "deleted"  # the status of a row that records an image leaving the source

MANIFEST_SCHEMA = pa.schema([pa.field("idx", pa.int64())]
                            + [f for f in CHUNK_SCHEMA if f.name not in ("status", "reason")]
                            + [pa.field("chunk", pa.int32())])
SKIP_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("path", pa.string()), pa.field("reason", pa.string())])
_TAGGED = CHUNK_SCHEMA.append(pa.field("chunk", pa.int32())).append(pa.field("pos", pa.int32()))


def deleted_row(image_id: str, path: str) -> dict[str, Any]:
    """The chunk row recording that ``image_id`` left the source."""
    return {"id": image_id, "path": path, "caption": None, "sha256": "", "bytes": 0, "mtime": 0.0, "width": 0,
            "height": 0, "status": DELETED, "reason": "no longer in the source", "row": -1}


def _tagged(number: int, table: pa.Table) -> pa.Table:
    """A chunk table with its chunk number and each row's position in it."""
    n = table.num_rows
    return (table.append_column("chunk", pa.array(np.full(n, number, np.int32)))
            .append_column("pos", pa.array(np.arange(n, dtype=np.int32))))


def _chunk_rows(idx: IndexDir, numbers: Sequence[int]) -> int:
    """Rows in the chunk tables, from their footers (nothing is decoded)."""
    return sum(pq.ParquetFile(idx.chunks_dir / f"c{n:06d}.parquet").metadata.num_rows for n in numbers)


def _split_points(idx: IndexDir, numbers: Sequence[int], parts: int) -> np.ndarray:
    """``parts - 1`` ids that cut the ids of the chunks into ranges of about equal size, from evenly spaced ids of
    every chunk."""
    per_chunk = max(1, SAMPLE_IDS // max(1, len(numbers)))
    sample: list[str] = []
    for n in numbers:
        ids = pq.read_table(idx.chunks_dir / f"c{n:06d}.parquet", columns=["id"]).column("id")
        step = max(1, len(ids) // per_chunk)
        sample += ids.to_pylist()[::step]
    ordered = np.sort(np.array(sample, dtype=np.str_))
    return ordered[(np.arange(1, parts) * len(ordered)) // parts]


class _Spill:
    """Rows routed to id-range partitions, buffered and appended to one Arrow stream file per partition."""

    def __init__(self, folder: Path, splits: np.ndarray, flush_rows: int) -> None:
        self.folder, self.splits, self.flush_rows = folder, splits, flush_rows
        self.buffers: list[list[pa.Table]] = [[] for _ in range(len(splits) + 1)]
        self.sizes = [0] * (len(splits) + 1)
        self.writers: dict[int, tuple[Any, Any]] = {}  # partition: (file, stream writer)

    def path(self, part: int) -> Path:
        return self.folder / f"part-{part:05d}.arrows"

    def add(self, table: pa.Table) -> None:
        ids = np.array(table.column("id").to_pylist(), dtype=np.str_)
        part = np.searchsorted(self.splits, ids, side="right")
        for p in np.unique(part):
            self.buffers[p].append(table.filter(pa.array(part == p)))
            self.sizes[p] += int((part == p).sum())
            if self.sizes[p] >= self.flush_rows:
                self._flush(int(p))

    def _flush(self, p: int) -> None:
        if not self.buffers[p]:
            return
        if p not in self.writers:
            sink = pa.OSFile(str(self.path(p)), "wb")
            self.writers[p] = (sink, pa.ipc.new_stream(sink, _TAGGED))
        self.writers[p][1].write_table(pa.concat_tables(self.buffers[p]))
        self.buffers[p], self.sizes[p] = [], 0

    def close(self) -> None:
        for p in range(len(self.buffers)):
            self._flush(p)
        for sink, writer in self.writers.values():
            writer.close()
            sink.close()

    def read(self, p: int) -> pa.Table:
        if p not in self.writers:
            return _TAGGED.empty_table()
        with pa.OSFile(str(self.path(p)), "rb") as fh:
            table = pa.ipc.open_stream(fh).read_all()
        self.path(p).unlink()
        return table


def latest_rows(table: pa.Table) -> pa.Table:
    """The latest row of each id of ``table`` (tagged chunk rows: highest chunk, then last in it), sorted by id."""
    if table.num_rows == 0:
        return table
    t = table.sort_by([("id", "ascending"), ("chunk", "ascending"), ("pos", "ascending")]).combine_chunks()
    n = t.num_rows
    last = np.ones(n, bool)
    if n > 1:
        ids = t.column("id")
        last[:-1] = pc.not_equal(ids.slice(0, n - 1), ids.slice(1)).to_numpy(zero_copy_only=False)
    return t.filter(pa.array(last))


def split_latest(t: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Latest rows (``latest_rows``) split into the live images' rows (status ok; manifest columns but ``idx``)
    and the skipped images' (id, path, reason), both sorted by id."""
    status = t.column("status")
    ok = pc.equal(status, "ok")
    skipped = t.filter(pc.and_(pc.invert(ok), pc.not_equal(status, DELETED))).select(SKIP_SCHEMA.names)
    return t.filter(ok).drop_columns(["status", "reason", "pos"]), skipped.cast(SKIP_SCHEMA)


class ManifestWriter:
    """Writes manifest rows (sorted by id, without ``idx``) to an Arrow IPC file in batches of ``BATCH_ROWS``,
    numbering them; use as a context manager (the file appears atomically when it closes without error)."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, 0
        self._pending: list[pa.Table] = []
        self._size = 0

    def __enter__(self) -> "ManifestWriter":
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            sink = stack.enter_context(pa.OSFile(str(tmp), "wb"))
            self._writer = stack.enter_context(pa.ipc.new_file(sink, MANIFEST_SCHEMA))
            self._files = stack.pop_all()  # closed by __exit__: the writer, the file, then the atomic rename
        return self

    def write(self, live: pa.Table) -> None:
        self._pending.append(live)
        self._size += live.num_rows
        if self._size >= BATCH_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        t = pa.concat_tables(self._pending) if self._pending else None
        self._pending, self._size = [], 0
        if t is None:
            return
        keep = t.num_rows if final else t.num_rows - t.num_rows % BATCH_ROWS
        out, rest = t.slice(0, keep), t.slice(keep)
        out = out.combine_chunks().add_column(0, "idx", pa.array(np.arange(self.rows, self.rows + out.num_rows),
                                                                 pa.int64()))
        self._writer.write_table(out.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA), max_chunksize=BATCH_ROWS)
        self.rows += out.num_rows
        if rest.num_rows:
            self._pending, self._size = [rest], rest.num_rows

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            try:
                self._flush(final=True)
            except BaseException:  # the last rows failed: the file must not appear
                if not self._files.__exit__(*sys.exc_info()):
                    raise
                return
        self._files.__exit__(*exc)


def skip_pairs(skips: pa.Table) -> list[tuple[str, str]]:
    """(path, reason) of each row of a skips table (``SKIP_SCHEMA``), as ``skipped.csv`` lists them."""
    return list(zip(skips.column("path").to_pylist(), skips.column("reason").to_pylist()))


def write_skips(path: Path, skips: pa.Table) -> None:
    """The skipped images of a generation, with their ids (``SKIP_SCHEMA``), written atomically: a later
    generation merges them (``merge.py``)."""
    with atomic_path(path) as tmp:
        pq.write_table(skips.cast(SKIP_SCHEMA), tmp)


def _tagged_chunks(idx: IndexDir, numbers: Sequence[int]) -> Iterator[pa.Table]:
    for n in numbers:
        yield _tagged(n, idx.read_chunk(n))


def _partitions(idx: IndexDir, numbers: Sequence[int], total: int, max_rows: int,
                progress: Optional[ProgressCallback]) -> Iterator[pa.Table]:
    """The tagged chunk rows in id ranges, in id order: one table when they fit ``max_rows``, else partitions
    spilled to a scratch folder beside the index."""
    parts = min(MAX_PARTS, max(1, math.ceil(total / max_rows)))
    if parts == 1:
        yield pa.concat_tables(list(_tagged_chunks(idx, numbers))) if numbers else _TAGGED.empty_table()
        return
    splits = _split_points(idx, numbers, parts)
    with ondisk.shard_folder(idx.root / "manifest") as scratch:
        spill = _Spill(scratch, splits, flush_rows=max(256, min(BATCH_ROWS, max_rows // parts)))
        done = 0
        for table in _tagged_chunks(idx, numbers):
            spill.add(table)
            done += table.num_rows
            emit(progress, "manifest", done, total, unit="row", message="partitioning")
        spill.close()
        for p in range(parts):
            yield spill.read(p)


def write_manifest(idx: IndexDir, path: Path, *, skips_path: Optional[Path] = None, max_rows: int = MAX_ROWS,
                   progress: Optional[ProgressCallback] = None) -> tuple[int, list[tuple[str, str]]]:
    """Resolve the chunk tables of ``idx`` into the manifest file ``path`` (written atomically, batch by batch)
    and, when given, the skipped images' table ``skips_path``; returns the live images' count and (path, reason)
    of every image whose latest row is a skip."""
    numbers = idx.chunk_numbers()
    total = _chunk_rows(idx, numbers)
    skips: list[pa.Table] = []
    with ManifestWriter(path) as out:
        for part in _partitions(idx, numbers, total, max_rows, progress):
            live, skipped = split_latest(latest_rows(part))
            skips.append(skipped)
            out.write(live)
    skipped = pa.concat_tables(skips) if skips else SKIP_SCHEMA.empty_table()
    if skips_path is not None:
        write_skips(skips_path, skipped)
    return out.rows, skip_pairs(skipped)


class Manifest:
    """A manifest file opened for reading: memory-mapped (Arrow IPC) or, for older indexes, read whole
    (Parquet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.suffix == ".parquet":
            self.table = pq.read_table(path).combine_chunks()
        else:
            self.table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        self._batches = self.table.to_batches()  # zero-copy views of the file's record batches
        self._starts = np.concatenate([[0], np.cumsum([b.num_rows for b in self._batches], dtype=np.int64)])

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def column_names(self) -> list[str]:
        return self.table.column_names

    def take(self, rows: np.ndarray | Sequence[int], columns: Optional[Sequence[str]] = None) -> pa.Table:
        """The manifest rows ``rows`` (FAISS ids), in that order (only ``columns`` when given), reading only the
        batches, and columns, that hold them."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"manifest rows must be in 0..{self.num_rows - 1}")
        names = list(columns) if columns is not None else self.table.column_names
        if not len(rows):
            return self.table.select(names).schema.empty_table()
        batch = np.searchsorted(self._starts, rows, side="right") - 1
        order = np.argsort(batch, kind="stable")
        cuts = np.flatnonzero(np.diff(batch[order])) + 1
        pieces = []
        for sel in np.split(order, cuts):
            b = int(batch[sel[0]])
            pieces.append(self._batches[b].select(names).take(pa.array(rows[sel] - self._starts[b])))
        return pa.Table.from_batches(pieces).take(pa.array(np.argsort(order, kind="stable")))

    def slice(self, start: int, length: int) -> pa.Table:
        return self.table.slice(start, length)

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def lookup(self, name: str) -> "Lookup":
        """Column ``name`` as a sequence that reads one value at a time (no column is loaded whole)."""
        return Lookup(self, self.table.schema.get_field_index(name))

    def value(self, column: int, row: int) -> Any:
        if not 0 <= row < self.num_rows:
            raise IndexError(f"manifest row {row} is not in 0..{self.num_rows - 1}")
        b = int(np.searchsorted(self._starts, row, side="right")) - 1
        return self._batches[b].column(column)[row - int(self._starts[b])].as_py()


class Lookup(Sequence[Any]):
    """A manifest column read value by value: ``lookup[j]`` is row ``j``'s value."""

    def __init__(self, manifest: Manifest, column: int) -> None:
        if column < 0:
            raise KeyError("no such manifest column")
        self._manifest, self._column = manifest, column

    def __len__(self) -> int:
        return self._manifest.num_rows

    def __getitem__(self, j: Any) -> Any:  # type: ignore[override]
        if isinstance(j, slice):
            return [self._manifest.value(self._column, i) for i in range(*j.indices(len(self)))]
        j = int(j)
        return self._manifest.value(self._column, j + len(self) if j < 0 else j)


__all__ = ["BATCH_ROWS", "DELETED", "deleted_row", "MANIFEST_SCHEMA", "MAX_PARTS", "MAX_ROWS", "Lookup", "Manifest",
           "ManifestWriter", "SKIP_SCHEMA", "latest_rows", "skip_pairs", "split_latest", "write_manifest",
           "write_skips"]
