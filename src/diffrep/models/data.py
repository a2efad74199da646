"""Training data for the small diffusion models: a folder of images with captions and class labels.

``load_training_set`` reads any image folder (recursively, through ``sources``), decodes every image
safely, center-crops it square and resizes it to ``size`` px, and keeps it as uint8 in memory (grayscale
when every image is gray, RGB otherwise; alpha is composited onto white). Captions come from a
``captions.jsonl``/``.csv`` in the folder, a given file, or the nearest one in a parent folder (the
packaged datasets keep theirs beside ``images/``), matched by the longest common path suffix. Class
labels are the parent folder names (``train/3/00017.png`` -> class ``3``) when every image sits in a
subfolder, else the captions.

``duplication_weights`` and ``BatchSampler`` implement the NeurIPS 2023 duplication setting: a seeded
``dup_frac`` of the images gets sampling weight ``dup_weight`` and batches are drawn with replacement
in proportion to the weights from a seeded ``torch.Generator``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..decode import DecodeError, decode_image
from ..errors import DiffrepError, SourceError
from ..progress import ProgressCallback, emit
from ..sources import CAPTION_FILE_NAMES, caption_file, load_captions, open_source

MIN_SIZE, MAX_SIZE = 16, 256
_CAPTION_SEARCH_DEPTH = 3  # parent folders searched for a caption file


@dataclass
class TrainingSet:
    """Decoded training images and their metadata, sorted by id."""

    root: Path
    ids: list[str]  # paths relative to root (POSIX)
    paths: list[str]  # absolute file paths
    captions: list[Optional[str]]
    images: np.ndarray  # uint8 [N, size, size, channels]
    class_keys: Optional[list[str]]  # per image; None when there are no labels
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    caption_file: Optional[str] = None

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def classes(self) -> list[str]:
        """Class names sorted (numerically when all are integers)."""
        if self.class_keys is None:
            return []
        keys = set(self.class_keys)
        if all(k.isdigit() for k in keys):
            return sorted(keys, key=int)
        return sorted(keys)

    def class_captions(self) -> dict[str, str]:
        """Display text per class: the caption all its images share, else the class name."""
        seen: dict[str, set[Optional[str]]] = {}
        for key, cap in zip(self.class_keys or [], self.captions):
            seen.setdefault(key, set()).add(cap)
        return {k: (next(iter(v)) if len(v) == 1 and None not in v else k) for k, v in seen.items()}


def check_size(size: int, levels: int = 3) -> None:
    step = 2 ** (levels - 1)
    if not MIN_SIZE <= size <= MAX_SIZE or size % step:
        raise DiffrepError(f"--size {size}: use a resolution between {MIN_SIZE} and {MAX_SIZE} px that is a "
                           f"multiple of {step} (the UNet halves it {levels - 1} times), e.g. 28, 32, 48 or 64")


def load_training_set(data: str | os.PathLike[str], *, size: int = 32, subset: Optional[int] = None,
                      seed: int = 0, captions: str | os.PathLike[str] | None = None, color: str = "auto",
                      keep: str | os.PathLike[str] | None = None,
                      progress: Optional[ProgressCallback] = None) -> TrainingSet:
    """Decode the images of ``data`` (or a seeded random ``subset`` of them) at ``size`` px; with ``keep`` (a
    list of paths, one per line or NUL-separated, such as ``diffrep dedup``'s ``keep.nul``), only those."""
    check_size(size)
    if color not in ("auto", "gray", "rgb"):
        raise DiffrepError(f"color {color!r}: use auto, gray or rgb")
    root = Path(data).expanduser().resolve()
    if not root.is_dir():
        raise SourceError(f"{data} is not a folder. Pass the folder that holds the training images.")
    records, skips = open_source(str(root)).scan()
    if keep is not None:
        records = _kept(records, keep, root)
    if not records:
        raise SourceError(f"no readable images in {root}")
    table, cap_file = _captions_table(root, captions)
    skipped = [(s.path, s.reason) for s in skips]
    order = list(range(len(records)))
    if subset is not None:
        if subset < 1:
            raise DiffrepError(f"--subset {subset}: give a positive number of images")
        if subset > len(records):
            raise DiffrepError(f"--subset {subset} is larger than the {len(records)} images in {root}")
        order = [int(i) for i in np.random.default_rng([seed, 0]).permutation(len(records))]
    want = subset if subset is not None else len(records)
    emit(progress, "load", 0, want)
    chosen: list[tuple[int, np.ndarray]] = []
    for i in order:
        if len(chosen) == want:
            break
        try:
            chosen.append((i, _square(decode_image(records[i].read(), min_side=size), size)))
        except (DecodeError, OSError) as exc:
            skipped.append((records[i].path, getattr(exc, "reason", None) or str(exc)))
        if len(chosen) % 500 == 0:
            emit(progress, "load", len(chosen), want)
    if not chosen:
        raise SourceError(f"none of the images in {root} could be decoded (first reason: {skipped[0][1]})")
    if len(chosen) < want:
        raise SourceError(f"only {len(chosen)} of the {want} requested images in {root} could be decoded; "
                          f"ask for fewer with --subset or fix the files (first reason: {skipped[-1][1]})")
    emit(progress, "load", len(chosen), want)
    chosen.sort(key=lambda t: records[t[0]].id)
    recs = [records[i] for i, _ in chosen]
    arr = np.stack([a for _, a in chosen])
    gray = color == "gray" or (color == "auto" and bool(np.all(arr[..., :1] == arr)))
    arr = arr[..., :1].copy() if gray else arr
    caps = [_lookup(table, rec.path) for rec in recs]
    caps = [str(c) if c is not None else rec.caption for c, rec in zip(caps, recs)]
    ids = [rec.id for rec in recs]
    if all("/" in i for i in ids):
        keys: Optional[list[str]] = [i.rsplit("/", 2)[-2] for i in ids]
    elif all(c for c in caps):
        keys = [str(c) for c in caps]
    else:
        keys = None
    return TrainingSet(root, ids, [rec.path for rec in recs], caps, np.ascontiguousarray(arr), keys,
                       skipped, cap_file)


def read_path_list(path: str | os.PathLike[str]) -> list[str]:
    """Paths listed in ``path``: NUL-separated when the file holds a NUL byte (``keep.nul``), else one per line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"--keep {path}: cannot read it ({exc.strerror or exc})") from None
    text = raw.decode("utf-8", errors="surrogateescape")
    return [p for p in (text.split("\0") if "\0" in text else text.splitlines()) if p]


def _kept(records: list[Any], keep: str | os.PathLike[str], root: Path) -> list[Any]:
    """The records ``keep`` lists (absolute paths, or paths relative to ``root``)."""
    listed = {os.path.realpath(p if os.path.isabs(p) else root / p) for p in read_path_list(keep)}
    out = [r for r in records if os.path.realpath(r.path) in listed]
    if not out:
        raise SourceError(f"--keep {keep}: none of its {len(listed)} paths is an image of {root} (give the list "
                          "`diffrep dedup` wrote for this folder)")
    return out


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Center-crop to a square and resize to ``size`` (bicubic)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(rgb[top:top + s, left:left + s])
    if s != size:
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _captions_table(root: Path, captions: str | os.PathLike[str] | None
                    ) -> tuple[dict[str, Optional[str]], Optional[str]]:
    """{path key: caption} from the given file, else the first caption file in root or its parents."""
    if captions is not None:
        path = caption_file(captions)
        return load_captions(path, str(root)), path
    folder = root
    for _ in range(_CAPTION_SEARCH_DEPTH + 1):
        for name in CAPTION_FILE_NAMES:
            if (folder / name).is_file():
                return load_captions(str(folder / name), str(folder)), str(folder / name)
        if folder.parent == folder:
            break
        folder = folder.parent
    return {}, None


def _lookup(table: dict[str, Optional[str]], path: str) -> Optional[str]:
    """Caption whose key is the longest trailing part of ``path`` (``train/3/x.png``, ``3/x.png``, ...)."""
    if not table:
        return None
    parts = Path(path).parts
    for k in range(len(parts)):
        key = "/".join(parts[k:])
        if key in table:
            return table[key]
    return None


# ------------------------------------------------------------------------------------- duplication
def duplication_weights(n: int, dup_frac: float = 0.0, dup_weight: float = 1.0,
                        seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Sampling weight per image and the (sorted) indices given ``dup_weight``.

    ``round(dup_frac * n)`` images (at least one when ``dup_frac`` > 0), chosen with ``seed``, get weight
    ``dup_weight``; the rest weight 1. With weight 5 on 5% of the images, as in Somepalli et al. 2023,
    a duplicated image is drawn about 4.2 times per epoch and the others about 0.83 times.
    """
    if not 0.0 <= dup_frac <= 1.0:
        raise DiffrepError(f"--dup-frac {dup_frac}: give a fraction between 0 and 1")
    if not dup_weight > 0 or not np.isfinite(dup_weight):
        raise DiffrepError(f"--dup-weight {dup_weight}: give a positive sampling weight (5 = five times as often)")
    weights = np.ones(n, dtype=np.float64)
    k = 0 if dup_frac == 0 else max(1, int(round(dup_frac * n)))
    if k == 0 or dup_weight == 1.0:
        return weights, []
    dup = sorted(int(i) for i in np.random.default_rng([seed, 1]).choice(n, size=k, replace=False))
    weights[dup] = dup_weight
    return weights, dup


class BatchSampler:
    """Draws batches of indices with replacement, in proportion to ``weights``, from a seeded generator.

    The generator is the caller's ``torch.Generator`` (shared with the noise draws of a training step),
    so a checkpoint that saves its state resumes the exact same sequence.
    """

    def __init__(self, weights: np.ndarray, generator: Any) -> None:
        import torch

        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.generator = generator

    def draw(self, batch: int) -> Any:
        import torch

        return torch.multinomial(self.weights, batch, replacement=True, generator=self.generator)


def describe(ts: TrainingSet) -> str:
    """One line for logs: count, size, colour, captions, classes."""
    n_cap = sum(1 for c in ts.captions if c and c.strip())
    classes = ts.classes()
    return (f"{len(ts)} images at {ts.size} px ({'gray' if ts.channels == 1 else 'RGB'}), {n_cap} with captions, "
            f"{len(classes)} classes" + (f" from {ts.caption_file}" if ts.caption_file else ""))
