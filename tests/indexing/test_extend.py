"""A rerun that only adds images grows the previous IVF index instead of rebuilding it (``indexing.extend``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from diffrep.indexing import index, open_index
from diffrep.indexing.extend import shifted


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


def test_added_images_extend_the_trained_index(emoji_files: list[Path], tmp_path: Path) -> None:
    import faiss

    src, out = tmp_path / "src", tmp_path / "idx"
    files = sorted(emoji_files[:1400], key=lambda f: f.name)
    later = files[:1100:11]  # 100 images whose names sort between the first 1,000's
    _link([f for f in files[:1100] if f not in later], src)
    index(src, out, index_type="ivf")
    before = open_index(out)
    p0 = before.meta["index"]
    assert p0["type"] == "ivf" and p0["trained_for"] == 1000 and "extended" not in p0
    centroids = faiss.extract_index_ivf(before.faiss).quantizer.reconstruct_n(0, p0["nlist"])

    _link(later, src)  # 10% of the trained size
    r = index(src, out, index_type="ivf")
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

    # a replaced image (same name, other picture) changes an old row: rebuilt and trained again
    victim = src / files[1].name
    victim.unlink()
    victim.symlink_to(files[-1])
    index(src, out, index_type="ivf")
    p = open_index(out).meta["index"]
    assert "extended" not in p and p["trained_for"] == 1100

    # growth past GROWTH_LIMIT of the trained size: rebuilt and trained again
    _link(files[1100:1400], src)
    index(src, out, index_type="ivf")
    ix = open_index(out)
    p = ix.meta["index"]
    assert "extended" not in p and p["trained_for"] == len(ix) == ix.faiss.ntotal


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
