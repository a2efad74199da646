"""Fashion-MNIST (Debian package ``dataset-fashion-mnist``): 70,000 28 px grey clothing images in 10 classes,
read from the installed package or from its .deb unpacked without root."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit
from .fetch import COMPLETE, cache_dir, cached, download_deb

FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {"train_x": "train-images-idx3-ubyte.gz", "train_y": "train-labels-idx1-ubyte.gz",
                       "test_x": "t10k-images-idx3-ubyte.gz", "test_y": "t10k-labels-idx1-ubyte.gz"}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _fashion_idx_dir(root: Path, progress: Optional[ProgressCallback]) -> Path:
    """Folder with the four IDX .gz files: the installed package, else a cached unpacked copy."""
    if all((FASHION_MNIST_SYSTEM_DIR / f).is_file() for f in FASHION_MNIST_FILES.values()):
        return FASHION_MNIST_SYSTEM_DIR
    return cached(root, "fashion-mnist-idx", lambda tmp: _fetch_fashion_deb(tmp, progress))


def _fetch_fashion_deb(out: Path, progress: Optional[ProgressCallback]) -> None:
    with tempfile.TemporaryDirectory(prefix="diffrep-deb-") as scratch_s:
        x = download_deb(FASHION_MNIST_DEB, Path(scratch_s), progress,
                          f"or 'apt-get install {FASHION_MNIST_DEB}'; elsewhere copy the four IDX .gz files "
                          f"({', '.join(FASHION_MNIST_FILES.values())}) into {out.parent / 'fashion-mnist-idx'} "
                          f"with an empty file named {COMPLETE}")
        found = {p.name: p for p in x.rglob("*.gz")}
        for fname in FASHION_MNIST_FILES.values():
            if fname not in found:
                raise DiffrepError(f"{FASHION_MNIST_DEB} does not contain {fname}; the package "
                                   "layout changed, report this")
            shutil.copyfile(found[fname], out / fname)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    if int.from_bytes(data[:4], "big") != 0x0800 | ndim:
        raise DiffrepError(f"{path} is not an IDX file with {ndim} dimension(s); delete it and retry")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DiffrepError(f"{path} is truncated; delete it and retry")
    return arr.reshape(shape).copy()


def load_fashion_mnist_arrays(progress: Optional[ProgressCallback] = None, *,
                              cache: str | os.PathLike[str] | None = None
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x [60000,28,28] uint8, train_y [60000] uint8, test_x [10000,28,28], test_y [10000])."""
    idx = _fashion_idx_dir(Path(cache) if cache is not None else cache_dir(), progress)
    f = FASHION_MNIST_FILES
    return (_read_idx(idx / f["train_x"], 3), _read_idx(idx / f["train_y"], 1),
            _read_idx(idx / f["test_x"], 3), _read_idx(idx / f["test_y"], 1))


def build_fashion_mnist(out: Path, progress: Optional[ProgressCallback], root: Path) -> None:
    from PIL import Image

    train_x, train_y, test_x, test_y = load_fashion_mnist_arrays(progress, cache=root)
    total = len(train_x) + len(test_x)
    done = 0
    with open(out / "captions.jsonl", "w", encoding="utf-8") as cap:
        for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
            for label in range(len(FASHION_MNIST_CLASSES)):
                (out / "images" / split / str(label)).mkdir(parents=True, exist_ok=True)
            for i, (x, y) in enumerate(zip(xs, ys)):
                rel = f"{split}/{int(y)}/{i:05d}.png"
                Image.fromarray(x).save(out / "images" / rel, format="PNG")
                cap.write(json.dumps({"file": rel, "caption": FASHION_MNIST_CLASSES[int(y)]}) + "\n")
                done += 1
                if done % 2000 == 0 or done == total:
                    emit(progress, "export", done, total)
