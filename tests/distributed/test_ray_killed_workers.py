"""Ray worker processes killed (SIGKILL) while `--engine ray` indexes: the decoding task is run again and the
embedding actor restarted with its batch, so the run still finishes with the local engine's index. A process is
found by the title Ray gives it while it runs a task (``ray::MapBatches(_decode)``; an idle worker is
``ray::IDLE``), so each kill lands on a task at work."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from diffrep.distributed.ray_index import embed_chunks, index_shards  # noqa: E402
from diffrep.indexing.build import index  # noqa: E402
from diffrep.indexing.load import open_index  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's workers in /proc")


def _title(pid: Path) -> str:
    try:
        return pid.joinpath("cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def killing(*titles: str) -> Iterator[dict[str, int]]:
    """Kill the first process seen running under each of ``titles`` (Ray's process titles); yields
    {title: pid killed}, filled as the kills happen."""
    killed: dict[str, int] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and len(killed) < len(titles):
            for p in Path("/proc").iterdir():
                title = _title(p) if p.name.isdigit() else ""
                if title in titles and title not in killed:
                    os.kill(int(p.name), signal.SIGKILL)
                    killed[title] = int(p.name)
            stop.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


def _same_index(a: Path, b: Path, n: int) -> None:
    ia, ib = open_index(a), open_index(b)
    assert ia.column("id") == ib.column("id") and len(ia) == n
    np.testing.assert_allclose(ia.vectors(np.arange(n)), ib.vectors(np.arange(n)), atol=1e-6)


def test_a_killed_decoder_and_embedder_are_replaced(cluster, emoji_files, tmp_path, monkeypatch):
    from diffrep.distributed import ray_data

    monkeypatch.setattr(ray_data, "DECODE_BATCH", 30)  # two long decoding tasks: each is caught at work
    src = tmp_path / "imgs"
    src.mkdir()
    for f in emoji_files[:60]:
        (src / f.name).write_bytes(f.read_bytes())
    engine = functools.partial(embed_chunks, address=cluster, workers=2)
    with killing("ray::MapBatches(_decode)", "ray::MapBatches(_Embed)") as killed:
        r = index(src, tmp_path / "ray", chunk_size=8, batch_size=4, embed=engine)
    assert len(killed) == 2, f"killed only {killed}"
    assert (r.images, r.added) == (60, 60)
    index(src, tmp_path / "local", chunk_size=8)
    _same_index(tmp_path / "ray", tmp_path / "local", 60)


def test_a_shard_whose_task_dies_is_scanned_again(cluster, emoji_files, tmp_path):
    (tmp_path / "sh").mkdir()
    shards = []
    for k in range(3):
        shards.append(str(tmp_path / "sh" / f"s-{k}.tar"))
        with tarfile.open(shards[-1], "w", format=tarfile.USTAR_FORMAT) as tf:
            for f in emoji_files[k * 20:k * 20 + 20]:
                tf.add(f, arcname=f.name)
    engine = functools.partial(index_shards, address=cluster, workers=2)
    with killing("ray::MapBatches(_plan_and_decode)") as killed:
        r = index(shards, tmp_path / "ray", chunk_size=8, shards=engine)
    assert len(killed) == 1, "no shard task was caught running"
    assert (r.images, r.added) == (60, 60)
    index(shards, tmp_path / "local", chunk_size=8)
    _same_index(tmp_path / "ray", tmp_path / "local", 60)
