"""The embedding pipeline: records -> (hash, decode, preprocess in worker threads) -> batched model calls.

Decoding runs ahead of the model in a small thread pool (Pillow and hashlib release the GIL), so on a
2-core machine the model's matrix work and the next batch's decoding overlap. Memory is bounded by the
prefetch window, never by the number of images.
"""
from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np

from .decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from .descriptors import Descriptor
from .errors import DescriptorError, DiffrepError, brief
from .sources import Record


@dataclass
class Prepared:
    """One record after hashing and decoding: ``pixels`` is set on success, ``reason`` on a skip."""

    record: Record
    sha256: str
    width: int = 0
    height: int = 0
    pixels: Optional[np.ndarray] = None
    reason: str = ""


@dataclass
class EmbeddedBatch:
    ok: list[Prepared]  # records with vectors, in order
    vectors: np.ndarray  # (len(ok), dim) float32
    skipped: list[Prepared]  # records that could not be decoded, with reasons


def prepare(record: Record, descriptor: Descriptor, max_pixels: int = DEFAULT_MAX_PIXELS,
            data: bytes | None = None) -> Prepared:
    """Read, hash, decode and preprocess one record. Never raises for bad input."""
    try:
        if data is None:
            data = record.read()
    except OSError as exc:
        return Prepared(record, "", reason=f"unreadable: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        img = decode_image(data, max_pixels=max_pixels, min_side=getattr(descriptor, "size", None))
    except DecodeError as exc:
        return Prepared(record, sha, reason=exc.reason)
    try:
        pixels = descriptor.preprocess(img)
    except Exception as exc:  # a preprocessing bug must not kill a long run; it is recorded
        return Prepared(record, sha, reason=f"preprocessing failed: {type(exc).__name__}: {exc}")
    return Prepared(record, sha, img.shape[1], img.shape[0], pixels)


def _workers() -> int:
    env = os.environ.get("DIFFREP_DECODE_WORKERS")
    return int(env) if env else max(2, (os.cpu_count() or 1))


def embed_records(records: Iterable[Record], descriptor: Descriptor, *, batch_size: int | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None) -> Iterator[EmbeddedBatch]:
    """Embed ``records`` in order, yielding one ``EmbeddedBatch`` per model call (plus skips)."""
    bs = batch_size or descriptor.batch_size
    prefetch = bs * 3
    it = iter(records)
    with ThreadPoolExecutor(max_workers=workers or _workers(), thread_name_prefix="diffrep-decode") as pool:
        window: deque[Future[Prepared]] = deque()

        def fill() -> None:
            while len(window) < prefetch:
                rec = next(it, None)
                if rec is None:
                    return
                window.append(pool.submit(prepare, rec, descriptor, max_pixels))

        fill()
        ok: list[Prepared] = []
        skipped: list[Prepared] = []
        while window:
            item = window.popleft().result()
            fill()
            (ok if item.pixels is not None else skipped).append(item)
            if len(ok) >= bs:
                yield _run(descriptor, ok, skipped)
                ok, skipped = [], []
        if ok or skipped:
            yield _run(descriptor, ok, skipped)


def _run(descriptor: Descriptor, ok: list[Prepared], skipped: list[Prepared]) -> EmbeddedBatch:
    if not ok:
        return EmbeddedBatch(ok, np.zeros((0, descriptor.dim), np.float32), skipped)
    vectors, bad = embed_pixels(descriptor, np.stack([p.pixels for p in ok]))  # type: ignore[misc]
    for p in ok:
        p.pixels = None  # free memory early
    if bad:
        for i, why in bad.items():
            ok[i].reason = why
        skipped = skipped + [ok[i] for i in sorted(bad)]
        keep = [i for i in range(len(ok)) if i not in bad]
        ok, vectors = [ok[i] for i in keep], vectors[keep]
    return EmbeddedBatch(ok, vectors, skipped)


def embed_pixels(descriptor: Descriptor, pixels: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Vectors of a batch of preprocessed images, and the rows that cannot be indexed or searched with the
    reason (non-finite values, or a zero vector for a cosine descriptor)."""
    vectors = checked_embed(descriptor, pixels)
    bad = _bad_rows(descriptor, vectors)
    return vectors, {i: f"the descriptor returned {why} for this image" for i, why in bad.items()}


def checked_embed(descriptor: Descriptor, batch: np.ndarray) -> np.ndarray:
    """``descriptor.embed(batch)`` as a (len(batch), dim) float32 array; DescriptorError (one line) when the
    model raises or returns another shape. Cosine descriptors' rows are brought to unit length."""
    try:
        out = descriptor.embed(batch)
        v = np.asarray(out, np.float32)
    except DiffrepError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's model file may raise anything
        raise DescriptorError(f"descriptor {descriptor.name!r} failed on a batch of {len(batch)} images: "
                              f"{type(exc).__name__}: {brief(exc)}. Check the model file.") from None
    if v.shape != (len(batch), descriptor.dim):
        raise DescriptorError(f"descriptor {descriptor.name!r} returned an array of shape {v.shape} for "
                              f"{len(batch)} images; expected ({len(batch)}, {descriptor.dim}). Check that the "
                              "model outputs one vector per image.")
    if getattr(descriptor, "metric", "cosine") == "cosine" and len(v):
        with np.errstate(invalid="ignore", over="ignore"):
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            off = np.isfinite(norms) & (norms > 0) & (np.abs(norms - 1) > 1e-4)
            v = np.where(off, v / np.where(off, norms, 1), v).astype(np.float32)
    return v


def _bad_rows(descriptor: Descriptor, v: np.ndarray) -> dict[int, str]:
    """Rows that cannot be indexed or searched: non-finite values, or zero vectors for a cosine descriptor."""
    bad = {int(i): "non-finite values (NaN or infinity)" for i in np.nonzero(~np.isfinite(v).all(axis=1))[0]}
    if getattr(descriptor, "metric", "cosine") == "cosine":
        for i in np.nonzero(np.abs(v).max(axis=1, initial=0) == 0)[0]:
            bad.setdefault(int(i), "a zero vector")
    return bad


@dataclass
class EmbeddedSet:
    """A whole (small enough to hold) source embedded: queries or reference images."""

    records: list[Record]  # successfully embedded, row i <-> vectors[i]
    vectors: np.ndarray
    skipped: list[tuple[str, str]]  # (path, reason), scan skips included


def embed_source(source: object, descriptor: Descriptor, *, captions: object = None, stage: str = "embed",
                 batch_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 exclude: object = None, progress: object = None, embed: object = None) -> EmbeddedSet:
    """Scan and embed a whole source (for query and reference sets; the index streams instead).
    ``exclude``: an output directory that is not read even when it lies inside the source. ``embed``: another
    engine for the embedding itself (``distributed.ray_index.embed_set``): called with the scanned records and
    the descriptor (keywords batch_size, max_pixels, stage, progress), it returns the embedded records and
    their vectors in input order and (path, reason) skips."""
    from .progress import emit
    from .sources import open_source

    src = open_source(source, captions=captions)  # type: ignore[arg-type]
    if exclude is not None:
        src.exclude(exclude)  # type: ignore[arg-type]
    records, scan_skips = src.scan()
    skipped = [(s.path, s.reason) for s in scan_skips]
    if embed is not None:
        got, vecs, more = embed(records, descriptor, batch_size=batch_size, max_pixels=max_pixels,  # type: ignore[operator]
                                stage=stage, progress=progress)
        return EmbeddedSet(list(got), np.asarray(vecs, np.float32), skipped + list(more))
    ok: list[Record] = []
    parts: list[np.ndarray] = []
    done = 0
    emit(progress, stage, 0, len(records))  # type: ignore[arg-type]
    for batch in embed_records(records, descriptor, batch_size=batch_size, max_pixels=max_pixels):
        ok.extend(p.record for p in batch.ok)
        parts.append(batch.vectors)
        skipped.extend((p.record.path, p.reason) for p in batch.skipped)
        done += len(batch.ok) + len(batch.skipped)
        emit(progress, stage, done, len(records))  # type: ignore[arg-type]
    vectors = np.concatenate(parts) if parts else np.zeros((0, descriptor.dim), np.float32)
    return EmbeddedSet(ok, vectors, skipped)
