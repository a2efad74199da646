"""An ONNX image model run by PyTorch: the packaged SSCD graphs on a GPU where ONNX Runtime has no CUDA provider.

``sscd`` is an int8 graph in QDQ form (weights stored as int8 with per-channel scales, each activation quantized
and dequantized again, ReLU folded into the quantization's unsigned range) and ``sscd-fast`` a float16-weight
graph. PyTorch with CUDA is common where ``onnxruntime-gpu`` is not, so ``OnnxTorch`` executes such a graph
node by node with torch operations: nodes whose inputs are all constants (weight dequantization, casts of
stored weights, shapes of constants) are evaluated once when the model loads, and the rest run on the device.
Quantization is emulated exactly as the ONNX operators define it (round half to even, saturate to the
integer type's range), so the results follow ONNX Runtime's (measured against it in tests/descriptors).

Only the operators these graphs use are implemented (``OPS``); another graph gets a ``DescriptorError`` that
names what is missing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DescriptorError

_INT_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}


class UnsupportedGraph(DescriptorError):
    """The graph uses operators ``OPS`` does not implement."""


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _per_axis(param: Any, x: Any, axis: int) -> Any:
    """A scale or zero point broadcast along ``axis`` of ``x`` (a scalar stays as it is)."""
    if param.dim() == 0:
        return param
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return param.reshape(shape)


def _quantize(torch: Any, a: dict[str, Any], x: Any, scale: Any, zero: Any = None) -> Any:
    lo, hi = _INT_RANGE["uint8" if zero is None or zero.dtype == torch.uint8 else "int8"]
    axis = a.get("axis", 1)
    zp = 0.0 if zero is None else _per_axis(zero, x, axis).to(torch.float32)
    q = torch.clamp(torch.round(x / _per_axis(scale, x, axis)) + zp, lo, hi)
    return q.to(torch.uint8 if lo == 0 else torch.int8)


def _dequantize(torch: Any, a: dict[str, Any], q: Any, scale: Any, zero: Any = None) -> Any:
    axis = a.get("axis", 1)
    zp = 0.0 if zero is None else _per_axis(zero, q, axis).to(torch.float32)
    return (q.to(torch.float32) - zp) * _per_axis(scale, q, axis)


def _conv(torch: Any, a: dict[str, Any], x: Any, w: Any, b: Any = None) -> Any:
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise DescriptorError(f"Conv with auto_pad={a['auto_pad']} is not supported")
    pads = list(a.get("pads", [0] * (2 * (w.dim() - 2))))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        x = torch.nn.functional.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])
        pads = [0] * len(pads)
    return torch.nn.functional.conv2d(x, w, b, stride=a.get("strides", 1), padding=pads[:half],
                                      dilation=a.get("dilations", 1), groups=a.get("group", 1))


def _max_pool(torch: Any, a: dict[str, Any], x: Any) -> Any:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:] or a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise DescriptorError("MaxPool with asymmetric or automatic padding is not supported")
    return torch.nn.functional.max_pool2d(x, a["kernel_shape"], stride=a.get("strides", 1), padding=pads[:2],
                                          dilation=a.get("dilations", 1), ceil_mode=bool(a.get("ceil_mode", 0)))


def _gemm(torch: Any, a: dict[str, Any], x: Any, w: Any, b: Any = None) -> Any:
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if b is None else y + a.get("beta", 1.0) * b


def _reduce(fn: str) -> Callable[..., Any]:
    def run(torch: Any, a: dict[str, Any], x: Any, axes: Any = None) -> Any:
        dims = a.get("axes") if axes is None else [int(v) for v in axes.tolist()]
        dims = list(range(x.dim())) if dims is None else dims
        keep = bool(a.get("keepdims", 1))
        if fn == "mean":
            return x.mean(dim=dims, keepdim=keep)
        return torch.sqrt((x * x).sum(dim=dims, keepdim=keep))
    return run


def _cast(torch: Any, a: dict[str, Any], x: Any) -> Any:
    name = _ONNX_DTYPES.get(a["to"])
    if name is None:
        raise DescriptorError(f"Cast to ONNX type {a['to']} is not supported")
    return x.to(getattr(torch, name))


def _clip(torch: Any, a: dict[str, Any], x: Any, lo: Any = None, hi: Any = None) -> Any:
    return torch.clamp(x, min=None if lo is None else float(lo), max=None if hi is None else float(hi))


OPS: dict[str, Callable[..., Any]] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "MaxPool": _max_pool,
    "Gemm": _gemm,
    "ReduceMean": _reduce("mean"),
    "ReduceL2": _reduce("l2"),
    "Cast": _cast,
    "Clip": _clip,
    "Add": lambda torch, a, x, y: x + y,
    "Sub": lambda torch, a, x, y: x - y,
    "Mul": lambda torch, a, x, y: x * y,
    "Div": lambda torch, a, x, y: x / y,
    "Pow": lambda torch, a, x, y: torch.pow(x, y),
    "Relu": lambda torch, a, x: torch.relu(x),
    "Transpose": lambda torch, a, x: x.permute(*a["perm"]),
    "Reshape": lambda torch, a, x, shape: x.reshape(
        [x.shape[i] if int(s) == 0 and not a.get("allowzero", 0) else int(s) for i, s in enumerate(shape.tolist())]),
    "Shape": lambda torch, a, x: torch.tensor(list(x.shape)[a.get("start", 0):a.get("end")], dtype=torch.int64),
    "Expand": lambda torch, a, x, shape: x.expand(torch.broadcast_shapes(x.shape, tuple(int(s) for s in shape.tolist()))),
    "Flatten": lambda torch, a, x: x.flatten(a.get("axis", 1)) if a.get("axis", 1) else x.reshape(1, -1),
    "GlobalAveragePool": lambda torch, a, x: x.mean(dim=(2, 3), keepdim=True),
}


def _dims(value: Any) -> list[Any]:
    """A graph input's or output's dimensions: ints where fixed, names (or None) where not."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim]


def torch_cuda() -> bool:
    """Whether PyTorch is installed and sees a CUDA device; torch is imported only where an NVIDIA driver is
    present, so a CPU machine does not pay for the import."""
    import importlib.util
    import os

    if importlib.util.find_spec("torch") is None or not (os.path.exists("/proc/driver/nvidia/version")
                                                         or os.path.exists("/dev/nvidia0")):
        return False
    import torch

    return bool(torch.cuda.is_available())


class OnnxTorch:
    """An ONNX graph of the operators in ``OPS``, evaluated with torch on ``device``: ``run(x)`` takes and returns
    torch tensors (one input, the first output)."""

    def __init__(self, path: Path, device: str) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        self.torch, self.device = torch, device
        model = onnx.load(str(path))
        graph = model.graph
        missing = sorted({n.op_type for n in graph.node if n.op_type not in OPS and n.op_type != "Constant"})
        if missing:
            raise UnsupportedGraph(f"{path.name}: PyTorch cannot run its operators {', '.join(missing)}; run it "
                                  "with ONNX Runtime (--device cpu, or onnxruntime-gpu for CUDA)")
        known: dict[str, Any] = {i.name: torch.from_numpy(np.array(numpy_helper.to_array(i))) for i in graph.initializer}
        self.steps: list[tuple[Callable[..., Any], dict[str, Any], list[str], list[str]]] = []
        for node in graph.node:
            a = _attrs(node)
            if node.op_type == "Constant":
                known[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))
            elif all(not i or i in known for i in node.input) and node.op_type != "Shape":
                outs = OPS[node.op_type](torch, a, *[known[i] if i else None for i in node.input])
                known[node.output[0]] = outs  # folded: depends on stored values only
            else:
                self.steps.append((OPS[node.op_type], a, list(node.input), list(node.output)))
        # shapes and axes (int64) stay on the CPU, where the operators read them as lists
        self.consts = {k: v if v.dtype == torch.int64 else v.to(device) for k, v in known.items()}
        self.input, self.output = graph.input[0].name, graph.output[0].name
        self.input_type = _ONNX_DTYPES.get(graph.input[0].type.tensor_type.elem_type, "")
        self.input_shape = _dims(graph.input[0])
        self.output_shape = _dims(graph.output[0])

    def run(self, x: Any) -> Any:
        env = dict(self.consts)
        env[self.input] = x
        for fn, a, ins, outs in self.steps:
            env[outs[0]] = fn(self.torch, a, *[env[i] if i else None for i in ins])
        return env[self.output]


__all__ = ["OPS", "OnnxTorch", "UnsupportedGraph", "torch_cuda"]
