"""The index planner under a memory budget, and the self-recall an approximate build reports, on real FAISS
indexes of unit vectors."""
from __future__ import annotations

import numpy as np
import pytest

from diffrep.errors import DiffrepError
from diffrep.indexing import faiss_index


def test_plan_picks_the_first_index_that_fits():
    n, dim = 1_000_000, 512
    assert faiss_index.plan("auto", 10_000, dim)["type"] == "flat"
    assert faiss_index.plan("auto", 10_000, dim, 10**9)["type"] == "flat"  # 20 MB
    p = faiss_index.plan("auto", n, dim, 4 * 10**9)  # 2.06 GB uncompressed
    assert p["type"] == "ivf" and p["estimated_bytes"] <= 4 * 10**9
    p = faiss_index.plan("auto", n, dim, 50 * 10**6)  # 72 MB at 64-byte codes: 32-byte codes (40 MB) fit
    assert (p["type"], p["pq_m"]) == ("ivfpq", 32) and "largest that fits" in p["reason"]
    with pytest.raises(DiffrepError, match="even as 8-byte codes"):
        faiss_index.plan("auto", n, dim, 10**6)
    with pytest.raises(DiffrepError, match="over the --memory-budget"):
        faiss_index.plan("flat", n, dim, 10**9)
    with pytest.raises(DiffrepError, match=r"about 69.63 KB, over the --memory-budget of 10 bytes.*vectors are kept"):
        faiss_index.plan("flat", 34, dim, 10)  # small sizes in their own units, not "0.00 GB"
    assert [faiss_index.size_text(b) for b in (640, 12_000, 2.5e8, 3e9)] == ["640 bytes", "12.00 KB", "250.00 MB",
                                                                            "3.00 GB"]


def test_training_sample_covers_every_ivf_cell_at_scale():
    # 10M vectors: 12,649 IVF cells want 39 training vectors each (493k), more than the 200k floor; a smaller
    # sample made build() fall back to a flat index far over the memory budget
    for kind in ("ivf", "ivfpq"):
        for n in (5_000, 300_000, 10_000_000, 1_000_000_000):
            size = faiss_index.train_size(kind, n)
            assert size <= n and (size == n or size >= faiss_index.min_train(kind, n))
            assert size >= min(n, 39 * faiss_index.ivf_lists(n))
    assert faiss_index.train_size("ivfpq", 10_000_000) == 39 * faiss_index.ivf_lists(10_000_000)


def test_ivfpq_build_reports_self_recall():
    rng = np.random.default_rng(0)
    n, dim = 12_000, 64
    centers = rng.normal(size=(n // 2, dim))
    x = np.repeat(centers, 2, axis=0) + 0.02 * rng.normal(size=(n, dim))  # pairs of near-duplicates
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    choice = faiss_index.plan("auto", n, dim, (16 + 8) * n)
    assert (choice["type"], choice["pq_m"]) == ("ivfpq", 16)
    index, params = faiss_index.build([x[:6000], x[6000:]], n, dim, choice["type"], x, pq_m=choice["pq_m"])
    faiss_index.configure(index, params)
    assert params["pq_m"] == 16
    probe = np.arange(0, n, 12)
    pq_recall = faiss_index.self_recall(index, x[probe], probe)
    flat, _ = faiss_index.build([x], n, dim, "flat")
    assert faiss_index.self_recall(flat, x[probe], probe) == 1.0
    assert 0.3 < pq_recall < 0.95  # 16-byte codes cannot tell a vector from its near-duplicate every time


def test_cli_memory_budget_is_recorded(emoji_files, tmp_path, capsys):
    import json
    import shutil

    from diffrep.cli import main

    (tmp_path / "imgs").mkdir()
    for f in emoji_files[:5]:
        shutil.copyfile(f, tmp_path / "imgs" / f.name)
    assert main(["index", str(tmp_path / "imgs"), "--out", str(tmp_path / "idx"), "--index-type", "auto",
                 "--memory-budget", "1G", "-q"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "idx")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["index"]["type"] == "flat" and "fit the 1.00 GB budget" in meta["index"]["choice"]
    assert meta["index"]["estimated_bytes"] == 5 * 512 * 4
    assert main(["index", str(tmp_path / "imgs"), "--out", str(tmp_path / "idx2"), "--memory-budget", "lots"]) != 0
    assert "give a size such as 16G" in capsys.readouterr().err


def test_ivfpq_candidates_are_rescored_exactly():
    rng = np.random.default_rng(1)
    n, dim = 12_000, 64
    centers = rng.normal(size=(n // 2, dim))
    x = np.repeat(centers, 2, axis=0) + 0.02 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index, params = faiss_index.build([x], n, dim, "ivfpq", x, pq_m=16)
    faiss_index.configure(index, params)
    q = x[::40] + 0.01 * rng.normal(size=(n // 40, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact_ids = np.argmax(q @ x.T, axis=1)
    _, approx = faiss_index.search(index, q, 5)
    scores, ids = faiss_index.search_exact_rerank(index, q, 5, lambda i: x[i])
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, x[ids]), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # sorted, exact
    assert np.mean(ids[:, 0] == exact_ids) > np.mean(approx[:, 0] == exact_ids)
    assert np.mean(ids[:, 0] == exact_ids) > 0.95


def test_ivf_probes_are_raised_until_edited_copies_come_back():
    # unclustered 64-d vectors: the default nprobe (1/32 of the cells) misses many edited copies' cells
    rng = np.random.default_rng(2)
    n, dim = 40_000, 64
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index, params = faiss_index.build([x], n, dim, "ivf", x)
    first = params["nprobe"]
    search = lambda q, k: faiss_index.search(index, q, k)  # noqa: E731
    faiss_index.tune_probes(index, params, search, x, np.arange(n))
    trials = params["nprobe_trials"]
    assert trials[0][0] == first and [t[0] for t in trials] == sorted({t[0] for t in trials})
    assert trials[0][1] < faiss_index.COPY_RECALL_TARGET  # the default alone was not enough here
    cap = int(params["nlist"] * faiss_index.MAX_PROBE_SHARE)
    assert params["edited_copy_recall_at_1"] >= faiss_index.COPY_RECALL_TARGET or params["nprobe"] == cap
    assert params["nprobe"] == trials[-1][0] and params["edited_copy_recall_at_1"] == trials[-1][1]
    # what was recorded is what a search with the stored parameters gets
    q, rows = faiss_index.edited_copies(x)
    faiss_index.configure(index, params)
    assert faiss_index.copy_recall(search, q, x[rows], rows) == params["edited_copy_recall_at_1"]


def test_ivfpq_index_of_real_images_records_tuned_probes(emoji_files, tmp_path):
    # 1,000 real SSCD-fast vectors through diffrep.index: the tuning searches as an opened index does (candidates
    # re-scored from the stored chunk vectors), and the opened index searches with the stored nprobe
    from diffrep.indexing import index, open_index

    src = tmp_path / "imgs"
    src.mkdir()
    for f in emoji_files[:1000]:
        (src / f.name).symlink_to(f)
    index(src, tmp_path / "idx", index_type="ivfpq", memory_budget=10**6, descriptor="sscd-fast")
    ix = open_index(tmp_path / "idx")
    p = ix.meta["index"]
    assert p["type"] == "ivfpq" and p["edited_copy_sample"] == 1000
    assert p["nprobe"] == p["nprobe_trials"][-1][0] and p["edited_copy_recall_at_1"] == p["nprobe_trials"][-1][1]
    assert p["edited_copy_recall_at_1"] >= faiss_index.COPY_RECALL_TARGET or \
        p["nprobe"] == int(p["nlist"] * faiss_index.MAX_PROBE_SHARE)
    import faiss

    assert faiss.extract_index_ivf(ix.faiss).nprobe == p["nprobe"]
    v = ix.vectors(np.arange(0, 1000, 50))
    scores, ids = ix.search(v, 1)
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)  # itself (or an identical emoji), scored exactly
