"""The descriptor contract and registry.

A descriptor turns a batch of RGB uint8 images into float32 unit vectors. Each has a ``fingerprint``
(name, weights hash, preprocessing, dimension) stored with every index; an index refuses queries
embedded with a different fingerprint, because cosine scores from two models are not comparable.
"""
from __future__ import annotations

import hashlib
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

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One decoded (H, W, 3) uint8 image -> the model's fixed-size input (H', W', 3) uint8."""

    @abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, H', W', 3) uint8 batch of preprocessed images -> (N, dim) float32 unit vectors."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-serializable identity: name, weights hash, preprocessing, dim."""

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


def get_descriptor(spec: str | Descriptor, **kwargs: Any) -> Descriptor:
    """Resolve ``spec``: a registered name (``sscd``), ``onnx:PATH``, ``torchscript:PATH``, or a file path
    ending in ``.onnx`` / ``.pt`` / ``.torchscript``."""
    if isinstance(spec, Descriptor):
        return spec
    _load_builtins()
    if spec in _REGISTRY:
        return _REGISTRY[spec](**kwargs)
    kind, _, path = spec.partition(":")
    if path and kind in ("onnx", "torchscript"):
        return _REGISTRY[f"{kind}-file"](path=path, **kwargs)
    lower = spec.lower()
    if lower.endswith(".onnx"):
        return _REGISTRY["onnx-file"](path=spec, **kwargs)
    if lower.endswith((".pt", ".pth", ".torchscript", ".jit")):
        return _REGISTRY["torchscript-file"](path=spec, **kwargs)
    names = ", ".join(sorted(n for n in _REGISTRY if not n.endswith("-file")))
    raise DescriptorError(f"unknown descriptor {spec!r}. Use one of: {names}, or onnx:PATH / "
                          "torchscript:PATH for your own SSCD model file.")


def _load_builtins() -> None:
    from . import sscd  # noqa: F401  (registers on import)


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


def fingerprints_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two fingerprints are compatible when every identity field agrees."""
    keys = ("name", "weights_sha256", "preprocess", "dim")
    return all(a.get(k) == b.get(k) for k in keys)
