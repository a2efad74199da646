"""Object matching (diffrep.auditing.objects) on real emoji pasted into real emoji scenes, the alpha-keeping
decoder, and the smooth-tail p-values the fused verdict uses."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from diffrep.matching.calibration import tail_p_values
from diffrep.auditing.objects import ObjectConfig, ObjectMatcher, object_search, object_template
from diffrep.eval.bench.edits import compose_on_white
from diffrep.decode import decode_with_alpha
from diffrep.matching.masks import bbox
from diffrep.matching.templates import frame_step_share, outline_share
from conftest import paste_object


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_decode_with_alpha(emoji_files: list[Path]) -> None:
    data = emoji_files[10].read_bytes()
    rgb, alpha = decode_with_alpha(data)
    assert rgb.shape == (64, 64, 3) and alpha is not None and alpha.shape == (64, 64)
    assert alpha.min() == 0 and alpha.max() == 255
    assert (rgb[alpha == 0] == 255).all()  # composited on white, as decode_image does
    with Image.open(emoji_files[10]) as im:
        flat = compose_on_white(im.convert("RGBA")).convert("RGB")
    rgb2, alpha2 = decode_with_alpha(_png(flat))
    assert alpha2 is None and rgb2.shape == (64, 64, 3)


def test_template_is_the_objects_box(emoji_files: list[Path]) -> None:
    t = object_template(emoji_files[648].read_bytes())
    with Image.open(emoji_files[648]) as im:
        mask = np.asarray(im.convert("RGBA"))[..., 3] > 127
    assert t.method == "alpha" and t.box == bbox(mask)
    assert t.rgb.shape[:2] == t.mask.shape == (t.box[3] - t.box[1], t.box[2] - t.box[0])
    # a large image is decoded reduced, but its box is reported in the original pixels
    with Image.open(emoji_files[648]) as im:
        big = im.convert("RGBA").resize((1024, 1024), Image.Resampling.NEAREST)
    tb = object_template(_png(big))
    original = [round(v / tb.scale) for v in tb.box]  # what ObjectMatcher.match reports as train_box
    assert max(tb.rgb.shape[:2]) < 512 and all(abs(a - 16 * b) <= 16 for a, b in zip(original, t.box)), original


def test_pasted_object_is_found_with_its_box(emoji_files: list[Path]) -> None:
    m = ObjectMatcher()
    for obj, bg, seed in ((648, 2500, 3), (1200, 3100, 7), (2222, 40, 11)):
        gen, truth_box = paste_object(emoji_files[obj], emoji_files[bg], seed)
        prepared = m.prepare(gen)
        hit = m.match(prepared, object_template(emoji_files[obj].read_bytes()))
        assert hit.score > 0.95 and _iou(hit.query_box, truth_box) > 0.8, (obj, hit, truth_box)
        # the mirrored generation is found mirrored
        flipped = m.match(m.prepare(np.ascontiguousarray(gen[:, ::-1])), object_template(emoji_files[obj].read_bytes()))
        assert flipped.score > 0.95 and flipped.mirrored
        # other emoji's objects are not in this scene
        others = [m.match(prepared, object_template(emoji_files[j].read_bytes())).score
                  for j in (obj + 1, obj + 300, 900, 1700)]
        assert max(others) < hit.score - 0.1, (obj, others, hit.score)


def test_exact_paste_of_a_detailed_object_scores_near_one_at_any_size(emoji_files: list[Path]) -> None:
    """R^2 of a detailed drawing falls within 1% of scale (a cat drawing: 0.996 at its size, 0.92 at 0.5%
    off), so the refinement tries every whole-pixel size: exact pastes at sizes between the coarse steps."""
    m = ObjectMatcher()
    t = object_template(emoji_files[648].read_bytes())
    with Image.open(emoji_files[648]) as im:
        rgba = im.convert("RGBA")
    for px, at in ((103, (37, 41)), (127, (90, 12)), (151, (5, 60)), (170, (44, 44)), (189, (60, 3))):
        with Image.open(emoji_files[2500]) as b:
            scene = b.convert("RGB").resize((256, 256))
        obj = rgba.resize((px, px), Image.Resampling.BICUBIC)
        scene.paste(obj, at, obj)
        hit = m.match(m.prepare(np.asarray(scene)), t)
        assert hit.score > 0.97, (px, hit)


def test_flat_object_needs_its_own_colour() -> None:
    disc = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    from PIL import ImageDraw

    ImageDraw.Draw(disc).ellipse((8, 8, 56, 56), fill=(200, 40, 40, 255))
    scene = Image.new("RGB", (256, 256), (240, 240, 240))
    other = ImageOps.colorize(ImageOps.grayscale(disc.convert("RGB")), (40, 40, 200), (240, 240, 240))
    scene.paste(other.resize((128, 128)), (60, 60), disc.getchannel("A").resize((128, 128)))
    m = ObjectMatcher()
    assert m.match(m.prepare(np.asarray(scene)), object_template(_png(disc))).score < 0.5
    scene.paste(disc.resize((128, 128)), (60, 60), disc.resize((128, 128)))
    found = m.match(m.prepare(np.asarray(scene)), object_template(_png(disc)))
    # 0.90: a flat disc's R^2 is that sensitive to its size (found at 91 px, true 96 px); a smaller disc
    # *inside* it fits better (0.93) but has no outline there, so it is not taken
    assert found.score > 0.85 and 90 <= found.query_box[2] - found.query_box[0] <= 100


def _silhouette(path: Path) -> tuple[Image.Image, Image.Image]:
    """A near-black silhouette of the emoji at ``path`` (its alpha, thresholded) and that alpha mask."""
    with Image.open(path) as im:
        alpha = im.convert("RGBA").getchannel("A").point(lambda v: 255 if v > 127 else 0)
    shape = Image.new("RGBA", alpha.size, (20, 20, 20, 0))
    shape.putalpha(alpha)
    return shape, alpha


def test_flat_silhouette_inside_a_larger_area_of_its_colour_is_not_a_match(emoji_files: list[Path]) -> None:
    """A silhouette's pixels are one colour: without its outline any larger area of that colour fits them
    (openclipart: a chipmunk silhouette 'found' in a black costume at R^2 0.9997)."""
    shape, alpha = _silhouette(emoji_files[648])
    m = ObjectMatcher()
    dark = Image.new("RGB", (256, 256), (240, 240, 240))
    dark.paste((20, 20, 20), (20, 20, 236, 236))  # a black area larger than the silhouette at any scale tried
    assert m.match(m.prepare(np.asarray(dark)), object_template(_png(shape))).score < 0.3
    pasted = Image.new("RGB", (256, 256), (240, 240, 240))
    pasted.paste(shape.resize((128, 128)), (60, 70), shape.resize((128, 128)))
    # a flat object's R^2 falls fast when the scale is a few % off: 0.89 here, not ~1
    assert m.match(m.prepare(np.asarray(pasted)), object_template(_png(shape))).score > 0.8


def test_object_search_batches_and_records_missing(emoji_files: list[Path], tmp_path: Path) -> None:
    gen, _ = paste_object(emoji_files[648], emoji_files[2500], 3)
    paths = [str(emoji_files[648]), str(tmp_path / "gone.png"), str(emoji_files[5])]
    cand = np.array([[0, 1, 2], [2, -1, -1]])
    om = object_search(lambda i: gen, 2, cand, paths)
    assert om.scores[0, 0] > 0.95 and np.isnan(om.scores[0, 1]) and np.isnan(om.scores[1, 1])
    assert om.missing == [paths[1]]
    assert om.top[0] == om.scores[0, 0] and om.top[1] == om.scores[1, 0]


def _texture(seed: int, side: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)


def _sky(seed: int, side: int, top: tuple, bottom: tuple) -> Image.Image:
    g = np.linspace(0, 1, side)[:, None, None]
    a = np.array(top, float) * (1 - g) + np.array(bottom, float) * g
    a = np.broadcast_to(a, (side, side, 3)) + np.random.default_rng(seed).normal(0, 2, (side, side, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def test_a_full_canvas_picture_is_found_by_its_frame(emoji_files: list[Path], tmp_path: Path) -> None:
    """A training picture without an object (mask method ``whole``) is searched as a rectangle whose frame is
    its outline: pasted into a generation (an emoji on a textured canvas) it is found with its box; a
    plain picture (a sky) fits any sky, here the larger sky it was cut from (R^2 0.998) and another one
    (0.988), where no frame edge shows, and the cap keeps both at 0."""
    picture = _texture(1, 256)
    with Image.open(emoji_files[648]) as e:
        obj = e.convert("RGBA").resize((160, 160))
    picture.paste(obj, (48, 48), obj)
    picture.save(tmp_path / "picture.png")
    t = object_template((tmp_path / "picture.png").read_bytes())
    assert t.method == "whole"
    m = ObjectMatcher()
    uncapped = ObjectMatcher(ObjectConfig(outline_contrast=-1.0, frame_ratio=0.0))  # every pixel a step
    gen = _texture(2, 256)
    gen.paste(picture.resize((150, 150), Image.LANCZOS), (70, 40))
    hit = m.match(m.prepare(np.asarray(gen)), t)
    assert hit.score > 0.9 and _iou(hit.query_box, [70, 40, 220, 190]) > 0.8, hit
    assert m.match(m.prepare(np.asarray(_texture(2, 256))), t).score < 0.5
    om = object_search(lambda i: np.asarray(gen), 1, np.array([[0]]), [str(tmp_path / "picture.png")])
    assert om.scores[0, 0] > 0.9 and om.top[0] == om.scores[0, 0]

    big = _sky(1, 512, (70, 120, 200), (190, 215, 245))
    buf = io.BytesIO()
    big.crop((128, 128, 384, 384)).save(buf, format="PNG")
    sky = object_template(buf.getvalue())
    assert sky.method == "whole"
    for gen in (big.resize((256, 256), Image.LANCZOS), _sky(3, 256, (60, 110, 190), (200, 225, 250))):
        g = np.asarray(gen)
        assert uncapped.match(uncapped.prepare(g), sky).score > 0.95
        assert m.match(m.prepare(g), sky).score < 0.5


def test_tail_p_values_are_smooth_and_keep_order_beyond_the_null() -> None:
    rng = np.random.default_rng(0)
    null = np.sort(rng.normal(size=300))
    s = np.linspace(-3, 8, 500)
    p = tail_p_values(null, s, 300)
    assert np.all(np.diff(p) <= 1e-15)  # non-increasing
    beyond = p[s > null[-1]]
    assert len(beyond) > 10 and np.all(np.diff(beyond) < 0)  # strictly ordered past the largest null score
    assert beyond[-1] < 1e-6  # a score far out is far more extreme than 1 / (N + 1)
    # below the tail it is the conformal count
    mid = null[150]
    assert tail_p_values(null, np.array([mid]), 300)[0] == (1 + 150) / 301


def _line_drawing() -> Image.Image:
    """A line drawing on a transparent canvas: its mask is 3 px lines (an apple outline with a letter)."""
    from PIL import ImageDraw

    img = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((14, 20, 114, 120), outline=(10, 10, 10, 255), width=3)
    d.line((64, 20, 70, 4), fill=(10, 10, 10, 255), width=3)
    d.line((50, 50, 50, 90), fill=(10, 10, 10, 255), width=3)
    d.line((50, 70, 78, 50), fill=(10, 10, 10, 255), width=3)
    d.line((50, 70, 78, 92), fill=(10, 10, 10, 255), width=3)
    return img


def test_line_drawing_is_not_found_in_unrelated_dark_strokes() -> None:
    """Eroding a line drawing's 3 px lines by 2 px left a handful of pixels that matched any dark area
    (openclipart seed 5: an apple drawing 'found' in a mosquito and a cartoon at R^2 0.994-0.998)."""
    from PIL import ImageDraw

    m = ObjectMatcher()
    t = object_template(_png(_line_drawing()))
    assert t.mask.mean() < 0.2  # the mask is the lines
    scene = Image.new("RGB", (256, 256), (255, 255, 255))
    d = ImageDraw.Draw(scene)
    for i in range(4):  # thick dark strokes and blobs, no apple
        d.line((10 + 25 * i, 10, 20 + 20 * i, 240), fill=(15, 15, 15), width=9)
    d.ellipse((150, 20, 230, 80), fill=(15, 15, 15))
    d.ellipse((140, 150, 250, 250), fill=(15, 15, 15))
    assert m.match(m.prepare(np.asarray(scene)), t).score < 0.5
    clean = Image.new("RGB", (256, 256), (255, 255, 255))
    clean.paste(_line_drawing(), (112, 60), _line_drawing())
    scene.paste(clean.crop((120, 60, 240, 190)), (120, 60))  # the drawing pasted on a clean patch
    found = m.match(m.prepare(np.asarray(scene)), t)
    assert found.score > 0.9 and _iou(found.query_box, [126, 64, 227, 181]) > 0.8, found


def test_silhouette_inside_a_slightly_larger_dark_shape_is_not_a_match(emoji_files: list[Path]) -> None:
    """A silhouette inside a dark shape a little larger than itself has edges nearby but none along its own
    outline (openclipart seed 5: a cow silhouette inside a fawn's body at R^2 0.996)."""
    shape, alpha = _silhouette(emoji_files[648])
    m = ObjectMatcher()
    scene = Image.new("RGB", (256, 256), (240, 240, 240))
    big = alpha.resize((150, 150)).filter(ImageFilter.MaxFilter(9))  # the silhouette grown by ~4 px
    scene.paste((20, 20, 20), (50, 50), big)
    # where the best placement hugs one side, part of its outline does meet an edge: capped, not zero (0.74;
    # a pasted silhouette scores 0.89 in the test above, detailed pastes 0.95-1.0)
    assert m.match(m.prepare(np.asarray(scene)), object_template(_png(shape))).score < 0.8


def test_erosion_keeps_at_least_half_of_a_line_drawing_mask() -> None:
    """Eroding a line drawing's mask by 2 px (for blended borders) removed its thin lines but a few junction
    pixels, which then matched any dark area (openclipart seed 5: R^2 0.994-0.998 in unrelated pictures)."""
    from diffrep.auditing.objects import _resized
    from diffrep.matching.templates import eroded_mask

    t = object_template(_png(_line_drawing()))
    for f in (0.6, 1.0, 1.5):
        _, full = _resized(t, f)
        eroded = eroded_mask(full, 2)
        assert eroded.sum() >= 0.5 * full.sum() > 0
    from PIL import ImageDraw

    disc = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(disc).ellipse((8, 8, 56, 56), fill=(200, 40, 40, 255))
    _, full = _resized(object_template(_png(disc)), 2.0)
    eroded = eroded_mask(full, 2)
    assert eroded.sum() < 0.95 * full.sum()  # a solid object still loses its 2 px border (~8% here)


def test_a_frame_on_texture_is_not_a_step() -> None:
    """The frame test for full-canvas templates: a picture pasted onto a scene has a step at exactly its
    border (about half of it when the box found is a pixel off); a rectangle drawn on texture (8 px blobs) has contrast
    across half of its outline, which passes the neighbourhood test, and across the lines parallel to it
    as much, which the step test rejects."""
    tm = np.ones((150, 150), np.uint8)
    scene = np.asarray(_texture(2, 256)).astype(np.float32) - 128
    assert outline_share(scene, tm, 70, 40, 24.0) > 0.5
    assert frame_step_share(scene, (70, 40, 220, 190), 24.0) < 0.05
    pasted = _texture(2, 256)
    pasted.paste(_sky(4, 150, (200, 60, 40), (240, 200, 80)), (70, 40))
    g = np.asarray(pasted).astype(np.float32) - 128
    assert frame_step_share(g, (70, 40, 220, 190), 24.0) > 0.9
    for d in (-1, 1):  # a box a pixel off still keeps full credit (share / 0.5) within 10%
        assert frame_step_share(g, (70 + d, 40 + d, 220 + d, 190 + d), 24.0) > 0.45
    assert frame_step_share(g, (0, 0, 256, 256), 24.0) == 0.0  # no room outside: no border shows
    flush = _texture(2, 256)
    flush.paste(_sky(4, 150, (200, 60, 40), (240, 200, 80)), (0, 40))
    g = np.asarray(flush).astype(np.float32) - 128
    assert 0.65 < frame_step_share(g, (0, 40, 150, 190), 24.0) <= 0.75  # flush with the left border: 3 sides
