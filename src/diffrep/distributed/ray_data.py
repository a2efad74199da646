"""Embedding on Ray Data: reading, hashing, decoding and preprocessing run as CPU tasks, the model runs in a pool of
actors that each load the descriptor once (one per GPU with ``device`` cuda), and the driver receives the
embedded rows as they stream out.

Two pipelines share the actor stage (``_Embed``):

- ``embedded``: records the driver already holds (a folder; an audit's generations or reference images), cut
  into blocks of ``DECODE_BATCH``; yields embedded batches in the order they finish.
- ``shard_works``: tar shards and Parquet tables. One decoding task per shard scans it, compares it with what
  the index holds for it (``indexing.shards.plan_shard``) and decodes what is new or changed, ``DECODE_BATCH``
  records per yielded block; the driver gathers a shard's rows and yields its ``ShardWork`` once all have
  arrived, so it never lists the source, and holds only the shards in flight.

Both stages call the local engine's own functions (``embedding.prepare``, ``embedding.embed_pixels``), so the
vectors, hashes, sizes and skip reasons are the local engine's. Records travel pickled (ids, paths, byte
loaders); every worker must see the source at the same path.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..embedding import EmbeddedBatch, Prepared
from .ray_index import ACTOR_CPUS, code_digest, gpu_workers, job_error, same_code

DECODE_BATCH = 32  # records per decoding call (and per block a shard's decoding task yields)
MAX_BLOCKS = 4096  # a folder's records are cut into blocks of DECODE_BATCH, up to this many (larger beyond)
# Logical CPUs Ray reserves per decoding task. A decoding task is light next to the model (an SSCD forward pass
# costs several times a PNG or JPEG decode), so it reserves a quarter of a CPU and the actors, with
# ray_index.ACTOR_CPUS inference threads each, hold the rest (``actor_cpus``).
DECODE_CPUS = 0.25
_DECODED = ("pixels", "shape")  # the columns the actors consume; every other column passes through

_DESCRIPTORS: dict[tuple[str, str], Any] = {}


def _descriptor(spec: str, device: str) -> Any:
    """The descriptor for ``spec`` on ``device``, loaded once per worker process."""
    key = (spec, device)
    if key not in _DESCRIPTORS:
        from ..descriptors import get_descriptor

        _DESCRIPTORS[key] = get_descriptor(spec, device=device)
    return _DESCRIPTORS[key]


def _columns(done: list[Prepared]) -> dict[str, Any]:
    """Decoded records as columns. The preprocessed uint8 pixels travel as bytes with their shape (columns of one
    type whatever the batch holds); skipped records carry their reason and no pixels."""
    pixels = [np.ascontiguousarray(p.pixels, np.uint8) if p.pixels is not None else None for p in done]
    return {"pixels": [b"" if x is None else x.tobytes() for x in pixels],
            "shape": [json.dumps([] if x is None else list(x.shape)) for x in pixels],
            "sha256": [p.sha256 for p in done], "width": np.array([p.width for p in done], np.int64),
            "height": np.array([p.height for p in done], np.int64), "reason": [p.reason for p in done]}


def _decode(batch: dict[str, Any], spec: str, max_pixels: int, code: str) -> dict[str, Any]:
    """A decoding task: ``embedding.prepare`` on each pickled record of the batch (the descriptor's
    preprocessing, on the CPU); ``code``: the driver's ``code_digest``."""
    from ..embedding import prepare

    same_code(code)
    d = _descriptor(spec, "cpu")
    return {"pos": batch["pos"],
            **_columns([prepare(pickle.loads(blob), d, max_pixels) for blob in batch["record"]])}


def _plan_and_decode(batch: dict[str, Any], spec: str, max_pixels: int, root: str,
                     generation: int, code: str) -> Iterator[dict[str, Any]]:
    """A decoding task for each shard of the batch: ``plan_shard``, then a block with the plan (position -1,
    the plan pickled without its records, ``count`` the records to embed) and blocks of ``DECODE_BATCH``
    decoded records (positions 0..count-1, each record pickled)."""
    from ..embedding import prepare
    from ..indexing.shards import plan_shard

    same_code(code)
    d = _descriptor(spec, "cpu")
    for shard, chunks in zip(batch["shard"], batch["chunks"]):
        plan = plan_shard(Path(root), str(shard), json.loads(chunks), generation)
        todo, plan.todo = ([] if plan.work.error else plan.todo), []
        yield {"shard": [shard], "pos": np.array([-1]), "count": np.array([len(todo)]), "meta": [pickle.dumps(plan)],
               "record": [b""], "pixels": [b""], "shape": ["[]"], "sha256": [""], "width": np.zeros(1, np.int64),
               "height": np.zeros(1, np.int64), "reason": [""]}
        for s in range(0, len(todo), DECODE_BATCH):
            part = todo[s:s + DECODE_BATCH]
            yield {"shard": [shard] * len(part), "pos": np.arange(s, s + len(part)),
                   "count": np.full(len(part), len(todo)), "meta": [b""] * len(part),
                   "record": [pickle.dumps(r) for r in part], **_columns([prepare(r, d, max_pixels) for r in part])}


class _Embed:
    """An embedding actor: the descriptor, loaded once, embeds each batch's rows that carry pixels with
    ``embedding.embed_pixels`` (rows it cannot index get a reason); other columns pass through. ``threads``
    inference threads."""

    def __init__(self, spec: str, device: str, threads: int, code: str) -> None:
        same_code(code)
        os.environ.setdefault("DIFFREP_THREADS", str(threads))
        self.d = _descriptor(spec, device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from ..embedding import embed_pixels

        reasons = [str(r) for r in batch["reason"]]
        ok = [i for i, r in enumerate(reasons) if not r and len(batch["pixels"][i])]
        vectors = np.zeros((len(reasons), self.d.dim), np.float32)
        if ok:
            pixels = [np.frombuffer(batch["pixels"][i], np.uint8).reshape(json.loads(batch["shape"][i])) for i in ok]
            vectors[ok], bad = embed_pixels(self.d, np.stack(pixels))
            for j, why in bad.items():
                reasons[ok[j]] = why
        out = {k: v for k, v in batch.items() if k not in _DECODED}
        out.update(vector=vectors, reason=reasons)
        return out


MIN_ACTOR_CPUS = 0.01  # the least an actor reserves (more actors than CPUs then share them)


def actor_cpus(ray: Any, workers: int, device: str) -> float:
    """Logical CPUs each of ``workers`` actors reserves: ``ACTOR_CPUS``, or less where the actors would leave no
    room for decoding. The actors together leave ``DECODE_CPUS`` per node with CPUs unreserved, so however Ray
    places them, some node has room for a decoding task (were they to fill every node, the pipeline would wait
    forever for decoded rows). GPU actors reserve one CPU each: the GPU, not the CPU, is their limit."""
    if device == "cuda":
        return ACTOR_CPUS
    cpus = float(ray.cluster_resources().get("CPU", 1))
    nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0))
    return max(MIN_ACTOR_CPUS, min(ACTOR_CPUS, (cpus - DECODE_CPUS * nodes) / max(1, workers)))


def describe(ray: Any, address: str, workers: int, device: str) -> str:
    """One line on the cluster a run uses: its nodes, CPUs and GPUs, and the embedding actors it will start."""
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    where = "a Ray instance started for this run" if address == "local" else f"the Ray cluster at {address}"
    gpu = device == "cuda"
    actors = gpu_workers(ray, workers) if gpu else max(1, workers)
    each = actor_cpus(ray, actors, device)
    return (f"Using {where}: {nodes} node{'s' if nodes != 1 else ''}, {res.get('CPU', 0):g} CPUs, "
            f"{res.get('GPU', 0):g} GPUs; {actors} embedding actor{'s' if actors != 1 else ''}"
            f"{' (one GPU each)' if gpu else f' of {each:.2g} CPU each'}, decoding tasks of {DECODE_CPUS:g} CPU.")


def _quiet(ray: Any) -> None:
    """No progress bars or execution banners from Ray Data: diffrep reports progress through its callbacks."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a failed job is reported once, by ``_stream``


def _embedding(ray: Any, ds: Any, d: Any, *, batch_size: Optional[int], workers: int, device: str) -> Any:
    """``ds`` (decoded rows) followed by the pool of embedding actors."""
    spec = d.fingerprint().get("spec") or d.name
    gpu = device == "cuda"
    if gpu:
        workers = gpu_workers(ray, workers)
    cpus = actor_cpus(ray, workers, device)
    return ds.map_batches(_Embed, fn_constructor_args=(spec, device, max(1, round(cpus)), code_digest()),
                          batch_size=batch_size or d.batch_size, concurrency=max(1, workers), num_cpus=cpus,
                          num_gpus=1 if gpu else 0)


def dataset(ray: Any, records: list[Any], d: Any, *, batch_size: Optional[int], max_pixels: int, workers: int,
            device: str = "auto") -> Any:
    """The lazy Ray Data pipeline over ``records`` (positions and pickled records -> ``_decode`` tasks ->
    ``_Embed`` actors): rows of position, vector, sha256, width, height and skip reason. ``ray`` is a
    connected Ray module (``ray_index.connect``)."""
    import ray.data  # noqa: F401 - registers the ray.data subpackage on the module

    _quiet(ray)
    spec = d.fingerprint().get("spec") or d.name
    ds = ray.data.from_items([{"pos": i, "record": pickle.dumps(r)} for i, r in enumerate(records)],
                             override_num_blocks=min(-(-len(records) // DECODE_BATCH), MAX_BLOCKS))
    ds = ds.map_batches(_decode, fn_kwargs={"spec": spec, "max_pixels": max_pixels, "code": code_digest()},
                        batch_size=DECODE_BATCH, num_cpus=DECODE_CPUS)
    return _embedding(ray, ds, d, batch_size=batch_size, workers=workers, device=device)


def _stream(ray: Any, ds: Any, what: str) -> Iterator[dict[str, Any]]:
    """The pipeline's output batches as they finish; a failed job raises one ``DiffrepError`` (``job_error``)."""
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    except ray.exceptions.RayError as exc:
        raise job_error(exc, what) from None


def _prepared(b: dict[str, Any], k: int, record: Any) -> Prepared:
    return Prepared(record, str(b["sha256"][k]), int(b["width"][k]), int(b["height"][k]), reason=str(b["reason"][k]))


def _batch(done: list[Prepared], vectors: np.ndarray) -> tuple[list[int], EmbeddedBatch]:
    """(the indices into ``done`` of its embedded then its skipped records, the batch)."""
    keep = [k for k, p in enumerate(done) if not p.reason]
    left = [k for k, p in enumerate(done) if p.reason]
    return keep + left, EmbeddedBatch([done[k] for k in keep], vectors[keep], [done[k] for k in left])


def embedded(ray: Any, records: list[Any], d: Any, *, batch_size: Optional[int], max_pixels: int, workers: int,
             device: str = "auto") -> Iterator[tuple[list[int], EmbeddedBatch]]:
    """Embed ``records`` on Ray Data (``dataset``); yields, in the order batches finish, (positions in
    ``records`` of the batch's embedded images then of its skipped ones, the batch), the batch's ``ok`` and
    ``skipped`` holding ``Prepared`` records and ``ok`` lining up with the vectors."""
    if not records:
        return
    ds = dataset(ray, records, d, batch_size=batch_size, max_pixels=max_pixels, workers=workers, device=device)
    for b in _stream(ray, ds, "embedding"):
        pos = [int(p) for p in b["pos"]]
        order, batch = _batch([_prepared(b, k, records[p]) for k, p in enumerate(pos)],
                              np.asarray(b["vector"], np.float32))
        yield [pos[k] for k in order], batch


def shard_works(ray: Any, root: Path, shards: list[str], ledger: dict[str, list[int]], generation: int, d: Any, *,
                batch_size: Optional[int], max_pixels: int, workers: int, chunk_size: int,
                device: str = "auto") -> Iterator[Any]:
    """Index ``shards`` on Ray Data: one decoding task per shard (``_plan_and_decode``), the embedding actors,
    and here each shard's ``ShardWork`` (``indexing.shards.finish_shard``) once all its rows have arrived, in the
    order shards complete; ``ledger``: the chunks earlier per-shard runs wrote for each shard."""
    import ray.data  # noqa: F401 - registers the ray.data subpackage on the module

    from ..indexing.rows import batch_rows
    from ..indexing.shards import finish_shard

    if not shards:
        return
    _quiet(ray)
    spec = d.fingerprint().get("spec") or d.name
    ds = ray.data.from_items([{"shard": s, "chunks": json.dumps(ledger.get(s, []))} for s in shards],
                             override_num_blocks=len(shards))
    ds = ds.map_batches(_plan_and_decode, batch_size=1, num_cpus=DECODE_CPUS,
                        fn_kwargs={"spec": spec, "max_pixels": max_pixels, "root": str(root), "generation": generation,
                                   "code": code_digest()})
    ds = _embedding(ray, ds, d, batch_size=batch_size, workers=workers, device=device)
    plans: dict[str, Any] = {}
    got: dict[str, list[tuple[int, Prepared, np.ndarray]]] = {}
    for b in _stream(ray, ds, "indexing the shards"):
        for k, shard in enumerate(str(s) for s in b["shard"]):
            pos = int(b["pos"][k])
            if pos < 0:
                plans[shard] = (pickle.loads(b["meta"][k]), int(b["count"][k]))
            else:
                got.setdefault(shard, []).append((pos, _prepared(b, k, pickle.loads(b["record"][k])), b["vector"][k]))
            if shard in plans and len(got.get(shard, [])) == plans[shard][1]:
                (plan, _), rows = plans.pop(shard), sorted(got.pop(shard, []), key=lambda x: x[0])
                _, batch = _batch([p for _, p, _ in rows], np.asarray([v for _, _, v in rows], np.float32).reshape(
                    len(rows), d.dim))
                yield finish_shard(plan, batch_rows(batch, 0), batch.vectors, len(batch.ok), len(batch.skipped),
                                   chunk_size=chunk_size)
