"""Where images come from: a folder (walked recursively), webdataset ``.tar`` shards or Parquet tables
(``parquet.py``: image bytes or file paths per row, the img2dataset and Hugging Face layouts).

``open_source`` validates the spec cheaply; ``Source.scan`` lists records (lazy byte loaders, no
decoding) and skips, sorted by id. Records pickle, so they can be shipped to worker processes.

Folder ids are POSIX paths relative to the root; tar ids are ``<shard name>/<member key + ext>``; Parquet
ids ``<table name>/<key or row>``.
Hidden entries (name starts with ".") are ignored; directory symlinks are followed once each; a
directory passed to ``Source.exclude`` (an output directory inside the source) is not entered.
Only uncompressed tars are supported: members are read by seeking to their data offset.
Every file or member left out is a ``Skip`` with its reason: names that are not valid UTF-8 (ids are
stored as UTF-8 text), tar members that are links, devices or FIFOs, unreadable files.
"""
from __future__ import annotations

import csv
import glob
import io
import os
from dataclasses import replace
from typing import Any, Iterable, Sequence

from ..errors import SourceError
from ..fsutil import is_utf8, write_text
from ..progress import ProgressCallback, emit
from .captions import caption_file, load_captions
from .folder import _scan_folder
from .records import (CAPTION_FILE_NAMES, EXT_ORDER, IMAGE_EXTENSIONS, NOT_UTF8, Record, Skip,  # noqa: F401
                      read_location)
from .parquet import _scan_parquet
from .tar import _scan_shard


class Source:
    """An image collection: a folder (recursive) or a list of webdataset .tar shards."""

    def __init__(self, root: str, *, folder: str | None = None, shards: Sequence[str] = (),
                 captions: str | None = None) -> None:
        self.root = root  # description for messages
        self.folder = folder
        self.shards = list(shards)
        self.captions_path = captions
        self.caption_stats: dict[str, int] = {}  # filled by scan(): entries/matched/unmatched/...
        self._excluded: set[tuple[int, int]] = set()

    def spec(self) -> dict[str, Any]:
        """What this source is, for an index to remember: a folder's path, or the shards' paths."""
        if self.folder is not None:
            return {"kind": "folder", "path": self.folder}
        return {"kind": "shards", "paths": list(self.shards)}

    def exclude(self, directory: str | os.PathLike[str]) -> None:
        """Leave ``directory`` out of the scan (diffrep's own output directory inside a source folder).
        SourceError when it is the source folder itself: its outputs would be read as inputs next time."""
        if self.folder is None or not os.path.isdir(directory):
            return
        st = os.stat(directory)
        if os.path.samefile(directory, self.folder):
            raise SourceError(f"the output directory {directory} is the folder being read; diffrep's own files "
                              "(plots, report images) would be read as inputs next time. Choose another --out, "
                              "e.g. a sibling folder.")
        self._excluded.add((st.st_dev, st.st_ino))

    def scan(self, progress: ProgressCallback | None = None) -> tuple[list[Record], list[Skip]]:
        """List all records (sorted by id) and skips; SourceError when there is nothing at all."""
        cap_file = self.captions_path
        if cap_file is None and self.folder is not None:
            found = (os.path.join(self.folder, n) for n in CAPTION_FILE_NAMES)
            cap_file = next((p for p in found if os.path.isfile(p)), None)
        table = load_captions(cap_file, self.folder) if cap_file else {}
        if self.folder is not None:
            records, skips = _scan_folder(self.folder, progress, self._excluded)
        else:
            records, skips = [], []
            for i, shard in enumerate(self.shards):
                found, skipped = scan_shard(shard)
                records += found
                skips += skipped
                emit(progress, "scan", i + 1, len(self.shards), unit="shard")
        if not records and not skips:
            raise SourceError(f"no images found in {self.root} (looked for {', '.join(EXT_ORDER)}). "
                              "Point the source at the folder or .tar shards holding the images.")
        records = self._apply_captions(records, table)
        records.sort(key=lambda r: r.id)
        skips.sort(key=lambda s: s.path)
        emit(progress, "scan", len(records), len(records), unit="file", message="done")
        return records, skips

    def _apply_captions(self, records: list[Record], table: dict[str, str | None]) -> list[Record]:
        used: set[str] = set()
        if table:
            for i, rec in enumerate(records):
                key = rec.id if rec.id in table else rec.id.rsplit("/", 1)[-1]
                if key in table:
                    used.add(key)
                    records[i] = replace(rec, caption=table[key])
        with_caption = sum(1 for r in records if r.caption is not None)
        self.caption_stats = {"entries": len(table), "matched": len(used),
                              "unmatched": len(table) - len(used), "with_caption": with_caption,
                              "without_caption": len(records) - with_caption}
        return records


def scan_shard(shard: str) -> tuple[list[Record], list[Skip]]:
    """The records and skips of one webdataset .tar shard or Parquet table (captions from the shard itself),
    sorted by id and path."""
    records, skips = _scan_parquet(shard) if shard.lower().endswith(".parquet") else _scan_shard(shard)
    return sorted(records, key=lambda r: r.id), sorted(skips, key=lambda s: s.path)


def _expand(item: str) -> list[str]:
    if os.path.exists(item):
        return [item]
    if not any(ch in item for ch in "*?["):
        raise SourceError(f"{item} does not exist. Check the path (quote globs such as "
                          "'shards/*.tar' so the shell leaves them alone).")
    matches = sorted(glob.glob(item))
    if not matches:
        raise SourceError(f"no files match the pattern {item}. Check the folder and the pattern.")
    return matches


def open_source(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                captions: str | os.PathLike[str] | None = None) -> Source:
    """Open a folder, a .tar shard or .parquet table, a list of them, or a glob such as ``shards/*.tar``."""
    items = [os.fspath(spec)] if isinstance(spec, (str, os.PathLike)) else [os.fspath(s) for s in spec]
    if not items:
        raise SourceError("no source given. Pass a folder of images or one or more .tar shards.")
    paths = [p for item in items for p in _expand(item)]
    cap_path = None if captions is None else caption_file(captions)
    if len(paths) == 1 and os.path.isdir(paths[0]):
        folder = os.path.abspath(paths[0])
        if not is_utf8(folder):
            raise SourceError(f"the folder path {folder!r} is not valid UTF-8; diffrep stores paths as UTF-8 "
                              "text. Rename the folder.")
        return Source(folder, folder=folder, captions=cap_path)
    for path in paths:
        if os.path.isdir(path):
            raise SourceError(f"{path} is a folder; a source is one folder or a list of .tar shards. "
                              "Audit the folders one at a time.")
        if not path.lower().endswith((".tar", ".parquet")):
            raise SourceError(f"{path} is not a folder, a .tar shard or a .parquet table. Pass the folder that "
                              "holds the images, uncompressed webdataset .tar files, or Parquet tables.")
    shards = sorted({os.path.abspath(p) for p in paths})
    root = shards[0] if len(shards) == 1 else f"{len(shards)} shards in {os.path.dirname(shards[0])}"
    return Source(root, shards=shards, captions=cap_path)


def write_skipped(path: str | os.PathLike[str], rows: Iterable[tuple[str, str]]) -> None:
    """``skipped.csv``: one (path, reason) row per input left out, sorted; written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "reason"])
    w.writerows(sorted(rows))
    write_text(path, buf.getvalue())


def read_skipped(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The rows of a ``skipped.csv`` ([] when there is none)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        r = csv.reader(fh)
        next(r, None)
        return [(a, b) for a, b in r]


__all__ = ["IMAGE_EXTENSIONS", "CAPTION_FILE_NAMES", "NOT_UTF8", "Record", "Skip", "Source", "caption_file", "load_captions",
           "open_source", "read_location", "read_skipped", "scan_shard", "write_skipped"]
