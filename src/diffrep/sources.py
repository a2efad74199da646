"""Where images come from: a folder (walked recursively) or webdataset ``.tar`` shards.

``open_source`` validates the spec cheaply; ``Source.scan`` lists records (lazy byte loaders, no
decoding) and skips, sorted by id. Records pickle, so they can be shipped to worker processes.

Folder ids are POSIX paths relative to the root; tar ids are ``<shard name>/<member key + ext>``.
Hidden entries (name starts with ".") are ignored; directory symlinks are followed once each; a
directory passed to ``Source.exclude`` (an output directory inside the source) is not entered.
Only uncompressed tars are supported: members are read by seeking to their data offset.
Every file or member left out is a ``Skip`` with its reason: names that are not valid UTF-8 (ids are
stored as UTF-8 text), tar members that are links, devices or FIFOs, unreadable files.
"""
from __future__ import annotations

import csv
import glob
import os
import stat
import tarfile
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from .errors import SourceError
from .fsutil import is_utf8, parse_json
from .progress import ProgressCallback, emit

_EXT_ORDER = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_EXTENSIONS = frozenset(_EXT_ORDER)
_IMAGE_PRIORITY = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")  # per sample
SIDECAR_EXTENSIONS = frozenset({".txt", ".json"})
CAPTION_FILE_NAMES = ("captions.jsonl", "captions.csv", "prompts.jsonl")  # prompts.jsonl: `diffrep sample`
_FILE_KEYS = ("file", "file_name", "filename", "image", "path")
_TEXT_KEYS = ("caption", "text")
_MAX_CAPTION_MEMBER = 1 << 20
_PROGRESS_EVERY = 1000
_COMPRESSED_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ", "xz"),
                     (b"\x28\xb5\x2f\xfd", "zstd"))
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)
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


def _ext(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _error_text(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


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
        table = _load_captions(cap_file, self.folder) if cap_file else {}
        if self.folder is not None:
            records, skips = _scan_folder(self.folder, progress, self._excluded)
        else:
            records, skips = [], []
            for i, shard in enumerate(self.shards):
                found, skipped = _scan_shard(shard)
                records += found
                skips += skipped
                emit(progress, "scan", i + 1, len(self.shards), unit="shard")
        if not records and not skips:
            raise SourceError(f"no images found in {self.root} (looked for {', '.join(_EXT_ORDER)}). "
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


# --- caption files -------------------------------------------------------------------------------

def _caption_row(row: dict[Any, Any], where: str, root: str | None) -> tuple[str, str | None]:
    name = next((row[k] for k in _FILE_KEYS if isinstance(row.get(k), str) and row[k]), None)
    if name is None:
        raise SourceError(f"{where}: no file name (expected a key {', '.join(_FILE_KEYS)}). "
                          "Fix or delete that line.")
    text = next((row[k] for k in _TEXT_KEYS if k in row), None)
    if text is not None and not isinstance(text, str):
        raise SourceError(f"{where}: the caption must be a string, not {type(text).__name__}. "
                          "Fix that line.")
    name = name.strip().replace("\\", "/")
    if root and os.path.isabs(name):
        rel = os.path.relpath(name, root)
        name = name if rel.startswith("..") else rel.replace(os.sep, "/")
    while name.startswith("./"):
        name = name[2:]
    return name, text


def _load_captions(path: str, root: str | None) -> dict[str, str | None]:
    """Parse a .jsonl or .csv caption file into {relative path or bare file name: caption}."""
    table: dict[str, str | None] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            if path.lower().endswith(".csv"):
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                if not set(header) & set(_FILE_KEYS) or not set(header) & set(_TEXT_KEYS):
                    raise SourceError(
                        f"{path} line 1: the header must name a file column ({', '.join(_FILE_KEYS)}) "
                        f"and a caption column (caption or text); found {', '.join(header) or 'nothing'}.")
                try:
                    for row in reader:
                        where = f"{path} line {reader.line_num}"
                        if None in row or None in row.values():
                            raise SourceError(f"{where}: wrong number of columns. Quote captions that "
                                              "contain commas.")
                        key, text = _caption_row(row, where, root)
                        table[key] = text
                except csv.Error as exc:
                    raise SourceError(f"{path} line {reader.line_num}: malformed CSV ({exc}).") from None
                return table
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = parse_json(line)
                except ValueError as exc:
                    raise SourceError(f"{path} line {n}: not valid JSON ({getattr(exc, 'msg', exc)}). "
                                      "Fix or delete that line.") from None
                if not isinstance(obj, dict):
                    raise SourceError(f'{path} line {n}: expected an object like '
                                      '{"file": "a.png", "caption": "..."}. Fix that line.')
                key, text = _caption_row(obj, f"{path} line {n}", root)
                table[key] = text
    except UnicodeDecodeError:
        raise SourceError(f"caption file {path} is not UTF-8 text. Re-save it as UTF-8.") from None
    except OSError as exc:
        raise SourceError(f"cannot read caption file {path}: {_error_text(exc)}.") from None
    return table


# --- folders -------------------------------------------------------------------------------------

def _scan_folder(root: str, progress: ProgressCallback | None,
                 excluded: set[tuple[int, int]] = frozenset()) -> tuple[list[Record], list[Skip]]:  # type: ignore[assignment]
    records: list[Record] = []
    skips: list[Skip] = []
    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise SourceError(f"cannot open folder {root}: {_error_text(exc)}. Check the path.") from None
    seen_dirs = {(root_st.st_dev, root_st.st_ino)} | set(excluded)  # guards against symlink loops
    stack: list[tuple[str, str]] = [(root, "")]  # (directory path, id prefix)
    visited = 0
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            skips.append(Skip(directory, f"cannot list directory: {_error_text(exc)}"))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            visited += 1
            if visited % _PROGRESS_EVERY == 0:
                emit(progress, "scan", visited, None, unit="file")
            try:
                st = entry.stat()  # follows symlinks
            except OSError as exc:
                broken = entry.is_symlink()
                skips.append(Skip(entry.path, "broken symbolic link" if broken
                                  else f"cannot stat: {_error_text(exc)}"))
                continue
            if not is_utf8(name):
                skips.append(Skip(entry.path, ("folder " if stat.S_ISDIR(st.st_mode) else "") + NOT_UTF8))
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) not in seen_dirs:
                    seen_dirs.add((st.st_dev, st.st_ino))
                    stack.append((entry.path, f"{prefix}{name}/"))
                continue
            ext = _ext(name)
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


# --- webdataset shards ---------------------------------------------------------------------------

def _split_key(member_name: str) -> tuple[str, str]:
    """Webdataset convention: the key is the path up to the first dot of the basename."""
    head, _, base = member_name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (dot + suffix if dot else "")


def _pick(suffixes: list[str], preferred: Sequence[str], allowed: frozenset[str]) -> str | None:
    """Exact preferred suffix first, else the first compound suffix (".seg.png") with an allowed ext."""
    lower = {s.lower(): s for s in suffixes}
    exact = next((lower[p] for p in preferred if p in lower), None)
    return exact or next((s for s in sorted(suffixes) if s[s.rfind("."):].lower() in allowed), None)


def _read_caption(tf: tarfile.TarFile, member: tarfile.TarInfo) -> str | None:
    if member.size > _MAX_CAPTION_MEMBER:
        return None
    try:
        fh = tf.extractfile(member)
        text = fh.read().decode("utf-8", errors="replace") if fh is not None else ""
    except _TAR_ERRORS:
        return None
    if _ext(member.name) == ".txt":
        return text.strip()
    try:
        obj = parse_json(text)
    except ValueError:
        return None
    value = next((obj[k] for k in _TEXT_KEYS if k in obj), None) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    return "FIFO" if member.isfifo() else "special entry"


def _scan_shard(shard: str) -> tuple[list[Record], list[Skip]]:
    records: list[Record] = []
    skips: list[Skip] = []
    bad = "corrupt or unreadable tar (an uncompressed webdataset .tar is expected)"
    if not is_utf8(shard):
        return [], [Skip(shard, NOT_UTF8)]
    try:
        st = os.stat(shard)
        with open(shard, "rb") as fh:
            magic = fh.read(6)
        packer = next((n for m, n in _COMPRESSED_MAGIC if magic.startswith(m)), None)
        if packer:
            return [], [Skip(shard, f"{packer}-compressed tar is not supported (members must be "
                                    "seekable); decompress it to a plain .tar")]
        tf = tarfile.open(shard, mode="r:")
    except _TAR_ERRORS as exc:
        return [], [Skip(shard, f"{bad}: {_error_text(exc)}")]
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    with tf:
        try:
            for member in tf:
                if member.isdir() or member.name.rsplit("/", 1)[-1].startswith("."):
                    continue
                where = f"{shard}::{member.name}"
                if not member.isfile():
                    skips.append(Skip(where, f"tar member is a {_member_kind(member)}, not a file; not read"))
                elif not is_utf8(member.name):
                    skips.append(Skip(where, NOT_UTF8))
                else:
                    key, suffix = _split_key(member.name)
                    groups.setdefault(key, {})[suffix] = member
        except _TAR_ERRORS as exc:
            kept = "; complete samples before the damage are kept" if groups else ""
            skips.append(Skip(shard, f"{bad}: {_error_text(exc)}{kept}"))
        shard_name = os.path.basename(shard)
        for key, members in groups.items():
            suffix = _pick(list(members), _IMAGE_PRIORITY, IMAGE_EXTENSIONS)
            if suffix is None:
                found = ", ".join(sorted(members)) or "nothing"
                skips.append(Skip(f"{shard}::{key}", f"no image member in sample '{key}' (found {found})"))
                continue
            member = members[suffix]
            if member.offset_data + member.size > st.st_size:
                skips.append(Skip(f"{shard}::{member.name}", "member data runs past the end of the shard"))
                continue
            cap_suffix = _pick(list(members), (".txt", ".json"), SIDECAR_EXTENSIONS)
            caption = _read_caption(tf, members[cap_suffix]) if cap_suffix else None
            records.append(Record(f"{shard_name}/{key}{suffix}", f"{shard}::{member.name}", caption,
                                  member.size, st.st_mtime,
                                  _TarMemberLoader(shard, member.offset_data, member.size)))
    return records, skips


# --- opening -------------------------------------------------------------------------------------

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
    """Open a folder, a .tar shard, a list of shards, or a glob such as ``shards/*.tar``."""
    items = [os.fspath(spec)] if isinstance(spec, (str, os.PathLike)) else [os.fspath(s) for s in spec]
    if not items:
        raise SourceError("no source given. Pass a folder of images or one or more .tar shards.")
    paths = [p for item in items for p in _expand(item)]
    cap_path = None
    if captions is not None:
        cap_path = os.path.abspath(os.fspath(captions))
        if not os.path.isfile(cap_path):
            raise SourceError(f"caption file {cap_path} does not exist. Check the --captions path.")
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
        if not path.lower().endswith(".tar"):
            raise SourceError(f"{path} is not a folder or a .tar shard. Pass the folder that holds "
                              "the images, or uncompressed webdataset .tar files.")
    shards = sorted({os.path.abspath(p) for p in paths})
    root = shards[0] if len(shards) == 1 else f"{len(shards)} shards in {os.path.dirname(shards[0])}"
    return Source(root, shards=shards, captions=cap_path)


__all__ = ["IMAGE_EXTENSIONS", "Record", "Skip", "Source", "open_source"]


def read_location(path: str) -> bytes:
    """Bytes of an image by the ``path`` a Record (or an index manifest) reports: a file, or
    ``<shard.tar>::<member>`` for a webdataset member. Raises OSError when it is gone."""
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
