"""IVF indexes with their inverted lists on disk: filled in shards, merged on disk, memory-mapped at search; the
same lists and the same search results as an index filled in memory."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from diffrep.errors import DiffrepError, DiffrepIndexError
from diffrep.indexing import faiss_index, ondisk


def _trained(kind: str, x: np.ndarray):
    import faiss

    q = faiss.IndexFlatIP(x.shape[1])
    if kind == "ivf":
        index = faiss.IndexIVFFlat(q, x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(q, x.shape[1], 32, 8, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    index.train(x)
    index.own_fields = True
    q.this.disown()
    return index


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_shards_merged_on_disk_hold_the_lists_an_in_memory_fill_holds(kind, tmp_path):
    import faiss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    memory = _trained(kind, x)
    memory.add(x)
    path = tmp_path / "index-000001.faiss"
    disk = ondisk.fill_on_disk(_trained(kind, x), [x[:5000], x[5000:]], ondisk.data_path(path), shard=3500)
    assert disk.ntotal == 12_000 and ondisk.is_on_disk(disk) and not ondisk.is_on_disk(memory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index-000001.ivfdata"]  # scratch shards removed
    faiss.write_index(disk, str(path))
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in tmp_path.glob("index-*"):
        shutil.move(str(p), moved / p.name)
    loaded = ondisk.read(moved / path.name)  # the list file is found beside the index file
    a, b = faiss.extract_index_ivf(memory), faiss.extract_index_ivf(loaded)
    for cell in range(a.nlist):
        assert np.array_equal(faiss.rev_swig_ptr(a.invlists.get_ids(cell), a.invlists.list_size(cell)),
                              faiss.rev_swig_ptr(b.invlists.get_ids(cell), b.invlists.list_size(cell)))
    for index in (memory, loaded):
        faiss_index.configure(index, {"nprobe": 4})
    d1, i1 = memory.search(x[:300], 5)
    d2, i2 = loaded.search(x[:300], 5)
    assert np.array_equal(i1, i2) and np.allclose(d1, d2)


def test_plan_on_disk_does_not_count_the_lists_against_the_budget():
    p = faiss_index.plan("auto", 1_000_000_000, 512, 8 * 10**9, on_disk=True)
    assert p["type"] == "ivfpq" and "on disk" in p["reason"]  # 72 GB of codes, 8 GB of memory
    assert faiss_index.plan("auto", 1_000_000, 512, 10**9, on_disk=True)["type"] == "ivf"
    assert faiss_index.plan("auto", 10_000, 512, None, on_disk=True)["type"] == "flat"
    for kind in ("flat", "hnsw"):  # asked for by name, an index without inverted lists refuses them
        with pytest.raises(DiffrepError, match=f"a {kind} index has none"):
            faiss_index.plan(kind, 10_000, 512, None, on_disk=True)


def test_index_on_disk_searches_like_the_in_memory_index_and_moves_with_its_folder(emoji_files, tmp_path, capfd):
    from diffrep.cli import main
    from diffrep.indexing import index, open_index

    src = tmp_path / "imgs"
    src.mkdir()
    for f in emoji_files[:1000]:
        (src / f.name).symlink_to(f)
    index(src, tmp_path / "idx", descriptor="sscd-fast", index_type="ivf")  # mechanics: any descriptor
    memory = open_index(tmp_path / "idx")
    q = memory.vectors(np.arange(0, 1000, 25))
    expected = memory.search(q, 5)
    assert main(["index", str(src), "--out", str(tmp_path / "idx"), "--index-type", "ivf", "--on-disk",
                 "--descriptor", "sscd-fast"]) == 0
    capfd.readouterr()
    disk = open_index(tmp_path / "idx")
    assert disk.meta["generation"] == 2 and disk.meta["index"]["on_disk"] == "index-000002.ivfdata"
    assert ondisk.is_on_disk(disk.faiss) and disk.meta["index"]["nprobe"] == memory.meta["index"]["nprobe"]
    got = disk.search(q, 5)
    assert np.array_equal(got[1], expected[1]) and np.allclose(got[0], expected[0], atol=1e-6)
    assert main(["info", str(tmp_path / "idx")]) == 0
    assert json.loads(capfd.readouterr().out)["index"]["on_disk"] == "index-000002.ivfdata"  # FAISS notices kept out
    shutil.copytree(tmp_path / "idx", tmp_path / "copy", symlinks=True)
    shutil.rmtree(tmp_path / "idx")
    assert np.array_equal(open_index(tmp_path / "copy").search(q, 5)[1], expected[1])
    lists = tmp_path / "copy" / "index-000002.ivfdata"
    lists.write_bytes(lists.read_bytes()[:lists.stat().st_size // 2])  # a truncated list file: searching it would read past its end
    with pytest.raises(DiffrepIndexError, match="index-000002.ivfdata is shorter than its index records"):
        open_index(tmp_path / "copy")
    (src / "extra.png").symlink_to(emoji_files[1000])  # a rerun that adds an image rebuilds it, never extends it
    r = index(src, tmp_path / "copy", descriptor="sscd-fast", index_type="ivf", on_disk=True)
    assert r.images == 1001 and "extended" not in open_index(tmp_path / "copy").meta["index"]
    (src / "extra.png").unlink()
    index(src, tmp_path / "copy", descriptor="sscd-fast", index_type="ivf", on_disk=True)
    (tmp_path / "copy" / "index-000004.ivfdata").unlink()
    with pytest.raises(DiffrepIndexError, match="damaged"):
        open_index(tmp_path / "copy")
    (tmp_path / "copy" / ".shards-killed").mkdir()  # what a killed on-disk fill leaves
    (tmp_path / "copy" / ".shards-killed" / "shard-000000.faiss").write_bytes(b"partial")
    # a rebuild in memory removes the old list file
    index(src, tmp_path / "copy", descriptor="sscd-fast", index_type="ivf")
    assert not list((tmp_path / "copy").glob(".shards-*"))
    assert not list((tmp_path / "copy").glob("*.ivfdata"))
    assert np.array_equal(open_index(tmp_path / "copy").search(q, 5)[1], expected[1])
