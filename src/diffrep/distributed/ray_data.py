"""Embedding records on Ray Data: reading, hashing, decoding and preprocessing run as CPU tasks
(``map_batches`` of a function, ``DECODE_BATCH`` records each), the model runs in a pool of actors that each
load the descriptor once (one per GPU with ``device`` cuda), and the driver receives the embedded batches as
they stream out (``embedded``). ``index`` commits them as chunks, an audit puts them back in input order
(``ray_index.embed_chunks``, ``ray_index.embed_set``).

Both stages call the local engine's own functions (``embedding.prepare``, ``embedding.embed_pixels``), so the
vectors, hashes, sizes and skip reasons are the local engine's. Records travel pickled (ids, paths, byte
loaders); every worker must see the source at the same path.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from typing import Any, Iterator, Optional

import numpy as np

from ..embedding import EmbeddedBatch, Prepared
from .ray_index import ACTOR_CPUS, gpu_workers

DECODE_BATCH = 32  # records per decoding call; the records are cut into blocks of this size
MAX_BLOCKS = 4096  # ... up to this many blocks (larger blocks beyond)
# Logical CPUs Ray reserves per decoding task. A decoding task is light next to the model (an SSCD forward pass
# costs several times a PNG or JPEG decode), so it reserves a quarter of a CPU and the actors, with
# ray_index.ACTOR_CPUS inference threads each, hold the rest (``actor_cpus``).
DECODE_CPUS = 0.25

_DESCRIPTORS: dict[tuple[str, str], Any] = {}


def _descriptor(spec: str, device: str) -> Any:
    """The descriptor for ``spec`` on ``device``, loaded once per worker process."""
    key = (spec, device)
    if key not in _DESCRIPTORS:
        from ..descriptors import get_descriptor

        _DESCRIPTORS[key] = get_descriptor(spec, device=device)
    return _DESCRIPTORS[key]


def _decode(batch: dict[str, Any], spec: str, max_pixels: int) -> dict[str, Any]:
    """A decoding task: ``embedding.prepare`` on each pickled record of the batch (the descriptor's
    preprocessing on the CPU). The preprocessed uint8 pixels travel as bytes with their shape (a column of one
    type whatever the batch holds); skipped records carry their reason and no pixels."""
    from ..embedding import prepare

    d = _descriptor(spec, "cpu")
    done = [prepare(pickle.loads(blob), d, max_pixels) for blob in batch["record"]]
    pixels = [np.ascontiguousarray(p.pixels, np.uint8) if p.pixels is not None else None for p in done]
    return {"pos": batch["pos"], "pixels": [b"" if x is None else x.tobytes() for x in pixels],
            "shape": [json.dumps([] if x is None else list(x.shape)) for x in pixels],
            "sha256": [p.sha256 for p in done], "width": np.array([p.width for p in done], np.int64),
            "height": np.array([p.height for p in done], np.int64), "reason": [p.reason for p in done]}


class _Embed:
    """An embedding actor: the descriptor, loaded once, embeds the decoded rows of each batch with
    ``embedding.embed_pixels`` (rows it cannot index get a reason); ``threads`` inference threads."""

    def __init__(self, spec: str, device: str, threads: int) -> None:
        os.environ.setdefault("DIFFREP_THREADS", str(threads))
        self.d = _descriptor(spec, device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from ..embedding import embed_pixels

        reasons = [str(r) for r in batch["reason"]]
        ok = [i for i, r in enumerate(reasons) if not r]
        vectors = np.zeros((len(reasons), self.d.dim), np.float32)
        if ok:
            pixels = [np.frombuffer(batch["pixels"][i], np.uint8).reshape(json.loads(batch["shape"][i])) for i in ok]
            vectors[ok], bad = embed_pixels(self.d, np.stack(pixels))
            for j, why in bad.items():
                reasons[ok[j]] = why
        return {"pos": batch["pos"], "vector": vectors, "sha256": batch["sha256"], "width": batch["width"],
                "height": batch["height"], "reason": reasons}


def actor_cpus(ray: Any, workers: int, device: str) -> float:
    """Logical CPUs each of ``workers`` actors reserves: ``ACTOR_CPUS``, or less where the cluster's CPUs would
    leave no room for a decoding task (GPU actors reserve one CPU each: the GPU, not the CPU, is their limit)."""
    if device == "cuda":
        return ACTOR_CPUS
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(0.25, min(ACTOR_CPUS, (cpus - DECODE_CPUS) / max(1, workers)))


def _quiet(ray: Any) -> None:
    """No progress bars or execution banners from Ray Data: diffrep reports progress through its callbacks."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def dataset(ray: Any, records: list[Any], d: Any, *, batch_size: Optional[int], max_pixels: int, workers: int,
            device: str = "auto") -> Any:
    """The lazy Ray Data pipeline over ``records`` (positions and pickled records -> ``_decode`` tasks ->
    ``_Embed`` actors): rows of position, vector, sha256, width, height and skip reason. ``ray`` is a
    connected Ray module (``ray_index.connect``)."""
    import ray.data  # noqa: F401 - registers the ray.data subpackage on the module

    _quiet(ray)
    spec = d.fingerprint().get("spec") or d.name
    gpu = device == "cuda"
    if gpu:
        workers = gpu_workers(ray, workers)
    cpus = actor_cpus(ray, workers, device)
    ds = ray.data.from_items([{"pos": i, "record": pickle.dumps(r)} for i, r in enumerate(records)],
                             override_num_blocks=min(-(-len(records) // DECODE_BATCH), MAX_BLOCKS))
    ds = ds.map_batches(_decode, fn_kwargs={"spec": spec, "max_pixels": max_pixels}, batch_size=DECODE_BATCH,
                        num_cpus=DECODE_CPUS)
    return ds.map_batches(_Embed, fn_constructor_args=(spec, device, max(1, round(cpus))),
                          batch_size=batch_size or d.batch_size, concurrency=max(1, workers), num_cpus=cpus,
                          num_gpus=1 if gpu else 0)


def embedded(ray: Any, records: list[Any], d: Any, *, batch_size: Optional[int], max_pixels: int, workers: int,
             device: str = "auto") -> Iterator[tuple[list[int], EmbeddedBatch]]:
    """Embed ``records`` on Ray Data (``dataset``); yields, in the order batches finish, (positions in
    ``records`` of the batch's embedded images then of its skipped ones, the batch), the batch's ``ok`` and
    ``skipped`` holding ``Prepared`` records and ``ok`` lining up with the vectors."""
    if not records:
        return
    ds = dataset(ray, records, d, batch_size=batch_size, max_pixels=max_pixels, workers=workers, device=device)
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        pos = [int(p) for p in b["pos"]]
        done = [Prepared(records[p], str(b["sha256"][k]), int(b["width"][k]), int(b["height"][k]),
                         reason=str(b["reason"][k])) for k, p in enumerate(pos)]
        keep = [k for k, p in enumerate(done) if not p.reason]
        left = [k for k, p in enumerate(done) if p.reason]
        yield ([pos[k] for k in keep + left],
               EmbeddedBatch([done[k] for k in keep], np.asarray(b["vector"], np.float32)[keep],
                             [done[k] for k in left]))
