"""Synthetic replication queries with ground truth (the seed paper's benchmark kinds, rebuilt).

Somepalli et al. (CVPR 2023, "Diffusion Art or Digital Forgery?", section 4) built synthetic
partial-copy sets because retrieval benchmarks held none; their generators were never released.
diffrep's versions:

- ``segmix``: the object of a source image (its mask: alpha channel, a user mask, or a foreground
  estimate, see :func:`object_mask`) scaled so its longer side spans 40-75% of a 256 px canvas, pasted
  at a random position; the rest of the canvas is filled (another image by default).
- ``segmix-hard``: the same, with the object colour-jittered, rotated (up to 30 degrees), maybe
  mirrored and blurred before pasting.
- ``diagonal``: a diagonal part of the source kept (40-60% of its area, the corner drawn at random),
  the rest filled.
- ``patch``: a central square patch of the source kept (35-55% of the short side), the rest filled.
- ``edits``: one whole-image edit (crop, flip, rotation, colour, JPEG, blur, grayscale, downscale,
  text overlay, padding, or a pasted sticker from another image).

Filling is a hook: a filler receives the canvas, the boolean ``keep`` mask and a fill image and returns
the filled canvas. ``image`` (content from another image) and ``noise`` are built in;
:func:`register_filler` adds others, e.g. a diffusion inpainter.

Every query records its boxes in pixel coordinates: ``query_box`` in the query image and
``source_box`` in the source file as stored (``[x0, y0, x1, y1]``, exclusive ends).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ...matching.masks import bbox
from .edits import EDIT_KINDS, _signed, _u, apply_edit, colour_jitter, compose_on_white

QUERY_KINDS: tuple[str, ...] = ("segmix", "segmix-hard", "diagonal", "patch", "edits")
CANVAS = 256
SCALE_RANGE = (0.40, 0.75)  # object's longer side / canvas side
EDITS_FOR_BENCH: tuple[str, ...] = EDIT_KINDS + ("overlay", "pad", "sticker")

Box = list[int]
#: filler(canvas, keep, fill_image, rng) -> filled canvas (RGB, same size)
Filler = Callable[[Image.Image, np.ndarray, "Image.Image | None", np.random.Generator], Image.Image]


@dataclass
class SourceImage:
    """A decoded source: RGB on white, and its object mask (bool, same size)."""

    rgb: Image.Image
    mask: np.ndarray
    mask_method: str


@dataclass
class Query:
    image: Image.Image
    kind: str
    query_box: Box
    source_box: Box
    params: dict[str, Any] = field(default_factory=dict)


# --- object masks ----------------------------------------------------------------------------------

def object_mask(img: Image.Image, user_mask: Image.Image | None = None) -> tuple[np.ndarray, str]:
    """The object's pixels in ``img`` (``diffrep.masks.object_mask``: alpha channel, else ``user_mask``,
    else a foreground estimate, else the whole image)."""
    from ...matching.masks import object_mask as mask_of

    alpha = None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
    user = None
    if user_mask is not None:
        m = user_mask.convert("L")
        if m.size != img.size:
            m = m.resize(img.size, Image.Resampling.NEAREST)
        user = np.asarray(m) > 127
    return mask_of(np.asarray(compose_on_white(img)), alpha, user)



# --- fillers ---------------------------------------------------------------------------------------

def _fill_image(canvas: Image.Image, keep: np.ndarray, fill: Image.Image | None,
                rng: np.random.Generator) -> Image.Image:
    if fill is None:
        return _fill_noise(canvas, keep, None, rng)
    w, h = canvas.size
    fw, fh = fill.size
    frac = _u(rng, 0.6, 1.0)  # a random crop of the fill image, stretched to the canvas
    cw, ch = max(1, round(fw * frac)), max(1, round(fh * frac))
    x0, y0 = int(rng.integers(0, fw - cw + 1)), int(rng.integers(0, fh - ch + 1))
    bg = compose_on_white(fill).crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
    return _composite(canvas, bg, keep)


def _fill_noise(canvas: Image.Image, keep: np.ndarray, fill: Image.Image | None,
                rng: np.random.Generator) -> Image.Image:
    w, h = canvas.size
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    bg = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    return _composite(canvas, bg, keep)


def _composite(canvas: Image.Image, bg: Image.Image, keep: np.ndarray) -> Image.Image:
    m = Image.fromarray((keep * 255).astype(np.uint8), "L")
    out = bg.copy()
    out.paste(canvas, (0, 0), m)
    return out


FILLERS: dict[str, Filler] = {"image": _fill_image, "noise": _fill_noise}


def register_filler(name: str, filler: Filler) -> None:
    """Add a filler (e.g. a diffusion inpainter) usable as ``fill=name``."""
    FILLERS[name] = filler


def get_filler(name: str) -> Filler:
    if name not in FILLERS:
        raise ValueError(f"unknown fill {name!r}; known: {', '.join(sorted(FILLERS))}")
    return FILLERS[name]


# --- query kinds -----------------------------------------------------------------------------------

def _upscaled(src: SourceImage) -> tuple[Image.Image, np.ndarray, float]:
    """Source RGB and mask upscaled (bicubic / nearest) so the short side is at least the canvas."""
    w, h = src.rgb.size
    s = max(1.0, CANVAS / min(w, h))
    if s == 1.0:
        return src.rgb, src.mask, 1.0
    size = (round(w * s), round(h * s))
    rgb = src.rgb.resize(size, Image.Resampling.BICUBIC)
    mask = np.asarray(Image.fromarray(src.mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)) > 127
    return rgb, mask, s


def _segmix(src: SourceImage, fill: Image.Image | None, filler: Filler, rng: np.random.Generator,
            hard: bool) -> Query:
    rgb, mask, s = _upscaled(src)
    sb = bbox(mask)
    obj = rgb.crop(tuple(sb)).convert("RGBA")
    obj.putalpha(Image.fromarray(mask[sb[1]:sb[3], sb[0]:sb[2]].astype(np.uint8) * 255, "L"))
    params: dict[str, Any] = {"mask": src.mask_method}
    if hard:
        obj, hard_params = _harden(obj, rng)
        params.update(hard_params)
    scale = _u(rng, *SCALE_RANGE)
    ow, oh = obj.size
    f = scale * CANVAS / max(ow, oh)
    tw, th = max(1, round(ow * f)), max(1, round(oh * f))
    obj = obj.resize((tw, th), Image.Resampling.BICUBIC)
    x0, y0 = int(rng.integers(0, CANVAS - tw + 1)), int(rng.integers(0, CANVAS - th + 1))
    canvas = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    canvas.paste(obj.convert("RGB"), (x0, y0))
    keep = np.zeros((CANVAS, CANVAS), bool)
    keep[y0:y0 + th, x0:x0 + tw] = np.asarray(obj)[..., 3] > 127
    out = filler(canvas, keep, fill, rng)
    params.update({"scale": scale, "object_size": [tw, th]})
    return Query(out, "segmix-hard" if hard else "segmix", bbox(keep), _unscale(sb, s, src), params)


def _harden(obj: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    alpha = obj.getchannel("A")
    rgb, params = colour_jitter(obj.convert("RGB"), rng, (0.1, 0.3), (0.1, 0.3), (0.2, 0.6), (0.02, 0.08))
    blur = _u(rng, 0.0, 2.0, 3)
    if blur > 0.3:
        rgb = rgb.filter(ImageFilter.GaussianBlur(blur * min(rgb.size) / 256))
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    flip = bool(rng.random() < 0.5)
    if flip:
        out = ImageOps.mirror(out)
    angle = _signed(rng, 0.0, 30.0, 2)
    out = out.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return out, {**params, "blur_at_256": blur, "flip": flip, "angle": angle}


def _diagonal(src: SourceImage, fill: Image.Image | None, filler: Filler, rng: np.random.Generator) -> Query:
    rgb, _, s = _upscaled(src)
    w, h = rgb.size
    area = _u(rng, 0.4, 0.6)
    corner = int(rng.integers(0, 4))  # 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left
    c = float(np.sqrt(2 * area)) if area <= 0.5 else 2.0 - float(np.sqrt(2 * (1 - area)))
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h
    if corner in (1, 2):
        u = 1.0 - u
    if corner in (2, 3):
        v = 1.0 - v
    keep = (u[None, :] + v[:, None]) < c
    out = filler(rgb, keep, fill, rng)
    box = bbox(keep)
    return Query(out, "diagonal", box, _unscale(box, s, src),
                 {"kept_area": area, "corner": ["top-left", "top-right", "bottom-right", "bottom-left"][corner]})


def _patch(src: SourceImage, fill: Image.Image | None, filler: Filler, rng: np.random.Generator) -> Query:
    rgb, _, s = _upscaled(src)
    w, h = rgb.size
    frac = _u(rng, 0.35, 0.55)
    side = max(1, round(min(w, h) * frac))
    x0, y0 = (w - side) // 2, (h - side) // 2
    keep = np.zeros((h, w), bool)
    keep[y0:y0 + side, x0:x0 + side] = True
    out = filler(rgb, keep, fill, rng)
    box = [x0, y0, x0 + side, y0 + side]
    return Query(out, "patch", box, _unscale(box, s, src), {"side_fraction": frac})


def _edits(src: SourceImage, fill: Image.Image | None, rng: np.random.Generator) -> Query:
    kind = EDITS_FOR_BENCH[int(rng.integers(len(EDITS_FOR_BENCH)))]
    if kind == "sticker":
        return _sticker(src, fill, rng)
    out, params = apply_edit(src.rgb, kind, rng)
    w, h = src.rgb.size
    source_box = [0, 0, w, h]
    if kind == "crop":  # the crop box is in the upscaled working image
        s = max(1.0, 256 / min(w, h)) if min(w, h) < 128 else 1.0
        source_box = _unscale(params["box"], s, src)
    return Query(out, "edits", [0, 0, out.size[0], out.size[1]], source_box, {"edit": params})


def _sticker(src: SourceImage, fill: Image.Image | None, rng: np.random.Generator) -> Query:
    """Paste a small second image (15-30% of the side) over the source (the 'emoji overlay' edit)."""
    rgb, _, s = _upscaled(src)
    w, h = rgb.size
    out = rgb.copy()
    params: dict[str, Any] = {"kind": "sticker"}
    if fill is not None:
        frac = _u(rng, 0.15, 0.3)
        side = max(1, round(min(w, h) * frac))
        st = fill.convert("RGBA").resize((side, side), Image.Resampling.BICUBIC)
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out.paste(st.convert("RGB"), (x0, y0), st.getchannel("A"))
        params.update({"fraction": frac, "xy": [x0, y0]})
    return Query(out, "edits", [0, 0, w, h], _unscale([0, 0, w, h], s, src), {"edit": params})


def _unscale(box: Box, s: float, src: SourceImage) -> Box:
    w, h = src.rgb.size
    x0, y0, x1, y1 = box
    return [max(0, int(np.floor(x0 / s))), max(0, int(np.floor(y0 / s))),
            min(w, int(np.ceil(x1 / s))), min(h, int(np.ceil(y1 / s)))]


def make_query(kind: str, src: SourceImage, fill: Image.Image | None, rng: np.random.Generator,
               filler: Filler | str = "image") -> Query:
    """One query of ``kind`` from ``src``; ``fill`` is the other image used for fill and stickers."""
    fn = get_filler(filler) if isinstance(filler, str) else filler
    if kind == "segmix":
        return _segmix(src, fill, fn, rng, hard=False)
    if kind == "segmix-hard":
        return _segmix(src, fill, fn, rng, hard=True)
    if kind == "diagonal":
        return _diagonal(src, fill, fn, rng)
    if kind == "patch":
        return _patch(src, fill, fn, rng)
    if kind == "edits":
        return _edits(src, fill, rng)
    raise ValueError(f"unknown query kind {kind!r}; known: {', '.join(QUERY_KINDS)}")


__all__ = ["QUERY_KINDS", "FILLERS", "Query", "SourceImage", "bbox", "get_filler", "make_query",
           "object_mask", "register_filler"]
