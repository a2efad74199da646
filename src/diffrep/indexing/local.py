"""Local-feature index: RootSIFT descriptors of every training image, voting for training images.

Partial retrieval by SSCD windows (``auditing/partial.py``) ranks training images by how much a window of
the generation *as a whole* resembles them; a pasted object on a busy background can lose to look-alike
windows (openclipart seed 2: 17.5% of pasted sources outside the top 10). Local features do not depend
on the window: each keypoint of the generation that lands on the pasted object finds its twin in the
source. This is the inverted-file voting of Sivic & Zisserman ("Video Google", ICCV 2003) with SIFT
(Lowe, IJCV 2004) in its RootSIFT form (Arandjelovic & Zisserman, CVPR 2012), searched in FAISS:

1. Every training image (alpha composited on white, as the generator and the descriptors see it) is
   resized so its longer side is ``side`` px (256) and its SIFT descriptors (at most ``features``, 500)
   are taken, L1-normalised and square-rooted: unit vectors whose inner product is the Hellinger kernel.
2. All descriptors go into one FAISS inner-product index (``faiss_index.build``: exact below 250k
   descriptors, IVF above, IVF-PQ above 10M), each row tagged with its training image.
3. A query's descriptors each take their ``neighbours`` (10) nearest training descriptors; each training
   image gets one vote per query descriptor that found it, and its score is votes / sqrt(its descriptor
   count) (a picture with many keypoints does not win by volume). The top ``k`` images with at least
   ``min_votes`` votes are the candidates.

The index lives in the training index directory (``local-GENERATION/``), built on first use by
``diffrep audit --partial`` (or ``diffrep index --local``) and rebuilt when the training index changes.
Descriptors are staged on disk as uint8 while they are extracted, so memory holds the FAISS index, not
a Python list of arrays. Pictures with no keypoints (flat shapes) get no votes: window search covers them.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import DiffrepIndexError
from ..fsutil import atomic_path, write_json, write_npy
from ..progress import ProgressCallback, emit
from . import faiss_index

LOCAL_VERSION = 1
DIM = 128


@dataclass(frozen=True)
class LocalConfig:
    side: int = 256  # longer side (px) images are resized to before SIFT
    features: int = 500  # SIFT keypoints kept per image (strongest first)
    neighbours: int = 10  # training descriptors each query descriptor votes for
    min_votes: int = 2  # a candidate needs at least this many query descriptors voting for it

    def describe(self) -> dict[str, Any]:
        return {"method": "RootSIFT voting (inverted FAISS index)", "version": LOCAL_VERSION, **asdict(self)}


def local_features(rgb: np.ndarray, config: LocalConfig = LocalConfig()) -> np.ndarray:
    """RootSIFT descriptors (m, 128) float32, unit length, of an RGB uint8 image."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3], np.uint8), cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    f = config.side / max(h, w)
    if f != 1:
        gray = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))),
                          interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
    _, des = cv2.SIFT_create(nfeatures=config.features).detectAndCompute(gray, None)
    if des is None or not len(des):
        return np.zeros((0, DIM), np.float32)
    des = des / np.maximum(des.sum(1, keepdims=True), 1e-7)
    return np.sqrt(des).astype(np.float32)


class LocalIndex:
    """Search side of the local-feature index (see the module docstring)."""

    def __init__(self, index: Any, image_ids: np.ndarray, counts: np.ndarray, config: LocalConfig,
                 params: dict[str, Any]) -> None:
        self.index, self.image_ids, self.counts, self.config, self.params = index, image_ids, counts, config, params
        self._norm = 1.0 / np.sqrt(np.maximum(counts, 1)).astype(np.float64)

    @property
    def descriptors(self) -> int:
        return int(len(self.image_ids))

    def vote(self, rgb: np.ndarray, k: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(training ids, scores), best first, at most ``k``: the images the query's descriptors vote for."""
        q = local_features(rgb, self.config)
        if not len(q) or not self.descriptors:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        _, nn = faiss_index.search(self.index, q, self.config.neighbours)
        img = np.where(nn >= 0, self.image_ids[np.maximum(nn, 0)], -1)
        rows = np.repeat(np.arange(len(q)), img.shape[1])
        flat = img.ravel()
        ok = flat >= 0
        if exclude is not None:
            ok &= flat != exclude
        pairs = np.unique(rows[ok] * (len(self.counts) + 1) + flat[ok])  # one vote per (descriptor, image)
        ids, votes = np.unique(pairs % (len(self.counts) + 1), return_counts=True)
        keep = votes >= self.config.min_votes
        ids, votes = ids[keep], votes[keep]
        score = votes * self._norm[ids]
        order = np.argsort(-score, kind="stable")[:k]
        return ids[order].astype(np.int64), score[order].astype(np.float32)


def _local_dir(root: Path, generation: int) -> Path:
    return root / f"local-{generation:06d}"


def load_local(root: Path, generation: int, n_images: int, config: LocalConfig) -> Optional[LocalIndex]:
    """The stored local index for this index generation and config, or None when absent or stale."""
    import faiss

    d = _local_dir(root, generation)
    try:
        meta = json.loads((d / "local.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("config") != config.describe() or meta.get("images") != n_images:
        return None
    try:
        index = faiss.read_index(str(d / "local.faiss"))
        ids = np.load(d / "image_ids.npy")
        counts = np.load(d / "counts.npy")
    except (OSError, RuntimeError, ValueError) as exc:
        raise DiffrepIndexError(f"local-feature index {d} is damaged ({exc}); delete that folder and it will be "
                                "rebuilt") from None
    faiss_index.configure(index, meta.get("params", {}))
    return LocalIndex(index, ids, counts, config, meta.get("params", {}))


def build_local(read: Callable[[int], Optional[np.ndarray]], n_images: int,
                root: Path, generation: int, config: LocalConfig = LocalConfig(), *,
                progress: Optional[ProgressCallback] = None, stage: str = "local-features",
                save: bool = True) -> LocalIndex:
    """Extract every training image's descriptors (``read(j)`` -> RGB on white, or None when unreadable:
    it gets none) and build the FAISS index; saved atomically under ``root`` unless ``save`` is False."""
    import tempfile

    d = _local_dir(root, generation)
    staging = root / f".local-staging-{generation:06d}" if save else Path(tempfile.mkdtemp(prefix="diffrep-local-"))
    staging.mkdir(parents=True, exist_ok=True)
    try:
        index, params, counts = _extract_and_index(read, n_images, staging / "descriptors.u8", config, progress, stage)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    image_ids = np.repeat(np.arange(n_images, dtype=np.int32), counts)
    local = LocalIndex(index, image_ids, counts, config, params)
    faiss_index.configure(index, params)
    if save:
        _save(local, d, n_images)
        for old in root.glob("local-*"):
            if old != d and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return local


def _extract_and_index(read: Callable[[int], Optional[np.ndarray]], n_images: int, raw_path: Path,
                       config: LocalConfig, progress: Optional[ProgressCallback], stage: str) -> tuple[Any, dict, np.ndarray]:
    """Descriptors staged on disk as uint8 (memory stays bounded), then fed to FAISS in batches."""
    counts = np.zeros(n_images, np.int32)
    emit(progress, stage, 0, n_images)
    with open(raw_path, "wb") as raw:
        for j in range(n_images):
            img = read(j)
            if img is not None:
                des = local_features(img, config)
                counts[j] = len(des)
                raw.write(np.round(des * 255).astype(np.uint8).tobytes())
            if (j + 1) % 64 == 0 or j + 1 == n_images:
                emit(progress, stage, j + 1, n_images)
    total = int(counts.sum())
    stored = np.memmap(raw_path, np.uint8, "r", shape=(total, DIM)) if total else np.zeros((0, DIM), np.uint8)

    def unit(a: np.ndarray) -> np.ndarray:
        v = a.astype(np.float32) / 255.0
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-7)

    rng = np.random.default_rng(0)
    size = faiss_index.train_size(faiss_index.resolve_type("auto", total), total)
    sample = unit(stored[np.sort(rng.choice(total, size=size, replace=False))]) if total else None
    batches = (unit(stored[s:s + 100_000]) for s in range(0, total, 100_000))
    index, params = faiss_index.build(batches, total, DIM, "auto", train_sample=sample)
    del stored
    return index, params, counts


def _save(local: LocalIndex, d: Path, n_images: int) -> None:
    import faiss

    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / "local.faiss") as tmp:
        faiss.write_index(local.index, str(tmp))
    for name, arr in (("image_ids.npy", local.image_ids), ("counts.npy", local.counts)):
        write_npy(d / name, arr)
    write_json(d / "local.json", {"config": local.config.describe(), "images": n_images,
                                  "descriptors": local.descriptors, "params": local.params})  # last: marks it done


def open_local(idx: Any, config: LocalConfig = LocalConfig(), *, progress: Optional[ProgressCallback] = None,
               read: Optional[Callable[[int], Optional[np.ndarray]]] = None) -> LocalIndex:
    """The local index of a ``LoadedIndex``: loaded when stored for its generation, else built (and stored
    when the index directory is writable)."""
    import os

    root, generation = idx.dir.root, int(idx.meta["generation"])
    found = load_local(root, generation, len(idx), config)
    if found is not None:
        return found
    if read is None:
        read = _reader(idx.lookup("path"), config.side)
    return build_local(read, len(idx), root, generation, config, progress=progress,
                       save=os.access(root, os.W_OK))


def _reader(paths: Sequence[str], side: int) -> Callable[[int], Optional[np.ndarray]]:
    """Training image j composited on white and reduced to about ``side`` px, or None when it cannot be
    read now (no descriptors: never a candidate; the audit reports missing files)."""
    from ..decode import load_path
    from ..decode import DEFAULT_MAX_PIXELS

    return lambda j: load_path(paths[j], DEFAULT_MAX_PIXELS, side)


__all__ = ["LOCAL_VERSION", "LocalConfig", "LocalIndex", "build_local", "load_local", "local_features",
           "open_local"]
