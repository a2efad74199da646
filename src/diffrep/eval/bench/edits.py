"""Image edits that simulate the copies a replication audit meets in practice.

Each edit draws its strength from a numpy ``Generator`` and returns the parameters it used (plain
JSON types), so a fixed seed gives byte-identical images. Small images (under 128 px on the short
side, e.g. 64 px emoji) are first upscaled with bicubic resampling to 256 px so crops, rotations and
blurs behave as on real generations. Every edit keeps the working size.
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

EDIT_KINDS: tuple[str, ...] = ("crop", "flip", "rotation", "colour", "jpeg", "blur", "grayscale",
                               "downscale")
#: edits of near-duplicates in training collections (diffrep dedup's benchmark)
DUPLICATE_KINDS: tuple[str, ...] = ("resize", "jpeg", "colour", "flip", "crop", "pad", "blur", "overlay")
WORK_SIZE = 256  # short side small images are upscaled to
SMALL_BELOW = 128  # images whose short side is below this are upscaled first
WHITE = (255, 255, 255)


def compose_on_white(img: Image.Image) -> Image.Image:
    """Flatten any image with transparency onto a white background; return RGB."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def prepare(img: Image.Image) -> Image.Image:
    """RGB on white, upscaled (bicubic) so the short side is 256 px when it is under 128 px."""
    img = compose_on_white(img)
    w, h = img.size
    if min(w, h) < SMALL_BELOW:
        scale = WORK_SIZE / min(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    return img


def _u(rng: np.random.Generator, lo: float, hi: float, nd: int = 4) -> float:
    """A uniform draw rounded to ``nd`` decimals (the rounded value is the one applied and logged)."""
    return round(float(rng.uniform(lo, hi)), nd)


def _signed(rng: np.random.Generator, lo: float, hi: float, nd: int = 4) -> float:
    """A magnitude in [lo, hi] with a random sign."""
    mag = _u(rng, lo, hi, nd)
    return mag if rng.random() < 0.5 else -mag


def _crop(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    w, h = img.size
    fx, fy = _u(rng, 0.6, 0.9), _u(rng, 0.6, 0.9)
    cw, ch = max(1, round(w * fx)), max(1, round(h * fy))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    box = [x0, y0, x0 + cw, y0 + ch]
    out = img.crop(tuple(box)).resize((w, h), Image.Resampling.BICUBIC)
    return out, {"box": box, "keep": [fx, fy], "resized_to": [w, h]}


def _flip(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    return ImageOps.mirror(img), {"direction": "horizontal"}


def _rotation(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    angle = _signed(rng, 5.0, 20.0, 2)
    out = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=WHITE)
    return out, {"angle": angle}


def _shift_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate hue by ``shift`` turns (e.g. 0.05 = 18 degrees) in PIL's 8-bit HSV space."""
    hsv = np.asarray(img.convert("HSV"), dtype=np.uint8).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 256))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def colour_jitter(img: Image.Image, rng: np.random.Generator, brightness: tuple[float, float],
                  contrast: tuple[float, float], saturation: tuple[float, float], hue: tuple[float, float]
                  ) -> tuple[Image.Image, dict[str, Any]]:
    """Brightness, contrast and saturation factors 1 +- [lo, hi], then a hue rotation of +- [lo, hi] turns."""
    b = round(1.0 + _signed(rng, *brightness), 4)
    c = round(1.0 + _signed(rng, *contrast), 4)
    s = round(1.0 + _signed(rng, *saturation), 4)
    h = _signed(rng, *hue)
    out = ImageEnhance.Brightness(img).enhance(b)
    out = ImageEnhance.Contrast(out).enhance(c)
    out = ImageEnhance.Color(out).enhance(s)
    out = _shift_hue(out, h)
    return out, {"brightness": b, "contrast": c, "saturation": s, "hue_shift_deg": round(h * 360, 2)}


def _colour(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    return colour_jitter(img, rng, (0.1, 0.25), (0.1, 0.3), (0.2, 0.5), (0.02, 0.06))


def _jpeg(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    quality = int(rng.integers(20, 51))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        out = decoded.convert("RGB")
    return out, {"quality": quality}


def _blur(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    r256 = _u(rng, 1.0, 2.5, 3)
    radius = round(r256 * min(img.size) / 256.0, 4)
    return img.filter(ImageFilter.GaussianBlur(radius)), {"radius_at_256": r256, "radius": radius}


def _grayscale(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    return img.convert("L").convert("RGB"), {}


def _downscale(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    w, h = img.size
    factor = _u(rng, 0.25, 0.5)
    small = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = img.resize(small, Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
    return out, {"factor": factor, "small_size": list(small)}


def _resize(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    w, h = img.size
    factor = _u(rng, 0.5, 1.5)
    size = [max(8, round(w * factor)), max(8, round(h * factor))]
    return img.resize(tuple(size), Image.Resampling.BICUBIC), {"factor": factor, "size": size}


def _pad(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    w, h = img.size
    frac = _u(rng, 0.08, 0.2)
    colour = [int(c) for c in rng.integers(0, 256, 3)] if rng.random() < 0.5 else list(WHITE)
    px, py = round(w * frac), round(h * frac)
    out = Image.new("RGB", (w + 2 * px, h + 2 * py), tuple(colour))
    out.paste(img, (px, py))
    return out.resize((w, h), Image.Resampling.BICUBIC), {"fraction": frac, "colour": colour}


_WORDS = ("SALE", "sample", "DRAFT", "copyright", "new!", "stock", "v2", "HD", "preview", "meme")


def _overlay(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
    from PIL import ImageDraw, ImageFont

    w, h = img.size
    text = " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), 2))
    size = max(10, round(h * _u(rng, 0.08, 0.14)))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    out = img.copy()
    draw = ImageDraw.Draw(out)
    x, y = int(rng.integers(0, max(1, w // 3))), int(rng.integers(0, max(1, h - size - 2)))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    draw.text((x, y), text, fill=colour, font=font, stroke_width=1, stroke_fill=(255, 255, 255))
    return out, {"text": text, "xy": [x, y], "size": size, "colour": list(colour)}


_EDITS = {
    "crop": _crop, "flip": _flip, "rotation": _rotation, "colour": _colour, "jpeg": _jpeg,
    "blur": _blur, "grayscale": _grayscale, "downscale": _downscale,
    "resize": _resize, "pad": _pad, "overlay": _overlay,
}


def apply_edit(img: Image.Image, kind: str, rng: np.random.Generator
               ) -> tuple[Image.Image, dict[str, Any]]:
    """Apply edit ``kind`` to ``img`` (upscaled first when small); return (RGB image, parameters)."""
    if kind not in _EDITS:
        raise ValueError(f"unknown edit {kind!r}; known edits: {', '.join(_EDITS)}")
    work = prepare(img)
    out, params = _EDITS[kind](work, rng)
    if out.mode != "RGB":
        out = out.convert("RGB")
    return out, {"kind": kind, **params}


def random_edit(img: Image.Image, rng: np.random.Generator,
                kinds: Sequence[str] = EDIT_KINDS) -> tuple[Image.Image, dict[str, Any]]:
    """Apply one edit kind drawn uniformly from ``kinds``."""
    if not kinds:
        raise ValueError("kinds must name at least one edit")
    kind = kinds[int(rng.integers(len(kinds)))]
    return apply_edit(img, kind, rng)


__all__ = ["EDIT_KINDS", "DUPLICATE_KINDS", "apply_edit", "colour_jitter", "random_edit", "compose_on_white", "prepare"]
