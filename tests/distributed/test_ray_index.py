"""`diffrep index` and `diffrep audit` with `--engine ray` on a real local Ray cluster started here (`ray start
--head --num-cpus 2`, stopped at the end): the same ids and vectors as the local engine, incremental re-runs,
resumption after a job dies between chunks, a fast failure on an unreachable address, IVF indexes filled in
shards by Ray tasks identical to those one process fills, the audit's per-image stages (verification,
window search, object matching) in Ray tasks giving one process's results, and the Ray Data pipeline itself:
decoding tasks apart from the embedding actors, the local engine's vectors, hashes, sizes and skip reasons, and a
driver killed while batches stream in keeping the chunks it committed."""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from diffrep.cli import main  # noqa: E402
from diffrep.distributed import ray_data  # noqa: E402
from diffrep.distributed.ray_index import connect, embed_chunks, fill_ivf  # noqa: E402
from diffrep.embedding import embed_records  # noqa: E402
from diffrep.indexing.build import index  # noqa: E402
from diffrep.indexing.load import open_index  # noqa: E402
from diffrep.indexing import faiss_index, ondisk  # noqa: E402
from diffrep.sources import open_source  # noqa: E402


def _vectors(path: Path) -> tuple[list[str], np.ndarray]:
    idx = open_index(path)
    return idx.column("id"), idx.vectors(np.arange(len(idx)))


def test_ray_engine_builds_the_local_index(cluster, images, tmp_path, emoji_files, capsys):
    assert main(["index", str(images), "--out", str(tmp_path / "local"), "--chunk-size", "8", "-q"]) == 0
    assert main(["index", str(images), "--out", str(tmp_path / "ray"), "--chunk-size", "8", "--engine", "ray",
                 "--address", cluster, "--num-workers", "2", "-q"]) == 0
    assert "24 embedded now" in capsys.readouterr().out.splitlines()[-1]
    ids_l, v_l = _vectors(tmp_path / "local")
    ids_r, v_r = _vectors(tmp_path / "ray")
    assert ids_l == ids_r and len(ids_r) == 24
    np.testing.assert_allclose(v_l, v_r, atol=1e-6)
    assert (tmp_path / "ray" / "skipped.csv").read_text().count("broken.png") == 1
    for f in emoji_files[24:30]:  # incremental: only the new images are embedded
        shutil.copyfile(f, images / f.name)
    engine = functools.partial(embed_chunks, address=cluster, workers=2)
    r = index(images, tmp_path / "ray", chunk_size=8, embed=engine)
    assert (r.added, r.unchanged, r.images) == (6, 25, 30)


def test_a_job_that_dies_resumes_at_chunk_granularity(cluster, images, tmp_path):
    engine = functools.partial(embed_chunks, address=cluster, workers=1)

    def dies_after_two_chunks(idx, d, todo, **kw):
        engine(idx, d, todo[:16], **kw)
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        index(images, tmp_path / "idx", chunk_size=8, embed=dies_after_two_chunks)
    r = index(images, tmp_path / "idx", chunk_size=8, embed=engine)
    assert r.unchanged == 16 and r.added == 24 - 16 + (r.unchanged - 16)  # the two committed chunks are kept
    assert r.images == 24
    ids, _ = _vectors(tmp_path / "idx")
    assert len(ids) == len(set(ids)) == 24


def _tar(path: Path, files: list[Path]) -> str:
    import tarfile

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for f in files:
            tf.add(f, arcname=f.name)
    return str(path)


def test_tar_shards_are_indexed_one_task_per_shard(cluster, emoji_files, tmp_path, capsys):
    """Each shard is scanned and decoded by a Ray Data task and embedded by the actors (the driver lists no
    member): the local index, and a run that dies after one shard resumes with the others."""
    from diffrep.distributed.ray_index import index_shards
    from diffrep.indexing.shards import shard_ledger
    from diffrep.indexing.store import IndexDir

    (tmp_path / "sh").mkdir()
    shards = [_tar(tmp_path / "sh" / f"s-{k}.tar", emoji_files[k * 8:k * 8 + 8]) for k in range(3)]
    assert main(["index", *shards, "--out", str(tmp_path / "local"), "-q"]) == 0
    assert main(["index", *shards, "--out", str(tmp_path / "ray"), "--engine", "ray", "--address", cluster,
                 "--num-workers", "2", "--chunk-size", "5", "-q"]) == 0
    ids_l, v_l = _vectors(tmp_path / "local")
    ids_r, v_r = _vectors(tmp_path / "ray")
    assert ids_l == ids_r and len(ids_r) == 24 and ids_r[0] == f"s-0.tar/{emoji_files[0].name}"
    np.testing.assert_allclose(v_l, v_r, atol=1e-6)
    assert sorted(shard_ledger(IndexDir(tmp_path / "ray"))) == sorted(shards)
    engine = functools.partial(index_shards, address=cluster, workers=1)

    def dies_after_one_shard(idx, d, paths, **kw):
        engine(idx, d, paths[:1], **kw)
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        index(shards, tmp_path / "resumed", shards=dies_after_one_shard)
    r = index(shards, tmp_path / "resumed", shards=engine)
    assert (r.images, r.added, r.unchanged) == (24, 16, 8)


def test_rewritten_shards_on_ray_give_the_local_index(cluster, emoji_files, tmp_path):
    """A member that is not an image is skipped with the local reason; a shard rewritten with one member dropped
    and one added is embedded again and gets a deleted row, as locally."""
    from diffrep.distributed.ray_index import index_shards

    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "sh").mkdir()
    shards = [_tar(tmp_path / "sh" / f"s-{k}.tar", emoji_files[k * 6:k * 6 + 6]) for k in range(3)]
    _tar(Path(shards[2]), emoji_files[12:18] + [tmp_path / "broken.png"])
    engine = functools.partial(index_shards, address=cluster, workers=2)
    for out, kw in (("local", {}), ("ray", {"shards": engine})):
        first = index(shards, tmp_path / out, chunk_size=4, **kw)
        assert (first.added, first.skipped) == (18, 1)
        _tar(Path(shards[1]), emoji_files[7:12] + [emoji_files[30]])  # the shard's first member left, one came
        again = index(shards, tmp_path / out, chunk_size=4, **kw)
        # a rewritten shard's members are embedded again (its mtime changed); the other shards' 13 are not
        assert (again.added, again.removed, again.unchanged) == (6, 1, 13)
        _tar(Path(shards[1]), emoji_files[6:12])  # back as it was for the other engine
    ids_l, v_l = _vectors(tmp_path / "local")
    ids_r, v_r = _vectors(tmp_path / "ray")
    assert ids_l == ids_r and len(ids_r) == 18 and f"s-1.tar/{emoji_files[30].name}" in ids_r
    np.testing.assert_allclose(v_l, v_r, atol=1e-6)
    skip_l, skip_r = ((tmp_path / o / "skipped.csv").read_text() for o in ("local", "ray"))
    assert skip_l == skip_r and "broken.png" in skip_r


def test_cuda_on_a_cluster_without_gpus_is_refused(cluster, images, tmp_path, capsys):
    code = main(["index", str(images), "--out", str(tmp_path / "idx"), "--engine", "ray", "--address", cluster,
                 "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "the Ray cluster has no GPUs" in err[0]
    assert not (tmp_path / "idx").exists()  # refused before anything was written


RAISES = """
import sys, torch
class Raises(torch.nn.Module):  # passes the loading check (two images), fails on a real batch
    def forward(self, x):
        if x.shape[0] > 2:
            raise RuntimeError("the model broke")
        return x.flatten(1)[:, :16]
torch.jit.script(Raises()).save(sys.argv[1])
"""


def test_a_descriptor_failing_on_a_worker_is_one_error_line(cluster, images, tmp_path):
    """The worker's DescriptorError reaches the user as the local engine's line and exit code (the local one:
    tests/cli/test_reliability.py::test_torchscript_descriptors_that_misbehave), with no Ray traceback or log
    lines."""
    pytest.importorskip("torch")
    (tmp_path / "make.py").write_text(RAISES)
    subprocess.run([sys.executable, str(tmp_path / "make.py"), str(tmp_path / "raises.pt")], check=True, timeout=300)
    r = subprocess.run([sys.executable, "-m", "diffrep", "index", str(images), "--out", str(tmp_path / "idx"),
                        "--descriptor", f"torchscript:{tmp_path / 'raises.pt'}", "-q", "--engine", "ray", "--address",
                        cluster], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 4 and len(lines) == 1, r.stderr
    assert lines[0].startswith("diffrep: error: descriptor 'torchscript:raises.pt' failed on a batch of")
    assert "the model broke" in lines[0] and lines[0].endswith("Check the model file.")


def test_unreachable_address_fails_fast(images, tmp_path, capsys, free_port):
    port = free_port
    code = main(["index", str(images), "--out", str(tmp_path / "x"), "--engine", "ray",
                 "--address", f"127.0.0.1:{port}"])
    assert code != 0 and f"127.0.0.1:{port}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_ray_engine_audits_like_the_local_engine(cluster, images, emoji_files, tmp_path, capsys):
    """The generations and reference images embedded on Ray give the local audit's vectors and verdicts."""
    import csv

    assert main(["index", str(images), "--out", str(tmp_path / "idx"), "-q"]) == 0
    gens, ref = tmp_path / "gens", tmp_path / "ref"
    gens.mkdir()
    ref.mkdir()
    for f in emoji_files[:4] + emoji_files[40:48]:  # four training images among unseen ones
        shutil.copyfile(f, gens / f.name)
    (gens / "broken.png").write_bytes(b"not an image")
    for f in emoji_files[60:100]:
        shutil.copyfile(f, ref / f.name)
    base = ["audit", str(gens), "--index", str(tmp_path / "idx"), "--reference", str(ref), "-q"]
    assert main(base + ["--out", str(tmp_path / "local")]) == 0
    assert main(base + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--address", cluster,
                        "--num-workers", "2"]) == 0

    def verdicts(out: Path) -> dict[str, tuple[str, str]]:
        rows = csv.DictReader(open(out / "matches.csv", encoding="utf-8"))
        return {r["query_id"]: (r["is_replica"], r["train_id"]) for r in rows if r["rank"] == "1"}

    local, remote = verdicts(tmp_path / "local"), verdicts(tmp_path / "ray")
    assert local == remote and sum(v[0] == "True" for v in local.values()) == 4
    s_l = json.loads((tmp_path / "local" / "summary.json").read_text())
    s_r = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert s_r["calibration"]["threshold"] == pytest.approx(s_l["calibration"]["threshold"], abs=1e-5)
    assert (tmp_path / "ray" / "skipped.csv").read_text().count("broken.png") == 1


def test_ivf_filled_in_shards_on_ray_is_the_local_index(cluster, emoji_files, tmp_path):
    import faiss

    src = tmp_path / "many"
    src.mkdir()
    for f in emoji_files[:1000]:
        (src / f.name).symlink_to(f)
    index(src, tmp_path / "idx", index_type="ivf", descriptor="sscd-fast")  # the fill, not the descriptor, is tested
    ix = open_index(tmp_path / "idx")
    assert ix.meta["index"]["type"] == "ivf"
    empty = faiss.clone_index(ix.faiss)
    empty.reset()  # trained, no vectors
    local = faiss.clone_index(empty)
    local.add(ix.vectors(np.arange(len(ix))))
    shards = fill_ivf(ix.dir, ix.manifest, 512, address=cluster, workers=2, shard=300)(faiss.clone_index(empty))
    assert shards.ntotal == local.ntotal == 1000
    assert np.array_equal(faiss.serialize_index(shards), faiss.serialize_index(local))  # same lists, same order
    # on disk: each task writes its shard file beside the list file, the driver merges them there
    target = tmp_path / "lists" / "index-000009.ivfdata"
    target.parent.mkdir()
    disk = fill_ivf(ix.dir, ix.manifest, 512, address=cluster, workers=2, shard=300)(faiss.clone_index(empty), target)
    assert disk.ntotal == 1000 and ondisk.is_on_disk(disk)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # shard files removed
    for a in (local, disk):
        faiss_index.configure(a, ix.meta["index"])
    assert np.array_equal(disk.search(ix.vectors(np.arange(0, 1000, 20)), 5)[1],
                          local.search(ix.vectors(np.arange(0, 1000, 20)), 5)[1])
    # through diffrep.index: the Ray-filled generation searches like the local one
    q = ix.vectors(np.arange(0, 1000, 20))
    before = ix.search(q, 5)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    del meta["build_state"]  # an unchanged index is kept as it is; one without its build record is rebuilt
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    r = index(src, tmp_path / "idx", index_type="ivf", descriptor="sscd-fast",
              fill=functools.partial(fill_ivf, address=cluster, workers=2, shard=300))
    assert (r.index_type, r.added, r.unchanged) == ("ivf", 0, 1000)
    after = open_index(tmp_path / "idx")
    assert after.meta["generation"] == ix.meta["generation"] + 1
    assert after.meta["index"]["nprobe"] == ix.meta["index"]["nprobe"]
    np.testing.assert_allclose(after.search(q, 5)[0], before[0], atol=1e-6)



def test_audit_rows_on_ray_are_the_local_rows(cluster, emoji_files, tmp_path):
    """Verification and object matching of candidate rows, run in Ray tasks of 3 rows each
    (``ray_rows.map_rows``: what `audit --engine ray` does), give the arrays one process computes."""
    from PIL import Image

    from diffrep.auditing.objects import ObjectConfig, ObjectMatches, object_rows
    from diffrep.defaults import DEFAULTS
    from diffrep.distributed.ray_rows import map_rows
    from diffrep.matching.rerank import Reranked, verify_rows
    from diffrep.matching.verify import VerifyConfig

    train = [str(f) for f in emoji_files[:30]]
    gens = list(emoji_files[:3]) + list(emoji_files[300:303])
    scene = Image.open(emoji_files[310]).convert("RGB").resize((256, 256))
    scene.paste(Image.open(emoji_files[7]).convert("RGBA").resize((150, 150)), (60, 80),
                Image.open(emoji_files[7]).convert("RGBA").resize((150, 150)))
    scene.save(tmp_path / "pasted.png")
    gens.append(tmp_path / "pasted.png")
    readers = [functools.partial(Path.read_bytes, Path(g)) for g in gens]
    cand = np.array([[0, 5, 9], [1, -1, 2], [2, 3, 4], [6, 7, 8], [10, 11, -1], [12, 13, 14], [7, 20, 21]])
    mp = DEFAULTS["decode"]["max_pixels"]
    on_ray = functools.partial(map_rows, address=cluster, workers=2, rows_per_task=3)

    job = functools.partial(verify_rows, config=VerifyConfig(), max_pixels=mp)
    local, remote = job(readers, cand, train), Reranked.concat(on_ray(job, readers, cand, train))
    for f in ("scores", "inliers", "mirrored", "pixel"):
        np.testing.assert_array_equal(getattr(local, f), getattr(remote, f))
    assert (local.scores[:3, 0] > 0.9).all() and np.isnan(local.scores[1, 1])  # the training images verify

    job = functools.partial(object_rows, config=ObjectConfig(), max_pixels=mp)
    local_o, remote_o = job(readers, cand, train), ObjectMatches.concat(on_ray(job, readers, cand, train), 0.0)
    for f in ("scores", "query_boxes", "train_boxes", "mirrored"):
        np.testing.assert_array_equal(getattr(local_o, f), getattr(remote_o, f))
    assert local_o.scores[6, 0] > 0.9  # the pasted emoji is found where it was pasted


def test_window_search_on_ray_is_the_local_search(cluster, images, emoji_files, tmp_path):
    """The window search with local-feature candidates (``auditing.partial.region_rows``), run in Ray tasks of 3
    rows that open the index directory themselves, gives the candidates one process finds, with their scores
    within float tolerance: for generations,
    and for training images searched against the rest of the index (their own ids excluded)."""
    from diffrep.auditing.partial import RegionMatches, region_rows, region_search
    from diffrep.decode import load_image
    from diffrep.defaults import DEFAULTS
    from diffrep.descriptors import get_descriptor
    from diffrep.descriptors.regions import RegionConfig, RegionEmbedder
    from diffrep.distributed.ray_rows import map_rows
    from diffrep.indexing.local import LocalConfig, open_local

    assert main(["index", str(images), "--out", str(tmp_path / "idx"), "-q"]) == 0
    idx = open_index(tmp_path / "idx")
    local = open_local(idx, LocalConfig())  # built here, as the audit's driver builds it
    emb = RegionEmbedder(get_descriptor("sscd"), RegionConfig())
    mp, side = DEFAULTS["decode"]["max_pixels"], max(RegionConfig().sizes)
    job = functools.partial(region_rows, root=str(idx.dir.root), generation=int(idx.meta["generation"]), spec="sscd",
                            region_config=RegionConfig(), local_config=LocalConfig(), k=5, local_k=3, max_pixels=mp)
    on_ray = functools.partial(map_rows, address=cluster, workers=2, rows_per_task=3)
    paths = idx.lookup("path")
    for files, own in ((list(emoji_files[:2]) + list(emoji_files[300:302]), None),
                       ([Path(paths[j]) for j in range(3)], np.arange(3))):
        readers = [functools.partial(Path.read_bytes, f) for f in files]
        here = region_search(lambda i: load_image(readers[i], mp, side), len(files), idx, emb, k=5,
                             self_ids=own, local=local, local_k=3, train_vectors=idx.vectors)
        ids = (np.full(len(files), -1) if own is None else own)[:, None]
        there = RegionMatches.concat(on_ray(job, readers, ids, paths), 0.0)
        for f in ("ids", "boxes", "sizes", "local_only"):
            np.testing.assert_array_equal(getattr(here, f), getattr(there, f), err_msg=f)
        for f in ("scores", "votes"):  # one inference thread per worker: sums in another order
            np.testing.assert_allclose(getattr(here, f), getattr(there, f), atol=1e-5, err_msg=f)
        if own is None:
            assert (here.ids[:2, 0] == [idx.column("path").index(str(images / f.name)) for f in emoji_files[:2]]).all()
        else:
            assert not (here.ids == own[:, None]).any()  # a training image is not its own candidate


# ------------------------------------------------------------ the Ray Data pipeline (distributed.ray_data)
def _by_id(batches) -> dict[str, tuple]:
    out = {}
    for b in batches:
        for p, v in zip(b.ok, b.vectors):
            out[p.record.id] = (p.sha256, p.width, p.height, "", v)
        for p in b.skipped:
            out[p.record.id] = (p.sha256, p.width, p.height, p.reason, None)
    return out


def test_decoding_runs_in_tasks_apart_from_the_embedding_actors(cluster, images, sscd, monkeypatch):
    monkeypatch.setattr(ray_data, "DECODE_BATCH", 4)  # several decoding tasks for 25 records
    r = connect(cluster)
    records, _ = open_source(images).scan()
    stats = ray_data.dataset(r, records, sscd, batch_size=None, max_pixels=10**8, workers=2).materialize().stats()
    assert "MapBatches(_decode)->" not in stats  # not fused into the actors' operator
    assert "Operator 1 MapBatches(_decode)" in stats and "Operator 2 MapBatches(_Embed)" in stats

    streamed = list(ray_data.embedded(r, records, sscd, batch_size=None, max_pixels=10**8, workers=2))
    positions = [p for pos, _ in streamed for p in pos]
    assert sorted(positions) == list(range(len(records)))
    got, want = _by_id(b for _, b in streamed), _by_id(embed_records(records, sscd))
    assert got.keys() == want.keys() and len(got) == 25
    for key, (sha, w, h, reason, v) in want.items():
        assert got[key][:4] == (sha, w, h, reason)
        if v is None:
            assert got[key][4] is None and reason  # the file that is not an image, with the local reason
        else:
            np.testing.assert_allclose(got[key][4], v, atol=1e-6)


def test_a_driver_killed_mid_stream_keeps_its_chunks(cluster, images, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_data, "DECODE_BATCH", 4)
    real, received = ray_data.embedded, []

    def dies_after_one_batch(*args, **kw):
        for pos, batch in real(*args, **kw):
            if received:
                raise KeyboardInterrupt("killed")
            received.extend(pos)
            yield pos, batch

    monkeypatch.setattr(ray_data, "embedded", dies_after_one_batch)
    engine = functools.partial(embed_chunks, address=cluster, workers=2)
    with pytest.raises(KeyboardInterrupt):
        index(images, tmp_path / "ray", chunk_size=1, embed=engine)
    monkeypatch.setattr(ray_data, "embedded", real)
    assert 0 < len(received) < 25
    r = index(images, tmp_path / "ray", chunk_size=8, embed=engine)
    assert r.unchanged == len(received) and r.images == 24  # the committed batch is kept, the rest embedded now
    index(images, tmp_path / "local", chunk_size=8)
    ray_idx, local_idx = open_index(tmp_path / "ray"), open_index(tmp_path / "local")
    assert ray_idx.column("id") == local_idx.column("id")
    np.testing.assert_allclose(ray_idx.vectors(np.arange(24)), local_idx.vectors(np.arange(24)), atol=1e-6)


def test_a_task_failure_is_the_workers_own_error(cluster):
    """``job_error`` (used by the embedding pipeline, the IVF fill and the audit's row tasks): a DiffrepError
    raised in a task keeps its class and message; any other failure names the stage."""
    from diffrep.distributed.ray_index import job_error
    from diffrep.indexing.store import DamagedChunkError

    def damaged() -> None:  # defined here so that it travels by value to the worker
        raise DamagedChunkError(Path("/idx"), 7, "is truncated")

    r = connect(cluster)
    with pytest.raises(r.exceptions.RayError) as caught:
        r.get(r.remote(num_cpus=1)(damaged).remote())
    err = job_error(caught.value, "filling the IVF index")
    assert type(err) is DamagedChunkError and err.number == 7
    assert str(err) == str(DamagedChunkError(Path("/idx"), 7, "is truncated"))
    with pytest.raises(r.exceptions.RayError) as caught:
        r.get(r.remote(num_cpus=1)(lambda: 1 / 0).remote())
    err = job_error(caught.value, "stage verify (rows 0-15)", "")
    assert str(err).startswith("stage verify (rows 0-15) failed on Ray (") and "division by zero" in str(err)
    assert "\n" not in str(err)

    def lacks_diffrep() -> None:  # what a node without diffrep raises when it unpickles a task
        raise ModuleNotFoundError("No module named 'diffrep'", name="diffrep")

    with pytest.raises(r.exceptions.RayError) as caught:
        r.get(r.remote(num_cpus=1)(lacks_diffrep).remote())
    assert str(job_error(caught.value, "embedding")) == (
        "embedding failed on Ray: a node lacks the Python module diffrep; install the same diffrep, with its "
        "dependencies, on every node of the cluster")
