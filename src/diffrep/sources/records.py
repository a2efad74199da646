"""The records a source yields: an image's id, findable path, caption and a lazy byte loader; a ``Skip`` for
anything left out, with its reason."""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from typing import Callable

EXT_ORDER = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_EXTENSIONS = frozenset(EXT_ORDER)
IMAGE_PRIORITY = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")  # per sample
SIDECAR_EXTENSIONS = frozenset({".txt", ".json"})
CAPTION_FILE_NAMES = ("captions.jsonl", "captions.csv", "prompts.jsonl")  # prompts.jsonl: `diffrep sample`
FILE_KEYS = ("file", "file_name", "filename", "image", "path")
TEXT_KEYS = ("caption", "text")
MAX_CAPTION_MEMBER = 1 << 20
PROGRESS_EVERY = 1000
COMPRESSED_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ", "xz"),
                     (b"\x28\xb5\x2f\xfd", "zstd"))
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)
NOT_UTF8 = "file name is not valid UTF-8; rename it (diffrep stores names as UTF-8 text)"


@dataclass(frozen=True)
class _FileLoader:
    path: str

    def __call__(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read()


@dataclass(frozen=True)
class _TarMemberLoader:
    shard: str
    offset: int
    size: int

    def __call__(self) -> bytes:
        with open(self.shard, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(self.size)
        if len(data) != self.size:
            raise OSError(f"shard {self.shard} is truncated: member at byte {self.offset} is short")
        return data


@dataclass(frozen=True)
class Record:
    """One image: stable id, human-findable path, optional caption; bytes load lazily."""

    id: str
    path: str
    caption: str | None
    size: int
    mtime: float
    _loader: Callable[[], bytes] = field(repr=False, compare=False)

    def read(self) -> bytes:
        """Return the image bytes (raises OSError if the file vanished or became unreadable)."""
        return self._loader()


@dataclass(frozen=True)
class Skip:
    """A file or sample left out of the scan, with a human-readable reason."""

    path: str
    reason: str


def ext_of(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def read_location(path: str) -> bytes:
    """Bytes of an image by the ``path`` a Record (or an index manifest) reports: a file,
    ``<shard.tar>::<member>`` for a webdataset member or ``<table.parquet>::#<row>`` for a Parquet row.
    Raises OSError when it is gone."""
    if "::#" in path and path.rpartition("::#")[0].lower().endswith(".parquet"):
        from .parquet import read_row

        return read_row(path)
    shard, sep, member = path.partition("::")
    if sep and os.path.isfile(shard):
        try:
            with tarfile.open(shard, "r:") as tf:
                fh = tf.extractfile(member)
                if fh is None:
                    raise OSError(f"{member} is not a regular file in {shard}")
                return fh.read()
        except (tarfile.TarError, KeyError) as exc:
            raise OSError(f"cannot read {member} from {shard}: {exc}") from None
    with open(path, "rb") as fh:
        return fh.read()
