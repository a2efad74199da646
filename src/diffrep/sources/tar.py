"""Webdataset ``.tar`` shards: samples grouped by key, members read by seeking to their data offset."""
from __future__ import annotations

import os
import tarfile
from typing import Sequence

from ..errors import brief
from ..fsutil import is_utf8, parse_json
from .records import (COMPRESSED_MAGIC, IMAGE_EXTENSIONS, IMAGE_PRIORITY, MAX_CAPTION_MEMBER, NOT_UTF8,
                      SIDECAR_EXTENSIONS, TAR_ERRORS, TEXT_KEYS, Record, Skip, _TarMemberLoader, ext_of)


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
    if member.size > MAX_CAPTION_MEMBER:
        return None
    try:
        fh = tf.extractfile(member)
        text = fh.read().decode("utf-8", errors="replace") if fh is not None else ""
    except TAR_ERRORS:
        return None
    if ext_of(member.name) == ".txt":
        return text.strip()
    try:
        obj = parse_json(text)
    except ValueError:
        return None
    value = next((obj[k] for k in TEXT_KEYS if k in obj), None) if isinstance(obj, dict) else None
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
        packer = next((n for m, n in COMPRESSED_MAGIC if magic.startswith(m)), None)
        if packer:
            return [], [Skip(shard, f"{packer}-compressed tar is not supported (members must be "
                                    "seekable); decompress it to a plain .tar")]
        tf = tarfile.open(shard, mode="r:")
    except TAR_ERRORS as exc:
        return [], [Skip(shard, f"{bad}: {brief(exc)}")]
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
        except TAR_ERRORS as exc:
            kept = "; complete samples before the damage are kept" if groups else ""
            skips.append(Skip(shard, f"{bad}: {brief(exc)}{kept}"))
        shard_name = os.path.basename(shard)
        for key, members in groups.items():
            suffix = _pick(list(members), IMAGE_PRIORITY, IMAGE_EXTENSIONS)
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
