"""``pixel``: Carlini et al.'s tiled L2 (USENIX Security 2023, "Extracting Training Data from Diffusion
Models").

Both images are resized to a ``size`` x ``size`` square (default 64, antialiased bicubic) and split into
``tiles`` x ``tiles`` tiles (default 4 x 4 = 16). Per tile, the normalized L2 distance is the RMS
difference over the tile's pixel values in [0, 1] (sqrt(mean((a - b)^2)) over its rows, columns and
RGB channels); the image distance is the maximum over tiles, so one differing region is enough to
separate two images. Carlini et al. call an image extracted when this distance is <= 0.15 (their
16 tiles of 128 px at 512 px; here the same rule at a smaller scale, for speed).

Unlike the other descriptors, its vectors are **raw**, not unit norm: ``embed`` returns the float32 pixel
values in [0, 1], flattened tile by tile (tile row, tile column, then the tile's y, x, channel), and
``metric = "tiled-l2"``. Compare them only with ``similarity(q, r)``, which returns
``-max_tile_rms_distance`` (higher = more similar; 0 = identical, -0.15 = Carlini's threshold). Inner
products of these vectors mean nothing, so ``diffrep index`` / ``audit`` / ``dedup`` refuse this
descriptor.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DescriptorError
from .base import Descriptor, library_fingerprint, register, to_rgb
from .sscd import resize_square

DEFAULT_SIZE = 64
DEFAULT_TILES = 4


class PixelDescriptor(Descriptor):
    """Tiled L2 on small RGB squares; raw [0, 1] vectors, ``metric = "tiled-l2"``."""

    name = "pixel"
    metric = "tiled-l2"

    def __init__(self, size: int = DEFAULT_SIZE, tiles: int = DEFAULT_TILES, batch_size: int = 256,
                 chunk: int = 256) -> None:
        if tiles < 1 or size < tiles or size % tiles:
            raise DescriptorError(f"pixel: size ({size}) must be a positive multiple of tiles ({tiles})")
        self.size, self.tiles, self.batch_size, self.chunk = size, tiles, batch_size, chunk
        self.tile_px = size // tiles
        self.n_tiles = tiles * tiles
        self.tile_dim = self.tile_px * self.tile_px * 3
        self.dim = self.n_tiles * self.tile_dim

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return resize_square(to_rgb(image), self.size)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 -> (N, dim) float32 in [0, 1], tile by tile (NOT unit norm)."""
        b = np.asarray(batch)
        n, t, p = len(b), self.tiles, self.tile_px
        x = b.reshape(n, t, p, t, p, 3).transpose(0, 1, 3, 2, 4, 5)  # (N, tile row, tile col, y, x, c)
        return (x.reshape(n, self.dim).astype(np.float32) / np.float32(255.0))

    def distance(self, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(len(q), len(r)) float32 matrix of max-over-tiles RMS distances (0 = identical, <= 1).

        Per tile, ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b: one batched matmul per chunk of
        ``chunk`` x ``chunk`` pairs (float64: near-identical tiles then come out within ~1e-8 of their
        true distance; float32 cancellation would give ~3e-4 for identical ones), holding about
        chunk^2 * tiles doubles at a time."""
        T, k = self.n_tiles, self.tile_dim
        q = np.asarray(q, dtype=np.float32).reshape(-1, T, k)
        r = np.asarray(r, dtype=np.float32).reshape(-1, T, k)
        out = np.empty((len(q), len(r)), np.float32)
        c = max(1, int(self.chunk))
        for i0 in range(0, len(q), c):
            qt = np.ascontiguousarray(q[i0:i0 + c].transpose(1, 0, 2), dtype=np.float64)  # (T, cq, k)
            qn = np.einsum("tik,tik->ti", qt, qt)  # (T, cq)
            for j0 in range(0, len(r), c):
                rt = np.ascontiguousarray(r[j0:j0 + c].transpose(1, 0, 2), dtype=np.float64)  # (T, cr, k)
                rn = np.einsum("tjk,tjk->tj", rt, rt)  # (T, cr)
                d2 = qt @ rt.transpose(0, 2, 1)  # (T, cq, cr) cross terms a.b
                d2 *= -2.0
                d2 += qn[:, :, None]
                d2 += rn[:, None, :]
                worst = d2.max(axis=0)  # max over tiles of the squared distance
                np.maximum(worst, 0.0, out=worst)
                out[i0:i0 + c, j0:j0 + c] = np.sqrt(worst / k)
        return out

    def similarity(self, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``-distance(q, r)``: higher = more similar; 0 for identical images, -0.15 at Carlini's threshold."""
        return -self.distance(q, r)

    def fingerprint(self) -> dict[str, Any]:
        import PIL

        pre = {"resize": "square", "size": self.size, "resample": "bicubic", "tiles": self.tiles,
               "vector": "[0,1] pixels in tile order"}
        return library_fingerprint(self.name, self.dim, pre, {"pillow": PIL.__version__}, metric=self.metric)


@register("pixel", "Carlini et al. tiled L2 on 64 px RGB (16 tiles, max RMS; not indexable, metric tiled-l2)")
def _pixel(size: int = DEFAULT_SIZE, tiles: int = DEFAULT_TILES, batch_size: int = 256, **kw: Any) -> Descriptor:
    return PixelDescriptor(size=size, tiles=tiles, batch_size=batch_size)
