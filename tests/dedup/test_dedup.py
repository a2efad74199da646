"""diffrep dedup on real emoji with injected duplicates; star grouping never chains."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from diffrep.eval.bench.edits import compose_on_white
from diffrep.dedup import dedup
from diffrep.dedup.grouping import Link, star_groups
from diffrep.dedup.run import DEFAULTS
from diffrep.errors import DiffrepError


def test_star_grouping_does_not_chain():
    # a-b and b-c are links, a-c is not: two groups, never one
    links = {0: {1: Link(0.95, "near")}, 1: {0: Link(0.95, "near"), 2: Link(0.93, "near")},
             2: {1: Link(0.93, "near")}}
    group, to_rep = star_groups(np.array([0, 1, 2]), links)
    assert group.tolist() == [0, 0, 2] and to_rep[1].score == 0.95
    # the representative is the first in priority order
    group, _ = star_groups(np.array([1, 0, 2]), links)
    assert group.tolist() == [1, 1, 1]


@pytest.fixture(scope="module")
def collection(tmp_path_factory, emoji_files):
    from diffrep.datasets import get_dataset, read_groups

    groups = read_groups(get_dataset("emoji"))
    first: dict[str, Path] = {}
    for f in emoji_files:
        first.setdefault(groups[f.name][0], f)
    picks = [first[g] for g in sorted(first)][::40][:30]  # 30 emoji of different families
    root = tmp_path_factory.mktemp("dedup") / "images"
    root.mkdir()
    for f in picks:
        shutil.copyfile(f, root / f.name)
    a, b, c, d, e = picks[:5]
    shutil.copyfile(a, root / "exact_copy.png")  # same bytes
    compose_on_white(Image.open(b)).save(root / "same_pixels.bmp")  # same decoded pixels, other format
    big = lambda p: compose_on_white(Image.open(p)).resize((256, 256), Image.BICUBIC)  # noqa: E731
    ImageOps.mirror(big(c)).save(root / "flipped.png")
    big(d).save(root / "jpeg.jpg", quality=40)
    pad = Image.new("RGB", (300, 300), (30, 120, 200))
    pad.paste(big(e), (22, 22))
    pad.save(root / "padded.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    truth = {"exact_copy.png": a.name, "same_pixels.bmp": b.name, "flipped.png": c.name, "jpeg.jpg": d.name,
             "padded.png": e.name}
    return root, truth


def _groups(out: Path) -> dict[str, tuple[int, bool, str]]:
    with open(out / "groups.csv", newline="") as fh:
        return {Path(r["path"]).name: (int(r["group"]), r["is_representative"] == "1", r["link"])
                for r in csv.DictReader(fh)}


def test_dedup_finds_injected_duplicates(collection, tmp_path):
    root, truth = collection
    r = dedup(root, tmp_path / "out")
    g = _groups(tmp_path / "out")
    for dup, orig in truth.items():
        assert dup in g and orig in g and g[dup][0] == g[orig][0], (dup, orig)
    assert g["exact_copy.png"][2] == "content" or g[truth["exact_copy.png"]][2] == "content"
    assert "pixels" in {g["same_pixels.bmp"][2], g[truth["same_pixels.bmp"]][2]}
    # the 256 px edited copies are larger than the 64 px originals: they represent their groups
    assert g["flipped.png"][1] and g["jpeg.jpg"][1] and g["padded.png"][1]
    assert len(g) == 2 * len(truth)  # nothing else grouped: precision 100% here
    s = r.summary
    assert (s["images"], s["groups"], s["duplicates"]) == (35, 5, 5)
    keep = (tmp_path / "out" / "keep.txt").read_text().split()
    remove = (tmp_path / "out" / "remove.txt").read_text().split()
    assert len(keep) == 30 and len(remove) == 5 and not set(keep) & set(remove)
    assert "broken.png" in (tmp_path / "out" / "skipped.csv").read_text()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["share_removable"] == 5 / 35


def test_dedup_cli_reuses_index(collection, tmp_path):
    root, truth = collection
    idx = tmp_path / "idx"
    assert subprocess.run([sys.executable, "-m", "diffrep", "index", str(root), "--out", str(idx), "-q"],
                          capture_output=True).returncode == 0
    r = subprocess.run([sys.executable, "-m", "diffrep", "dedup", "--index", str(idx), "--out",
                        str(tmp_path / "o"), "-q"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "5 groups of near-duplicates, 5 removable" in r.stdout
    assert not (tmp_path / "o" / "index").exists()  # reused, not rebuilt
    r = subprocess.run([sys.executable, "-m", "diffrep", "dedup", "--out", str(tmp_path / "p")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "SOURCE" in r.stderr
    # the CLI leaves unset link rules to the library, and its help states the library's defaults
    s = json.loads((tmp_path / "o" / "summary.json").read_text())["rule"]
    assert {k: s[k] for k in ("k", "verified_threshold", "global_threshold", "pixel_threshold")} == \
        {k: DEFAULTS[k] for k in ("k", "verified_threshold", "global_threshold", "pixel_threshold")}
    assert s["text_overlay"] is True and s["frame_background"] is True
    r = subprocess.run([sys.executable, "-m", "diffrep", "dedup", "--index", str(idx), "--out", str(tmp_path / "q"),
                        "--no-text-lines", "-q"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "q" / "summary.json").read_text())["rule"]["text_overlay"] is False
    helptext = " ".join(subprocess.run([sys.executable, "-m", "diffrep", "dedup", "--help"], capture_output=True,
                                       text=True).stdout.split())
    for flag, key in (("--threshold", "global_threshold"), ("--verified-threshold", "verified_threshold"),
                      ("--k", "k"), ("--pixel-threshold", "pixel_threshold")):
        assert re.search(re.escape(flag) + r" \S+ .*?\(default " + re.escape(str(DEFAULTS[key])), helptext), flag


def test_audit_reports_duplicate_counts(collection, tmp_path):
    """After `dedup --index`, audits of that index report each match's near-duplicate count automatically."""
    import diffrep

    root, truth = collection
    idx = tmp_path / "idx"
    diffrep.index(root, out=idx)
    gen = tmp_path / "gen"
    gen.mkdir()
    orig = truth["exact_copy.png"]  # this training image has one exact duplicate in the collection
    shutil.copyfile(root / orig, gen / "copy.png")
    res = diffrep.audit(gen, index=idx, out=tmp_path / "a1", threshold=0.9)
    assert res.summary["duplication"] is None  # no counts yet, not asked for
    with pytest.raises(diffrep.DiffrepError, match="no near-duplicate counts yet"):  # the library does not run dedup
        diffrep.audit(gen, index=idx, out=tmp_path / "a2", threshold=0.9, dup_counts=True)
    from diffrep.cli import main

    assert main(["audit", str(gen), "--index", str(idx), "--out", str(tmp_path / "a2"), "--threshold", "0.9",
                 "--dup-counts", "-q"]) == 0  # the CLI runs dedup first
    assert (idx / "dedup" / "groups.csv").is_file()
    dup = json.loads((tmp_path / "a2" / "summary.json").read_text())["duplication"]
    assert dup["mean_dup_count_replica_matches"] == 1.0
    assert dup["mean_dup_count_training"] == pytest.approx(10 / 35)  # 5 pairs among 35 indexed images
    with open(tmp_path / "a2" / "matches.csv", newline="") as fh:
        top = [r for r in csv.DictReader(fh) if r["rank"] == "1"][0]
    assert top["train_dup_count"] == "1"
    res = diffrep.audit(gen, index=idx, out=tmp_path / "a3", threshold=0.9)  # automatic now
    assert res.summary["duplication"]["mean_dup_count_replica_matches"] == 1.0


def test_semdedup_mode(collection, tmp_path):
    from diffrep.dedup.semdedup import semdedup_groups

    root, truth = collection
    r = dedup(root, tmp_path / "out", mode="semdedup", eps=0.02)
    g = _groups(tmp_path / "out")
    # byte- and pixel-identical copies have cosine 1: always grouped; edited copies need a looser eps
    assert g["exact_copy.png"][0] == g[truth["exact_copy.png"]][0]
    assert g["same_pixels.bmp"][0] == g[truth["same_pixels.bmp"]][0]
    assert r.summary["rule"]["mode"] == "semdedup"
    # synthetic check of the rule itself: planted pairs found, unrelated vectors untouched
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    x[2000:2100] = x[:100] + 0.01 * rng.normal(size=(100, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    group, link = semdedup_groups(x, np.arange(3000), eps=0.01, n_clusters=8)
    assert np.mean(group[2000:2100] == np.arange(100)) > 0.9
    assert (group[:2000] == np.arange(2000)).all() and (group[2100:] == np.arange(2100, 3000)).all()
    assert (link[2000:2100][group[2000:2100] != np.arange(2000, 2100)] > 0.99).all()


def test_fpr_calibrates_link_thresholds_on_reference_images(collection, tmp_path, emoji_files):
    """--fpr with --reference: thresholds come from held-out images' best matches in the collection; at most
    fpr/2 of those pass each rule, the recorded thresholds are the ones applied, and copies still group."""
    from diffrep.errors import DiffrepError

    root, truth = collection
    names = {p.name for p in root.iterdir()}
    ref = tmp_path / "ref"
    ref.mkdir()
    for f in [f for f in emoji_files if f.name not in names][5::25][:80]:
        shutil.copyfile(f, ref / f.name)
    r = dedup(root, tmp_path / "out", fpr=0.1, reference=ref)
    cal = r.summary["rule"]["calibration"]
    assert cal["source"] == "reference" and cal["reference_images"] == 80 and cal["per_rule_fpr"] == 0.05
    assert r.summary["rule"]["global_threshold"] == cal["global_threshold"]
    assert r.summary["rule"]["verified_threshold"] == cal["verified_threshold"]
    # the null's own pass rate is within the per-rule budget
    from diffrep.embedding import embed_source
    from diffrep.indexing.load import open_index

    idx = open_index(tmp_path / "out" / "index")
    from diffrep.descriptors import get_descriptor

    sims, _ = idx.search(embed_source(ref, get_descriptor("sscd")).vectors, 1)
    assert np.mean(sims[:, 0] >= cal["global_threshold"]) <= 0.05
    g = _groups(tmp_path / "out")
    found = sum(dup in g and orig in g and g[dup][0] == g[orig][0] for dup, orig in truth.items())
    assert found >= 4  # exact + edited copies still grouped with calibrated thresholds
    with pytest.raises(DiffrepError, match="--reference"):
        dedup(root, tmp_path / "x", fpr=0.1)
    with pytest.raises(DiffrepError, match="--reference is the null for --fpr: add --fpr"):
        dedup(root, tmp_path / "x", reference=ref)
    with pytest.raises(DiffrepError, match="between 0 and 1"):
        dedup(root, tmp_path / "y", fpr=2.0, reference=ref)


def test_candidate_search_depth_on_approximate_indexes(collection, tmp_path):
    """dedup probes few IVF cells (near-duplicates share a cell) and caps HNSW's efSearch; exact indexes
    are left alone. The IVF index is real FAISS over 3,000 vectors with 30 planted near-copies."""
    from diffrep.dedup.run import candidate_search_params
    from diffrep.indexing import faiss_index

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    x[-30:] = x[:30] + 0.3 * rng.standard_normal((30, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fx, params = faiss_index.build([x], len(x), 64, "ivf", x)
    faiss_index.configure(fx, params)
    assert params["type"] == "ivf" and params["nprobe"] == 8  # retrieval setting: max(8, nlist / 32)
    got = candidate_search_params(fx, 11, 2)
    assert got == {"index": "ivf", "nlist": params["nlist"], "nprobe": 2}
    _, nb = faiss_index.search(fx, x[-30:], 11)
    assert np.mean([i in row for i, row in enumerate(nb)]) >= 0.9  # planted copies still found at nprobe 2
    assert candidate_search_params(fx, 11, 50)["nprobe"] == 2  # never deeper than the index's own setting
    flat, _ = faiss_index.build([x], len(x), 64, "flat")
    assert candidate_search_params(flat, 11, 8) == {"index": "flat (exact)"}
    with pytest.raises(DiffrepError, match="nprobe"):
        dedup(collection[0], tmp_path / "bad", nprobe=0)
    # an HNSW index built by `diffrep index --index-type hnsw`, reused by dedup
    from diffrep.indexing.build import index as build_index

    build_index(collection[0], tmp_path / "hnsw", index_type="hnsw")
    r = dedup(None, tmp_path / "o", index=tmp_path / "hnsw")
    assert r.summary["rule"]["candidate_search"] == {"index": "hnsw", "efSearch": 64}
    assert (r.summary["groups"], r.summary["duplicates"]) == (5, 5)
    for kw, says in (({"source": collection[0]}, "a SOURCE with --index"), ({"descriptor": "sscd"}, "Drop --descriptor"),
                     ({"captions": tmp_path / "c.jsonl"}, "Drop --captions")):
        with pytest.raises(DiffrepError, match=says):  # each would be ignored: the index already holds them
            dedup(kw.pop("source", None), tmp_path / "both", index=tmp_path / "hnsw", **kw)
    assert not (tmp_path / "both").exists()
    # a caller's VerifyConfig is used as given (dedup's own default turns text lines and frames on)
    from diffrep.matching.verify import VerifyConfig

    r = dedup(None, tmp_path / "own", index=tmp_path / "hnsw", verify_config=VerifyConfig())
    assert (r.summary["rule"]["text_overlay"], r.summary["rule"]["frame_background"]) == (False, False)
    r = dedup(None, tmp_path / "own2", index=tmp_path / "hnsw", verify_config=VerifyConfig(), text_overlay=True)
    assert (r.summary["rule"]["text_overlay"], r.summary["rule"]["frame_background"]) == (True, False)
    assert (r.summary["groups"], r.summary["duplicates"]) == (5, 5)


def test_an_output_folder_inside_the_collection_is_not_read(emoji_files, tmp_path):
    from diffrep.errors import SourceError

    src = tmp_path / "coll"
    src.mkdir()
    for f in emoji_files[:6]:
        shutil.copyfile(f, src / f.name)
    shutil.copyfile(emoji_files[0], src / "again.png")
    for _ in range(2):  # the rerun must not read the first run's groups.csv, keep.txt, ... as inputs
        r = dedup(src, src / "dd", descriptor="sscd-fast")
        assert r.summary["images"] == 7 and r.summary["skipped"] == 0
    assert (src / "dd" / "skipped.csv").read_text().strip() == "path,reason"
    with pytest.raises(SourceError, match="is the folder being read"):
        dedup(src, src, descriptor="sscd-fast")
    assert not (src / ".lock").exists() and not (src / "index").exists()  # refused before writing there
