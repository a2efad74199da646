"""`--engine ray` on a cluster of two nodes (two raylets on this machine, one CPU each): the embedding actors
leave room for decoding on some node however many of them there are (filling every node's CPUs made the
pipeline wait forever for decoded rows), and the index is the local engine's."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from diffrep.descriptors import get_descriptor  # noqa: E402
from diffrep.indexing.build import index  # noqa: E402
from diffrep.indexing.load import open_index  # noqa: E402

def test_actors_leave_each_cluster_room_to_decode(two_node_cluster, emoji_files, tmp_path: Path):
    from diffrep.distributed.ray_data import DECODE_CPUS, actor_cpus
    from diffrep.distributed.ray_index import connect

    r = connect(two_node_cluster)
    assert len([n for n in r.nodes() if n["Alive"]]) == 2
    for workers in (1, 2, 8):
        free = 2 - workers * actor_cpus(r, workers, "cpu")
        assert free >= 2 * DECODE_CPUS - 1e-9  # some node keeps a decoding task's share
    r.shutdown()

    src = tmp_path / "imgs"
    src.mkdir()
    for f in emoji_files[:40]:
        (src / f.name).write_bytes(f.read_bytes())
    index(src, tmp_path / "local")
    for workers, each in (("2", "0.75"), ("8", "0.19")):
        out = tmp_path / f"ray-{workers}"
        run = subprocess.run([sys.executable, "-m", "diffrep", "index", str(src), "--out", str(out),
                              "--engine", "ray", "--address", two_node_cluster, "--num-workers", workers],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.splitlines()[0] == (
            f"Using the Ray cluster at {two_node_cluster}: 2 nodes, 2 CPUs, 0 GPUs; {workers} embedding actors of "
            f"{each} CPU each, decoding tasks of 0.25 CPU.")
        ours, local = open_index(out), open_index(tmp_path / "local")
        assert ours.column("id") == local.column("id") and len(ours) == 40
        np.testing.assert_allclose(ours.vectors(np.arange(40)), local.vectors(np.arange(40)), atol=1e-6)


def test_a_node_with_other_diffrep_code_is_refused(two_node_cluster, images, monkeypatch):
    """Every task and actor compares its diffrep source digest with the driver's: a driver whose code differs
    (here: its digest replaced) gets one error naming the cause instead of vectors computed by other code."""
    from diffrep.distributed import ray_data, ray_index, ray_rows
    from diffrep.errors import DiffrepError
    from diffrep.sources import open_source

    r = ray_index.connect(two_node_cluster)
    records, _ = open_source(images).scan()
    d = get_descriptor("sscd")
    assert len(list(ray_data.embedded(r, records[:4], d, batch_size=None, max_pixels=10**8, workers=2))) >= 1
    other = "0" * 64
    monkeypatch.setattr(ray_data, "code_digest", lambda: other)
    with pytest.raises(DiffrepError, match="is not the driver's .* install the same diffrep on every node"):
        list(ray_data.embedded(r, records[:4], d, batch_size=None, max_pixels=10**8, workers=2))

    def rows(readers, cand, paths, workers):  # defined here so that it travels by value to the workers
        return len(readers)

    args = (rows, [1, 2], np.zeros((2, 1), np.int64), {0: "x"})
    assert ray_rows.map_rows(*args, address=two_node_cluster, workers=1) == [2]
    monkeypatch.setattr(ray_rows, "code_digest", lambda: other)
    with pytest.raises(DiffrepError, match="is not the driver's"):
        ray_rows.map_rows(*args, address=two_node_cluster, workers=1)
