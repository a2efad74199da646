"""The embedding stages of ``diffrep index`` and ``diffrep audit`` on a Ray cluster: images of a folder embedded on
the Ray Data pipeline (``ray_data``: decoding tasks, an actor pool holding the descriptor; ``embed_chunks`` commits
index chunks, ``embed_set`` hands an audit's generations or reference images back in input order), tar shards and
Parquet tables indexed shard by shard (``index_shards``: a Ray Data task per shard scans it, compares it with the
index and decodes it, the actors embed; the driver never lists their records), and the filling of an IVF index
(``fill_ivf``, a ``RayFill``): Ray tasks each add one shard of the stored vectors to a copy of the trained empty
index, which the driver merges in shard order, so the index is the one a single process fills (with ``--on-disk``
each task writes its shard to a file beside the index and the driver merges the files' lists on disk,
``indexing.ondisk``); a rerun that only adds images has the tasks add just those (``indexing.extend``).

The descriptor is loaded once per actor from its stored spec. Records pickle, so only their ids, paths and byte
loaders travel; every worker must see the source at the same path (a shared filesystem, as on any cluster). The
driver writes each chunk atomically with the index's own chunk writer, in the order the work finishes; ids never
repeat across chunks of one run, so the order does not change the index. A killed job loses only the work not
yet committed: the next run embeds what no committed chunk holds.
"""
from __future__ import annotations

import re
import socket
import sys
from pathlib import Path
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


ACTOR_CPUS = 1  # CPUs Ray reserves per embedding actor; its inference uses as many threads


def job_error(exc: BaseException, what: str,
              then: str = "what was committed is kept: run the same command again") -> DiffrepError:
    """A failed Ray job or task as one error: the ``DiffrepError`` a worker raised (a descriptor that fails on a
    batch, a damaged chunk), with its own message and exit code, found down the exception's causes or, where Ray
    kept only its traceback text, rebuilt from its last line; otherwise ``what`` failed, with the innermost cause
    in one line, and ``then``."""
    from .. import errors

    seen, e = 0, exc
    root: BaseException = exc
    while e is not None and seen < 32:
        if isinstance(e, DiffrepError) and not isinstance(e, _ray().exceptions.RayError):
            return e
        cause = getattr(e, "cause", None)
        root, e, seen = e, (cause if isinstance(cause, BaseException) else e.__cause__), seen + 1
    raised = re.findall(r"^(diffrep(?:\.\w+)*)\.(\w+): (.+)$", str(exc), flags=re.MULTILINE)
    if raised:  # the class as the user would see it locally, or its base in diffrep.errors (same exit code)
        module, name, message = raised[-1]
        kind = getattr(sys.modules.get(module), name, None)
        base = next((c for c in getattr(kind, "__mro__", ()) if c.__module__ == errors.__name__), None)
        if base is not None and issubclass(base, DiffrepError):
            return base(message)
    if re.search(r"No module named '(diffrep|faiss|onnxruntime|pyarrow)[.']", str(exc)):
        missing = re.search(r"No module named '([\w.]+)'", str(exc))
        return DiffrepError(f"{what} failed on Ray: a node lacks the Python module "
                            f"{missing.group(1) if missing else 'diffrep'}; install the same diffrep, with its "
                            "dependencies, on every node of the cluster")
    cause = f"{what} failed on Ray ({type(root).__name__}: {errors.brief(root)})"
    return DiffrepError(f"{cause}; {then}" if then else cause)


_CODE: Optional[str] = None


def code_digest() -> str:
    """sha256 over the names and contents of this diffrep's Python source files (5 ms, once per process): the
    driver passes its own to every Ray task and actor, which compare it with theirs (``same_code``)."""
    global _CODE
    if _CODE is None:
        import hashlib

        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE = h.hexdigest()
    return _CODE


def same_code(driver: str) -> None:
    """On a Ray worker: DiffrepError unless its diffrep is the driver's (``driver``: the driver's
    ``code_digest``). Another version on some node could compute other vectors, or other verdicts, unnoticed."""
    if driver != code_digest():
        raise DiffrepError(f"diffrep on Ray node {socket.gethostname()} is not the driver's (its source files "
                           "differ): install the same diffrep on every node of the cluster")


def gpu_workers(ray: Any, workers: int) -> int:
    """``--device cuda``: at most one actor per GPU of the cluster; DiffrepError when it has none."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus < 1:
        raise DiffrepError("--device cuda: the Ray cluster has no GPUs (start its nodes on GPU machines, or use "
                           "--device cpu)")
    return min(workers, gpus)


def embed_chunks(idx: Any, d: Any, todo: list[Any], *, batch_size: Optional[int], chunk_size: int, max_pixels: int,
                 address: str, workers: int, device: str = "auto",
                 progress: Optional[ProgressCallback] = None) -> tuple[int, int]:
    """Embed ``todo`` into new chunks of ``idx`` on Ray Data (``ray_data.embedded``: decoding tasks, an actor
    pool of ``workers`` embedders); the driver cuts and commits the chunks as batches arrive
    (``indexing.rows.commit_batches``). Returns (images embedded, images skipped)."""
    from ..indexing.rows import commit_batches
    from .ray_data import embedded

    ray = connect(address)
    batches = (b for _, b in embedded(ray, todo, d, batch_size=batch_size, max_pixels=max_pixels, workers=workers,
                                      device=device))
    return commit_batches(idx, d, batches, len(todo), chunk_size=chunk_size, progress=progress)


def index_shards(idx: Any, d: Any, shards: list[str], *, batch_size: Optional[int], chunk_size: int,
                 max_pixels: int, address: str, workers: int, device: str = "auto",
                 progress: Optional[ProgressCallback] = None) -> Any:
    """``index``'s ``shards`` hook: each tar shard or Parquet table scanned, compared and decoded by one Ray Data
    task and embedded by the actor pool (``ray_data.shard_works``); the driver holds only the shard list, the
    chunk numbers of earlier per-shard chunks and the rows of the shards in flight, and commits each shard's
    chunks once all its rows have arrived."""
    from ..indexing import shards as sh
    from .ray_data import shard_works

    ray = connect(address)
    works = shard_works(ray, idx.root, shards, sh.shard_ledger(idx), sh.current_generation(idx), d,
                        batch_size=batch_size, max_pixels=max_pixels, workers=workers, chunk_size=chunk_size,
                        device=device)
    return sh.commit(idx, works, len(shards), progress)


def embed_set(records: list[Any], d: Any, *, batch_size: Optional[int], max_pixels: int, stage: str,
              address: str, workers: int, device: str = "auto",
              progress: Optional[ProgressCallback] = None) -> tuple[list[Any], np.ndarray, list[tuple[str, str]]]:
    """Embed a query or reference set on Ray Data (``embedding.embed_source``'s ``embed`` hook): the embedded
    records and their vectors in input order, and (path, reason) for the images that could not be decoded, in
    input order."""
    from .ray_data import embedded

    ray = connect(address)
    emit(progress, stage, 0, len(records))
    positions: list[int] = []
    vecs: list[np.ndarray] = []
    skips: list[tuple[int, str]] = []
    for pos, batch in embedded(ray, records, d, batch_size=batch_size, max_pixels=max_pixels, workers=workers,
                               device=device):
        n = len(batch.ok)
        positions += pos[:n]
        vecs.append(batch.vectors)
        skips += [(i, p.reason) for i, p in zip(pos[n:], batch.skipped)]
        emit(progress, stage, len(positions) + len(skips), len(records))
    order = np.argsort(np.asarray(positions, np.int64), kind="stable")
    vectors = np.concatenate(vecs)[order] if vecs else np.zeros((0, d.dim), np.float32)
    return ([records[positions[i]] for i in order], vectors,
            [(records[i].path, reason) for i, reason in sorted(skips)])


SHARD_VECTORS = 1_000_000  # stored vectors per IVF fill task


def _fill_shard(code: str, root: str, chunks: np.ndarray, rows: np.ndarray, ids: np.ndarray, empty: np.ndarray,
                dim: int, out: str | None = None) -> Any:
    """A Ray task: the trained empty index ``empty`` (serialized) with the stored vectors at (``chunks``,
    ``rows``) added under the FAISS ids ``ids``, serialized, or written atomically to the file ``out`` (a shared
    filesystem) whose path it returns (a task killed while writing and run again leaves no half-written file
    behind)."""
    from pathlib import Path

    import faiss
    import pyarrow as pa

    from ..fsutil import atomic_path
    from ..indexing.build import gather_vectors
    from ..indexing.store import IndexDir

    same_code(code)
    vectors = gather_vectors(IndexDir(Path(root)), pa.table({"chunk": chunks, "row": rows}), dim)
    index = faiss.deserialize_index(empty)
    index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    if out is None:
        return faiss.serialize_index(index)
    with atomic_path(out) as tmp:
        faiss.write_index(index, str(tmp))
    return out


class RayFill:
    """``index``'s ``fill`` hook on Ray (``fill_ivf`` makes it): adds the manifest's stored vectors (read by the
    tasks from the chunk files, a shared filesystem) to a trained IVF index in shards of ``shard`` vectors, at
    most ``workers`` tasks at a time. Called as ``fill(trained_empty_index, on_disk)`` it fills every row and
    merges the shards in order: in memory, or, with ``on_disk`` (a list file path), from shard files the tasks
    write beside it (``indexing.ondisk``). ``into`` and ``shards`` add only some rows (an extension,
    ``indexing.extend``). FAISS fills on the CPU whatever device the embedding used."""

    def __init__(self, idx: Any, manifest: Any, dim: int, *, address: str, workers: int, shard: int,
                 progress: Optional[ProgressCallback]) -> None:
        self.idx, self.manifest, self.dim = idx, manifest, dim
        self.address, self.workers, self.shard, self.progress = address, workers, shard, progress

    def __call__(self, index: Any, on_disk: Optional[Path] = None) -> Any:
        from ..indexing import ondisk as od

        rows = np.arange(self.manifest.num_rows, dtype=np.int64)
        if on_disk is None:
            return self.into(index, rows, index)
        with od.shard_folder(on_disk) as scratch:
            return od.merge_shards(index, self.shards(index, rows, scratch), on_disk)

    def into(self, index: Any, rows: np.ndarray, empty: Any) -> Any:
        """``index`` (in memory) with the vectors of manifest ``rows`` added under FAISS ids ``rows``, shard by
        shard in order (each cell's entries as adding them in one process leaves them); the tasks fill copies of
        ``empty``, ``index``'s trained empty counterpart (``ondisk.trained_empty``)."""
        import faiss

        for part in self._run(empty, rows, None):
            index.merge_from(faiss.deserialize_index(part), 0)
        return index

    def shards(self, index: Any, rows: np.ndarray, scratch: Path) -> list[Path]:
        """Shard files in ``scratch``, in order, of clones of the trained empty ``index`` holding the vectors of
        manifest ``rows`` under FAISS ids ``rows``."""
        return [Path(p) for p in self._run(index, rows, scratch)]

    def _run(self, empty: Any, rows: np.ndarray, scratch: Optional[Path]) -> Any:
        """The tasks' results (serialized copies of the trained ``empty`` index filled with a shard of ``rows``,
        or their files in ``scratch``), in row order."""
        import faiss

        ray = connect(self.address)
        task = ray.remote(num_cpus=ACTOR_CPUS)(_fill_shard)
        blob = ray.put(faiss.serialize_index(empty))
        done, total = 0, len(rows)
        emit(self.progress, "build-index", 0, total, unit="vec")
        pending: list[tuple[Any, int]] = []  # (task, vectors in its shard), oldest first

        def oldest() -> Any:
            nonlocal done
            ref, size = pending.pop(0)
            try:
                part = ray.get(ref)
            except ray.exceptions.RayError as exc:  # a lost worker or a damaged chunk: nothing was written
                raise job_error(exc, "filling the IVF index",
                                "the embedded chunks are kept: re-run the same command") from None
            done += size
            emit(self.progress, "build-index", done, total, unit="vec")
            return part

        for start in range(0, total, self.shard):
            ids = rows[start:start + self.shard]
            out = None if scratch is None else str(scratch / f"shard-{start:012d}.faiss")
            part = self.manifest.take(ids, ["chunk", "row"])
            pending.append((task.remote(code_digest(), str(self.idx.root), part.column("chunk").to_numpy(),
                                        part.column("row").to_numpy(), ids, blob, self.dim, out), len(ids)))
            if len(pending) > max(1, self.workers):
                yield oldest()
        while pending:
            yield oldest()


def fill_ivf(idx: Any, manifest: Any, dim: int, *, address: str, workers: int, shard: int = SHARD_VECTORS,
             device: str = "auto", progress: Optional[ProgressCallback] = None) -> RayFill:
    """``index``'s ``fill`` hook (``RayFill``); ``device`` is accepted as the other engine hooks accept it (FAISS
    fills on the CPU)."""
    return RayFill(idx, manifest, dim, address=address, workers=workers, shard=shard, progress=progress)
