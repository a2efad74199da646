"""Partial replication: region descriptors from SSCD's feature map, region search, `audit --partial`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrep.auditing.evidence import reference_top
from diffrep.auditing.partial import FlatIndex, aggregate, region_search
from diffrep.auditing.run import audit
from diffrep.eval.bench.edits import compose_on_white
from diffrep.eval.bench.generate import SourceImage, make_query, object_mask
from diffrep.descriptors import get_descriptor
from diffrep.descriptors.regions import RegionConfig, RegionEmbedder, window_grid
from diffrep.errors import DescriptorError, DiffrepError
from diffrep.matching.masks import bbox
from diffrep.indexing.build import index

from conftest import copy_images


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(compose_on_white(im))


@pytest.mark.parametrize("name", ["sscd", "sscd-fast"])
def test_whole_window_equals_the_global_descriptor(name: str, emoji_files: list[Path]) -> None:
    """The head read from the graph is the model's own: pooling the whole map reproduces its output."""
    d = get_descriptor(name)
    emb = RegionEmbedder(d, RegionConfig(sizes=(288,)))
    for f in emoji_files[:3]:
        img = _rgb(f)
        fmap = emb.feature_maps(img, 288)
        n = fmap.shape[1]
        whole = emb.pool(fmap, np.array([[0, 0, n, n]]))[0]
        glob = d.embed_images([img])[0]
        assert float(whole @ glob) > 0.999


def test_window_grid_and_boxes(emoji_files: list[Path]) -> None:
    cfg = RegionConfig(sizes=(288,))
    win = window_grid(9, cfg)
    assert win[:, 2:].min() == 3 and win[:, 2:].max() == 9
    assert ((win[:, 0] + win[:, 2]) <= 9).all() and ((win[:, 1] + win[:, 3]) <= 9).all()
    ratio = np.maximum(win[:, 2], win[:, 3]) / np.minimum(win[:, 2], win[:, 3])
    assert ratio.max() <= 2.0 and len(win) == len({tuple(w) for w in win})
    emb = RegionEmbedder(get_descriptor("sscd-fast"), cfg)
    img = np.asarray(Image.open(emoji_files[0]).convert("RGB").resize((300, 200)))
    vecs, boxes = emb.regions(img)
    assert vecs.shape == (len(win), 512) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert boxes[:, 2].max() == 300 and boxes[:, 3].max() == 200 and boxes.min() == 0


def test_aggregate_keeps_each_training_image_best_window() -> None:
    scores = np.array([[0.9, 0.5], [0.95, 0.8], [0.7, 0.6]], np.float32)
    ids = np.array([[3, 1], [1, 3], [2, -1]])
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]])
    s, i, b = aggregate(scores, ids, boxes, k=3)
    assert i.tolist() == [1, 3, 2] and np.allclose(s, [0.95, 0.9, 0.7])
    assert b.tolist() == [[5, 5, 20, 20], [0, 0, 10, 10], [1, 1, 2, 2]]
    s, i, _ = aggregate(scores, ids, boxes, k=2, exclude=1)
    assert i.tolist() == [3, 2]


def test_region_search_finds_pasted_objects_that_global_search_misses(emoji_files: list[Path]) -> None:
    """Real emoji pasted at 40-75% scale onto other emoji: the window search ranks the source first far
    more often than the global descriptor does."""
    d = get_descriptor("sscd-fast")
    train = emoji_files[100:1300:2]
    fills = emoji_files[1500:1520]
    vecs = d.embed_images([_rgb(f) for f in train])
    flat = FlatIndex(vecs)
    queries, truth = [], []
    for i in range(16):
        j = (i * 37) % len(train)
        with Image.open(train[j]) as im:
            rgba = im.convert("RGBA")
        mask, how = object_mask(rgba)
        with Image.open(fills[i]) as f:
            fill = f.convert("RGBA")
        q = make_query("segmix", SourceImage(compose_on_white(rgba), mask, how), fill, np.random.default_rng(i))
        queries.append(np.asarray(q.image))
        truth.append(j)
    rm = region_search(lambda i: queries[i], len(queries), flat, RegionEmbedder(d), k=5)
    region_top1 = np.mean(rm.ids[:, 0] == np.array(truth))
    _, gl = flat.search(d.embed_images(queries), 1)
    global_top1 = np.mean(gl[:, 0] == np.array(truth))
    assert region_top1 >= 0.6 and region_top1 >= global_top1 + 0.25
    assert rm.windows > 1000 and rm.seconds > 0 and (rm.sizes == 256).all()


def test_non_onnx_descriptor_is_refused() -> None:
    with pytest.raises(DescriptorError, match="ONNX SSCD"):
        RegionEmbedder(get_descriptor("phash"))


def test_audit_partial_writes_region_evidence(emoji_files: list[Path], tmp_path: Path) -> None:
    train = copy_images(emoji_files[620:660], tmp_path / "train")
    ref = copy_images(emoji_files[2000:2020], tmp_path / "ref")
    gen = tmp_path / "gen"
    gen.mkdir()
    with Image.open(emoji_files[648]) as im:
        rgba = im.convert("RGBA")
    mask, how = object_mask(rgba)
    with Image.open(emoji_files[2500]) as f:
        fill = f.convert("RGBA")
    q = make_query("segmix", SourceImage(compose_on_white(rgba), mask, how), fill, np.random.default_rng(3))
    q.image.save(gen / "pasted.png")
    Image.open(emoji_files[3000]).save(gen / "unseen.png")
    index(train, tmp_path / "idx", descriptor="sscd-fast")
    res = audit(gen, tmp_path / "idx", tmp_path / "out", reference=ref, partial=True, partial_k=3,
                partial_background_sample=10, pool_null="auto")
    rows = list(csv.DictReader(open(tmp_path / "out" / "matches.csv")))
    assert {"match_kind", "region_score", "object_score", "query_box", "train_box"} <= set(rows[0])
    top = {r["query_id"]: r for r in rows if r["rank"] == "1"}
    pasted = top["pasted.png"]
    # the pasted object is found at the pixel level: its box in the generation and in the training image
    assert pasted["train_id"] == emoji_files[648].name and pasted["match_kind"] == "object", pasted
    assert float(pasted["object_score"]) > 0.95 and pasted["is_replica"] == "True"
    assert _iou(json.loads(pasted["query_box"]), q.query_box) > 0.8, (pasted["query_box"], q.query_box)
    assert _iou(json.loads(pasted["train_box"]), bbox(mask)) > 0.9
    assert float(top["unseen.png"]["object_score"] or 0) < float(pasted["object_score"])
    part = res.summary["partial"]
    assert part["windows_per_image"] > 1000 and part["null_region"]["n"] == 30
    assert part["null_object"]["n"] == 30 and part["object_matches"] >= 1
    loc = part["local_features"]
    assert loc["training_descriptors"] > 1000 and loc["candidates_per_image"] == 10 and loc["index"] == "flat"
    assert "local_votes" in rows[0] and any(r["local_votes"] for r in rows)
    assert "object score" in res.summary["verdict_score"]
    assert "region score" in res.summary["verdict_score"]
    # 20 reference images cannot resolve 1%: training images, each against the others, join the null (as
    # many as partial_background_sample allows)
    cal = res.summary["calibration"]
    assert cal["source"] == "reference+training" and cal["null_parts"] == {"reference": 20, "training": 10}
    assert cal["null_size"] == 30
    ref_top = res.summary["calibration_top"]  # the reference images that set the threshold, highest first
    assert len(ref_top) == 5 and all(Path(r["path"]).parent == ref for r in ref_top)
    assert [r["verdict"] for r in ref_top] == sorted((r["verdict"] for r in ref_top), reverse=True)
    assert all({"object", "global", "object_match", "global_match"} <= set(r) for r in ref_top)
    # pixel evidence counts for candidates retrieval singles out (or pixel-exact ones), queries and null alike
    assert res.summary["specificity"]["margin"] == 0.1 and "specific" in rows[0]
    assert "specific" in res.summary["verdict_score"]
    assert all(r["specific"] in ("True", "False") for r in rows if r["pixel_score"])
    assert all(r["specific"] == "" for r in rows if not r["pixel_score"])
    # without a reference the train-vs-train null goes through the same gate
    res3 = audit(gen, tmp_path / "idx", tmp_path / "out3", partial=True, partial_k=3, partial_background_sample=20)
    assert res3.calibration.source == "background" and res3.summary["specificity"]["same"] == 0.9
    assert len(res3.calibration.null) == 20
    # an explicit threshold applies to the best of the global and region cosines
    res2 = audit(gen, tmp_path / "idx", tmp_path / "out2", threshold=0.99, partial=True)
    assert res2.summary["verdict_score"].startswith("global: best of")


def _iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_reference_top_warns_when_the_threshold_is_set_by_copies() -> None:
    paths = [f"ref/{i}.png" for i in range(6)]
    verdict = np.array([0.2, 0.99, 0.5, 0.97, 0.1, 0.3])
    obj = np.array([0.1, 0.995, 0.3, 0.9, np.nan, 0.2])
    match = ["", "train/lifebuoy.png", "train/a.png", "train/b.png", "", "train/c.png"]
    top, warnings = reference_top(paths, verdict, 0.96, {"object": obj, "pixel": None}, {"object": match}, n=3)
    assert [r["path"] for r in top] == ["ref/1.png", "ref/3.png", "ref/2.png"]
    assert top[0]["object_match"] == "train/lifebuoy.png" and top[0]["at_or_above_threshold"]
    assert not top[2]["at_or_above_threshold"] and "pixel" not in top[0]
    assert len(warnings) == 1 and "ref/1.png" in warnings[0] and "ref/3.png" not in warnings[0]
    assert reference_top(paths, verdict, 0.999, {"object": obj}, {}, n=3)[1] == []  # below the threshold


def test_reference_top_names_a_look_alike_that_sets_the_threshold() -> None:
    # a held-out polo shirt drawn from the training T-shirt's template (tuxpaint-stamps, seed 102) set the
    # threshold at SSCD 0.88 with no copy-like pixel score: named, with its match, in its own warning
    paths = ["ref/polo.png", "ref/cone.png", "ref/apple.png"]
    verdict = np.array([0.9999, 0.98, 0.5])
    glob = np.array([0.88, 0.74, 0.9])
    match = ["train/t_tshirt.png", "train/stop.png", "train/pear.png"]
    top, warnings = reference_top(paths, verdict, 0.99, {"global": glob, "pixel": np.array([0.9, 0.2, 0.3])},
                                  {"global": match}, n=3)
    assert len(warnings) == 1 and "ref/polo.png (SSCD 0.88 to train/t_tshirt.png)" in warnings[0]
    assert "ref/apple.png" not in warnings[0]  # under the threshold
    assert reference_top(paths, verdict, 0.97, {"global": glob}, {"global": match}, n=3)[1][0].count("SSCD 0.") == 1


def test_an_unknown_pool_null_mode_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(DiffrepError, match="pool_null must be one of auto, always, never"):
        audit(tmp_path / "gen", tmp_path / "idx", tmp_path / "out", pool_null="sometimes")
    assert not (tmp_path / "out").exists()
