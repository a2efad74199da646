"""Packaged datasets: real fetches with npm and apt, the cache, emoji captions, groups and families."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrep import datasets as data
from diffrep.errors import DiffrepError


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory):
    """$DIFFREP_CACHE when set (reuses an earlier fetch), else a fresh per-session cache."""
    root = os.environ.get("DIFFREP_CACHE") or str(tmp_path_factory.mktemp("diffrep-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFREP_CACHE", root)
        yield Path(root)


@pytest.fixture(scope="module")
def emoji_dir(cache_root: Path) -> Path:
    """The emoji dataset folder fetched into ``cache_root`` (per test module)."""
    events = []
    path = data.get_dataset("emoji", progress=events.append)
    assert path == cache_root / "emoji"
    return path



def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFREP_CACHE", str(tmp_path / "a"))
    assert data.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("DIFFREP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.cache_dir() == tmp_path / "x" / "diffrep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert data.cache_dir() == tmp_path / "h" / ".cache" / "diffrep"


def test_unknown_dataset_lists_known():
    with pytest.raises(DiffrepError, match="emoji.*fashion-mnist"):
        data.get_dataset("imagenet")


def test_missing_npm_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DiffrepError, match="npm is needed"):
        data.get_dataset("emoji", cache=tmp_path)
    assert not (tmp_path / "emoji").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".emoji.tmp")]


def test_emoji_counts_and_files(emoji_dir: Path):
    assert (emoji_dir / data.COMPLETE).is_file()
    assert (emoji_dir / "LICENSE").read_text().strip()
    files = sorted(p.name for p in (emoji_dir / "images").iterdir())
    assert len(files) == 3786
    groups = data.read_groups(emoji_dir)
    captions = data.read_captions(emoji_dir)
    assert set(groups) == set(files) == set(captions)
    tones = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}
    variants = [f for f in files if tones & set(Path(f).stem.split("-")[1:])]
    assert len(files) - len(variants) == 1911 and len(variants) == 1875
    assert 1200 < len(set(g for g, _c in groups.values())) < 1911
    with Image.open(emoji_dir / "images" / "1f385.png") as im:
        assert im.size == (64, 64) and im.mode == "RGBA"


def test_emoji_captions_and_groups(emoji_dir: Path):
    captions = data.read_captions(emoji_dir)
    groups = data.read_groups(emoji_dir)
    assert captions["1f385.png"] == "father christmas"
    assert captions["1f385-1f3fd.png"] == "father christmas medium skin tone"
    assert captions["1f436.png"] == "dog face"
    variants = [f for f in groups if f.startswith("1f385")]
    assert len(variants) == 6
    assert {groups[f][0] for f in variants} == {"1f385"}
    assert {groups[f][1] for f in variants} == {"People & Body"}
    two_tone = [f for f in captions if captions[f].endswith("light skin tone, dark skin tone")]
    assert two_tone and all(groups[f][0] != Path(f).stem for f in two_tone)
    # Gender variants and emoji drawn with the same picture share a group too.
    assert groups["1f468-200d-1f680.png"][0] == groups["1f469-1f3fd-200d-1f680.png"][0] \
        == groups["1f9d1-200d-1f680.png"][0]  # man / woman / person astronaut
    assert groups["1f9b8-200d-2640-fe0f.png"][0] == groups["1f9b8.png"][0]  # (woman) superhero
    assert groups["1f1eb-1f1f7.png"][0] == groups["1f1f2-1f1eb.png"][0]  # France / St. Martin flags
    # flags copy each other's designs: one family
    assert groups["1f1eb-1f1f7.png"][0] == groups["1f1ee-1f1f9.png"][0]  # France / Italy
    # mirror images, recolourings and rotations of one picture share a group
    captions = data.read_captions(emoji_dir)
    by_caption = {c: f for f, c in captions.items()}

    def same(a: str, b: str) -> bool:
        return groups[by_caption[a]][0] == groups[by_caption[b]][0]

    assert same("man in manual wheelchair", "man in manual wheelchair facing right")  # mirror
    assert same("large red circle", "large green circle")  # recolour
    assert same("orange heart", "purple heart")
    assert same("clock face three oclock", "clock face nine oclock")
    assert same("white up pointing backhand index", "white down pointing backhand index")  # rotation
    assert same("pregnant man", "pregnant woman")
    assert not same("dog face", "cat face") and not same("grinning face", "pile of poo")
    assert groups["1f436.png"][0] == "1f436" and groups["1f431.png"][0] == "1f431"  # dog / cat


def test_emoji_concept_keys():
    assert data.emoji_concept("1f385-1f3fd") == data.emoji_concept("1f385") == "claus"
    assert data.emoji_concept("1f46e-1f3fb-200d-2640-fe0f") == data.emoji_concept("1f46e") == "1f46e"
    assert data.emoji_concept("1f469-200d-1f52c") == data.emoji_concept("1f468-1f3ff-200d-1f52c")
    assert data.emoji_concept("1f436") != data.emoji_concept("1f431")


def test_npm_failure_reports_the_error(monkeypatch, tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    monkeypatch.setattr(data.emoji, "EMOJI_PACKAGE", "emoji-datasource-google@0.0.0-no-such-version")
    with pytest.raises(DiffrepError, match=r"npm pack .* failed: .*(No matching version|E404|ETARGET)"):
        data.get_dataset("emoji", cache=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_apt_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(data.fashion, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DiffrepError, match="apt-get is needed.*dpkg"):
        data.load_fashion_mnist_arrays(cache=tmp_path)


def test_emoji_cached_and_incomplete_redone(emoji_dir: Path, tmp_path: Path):
    assert data.get_dataset("emoji") == emoji_dir  # cached: no refetch
    # An interrupted fetch (no .complete marker) is detected and rebuilt from scratch.
    partial = tmp_path / "emoji"
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "junk.png").write_bytes(b"x")
    (tmp_path / "src" / "images").mkdir(parents=True)  # a few real files instead of a second fetch
    for f in sorted((emoji_dir / "images").iterdir())[:5]:
        shutil.copyfile(f, tmp_path / "src" / "images" / f.name)
    calls = []

    def fake_build(out, progress, root):
        calls.append(out)
        shutil.copytree(tmp_path / "src" / "images", out / "images")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "build_emoji", fake_build)
        path = data.get_dataset("emoji", cache=tmp_path)
    assert calls and path == partial and (partial / data.COMPLETE).is_file()
    assert not (partial / "images" / "junk.png").exists()
    assert data.get_dataset("emoji", cache=tmp_path) == partial and len(calls) == 1  # now cached
    (partial / data.COMPLETE).write_text("emoji format 0\n")  # an older layout is rebuilt
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "build_emoji", fake_build)
        data.get_dataset("emoji", cache=tmp_path)
    assert len(calls) == 2 and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert len(list((partial / "images").iterdir())) == 5


def test_fashion_mnist_arrays(cache_root: Path):
    have_system = all((data.FASHION_MNIST_SYSTEM_DIR / f).is_file()
                      for f in data.FASHION_MNIST_FILES.values())
    if not have_system and (shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None):
        pytest.skip("apt-get/dpkg-deb unavailable and dataset-fashion-mnist not installed")
    train_x, train_y, test_x, test_y = data.load_fashion_mnist_arrays()
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert train_x.dtype == np.uint8 and set(np.unique(train_y)) == set(range(10))
    assert np.bincount(test_y).tolist() == [1000] * 10
    assert 50 < train_x.mean() < 100
