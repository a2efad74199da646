"""Embedding on Ray Data (`distributed.ray_data`) on the real local cluster: decoding runs in tasks apart from the
embedding actors, each image's vector, hash, size and skip reason is the local engine's, and a driver killed
while batches stream in keeps the chunks it committed; the next run embeds only the rest."""
from __future__ import annotations

import functools

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from diffrep.distributed import ray_data  # noqa: E402
from diffrep.distributed.ray_index import connect, embed_chunks  # noqa: E402
from diffrep.embedding import embed_records  # noqa: E402
from diffrep.indexing.build import index  # noqa: E402
from diffrep.indexing.load import open_index  # noqa: E402
from diffrep.sources import open_source  # noqa: E402


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
