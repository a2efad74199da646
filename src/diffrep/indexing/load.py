"""Open a finished index directory for searching."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DiffrepIndexError, brief
from . import faiss_index, ondisk
from .build import gather_vectors
from .manifest import Lookup, Manifest
from .store import IndexDir


@dataclass
class LoadedIndex:
    dir: IndexDir
    meta: dict[str, Any]
    manifest: Manifest  # row i = FAISS id i (memory-mapped)
    faiss: Any
    pending_chunks: int  # chunks written after the last finalize (an interrupted run)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.meta["descriptor"]

    def __len__(self) -> int:
        return self.manifest.num_rows

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, FAISS ids); an ivfpq index's candidates are re-scored exactly from the stored vectors."""
        return faiss_index.search_stored(self.faiss, self.meta.get("index", {}).get("type", ""), queries, k,
                                         self.vectors)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of FAISS ids ``ids`` (exact, from the chunk files, whatever the index type)."""
        return gather_vectors(self.dir, self.manifest.take(np.asarray(ids, np.int64), ["chunk", "row"]))

    def column(self, name: str) -> list[Any]:
        """Column ``name`` of every row, as a list (reads the whole column)."""
        return self.manifest.column(name).to_pylist()

    def lookup(self, name: str) -> Lookup:
        """Column ``name`` as a sequence read value by value (``lookup("path")[j]``): what an audit needs for its
        candidates, without loading the column."""
        return self.manifest.lookup(name)


MANIFEST_COLUMNS = ("idx", "id", "path", "caption", "sha256", "width", "height", "row", "chunk")


def open_index(path: str | Path) -> LoadedIndex:
    root = Path(path)
    if not root.exists():
        raise DiffrepIndexError(f"index directory {root} does not exist. Build it first: "
                                f"diffrep index TRAIN_IMAGES --out {root}")
    idx = IndexDir(root)
    meta = idx.read_meta()
    if not meta:
        hint = ("an indexing run was interrupted before it finished; re-run the same `diffrep index` "
                "command to resume" if idx.chunk_numbers() else "it holds no index.json")
        raise DiffrepIndexError(f"{root} is not a finished diffrep index: {hint}.")
    gen = meta["generation"]
    repair = "re-run `diffrep index` on the same source to rebuild it"
    try:
        manifest = Manifest(idx.manifest_file(gen))
        fx = ondisk.read(idx.faiss_path(gen))
        faiss_index.configure(fx, meta.get("index", {}))
    except (OSError, RuntimeError, ValueError, pa.ArrowException) as exc:
        raise DiffrepIndexError(f"index {root} is damaged ({brief(exc)}); "
                                f"{repair}.") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.column_names]
    if missing:
        raise DiffrepIndexError(f"index {root} is damaged (its manifest lacks {', '.join(missing)}); {repair}.")
    if fx.ntotal != manifest.num_rows or fx.ntotal != meta["count"] or fx.d != meta["descriptor"]["dim"]:
        raise DiffrepIndexError(f"index {root} is inconsistent ({fx.ntotal} vectors of dimension {fx.d}, "
                                f"{manifest.num_rows} manifest rows, index.json: {meta['count']} of dimension "
                                f"{meta['descriptor']['dim']}); {repair}.")
    pending = sum(1 for n in idx.chunk_numbers() if n > meta.get("last_chunk", 0))
    return LoadedIndex(idx, meta, manifest, fx, pending)
