"""Shared fixtures: real emoji images from the packaged dataset (fetched once, cached), and small models
trained on them (a captioned emoji folder, a tiny Stable-Diffusion-shaped pipeline saved with save_pretrained, a
`diffrep train` caption run), 8 real Fashion-MNIST images for the small-model tests, and real local Ray clusters for the distributed tests (`ray start --head
--num-cpus 2`, kept up while consecutive tests use it; two raylets for the two-node tests)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

# benchmark truth (reviewed pair lists, emoji relations) lives beside the benchmark scripts, not in the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.fixture()
def short_grids(monkeypatch):
    """Sample grids with 2 DDIM steps instead of 25: the grid code runs, the test stays fast."""
    import diffrep.models.loop as mtrain

    monkeypatch.setattr(mtrain, "GRID_STEPS", 2)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    """8 real Fashion-MNIST training images (classes 0-7), laid out as the packaged dataset:
    ``images/train/<label>/NNNNN.png`` with ``captions.jsonl`` beside ``images/``."""
    from diffrep.datasets import get_dataset

    src = get_dataset("fashion-mnist")
    caps = {}
    for line in (src / "captions.jsonl").read_text().splitlines()[:200]:
        rec = json.loads(line)
        caps[rec["file"]] = rec["caption"]
    root = tmp_path_factory.mktemp("fashion")
    rows = []
    for label in range(8):
        rel = next(k for k in caps if k.startswith(f"train/{label}/"))
        (root / "images" / "train" / str(label)).mkdir(parents=True)
        shutil.copyfile(src / "images" / rel, root / "images" / rel)
        rows.append(json.dumps({"file": rel, "caption": caps[rel]}))
    (root / "captions.jsonl").write_text("\n".join(rows) + "\n")
    return root / "images" / "train"


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


# --- models built here, shared by the probe, membership and mitigation tests (built once per session) ---
@pytest.fixture(scope="session")
def captioned(tmp_path_factory) -> Path:
    """16 real emoji with their names as captions (captions.jsonl beside the images)."""
    from diffrep.datasets import get_dataset

    src = get_dataset("emoji")
    rows = [json.loads(x) for x in (src / "captions.jsonl").read_text().splitlines()[200:216]]
    root = tmp_path_factory.mktemp("captioned")
    for r in rows:
        shutil.copyfile(src / "images" / r["file"], root / Path(r["file"]).name)
    (root / "captions.jsonl").write_text("".join(json.dumps({"file": Path(r["file"]).name, "caption": r["caption"]})
                                                 + "\n" for r in rows))
    return root


@pytest.fixture(scope="session")
def tiny_sd(captioned, tmp_path_factory) -> Path:
    from diffrep.models.tinysd import tiny_sd_from_folder

    return tiny_sd_from_folder(captioned, tmp_path_factory.mktemp("sd") / "pipe", size=16, vae_steps=30,
                               unet_steps=40, batch=8, vae_widths=(16, 16), unet_widths=(16, 32))


@pytest.fixture(scope="session")
def caption_run(captioned, tmp_path_factory) -> Path:
    from diffrep.models.train import train

    out = tmp_path_factory.mktemp("run") / "run"
    train(captioned, out, cond="caption", steps=30, batch=8, size=16, sample_every=0, checkpoint_every=30)
    return out


RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def free_port() -> int:
    """A TCP port nothing listens on."""
    return _free_port()


class _SharedCluster:
    """One single-node cluster (``ray start --head --num-cpus 2``) for consecutive tests that use ``cluster``,
    stopped as soon as the next test does not (idle Ray processes would slow later tests)."""

    address: Optional[str] = None

    def up(self) -> str:
        if self.address is None:
            port = _free_port()
            subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--port", str(port), "--include-dashboard=false",
                            "--disable-usage-stats"], check=True, capture_output=True, timeout=180)
            self.address = f"127.0.0.1:{port}"
        return self.address

    def down(self) -> None:
        if self.address is not None:
            _stop_ray()
            self.address = None


_CLUSTER = _SharedCluster()


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture()
def cluster():
    """The address of a local Ray cluster shared by consecutive tests (see ``_SharedCluster``)."""
    pytest.importorskip("ray")
    return _CLUSTER.up()


def pytest_runtest_teardown(item, nextitem):
    if nextitem is None or "cluster" not in getattr(nextitem, "fixturenames", ()):
        _CLUSTER.down()


@pytest.fixture(scope="module")
def two_node_cluster():
    """A local cluster of two nodes (two raylets, one CPU each) per test module, stopped after it."""
    pytest.importorskip("ray")
    port = _free_port()
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                   check=True, capture_output=True, timeout=180)
    try:
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", *common], check=True, capture_output=True,
                       timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_ray()


@pytest.fixture()
def images(emoji_files, tmp_path) -> Path:
    """24 emoji and one file that is not an image."""
    d = tmp_path / "imgs"
    d.mkdir()
    for f in emoji_files[:24]:
        shutil.copyfile(f, d / f.name)
    (d / "broken.png").write_bytes(b"not an image")
    return d
