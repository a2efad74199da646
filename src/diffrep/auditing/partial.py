"""Partial replication: training images whose content fills only part of a generated image.

Every window of the generation's SSCD feature map (``diffrep.descriptors.regions``, two scales, a few
thousand windows) becomes a descriptor on the global scale and is searched in the ordinary training
index; each training image's region score is its best window's cosine, and the window is the evidence
(its box in the generated image). The index needs nothing new, and the cost per generation is two
forward passes plus one batched index search of its windows: it does not grow with an N x M loop (a
flat index costs O(windows x N) dot products per generation; HNSW/IVF indexes make it sub-linear).

With a local-feature index (``diffrep.indexing.local``: RootSIFT descriptors voting for training images)
the candidates found by local features that the windows missed are appended, each with its best window's
cosine computed against its stored vector, so every candidate carries the same evidence and the object
matcher (``objects.py``) checks them all.

``region_rows`` is the same search as a job an audit engine runs on parts of the rows (``--engine ray``): a worker
opens the index, the region embedder and the local index from the index directory once per process.

Calibration treats the region score like any other channel: the same procedure on held-out reference
images (or training images against the rest of the index, self excluded) gives its null, and
``fuse_channels`` folds it into the verdict.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from ..descriptors.regions import RegionEmbedder
from ..indexing.local import LocalIndex
from ..progress import ProgressCallback, emit


class Searchable(Protocol):
    """What region search needs of an index (``LoadedIndex`` or a bare FAISS wrapper)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


class FlatIndex:
    """Exact inner-product search over vectors held in memory (benchmarks, small reference sets)."""

    def __init__(self, vectors: np.ndarray) -> None:
        import faiss

        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(np.ascontiguousarray(vectors, np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(np.ascontiguousarray(queries, np.float32), k)

    def __len__(self) -> int:
        return int(self._index.ntotal)

ImageLoader = Callable[[int], Optional[np.ndarray]]
PER_WINDOW_K = 3  # training neighbours kept per window before aggregating per training image


@dataclass
class RegionMatches:
    scores: np.ndarray  # (n, k) best window cosine per candidate, descending; -inf where missing
    ids: np.ndarray  # (n, k) training FAISS ids, -1 where missing
    boxes: np.ndarray  # (n, k, 4) the best window per candidate, [x0, y0, x1, y1] in query pixels
    windows: int  # windows searched per image
    seconds: float  # wall time of the whole search
    sizes: np.ndarray  # (n, 2) width, height of each image (0, 0 when it could not be read)
    votes: np.ndarray | None = None  # (n, k) local-feature score per candidate (NaN: no votes), with a local index
    local_only: np.ndarray | None = None  # (n, k) bool: found by local features, not among the windows' top k
    local_seconds: float = 0.0  # of ``seconds``, the local-feature voting

    def is_partial(self, qi: int, c: int, share: float = 0.8) -> bool:
        """Whether candidate ``c``'s best window covers less than ``share`` of image ``qi``."""
        w, h = self.sizes[qi]
        x0, y0, x1, y1 = self.boxes[qi, c]
        return bool(w and h and (x1 - x0) * (y1 - y0) < share * w * h)

    @classmethod
    def concat(cls, parts: Sequence["RegionMatches"], seconds: float) -> "RegionMatches":
        """The rows of ``parts`` in order (an engine's parts of one set of rows), ``seconds`` of wall time."""
        def cat(name: str) -> Any:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return cls(cat("scores"), cat("ids"), cat("boxes"), max(p.windows for p in parts), seconds, cat("sizes"),
                   cat("votes"), cat("local_only"), sum(p.local_seconds for p in parts))

    @property
    def top(self) -> np.ndarray:
        """Best window cosine per image (appended local candidates are not in score order)."""
        return self.scores.max(axis=1) if self.scores.shape[1] else np.full(len(self.scores), -np.inf)


def aggregate(scores: np.ndarray, ids: np.ndarray, boxes: np.ndarray, k: int,
              exclude: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per training id, its best window: from (R, kw) window search results to the top ``k`` ids."""
    flat_s, flat_i = scores.ravel(), ids.ravel()
    win = np.repeat(np.arange(len(scores)), scores.shape[1])
    ok = flat_i >= 0
    if exclude is not None:
        ok &= flat_i != exclude
    order = np.argsort(-flat_s[ok], kind="stable")
    s, i, w = flat_s[ok][order], flat_i[ok][order], win[ok][order]
    _, first = np.unique(i, return_index=True)
    first = np.sort(first)[:k]  # first occurrence = best window, in score order
    out_s = np.full(k, -np.inf, np.float32)
    out_i = np.full(k, -1, np.int64)
    out_b = np.zeros((k, 4), np.int64)
    out_s[:len(first)], out_i[:len(first)], out_b[:len(first)] = s[first], i[first], boxes[w[first]]
    return out_s, out_i, out_b


def region_search(load: ImageLoader, n: int, index: Searchable, embedder: RegionEmbedder, *, k: int = 5,
                  self_ids: np.ndarray | None = None, stage: str = "regions",
                  local: LocalIndex | None = None, local_k: int = 0,
                  train_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
                  progress: Optional[ProgressCallback] = None) -> RegionMatches:
    """Region matches of ``n`` images (``load(i)`` -> RGB array or None when it cannot be read).

    ``self_ids[i]``, when given, is image i's own id in the index (for training images used as a
    null), excluded from its matches. With ``local`` (and ``train_vectors``: ids -> stored unit vectors),
    up to ``local_k`` more candidates per image come from local-feature voting."""
    if local is not None and train_vectors is None:
        raise ValueError("local-feature candidates need train_vectors for their window scores")
    t0 = time.perf_counter()
    kl = local_k if local is not None else 0
    width = k + kl
    scores = np.full((n, width), -np.inf, np.float32)
    ids = np.full((n, width), -1, np.int64)
    boxes = np.zeros((n, width, 4), np.int64)
    votes = np.full((n, width), np.nan, np.float32)
    local_only = np.zeros((n, width), bool)
    windows = 0
    sizes = np.zeros((n, 2), np.int64)
    t_local = 0.0
    emit(progress, stage, 0, n)
    for i in range(n):
        img = load(i)
        if img is not None:
            vecs, bx = embedder.regions(img)
            sizes[i] = img.shape[1], img.shape[0]
            windows = len(vecs)
            kw = min(PER_WINDOW_K + (self_ids is not None), len(index))
            s, j = index.search(vecs, kw)
            exclude = None if self_ids is None else int(self_ids[i])
            scores[i, :k], ids[i, :k], boxes[i, :k] = aggregate(s, j, bx, k, exclude)
            if local is not None and kl:
                t1 = time.perf_counter()
                lid, lscore = local.vote(img, kl + k, exclude)
                t_local += time.perf_counter() - t1
                where = {int(c): r for r, c in enumerate(ids[i, :k]) if c >= 0}
                for c, v in zip(lid, lscore):
                    if int(c) in where:
                        votes[i, where[int(c)]] = v
                new = [(int(c), float(v)) for c, v in zip(lid, lscore) if int(c) not in where][:kl]
                if new:
                    assert train_vectors is not None
                    cos = vecs @ np.asarray(train_vectors(np.array([c for c, _ in new])), np.float32).T
                    best = cos.argmax(axis=0)
                    cols = slice(k, k + len(new))
                    ids[i, cols] = [c for c, _ in new]
                    votes[i, cols] = [v for _, v in new]
                    scores[i, cols] = cos[best, np.arange(len(new))]
                    boxes[i, cols] = bx[best]
                    local_only[i, cols] = True
        emit(progress, stage, i + 1, n)
    return RegionMatches(scores, ids, boxes, windows, time.perf_counter() - t0, sizes,
                         votes if kl else None, local_only if kl else None, t_local)


_OPENED: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}  # this process's (index, embedder, local index)


def region_rows(readers: Sequence[Callable[[], bytes]], own: np.ndarray, train_paths: Any, *, root: str,
                generation: int, spec: str, region_config: Any, local_config: Any, k: int, local_k: int,
                max_pixels: int, stage: str = "regions", workers: int | None = None,
                progress: Optional[ProgressCallback] = None) -> RegionMatches:
    """``region_search`` for images read by ``readers[i]()`` against the index at ``root`` (the job an audit
    engine runs on rows; ``own[i, 0]``: image i's own FAISS id, excluded from its matches, or -1 for all
    when the images are not training images). The index (``generation``, the driver's), the region embedder of
    descriptor ``spec`` and, with ``local_k``, the local index already built there are opened once per process.
    ``train_paths`` and ``workers`` are the engine's uniform arguments: unused."""
    del train_paths, workers
    from ..decode import load_image

    key = (root, generation, spec, repr(region_config), repr(local_config), bool(local_k))
    if key not in _OPENED:
        _OPENED.clear()
        _OPENED[key] = _open_for_regions(root, generation, spec, region_config, local_config, local_k)
    idx, emb, local = _OPENED[key]
    side = max(emb.config.sizes)
    self_ids = own[:, 0] if len(own) and own[0, 0] >= 0 else None
    return region_search(lambda i: load_image(readers[i], max_pixels, side), len(readers), idx, emb, k=k,
                         self_ids=self_ids, stage=stage, local=local, local_k=local_k if local else 0,
                         train_vectors=idx.vectors, progress=progress)


def _open_for_regions(root: str, generation: int, spec: str, region_config: Any, local_config: Any,
                      local_k: int) -> tuple[Any, Any, Any]:
    from pathlib import Path

    from ..descriptors import get_descriptor
    from ..errors import DiffrepError
    from ..indexing.load import open_index
    from ..indexing.local import load_local

    idx = open_index(root)
    if int(idx.meta["generation"]) != generation:
        raise DiffrepError(f"index {root} changed during the audit (generation {idx.meta['generation']}, the audit "
                           f"opened {generation}); re-run the audit")
    local = load_local(Path(root), generation, len(idx), local_config) if local_k else None
    if local_k and local is None:
        raise DiffrepError(f"the local-feature index of {root} is not there for this worker; every worker must see "
                           "the index directory at the same path")
    return idx, RegionEmbedder(get_descriptor(spec), region_config), local


__all__ = ["FlatIndex", "RegionMatches", "Searchable", "aggregate", "region_rows", "region_search"]
