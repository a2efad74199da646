"""A rerun that only adds images grows the previous IVF index instead of rebuilding it (``indexing.extend``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from diffrep.indexing import index, open_index
from diffrep.indexing.extend import shifted
from diffrep.indexing.store import IndexDir

FAST = "sscd-fast"  # the index mechanics are the same for any descriptor; this one embeds 3x faster


def test_old_rows_move_down_by_the_added_rows_before_them() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n_old, n_add = int(rng.integers(0, 40)), int(rng.integers(0, 15))
        is_added = rng.permutation(np.r_[np.zeros(n_old, bool), np.ones(n_add, bool)])
        added = np.flatnonzero(is_added)
        old_rows_now = np.flatnonzero(~is_added)  # where old row o sits in the new order
        assert np.array_equal(shifted(np.arange(n_old), added), old_rows_now)


def _link(files: list[Path], folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f)


def _exhaustive(ix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every tenth stored vector searched with every cell probed (the IVF search is then exact), and the
    same top 5 by brute force over the manifest's vectors."""
    import faiss

    faiss.extract_index_ivf(ix.faiss).nprobe = faiss.extract_index_ivf(ix.faiss).nlist
    every = ix.vectors(np.arange(len(ix)))
    q = every[::10]
    scores, ids = ix.faiss.search(q, 5)
    exact = q @ every.T
    return scores, ids, np.sort(exact, axis=1)[:, ::-1][:, :5]


def _grown(emoji_files: list[Path], tmp_path: Path, on_disk: bool):
    """An IVF index of 1,000 emoji, then 100 more whose names sort between theirs: (files, source folder,
    index folder, the first generation's index, the grown one's), checked to be an extension."""
    import faiss

    src, out = tmp_path / "src", tmp_path / "idx"
    files = sorted(emoji_files[:1400], key=lambda f: f.name)
    later = files[:1100:11]  # 100 images whose names sort between the first 1,000's
    _link([f for f in files[:1100] if f not in later], src)
    index(src, out, descriptor=FAST, index_type="ivf", on_disk=on_disk)
    before = open_index(out)
    p0 = before.meta["index"]
    assert p0["type"] == "ivf" and p0["trained_for"] == 1000 and "extended" not in p0
    centroids = faiss.extract_index_ivf(before.faiss).quantizer.reconstruct_n(0, p0["nlist"])

    _link(later, src)  # 10% of the trained size
    r = index(src, out, descriptor=FAST, index_type="ivf", on_disk=on_disk)
    assert (r.added, r.unchanged) == (100, 1000)
    ix = open_index(out)
    p = ix.meta["index"]
    assert p["extended"] == {"from_generation": before.meta["generation"], "added": 100, "since_training": 100}
    assert p["trained_for"] == 1000 and "edited_copy_recall_at_1" in p and "self_recall_at_1" in p
    assert np.array_equal(faiss.extract_index_ivf(ix.faiss).quantizer.reconstruct_n(0, p["nlist"]), centroids)
    assert ix.faiss.ntotal == len(ix) == 1100
    # every id names the manifest row whose vector it holds: an exhaustive search is the brute-force one
    scores, ids, exact = _exhaustive(ix)
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    own = ix.vectors(np.arange(len(ix)))
    np.testing.assert_allclose(np.einsum("qd,qkd->qk", own[::10], own[ids]), scores, atol=1e-5)
    assert ((ids[:, 0] == np.arange(0, 1100, 10)) | (scores[:, 0] > 0.9999)).all()  # itself, or a twin
    return files, src, out, before, ix


def test_added_images_extend_the_trained_index(emoji_files: list[Path], tmp_path: Path) -> None:
    files, src, out, _, ix = _grown(emoji_files, tmp_path, on_disk=False)

    # a replaced image (same name, other picture) changes an old row: rebuilt and trained again
    victim = src / files[1].name
    victim.unlink()
    victim.symlink_to(files[-1])
    index(src, out, descriptor=FAST, index_type="ivf")
    p = open_index(out).meta["index"]
    assert "extended" not in p and p["trained_for"] == 1100

    # growth past GROWTH_LIMIT of the trained size: rebuilt and trained again
    _link(files[1100:1400], src)
    index(src, out, descriptor=FAST, index_type="ivf")
    ix = open_index(out)
    p = ix.meta["index"]
    assert "extended" not in p and p["trained_for"] == len(ix) == ix.faiss.ntotal


def test_an_on_disk_index_is_extended_into_the_new_list_file(emoji_files: list[Path], tmp_path: Path) -> None:
    from diffrep.indexing import ondisk

    _, _, out, before, ix = _grown(emoji_files, tmp_path, on_disk=True)
    assert ondisk.is_on_disk(ix.faiss) and ix.meta["index"]["on_disk"]
    gen = ix.meta["generation"]
    current = IndexDir(out).faiss_path(gen)  # the previous generation's index and list file are removed
    assert sorted(out.glob("index-*")) == [current, ondisk.data_path(current)]
    assert ix.meta["index"]["on_disk"] == ondisk.data_path(current).name
    assert not list(out.glob(ondisk.SCRATCH_PREFIX + "*"))  # the shard folder is gone


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_on_disk_extension_gives_the_in_memory_lists(tmp_path: Path) -> None:
    """``ondisk.extend_on_disk`` (old lists renumbered and copied, added vectors through shard files) leaves
    every cell with the ids and codes, in the order, that renumbering and adding in memory leave."""
    import faiss

    from diffrep.indexing import ondisk
    from diffrep.indexing.extend import renumber

    x = _unit_rows(3000, 32, 1)
    is_added = np.zeros(3000, bool)
    is_added[np.random.default_rng(2).choice(3000, 400, replace=False)] = True
    added = np.flatnonzero(is_added)
    trained = faiss.IndexIVFPQ(faiss.IndexFlatIP(32), 32, 16, 8, 6, faiss.METRIC_INNER_PRODUCT)
    trained.train(x)
    old = ondisk.fill_on_disk(faiss.clone_index(trained), [x[~is_added]], tmp_path / "index-1.ivfdata", shard=1000)
    faiss.write_index(old, str(tmp_path / "index-1.faiss"))
    del old
    old = ondisk.read(tmp_path / "index-1.faiss")
    batches = [x[added[:250]], x[added[250:]]]
    files = []

    def shards(empty, scratch):  # three shard files
        files.extend(ondisk.fill_shards(empty, batches, scratch, shard=150, ids=added))
        return files

    grown = ondisk.extend_on_disk(old, ondisk.trained_empty(old), lambda ids: shifted(ids, added), shards,
                                  tmp_path / "index-2.ivfdata")
    assert len(files) == 3
    in_memory = faiss.clone_index(trained)
    in_memory.add(x[~is_added])
    renumber(in_memory, added)
    in_memory.add_with_ids(x[added], added)
    assert ondisk.is_on_disk(grown) and grown.ntotal == in_memory.ntotal == 3000
    a, b = ondisk.faiss_lists(grown), in_memory.invlists
    for cell in range(16):
        n = a.list_size(cell)
        assert n == b.list_size(cell)
        assert np.array_equal(faiss.rev_swig_ptr(a.get_ids(cell), n), faiss.rev_swig_ptr(b.get_ids(cell), n))
        codes_a, codes_b = (faiss.rev_swig_ptr(x.get_codes(cell), n * 6) for x in (a, b))
        assert np.array_equal(codes_a, codes_b)
    faiss.write_index(grown, str(tmp_path / "index-2.faiss"))
    del grown
    reread = ondisk.read(tmp_path / "index-2.faiss")  # the index file names its own list file
    reread.nprobe = in_memory.nprobe = 16
    assert np.array_equal(reread.search(x[::7], 10)[1], in_memory.search(x[::7], 10)[1])


def test_renumbered_ivfpq_lists_search_like_a_fresh_fill() -> None:
    """An IVF-PQ index filled with the old rows, renumbered and given the added rows searches exactly like
    the same trained index filled with every row in the new order."""
    import faiss

    from diffrep.indexing.extend import renumber

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    is_added = np.zeros(2000, bool)
    is_added[rng.choice(2000, 300, replace=False)] = True
    added = np.flatnonzero(is_added)
    trained = faiss.IndexIVFPQ(faiss.IndexFlatIP(32), 32, 16, 8, 8, faiss.METRIC_INNER_PRODUCT)
    trained.train(x)
    grown, fresh = faiss.clone_index(trained), faiss.clone_index(trained)
    grown.add(x[~is_added])  # ids 0..1699: the old rows
    renumber(grown, added)
    grown.add_with_ids(x[added], added)
    fresh.add(x)
    for ix in (grown, fresh):
        ix.nprobe = 16
    d1, i1 = grown.search(x[::7], 10)
    d2, i2 = fresh.search(x[::7], 10)
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    assert np.array_equal(i1, i2)
