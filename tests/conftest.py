"""Shared fixtures: real emoji images from the packaged dataset (fetched once, cached)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# benchmark truth (reviewed pair lists, emoji relations) lives beside the benchmark scripts, not in the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.fixture(scope="session")
def emoji_images() -> Path:
    """Folder of the 3,786 real 64x64 RGBA emoji PNGs (fetched with npm on first use, then cached)."""
    from diffrep.datasets import get_dataset

    return get_dataset("emoji") / "images"


@pytest.fixture(scope="session")
def emoji_files(emoji_images: Path) -> list[Path]:
    return sorted(emoji_images.glob("*.png"))


def copy_images(files: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f.name)
    return dest


@pytest.fixture(scope="session")
def sscd():
    from diffrep.descriptors import get_descriptor

    return get_descriptor("sscd")


def paste_object(obj_file: Path, bg_file: Path, seed: int):
    """A Segmix query: the object (alpha mask) of ``obj_file`` pasted onto ``bg_file``; (RGB array, its box)."""
    import numpy as np
    from PIL import Image

    from diffrep.eval.bench.edits import compose_on_white
    from diffrep.eval.bench.generate import SourceImage, make_query, object_mask

    with Image.open(obj_file) as im:
        rgba = im.convert("RGBA")
    mask, how = object_mask(rgba)
    with Image.open(bg_file) as b:
        fill = b.convert("RGBA")
    q = make_query("segmix", SourceImage(compose_on_white(rgba), mask, how), fill, np.random.default_rng(seed))
    return np.asarray(q.image.convert("RGB")), q.query_box


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine makes OpenMP spin-wait."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
