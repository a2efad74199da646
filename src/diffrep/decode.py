"""Safe image decoding: bytes in, (H, W, 3) uint8 RGB out, or a ``DecodeError`` with a reason.

Guarantees
----------
* Every failure inside Pillow (truncated data, corrupt streams, unknown formats, memory errors)
  becomes ``DecodeError``; no Pillow exception escapes.
* The pixel limit is checked from the header *before* any pixel data is decoded.
* Only a fixed list of formats is tried (``DECODE_FORMATS``); plugins that shell out to external
  programs (EPS) or are rarely legitimate are never used.
* Animated GIF/WebP and multipage TIFF: the first frame/page.
* EXIF orientation is applied (JPEG, MPO, TIFF, WebP, PNG eXIf). Unreadable EXIF is ignored rather
  than rejecting an otherwise good image.

Reduction (``min_side``)
------------------------
* JPEG/MPO reduce *at decode time*: ``Image.draft`` makes libjpeg decode at 1/2, 1/4 or 1/8 scale,
  never below ``min_side`` on the short side.
* All other formats (PNG, WebP, BMP, GIF, TIFF, PPM) are decoded at full size, then reduced with
  ``Image.reduce`` (box filter, integer factor).
* In both cases a final integer ``reduce`` leaves the short side in ``[min_side, 2 * min_side)``.
  Images whose short side is already below ``2 * min_side`` are returned at native size (never
  upscaled).

Modes
-----
Alpha (RGBA, LA, PA, palette or key-colour transparency) is composited onto white. 16-bit grayscale
(``I;16*``, and ``I`` with values in 0..65535) maps 0..65535 to 0..255 with rounding. ``I`` outside
that range and float ``F`` images: values already within [0, 1] (F only) are scaled by 255; anything
else is min-max stretched to 0..255 (a constant image becomes black; NaN becomes 0). 16-bit RGB PNGs
are reduced to 8 bits by Pillow itself (high byte). CMYK, YCbCr, LAB, HSV, RGBX, 1 and L convert to
RGB.

Memory
------
Decoding threads share a pixel budget (``DECODE_BUDGET_PIXELS``, default 32M pixels, environment
``DIFFREP_DECODE_BUDGET_PIXELS``): an image holds its pixel count of the budget while it is decoded and
converted, so many threads never hold many huge images at once (a 218 KB PNG can decode to 15000 x 15000).
An image larger than the whole budget is decoded alone. The CLI also calls :func:`bound_heap`, so the
memory of a decoded image goes back to the system when it is freed instead of staying in one thread's
malloc arena (with both, six threads decoding 25M-pixel PNGs peak at one image's memory, tested).

Global Pillow state (set once at import, documented here because it is process-wide):
``Image.MAX_IMAGE_PIXELS = None`` (we enforce our own, per-call ``max_pixels`` limit instead of
Pillow's bomb check) and ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` (truncated files must fail).
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
# Plugins must be registered before ``Image.open(formats=...)`` names them (else KeyError in Pillow).
from PIL import (BmpImagePlugin, GifImagePlugin, JpegImagePlugin, MpoImagePlugin,  # noqa: F401
                 PngImagePlugin, PpmImagePlugin, TiffImagePlugin, WebPImagePlugin)

from .defaults import DEFAULTS
from .sources import read_location

Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_PIXELS = DEFAULTS["decode"]["max_pixels"]
DECODE_BUDGET_PIXELS = int(os.environ.get("DIFFREP_DECODE_BUDGET_PIXELS", 32_000_000))


class _PixelBudget:
    """Pixels being decoded at once, across threads, at most ``limit`` (one larger image runs alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        n = max(1, min(pixels, self.limit))
        with self._cond:
            while self.used + n > self.limit:
                self._cond.wait()
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


_BUDGET = _PixelBudget(DECODE_BUDGET_PIXELS)


def bound_heap(threshold: int = 4 << 20) -> bool:
    """Ask glibc to serve allocations of ``threshold`` bytes and more with mmap and to keep that threshold
    fixed, so freed image buffers return to the system (by default glibc raises the threshold after each
    large free, and per-thread arenas then keep every thread's largest image). A process-wide setting: the
    CLI calls it; a library user may. No-op (False) off glibc or when ``MALLOC_MMAP_THRESHOLD_`` is set."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False

DECODE_FORMATS: tuple[str, ...] = tuple(
    f for f in ("JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM") if f in Image.OPEN
)

_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Modes where box-averaging pixel values is meaningful (so reduce may run before mode conversion).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION: dict[int, list[Image.Transpose]] = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


class DecodeError(Exception):
    """A file that cannot be used as an image; ``reason`` is the per-file skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(data: bytes) -> Image.Image:
    """Identify the format and parse the header only."""
    if not data:
        raise DecodeError("empty file")
    try:
        return Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image (unidentified format)") from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure is a per-file reason
        raise DecodeError(f"unreadable image header: {_describe(exc)}") from exc


def _check_size(img: Image.Image, max_pixels: int) -> tuple[int, int]:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise DecodeError(f"invalid image size: {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(f"over pixel limit: {width}x{height} > {max_pixels} px")
    return width, height


def image_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) from the header without decoding pixels."""
    img = _open(data)
    try:
        return img.size
    finally:
        img.close()


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8; 1 when absent or unreadable."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
        value = int(value)
    except Exception:  # noqa: BLE001 - broken EXIF must not reject the pixels
        return 1
    return value if 1 <= value <= 8 else 1


def _sixteen_to_l(values: np.ndarray) -> Image.Image:
    scaled = (values.astype(np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8))


def _stretch_to_l(values: np.ndarray, unit_range: bool) -> Image.Image:
    arr = values.astype(np.float64)
    finite = np.isfinite(arr)
    out = np.zeros(arr.shape, dtype=np.uint8)
    if finite.any():
        vals = arr[finite]
        lo, hi = float(vals.min()), float(vals.max())
        if unit_range and lo >= 0.0 and hi <= 1.0:
            out[finite] = np.rint(vals * 255.0).astype(np.uint8)
        elif hi > lo:
            out[finite] = np.rint((vals - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return Image.fromarray(out)


def _prepare_mode(img: Image.Image) -> Image.Image:
    """Bring exotic modes to an 8-bit mode that reduce/compositing understand."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_to_l(np.asarray(img))
    if mode == "I":
        arr = np.asarray(img)
        if arr.size and int(arr.min()) >= 0 and int(arr.max()) <= 65535:
            return _sixteen_to_l(arr)
        return _stretch_to_l(arr, unit_range=False)
    if mode == "F":
        return _stretch_to_l(np.asarray(img), unit_range=True)
    if mode == "P":
        has_alpha = "transparency" in img.info or (img.palette is not None and "A" in img.palette.mode)
        return img.convert("RGBA" if has_alpha else "RGB")
    if mode in ("1", "L", "RGB") and "transparency" in img.info:
        return img.convert("RGBA")
    if mode in ("PA", "RGBa", "La"):
        return img.convert("RGBA")
    if mode == "1":
        return img.convert("L")
    if mode in _REDUCIBLE_MODES or mode in _ALPHA_MODES:
        return img
    return img.convert("RGB")  # HSV, LAB and anything else Pillow can convert


def _to_rgb(img: Image.Image) -> Image.Image:
    """Final conversion to RGB, compositing alpha onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in _ALPHA_MODES:
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba.convert("RGB"), (0, 0), rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def _reduce(img: Image.Image, min_side: int | None) -> Image.Image:
    if min_side is None:
        return img
    factor = min(img.size) // min_side
    return img.reduce(factor) if factor >= 2 else img


def _load_reason(exc: BaseException, size: tuple[int, int]) -> str:
    if isinstance(exc, MemoryError):
        return f"out of memory decoding {size[0]}x{size[1]} image"
    text = _describe(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated image: {text}"
    return f"corrupt image data: {text}"


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 min_side: int | None = None) -> np.ndarray:
    """Decode ``data`` to an (H, W, 3) uint8 C-contiguous RGB array, or raise ``DecodeError``.

    ``min_side`` allows reduction so the short side lands in ``[min_side, 2*min_side)``.
    """
    return _decode(data, max_pixels, min_side, keep_alpha=False)[0]


def decode_with_alpha(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      min_side: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`decode_image` (RGB composited on white), plus the (H, W) uint8 alpha channel when the
    image has transparency (None otherwise)."""
    return _decode(data, max_pixels, min_side, keep_alpha=True)


def _decode(data: bytes, max_pixels: int, min_side: int | None,
            keep_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    img = _open(data)
    try:
        size = _check_size(img, max_pixels)
        try:
            if min_side is not None and img.format in _DRAFT_FORMATS and min(size) >= 2 * min_side:
                img.draft("RGB", (min_side, min_side))
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(_load_reason(exc, size)) from exc
        with _BUDGET.hold(img.size[0] * img.size[1]):
            return _load_and_convert(img, size, keep_alpha, min_side)
    finally:
        img.close()


def _load_and_convert(img: Image.Image, size: tuple[int, int], keep_alpha: bool,
                      min_side: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode the pixels of an opened image and convert them (the part that holds the pixel budget)."""
    try:
        img.load()
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(_load_reason(exc, size)) from exc
    orientation = _orientation(img)
    try:
        out = _prepare_mode(img)
        if out.mode in _REDUCIBLE_MODES or out.mode in _ALPHA_MODES:
            out = _reduce(out, min_side)
            alpha_img = out.convert("RGBA").getchannel("A") if keep_alpha and out.mode in _ALPHA_MODES else None
            out = _to_rgb(out)
        else:
            out, alpha_img = _reduce(_to_rgb(out), min_side), None
        for method in _TRANSPOSE_FOR_ORIENTATION.get(orientation, []):
            out = out.transpose(method)
            alpha_img = alpha_img.transpose(method) if alpha_img is not None else None
        arr = np.array(out, dtype=np.uint8)
        alpha = np.array(alpha_img, dtype=np.uint8) if alpha_img is not None else None
    except MemoryError as exc:
        raise DecodeError(_load_reason(exc, size)) from exc
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"cannot convert {img.mode} image to RGB: {_describe(exc)}") from exc
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DecodeError(f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr), alpha


def load_image(read: Callable[[], bytes], max_pixels: int, min_side: int) -> Optional[np.ndarray]:
    """Decoded image from ``read()`` (e.g. ``Record.read``), or None when it cannot be read or decoded."""
    try:
        return decode_image(read(), max_pixels=max_pixels, min_side=min_side)
    except (OSError, DecodeError):
        return None


def load_path(path: str, max_pixels: int, min_side: int) -> Optional[np.ndarray]:
    """Decoded image at ``path`` (file or tar member), or None when it cannot be read."""
    return load_image(lambda: read_location(path), max_pixels, min_side)


__all__ = ["DEFAULT_MAX_PIXELS", "DECODE_FORMATS", "DecodeError", "decode_image", "decode_with_alpha",
           "image_size", "load_image", "load_path"]
