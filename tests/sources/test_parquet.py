"""Parquet tables as sources (img2dataset / Hugging Face layouts) on real emoji: bytes and path columns,
captions, keys, URL-only tables explained, rows read back by location, and an index built from a table
holding the same vectors as one built from the folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffrep.errors import SourceError
from diffrep.sources import open_source, read_location


@pytest.fixture(scope="module")
def files(emoji_files) -> list[Path]:
    return emoji_files[::97][:8]


def _bytes_table(files: list[Path], path: Path, *, struct: bool = False, row_group_size: int = 3) -> Path:
    blobs = [f.read_bytes() for f in files]
    image = (pa.array([{"bytes": b, "path": f.name} for b, f in zip(blobs, files)]) if struct
             else pa.array(blobs, pa.binary()))
    t = pa.table({"key": [f"{i:05d}" for i in range(len(files))], "jpg" if not struct else "image": image,
                  "caption": [f.stem for f in files], "url": [f"https://example.invalid/{f.name}" for f in files]})
    pq.write_table(t, path, row_group_size=row_group_size)
    return path


def test_bytes_column_rows_are_records(files, tmp_path):
    table = _bytes_table(files, tmp_path / "part-0.parquet")
    records, skips = open_source(table).scan()
    assert not skips and [r.id for r in records] == [f"part-0.parquet/{i:05d}" for i in range(8)]
    for r, f in zip(records, files):
        assert r.caption == f.stem and r.read() == f.read_bytes()  # across three row groups
        assert read_location(r.path) == f.read_bytes() and r.path.endswith(f"::#{records.index(r)}")


def test_hugging_face_image_struct_and_path_column(files, tmp_path):
    hf = _bytes_table(files, tmp_path / "hf.parquet", struct=True)
    assert [r.read() for r in open_source(hf).scan()[0]] == [f.read_bytes() for f in files]
    (tmp_path / "imgs").mkdir()
    for f in files[:3]:
        shutil.copyfile(f, tmp_path / "imgs" / f.name)
    pq.write_table(pa.table({"file": [f"imgs/{f.name}" for f in files[:4]], "text": ["a", "b", "c", "d"]}),
                   tmp_path / "paths.parquet")
    records, skips = open_source(tmp_path / "paths.parquet").scan()
    assert [r.caption for r in records] == ["a", "b", "c"] and records[0].path == str(tmp_path / "imgs" / files[0].name)
    assert len(skips) == 1 and "does not exist" in skips[0].reason and skips[0].path.endswith("::#3")


def test_url_only_and_broken_tables_are_explained(files, tmp_path):
    pq.write_table(pa.table({"url": ["https://example.invalid/a.png"], "caption": ["x"]}), tmp_path / "urls.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    _bytes_table(files[:2], tmp_path / "good.parquet")
    src = open_source([tmp_path / "urls.parquet", tmp_path / "bad.parquet", tmp_path / "good.parquet"])
    records, skips = src.scan()
    assert len(records) == 2
    why = {Path(s.path).name: s.reason for s in skips}
    assert "does not download" in why["urls.parquet"] and "not a readable Parquet table" in why["bad.parquet"]
    with pytest.raises(SourceError, match="not a folder, a .tar shard or a .parquet table"):
        open_source(files[0])


def test_index_from_a_table_matches_the_folder(files, tmp_path, sscd):
    import diffrep
    from diffrep.indexing.load import open_index

    (tmp_path / "folder").mkdir()
    for f in files:
        shutil.copyfile(f, tmp_path / "folder" / f.name)
    table = _bytes_table(files, tmp_path / "t.parquet")
    diffrep.index(tmp_path / "folder", tmp_path / "i1")
    diffrep.index(table, tmp_path / "i2")
    a, b = open_index(tmp_path / "i1"), open_index(tmp_path / "i2")
    assert len(a) == len(b) == 8
    by_name_a = dict(zip(a.column("id"), a.vectors(np.arange(8))))
    by_name_b = {files[int(i.rsplit("/", 1)[1])].name: v for i, v in zip(b.column("id"), b.vectors(np.arange(8)))}
    assert set(by_name_a) == set(by_name_b)
    for name, v in by_name_a.items():
        np.testing.assert_allclose(v, by_name_b[name], atol=1e-5)
    assert b.column("caption")[0] and b.column("path")[0].split("::#")[0] == str(table)
