"""``diffrep index``: embed a training set into an index directory, incrementally and resumably."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..decode import DEFAULT_MAX_PIXELS
from ..defaults import DEFAULTS
from ..descriptors import Descriptor, fingerprints_match, get_descriptor
from ..embedding import embed_records
from ..errors import DescriptorError, DescriptorMismatchError, DiffrepError, DiffrepIndexError, SourceError
from ..fsutil import atomic_path, ensure_writable_dir
from ..progress import ProgressCallback, emit
from ..sources import Record, open_source, read_skipped, write_skipped
from . import faiss_index, ondisk
from .extend import extend_previous
from .manifest import DELETED, Manifest, deleted_row, write_manifest
from .merge import merge_manifest, mergeable
from .rows import commit_batches
from .shards import EmbedRun, index_shards_local, known_rows
from .store import DamagedChunkError, IndexDir, check_vectors

DEFAULT_CHUNK = DEFAULTS["index"]["chunk_size"]


@dataclass
class IndexResult:
    """What ``index()`` did."""

    index_dir: Path
    images: int  # live images in the index
    added: int  # embedded in this run
    unchanged: int  # already indexed, not re-embedded
    skipped: int  # inputs that could not be indexed (see skipped.csv)
    index_type: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    skipped_items: list[tuple[str, str]] = field(default_factory=list)
    removed: int = 0  # images that left the source, removed from the index in this run
    repaired: list[tuple[int, str]] = field(default_factory=list)  # (chunk, reason): damaged, embedded again


def require_cosine(d: Descriptor) -> Descriptor:
    """``d`` itself, or DescriptorError when it cannot be searched with a FAISS inner-product index."""
    if getattr(d, "metric", "cosine") != "cosine":
        raise DescriptorError(
            f"descriptor {d.name!r} compares images with {d.metric}, not cosine similarity, so it cannot "
            "build or search a FAISS index (index, audit, dedup). Score it pairwise with "
            "descriptor.similarity(), or use a cosine descriptor such as sscd, pdq or phash.")
    return d


def resolve_descriptor(idx: IndexDir, descriptor: str | Descriptor | None, device: str = "auto",
                       **kw: Any) -> Descriptor:
    """The descriptor to use with an existing (or new) index, its model on ``device`` (auto, cpu or cuda);
    refuse a mismatch with a clear message.

    Without ``descriptor`` an existing index's own is rebuilt from its stored ``spec`` (a model file's
    absolute path and options) or, for older indexes, its name."""
    meta = idx.read_meta() if idx.meta_path.is_file() else {}
    stored = meta.get("descriptor")
    if descriptor is None:
        descriptor = (stored.get("spec") or stored["name"]) if stored else DEFAULTS["index"]["descriptor"]
    d = require_cosine(get_descriptor(descriptor, device=device, **kw))
    fp = d.fingerprint()
    if stored and not fingerprints_match(stored, fp):
        want = stored.get("spec") or stored["name"]
        raise DescriptorMismatchError(
            f"index {idx.root} was built with descriptor {want!r} (weights {stored.get('weights_sha256', '?')[:12]}, "
            f"size {stored.get('preprocess', {}).get('size')}, dim {stored.get('dim')}), but "
            f"{fp.get('spec') or d.name!r} (weights {fp['weights_sha256'][:12]}, size "
            f"{fp.get('preprocess', {}).get('size')}, dim {fp.get('dim')}) was requested. Scores from different "
            f"descriptors are not comparable: leave --descriptor out (the index's own is used) or build a new index.")
    return d


def check_options(**values: Any) -> None:
    """DiffrepError unless every given count (``chunk_size=1024``, ...) is a whole number >= 1."""
    for name, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise DiffrepError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")


def index(source: str | Path | Sequence[str | Path], out: str | Path, *, descriptor: str | Descriptor | None = None,
          index_type: str = DEFAULTS["index"]["index_type"], captions: str | Path | None = None, batch_size: int | None = None,
          chunk_size: int = DEFAULT_CHUNK, max_pixels: int = DEFAULT_MAX_PIXELS,
          memory_budget: int | None = None, embed: Optional[Callable[..., tuple[int, int]]] = None,
          fill: Optional[Callable[..., Any]] = None, on_disk: bool = False,
          shards: Optional[Callable[..., Any]] = None, device: str = "auto", check_chunks: bool = False,
          exclude: Sequence[str | Path] = (), progress: Optional[ProgressCallback] = None) -> IndexResult:
    """Make the index directory ``out`` mirror the images of ``source``.

    Re-running embeds only images that are new or whose size or modification time changed, removes images
    that left the source (for tar shards: members gone from a shard that is given again), drops a damaged
    chunk and embeds its images again (chunks are read for that check when they are new or their files
    changed since they last passed; every chunk with ``check_chunks``), and resumes an interrupted run after
    its last committed chunk. The index directory, and the folders in ``exclude`` (the caller's output folder),
    are not read even when they lie inside a source folder; a source folder that is one of them is refused.
    An index mirrors one source: another folder (or a shard of the same name elsewhere) is refused.
    ``memory_budget`` (bytes): the FAISS index must fit it (``faiss_index.plan``). ``embed``: the embedding stage
    (default: this process; ``distributed.ray_index.embed_chunks`` runs it on Ray), called as
    ``embed(idx, d, todo, batch_size=, chunk_size=, max_pixels=, progress=)``; it serves folder sources (and
    shards given with a captions file), which are listed in this process. Tar shards and Parquet tables are
    indexed shard by shard (``shards.py``; default: in this process, ``distributed.ray_index.index_shards`` on
    Ray), so no process lists every record: ``shards(idx, d, shard_paths, batch_size=, chunk_size=,
    max_pixels=, progress=)`` -> ``EmbedRun``. ``fill``: how an IVF index is
    filled (default: this process; ``distributed.ray_index.fill_ivf`` fills shards on Ray), called as
    ``fill(idx, manifest, dim, progress=)`` -> ``filler(trained_empty_index, on_disk_file) -> filled index``,
    whose ``into(index, rows)`` and ``shards(index, rows, scratch)`` add only some rows when an extension
    grows the previous index (``extend.py``; ``ray_index.RayFill``).
    ``on_disk``: an IVF index's inverted lists are written to a file beside it and memory-mapped at search
    (``ondisk.py``), so they need not fit in memory. ``device``: where the descriptor's model runs (auto: CUDA
    when ONNX Runtime or PyTorch has it, else CPU; cpu; cuda, refused where there is none). Returns an
    ``IndexResult``."""
    t0 = time.perf_counter()
    check_options(chunk_size=chunk_size, max_pixels=max_pixels, batch_size=batch_size)
    faiss_index.check_request(index_type, on_disk)  # an unknown or unusable type fails now, not after embedding
    if descriptor is not None:  # refuse an unusable descriptor before creating anything on disk
        descriptor = require_cosine(get_descriptor(descriptor, device=device))
    src = open_source(source, captions=captions)
    for folder in exclude:  # refused before anything is created
        src.exclude(folder)
    root = ensure_writable_dir(out, "index directory")
    src.exclude(root)
    idx = IndexDir(root)
    with idx.lock():
        d = resolve_descriptor(idx, descriptor, device=device)
        fp = d.fingerprint()
        idx.clean_orphans()
        repaired = idx.drop_damaged(d.dim, every=check_chunks, progress=progress)
        _check_same_source(idx, src)
        t_scan = time.perf_counter()
        opts = dict(batch_size=batch_size, chunk_size=chunk_size, max_pixels=max_pixels, progress=progress)
        if src.folder is None and src.captions_path is None:  # shards, each with its own captions
            run = (shards or index_shards_local)(idx, d, src.shards, **opts)
        else:
            run = _scan_and_embed(idx, d, src, embed or _embed_into, **opts)
            t_scan += run.scan_seconds
        t_embed = time.perf_counter()
        state = build_state(idx, run.scan_skips, index_type=index_type, memory_budget=memory_budget, on_disk=on_disk)
        if repaired or run.added or run.removed or not is_current(idx, state):
            n_live, kind = finalize(idx, d, fp, index_type, run.scan_skips, source_desc=src.root, progress=progress,
                                    memory_budget=memory_budget, source_spec=src.spec(), fill=fill, on_disk=on_disk,
                                    state=state)
        else:  # nothing changed since the current generation was built: no vector is read again
            n_live, kind = int(idx.meta["count"]), str(idx.meta["index"]["type"])
        t_end = time.perf_counter()
    skipped_items = read_skipped(root / "skipped.csv")
    return IndexResult(root, n_live, run.added, run.unchanged, len(skipped_items), kind, t_end - t0,
                       {"scan": t_scan - t0, "embed": t_embed - t_scan, "finalize": t_end - t_embed},
                       skipped_items, removed=run.removed, repaired=repaired)


def _scan_and_embed(idx: IndexDir, d: Descriptor, src: Any, embed: Callable[..., tuple[int, int]], *,
                    progress: Optional[ProgressCallback], **opts: Any) -> EmbedRun:
    """A folder (or shards with a --captions file): list every record in this process, compare with every chunk
    row, mark ids that left the source deleted, and embed what is new or changed with ``embed``."""
    t0 = time.perf_counter()
    records, scan_skips = src.scan(progress=progress)
    scan_seconds = time.perf_counter() - t0
    live = {i: v for i, v in known_rows(idx, idx.chunk_numbers()).items() if v[2] != DELETED}
    _check_same_paths(idx, records, live)
    gone = _gone(src, records, live)
    if gone:
        idx.write_chunk(idx.next_chunk_number(), [deleted_row(i, live[i][3]) for i in gone],
                        np.zeros((0, d.dim), np.float32))
    todo = [r for r in records if live.get(r.id, (None, None))[:2] != (r.size, r.mtime)]
    added, n_skip = embed(idx, d, todo, progress=progress, **opts)
    return EmbedRun(added, n_skip, len(records) - len(todo), len(gone), [(s.path, s.reason) for s in scan_skips],
                    scan_seconds)



def _check_same_source(idx: IndexDir, src: Any) -> None:
    """SourceError when ``idx`` mirrors another folder than ``src`` (or folder vs shards): re-indexing would
    replace same-named images of one set with the other's and delete the rest."""
    stored = (idx.read_meta() if idx.meta_path.is_file() else {}).get("source_spec")
    new = src.spec()
    if not stored or stored.get("kind") == new["kind"] == "shards":
        return
    if stored != new:
        was = stored.get("path") or f"{len(stored.get('paths', []))} tar shard(s)"
        raise SourceError(f"index {idx.root} mirrors {was}; {src.root} is another source, and indexing it here "
                          "would mix two sets (same-named images replace each other, the rest is removed). Use "
                          "another --out for it, or delete the index directory first.")


def _check_same_paths(idx: IndexDir, records: list[Record], live: dict[str, tuple]) -> None:
    """SourceError when an id of ``records`` is indexed from another location (a same-named tar shard in
    another folder)."""
    for r in records:
        old = live.get(r.id)
        if old is not None and old[3] != r.path:
            raise SourceError(f"index {idx.root} already holds {r.id!r} from {old[3]}, not from {r.path}: two "
                              "sources with the same names would mix. Use another --out for this source.")


def _gone(src: Any, records: list[Record], live: dict[str, tuple]) -> list[str]:
    """Indexed ids the source no longer holds: any id of a folder source, or ids of the shards given now."""
    present = {r.id for r in records}
    if src.folder is not None:
        return sorted(i for i in live if i not in present)
    shards = set(src.shards)
    return sorted(i for i, v in live.items() if i not in present and v[3].partition("::")[0] in shards)


def _embed_into(idx: IndexDir, d: Descriptor, todo: list[Record], *, batch_size: int | None, chunk_size: int,
                max_pixels: int, progress: Optional[ProgressCallback]) -> tuple[int, int]:
    return commit_batches(idx, d, embed_records(todo, d, batch_size=batch_size, max_pixels=max_pixels), len(todo),
                          chunk_size=chunk_size, progress=progress)


def build_state(idx: IndexDir, scan_skips: list[tuple[str, str]], **requested: Any) -> dict[str, Any]:
    """What a generation is built from besides the vectors' contents: the committed chunks (every change to
    the index's rows commits a chunk), the source scan's skips and the index options asked for."""
    numbers = idx.chunk_numbers()
    skips = hashlib.sha256(json.dumps(sorted(scan_skips)).encode("utf-8", "surrogatepass")).hexdigest()
    return {"chunks": len(numbers), "last_chunk": numbers[-1] if numbers else 0, "scan_skips_sha256": skips,
            "requested": requested}


def is_current(idx: IndexDir, state: dict[str, Any]) -> bool:
    """Whether the index's current generation was built from ``state`` and opens cleanly (its manifest and
    FAISS files are there and agree; a damaged one is rebuilt)."""
    from .load import open_index

    meta = idx.meta
    if not meta.get("complete") or meta.get("build_state") != state:
        return False
    if state["requested"].get("on_disk") and not ondisk.data_path(idx.faiss_path(int(meta["generation"]))).is_file():
        return False
    try:
        return open_index(idx.root).pending_chunks == 0
    except DiffrepIndexError:
        return False


def finalize(idx: IndexDir, d: Descriptor, fp: dict[str, Any], index_type: str, scan_skips: list[tuple[str, str]],
             source_desc: str = "", progress: Optional[ProgressCallback] = None,
             source_spec: dict[str, Any] | None = None, memory_budget: int | None = None,
             fill: Optional[Callable[..., Any]] = None, on_disk: bool = False,
             state: dict[str, Any] | None = None) -> tuple[int, str]:
    """Resolve the latest row per id across chunks into the manifest (``manifest.write_manifest``, bounded
    memory; or the previous manifest merged with the chunks written since, ``merge.py``), build the FAISS index
    over it as a new generation (the previous IVF index extended where it can be, ``extend.py``; ``on_disk``: an
    IVF index's inverted lists in ``index-<generation>.ivfdata``, ``ondisk.py``). ``state`` (``build_state``) is
    recorded in index.json, so a later run that changes nothing keeps this generation."""
    previous = idx.read_meta() if idx.meta_path.is_file() else {}
    gen = int(previous.get("generation", 0)) + 1
    n, skipped_rows = _manifest(idx, previous, gen, progress)
    skip_rows = list(scan_skips) + skipped_rows
    manifest = Manifest(idx.manifest_path(gen))

    choice = faiss_index.plan(index_type, n, d.dim, memory_budget, on_disk)
    emit(progress, "build-index", 0, n, unit="vec")
    faiss_obj, params = _build_or_extend(idx, d.dim, previous, manifest, choice, gen, fill, on_disk, progress)
    emit(progress, "build-index", n, n, unit="vec")
    params.update(choice=choice["reason"], estimated_bytes=faiss_index.estimated_bytes(params["type"], n, d.dim,
                                                                                        params.get("pq_m", 64)))
    if params["type"] in ("ivf", "ivfpq"):
        _tune(idx, manifest, d.dim, faiss_obj, params)

    import faiss

    with atomic_path(idx.faiss_path(gen)) as tmp:
        faiss.write_index(faiss_obj, str(tmp))
    write_skipped(idx.root / "skipped.csv", skip_rows)
    numbers = idx.chunk_numbers()
    last = numbers[-1] if numbers else 0
    idx.write_meta({
        "descriptor": fp, "index": params, "count": n, "skipped": len(skip_rows), "generation": gen,
        "last_chunk": last, "chunks_sha256": idx.chunks_digest(last), "source": str(source_desc),
        "source_spec": source_spec,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "complete": True, "build_state": state,
    })
    idx.remove_old_generations(keep=gen)
    return n, params["type"]


def _manifest(idx: IndexDir, previous: dict[str, Any], gen: int,
              progress: Optional[ProgressCallback]) -> tuple[int, list[tuple[str, str]]]:
    """Generation ``gen``'s manifest and skips table: the previous generation's merged with the chunks written
    since (``merge.py``) where it can be, else resolved from every chunk."""
    prev = mergeable(idx, previous)
    merged = None if prev is None else merge_manifest(idx, idx.manifest_path(gen), idx.skips_path(gen), *prev,
                                                      expected_rows=int(previous.get("count", -1)), progress=progress)
    return merged or write_manifest(idx, idx.manifest_path(gen), skips_path=idx.skips_path(gen), progress=progress)


def _build_or_extend(idx: IndexDir, dim: int, previous: dict[str, Any], manifest: Manifest, choice: dict[str, Any],
                     gen: int, fill: Optional[Callable[..., Any]], on_disk: bool,
                     progress: Optional[ProgressCallback]) -> tuple[Any, dict[str, Any]]:
    """The FAISS index of generation ``gen``: the previous generation's IVF index grown by the added rows
    (``extend.py``), else one built anew, an IVF index trained on a sample of ``faiss_index.train_size`` rows."""
    gather = lambda rows: gather_vectors(idx, rows, dim)  # noqa: E731
    lists = ondisk.data_path(idx.faiss_path(gen)) if on_disk else None
    filler = fill(idx, manifest, dim, progress=progress) if fill else None
    grown = extend_previous(idx, previous, manifest, dim, choice, gather, progress, on_disk=lists, fill=filler)
    if grown is not None:
        return grown
    n, kind = manifest.num_rows, choice["type"]
    sample = None
    if kind in ("ivf", "ivfpq"):
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(n, size=faiss_index.train_size(kind, n), replace=False))
        sample = gather(manifest.take(pick, ["chunk", "row"]))
    faiss_obj, params = faiss_index.build(_vector_batches(idx, manifest, dim), n, dim, kind, sample,
                                          pq_m=choice["pq_m"],
                                          fill=filler,
                                          on_disk=lists,
                                          progress=progress)
    if params["type"] in ("ivf", "ivfpq"):
        params["trained_for"] = n
    return faiss_obj, params


def _tune(idx: IndexDir, manifest: Manifest, dim: int, faiss_obj: Any, params: dict[str, Any]) -> None:
    """Record an IVF index's self-recall and tune its probes (``faiss_index.tune_probes``) on stored vectors
    drawn apart from the training sample (``faiss_index.tuning_rows``), searched as the audit searches."""
    stored = lambda ids: gather_vectors(idx, manifest.take(ids, ["chunk", "row"]), dim)  # noqa: E731
    check = faiss_index.tuning_rows(manifest.num_rows)
    probe = check[:: max(1, len(check) // 1000)][:1000]
    faiss_index.configure(faiss_obj, params)
    params["self_recall_at_1"] = round(faiss_index.self_recall(faiss_obj, stored(probe), probe), 4)
    params["self_recall_sample"] = int(len(probe))
    faiss_index.tune_probes(faiss_obj, params, lambda q, k: faiss_index.search_stored(
        faiss_obj, params["type"], q, k, stored), stored(check), check)


def _vector_batches(idx: IndexDir, manifest: Manifest, dim: int, batch: int = 65536):
    for s in range(0, manifest.num_rows, batch):
        yield gather_vectors(idx, manifest.slice(s, batch), dim)


def gather_vectors(idx: IndexDir, rows: pa.Table, dim: int | None = None) -> np.ndarray:
    """Vectors of manifest ``rows`` (columns chunk, row), read from the chunk files, in row order; checked
    (``DamagedChunkError`` unless finite unit vectors of the index's dimension)."""
    chunks = np.asarray(rows.column("chunk").to_numpy(), np.int64)
    pos = np.asarray(rows.column("row").to_numpy(), np.int64)
    dim = dim or int(idx.meta.get("descriptor", {}).get("dim", 0)) or None
    out: np.ndarray | None = None
    order = np.argsort(chunks, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(chunks[order])) + 1) if len(order) else []
    for sel in groups:
        c, p = int(chunks[sel[0]]), pos[sel]
        v = idx.chunk_rows(c, p, dim)
        if out is None:
            out = np.empty((len(rows), v.shape[1]), np.float32)
        out[sel] = v
    if out is not None and check_vectors(out):
        for sel in groups:  # name the first damaged chunk
            problem = check_vectors(out[sel])
            if problem:
                raise DamagedChunkError(idx.root, int(chunks[sel[0]]), problem)
    return out if out is not None else np.zeros((0, dim or 0), np.float32)
