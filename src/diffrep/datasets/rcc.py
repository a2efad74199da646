"""Read Qt resource archives (``.rcc``, formats 1-3): the files GCompris ships its pictures in.

Layout (Qt's ``rcc`` tool): a header ``qres``, version, and the offsets of the tree, the data and the names
(all big-endian 32-bit; version 3 adds a flags word). The tree is a flat array of nodes (14 bytes in version
1, 22 with a modification time after it): a name offset, flags (1: zlib-compressed, 2: directory, 4: zstd),
then for a directory its child count and first child index, for a file its locale and data offset. A name is a
16-bit length, a 32-bit hash and UTF-16BE characters; a data entry is a 32-bit size and the bytes (zlib
entries start with the 4-byte uncompressed size).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..errors import DiffrepError

COMPRESSED, DIRECTORY, COMPRESSED_ZSTD = 0x1, 0x2, 0x4


def read_rcc(path: str | Path) -> dict[str, bytes]:
    """Every file in the archive at ``path``, {"dir/sub/name": bytes}; zstd-compressed entries are left out
    (none of the archives diffrep reads uses them). DiffrepError for a file that is not a Qt resource archive."""
    data = Path(path).read_bytes()
    if data[:4] != b"qres" or len(data) < 20:
        raise DiffrepError(f"{path} is not a Qt resource archive (no 'qres' header)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    if version not in (1, 2, 3):
        raise DiffrepError(f"{path}: Qt resource format {version} is not supported (1-3 are)")
    node = 14 if version == 1 else 22
    out: dict[str, bytes] = {}

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset:names + offset + 2])
        start = names + offset + 6
        return data[start:start + 2 * length].decode("utf-16-be")

    def walk(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise DiffrepError(f"{path}: the resource tree is nested too deeply (damaged archive?)")
        base = tree + index * node
        name_offset, flags = struct.unpack(">IH", data[base:base + 6])
        name = name_at(name_offset) if index else ""
        if flags & DIRECTORY:
            count, first = struct.unpack(">II", data[base + 6:base + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if index else "", depth + 1)
            return
        (offset,) = struct.unpack(">I", data[base + 10:base + 14])
        (size,) = struct.unpack(">I", data[payload + offset:payload + offset + 4])
        blob = data[payload + offset + 4:payload + offset + 4 + size]
        if flags & COMPRESSED_ZSTD:
            return
        out[prefix + name] = zlib.decompress(blob[4:]) if flags & COMPRESSED else blob

    try:
        walk(0, "", 0)
    except (struct.error, zlib.error, UnicodeDecodeError, RecursionError) as exc:
        raise DiffrepError(f"{path} is a damaged Qt resource archive ({exc})") from None
    return out
