"""`diffrep experiment mitigation` end to end at a tiny size: real Fashion-MNIST data, real models trained here,
the real audit, KID and classifier; the table's rows, resumption and refusals."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffrep.errors import DiffrepError  # noqa: E402
from diffrep.eval.mitigation_data import CLASS_WORDS, TEMPLATES, build, ordinary_prompts  # noqa: E402
from diffrep.eval.mitigation_quality import fit_classifier, newcombe, wilson  # noqa: E402
from diffrep.eval.mitigation_table import PRESETS, row_specs, run_mitigation_experiment  # noqa: E402
from diffrep.mitigation import INFERENCE  # noqa: E402

TINY = dict(per_class=2, dup_images=2, dup_copies=3, reference=30, real=30, classifier_per_class=6, steps=12,
            batch=8, per_memorized=3, per_ordinary=2, sample_steps=3, strengths={"rt": [4]})


def test_data_split_holds_out_the_ordinary_prompts(tmp_path):
    p = {"per_class": 3, "dup_images": 2, "dup_copies": 4, "reference": 5, "real": 5, "classifier_per_class": 2,
         "size": 32}
    info = build(tmp_path / "d", p, seed=0)
    caps = [json.loads(x)["caption"] for x in (tmp_path / "d" / "train" / "captions.jsonl").read_text().splitlines()]
    assert len(caps) == 10 * 3 + 2 * 4 == info["training_files"]
    assert not set(ordinary_prompts()) & set(caps)  # no ordinary prompt string was trained on
    trained_words = {w for c in caps for w in c.split()}
    assert all(w in trained_words for q in ordinary_prompts() for w in q.split())  # ... but every word was
    assert all(caps.count(m) == 4 for m in info["memorized"])  # each memorized caption on its copies only
    assert len(list((tmp_path / "d" / "sources").glob("*.png"))) == 10 * 3 + 2
    assert build(tmp_path / "d", p, seed=0) == info  # reused


def test_classifier_and_wilson():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (50, 5)), rng.normal(3, 1, (50, 5))])
    y = np.repeat([0, 1], 50)
    assert (fit_classifier(x, y, 0)(x) == y).mean() > 0.95
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and 0 <= lo and hi <= 1 and wilson(0, 10)[0] == 0.0
    lo, hi = newcombe(24, 200, 53, 200)  # 12% vs 26.5%: clearly lower
    assert lo < -0.145 < hi < 0
    lo, hi = newcombe(53, 200, 53, 200)
    assert lo == pytest.approx(-hi) and lo < 0


# every inference mitigation samples in tests/mitigation; the table runs one with a strength variant, jain (its
# own guidance reference) and the trained rows
ONLY = ["none", "none-g2", "rt", "rt@4", "jain", "dedup", "wen-filter", "train-rt"]


def test_table_end_to_end_and_resumes(tmp_path):
    s = run_mitigation_experiment(tmp_path / "e", overrides=TINY, only=ONLY)
    names = [r["row"] for r in s["rows"]]
    assert names == ONLY
    assert s["rows_left_out"] == [m for m in INFERENCE if m not in ONLY]
    assert [r["name"] for r in row_specs(PRESETS["smoke"])] == [
        "none", "none-g2", "gni", "gni@1", "rt", "rt@4", "cwr", "rna", "rna@4", "wen", "jain", "attn-rescale",
        "attn-rescale@2", "dedup", "wen-filter", "train-rt"]
    assert next(r for r in s["rows"] if r["row"] == "jain")["settings"]["spec"]["guidance"] == 2.0
    assert next(r for r in s["rows"] if r["row"] == "rt@4")["settings"]["spec"]["strength"] == 4
    for r in s["rows"]:
        assert r["memorized_generations"] == 2 * 3 and r["ordinary_generations"] == 10 * 2
        assert 0 <= r["replica_rate"] <= 1 and r["replica_rate_ci"][0] <= r["replica_rate"] <= r["replica_rate_ci"][1]
        assert -1 <= r["sscd_mean"] <= r["sscd_top3"] + 1e-9 <= 1 + 1e-9 and r["seconds_per_image"] > 0
        assert r["kid_ci_x1000"][0] <= r["kid_ci_x1000"][1] and r["adherence_ci"][0] <= r["adherence"]
    base = s["rows"][0]
    assert base["adherence_change"] == 0 and base["kid_change_ci_x1000"][0] < 0 < base["kid_change_ci_x1000"][1]
    assert base["quality_kept"] and all(r["quality_kept"] == (r["kid_kept"] and r["adherence_kept"]) for r in s["rows"])
    # dedup trained on the deduplicated folder: fewer images than the base model saw
    trained = {n: json.loads((tmp_path / "e" / "runs" / n / "trained.json").read_text())
               for n in ("base", "dedup", "wen-filter")}
    assert trained["dedup"]["images"] < trained["base"]["images"]
    assert trained["wen-filter"]["settings"]["wen_threshold"] > 0
    recs = [json.loads(x) for x in (tmp_path / "e" / "rows" / "rt" / "memorized" / "prompts.jsonl").read_text()
            .splitlines()]
    assert all(r["mitigation"] == "rt" and r["prompt_used"] != r["caption"] for r in recs)
    rows = list(csv.DictReader(open(tmp_path / "e" / "results.csv", encoding="utf-8")))
    assert [r["row"] for r in rows] == names
    md = (tmp_path / "e" / "results.md").read_text()
    assert "Pareto front" in md and all(f"| {n} |" in md for n in names)
    assert (tmp_path / "e" / "pareto.png").stat().st_size > 1000
    stamp = {n: (tmp_path / "e" / "rows" / n / "row.json").stat().st_mtime_ns for n in names}
    features = {f: (tmp_path / "e" / "data" / f).stat().st_mtime_ns for f in ("real_features.npz",
                                                                              "classifier_features.npz")}
    again = run_mitigation_experiment(tmp_path / "e", overrides=TINY, only=ONLY)
    assert [r["replica_rate"] for r in again["rows"]] == [r["replica_rate"] for r in s["rows"]]
    assert stamp == {n: (tmp_path / "e" / "rows" / n / "row.json").stat().st_mtime_ns for n in names}
    assert features == {f: (tmp_path / "e" / "data" / f).stat().st_mtime_ns for f in features}  # not embedded again


def test_refusals(tmp_path):
    with pytest.raises(DiffrepError, match="its rows are none, none-g2, gni"):
        run_mitigation_experiment(tmp_path / "e", overrides=TINY, only=["nope"])
    with pytest.raises(DiffrepError, match="--preset"):
        run_mitigation_experiment(tmp_path / "e", preset="huge")
    r = subprocess.run([sys.executable, "-m", "diffrep", "experiment", "mitigation", "--data", "fashion-mnist",
                        "--out", str(tmp_path / "x"), "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--data would change nothing in this run" in r.stderr and "Traceback" not in r.stderr


def test_templates_cover_every_class():
    assert len(ordinary_prompts()) == len(CLASS_WORDS) and all("{}" in t for t in TEMPLATES)
