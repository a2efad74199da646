"""Images to put to a model: a source (folder or .tar shards) decoded at the model's resolution.

Each image is decoded safely (``decode``), center-cropped square and resized to the size the model makes;
images of another size are counted in ``resized`` (the caller reports it as a note). Undecodable files are
recorded skips, never a traceback. Captions come from the source's caption file, or ``captions`` (a
``captions.jsonl`` / ``.csv`` matched by id or file name, as ``sources`` matches them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..decode import DecodeError, decode_image
from ..errors import SourceError
from ..progress import ProgressCallback, emit
from ..sources import open_source


@dataclass
class ImageSet:
    paths: list[str]  # the records' paths (a file, or shard/member for tars)
    captions: list[Optional[str]]
    images: np.ndarray  # uint8 [N, size, size, 3]
    resized: int = 0  # images whose size was not the model's
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, keep: np.ndarray) -> "ImageSet":
        idx = np.flatnonzero(keep)
        return ImageSet([self.paths[i] for i in idx], [self.captions[i] for i in idx], self.images[idx],
                        self.resized, self.skipped)


def load_images(spec: str | os.PathLike[str], size: int, *, captions: str | os.PathLike[str] | None = None,
                what: str = "--images", progress: Optional[ProgressCallback] = None) -> ImageSet:
    """Decode the images of ``spec`` at ``size`` px (see the module docstring); SourceError when none is
    readable, naming the option (``what``) that gave the source."""
    from ..models.data import _square

    try:
        src = open_source(spec, captions=captions)
        records, skips = src.scan()
    except SourceError as exc:
        raise SourceError(f"{what}: {exc}") from None
    skipped = [(s.path, s.reason) for s in skips]
    stage = f"load {what.lstrip('-')}"  # "load images", "load reference", "load set"
    paths, caps, arrs, resized = [], [], [], 0
    emit(progress, stage, 0, len(records), unit="img")
    for i, rec in enumerate(records):
        try:
            data = rec.read()
            rgb = decode_image(data, min_side=size)
        except (DecodeError, OSError) as exc:
            skipped.append((rec.path, getattr(exc, "reason", None) or str(exc)))
            continue
        resized += int(_original_size(data, rgb) != (size, size))
        arrs.append(_square(rgb, size))
        paths.append(rec.path)
        caps.append(rec.caption)
        if (i + 1) % 500 == 0:
            emit(progress, stage, i + 1, len(records), unit="img")
    emit(progress, stage, len(records), len(records), unit="img")
    if not arrs:
        first = f" (first reason: {skipped[0][1]})" if skipped else ""
        raise SourceError(f"{what}: none of the images in {spec} could be decoded{first}")
    return ImageSet(paths, caps, np.stack(arrs), resized, skipped)


def _original_size(data: bytes, decoded: np.ndarray) -> tuple[int, int]:
    """(width, height) from the image header (the decoder may have reduced a large image already)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # decoded by another path than PIL's header reader: trust the decoded array
        return decoded.shape[1], decoded.shape[0]
