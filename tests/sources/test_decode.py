"""Tests for diffrep.decode using real files written by Pillow (or by hand for 16-bit RGB PNG)."""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrep.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image, image_size


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> bytes:
    """Round-trip through a real file so tests exercise on-disk bytes."""
    path = tmp_path / name
    path.write_bytes(data)
    return path.read_bytes()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reason(data: bytes, **kwargs: object) -> str:
    with pytest.raises(DecodeError) as info:
        decode_image(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.reason == str(info.value)
    return info.value.reason


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _flat_png(width: int, height: int, rows_per_block: int) -> bytes:
    """A valid all-black 8-bit grayscale PNG, built without ever holding the raw pixels.

    With a full flush the deflate state resets, so identical row blocks compress to identical bytes:
    compress two blocks, repeat the second, and patch the Adler-32 trailer.
    """
    assert height % rows_per_block == 0
    block = bytes(rows_per_block * (width + 1))  # filter byte 0 + zero pixels per row
    n_blocks = height // rows_per_block
    comp = zlib.compressobj(1)
    first = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.flush()[:-4]  # final empty block, without the (wrong) checksum
    adler = 1
    for _ in range(n_blocks):
        adler = zlib.adler32(block, adler)
    stream = first + repeat * (n_blocks - 1) + tail + struct.pack(">I", adler)
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b""))


# --- rejected files ---------------------------------------------------------------------------

def test_decode_error_is_not_a_diffrep_error() -> None:
    from diffrep.errors import DiffrepError

    assert not issubclass(DecodeError, DiffrepError)


def test_empty_file(tmp_path: Path) -> None:
    assert _reason(_write(tmp_path, "empty.png", b"")) == "empty file"


def test_text_named_jpg_and_html_named_png(tmp_path: Path) -> None:
    text = _write(tmp_path, "notes.jpg", b"just some notes\nnot an image\n")
    html = _write(tmp_path, "page.png", b"<!doctype html><html><body>hi</body></html>")
    assert _reason(text) == "not an image (unidentified format)"
    assert _reason(html) == "not an image (unidentified format)"


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _encode(Image.fromarray(_noise(240, 320)), "JPEG", quality=90)
    cut = _write(tmp_path, "cut.jpg", data[: len(data) // 2])
    assert _reason(cut).startswith("truncated image")


def test_truncated_png(tmp_path: Path) -> None:
    data = _encode(Image.fromarray(_noise(200, 200)), "PNG")
    assert _reason(_write(tmp_path, "cut.png", data[: len(data) // 2])).startswith("truncated image")


def test_corrupt_png_idat(tmp_path: Path) -> None:
    data = bytearray(_encode(Image.fromarray(_noise(100, 100)), "PNG"))
    start = data.find(b"IDAT") + 4
    for k in range(start + 16, start + 80):
        data[k] ^= 0xFF
    reason = _reason(_write(tmp_path, "bad.png", bytes(data)))
    assert reason.startswith("corrupt image data") or reason.startswith("truncated image")


def test_pixel_bomb_rejected_from_header(tmp_path: Path) -> None:
    small = _flat_png(300, 200, 50)
    assert decode_image(small).shape == (200, 300, 3) and not decode_image(small).any()
    bomb = _write(tmp_path, "bomb.png", _flat_png(20000, 20000, 500))
    assert len(bomb) < 2_000_000  # compresses small: it is the header that must stop it
    assert image_size(bomb) == (20000, 20000)
    start = time.perf_counter()
    reason = _reason(bomb)
    assert time.perf_counter() - start < 0.5
    assert reason == f"over pixel limit: 20000x20000 > {DEFAULT_MAX_PIXELS} px"
    assert _reason(bomb, max_pixels=1000).endswith("> 1000 px")


def test_pixel_limit_small(tmp_path: Path) -> None:
    data = _encode(Image.new("RGB", (40, 30)), "PNG")
    assert decode_image(data, max_pixels=1200).shape == (30, 40, 3)
    assert _reason(data, max_pixels=1199) == "over pixel limit: 40x30 > 1199 px"


def test_image_size_errors() -> None:
    with pytest.raises(DecodeError):
        image_size(b"")
    with pytest.raises(DecodeError):
        image_size(b"GIF89a-but-not-really")


# --- reduction ---------------------------------------------------------------------------------

def test_large_jpeg_reduced_at_decode(tmp_path: Path) -> None:
    img = Image.new("RGB", (6000, 4000), (20, 180, 40))
    data = _write(tmp_path, "big.jpg", _encode(img, "JPEG", quality=85))
    start = time.perf_counter()
    arr = decode_image(data, min_side=288)
    assert time.perf_counter() - start < 1.0
    assert 288 <= min(arr.shape[:2]) < 576
    assert arr.shape[1] * 4000 == pytest.approx(arr.shape[0] * 6000, rel=0.01)
    assert np.abs(arr[10, 10].astype(int) - (20, 180, 40)).max() <= 4


def test_very_large_jpeg_reduced_beyond_draft(tmp_path: Path) -> None:
    # 1/8 draft of 4000 is 500; min_side=50 needs a further reduce to stay below 100.
    data = _encode(Image.new("RGB", (6000, 4000), (200, 10, 10)), "JPEG")
    arr = decode_image(data, min_side=50)
    assert 50 <= min(arr.shape[:2]) < 100


def test_png_reduced_after_decode(tmp_path: Path) -> None:
    data = _write(tmp_path, "big.png", _encode(Image.new("RGB", (3000, 1000), (1, 2, 3)), "PNG"))
    arr = decode_image(data, min_side=288)
    assert arr.shape == (334, 1000, 3)  # factor 3, ceil division
    assert (arr == (1, 2, 3)).all()


def test_no_upscale_and_no_reduce_when_small() -> None:
    data = _encode(Image.new("RGB", (500, 300)), "PNG")
    assert decode_image(data, min_side=288).shape == (300, 500, 3)
    assert decode_image(data, min_side=1000).shape == (300, 500, 3)
    with pytest.raises(ValueError):
        decode_image(data, min_side=0)


# --- orientation -------------------------------------------------------------------------------

def test_exif_orientation_6_rotates_clockwise(tmp_path: Path) -> None:
    img = Image.new("RGB", (64, 32), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 16, 16))  # red block at stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _write(tmp_path, "rot.jpg", _encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    arr = decode_image(data)
    assert arr.shape == (64, 32, 3)  # width and height swapped
    assert arr[4, 27, 0] > 200 and arr[4, 27, 2] < 60  # red now top-right
    assert arr[4, 4, 2] > 200 and arr[4, 4, 0] < 60  # top-left is blue


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_other_formats(fmt: str) -> None:
    img = Image.new("RGB", (30, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 5, 5))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored image must be rotated 90 degrees counter-clockwise
    kwargs: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    arr = decode_image(_encode(img, fmt, exif=exif.tobytes(), **kwargs))
    assert arr.shape == (30, 20, 3)
    assert tuple(arr[28, 1]) == (255, 0, 0)  # top-left went to bottom-left
    assert tuple(arr[1, 1]) == (0, 0, 255)


def test_exif_orientation_survives_draft() -> None:
    img = Image.new("RGB", (4000, 2000), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 1000, 1000))
    exif = Image.Exif()
    exif[0x0112] = 6
    arr = decode_image(_encode(img, "JPEG", exif=exif.tobytes()), min_side=100)
    h, w = arr.shape[:2]
    assert h > w and 100 <= w < 200
    assert arr[5, w - 5, 0] > 200 and arr[h - 5, 5, 2] > 200


# --- modes and formats -------------------------------------------------------------------------

def test_rgb_png_exact_and_contiguous(tmp_path: Path) -> None:
    pixels = _noise(17, 23)
    arr = decode_image(_write(tmp_path, "x.png", _encode(Image.fromarray(pixels), "PNG")))
    assert arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]
    assert np.array_equal(arr, pixels)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 2), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    data = _write(tmp_path, "pal.png", _encode(img, "PNG", transparency=0))
    arr = decode_image(data)
    assert tuple(arr[0, 1]) == (255, 0, 0)
    assert tuple(arr[0, 0]) == (255, 255, 255)  # transparent index -> white, not black


def test_palette_png_without_transparency() -> None:
    img = Image.new("P", (3, 3), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert (decode_image(_encode(img, "PNG")) == (10, 20, 30)).all()


def test_rgba_transparent_becomes_white_and_partial_blends() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)
    rgba[0, 1] = (255, 0, 0, 255)
    rgba[1, 0] = (0, 0, 0, 128)
    rgba[1, 1] = (12, 34, 56, 0)
    arr = decode_image(_encode(Image.fromarray(rgba), "PNG"))
    assert tuple(arr[0, 0]) == (255, 255, 255)
    assert tuple(arr[1, 1]) == (255, 255, 255)
    assert tuple(arr[0, 1]) == (255, 0, 0)
    assert all(abs(int(v) - 127) <= 1 for v in arr[1, 0])


def test_la_png() -> None:
    la = Image.merge("LA", [Image.new("L", (2, 1), 40), Image.frombytes("L", (2, 1), bytes([255, 0]))])
    arr = decode_image(_encode(la, "PNG"))
    assert tuple(arr[0, 0]) == (40, 40, 40) and tuple(arr[0, 1]) == (255, 255, 255)


def test_sixteen_bit_grayscale_png(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = _write(tmp_path, "g16.png", _encode(Image.fromarray(values), "PNG"))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really 16-bit on disk
    arr = decode_image(data)
    assert arr.shape == (1, 4, 3)
    assert list(arr[0, :, 0]) == [0, 1, 128, 255]
    assert (arr[..., 0] == arr[..., 2]).all()


def test_sixteen_bit_grayscale_reduced() -> None:
    data = _encode(Image.fromarray(np.full((600, 900), 65535, dtype=np.uint16)), "PNG")
    arr = decode_image(data, min_side=100)
    assert 100 <= min(arr.shape[:2]) < 200 and (arr == 255).all()


def test_sixteen_bit_rgb_png_written_by_hand(tmp_path: Path) -> None:
    pixels = np.array([[[65535, 0, 32768], [0, 65535, 0]]], dtype=">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    png = (b"\x89PNG\r\n\x1a\n"
           + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))
    arr = decode_image(_write(tmp_path, "rgb16.png", png))
    assert arr.tolist() == [[[255, 0, 128], [0, 255, 0]]]


def test_float_tiff_unit_range_and_stretch(tmp_path: Path) -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert list(decode_image(_encode(unit, "TIFF"))[0, :, 0]) == [0, 128, 255]
    assert list(decode_image(_encode(wide, "TIFF"))[0, :, 0]) == [0, 128, 255]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    data = _write(tmp_path, "cmyk.jpg", _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    arr = decode_image(data)
    assert np.abs(arr[8, 8].astype(int) - (255, 0, 0)).max() <= 5


def test_grayscale_and_bilevel() -> None:
    gray = decode_image(_encode(Image.new("L", (5, 4), 77), "PNG"))
    assert gray.shape == (4, 5, 3) and (gray == 77).all()
    bw = Image.new("1", (3, 1), 0)
    bw.putpixel((1, 0), 1)
    assert decode_image(_encode(bw, "PNG"))[0, :, 0].tolist() == [0, 255, 0]


def test_bmp(tmp_path: Path) -> None:
    pixels = _noise(9, 11, seed=3)
    arr = decode_image(_write(tmp_path, "x.bmp", _encode(Image.fromarray(pixels), "BMP")))
    assert np.array_equal(arr, pixels)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = _write(tmp_path, "anim.gif", _encode(frames[0], "GIF", save_all=True,
                                                 append_images=frames[1:], duration=50))
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert (decode_image(data) == (255, 0, 0)).all()


def test_multipage_tiff_first_page(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (6, 4), (0, 0, 200)), Image.new("RGB", (10, 10), (200, 0, 0))]
    data = _write(tmp_path, "pages.tif", _encode(pages[0], "TIFF", save_all=True,
                                                 append_images=pages[1:]))
    assert Image.open(io.BytesIO(data)).n_frames == 2
    arr = decode_image(data)
    assert arr.shape == (4, 6, 3) and (arr == (0, 0, 200)).all()


def test_webp_lossless(tmp_path: Path) -> None:
    pixels = _noise(12, 10, seed=5)
    data = _write(tmp_path, "x.webp", _encode(Image.fromarray(pixels), "WEBP", lossless=True))
    assert np.array_equal(decode_image(data), pixels)


def test_lab_tiff() -> None:
    data = _encode(Image.new("LAB", (2, 2), (135, 208, 195)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    arr = decode_image(data)
    assert arr[0, 0, 0] > 200 and arr[0, 0, 1] < 60 and arr[0, 0, 2] < 60  # a saturated red


def test_int32_tiff_16bit_range_and_wide_range() -> None:
    in_range = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))
    wide = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32))
    assert in_range.mode == "I"
    assert list(decode_image(_encode(in_range, "TIFF"))[0, :, 1]) == [0, 128, 255]
    lo, mid, hi = decode_image(_encode(wide, "TIFF"))[0, :, 1].tolist()
    assert (lo, hi) == (0, 255) and abs(mid - 128) <= 1
