"""``pdq``: Meta's PDQ perceptual hash (256 bits) through the ``pdqhash`` package.

The hash bits b in {0, 1}^256 become the unit vector v = (2b - 1) / 16, so the inner product of two
vectors is exactly

    similarity = 1 - 2 d / 256      (d = Hamming distance; d = 256 (1 - similarity) / 2 = 128 (1 - s))

PDQ's customary match threshold d <= 31 is similarity >= 0.7578. The vectors are cosine-compatible:
FAISS inner-product search ranks by Hamming distance and ``diffrep index`` / ``audit`` / ``dedup`` work.

Preprocessing: RGB (alpha onto white), then an antialiased bicubic resize to a ``size`` x ``size``
square (default 256) so batches stack. PDQ itself squashes every image to 64 x 64 (ignoring aspect
ratio) before its DCT, so squaring changes nothing conceptually; it caps the cost (pdqhash takes ~0.9 ms
at 256 px, ~8 ms at 512 px on one core) and leaves 64 px emoji upscaled to 256 untouched. Against PDQ of
the unresized file, a 512 x 600 photo differed by 2-14 of 256 bits depending on the size (the few bits
near the median flip), well inside PDQ's 31-bit threshold. Each vector equals ``pdqhash.compute`` of the
preprocessed image bit for bit. ``pdqhash`` ships only as source (it compiles with a C++ compiler):
install it with ``pip install 'diffrep[bench]'``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DescriptorError
from .base import Descriptor, bits_to_unit, library_fingerprint, register, to_rgb
from .sscd import resize_square

DEFAULT_SIZE = 256
BITS = 256


def _pdqhash() -> Any:
    try:
        import pdqhash
    except ImportError:
        raise DescriptorError("the pdq descriptor needs the pdqhash package (built from source; needs a C++ "
                              "compiler): pip install 'diffrep[bench]'") from None
    return pdqhash


class PDQDescriptor(Descriptor):
    """Meta PDQ as a {+-1/16} unit vector (inner product = 1 - 2 * hamming / 256)."""

    name = "pdq"
    dim = BITS

    def __init__(self, size: int = DEFAULT_SIZE, batch_size: int = 64) -> None:
        if size < 64:
            raise DescriptorError(f"pdq size must be >= 64 (PDQ works on a 64 x 64 grid), got {size}")
        self._pdq = _pdqhash()
        self.size = size
        self.batch_size = batch_size

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return resize_square(to_rgb(image), self.size)

    def hash_bits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, size, size, 3) batch -> ((N, 256) bool bits, (N,) PDQ quality 0-100; < 50 is unreliable)."""
        bits = np.empty((len(batch), BITS), bool)
        quality = np.empty(len(batch), np.int32)
        for i, x in enumerate(batch):
            h, q = self._pdq.compute(np.ascontiguousarray(x, dtype=np.uint8))
            bits[i], quality[i] = np.asarray(h).astype(bool), q
        return bits, quality

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return bits_to_unit(self.hash_bits(batch)[0])

    def fingerprint(self) -> dict[str, Any]:
        pre = {"resize": "square", "size": self.size, "resample": "bicubic", "hash": "pdq",
               "vector": "(2b-1)/sqrt(n)"}
        return library_fingerprint(self.name, self.dim, pre, {"pdqhash": self._pdq.__version__})


@register("pdq", "Meta PDQ, 256 bits as a +-1/16 unit vector (inner product = 1 - 2*hamming/256); diffrep[bench]")
def _pdq(size: int = DEFAULT_SIZE, batch_size: int = 64, **kw: Any) -> Descriptor:
    return PDQDescriptor(size=size, batch_size=batch_size)
