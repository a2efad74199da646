"""``--device``: the model descriptors run where they are told (cpu gives the vectors auto gives on a machine
without a GPU), cuda is refused with a one-line reason where there is none, and descriptors that compute on
the CPU refuse cuda."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from diffrep.cli import main
from diffrep.decode import decode_image
from diffrep.descriptors import get_descriptor
from diffrep.descriptors.onnx_torch import torch_cuda
from diffrep.errors import DescriptorError


def test_cpu_gives_the_auto_vectors(emoji_files):
    images = [decode_image(f.read_bytes()) for f in emoji_files[:4]]
    auto = get_descriptor("sscd").embed_images(images)
    cpu = get_descriptor("sscd", device="cpu").embed_images(images)
    np.testing.assert_allclose(cpu, auto, atol=1e-6)
    assert get_descriptor("pdq", device="cpu").name == "pdq"  # a CPU descriptor takes cpu as it is


def test_cuda_where_there_is_none_is_refused(tmp_path, emoji_files, capsys):
    if "CUDAExecutionProvider" in ort.get_available_providers() or torch_cuda():
        pytest.skip("this machine can run the model on CUDA")
    with pytest.raises(DescriptorError, match="onnxruntime-gpu"):
        get_descriptor("sscd", device="cuda")
    with pytest.raises(DescriptorError, match="computes on the CPU"):
        get_descriptor("pdq", device="cuda")
    with pytest.raises(DescriptorError, match="choose one of"):
        get_descriptor("sscd", device="tpu")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.png").write_bytes(emoji_files[0].read_bytes())
    assert main(["index", str(imgs), "--out", str(tmp_path / "idx"), "--device", "cuda"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0]
    assert main(["index", str(imgs), "--out", str(tmp_path / "idx"), "--device", "cpu", "-q"]) == 0
