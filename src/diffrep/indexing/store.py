"""The on-disk index directory: self-describing, appendable, crash-safe.

Layout::

    INDEX_DIR/
      index.json               what this is: descriptor fingerprint, FAISS type, counts, current generation
      manifest-GGGGGG.parquet  live rows in FAISS id order (idx, id, path, caption, sha256, bytes, ...)
      index-GGGGGG.faiss       the FAISS index for that generation
      skipped.csv              inputs that could not be indexed, with reasons
      chunks/cNNNNNN.npy       embedded vectors, written as work proceeds (the source of truth)
      chunks/cNNNNNN.parquet   the rows of that chunk (ok rows point at a vector row; skips carry a reason)

Every file is written atomically. A chunk's .parquet is written after its .npy and is its commit mark,
so a killed run loses at most the chunk in flight. ``index.json`` is replaced last and names the
generation of manifest + FAISS files it belongs to, so readers always see one consistent state.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DiffrepIndexError
from ..fsutil import atomic_path, write_json

FORMAT = "diffrep-index/1"
CHUNK_SCHEMA = pa.schema([
    ("id", pa.string()), ("path", pa.string()), ("caption", pa.string()), ("sha256", pa.string()),
    ("bytes", pa.int64()), ("mtime", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("status", pa.string()), ("reason", pa.string()), ("row", pa.int32()),
])


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
        if not self.meta_path.is_file():
            return {}
        try:
            self.meta = json.loads(self.meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DiffrepIndexError(f"{self.meta_path} is unreadable ({exc}); delete the index directory "
                                    "and rebuild it with `diffrep index`.") from None
        if self.meta.get("format") != FORMAT:
            raise DiffrepIndexError(f"{self.root} is not a diffrep index (format {self.meta.get('format')!r}).")
        return self.meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        meta = {"format": FORMAT, **meta}
        write_json(self.meta_path, meta)
        self.meta = meta

    # ---------------------------------------------------------------- lock
    def lock(self) -> "_Lock":
        return _Lock(self.root / ".lock")

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
        return removed

    def write_chunk(self, number: int, rows: list[dict[str, Any]], vectors: np.ndarray) -> None:
        self.chunks_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.chunks_dir / f"c{number:06d}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
        table = pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA)
        with atomic_path(self.chunks_dir / f"c{number:06d}.parquet") as tmp:
            pq.write_table(table, tmp)

    def read_chunk(self, number: int) -> pa.Table:
        return pq.read_table(self.chunks_dir / f"c{number:06d}.parquet", schema=CHUNK_SCHEMA)

    def chunk_vectors(self, number: int) -> np.ndarray:
        return np.load(self.chunks_dir / f"c{number:06d}.npy", mmap_mode="r")

    def iter_chunks(self) -> Iterator[Chunk]:
        for n in self.chunk_numbers():
            yield Chunk(n, self.read_chunk(n))

    # ---------------------------------------------------------------- generation files
    def manifest_path(self, generation: int) -> Path:
        return self.root / f"manifest-{generation:06d}.parquet"

    def faiss_path(self, generation: int) -> Path:
        return self.root / f"index-{generation:06d}.faiss"

    def remove_old_generations(self, keep: int) -> None:
        for pattern in ("manifest-*.parquet", "index-*.faiss"):
            for p in self.root.glob(pattern):
                gen = p.stem.split("-")[-1]
                if gen.isdigit() and int(gen) != keep:
                    p.unlink(missing_ok=True)


class _Lock:
    """An exclusive advisory lock so two writers never interleave chunks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def __enter__(self) -> "_Lock":
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise DiffrepIndexError(f"another diffrep process is writing {self.path.parent}; wait for it "
                                    "to finish (or stop it) and retry.") from None
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
