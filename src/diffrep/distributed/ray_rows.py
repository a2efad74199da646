"""The per-image stages of ``diffrep audit --engine ray`` on the cluster: verification of the global
candidates and, with ``--partial``, the window search and the object matching of the region candidates. Each
is rows of work (one generation or reference image with its candidate training images, or its own id for the
window search): the rows are cut into contiguous parts of ``ROWS_PER_TASK``, each part runs in one Ray task
with the very function the local engine runs (``matching.rerank.verify_rows``, ``auditing.partial.region_rows``,
``auditing.objects.object_rows``), and the driver joins the parts in row order, so the results are the local
engine's. The window search opens the index directory, the region embedder and the local index once per worker
process (Ray reuses worker processes across tasks). Tasks read the images themselves: the generation records
travel pickled (their paths and byte loaders), the candidates' training paths travel as a small id -> path
table per part, and every worker must see those files at the same paths (as for the embedding stage).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..progress import ProgressCallback, emit
from .ray_index import ACTOR_CPUS, code_digest, connect, job_error, same_code

ROWS_PER_TASK = 16  # rows per Ray task: a part verifies or matches ROWS_PER_TASK x K candidate pairs
IN_FLIGHT_PER_WORKER = 2  # parts queued per worker, so a worker never waits for the driver


def _run_part(code: str, job: Callable[..., Any], readers: list[Any], cand: np.ndarray, paths: dict[int, str]) -> Any:
    import os

    same_code(code)
    os.environ.setdefault("DIFFREP_THREADS", str(ACTOR_CPUS))
    return job(readers, cand, paths, workers=ACTOR_CPUS)


def map_rows(job: Callable[..., Any], readers: Sequence[Any], cand: np.ndarray, train_paths: Any, *, address: str,
             workers: int, device: str = "auto", stage: str = "rows", rows_per_task: int = ROWS_PER_TASK,
             progress: Optional[ProgressCallback] = None) -> list[Any]:
    """``job(readers[a:b], cand[a:b], paths, workers=...)`` for consecutive parts [a, b) of the rows, each in one
    Ray task (at most ``workers`` at once), where ``paths`` maps the part's candidate ids to their training
    paths (``train_paths[j]``); returns the parts' results in row order. ``device`` is accepted for the
    engine's uniform signature: these stages run on CPUs."""
    del device
    ray = connect(address)
    n = len(readers)
    parts = [(a, min(n, a + rows_per_task)) for a in range(0, n, rows_per_task)]
    task = ray.remote(num_cpus=ACTOR_CPUS)(_run_part)
    job_ref = ray.put(job)
    results: dict[int, Any] = {}
    pending: dict[Any, int] = {}
    nxt = done = 0
    emit(progress, stage, 0, n)
    while nxt < len(parts) or pending:
        while nxt < len(parts) and len(pending) < max(1, workers) * IN_FLIGHT_PER_WORKER:
            a, b = parts[nxt]
            ids = {int(j) for j in np.unique(cand[a:b]) if j >= 0}
            pending[task.remote(code_digest(), job_ref, list(readers[a:b]), cand[a:b],
                                {j: train_paths[j] for j in ids})] = nxt
            nxt += 1
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        number = pending.pop(ref)
        try:
            results[number] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise job_error(exc, f"stage {stage} (rows {parts[number][0]}-{parts[number][1] - 1})", "") from None
        done += parts[number][1] - parts[number][0]
        emit(progress, stage, done, n)
    return [results[i] for i in range(len(parts))]


__all__ = ["ROWS_PER_TASK", "map_rows"]
