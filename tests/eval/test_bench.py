"""`diffrep bench make` / `bench run` on real emoji: ground truth, determinism, skips, ranking."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrep.eval.bench.generate import SCALE_RANGE, SourceImage, make_query, object_mask
from diffrep.eval.bench.make import make_bench, read_manifest
from diffrep.eval.bench.run import run_bench
from diffrep.cli import main
from diffrep.errors import DiffrepError

from conftest import copy_images


@pytest.fixture(scope="module")
def small_source(emoji_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real emoji plus one corrupt PNG and a groups file pairing two emoji as near-duplicates."""
    root = tmp_path_factory.mktemp("src")
    folder = copy_images(emoji_files[200:320], root / "images")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    names = sorted(p.name for p in folder.glob("*.png") if p.name != "broken.png")
    with open(root / "groups.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "group"])
        for i, n in enumerate(names):
            w.writerow([n, "pair" if i < 2 else n])
    return root


@pytest.fixture(scope="module")
def bench(small_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "bench"
    make_bench(small_source / "images", out, n=25, seed=7, groups=small_source / "groups.csv")
    return out


def test_same_seed_gives_identical_bench_and_other_seed_differs(small_source: Path, bench: Path,
                                                                  tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_bench(small_source / "images", again, n=25, seed=7, groups=small_source / "groups.csv")
    for rel in ["manifest.csv", "references.csv", "bench.json"] + [f"queries/q{i:05d}.png" for i in range(25)]:
        assert (bench / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    make_bench(small_source / "images", other, n=25, seed=8, groups=small_source / "groups.csv")
    assert (other / "manifest.csv").read_bytes() != (bench / "manifest.csv").read_bytes()


def test_manifest_ground_truth_is_consistent(bench: Path) -> None:
    rows = read_manifest(bench)
    meta = json.loads((bench / "bench.json").read_text())
    assert len(rows) == 25 and meta["queries_by_kind"] == {k: 5 for k in
                                                            ("segmix", "segmix-hard", "diagonal", "patch", "edits")}
    refs = {p.relative_to(bench).as_posix() for p in (bench / "references").glob("*.png")}
    assert len(refs) == meta["references"]
    # the two emoji of one group give one reference; the held-out fill/background images are not references
    fills = {p.name for p in (bench / "background").glob("*.png")}
    assert not fills & {Path(r).name for r in refs}
    for r in rows:
        assert r["source"] in refs
        q = Image.open(bench / r["query"])
        s = Image.open(bench / r["source"])
        x0, y0, x1, y1 = r["query_box"]
        assert 0 <= x0 < x1 <= q.size[0] and 0 <= y0 < y1 <= q.size[1]
        x0, y0, x1, y1 = r["source_box"]
        assert 0 <= x0 < x1 <= s.size[0] and 0 <= y0 < y1 <= s.size[1]
        if r["kind"] == "segmix":
            side = max(r["query_box"][2] - r["query_box"][0], r["query_box"][3] - r["query_box"][1])
            assert SCALE_RANGE[0] - 0.02 <= side / q.size[0] <= SCALE_RANGE[1] + 0.02
            assert r["params"]["mask"] == "alpha"
        if r["kind"] == "patch":  # the kept patch is the source's centre: pixels agree with the upscaled source
            up = np.asarray(s.convert("RGBA").resize(q.size, Image.Resampling.BICUBIC))
            qa = np.asarray(q.convert("RGB"), dtype=np.int16)
            bx = r["query_box"]
            alpha = up[bx[1]:bx[3], bx[0]:bx[2], 3:4] / 255.0
            src_on_white = up[bx[1]:bx[3], bx[0]:bx[2], :3] * alpha + 255 * (1 - alpha)
            assert np.abs(qa[bx[1]:bx[3], bx[0]:bx[2]] - src_on_white).mean() < 6


def test_corrupt_source_is_skipped_with_reason(small_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    info = make_bench(small_source / "images", out, n=5, seed=1)
    rows = list(csv.DictReader(open(out / "skipped.csv")))
    assert info.skipped >= 1 and any(r["path"].endswith("broken.png") and r["reason"] for r in rows)


def test_bad_arguments_are_clear_errors(small_source: Path, bench: Path, tmp_path: Path) -> None:
    with pytest.raises(DiffrepError, match="unknown query kind"):
        make_bench(small_source / "images", tmp_path / "x", kinds="segmix,blob")
    with pytest.raises(DiffrepError, match="not empty"):
        make_bench(small_source / "images", bench, n=3)
    with pytest.raises(DiffrepError, match="unknown fill"):
        make_bench(small_source / "images", tmp_path / "y", fill="paint")


def test_foreground_estimate_recovers_an_opaque_object(emoji_files: list[Path]) -> None:
    """On an emoji flattened onto white (no alpha), the estimate matches the true alpha mask."""
    ious = []
    for f in emoji_files[1000:1020]:
        rgba = Image.open(f).convert("RGBA")
        truth, how = object_mask(rgba)
        assert how == "alpha"
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, (0, 0), rgba)
        est, how = object_mask(flat)
        if how == "estimate":
            ious.append((est & truth).sum() / (est | truth).sum())
    assert len(ious) >= 15 and float(np.median(ious)) > 0.85


def test_a_scene_has_no_object_but_an_object_on_a_plain_background_has(emoji_files: list[Path]) -> None:
    """The foreground estimate needs a plain background: a canvas tiled with pictures (a busy scene, its
    border not one colour) gets ``whole``; one of those pictures on white, or on a flat grey, gets an estimate."""
    scene = Image.new("RGB", (256, 256), "white")
    for i, f in enumerate(emoji_files[1000:1016]):
        with Image.open(f) as im:
            tile = im.convert("RGBA").resize((64, 64))
        bg = Image.new("RGBA", (64, 64), tuple(int(v) for v in np.random.default_rng(i).integers(0, 255, 3)) + (255,))
        scene.paste(Image.alpha_composite(bg, tile).convert("RGB"), (64 * (i % 4), 64 * (i // 4)))
    assert object_mask(scene)[1] == "whole"
    with Image.open(emoji_files[1000]) as im:
        rgba = im.convert("RGBA")
    for colour in ("white", (120, 120, 120)):
        flat = Image.new("RGB", rgba.size, colour)
        flat.paste(rgba, (0, 0), rgba)
        assert object_mask(flat)[1] == "estimate", colour


def test_noise_fill_and_hard_segmix(emoji_files: list[Path]) -> None:
    rgba = Image.open(emoji_files[500]).convert("RGBA")
    mask, how = object_mask(rgba)
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, (0, 0), rgba)
    src = SourceImage(flat, mask, how)
    q1 = make_query("segmix-hard", src, None, np.random.default_rng(1), "noise")
    q2 = make_query("segmix-hard", src, None, np.random.default_rng(1), "noise")
    assert np.array_equal(np.asarray(q1.image), np.asarray(q2.image))
    assert {"angle", "flip", "hue_shift_deg"} <= set(q1.params)
    # outside the pasted object the canvas is noise, not white
    a = np.asarray(q1.image)
    outside = np.ones(a.shape[:2], bool)
    x0, y0, x1, y1 = q1.query_box
    outside[y0:y1, x0:x1] = False
    assert a[outside].std() > 20


def test_run_ranks_descriptors_and_reuses_embeddings(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    r = run_bench(bench, "sscd-fast,phash", out, normalize=True)
    assert r.descriptors == ["sscd-fast", "sscd-fast+norm", "phash", "phash+norm"]
    rows = list(csv.DictReader(open(out / "results.csv")))
    kinds = {row["kind"] for row in rows}
    assert kinds == {"segmix", "segmix-hard", "diagonal", "patch", "edits", "all"}
    # whole-image edits are found by SSCD; a normalized row has the same ranking (mAP) as its base
    assert r.value("sscd-fast", "edits", "recall@1") >= 0.8
    assert r.value("sscd-fast+norm", "all", "mAP") == pytest.approx(r.value("sscd-fast", "all", "mAP"))
    # predictions agree with the manifest's truth
    truth = {m["query"]: m["source"] for m in read_manifest(bench)}
    preds = list(csv.DictReader(open(out / "predictions" / "sscd-fast.csv")))
    assert all(int(p["correct"]) == (truth[p["query"]] == p["reference"]) for p in preds)
    top1 = {p["query"]: p["reference"] for p in preds if p["rank"] == "1"}
    acc = np.mean([top1.get(q) == s for q, s in truth.items()])
    assert acc == pytest.approx(r.value("sscd-fast", "all", "acc@1"))
    table = (out / "table.md").read_text()
    assert "Average Rank" in table and "`phash`" in table
    assert all((out / f"pr_{k}.png").stat().st_size > 1000 for k in kinds)
    cache = out / "embeddings" / "sscd-fast.references.npz"
    before = cache.stat().st_mtime_ns
    run_bench(bench, "sscd-fast", out)
    assert cache.stat().st_mtime_ns == before


def test_cli_bench_make_and_run(small_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = tmp_path / "cb"
    assert main(["bench", "make", str(small_source / "images"), "--out", str(b), "--n", "10",
                 "--kinds", "edits,patch", "-q"]) == 0
    assert "10 queries" in capsys.readouterr().out
    assert main(["bench", "run", str(b), "--descriptors", "phash", "-q"]) == 0
    assert "Average Rank" in capsys.readouterr().out
    assert main(["bench", "make", str(small_source / "images"), "--out", str(b)]) != 0
