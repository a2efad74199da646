"""Resuming the model-side commands: the finished batches of a scoring loop, kept in the output folder.

``probe``, ``membership`` and ``extract`` make many noise predictions (hours for thousands of prompts or
images on Stable Diffusion). Each finished batch's results go to ``OUT/.partial/STAGE-KEY/b<start>.npz``
(written atomically); the same command run again after an interruption reads them back and computes only the
batches that are missing. ``KEY`` is a digest of everything the results depend on: the model's files (names,
sizes, modification times), the inputs and the settings. A run with another key starts afresh and removes the
journals other keys left for the same stage; the journal is removed once the command's outputs are written.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..fsutil import write_bytes

FOLDER = ".partial"


def model_stamp(path: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """(relative path, size, modification time) of every file of a model folder (or of the model file), hidden
    files and folders left out."""
    root = Path(path)
    if root.is_file():
        st = root.stat()
        return [(root.name, st.st_size, st.st_mtime_ns)]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):  # not a lock or journal of ours
            p = Path(dirpath) / name
            st = p.stat()
            out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return out


def digest(*parts: Any) -> str:
    """A digest of ``parts``: arrays by their bytes, shape and type, anything else by its JSON text."""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


class Journal:
    """The finished batches of one stage of a run (module docstring); a no-op without an output folder."""

    def __init__(self, out: Optional[Path], stage: str, key: str) -> None:
        self.dir = None if out is None else Path(out) / FOLDER / f"{stage}-{key}"
        if self.dir is None:
            return
        for stale in self.dir.parent.glob(f"{stage}-*"):
            if stale != self.dir and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self, start: int) -> Optional[dict[str, np.ndarray]]:
        """The results saved for the batch that starts at ``start``, or None (none saved, or unreadable)."""
        if self.dir is None:
            return None
        try:
            with np.load(self.dir / f"b{start:09d}.npz", allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            return None

    def save(self, start: int, arrays: dict[str, Any]) -> None:
        if self.dir is None:
            return
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        write_bytes(self.dir / f"b{start:09d}.npz", buf.getvalue())

    def close(self) -> None:
        """Remove the journal (the outputs are written), and the journal folder when nothing else is left."""
        if self.dir is None:
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.dir.parent.rmdir()
        except OSError:
            pass


def kept(journal: Optional[Journal], start: int, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The results ``journal`` kept for the batch that starts at ``start``, else ``compute()``'s, then kept."""
    done = journal.load(start) if journal is not None else None
    if done is None:
        done = compute()
        if journal is not None:
            journal.save(start, done)
    return done


def close_all(journals: Iterable[Journal]) -> None:
    for j in journals:
        j.close()


__all__ = ["FOLDER", "Journal", "close_all", "digest", "kept", "model_stamp"]
