"""GCompris pictures (real Debian package) and the Qt resource reader they come out of."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest

from diffrep.datasets.gcompris import caption_of
from diffrep.datasets.rcc import read_rcc
from diffrep.errors import DiffrepError


def _write_rcc(path: Path, files: dict[str, bytes], version: int = 3) -> None:
    """A Qt resource archive laid out as Qt's rcc tool lays it out: names, data, a breadth-first tree."""
    names, data, tree = bytearray(), bytearray(), []
    name_at: dict[str, int] = {}

    def name_offset(n: str) -> int:
        if n not in name_at:
            name_at[n] = len(names)
            names.extend(struct.pack(">HI", len(n), 0) + n.encode("utf-16-be"))
        return name_at[n]

    root: dict = {}
    for p, blob in files.items():
        node = root
        for part in p.split("/")[:-1]:
            node = node.setdefault(part, {})
        node[p.split("/")[-1]] = blob
    queue = [("", root)]
    tree.append(None)  # the root, filled below
    i = 0
    while i < len(queue):
        name, node = queue[i]
        first = len(tree)
        for child, value in sorted(node.items()):
            tree.append((child, value))
            if isinstance(value, dict):
                queue.append((child, value))
        queue[i] = (name, node, first)
        i += 1
    firsts = {id(q[1]): q[2] for q in queue}
    rows = []
    for idx, entry in enumerate(tree):
        name, value = ("", root) if entry is None else entry
        if isinstance(value, dict):
            rows.append(struct.pack(">IHII", name_offset(name) if idx else 0, 2, len(value), firsts[id(value)]))
        else:
            compressed = name.endswith(".z")
            payload = struct.pack(">I", len(value)) + zlib.compress(value) if compressed else value
            rows.append(struct.pack(">IHHHI", name_offset(name), 1 if compressed else 0, 0, 0, len(data)))
            data.extend(struct.pack(">I", len(payload)) + payload)
        if version > 1:
            rows[-1] += b"\0" * 8
    body_tree = b"".join(rows)
    header = 24 if version == 3 else 20
    data_off, names_off = header, header + len(data)
    tree_off = names_off + len(names)
    head = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off) + (b"\0\0\0\0" if version == 3 else b"")
    path.write_bytes(head + bytes(data) + bytes(names) + body_tree)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_reader_reads_nested_plain_and_compressed_files(tmp_path, version):
    files = {"a/b/plain.txt": b"hello", "a/b/packed.z": b"x" * 1000, "a/c.bin": bytes(range(256)), "top": b"t"}
    _write_rcc(tmp_path / "t.rcc", files, version)
    assert read_rcc(tmp_path / "t.rcc") == files


def test_rcc_reader_refuses_other_files(tmp_path):
    (tmp_path / "x.rcc").write_bytes(b"PK\x03\x04 not a resource archive")
    with pytest.raises(DiffrepError, match="not a Qt resource archive"):
        read_rcc(tmp_path / "x.rcc")
    _write_rcc(tmp_path / "t.rcc", {"a/b": b"12345678"})
    (tmp_path / "t.rcc").write_bytes((tmp_path / "t.rcc").read_bytes()[:30])
    with pytest.raises(DiffrepError, match="damaged"):
        read_rcc(tmp_path / "t.rcc")


def test_captions_from_file_names():
    assert caption_of("screwDriver2") == "screw driver"
    assert caption_of("Van_Gogh_The_Night_Cafe_0") == "van gogh the night cafe"
    assert caption_of("hammer9") == "hammer"


def test_gcompris_sets_fetch_and_group(tmp_path):
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get / dpkg-deb unavailable")
    from diffrep.datasets import get_dataset, read_captions, read_groups
    from diffrep.decode import decode_image

    photos = get_dataset("gcompris-photos", cache=tmp_path)
    files = sorted(p for p in (photos / "images").rglob("*") if p.is_file())
    groups, captions = read_groups(photos), read_captions(photos)
    assert len(files) >= 200 and set(groups) == set(captions) == {str(f.relative_to(photos / "images")) for f in files}
    assert "GPL" in (photos / "LICENSE").read_text()
    hammers = {groups[f][0] for f in groups if captions[f] == "hammer"}
    assert len(hammers) == 1 and sum(captions[f] == "hammer" for f in captions) >= 5  # one family
    assert min(min(decode_image(f.read_bytes()).shape[:2]) for f in files[::10]) >= 96
    drawings = get_dataset("gcompris-drawings", cache=tmp_path)
    assert len(list((drawings / "images").rglob("*.webp"))) >= 100
    groups, captions = read_groups(drawings), read_captions(drawings)
    family = {captions[f]: groups[f][0] for f in groups}
    assert family["brown"] == family["orange color"] == family["red"] != family["orange"]  # the fruit is not a can
    assert family["arm"] == family["nose"] and family["boy"] == family["girl"] and family["one"] == family["two"]
    assert family["bear"] != family["cat"]
