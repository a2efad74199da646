"""The embedding stage of ``diffrep index`` on a Ray cluster: chunks of records embedded by an actor pool.

Reading and decoding happen inside the actors (each runs the same threaded decode + batched inference as the
local engine, ``embedding.embed_records``) and the descriptor is loaded once per actor from its stored spec.
Records pickle, so only their ids, paths and byte loaders travel; every worker must see the source at the same
path (a shared filesystem, as on any cluster). The driver writes each finished chunk atomically with the
index's own chunk writer, in the order chunks finish; ids never repeat across chunks of one run, so the order
does not change the index. A killed job loses only the chunks in flight: the next run embeds what no
committed chunk holds.
"""
from __future__ import annotations

import socket
from typing import Any, Optional

import numpy as np

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit

CONNECT_TIMEOUT_S = 10


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DiffrepError("--engine ray needs Ray: pip install 'diffrep[distributed]'") from None
    return ray


def connect(address: str) -> Any:
    """Connect to the Ray cluster at ``address`` (``HOST:PORT``, ``auto`` for the running one) or, for
    ``local``, start an instance in this process; an unreachable address fails fast, naming it."""
    ray = _ray()
    if address not in ("local", "auto"):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except (OSError, ValueError) as exc:
            raise DiffrepError(f"--address {address}: no Ray cluster answers there ({exc}); start one with "
                               "`ray start --head` or give its HOST:PORT") from None
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=None if address == "local" else address, logging_level="ERROR", log_to_driver=False,
                 include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DiffrepError(f"--address {address}: cannot join the Ray cluster ({exc})") from None
    return ray


class _Embedder:
    """A Ray actor: the descriptor, loaded once, embeds whole chunks of records."""

    def __init__(self, spec: str, batch_size: Optional[int], max_pixels: int) -> None:
        from ..descriptors import get_descriptor

        self.d = get_descriptor(spec)
        self.batch_size, self.max_pixels = batch_size, max_pixels

    def embed(self, records: list[Any]) -> tuple[list[dict[str, Any]], np.ndarray, int, int]:
        from ..embedding import embed_records
        from ..indexing.build import batch_rows

        rows: list[dict[str, Any]] = []
        vecs: list[np.ndarray] = []
        ok = skipped = 0
        for batch in embed_records(records, self.d, batch_size=self.batch_size, max_pixels=self.max_pixels):
            rows += batch_rows(batch, ok)
            ok += len(batch.ok)
            vecs.append(batch.vectors)
            skipped += len(batch.skipped)
        v = np.concatenate(vecs) if vecs else np.zeros((0, self.d.dim), np.float32)
        return rows, v, ok, skipped


def embed_chunks(idx: Any, d: Any, todo: list[Any], *, batch_size: Optional[int], chunk_size: int, max_pixels: int,
                 address: str, workers: int, progress: Optional[ProgressCallback] = None) -> tuple[int, int]:
    """Embed ``todo`` into new chunks of ``idx`` on Ray; returns (images embedded, images skipped)."""
    from ..indexing.build import _next_chunk

    ray = connect(address)
    groups = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    emit(progress, "embed", 0, len(todo))
    if not groups:
        return 0, 0
    spec = d.fingerprint().get("spec") or d.name
    actor = ray.remote(num_cpus=1)(_Embedder)
    pool = [actor.remote(spec, batch_size, max_pixels) for _ in range(max(1, min(workers, len(groups))))]
    pending = {pool[i].embed.remote(g): i for i, g in enumerate(groups[:len(pool)])}  # ref -> actor
    queue = groups[len(pool):]
    next_chunk = _next_chunk(idx)
    added = skipped = done = 0
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        who = pending.pop(ref)
        rows, vectors, ok, sk = ray.get(ref)
        idx.write_chunk(next_chunk, rows, vectors)
        next_chunk += 1
        added, skipped, done = added + ok, skipped + sk, done + len(rows)
        emit(progress, "embed", done, len(todo))
        if queue:
            pending[pool[who].embed.remote(queue.pop(0))] = who
    return added, skipped
