"""The descriptor contract and registry.

A descriptor turns a batch of RGB uint8 images into float32 vectors. Each has a ``fingerprint``
(name, weights hash, preprocessing, dimension) stored with every index; an index refuses queries
embedded with a different fingerprint, because cosine scores from two models are not comparable.

``metric`` says how two vectors compare. ``"cosine"`` (almost all descriptors): unit vectors whose inner
product is the score, so FAISS inner-product search, ``diffrep index``, ``audit`` and ``dedup`` work.
Anything else (e.g. ``"tiled-l2"`` of the ``pixel`` descriptor) is scored only by the descriptor's own
``similarity(q, r)``; such descriptors cannot build an index.
"""
from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DescriptorError

_REGISTRY: dict[str, Callable[..., "Descriptor"]] = {}
_DESCRIPTIONS: dict[str, str] = {}


class Descriptor(ABC):
    """Base class. Subclasses set ``name``, ``dim`` and implement ``preprocess`` and ``embed``."""

    name: str = "descriptor"
    dim: int = 0
    #: default images per model call
    batch_size: int = 16
    #: "cosine": unit vectors, inner product = score (indexable). Anything else: use ``similarity``.
    metric: str = "cosine"

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One decoded (H, W, 3) uint8 image -> the model's fixed-size input (H', W', 3) uint8."""

    @abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, H', W', 3) uint8 batch of preprocessed images -> (N, dim) float32 vectors (unit vectors
        when ``metric == "cosine"``)."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-serializable identity: name, weights hash, preprocessing, dim."""

    def similarity(self, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(len(q), len(r)) float32 similarity matrix of two sets of this descriptor's vectors; higher
        means more similar. Default: the inner product (the cosine, for unit vectors)."""
        q = np.asarray(q, dtype=np.float32).reshape(-1, self.dim)
        r = np.asarray(r, dtype=np.float32).reshape(-1, self.dim)
        return q @ r.T

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Convenience: preprocess and embed a list of decoded images."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed(np.stack([self.preprocess(im) for im in images]))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim}>"


def register(name: str, description: str) -> Callable[[Callable[..., Descriptor]], Callable[..., Descriptor]]:
    """Decorator registering a descriptor factory under ``name``."""

    def deco(factory: Callable[..., Descriptor]) -> Callable[..., Descriptor]:
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description
        return factory

    return deco


def available() -> dict[str, str]:
    """Registered descriptor names and one-line descriptions."""
    _load_builtins()
    return dict(_DESCRIPTIONS)


#: descriptors that run a model which can run on a GPU (``device=`` cpu, cuda or auto)
DEVICE_DESCRIPTORS = ("sscd", "sscd-fast", "onnx-file", "torchscript-file")


def get_descriptor(spec: str | Descriptor, **kwargs: Any) -> Descriptor:
    """Resolve ``spec``: a registered name (``sscd``), ``onnx:PATH``, ``torchscript:PATH``, or a file path
    ending in ``.onnx`` / ``.pt`` / ``.torchscript``. ``device="cpu"|"cuda"|"auto"`` applies to the model
    descriptors (``DEVICE_DESCRIPTORS``); the others compute on the CPU, ignore ``auto`` and ``cpu`` and refuse
    ``cuda``."""
    if isinstance(spec, Descriptor):
        return spec
    _load_builtins()
    device = kwargs.get("device")
    if device is not None and spec in _REGISTRY and spec not in DEVICE_DESCRIPTORS:
        kwargs.pop("device")
        if device == "cuda":
            raise DescriptorError(f"descriptor {spec!r} computes on the CPU; --device cuda applies to "
                                  f"{', '.join(n for n in DEVICE_DESCRIPTORS if not n.endswith('-file'))}, onnx: "
                                  "and torchscript: models")
    if spec in _REGISTRY:
        return _REGISTRY[spec](**kwargs)
    kind, _, path = spec.partition(":")
    if path and kind in ("onnx", "torchscript"):
        path, options = _file_options(path)
        return _REGISTRY[f"{kind}-file"](path=path, **{**options, **kwargs})
    lower = spec.lower()
    if lower.endswith(".onnx"):
        return _REGISTRY["onnx-file"](path=spec, **kwargs)
    if lower.endswith((".pt", ".pth", ".torchscript", ".jit")):
        return _REGISTRY["torchscript-file"](path=spec, **kwargs)
    names = ", ".join(sorted(n for n in _REGISTRY if not n.endswith("-file")))
    raise DescriptorError(f"unknown descriptor {spec!r}. Use one of: {names}, or onnx:PATH / "
                          "torchscript:PATH for your own SSCD model file.")


#: declared input normalizations for float models: (mean, std) per RGB channel on the [0, 1] scale
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # SSCD, DINO/DINOv2, most torchvision models
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # OpenAI CLIP
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1] inputs
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1] inputs
}


def _file_options(path: str) -> tuple[str, dict[str, Any]]:
    """``PATH?size=224&norm=clip`` -> (PATH, {"size": 224, "norm": "clip"}): the declared preprocessing
    of a bring-your-own model file (square resize side; input normalization for float models)."""
    path, sep, query = path.partition("?")
    if not sep:
        return path, {}
    from urllib.parse import parse_qsl

    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "size":
            try:
                options["size"] = int(value)
            except ValueError:
                raise DescriptorError(f"size must be an integer number of pixels, got {value!r}") from None
            if options["size"] < 16:
                raise DescriptorError(f"size must be at least 16 px, got {value}")
        elif key == "norm":
            if value not in NORMALIZATIONS:
                raise DescriptorError(f"unknown norm {value!r}; choose one of {', '.join(NORMALIZATIONS)}")
            options["norm"] = value
        else:
            raise DescriptorError(f"unknown model file option {key!r}: use size=PIXELS and/or "
                                  f"norm={'|'.join(NORMALIZATIONS)}, e.g. onnx:model.onnx?size=224&norm=clip")
    return path, options


def _load_builtins() -> None:
    # each module registers on import; heavy libraries (torch, pdqhash, imagehash) load in the factories
    from . import sscd  # noqa: F401  (first: the default and reference descriptor)
    from . import effnet, pdq, phash, pixel  # noqa: F401


_HASH_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a weights file, cached per (path, size, mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a gray (H, W) / (H, W, 1), RGB or RGBA array; alpha is composited onto
    white (as ``decode_image`` does for files)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise DescriptorError(f"expected a uint8 image, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise DescriptorError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        from PIL import Image

        rgba = Image.fromarray(np.ascontiguousarray(a), "RGBA")
        a = np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                       .convert("RGB"))
    return np.ascontiguousarray(a)


def bits_to_unit(bits: np.ndarray) -> np.ndarray:
    """(N, n) hash bits in {0, 1} -> (N, n) float32 unit vectors v = (2b - 1) / sqrt(n).

    The inner product of two such vectors is exactly ``1 - 2 d / n`` (d = Hamming distance): every term
    is +-1/n, a power of two for n = 64 or 256, so float32 sums are exact. Conversely
    ``d = n (1 - s) / 2`` (``hamming_from_similarity``)."""
    b = np.asarray(bits).astype(bool)
    n = b.shape[1]
    return np.where(b, np.float32(1.0), np.float32(-1.0)) / np.float32(np.sqrt(n))


def hamming_from_similarity(s: np.ndarray | float, n: int) -> np.ndarray:
    """Hamming distance between two n-bit hashes from the inner product of their ``bits_to_unit`` vectors."""
    return np.rint(n * (1.0 - np.asarray(s, dtype=np.float64)) / 2.0).astype(np.int64)


def library_fingerprint(name: str, dim: int, preprocess: dict[str, Any], libraries: dict[str, str],
                        metric: str = "cosine") -> dict[str, Any]:
    """Fingerprint of a weight-free descriptor (hashes, pixels): ``weights_sha256`` hashes the algorithm,
    its parameters and the library versions, so an index refuses vectors from another version."""
    ident = json.dumps({"name": name, "preprocess": preprocess, "libraries": libraries, "metric": metric},
                       sort_keys=True)
    return {"name": name, "weights_sha256": hashlib.sha256(ident.encode()).hexdigest(),
            "preprocess": preprocess, "dim": dim, "libraries": libraries, "metric": metric}


def fingerprints_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two fingerprints are compatible when every identity field agrees."""
    keys = ("name", "weights_sha256", "preprocess", "dim")
    return all(a.get(k) == b.get(k) for k in keys)
