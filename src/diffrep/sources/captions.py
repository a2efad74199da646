"""Caption files beside a source: ``captions.jsonl`` ({"file", "caption"} per line) or ``captions.csv``."""
from __future__ import annotations

import csv
import os
from typing import Any

from ..errors import SourceError, brief
from ..fsutil import parse_json
from .records import FILE_KEYS, TEXT_KEYS


def _caption_row(row: dict[Any, Any], where: str, root: str | None) -> tuple[str, str | None]:
    name = next((row[k] for k in FILE_KEYS if isinstance(row.get(k), str) and row[k]), None)
    if name is None:
        raise SourceError(f"{where}: no file name (expected a key {', '.join(FILE_KEYS)}). "
                          "Fix or delete that line.")
    text = next((row[k] for k in TEXT_KEYS if k in row), None)
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


def caption_file(path: str | os.PathLike[str]) -> str:
    """The absolute path of a caption file the user named; SourceError when it is not a file."""
    full = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isfile(full):
        raise SourceError(f"caption file {full} does not exist or is not a file. Check the --captions path.")
    return full


def load_captions(path: str, root: str | None) -> dict[str, str | None]:
    """Parse a .jsonl or .csv caption file into {relative path or bare file name: caption}."""
    table: dict[str, str | None] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            if path.lower().endswith(".csv"):
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                if not set(header) & set(FILE_KEYS) or not set(header) & set(TEXT_KEYS):
                    raise SourceError(
                        f"{path} line 1: the header must name a file column ({', '.join(FILE_KEYS)}) "
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
        raise SourceError(f"cannot read caption file {path}: {brief(exc)}.") from None
    return table
