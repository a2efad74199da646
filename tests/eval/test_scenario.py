"""Simulated-copy edits, the demo scenario and its scoring against known truth."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrep import datasets as data
from diffrep.eval.bench.edits import EDIT_KINDS, apply_edit, compose_on_white, prepare, random_edit
from diffrep.eval.scenario import build_scenario, evaluate, pixel_twins
from diffrep.errors import DiffrepError


@pytest.fixture(scope="module")
def emoji_dir(emoji_images: Path) -> Path:
    """The emoji dataset folder (the session's cached fetch)."""
    return emoji_images.parent


# ----------------------------------------------------------------------------------------- edits
def _test_image(size: int = 64) -> Image.Image:
    rng = np.random.default_rng(123)
    yy, xx = np.mgrid[0:size, 0:size]
    arr = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1).astype(np.uint8)
    arr[size // 5: size // 2, size // 6: size // 2] = [220, 30, 40]  # asymmetric block
    arr = np.clip(arr.astype(int) + rng.integers(-10, 10, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edit_kinds(kind: str):
    img = _test_image()
    out1, p1 = apply_edit(img, kind, np.random.default_rng(7))
    out2, p2 = apply_edit(img, kind, np.random.default_rng(7))
    assert out1.mode == "RGB" and out1.size == (256, 256)
    assert p1 == p2 and p1["kind"] == kind
    json.dumps(p1)
    assert out1.tobytes() == out2.tobytes()
    base = np.asarray(img.resize((256, 256), Image.Resampling.BICUBIC), dtype=np.int16)
    diff = np.abs(np.asarray(out1, dtype=np.int16) - base).mean()
    assert diff > 0.5, f"{kind} barely changed the image ({diff:.3f})"


def test_edit_strengths_in_range():
    img = _test_image(300)  # large enough: no upscaling
    for seed in range(20):
        _, crop = apply_edit(img, "crop", np.random.default_rng(seed))
        x0, y0, x1, y1 = crop["box"]
        assert 0.59 <= (x1 - x0) / 300 <= 0.91 and 0.59 <= (y1 - y0) / 300 <= 0.91
        _, rot = apply_edit(img, "rotation", np.random.default_rng(seed))
        assert 5 <= abs(rot["angle"]) <= 20
        _, jpg = apply_edit(img, "jpeg", np.random.default_rng(seed))
        assert 20 <= jpg["quality"] <= 50
        _, blur = apply_edit(img, "blur", np.random.default_rng(seed))
        assert 1 <= blur["radius_at_256"] <= 2.5 and blur["radius"] > blur["radius_at_256"]
        _, down = apply_edit(img, "downscale", np.random.default_rng(seed))
        assert 0.25 <= down["factor"] <= 0.5
    out, _ = apply_edit(img, "flip", np.random.default_rng(0))
    assert out.size == (300, 300)
    assert out.tobytes() == img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()


def test_compose_on_white_and_random_edit():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    flat = compose_on_white(rgba)
    assert flat.mode == "RGB" and flat.getpixel((1, 1)) == (255, 255, 255)
    assert flat.getpixel((0, 0)) == (0, 0, 255)
    kinds = {random_edit(_test_image(), np.random.default_rng(s))[1]["kind"] for s in range(40)}
    assert kinds == set(EDIT_KINDS)
    assert random_edit(_test_image(), np.random.default_rng(0), kinds=("flip",))[1]["kind"] == "flip"
    with pytest.raises(ValueError):
        apply_edit(_test_image(), "sharpen", np.random.default_rng(0))


# -------------------------------------------------------------------------------------- scenario
SMALL = dict(n_train=50, n_reference=20, n_copies=16, n_unseen=16)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_scenario_deterministic_and_disjoint(emoji_dir: Path, tmp_path: Path):
    a = build_scenario(tmp_path / "a", seed=3, **SMALL)
    b = build_scenario(tmp_path / "b", seed=3, **SMALL)
    c = build_scenario(tmp_path / "c", seed=4, **SMALL)
    assert _digest(a.root) == _digest(b.root)
    assert a.truth_csv.read_bytes() != c.truth_csv.read_bytes()

    groups = data.read_groups(emoji_dir)
    train = {p.name for p in a.train_dir.glob("*.png")}
    ref = {p.name for p in a.reference_dir.glob("*.png")}
    assert len(train) == 50 and len(ref) == 20
    rows = _truth(a.truth_csv)
    copies = [r for r in rows if r["is_copy"] == "1"]
    unseen_rows = [r for r in rows if r["is_copy"] == "0"]
    assert len(copies) == 16 and len(unseen_rows) == 16
    # Ground truth matches the files written.
    gens = {p.name for p in a.generations_dir.glob("*.png")}
    assert gens == {r["generation"] for r in rows}
    assert all(r["source"] in train for r in copies)
    assert [r["edit"] for r in copies] == [EDIT_KINDS[i % len(EDIT_KINDS)] for i in range(16)]
    assert all(json.loads(r["params"])["kind"] == r["edit"] for r in copies)
    assert all(r["source"] == "" and r["edit"] == "" for r in unseen_rows)
    for name in gens:
        with Image.open(a.generations_dir / name) as im:
            assert im.size == (256, 256) and im.mode == "RGB"
    # Train files are the original bytes; splits never share an emoji group.
    assert all((a.train_dir / f).read_bytes() == (emoji_dir / "images" / f).read_bytes() for f in train)
    caps = [json.loads(x) for x in (a.generations_dir / "captions.jsonl").read_text().splitlines()]
    assert {c["file"] for c in caps} == gens
    train_groups = {groups[f][0] for f in train}
    ref_groups = {groups[f][0] for f in ref}
    assert not train_groups & ref_groups
    # Unseen images are upscaled originals from groups in neither split (found via their caption).
    captions = data.read_captions(emoji_dir)
    gen_caps = {c["file"]: c["caption"] for c in caps}
    unseen_groups = set()
    for r in unseen_rows:
        with Image.open(a.generations_dir / r["generation"]) as im:
            pixels = im.tobytes()
        cands = [f for f, cap in captions.items() if cap == gen_caps[r["generation"]]]
        hits = []
        for f in cands:
            with Image.open(emoji_dir / "images" / f) as src:
                if prepare(src).tobytes() == pixels:
                    hits.append(f)
        assert hits, r["generation"]
        unseen_groups |= {groups[f][0] for f in hits}
    assert unseen_groups and not unseen_groups & (train_groups | ref_groups)


def test_scenario_reused_when_complete(emoji_dir: Path, tmp_path: Path):
    sc = build_scenario(tmp_path / "s", seed=1, **SMALL)
    marker = sc.root / "scenario.json"
    before = marker.stat().st_mtime_ns
    (sc.generations_dir / "copy_0000.png").write_bytes(b"sentinel")
    build_scenario(tmp_path / "s", seed=1, **SMALL)  # same params: reused untouched
    assert marker.stat().st_mtime_ns == before
    assert (sc.generations_dir / "copy_0000.png").read_bytes() == b"sentinel"
    build_scenario(tmp_path / "s", seed=2, **SMALL)  # new params: rebuilt
    assert (sc.generations_dir / "copy_0000.png").read_bytes() != b"sentinel"
    assert json.loads(marker.read_text())["params"]["seed"] == 2


def test_scenario_rejects_bad_requests(tmp_path: Path):
    with pytest.raises(DiffrepError):
        build_scenario(tmp_path, dataset="fashion-mnist", **SMALL)
    with pytest.raises(DiffrepError):
        build_scenario(tmp_path, n_train=-1)


# ------------------------------------------------------------------------------------ evaluation
def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


TRUTH = [
    ["copy_0000.png", 1, "a.png", "crop", "{}"],
    ["copy_0001.png", 1, "b.png", "crop", "{}"],
    ["copy_0002.png", 1, "c.png", "jpeg", "{}"],
    ["copy_0003.png", 1, "d.png", "jpeg", "{}"],
    ["unseen_0000.png", 0, "", "", "{}"],
    ["unseen_0001.png", 0, "", "", "{}"],
    ["unseen_0002.png", 0, "", "", "{}"],
    ["unseen_0003.png", 0, "", "", "{}"],
]
MATCH_HEADER = ["query_path", "rank", "train_path", "train_caption", "score", "is_replica", "p_value"]


def test_evaluate_known_numbers(tmp_path: Path):
    truth = _write(tmp_path / "truth.csv", ["generation", "is_copy", "source", "edit", "params"], TRUTH)
    g, t = "/x/generations/", "/x/train/"
    matches = _write(tmp_path / "matches.csv", MATCH_HEADER, [
        [g + "copy_0000.png", 1, t + "a.png", "", 0.9, "True", 0.001],   # found
        [g + "copy_0000.png", 2, t + "b.png", "", 0.5, "", ""],
        [g + "copy_0001.png", 1, t + "z.png", "", 0.8, "True", 0.01],    # flagged, wrong source
        [g + "copy_0001.png", 2, t + "b.png", "", 0.7, "", ""],
        [g + "copy_0002.png", 1, t + "c.png", "", 0.4, "False", 0.3],    # right file, not flagged
        ["copy_0003.png", 1, "d.png", "", 0.95, 1, 0.0],                 # ids, 1/0 flags: found
        [g + "unseen_0000.png", 1, t + "a.png", "", 0.85, "True", 0.02],  # false alarm
        [g + "unseen_0001.png", 1, t + "b.png", "", 0.2, "False", 0.8],
        [g + "unseen_0002.png", 1, t + "c.png", "", 0.3, 0, 0.6],
        # unseen_0003 has no row at all: not a false alarm
    ])
    res = evaluate(truth, matches)
    assert res["copies"] == 4 and res["copies_found"] == 2 and res["recall"] == 0.5
    assert res["recall_any_source"] == 0.75
    assert res["unseen"] == 4 and res["false_alarms"] == 1 and res["fpr"] == 0.25
    assert res["per_edit"] == {"crop": {"n": 2, "found": 1, "recall": 0.5},
                               "jpeg": {"n": 2, "found": 1, "recall": 0.5}}
    assert res["misses"] == [
        {"generation": "copy_0001.png", "source": "b.png", "edit": "crop", "top1": "z.png", "score": 0.8},
        {"generation": "copy_0002.png", "source": "c.png", "edit": "jpeg", "top1": "c.png", "score": 0.4},
    ]
    assert res["false_alarm_list"] == [{"generation": "unseen_0000.png", "top1": "a.png", "score": 0.85}]
    json.dumps(res)


def test_evaluate_credits_pixel_identical_twins(tmp_path: Path):
    """A training file with exactly the source's pixels (the emoji set draws some skin-tone variants
    identically) counts as the source; a different file does not."""
    truth = _write(tmp_path / "truth.csv", ["generation", "is_copy", "source", "edit", "params"], TRUTH)
    train = tmp_path / "train"
    train.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    for name in ("b.png", "z.png"):
        Image.fromarray(img).save(train / name)
    Image.fromarray(255 - img).save(train / "y.png")
    twins = pixel_twins(train)
    assert twins["b.png"] == twins["z.png"] != twins["y.png"]
    rows = [["copy_0001.png", 1, "z.png", "", 0.8, "True", 0.01], ["copy_0000.png", 1, "y.png", "", 0.8, "True", 0.01]]
    res = evaluate(truth, _write(tmp_path / "m.csv", MATCH_HEADER, rows), twins=twins)
    assert res["copies_found"] == 1 and res["twin_hits"] == 1 and res["recall_exact_file"] == 0.0
    assert [m["generation"] for m in res["misses"]] == ["copy_0000.png", "copy_0002.png", "copy_0003.png"]


def test_evaluate_perfect_and_empty(tmp_path: Path):
    truth = _write(tmp_path / "truth.csv", ["generation", "is_copy", "source", "edit", "params"], TRUTH)
    rows = [[r[0], 1, r[2] if r[1] else "q.png", "", 1.0 if r[1] else 0.1, bool(r[1]), ""] for r in TRUTH]
    res = evaluate(truth, _write(tmp_path / "m.csv", MATCH_HEADER, rows))
    assert (res["recall"], res["fpr"], res["misses"]) == (1.0, 0.0, [])
    res = evaluate(truth, _write(tmp_path / "e.csv", MATCH_HEADER, []))
    assert (res["recall"], res["recall_any_source"], res["fpr"]) == (0.0, 0.0, 0.0)
    assert len(res["misses"]) == 4 and res["misses"][0]["top1"] == "" and res["misses"][0]["score"] is None
    with pytest.raises(DiffrepError, match="lacks column"):
        evaluate(truth, _write(tmp_path / "bad.csv", ["query", "rank"], []))
    with pytest.raises(DiffrepError, match="does not exist"):
        evaluate(truth, tmp_path / "nope.csv")
