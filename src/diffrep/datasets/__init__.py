"""Packaged datasets, fetched with the system's ordinary package clients and cached on disk.

``get_dataset("emoji")`` packs the npm package ``emoji-datasource-google`` and keeps its 64 px Google emoji
PNGs with captions and groups (``emoji.py``): an emoji, its skin-tone and gender variants and any emoji
drawn with the identical picture share one group, so a train/held-out split by group never holds out a
near-copy of a training image. ``get_dataset("fashion-mnist")`` reads the Debian package
``dataset-fashion-mnist`` (``fashion.py``: installed, or downloaded and unpacked without root);
``get_dataset("openclipart")`` unpacks the Debian package ``openclipart-png`` (``clipart.py``);
``get_dataset("gcompris-photos")`` / ``("gcompris-drawings")`` read the pictures of the Debian package
``gcompris-qt-data`` out of its Qt resource archives (``gcompris.py``, ``rcc.py``);
``get_dataset("tuxpaint-stamps")`` keeps the object stamps of the Debian package ``tuxpaint-stamps-default``
(``tuxpaint.py``: photographs and drawings of objects on transparent backgrounds). Folders are
built and cached by ``fetch.py``; ``twins.py`` finds pictures that are one picture (the families' pixel rule).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable, Optional

from ..errors import DiffrepError
from ..progress import ProgressCallback
from .emoji import EMOJI_PACKAGE, SKIN_TONES, build_emoji, emoji_caption, emoji_concept  # noqa: F401
from .fashion import (FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, FASHION_MNIST_SYSTEM_DIR,  # noqa: F401
                      build_fashion_mnist, load_fashion_mnist_arrays)
from .fetch import COMPLETE, cache_dir, cached  # noqa: F401

# Bumped when a dataset folder's layout or grouping changes; an older cached copy is then rebuilt.
DATASET_FORMATS = {"emoji": 7, "fashion-mnist": 1, "openclipart": 3, "gcompris-photos": 1, "gcompris-drawings": 2,
                   "tuxpaint-stamps": 2}


def get_dataset(name: str, progress: Optional[ProgressCallback] = None, *,
                cache: str | os.PathLike[str] | None = None) -> Path:
    """Fetch ``name`` once and return its folder ``<cache>/<name>``.

    The folder holds ``images/`` (the files to index), ``captions.jsonl`` ({"file", "caption"} with
    ``file`` relative to ``images/``) and, for emoji and openclipart, ``groups.csv`` and ``LICENSE``.
    """
    builders: dict[str, Callable[[Path, Optional[ProgressCallback], Path], None]] = {
        "emoji": build_emoji,
        "fashion-mnist": build_fashion_mnist,
        "openclipart": _build_openclipart,
        "gcompris-photos": lambda out, progress, root: _build_gcompris("photos", out, progress),
        "gcompris-drawings": lambda out, progress, root: _build_gcompris("drawings", out, progress),
        "tuxpaint-stamps": lambda out, progress, root: _build_tuxpaint(out, progress),
    }
    if name not in builders:
        raise DiffrepError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(builders))}")
    root = Path(cache) if cache is not None else cache_dir()
    return cached(root, name, lambda tmp: builders[name](tmp, progress, root),
                   f"{name} format {DATASET_FORMATS[name]}")


def _build_gcompris(kind: str, out: Path, progress: Optional[ProgressCallback]) -> None:
    from .gcompris import build_gcompris

    (out / "images").mkdir()
    build_gcompris(kind, out, progress)


def _build_tuxpaint(out: Path, progress: Optional[ProgressCallback]) -> None:
    from .tuxpaint import build_tuxpaint

    (out / "images").mkdir()
    build_tuxpaint(out, progress)


def _build_openclipart(out: Path, progress: Optional[ProgressCallback], root: Path) -> None:
    from .clipart import build_openclipart

    build_openclipart(out, progress, root)


def read_groups(dataset_dir: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """``{file: (group, category)}`` from a dataset's groups.csv."""
    with open(Path(dataset_dir) / "groups.csv", encoding="utf-8", newline="") as fh:
        return {row["file"]: (row["group"], row["category"]) for row in csv.DictReader(fh)}


def read_captions(dataset_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{file: caption}`` from a dataset's captions.jsonl."""
    with open(Path(dataset_dir) / "captions.jsonl", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    return {rec["file"]: rec["caption"] for rec in recs}
