"""The next generation's manifest merged from the previous one and the chunks written since (`indexing.merge`):
the file and skipped images that resolving every chunk gives, and a full resolution wherever the previous
generation cannot be trusted (a chunk dropped or replaced, a manifest that is not the one recorded)."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import copy_images
from diffrep.indexing import index, open_index
from diffrep.indexing import manifest as mf
from diffrep.indexing.merge import merge_manifest
from diffrep.indexing.store import IndexDir
from test_manifest import _chunks


@pytest.mark.parametrize("split", [0, 1, 6, 11, 12])
def test_a_merged_manifest_is_the_one_every_chunk_resolves_to(tmp_path, monkeypatch, split):
    monkeypatch.setattr(mf, "BATCH_ROWS", 16)  # many batches in the previous manifest and in the one written
    idx, _ = _chunks(tmp_path / "idx", numbers=range(1, split + 1))
    mf.write_manifest(idx, tmp_path / "prev.arrow", skips_path=tmp_path / "prev.parquet")
    _chunks(tmp_path / "idx", numbers=range(split + 1, 13))
    prev_rows = mf.Manifest(tmp_path / "prev.arrow").num_rows
    n, skips = merge_manifest(idx, tmp_path / "m.arrow", tmp_path / "m.parquet", tmp_path / "prev.arrow",
                              tmp_path / "prev.parquet", split, expected_rows=prev_rows)
    n_all, skips_all = mf.write_manifest(idx, tmp_path / "all.arrow", skips_path=tmp_path / "all.parquet")
    merged, full = mf.Manifest(tmp_path / "m.arrow"), mf.Manifest(tmp_path / "all.arrow")
    assert n == n_all > 0 and merged.table.equals(full.table)
    assert [b.num_rows for b in merged.table.to_batches()][:-1] == [16] * (merged.table.num_rows // 16)
    assert sorted(skips) == sorted(skips_all) and skips
    assert pq.read_table(tmp_path / "m.parquet").equals(pq.read_table(tmp_path / "all.parquet"))


def test_a_previous_manifest_that_is_not_the_recorded_one_is_not_merged(tmp_path):
    idx, _ = _chunks(tmp_path / "idx", numbers=range(1, 7))
    n, _ = mf.write_manifest(idx, tmp_path / "prev.arrow", skips_path=tmp_path / "prev.parquet")
    _chunks(tmp_path / "idx", numbers=range(7, 13))
    args = (idx, tmp_path / "m.arrow", tmp_path / "m.parquet", tmp_path / "prev.arrow", tmp_path / "prev.parquet", 6)
    assert merge_manifest(*args, expected_rows=n + 1) is None  # another row count than its generation recorded
    assert merge_manifest(*args, expected_rows=n, max_rows=10) is None  # more new rows than it resolves at once
    short = mf.Manifest(tmp_path / "prev.arrow").table.drop_columns(["path"])
    with pa.OSFile(str(tmp_path / "short.arrow"), "wb") as sink, pa.ipc.new_file(sink, short.schema) as w:
        w.write_table(short)
    assert merge_manifest(*args[:3], tmp_path / "short.arrow", *args[4:], expected_rows=n) is None
    (tmp_path / "prev.arrow").write_bytes(b"not arrow")
    assert merge_manifest(*args, expected_rows=n) is None
    assert not (tmp_path / "m.arrow").exists() and not (tmp_path / "m.parquet").exists()


def _merged(events) -> bool:
    return any(e.stage == "manifest" and e.message == "merging" for e in events)


def test_a_rerun_merges_unless_a_chunk_was_dropped(emoji_files, tmp_path):
    src = copy_images(emoji_files[:20], tmp_path / "src")
    out = tmp_path / "idx"
    index(src, out, chunk_size=8)
    for f in emoji_files[20:25]:  # five added, two removed, one that is not an image
        shutil.copyfile(f, src / f.name)
    for f in emoji_files[:2]:
        (src / f.name).unlink()
    (src / "broken.png").write_bytes(b"not an image")
    events: list = []
    r = index(src, out, chunk_size=8, progress=events.append)
    assert _merged(events) and (r.added, r.removed, r.images) == (5, 2, 23)
    meta = IndexDir(out).read_meta()
    full = tmp_path / "full.arrow"
    mf.write_manifest(IndexDir(out), full)
    assert mf.Manifest(IndexDir(out).manifest_path(meta["generation"])).table.equals(mf.Manifest(full).table)
    assert sorted(open_index(out).column("id")) == sorted(f.name for f in emoji_files[2:25])
    assert "broken.png" in (out / "skipped.csv").read_text()

    # the highest chunk dropped as damaged and its images embedded again under its number: resolved in full
    last = IndexDir(out).chunk_numbers()[-1]
    np.save(IndexDir(out).chunks_dir / f"c{last:06d}.npy", np.zeros((1, 3), np.float32))
    events.clear()
    r = index(src, out, chunk_size=8, progress=events.append)
    assert r.repaired and not _merged(events) and IndexDir(out).chunk_numbers()[-1] == last
    assert sorted(open_index(out).column("id")) == sorted(f.name for f in emoji_files[2:25])
    for f in emoji_files[25:27]:  # the next rerun merges again, from the generation resolved in full
        shutil.copyfile(f, src / f.name)
    events.clear()
    index(src, out, chunk_size=8, progress=events.append)
    assert _merged(events) and len(open_index(out)) == 25
