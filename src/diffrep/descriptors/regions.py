"""Region descriptors from one forward pass: SSCD's GeM head applied to sub-windows of its feature map.

SSCD (and its distilled student) end in ``GeM pooling (p = 3) -> linear -> L2 norm`` over the last
convolutional feature map (stride 32). Pooling a *window* of that map instead of all of it and applying
the same head gives a descriptor, on the global descriptor's scale, of the content under that window
(the R-MAC idea of Tolias et al., ICLR 2016, with SSCD's own head). One forward pass yields every
window, so a generation can be compared region by region against a training index of ordinary global
descriptors: a training object pasted into part of a new scene matches the window that covers it.

Windows: for each input scale ``s`` (default 288 and 448 px, square resize as the global descriptor),
the feature grid has ``n = s / 32`` cells; every axis-aligned window of ``h x w`` cells with
``h, w >= max(2, n // 3)`` and aspect ratio at most ``max_aspect``, at every position. GeM over a window
uses summed-area tables, so each window costs O(channels).

The head is read from the ONNX graph (Clip -> Pow -> ReduceMean -> Pow -> Gemm before the final
normalization) and the feature map is exposed as an extra output of the in-memory model; the model file
is never modified or copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DescriptorError
from .base import Descriptor
from .sscd import OnnxDescriptor, _normalize, _providers, _threads, resize_square

STRIDE = 32


@dataclass(frozen=True)
class RegionConfig:
    sizes: tuple[int, ...] = (288, 448)
    max_aspect: float = 2.0
    min_cells_div: int = 3  # smallest window side: grid // min_cells_div cells (at least 2)

    def describe(self) -> dict[str, Any]:
        return {"sizes": list(self.sizes), "max_aspect": self.max_aspect,
                "min_window": f"max(2, grid // {self.min_cells_div}) cells of {STRIDE} px"}


@dataclass
class GemHead:
    feature: str  # name of the feature-map tensor (N, C, h, w)
    p: float
    eps: float
    weight: np.ndarray  # (dim, C)
    bias: np.ndarray  # (dim,)


def _const(model: Any, name: str) -> np.ndarray:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.output and node.output[0] == name:
            if node.op_type == "Constant":
                return numpy_helper.to_array(node.attribute[0].t)
            if node.op_type == "Cast":  # e.g. fp16 weights cast to float
                return _const(model, node.input[0]).astype(np.float32)
            if node.op_type == "DequantizeLinear":
                x = _const(model, node.input[0]).astype(np.float32)
                scale = _const(model, node.input[1]).astype(np.float32)
                zero = _const(model, node.input[2]).astype(np.float32) if len(node.input) > 2 else 0.0
                if np.ndim(scale) == 1 and x.ndim > 1:  # per-axis (axis 0 by default for weights)
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                    shape = [1] * x.ndim
                    shape[axis] = -1
                    scale = scale.reshape(shape)
                    zero = np.reshape(zero, shape) if np.ndim(zero) else zero
                return (x - zero) * scale
    raise KeyError(name)


def find_gem_head(model: Any) -> GemHead:
    """Locate GeM pooling + linear projection at the end of an SSCD-style ONNX graph."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def expect(name: str, op: str) -> Any:
        node = producer.get(name)
        if node is None or node.op_type != op:
            raise DescriptorError(f"region descriptors need an SSCD-style model ending in GeM pooling and a "
                                  f"linear layer; this model has {node.op_type if node else 'an input'} where "
                                  f"{op} was expected")
        return node

    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    if not gemms:
        raise DescriptorError("region descriptors need a model with a final linear (Gemm) layer")
    gemm = gemms[-1]
    attrs = {a.name: a for a in gemm.attribute}
    pow1 = expect(gemm.input[0], "Pow")
    rmean = expect(pow1.input[0], "ReduceMean")
    pow0 = expect(rmean.input[0], "Pow")
    clip = expect(pow0.input[0], "Clip")
    feature = clip.input[0]
    if feature in producer and producer[feature].op_type == "Reshape":
        feature = producer[feature].input[0]
    try:
        p = float(_const(model, pow0.input[1]))
        eps = float(_const(model, clip.input[1]))
        weight = np.asarray(_const(model, gemm.input[1]), np.float32)
        bias = (np.asarray(_const(model, gemm.input[2]), np.float32) if len(gemm.input) > 2 and gemm.input[2]
                else np.zeros(0, np.float32))
    except KeyError as exc:
        raise DescriptorError(f"cannot read the model's pooling head ({exc.args[0]} is not a constant)") from None
    if "transB" not in attrs or attrs["transB"].i == 0:
        weight = weight.T  # Gemm without transB computes x @ B: B is (C, dim)
    if bias.size == 0:
        bias = np.zeros(weight.shape[0], np.float32)
    return GemHead(feature, p, eps, weight, bias)


def window_grid(n: int, config: RegionConfig) -> np.ndarray:
    """All windows (y, x, h, w) in cells of an n x n grid, smallest side max(2, n // min_cells_div)."""
    lo = max(2, n // config.min_cells_div)
    out = [(y, x, h, w) for h in range(lo, n + 1) for w in range(lo, n + 1)
           if max(h, w) / min(h, w) <= config.max_aspect
           for y in range(n - h + 1) for x in range(n - w + 1)]
    return np.array(out, np.int64).reshape(-1, 4)


class RegionEmbedder:
    """Region descriptors of an SSCD-style ONNX model (see the module docstring)."""

    def __init__(self, descriptor: Descriptor, config: RegionConfig | None = None,
                 threads: int | None = None) -> None:
        if not isinstance(descriptor, OnnxDescriptor):
            raise DescriptorError(f"--partial needs an ONNX SSCD descriptor (sscd, sscd-fast or onnx:PATH); "
                                  f"{descriptor.name} is not one")
        try:
            import onnx
        except ImportError:
            raise DescriptorError("region descriptors need the onnx package: pip install onnx") from None
        import onnxruntime as ort

        self.descriptor = descriptor
        self.config = config or RegionConfig()
        model = onnx.load(str(descriptor.path))
        self.head = find_gem_head(model)
        model.graph.output.append(onnx.helper.make_tensor_value_info(self.head.feature, onnx.TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or _threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                             providers=_providers(ort))
        self._input = self._session.get_inputs()[0].name
        self._uint8 = self._session.get_inputs()[0].type == "tensor(uint8)"
        self._feature_index = len(self._session.get_outputs()) - 1
        self._grids = {s: window_grid(s // STRIDE, self.config) for s in self.config.sizes}

    def fingerprint(self) -> dict[str, Any]:
        return {"descriptor": self.descriptor.fingerprint(), "regions": self.config.describe()}

    def feature_maps(self, image: np.ndarray, size: int) -> np.ndarray:
        """(C, n, n) feature map of ``image`` resized to a ``size`` square."""
        x = resize_square(image, size)[None]
        if not self._uint8:
            x = np.ascontiguousarray(_normalize(x, self.descriptor.norm).transpose(0, 3, 1, 2), dtype=np.float32)
        return self._session.run(None, {self._input: x})[self._feature_index][0]

    def pool(self, fmap: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Unit descriptors of ``windows`` (y, x, h, w in cells) of one (C, n, n) feature map."""
        p = self.head.p
        f = np.clip(fmap.astype(np.float64), self.head.eps, None) ** p
        c, n, m = f.shape
        sat = np.zeros((c, n + 1, m + 1))
        sat[:, 1:, 1:] = f.cumsum(1).cumsum(2)
        y, x, h, w = windows.T
        sums = sat[:, y + h, x + w] - sat[:, y, x + w] - sat[:, y + h, x] + sat[:, y, x]
        g = (np.clip(sums / (h * w), 1e-30, None) ** (1.0 / p)).T.astype(np.float32)  # (R, C)
        v = g @ self.head.weight.T + self.head.bias
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def regions(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (R, dim), boxes (R, 4) as [x0, y0, x1, y1] pixels of ``image``) over all scales."""
        hgt, wid = image.shape[:2]
        vecs, boxes = [], []
        for size, windows in self._grids.items():
            fmap = self.feature_maps(image, size)
            n = fmap.shape[1]
            win = windows if n == size // STRIDE else window_grid(n, self.config)
            vecs.append(self.pool(fmap, win))
            y, x, h, w = win.T
            boxes.append(np.stack([x * wid / n, y * hgt / n, (x + w) * wid / n, (y + h) * hgt / n], 1))
        return np.concatenate(vecs), np.round(np.concatenate(boxes)).astype(np.int64)


__all__ = ["GemHead", "RegionConfig", "RegionEmbedder", "find_gem_head", "window_grid"]
