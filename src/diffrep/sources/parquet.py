"""Parquet tables of images (the img2dataset / Hugging Face datasets layouts): one record per row.

A row's image is, in order of preference: encoded bytes in a binary column (``jpg``, ``png``, ``webp``,
``image``, ``img``, ``bytes``; a Hugging Face ``Image`` struct with a ``bytes`` field counts), else a file path
in a string column (``path``, ``file``, ``filepath``, ``file_name``, ``filename``; relative paths are taken
from the table's folder). A table that has only URLs is skipped whole with the reason: diffrep does not
download (fetch them first, e.g. with img2dataset). Captions come from ``caption``, ``text``, ``prompt`` or
``TEXT``. Only the small columns are read while scanning; a row's bytes are read when the record is, one row
group at a time (the last one read is kept per process, under a lock, for the decoding threads).

Ids are ``<table name>/<key>`` (the ``key`` column when its values are unique, else the row number);
paths ``<table>::#<row>`` (``read_location`` reads them back). Every record of a table carries the table
file's size and time, so an index re-embeds a table's rows when the table changes.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import brief
from ..fsutil import is_utf8
from .records import NOT_UTF8, Record, Skip, _FileLoader

BYTES_COLUMNS = ("jpg", "png", "webp", "image", "img", "bytes")
PATH_COLUMNS = ("path", "file", "filepath", "file_name", "filename")
URL_COLUMNS = ("url", "URL", "image_url")
CAPTION_COLUMNS = ("caption", "text", "prompt", "TEXT")
ROW_MARK = "::#"

_lock = threading.Lock()
_cached: dict[tuple[str, int, str], Any] = {}


def _column_kind(field: Any) -> str:
    """"bytes" (binary, or a struct with a binary ``bytes`` field), "string" or "other"."""
    import pyarrow as pa

    t = field.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_struct(t) and any(f.name == "bytes" and (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
                                     for f in t):
        return "bytes"
    return "string" if pa.types.is_string(t) or pa.types.is_large_string(t) else "other"


def _column(fields: dict[str, Any], names: tuple[str, ...], kind: str) -> str | None:
    """The first of ``names`` that the table has, of ``kind`` (``_column_kind``)."""
    return next((c for c in names if c in fields and _column_kind(fields[c]) == kind), None)


def _row_group_column(table: str, group: int, column: str) -> Any:
    key = (table, group, column)
    with _lock:
        if key not in _cached:
            import pyarrow.parquet as pq

            _cached.clear()
            _cached[key] = pq.ParquetFile(table).read_row_group(group, columns=[column]).column(0)
        return _cached[key]


@dataclass(frozen=True)
class _ParquetCellLoader:
    table: str
    group: int
    index: int
    column: str

    def __call__(self) -> bytes:
        try:
            value = _row_group_column(self.table, self.group, self.column)[self.index].as_py()
        except Exception as exc:  # pyarrow raises its own error types for damaged files
            raise OSError(f"cannot read row {self.index} of row group {self.group} of {self.table}: {exc}") from None
        if isinstance(value, dict):
            value = value.get("bytes")
        if not value:
            raise OSError(f"row {self.index} of row group {self.group} of {self.table} has no image bytes")
        return bytes(value)


def _scan_parquet(table: str) -> tuple[list[Record], list[Skip]]:
    """The records of one table (see the module docstring)."""
    if not is_utf8(table):
        return [], [Skip(table, NOT_UTF8)]
    try:
        import pyarrow.parquet as pq

        st = os.stat(table)
        pf = pq.ParquetFile(table)
    except Exception as exc:
        return [], [Skip(table, f"not a readable Parquet table: {brief(exc)}")]
    fields = {f.name: f for f in pf.schema_arrow}
    image = _column(fields, BYTES_COLUMNS, "bytes")
    path_col = _column(fields, PATH_COLUMNS, "string")
    if image is None and path_col is None:
        has_url = any(c in fields for c in URL_COLUMNS)
        why = ("has image URLs but no image bytes or file paths: diffrep does not download; fetch the images "
               "first (e.g. img2dataset) and give the result") if has_url else \
            f"has no image column (bytes: {', '.join(BYTES_COLUMNS)}; paths: {', '.join(PATH_COLUMNS)})"
        return [], [Skip(table, f"Parquet table {why}")]
    cap = _column(fields, CAPTION_COLUMNS, "string")
    key = "key" if "key" in fields else None
    small = [c for c in (key, cap, None if image else path_col) if c]
    meta = pf.read(columns=small).to_pydict() if small else {}
    n = pf.metadata.num_rows
    keys = [str(k) for k in meta[key]] if key else []
    use_keys = bool(keys) and len(set(keys)) == n and all(k and "/" not in k for k in keys)
    name = os.path.basename(table)
    folder = os.path.dirname(os.path.abspath(table))
    records: list[Record] = []
    skips: list[Skip] = []
    row = 0
    for group in range(pf.metadata.num_row_groups):
        for i in range(pf.metadata.row_group(group).num_rows):
            rid = f"{name}/{keys[row] if use_keys else f'{row:09d}'}"
            caption = meta[cap][row] if cap else None
            if image:
                records.append(Record(rid, f"{table}{ROW_MARK}{row}", caption, st.st_size, st.st_mtime,
                                      _ParquetCellLoader(table, group, i, image)))
            else:
                rel = meta[path_col][row]
                full = rel if rel and os.path.isabs(rel) else os.path.join(folder, rel or "")
                if rel and os.path.isfile(full):
                    fst = os.stat(full)
                    records.append(Record(rid, full, caption, fst.st_size, fst.st_mtime, _FileLoader(full)))
                else:
                    skips.append(Skip(f"{table}{ROW_MARK}{row}", f"the file it names ({rel!r}) does not exist"))
            row += 1
    return records, skips


def read_row(location: str) -> bytes:
    """Bytes of ``<table>::#<row>`` (a Parquet record's path); OSError when the table or row is gone."""
    import pyarrow.parquet as pq

    table, _, row_text = location.rpartition(ROW_MARK)
    try:
        row = int(row_text)
        pf = pq.ParquetFile(table)
    except (ValueError, OSError) as exc:
        raise OSError(f"cannot read {location}: {exc}") from None
    fields = {f.name: f for f in pf.schema_arrow}
    image = _column(fields, BYTES_COLUMNS, "bytes")
    start = 0
    for group in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if image and row < start + rows:
            return _ParquetCellLoader(table, group, row - start, image)()
        start += rows
    raise OSError(f"{location}: no such row with image bytes")
