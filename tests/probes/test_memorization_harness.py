"""`diffrep experiment memorization` end to end at a tiny scale: split, train, generate, probe, audit-judged
labels, metrics, and a second call that reuses every stage."""
from __future__ import annotations

import csv
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffrep.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
TINY = ["--steps", "40", "--batch", "8", "--samples", "2", "--subset", "16", "--dup-frac", "0.25"]  # preset: 64, 0.125


def test_memorization_experiment_runs_and_resumes(tmp_path, capsys, monkeypatch):
    import diffrep.eval.memorization as mem

    monkeypatch.setitem(mem.PRESETS, "smoke", {**mem.PRESETS["smoke"], "reference_prompts": 12,
                                                "test_prompts": 12, "sample_steps": 5, "probe_seeds": 2,
                                                "long_steps": 3, "channels": [16, 32, 32]})
    out = tmp_path / "mem"
    assert main(["experiment", "memorization", "--out", str(out), "--generate-only", "-q"] + TINY) == 0
    gen = json.loads((out / "generated.json").read_text())
    assert gen["step"] == 40 and len(gen["duplicated"]) == 4 and not (out / "labels.json").exists()
    rows = list(csv.DictReader((out / "probe_scores.csv").open()))
    assert [r["role"] for r in rows].count("train") == 16 and len(rows) == 40
    assert set(rows[0]) == {"prompt", "role", "noise-norm@1", "noise-norm@3", "seed-ssim@1", "one-step@1"}
    assert len(list((out / "samples").glob("*.png"))) == 2 * 28
    assert main(["experiment", "memorization", "--out", str(out), "-q"] + TINY) == 0
    text = capsys.readouterr().out
    assert "training captions memorized" in text and "noise-norm@1" in text
    s = json.loads((out / "summary.json").read_text())
    labels = json.loads((out / "labels.json").read_text())
    assert set(labels["memorized"]) <= set(json.loads((out / "data" / "split.json").read_text())["train"])
    assert [m["method"] for m in s["methods"]] == ["noise-norm@1", "noise-norm@3", "seed-ssim@1", "one-step@1"]
    assert s["brute_force_seconds_per_prompt"] > 0 and all(m["seconds_per_prompt"] > 0 for m in s["methods"])
    assert all(m["duplicated"]["positives"] == 4 and 0 <= m["duplicated"]["auc"] <= 1 for m in s["methods"])
    # memorized consistently: more than half of a caption's 2 generations, i.e. both, flagged as its own picture
    both = sum(1 for c in labels["copies"].values() if c == 2)
    assert s["generations_labelled"] == 2 and s["memorized_consistently"] == both
    assert all(m["consistent"]["positives"] == both for m in s["methods"])
    for m in s["methods"]:  # every training caption is counted once in the breakdown by copies
        assert [c["copies"] for c in m["by_copies"]] == [0, 1, 2] and sum(c["captions"] for c in m["by_copies"]) == 16
        assert m["by_copies"][0]["captions"] == 16 - s["memorized"]
    # test captions whose generations the audit flags as a copy of any training picture are no clean negatives
    matches = list(csv.DictReader((out / "audit" / "matches.csv").open()))
    test_caps = set(json.loads((out / "data" / "split.json").read_text())["test"])
    copying = {r["query_caption"] for r in matches if r["rank"] == "1" and r["is_replica"] == "True"
               and r["query_caption"] in test_caps}
    assert set(labels["test_copying"]) == copying and s["test_captions_copying"] == len(copying)
    assert all(m["clean_test"]["positives"] == s["memorized"] for m in s["methods"])
    md = (out / "results.md").read_text()
    assert md.startswith("# Memorization probes") and "Labels by construction" in md
    assert f"Negatives without copies: {len(copying)} of the 12 test captions" in md
    assert "Memorized consistently" in md and "| 0 of 2 (" in md
    assert ("No training caption was memorized" in md) == (s["memorized"] == 0)
    header = next(csv.reader((out / "results.csv").open()))
    assert header[0] == "method" and header[-1] == "clean_test_tpr_at_1pct_fpr_ci"
    before = (out / "summary.json").stat().st_mtime_ns, (out / "labels.json").stat().st_mtime_ns
    assert main(["experiment", "memorization", "--out", str(out), "-q"] + TINY) == 0  # reuses every stage
    assert (out / "labels.json").stat().st_mtime_ns == before[1]
    # a cheaper labelling: one generation per training caption, 10 reference images; recorded, and redone
    assert main(["experiment", "memorization", "--out", str(out), "--label-per-prompt", "1", "--label-reference",
                 "10", "-q"] + TINY) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert labels["audited_generations"] == 16 and labels["label_reference"] == 10
    s = json.loads((out / "summary.json").read_text())
    assert s["generations_labelled"] == 1 and s["memorized_consistently"] == s["memorized"]  # 1 of 1 is all
    assert labels["test_copying"] is None and s["test_captions_copying"] is None  # test captions not audited
    assert "Negatives without copies" not in (out / "results.md").read_text()
    assert len(list((out / "label_reference").iterdir())) == 10
    # a damaged marker of finished work is work to do again, not a traceback
    (out / "labels.json").write_text('{"fpr": 0.01, "label_per_')
    (out / "data" / "split.json").write_bytes(b"\x00\xff")
    assert main(["experiment", "memorization", "--out", str(out), "--label-per-prompt", "1", "--label-reference",
                 "10", "-q"] + TINY) == 0
    assert json.loads((out / "labels.json").read_text())["audited_generations"] == 16


def test_the_split_keeps_near_duplicate_groups_on_one_side(tmp_path):
    """Held-out captions are never a skin-tone or gender variant of a training picture: such siblings would raise
    the audit's calibrated threshold (they score like copies) and would look memorized to the probes."""
    from diffrep.datasets import get_dataset, read_groups
    from diffrep.eval.memorization import PRESETS, group_split, split

    group = read_groups(get_dataset("emoji"))
    info = split(tmp_path / "data", PRESETS["smoke"], 3)
    train = [group[f][0] for f in info["train"].values()]
    held = [group[p.name][0] for p in (tmp_path / "data" / "heldout").glob("*.png")]
    assert len(set(train)) == len(train) == 64 and len(set(held)) == len(held) == 200  # one picture per group
    assert not set(train) & set(held)
    # fewer groups than rows wanted: groups dealt in proportion to the counts, first members before second ones
    rows = [(g, k) for k in range(3) for g in "abcdef"]
    parts = group_split(rows, lambda r: r[0], (4, 4, 2))
    assert [sorted({g for g, _ in part}) for part in parts] == [["a", "d", "f"], ["b", "e"], ["c"]]
    assert parts[0] == [("a", 0), ("d", 0), ("f", 0), ("a", 1)]
