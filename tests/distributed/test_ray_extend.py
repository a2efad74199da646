"""A rerun with `--engine ray` that only adds images extends the previous IVF index with the added vectors
assigned and encoded in Ray tasks (``RayFill.into`` / ``RayFill.shards``): the same index as the local engine's
extension, lists in memory or on disk."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from diffrep.distributed.ray_index import fill_ivf  # noqa: E402
from diffrep.indexing import ondisk  # noqa: E402
from diffrep.indexing.build import index  # noqa: E402
from diffrep.indexing.load import open_index  # noqa: E402

FAST = "sscd-fast"  # the index mechanics are the same for any descriptor; this one embeds 3x faster


def _lists(ix) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each cell's ids and codes."""
    import faiss

    lists = ondisk.faiss_lists(ix.faiss)
    out = []
    for cell in range(lists.nlist):
        n = lists.list_size(cell)
        out.append((faiss.rev_swig_ptr(lists.get_ids(cell), n).copy(),
                    faiss.rev_swig_ptr(lists.get_codes(cell), n * lists.code_size).copy()))
    return out


def test_an_extension_on_ray_is_the_local_extension(cluster, emoji_files, tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    files = sorted(emoji_files[:1100], key=lambda f: f.name)
    later = files[::11]  # 100 images whose names sort between the others'
    for f in files:
        if f not in later:
            (src / f.name).symlink_to(f)
    index(src, tmp_path / "memory", descriptor=FAST, index_type="ivf")
    shutil.copytree(tmp_path / "memory", tmp_path / "disk")
    index(src, tmp_path / "disk", descriptor=FAST, index_type="ivf", on_disk=True)  # same chunks, lists on disk
    for name in ("memory", "disk"):
        shutil.copytree(tmp_path / name, tmp_path / f"{name}-ray")
    for f in later:
        (src / f.name).symlink_to(f)
    fill = functools.partial(fill_ivf, address=cluster, workers=2, shard=40)  # three tasks for 100 vectors
    for name, on_disk in (("memory", False), ("disk", True)):
        local = index(src, tmp_path / name, descriptor=FAST, index_type="ivf", on_disk=on_disk)
        on_ray = index(src, tmp_path / f"{name}-ray", descriptor=FAST, index_type="ivf", on_disk=on_disk,
                       fill=fill)
        assert (local.added, on_ray.added) == (100, 100)
        a, b = open_index(tmp_path / name), open_index(tmp_path / f"{name}-ray")
        assert a.meta["index"]["extended"]["added"] == b.meta["index"]["extended"]["added"] == 100
        assert ondisk.is_on_disk(a.faiss) == ondisk.is_on_disk(b.faiss) == on_disk
        assert a.faiss.ntotal == b.faiss.ntotal == 1100
        for (ids_a, codes_a), (ids_b, codes_b) in zip(_lists(a), _lists(b)):
            assert np.array_equal(ids_a, ids_b) and np.array_equal(codes_a, codes_b)
