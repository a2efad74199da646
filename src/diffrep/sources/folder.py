"""Folders, walked recursively: images become records, everything else that is not a sidecar a skip."""
from __future__ import annotations

import os
import stat

from ..errors import SourceError, brief
from ..fsutil import is_utf8
from ..progress import ProgressCallback, emit
from .records import (CAPTION_FILE_NAMES, IMAGE_EXTENSIONS, NOT_UTF8, PROGRESS_EVERY, SIDECAR_EXTENSIONS, Record,
                      Skip, _FileLoader, ext_of)


def _scan_folder(root: str, progress: ProgressCallback | None,
                 excluded: set[tuple[int, int]] = frozenset()) -> tuple[list[Record], list[Skip]]:  # type: ignore[assignment]
    records: list[Record] = []
    skips: list[Skip] = []
    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise SourceError(f"cannot open folder {root}: {brief(exc)}. Check the path.") from None
    seen_dirs = {(root_st.st_dev, root_st.st_ino)} | set(excluded)  # guards against symlink loops
    stack: list[tuple[str, str]] = [(root, "")]  # (directory path, id prefix)
    visited = 0
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            skips.append(Skip(directory, f"cannot list directory: {brief(exc)}"))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            visited += 1
            if visited % PROGRESS_EVERY == 0:
                emit(progress, "scan", visited, None, unit="file")
            try:
                st = entry.stat()  # follows symlinks
            except OSError as exc:
                broken = entry.is_symlink()
                skips.append(Skip(entry.path, "broken symbolic link" if broken
                                  else f"cannot stat: {brief(exc)}"))
                continue
            if not is_utf8(name):
                skips.append(Skip(entry.path, ("folder " if stat.S_ISDIR(st.st_mode) else "") + NOT_UTF8))
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) not in seen_dirs:
                    seen_dirs.add((st.st_dev, st.st_ino))
                    stack.append((entry.path, f"{prefix}{name}/"))
                continue
            ext = ext_of(name)
            if not stat.S_ISREG(st.st_mode):
                skips.append(Skip(entry.path, "not a regular file"))
            elif ext not in IMAGE_EXTENSIONS:
                if ext not in SIDECAR_EXTENSIONS and name not in CAPTION_FILE_NAMES:
                    skips.append(Skip(entry.path, f"unsupported file type '{ext}'" if ext
                                      else "unsupported file type (no extension)"))
            elif not os.access(entry.path, os.R_OK):
                skips.append(Skip(entry.path, "cannot read file: permission denied"))
            else:
                path = os.path.abspath(entry.path)
                records.append(Record(prefix + name, path, None, st.st_size, st.st_mtime,
                                      _FileLoader(path)))
    return records, skips
