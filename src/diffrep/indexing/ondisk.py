"""IVF indexes whose inverted lists live in a file beside the index, memory-mapped at search.

An IVF index's memory is its inverted lists (codes and ids: 72 bytes a vector for 64-byte IVF-PQ codes, 75 GB
at a billion vectors); its coarse quantizer is small (cells x dim floats). With ``--on-disk`` the lists are
written to ``index-<generation>.ivfdata`` and the operating system pages in the cells a search probes, so
neither the build nor the search holds them all in memory:

1. Fill: the trained empty index is cloned per shard of ``SHARD_VECTORS`` vectors, the shard's vectors added
   under their FAISS ids, and the shard written to a scratch file (``fill_shards``; on a cluster each Ray task
   writes its shard, ``distributed.ray_index.fill_ivf``). One shard is in memory at a time.
2. Merge: the shard files are opened memory-mapped and their lists appended, cell by cell, into one on-disk
   list file (FAISS ``OnDiskInvertedLists.merge_from_multiple``); the index file records only the cells'
   offsets and the list file's name (``merge_shards``).
3. Load: ``read`` opens the index with the list file taken from the index's own folder, so an index directory
   can be moved or copied as a whole.
4. Extend (a rerun that only adds images, ``extend.py``): ``extend_on_disk`` writes the next generation's list
   file from the previous one's lists, their ids renumbered, and the added vectors' shard files, cell by cell.

The same vectors in the same order give the same lists as an in-memory fill (ids and codes per cell), so
search results are identical; tests check it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Iterable, Optional

import numpy as np

from ..progress import ProgressCallback, emit

SHARD_VECTORS = 1_000_000  # vectors per shard file (512-d IVF-PQ: 72 MB of lists; IVF-flat: 2 GB)
DATA_SUFFIX = ".ivfdata"
SCRATCH_PREFIX = ".shards-"  # a fill's shard folder beside the list file (a killed fill's: store.clean_orphans)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """FAISS prints on-disk list notices ("resizing ...", "updating ondisk filename ...") to the C stdout, where
    they would land in output meant for other programs (``diffrep info`` prints JSON): send fd 1 to the null
    device meanwhile."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                libc.fflush(None)
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def data_path(index_path: Path) -> Path:
    """The list file of the index file ``index_path`` (same folder, same stem)."""
    return index_path.with_suffix(DATA_SUFFIX)


def fill_shards(index: Any, batches: Iterable[np.ndarray], scratch: Path, shard: int = SHARD_VECTORS,
                progress: Optional[ProgressCallback] = None, total: int = 0,
                ids: Optional[np.ndarray] = None) -> list[Path]:
    """Add ``batches`` (FAISS ids 0, 1, ... in order, or ``ids``) to clones of the trained empty IVF ``index``,
    ``shard`` vectors per clone, each written to a file in ``scratch``; returns the files in order."""
    import faiss

    paths: list[Path] = []
    part: Any = None
    start = added = 0

    def flush() -> None:
        nonlocal part
        if part is not None and part.ntotal:
            paths.append(scratch / f"shard-{len(paths):06d}.faiss")
            faiss.write_index(part, str(paths[-1]))
        part = None

    for batch in batches:
        pos = 0
        while pos < len(batch):
            if part is None:
                part, start = faiss.clone_index(index), added
            take = min(len(batch) - pos, shard - (added - start))
            rows = np.ascontiguousarray(batch[pos:pos + take], dtype=np.float32)
            part.add_with_ids(rows, np.arange(added, added + take, dtype=np.int64) if ids is None
                              else np.ascontiguousarray(ids[added:added + take], dtype=np.int64))
            pos += take
            added += take
            if added - start >= shard:
                flush()
        emit(progress, "build-index", added, total or added, unit="vec")
    flush()
    return paths


def merge_shards(index: Any, shards: list[Path], target: Path) -> Any:
    """``index`` (trained, empty) with the inverted lists of the shard index files ``shards`` appended in
    order into the on-disk list file ``target``; returns the index (its ``ntotal`` is the sum)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    parts = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in shards]  # kept alive during the merge
    lists = faiss.InvertedListsPtrVector()
    for part in parts:
        lists.push_back(faiss.extract_index_ivf(part).invlists)
    target.unlink(missing_ok=True)
    ondisk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(target))
    with _quiet():
        total = ondisk.merge_from_multiple(lists.data(), lists.size(), False, False) if len(parts) else 0
    ivf.replace_invlists(ondisk, True)
    ondisk.this.disown()
    ivf.ntotal = index.ntotal = int(total)
    del parts
    return index


def fill_on_disk(index: Any, batches: Iterable[np.ndarray], target: Path, shard: int = SHARD_VECTORS,
                 progress: Optional[ProgressCallback] = None, total: int = 0) -> Any:
    """``fill_shards`` into a scratch folder beside ``target``, then ``merge_shards`` into ``target``; the
    scratch folder is removed either way."""
    with shard_folder(target) as scratch:
        return merge_shards(index, fill_shards(index, batches, scratch, shard, progress, total), target)


def trained_empty(index: Any) -> Any:
    """A copy of the IVF ``index`` without its entries (its quantizer and codec only, empty lists in memory), to
    be filled again; ``index`` is left as it was and its lists are not copied."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists, owned, ntotal = ivf.invlists, ivf.own_invlists, index.ntotal
    empty_lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.own_invlists = False  # the swap below must not free the real lists
    ivf.replace_invlists(empty_lists, False)
    ivf.ntotal = index.ntotal = 0
    try:
        blob = faiss.serialize_index(index)
    finally:
        ivf.replace_invlists(lists, owned)
        ivf.ntotal = index.ntotal = ntotal
    return faiss.deserialize_index(blob)


def extend_on_disk(old: Any, empty: Any, renumber: Callable[[np.ndarray], np.ndarray],
                   added: Callable[[Any, Path], list[Path]], target: Path) -> Any:
    """``empty`` (``trained_empty`` of the on-disk IVF index ``old``) holding ``old``'s entries with their ids
    renumbered (``renumber(ids) -> ids``) and then the added entries, its lists in the new list file ``target``;
    in each cell the old entries come first, as ``extend.renumber`` and ``add_with_ids`` leave an in-memory index.
    ``added(empty, scratch) -> files`` writes the added vectors into shard files in a scratch folder beside
    ``target`` (``fill_shards`` here, or Ray tasks), so memory holds one shard; the old lists are read once,
    memory-mapped, and written once."""
    with shard_folder(target) as scratch:
        return _merge_renumbered(empty, faiss_lists(old), renumber, added(empty, scratch), target)


def faiss_lists(index: Any) -> Any:
    import faiss

    return faiss.extract_index_ivf(index).invlists


def _merge_renumbered(index: Any, old_lists: Any, renumber: Callable[[np.ndarray], np.ndarray], shards: list[Path],
                      target: Path) -> Any:
    """``index`` (trained, empty) with ``old_lists`` (ids renumbered) and then the shard files' lists, cell by
    cell, in the on-disk list file ``target``."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    parts = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in shards]  # kept alive during the merge
    lists = [old_lists] + [faiss_lists(part) for part in parts]
    sizes = np.array([[il.list_size(c) for c in range(ivf.nlist)] for il in lists], np.uint64).reshape(-1, ivf.nlist)
    target.unlink(missing_ok=True)
    ondisk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(target))
    per_cell = np.ascontiguousarray(sizes.sum(axis=0))  # held here: FAISS reads it through a bare pointer
    with _quiet():  # each list's place in the file, then the file at its full size (as merge_from_multiple)
        ondisk.set_all_lists_sizes(faiss.swig_ptr(per_cell))
        if sizes.sum():
            ondisk.update_totsize(int(sizes.sum()) * (8 + ivf.code_size))
    for cell in range(ivf.nlist):
        at = 0
        for k, il in enumerate(lists):
            n = int(sizes[k, cell])
            if not n:
                continue
            ids = faiss.rev_swig_ptr(il.get_ids(cell), n).copy()
            codes = np.ascontiguousarray(faiss.rev_swig_ptr(il.get_codes(cell), n * ivf.code_size))
            ids = np.ascontiguousarray(renumber(ids) if k == 0 else ids, dtype=np.int64)
            ondisk.update_entries(cell, at, n, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
            at += n
    ivf.replace_invlists(ondisk, True)
    ondisk.this.disown()
    ivf.ntotal = index.ntotal = int(sizes.sum())
    del parts
    return index


@contextlib.contextmanager
def shard_folder(target: Path) -> Iterator[Path]:
    """A scratch folder for shard files beside the list file ``target``, removed on leaving."""
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=target.parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def is_on_disk(index: Any) -> bool:
    """Whether an IVF index's inverted lists are an on-disk list file."""
    import faiss

    try:
        lists = faiss.extract_index_ivf(index).invlists
    except RuntimeError:  # not an IVF index
        return False
    return faiss.downcast_InvertedLists(lists).__class__.__name__ == "OnDiskInvertedLists"


def read(index_path: Path) -> Any:
    """Read an index file; an on-disk index's list file is taken from the index file's folder and mapped
    read-only (an index is never added to once built). RuntimeError, as FAISS raises for a damaged file, when the
    list file is shorter than the index records: reading past a mapped file's end would kill the process."""
    import faiss

    with _quiet():
        index = faiss.read_index(str(index_path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    if is_on_disk(index):
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
        data = data_path(index_path)
        if data.stat().st_size < int(lists.totsize):
            raise RuntimeError(f"its list file {data.name} is shorter than its index records")
    return index


__all__ = ["DATA_SUFFIX", "SCRATCH_PREFIX", "SHARD_VECTORS", "data_path", "extend_on_disk", "faiss_lists",
           "fill_on_disk", "fill_shards", "is_on_disk", "merge_shards", "read", "shard_folder",
           "trained_empty"]
