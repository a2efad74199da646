"""Tar shards indexed shard by shard (``indexing/shards.py``) on real emoji with real SSCD: the vectors of a folder
index of the same images, re-runs that embed nothing, a rewritten shard whose removed member leaves the index,
a run killed between shards that resumes with the shards it had not finished, chunks cut to --chunk-size that
name their shard, and a same-named shard from another folder refused."""
from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_images
from diffrep.errors import SourceError
from diffrep.indexing import index, open_index
from diffrep.indexing.shards import prefix_range, shard_ledger
from diffrep.indexing.store import IndexDir


def _shard(path: Path, files: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for f in files:
            tf.add(f, arcname=f.name)
            info = tarfile.TarInfo(f.stem + ".txt")
            text = f"caption of {f.stem}".encode()
            info.size = len(text)
            tf.addfile(info, io.BytesIO(text))
    return path


def _by_name(path: Path) -> dict[str, np.ndarray]:
    idx = open_index(path)
    return {i.rsplit("/", 1)[-1]: v for i, v in zip(idx.column("id"), idx.vectors(np.arange(len(idx))))}


@pytest.fixture()
def shards(tmp_path, emoji_files) -> list[Path]:
    return [_shard(tmp_path / "shards" / f"train-{k:03d}.tar", emoji_files[k * 6:k * 6 + 6]) for k in range(3)]


def test_shards_give_the_folder_index_and_rerun_incrementally(tmp_path, emoji_files, sscd, shards):
    folder = copy_images(emoji_files[:18], tmp_path / "folder")
    index(folder, tmp_path / "folder.idx", descriptor=sscd)
    r = index([str(s) for s in shards], tmp_path / "idx", descriptor=sscd, chunk_size=4)
    assert (r.images, r.added, r.unchanged, r.removed) == (18, 18, 0, 0)
    want, got = _by_name(tmp_path / "folder.idx"), _by_name(tmp_path / "idx")
    assert sorted(want) == sorted(got)
    for name, v in want.items():
        np.testing.assert_allclose(got[name], v, atol=1e-6)
    loaded = open_index(tmp_path / "idx")
    assert loaded.column("id")[0] == f"train-000.tar/{emoji_files[0].name}"
    assert loaded.column("caption")[0] == f"caption of {emoji_files[0].stem}"
    idx = IndexDir(tmp_path / "idx")
    ledger = shard_ledger(idx)  # 6 images a shard, chunks of at most 4 rows: two chunks per shard
    assert sorted(ledger) == sorted(str(s) for s in shards) and all(len(c) == 2 for c in ledger.values())

    r2 = index([str(s) for s in shards], tmp_path / "idx", descriptor=sscd, chunk_size=4)
    assert (r2.images, r2.added, r2.unchanged) == (18, 0, 18)

    # shard 1 rewritten without its last image: its members embedded again, the dropped one leaves the index
    _shard(shards[1], emoji_files[6:11])
    os.utime(shards[1], (time.time() + 5, time.time() + 5))
    r3 = index([str(s) for s in shards], tmp_path / "idx", descriptor=sscd, chunk_size=4)
    assert (r3.images, r3.added, r3.unchanged, r3.removed) == (17, 5, 12, 1)
    assert emoji_files[11].name not in _by_name(tmp_path / "idx")
    ids = open_index(tmp_path / "idx").lookup("id")
    assert prefix_range(ids, "train-001.tar/") == (6, 11) and prefix_range(ids, "train-9.tar/") == (17, 17)


def test_a_run_killed_between_shards_resumes_with_the_rest(tmp_path, sscd, shards):
    def stop_after_first(ev):
        if ev.stage == "embed" and ev.unit == "shard" and ev.done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index([str(s) for s in shards], tmp_path / "idx", descriptor=sscd, progress=stop_after_first)
    assert list(shard_ledger(IndexDir(tmp_path / "idx"))) == [str(shards[0])]
    r = index([str(s) for s in shards], tmp_path / "idx", descriptor=sscd)
    assert (r.images, r.added, r.unchanged) == (18, 12, 6)


def test_a_same_named_shard_from_another_folder_is_refused(tmp_path, emoji_files, sscd, shards):
    index([str(shards[0])], tmp_path / "idx", descriptor=sscd)
    other = _shard(tmp_path / "elsewhere" / "train-000.tar", emoji_files[:6])
    with pytest.raises(SourceError, match="already holds"):
        index([str(other)], tmp_path / "idx", descriptor=sscd)
