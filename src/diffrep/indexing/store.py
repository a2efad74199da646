"""The on-disk index directory: self-describing, appendable, crash-safe.

Layout::

    INDEX_DIR/
      index.json               what this is: descriptor fingerprint, FAISS type, counts, current generation
      manifest-GGGGGG.arrow    live rows in FAISS id order (idx, id, path, caption, sha256, bytes, ...)
      index-GGGGGG.faiss       the FAISS index for that generation
      skips-GGGGGG.parquet     that generation's skipped images with their ids (for the next one's manifest merge)
      skipped.csv              inputs that could not be indexed, with reasons
      chunks-checked.npy       size and modification time of each chunk's files when it last passed its check
      chunks/cNNNNNN.npy       embedded vectors, written as work proceeds (the source of truth)
      chunks/cNNNNNN.parquet   the rows of that chunk (ok rows point at a vector row; skips carry a reason)

Every file is written atomically. A chunk's .parquet is written after its .npy and is its commit mark,
so a killed run loses at most the chunk in flight. ``index.json`` is replaced last and names the
generation of manifest + FAISS files it belongs to, so readers always see one consistent state.

This module is also the one place that checks what it reads: ``index.json`` against its expected fields,
a chunk's table and vectors against each other and the descriptor (shape, dtype, finite unit vectors).
Anything else raises ``DiffrepIndexError`` (``DamagedChunkError`` for a chunk) with a one-line message;
``diffrep index`` drops a damaged chunk and embeds its images again (:meth:`IndexDir.drop_damaged`).
"""
from __future__ import annotations

import hashlib

import mmap
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DiffrepIndexError, brief
from ..fsutil import DirLock, atomic_path, parse_json, write_json, write_npy
from ..progress import ProgressCallback, emit
from .ondisk import SCRATCH_PREFIX

FORMAT = "diffrep-index/1"
CHUNK_SCHEMA = pa.schema([
    ("id", pa.string()), ("path", pa.string()), ("caption", pa.string()), ("sha256", pa.string()),
    ("bytes", pa.int64()), ("mtime", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("status", pa.string()), ("reason", pa.string()), ("row", pa.int32()),
])


SHARD_KEY = b"diffrep.shard"  # chunk table footer key: the source shard of a per-shard chunk
CHECKED_FILE = "chunks-checked.npy"  # stamps of the chunks that passed their last check (IndexDir.drop_damaged)

#: how far a stored vector's norm may be from 1 before the chunk counts as damaged
NORM_TOLERANCE = 1e-2


class DamagedChunkError(DiffrepIndexError):
    """A chunk's files are missing, truncated, or hold something other than the index's unit vectors."""

    def __init__(self, root: Path, number: int, reason: str) -> None:
        super().__init__(f"index {root} is damaged: chunk c{number:06d} {reason}. Re-run `diffrep index` on the "
                         "same source: it drops the damaged chunk and embeds those images again.")
        self.root, self.number, self.reason = root, number, reason

    def __reduce__(self) -> tuple[Any, tuple[Path, int, str]]:  # a Ray task that raises it hands it back whole
        return type(self), (self.root, self.number, self.reason)


def check_vectors(v: np.ndarray) -> str | None:
    """Why ``v`` (rows of stored vectors) is not a block of finite unit vectors, or None when it is."""
    if not np.isfinite(v).all():
        return "holds non-finite values (NaN or infinity)"
    if len(v):
        norms = np.linalg.norm(np.asarray(v, np.float64), axis=1)
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            return f"holds {int(off.sum())} vector(s) that are not unit length (norm {float(norms[off][0]):.3g})"
    return None


def _check_meta(meta: Any) -> str | None:
    """Why a parsed index.json is not one diffrep wrote, or None."""
    if not isinstance(meta, dict):
        return "it is not a JSON object"
    if meta.get("format") != FORMAT:
        return f"format {meta.get('format')!r} is not {FORMAT!r}"
    d = meta.get("descriptor")
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("dim"), int) \
            or isinstance(d.get("dim"), bool) or d["dim"] < 1:
        return "its descriptor entry lacks a name or a positive dimension"
    for key in ("generation", "count", "last_chunk", "skipped"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return f"{key!r} is not a whole number >= 0"
    if not isinstance(meta.get("index"), dict) or not isinstance(meta["index"].get("type"), str):
        return "its FAISS entry lacks a type"
    return None


@dataclass
class Chunk:
    number: int
    table: pa.Table


@dataclass
class IndexDir:
    """A handle on an index directory (it may not exist yet)."""

    root: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def chunks_dir(self) -> Path:
        return self.root / "chunks"

    @property
    def meta_path(self) -> Path:
        return self.root / "index.json"

    def exists(self) -> bool:
        return self.meta_path.is_file() or self.chunks_dir.is_dir()

    # ---------------------------------------------------------------- meta
    def read_meta(self) -> dict[str, Any]:
        """The parsed, checked ``index.json`` ({} when there is none yet)."""
        if not self.meta_path.is_file():
            return {}
        try:
            meta = parse_json(self.meta_path.read_bytes())
        except (OSError, ValueError) as exc:
            why = brief(exc)
            raise DiffrepIndexError(f"{self.meta_path} is unreadable ({why}); delete the index directory and "
                                    "rebuild it with `diffrep index`.") from None
        problem = _check_meta(meta)
        if problem:
            raise DiffrepIndexError(f"{self.root} is not a diffrep index, or its index.json was edited: {problem}. "
                                    "Delete the directory and rebuild it with `diffrep index`.")
        self.meta = meta
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        meta = {"format": FORMAT, **meta}
        write_json(self.meta_path, meta)
        self.meta = meta

    # ---------------------------------------------------------------- lock
    def lock(self) -> DirLock:
        return DirLock(self.root, "index directory")

    # ---------------------------------------------------------------- chunks
    def chunk_numbers(self) -> list[int]:
        if not self.chunks_dir.is_dir():
            return []
        out = []
        for p in self.chunks_dir.glob("c*.parquet"):
            try:
                out.append(int(p.stem[1:]))
            except ValueError:
                continue
        return sorted(out)

    def next_chunk_number(self) -> int:
        numbers = self.chunk_numbers()
        return (numbers[-1] + 1) if numbers else 1

    def clean_orphans(self) -> int:
        """Remove temp files and vector files whose chunk was never committed. Returns files removed."""
        removed = 0
        if not self.chunks_dir.is_dir():
            return 0
        committed = set(self.chunk_numbers())
        for p in self.chunks_dir.iterdir():
            orphan = p.name.startswith(".") and p.name.endswith(".tmp")
            if p.suffix == ".npy" and p.stem[1:].isdigit() and int(p.stem[1:]) not in committed:
                orphan = True
            if orphan:
                p.unlink(missing_ok=True)
                removed += 1
        for p in self.root.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            removed += 1
        for p in self.root.glob(f"{SCRATCH_PREFIX}*"):  # an on-disk IVF fill that was killed
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
        return removed

    def write_chunk(self, number: int, rows: list[dict[str, Any]], vectors: np.ndarray,
                    shard: str | None = None) -> None:
        """Commit chunk ``number``: its vectors, then its rows (the commit mark). ``shard``: the one source shard
        all its rows come from (per-shard indexing), kept in the row table's footer (:meth:`chunk_shard`)."""
        self.chunks_dir.mkdir(parents=True, exist_ok=True)
        write_npy(self.chunks_dir / f"c{number:06d}.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        table = pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA)
        if shard is not None:
            table = table.replace_schema_metadata({SHARD_KEY: shard.encode("utf-8")})
        with atomic_path(self.chunks_dir / f"c{number:06d}.parquet") as tmp:
            pq.write_table(table, tmp)

    def chunk_shard(self, number: int) -> str | None:
        """The source shard chunk ``number`` was written for by per-shard indexing (None for other chunks),
        from the row table's footer alone."""
        try:
            meta = pq.read_schema(self.chunks_dir / f"c{number:06d}.parquet").metadata or {}
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise DamagedChunkError(self.root, number, f"has an unreadable row table ({brief(exc)})") from None
        value = meta.get(SHARD_KEY)
        return value.decode("utf-8", errors="replace") if value is not None else None

    def read_chunk(self, number: int) -> pa.Table:
        try:
            return pq.read_table(self.chunks_dir / f"c{number:06d}.parquet", schema=CHUNK_SCHEMA)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise DamagedChunkError(self.root, number, f"has an unreadable row table ({brief(exc)})") from None

    def chunk_vectors(self, number: int, dim: int | None = None, rows: int | None = None) -> np.ndarray:
        """Chunk ``number``'s vectors, memory-mapped, after checking that the file is a (rows, dim) float32
        array (``dim`` defaults to the descriptor's in index.json; ``rows`` is checked when given)."""
        path = self.chunks_dir / f"c{number:06d}.npy"
        try:
            v = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DamagedChunkError(self.root, number, "has no vector file") from None
        except (OSError, ValueError, EOFError) as exc:
            raise DamagedChunkError(self.root, number, f"has an unreadable vector file ({brief(exc)})") from None
        self._require_vectors(number, getattr(v, "dtype", "?"), getattr(v, "shape", "?"), dim, rows)
        return v

    def _require_vectors(self, number: int, dtype: Any, shape: Any, dim: int | None, rows: int | None = None,
                         fortran: bool = False) -> None:
        """Raise ``DamagedChunkError`` unless chunk ``number`` holds a C-ordered (rows, dim) float32 array
        (``dim`` defaults to the descriptor's in index.json; ``rows`` is checked when given)."""
        dim = dim or int(self.meta.get("descriptor", {}).get("dim", 0)) or None
        if dtype != np.float32 or fortran or len(shape) != 2 or (dim and shape[1] != dim) \
                or (rows is not None and shape[0] != rows):
            want = f"({rows if rows is not None else 'n'}, {dim or 'dim'}) float32"
            raise DamagedChunkError(self.root, number, f"holds a {dtype} array of shape {shape}, not {want}")

    def chunk_rows(self, number: int, rows: np.ndarray, dim: int | None = None) -> np.ndarray:
        """Rows ``rows`` of chunk ``number``'s vectors, copied out of a short-lived mapping of the file (cheaper
        than ``np.load`` when a few rows of many chunks are wanted); the header is checked as ``chunk_vectors``
        checks it."""
        path = self.chunks_dir / f"c{number:06d}.npy"
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(fh)
                self._require_vectors(number, dtype, shape, dim, fortran=fortran)
                if len(rows) and (int(rows.max()) >= shape[0] or int(rows.min()) < 0):
                    raise DamagedChunkError(self.root, number, f"holds {shape[0]} vectors, fewer than the "
                                            "manifest names")
                start = fh.tell()
                if os.fstat(fh.fileno()).st_size < start + shape[0] * shape[1] * 4:
                    raise DamagedChunkError(self.root, number, "has a truncated vector file")
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    view = np.frombuffer(mm, np.float32, count=shape[0] * shape[1], offset=start)
                    out = view.reshape(shape)[rows]  # a copy: the mapping closes here
                    del view
        except FileNotFoundError:
            raise DamagedChunkError(self.root, number, "has no vector file") from None
        except (OSError, ValueError, EOFError) as exc:
            raise DamagedChunkError(self.root, number, f"has an unreadable vector file ({brief(exc)})") from None
        return out

    def check_chunk(self, number: int, dim: int) -> None:
        """Read chunk ``number`` whole and raise ``DamagedChunkError`` unless its table and vectors agree
        and every vector is a finite unit vector of dimension ``dim``."""
        table = self.read_chunk(number)
        status = table.column("status").to_pylist()
        rows = table.column("row").to_pylist()
        ok = [r for s, r in zip(status, rows) if s == "ok"]
        if sorted(ok) != list(range(len(ok))):
            raise DamagedChunkError(self.root, number, "has a row table whose vector rows are not 0..n-1")
        v = self.chunk_vectors(number, dim, len(ok))
        for s in range(0, len(v), 65536):
            problem = check_vectors(v[s:s + 65536])
            if problem:
                raise DamagedChunkError(self.root, number, problem)

    def chunks_digest(self, upto: int) -> str:
        """A digest of the numbers, sizes and modification times of the chunks numbered up to ``upto``: it
        changes when one of them is dropped, replaced or rewritten."""
        h = hashlib.sha256()
        for n in self.chunk_numbers():
            if n <= upto:
                h.update(f"{n}:{self._chunk_stamp(n)}\n".encode())
        return h.hexdigest()

    def _chunk_stamp(self, number: int) -> tuple[int, int, int, int] | None:
        """(size, mtime_ns) of chunk ``number``'s vector file and of its row table; None when one is missing."""
        try:
            v = (self.chunks_dir / f"c{number:06d}.npy").stat()
            t = (self.chunks_dir / f"c{number:06d}.parquet").stat()
        except OSError:
            return None
        return (v.st_size, v.st_mtime_ns, t.st_size, t.st_mtime_ns)

    def _read_checked(self, dim: int) -> dict[int, tuple[int, ...]]:
        """Chunk number -> the stamp its files had when it last passed :meth:`check_chunk` for ``dim``
        ({} when the record is missing or unreadable: then every chunk is checked)."""
        try:
            a = np.load(self.root / CHECKED_FILE, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return {}
        if a.ndim != 2 or a.shape[1] != 6 or a.dtype != np.int64:
            return {}
        return {int(r[0]): tuple(int(x) for x in r[2:]) for r in a if int(r[1]) == dim}

    def drop_damaged(self, dim: int, *, every: bool = False,
                     progress: Optional[ProgressCallback] = None) -> list[tuple[int, str]]:
        """Check the committed chunks that are new or whose files changed (size or modification time) since
        they last passed :meth:`check_chunk` (every chunk with ``every``), so an index run does not read
        the whole index again; delete the damaged ones, so their images count as new and are embedded
        again. The stamps of the chunks that passed are kept in ``chunks-checked.npy``. Returns (chunk
        number, reason) per chunk dropped."""
        checked = {} if every else self._read_checked(dim)
        numbers = self.chunk_numbers()
        stamps = {n: self._chunk_stamp(n) for n in numbers}
        todo = [n for n in numbers if stamps[n] is None or checked.get(n) != stamps[n]]  # None: a file is missing
        dropped = []
        if todo:
            emit(progress, "check chunks", 0, len(todo))
        for i, n in enumerate(todo, 1):
            try:
                self.check_chunk(n, dim)
                if stamps[n] is not None:  # taken before reading: a change during the check is checked next time
                    checked[n] = stamps[n]
            except DamagedChunkError as exc:
                dropped.append((n, exc.reason))
                checked.pop(n, None)
                (self.chunks_dir / f"c{n:06d}.parquet").unlink(missing_ok=True)  # uncommit first
                (self.chunks_dir / f"c{n:06d}.npy").unlink(missing_ok=True)
            emit(progress, "check chunks", i, len(todo))
        if todo or set(checked) - set(numbers):
            rows = [(n, dim, *checked[n]) for n in numbers if n in checked]
            write_npy(self.root / CHECKED_FILE, np.array(rows, np.int64).reshape(-1, 6))
        return dropped

    def iter_chunks(self) -> Iterator[Chunk]:
        for n in self.chunk_numbers():
            yield Chunk(n, self.read_chunk(n))

    # ---------------------------------------------------------------- generation files
    def manifest_path(self, generation: int) -> Path:
        """Where generation ``generation``'s manifest is written (an Arrow IPC file, ``manifest.py``)."""
        return self.root / f"manifest-{generation:06d}.arrow"

    def manifest_file(self, generation: int) -> Path:
        """Generation ``generation``'s manifest as it is on disk: the Arrow file, or the Parquet table of an
        index written before manifests were Arrow files."""
        path = self.manifest_path(generation)
        old = path.with_suffix(".parquet")
        return old if not path.exists() and old.exists() else path

    def faiss_path(self, generation: int) -> Path:
        return self.root / f"index-{generation:06d}.faiss"

    def skips_path(self, generation: int) -> Path:
        """Generation ``generation``'s skipped images with their ids (``manifest.SKIP_SCHEMA``), which the next
        generation's manifest merge reads (``merge.py``)."""
        return self.root / f"skips-{generation:06d}.parquet"

    def remove_old_generations(self, keep: int) -> None:
        for pattern in ("manifest-*.arrow", "manifest-*.parquet", "index-*.faiss", "index-*.ivfdata",
                        "skips-*.parquet"):
            for p in self.root.glob(pattern):
                gen = p.stem.split("-")[-1]
                if gen.isdigit() and int(gen) != keep:
                    p.unlink(missing_ok=True)
