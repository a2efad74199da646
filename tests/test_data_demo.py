"""Packaged datasets (real fetches), simulated-copy edits, the demo scenario and its scoring."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrep import data
from diffrep.bench.edits import EDIT_KINDS, apply_edit, compose_on_white, prepare, random_edit
from diffrep.demo import build_scenario, evaluate, pixel_twins
from diffrep.errors import DiffrepError


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory):
    """$DIFFREP_CACHE when set (reuses an earlier fetch), else a fresh per-session cache."""
    root = os.environ.get("DIFFREP_CACHE") or str(tmp_path_factory.mktemp("diffrep-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFREP_CACHE", root)
        yield Path(root)


@pytest.fixture(scope="module")
def emoji_dir(cache_root: Path) -> Path:
    events = []
    path = data.get_dataset("emoji", progress=events.append)
    assert path == cache_root / "emoji"
    return path


# ------------------------------------------------------------------------------------------ data
def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFREP_CACHE", str(tmp_path / "a"))
    assert data.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("DIFFREP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.cache_dir() == tmp_path / "x" / "diffrep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert data.cache_dir() == tmp_path / "h" / ".cache" / "diffrep"


def test_unknown_dataset_lists_known():
    with pytest.raises(DiffrepError, match="emoji.*fashion-mnist"):
        data.get_dataset("imagenet")


def test_missing_npm_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    with pytest.raises(DiffrepError, match="npm is needed"):
        data.get_dataset("emoji", cache=tmp_path)
    assert not (tmp_path / "emoji").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".emoji.tmp")]


def test_emoji_counts_and_files(emoji_dir: Path):
    assert (emoji_dir / data.COMPLETE).is_file()
    assert (emoji_dir / "LICENSE").read_text().strip()
    files = sorted(p.name for p in (emoji_dir / "images").iterdir())
    assert len(files) == 3786
    groups = data.read_groups(emoji_dir)
    captions = data.read_captions(emoji_dir)
    assert set(groups) == set(files) == set(captions)
    tones = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}
    variants = [f for f in files if tones & set(Path(f).stem.split("-")[1:])]
    assert len(files) - len(variants) == 1911 and len(variants) == 1875
    assert 1200 < len(set(g for g, _c in groups.values())) < 1911
    with Image.open(emoji_dir / "images" / "1f385.png") as im:
        assert im.size == (64, 64) and im.mode == "RGBA"


def test_emoji_captions_and_groups(emoji_dir: Path):
    captions = data.read_captions(emoji_dir)
    groups = data.read_groups(emoji_dir)
    assert captions["1f385.png"] == "father christmas"
    assert captions["1f385-1f3fd.png"] == "father christmas medium skin tone"
    assert captions["1f436.png"] == "dog face"
    variants = [f for f in groups if f.startswith("1f385")]
    assert len(variants) == 6
    assert {groups[f][0] for f in variants} == {"1f385"}
    assert {groups[f][1] for f in variants} == {"People & Body"}
    two_tone = [f for f in captions if captions[f].endswith("light skin tone, dark skin tone")]
    assert two_tone and all(groups[f][0] != Path(f).stem for f in two_tone)
    # Gender variants and emoji drawn with the same picture share a group too.
    assert groups["1f468-200d-1f680.png"][0] == groups["1f469-1f3fd-200d-1f680.png"][0] \
        == groups["1f9d1-200d-1f680.png"][0]  # man / woman / person astronaut
    assert groups["1f9b8-200d-2640-fe0f.png"][0] == groups["1f9b8.png"][0]  # (woman) superhero
    assert groups["1f1eb-1f1f7.png"][0] == groups["1f1f2-1f1eb.png"][0]  # France / St. Martin flags
    # flags copy each other's designs: one family
    assert groups["1f1eb-1f1f7.png"][0] == groups["1f1ee-1f1f9.png"][0]  # France / Italy
    # mirror images, recolourings and rotations of one picture share a group
    captions = data.read_captions(emoji_dir)
    by_caption = {c: f for f, c in captions.items()}

    def same(a: str, b: str) -> bool:
        return groups[by_caption[a]][0] == groups[by_caption[b]][0]

    assert same("man in manual wheelchair", "man in manual wheelchair facing right")  # mirror
    assert same("large red circle", "large green circle")  # recolour
    assert same("orange heart", "purple heart")
    assert same("clock face three oclock", "clock face nine oclock")
    assert same("white up pointing backhand index", "white down pointing backhand index")  # rotation
    assert same("pregnant man", "pregnant woman")
    assert not same("dog face", "cat face") and not same("grinning face", "pile of poo")
    assert groups["1f436.png"][0] == "1f436" and groups["1f431.png"][0] == "1f431"  # dog / cat


def test_emoji_concept_keys():
    assert data.emoji_concept("1f385-1f3fd") == data.emoji_concept("1f385") == "claus"
    assert data.emoji_concept("1f46e-1f3fb-200d-2640-fe0f") == data.emoji_concept("1f46e") == "1f46e"
    assert data.emoji_concept("1f469-200d-1f52c") == data.emoji_concept("1f468-1f3ff-200d-1f52c")
    assert data.emoji_concept("1f436") != data.emoji_concept("1f431")


def test_npm_failure_reports_the_error(monkeypatch, tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    monkeypatch.setattr(data, "EMOJI_PACKAGE", "emoji-datasource-google@0.0.0-no-such-version")
    with pytest.raises(DiffrepError, match=r"npm pack .* failed: .*(No matching version|E404|ETARGET)"):
        data.get_dataset("emoji", cache=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_apt_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    with pytest.raises(DiffrepError, match="apt-get is needed.*dpkg"):
        data.load_fashion_mnist_arrays(cache=tmp_path)


def test_emoji_cached_and_incomplete_redone(emoji_dir: Path, tmp_path: Path):
    assert data.get_dataset("emoji") == emoji_dir  # cached: no refetch
    # An interrupted fetch (no .complete marker) is detected and rebuilt from scratch.
    partial = tmp_path / "emoji"
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "junk.png").write_bytes(b"x")
    (tmp_path / "src" / "images").mkdir(parents=True)  # a few real files instead of a second fetch
    for f in sorted((emoji_dir / "images").iterdir())[:5]:
        shutil.copyfile(f, tmp_path / "src" / "images" / f.name)
    calls = []

    def fake_build(out, progress, root):
        calls.append(out)
        shutil.copytree(tmp_path / "src" / "images", out / "images")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_build_emoji", fake_build)
        path = data.get_dataset("emoji", cache=tmp_path)
    assert calls and path == partial and (partial / data.COMPLETE).is_file()
    assert not (partial / "images" / "junk.png").exists()
    assert data.get_dataset("emoji", cache=tmp_path) == partial and len(calls) == 1  # now cached
    (partial / data.COMPLETE).write_text("emoji format 0\n")  # an older layout is rebuilt
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_build_emoji", fake_build)
        data.get_dataset("emoji", cache=tmp_path)
    assert len(calls) == 2 and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert len(list((partial / "images").iterdir())) == 5


def test_fashion_mnist_arrays(cache_root: Path):
    have_system = all((data.FASHION_MNIST_SYSTEM_DIR / f).is_file()
                      for f in data.FASHION_MNIST_FILES.values())
    if not have_system and (shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None):
        pytest.skip("apt-get/dpkg-deb unavailable and dataset-fashion-mnist not installed")
    train_x, train_y, test_x, test_y = data.load_fashion_mnist_arrays()
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert train_x.dtype == np.uint8 and set(np.unique(train_y)) == set(range(10))
    assert np.bincount(test_y).tolist() == [1000] * 10
    assert 50 < train_x.mean() < 100


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
