"""Held-out reference images against an index: the null that calibrates both the audit's verdict and dedup's
link thresholds. Embedded with the index's own descriptor and searched the same way as the images under test,
so their scores are what unrelated images score."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..descriptors import Descriptor
from ..embedding import EmbeddedSet, embed_source
from ..errors import SourceError
from ..indexing.load import LoadedIndex
from ..progress import ProgressCallback


@dataclass
class ReferenceSet:
    """The reference images that decoded, with their global top-k in the index."""

    images: EmbeddedSet
    scores: np.ndarray  # (m, k) SSCD cosines, best first
    ids: np.ndarray  # (m, k) FAISS ids

    @property
    def readers(self) -> list[Callable[[], bytes]]:
        return [r.read for r in self.images.records]


def search_reference(idx: LoadedIndex, source: Any, descriptor: Descriptor, k: int, *, captions: Any = None,
                     max_pixels: int, batch_size: Optional[int] = None, exclude: Any = None,
                     progress: Optional[ProgressCallback] = None, embed: Any = None) -> ReferenceSet:
    """Embed the reference images of ``source`` (with ``embed``, another engine: ``embedding.embed_source``)
    and search each one's top ``k`` in ``idx``; SourceError when none of them decodes."""
    images = embed_source(source, descriptor, captions=captions, stage="embed-reference", max_pixels=max_pixels,
                          batch_size=batch_size, exclude=exclude, progress=progress, embed=embed)
    if not images.records:
        raise SourceError(f"no reference image in {source} could be decoded; check the folder")
    scores, ids = idx.search(images.vectors, k)
    return ReferenceSet(images, scores, ids)
