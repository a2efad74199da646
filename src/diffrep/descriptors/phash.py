"""``phash``: the perceptual hash of the ``imagehash`` library (DCT hash, 64 bits by default).

The hash bits b in {0, 1}^n (n = ``hash_size``^2 = 64) become the unit vector v = (2b - 1) / sqrt(n), so
the inner product of two vectors is exactly

    similarity = 1 - 2 d / n        (d = Hamming distance; d = n (1 - similarity) / 2)

i.e. 1.0 for identical hashes, 0.0 for d = 32, -1.0 for complementary ones. The vectors are
cosine-compatible: FAISS inner-product search ranks by Hamming distance and ``diffrep index`` /
``audit`` / ``dedup`` work unchanged. ``base.hamming_from_similarity`` converts scores back to bits.

Preprocessing does exactly what ``imagehash.phash`` does first (RGB -> 8-bit gray ``L``, Lanczos resize
to 4 * hash_size = 32 px square) and returns that gray square as 3 identical channels; ``embed`` then
calls ``imagehash.phash`` on it (its own resize is a no-op), so each vector equals
``imagehash.phash(image, hash_size)`` of the decoded RGB image bit for bit.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DescriptorError
from .base import Descriptor, bits_to_unit, library_fingerprint, register, to_rgb

HIGHFREQ_FACTOR = 4  # imagehash.phash's default: DCT of a (4 * hash_size)^2 image


def _imagehash() -> Any:
    try:
        import imagehash
    except ImportError:
        raise DescriptorError("the phash descriptor needs imagehash: pip install imagehash "
                              "(or reinstall diffrep: pip install -e .)") from None
    return imagehash


class PHashDescriptor(Descriptor):
    """imagehash's pHash as a {+-1/sqrt(n)} unit vector (inner product = 1 - 2 * hamming / n)."""

    name = "phash"

    def __init__(self, hash_size: int = 8, batch_size: int = 256) -> None:
        if hash_size < 2:
            raise DescriptorError(f"phash hash_size must be >= 2, got {hash_size}")
        self._ih = _imagehash()
        from PIL import Image

        self._Image = Image
        self.hash_size = hash_size
        self.size = hash_size * HIGHFREQ_FACTOR  # also lets the decoder shrink big JPEGs early
        self.dim = hash_size * hash_size
        self.batch_size = batch_size

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        Image = self._Image
        gray = Image.fromarray(to_rgb(image)).convert("L").resize((self.size, self.size),
                                                                  Image.Resampling.LANCZOS)
        return np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)

    def hash_bits(self, batch: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) preprocessed batch -> (N, n) bool hash bits (imagehash's bit order)."""
        Image, ih = self._Image, self._ih
        out = np.empty((len(batch), self.dim), bool)
        for i, x in enumerate(batch):
            out[i] = ih.phash(Image.fromarray(np.ascontiguousarray(x[:, :, 0]), "L"),
                              hash_size=self.hash_size, highfreq_factor=HIGHFREQ_FACTOR).hash.ravel()
        return out

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return bits_to_unit(self.hash_bits(batch))

    def fingerprint(self) -> dict[str, Any]:
        pre = {"gray": "PIL L", "resize": "square", "size": self.size, "resample": "lanczos",
               "hash": "phash", "hash_size": self.hash_size, "vector": "(2b-1)/sqrt(n)"}
        return library_fingerprint(self.name, self.dim, pre, {"imagehash": self._ih.__version__})


@register("phash", "imagehash pHash, 64 bits as a +-1/8 unit vector (inner product = 1 - 2*hamming/64)")
def _phash(hash_size: int = 8, batch_size: int = 256, **kw: Any) -> Descriptor:
    return PHashDescriptor(hash_size=hash_size, batch_size=batch_size)
