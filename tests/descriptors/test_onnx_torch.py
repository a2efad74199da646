"""The packaged SSCD graphs run by PyTorch (``descriptors.onnx_torch``, what ``--device cuda`` uses where ONNX
Runtime has no CUDA provider), checked here on the CPU against ONNX Runtime on the same images."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from diffrep.decode import decode_image
from diffrep.descriptors import get_descriptor
from diffrep.descriptors.sscd import OnnxDescriptor, _runtime
from diffrep.errors import DescriptorError

torch = pytest.importorskip("torch")


def _pair(name: str, emoji_files, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    ort_d = get_descriptor(name, device="cpu")
    torch_d = OnnxDescriptor(ort_d.path, name=ort_d.name, size=ort_d.size, device="cpu", runtime="torch")
    assert (ort_d.runtime, torch_d.runtime) == ("onnxruntime", "torch")
    assert torch_d.fingerprint()["weights_sha256"] == ort_d.fingerprint()["weights_sha256"]
    images = [decode_image(f.read_bytes()) for f in emoji_files[:n]]
    return ort_d.embed_images(images), torch_d.embed_images(images)


def test_the_float_graph_gives_onnxruntimes_vectors(emoji_files):
    ort_v, torch_v = _pair("sscd-fast", emoji_files, n=8)
    np.testing.assert_allclose(torch_v, ort_v, atol=1e-5)


def test_the_int8_graph_follows_onnxruntime(emoji_files):
    """Quantization is emulated as the ONNX operators define it; int8 rounding then differs at a few values per
    layer (ONNX Runtime's fused kernels and its unfused graph differ as much: cosine 0.998 on these images)."""
    ort_v, torch_v = _pair("sscd", emoji_files)
    cos = (ort_v * torch_v).sum(axis=1)
    assert cos.min() > 0.995, cos


def test_a_graph_with_other_operators_is_refused_or_left_to_onnxruntime(tmp_path, monkeypatch):
    from diffrep.descriptors import onnx_torch

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(DescriptorError, match="cannot run its operators Softmax"):
        OnnxDescriptor(tmp_path / "m.onnx", name="m", device="cpu", runtime="torch")
    # --device auto on a machine where only PyTorch has CUDA: a graph it cannot run stays on ONNX Runtime's CPU
    monkeypatch.setattr(onnx_torch, "torch_cuda", lambda: True)
    d = OnnxDescriptor(tmp_path / "m.onnx", name="m", device="auto")
    assert d.runtime == "onnxruntime"


def test_onnxruntime_stays_the_runtime_without_a_gpu():
    import onnxruntime as ort

    from diffrep.descriptors.onnx_torch import torch_cuda

    if torch_cuda():
        pytest.skip("PyTorch sees a CUDA device here")
    assert _runtime(ort, "auto") == ("onnxruntime", _runtime(ort, "cpu")[1])
    assert _runtime(ort, "cpu", "torch") == ("torch", "cpu")
    with pytest.raises(DescriptorError, match="choose one of"):
        _runtime(ort, "cpu", "tensorrt")
