"""`diffrep extract --prefilter noise-norm` (the default): generation only for the prompts the first-step noise-norm probe
flags, calibrated on the reference prompts exactly as `diffrep probe` calibrates, on a `diffrep train` caption
run trained here on real emoji."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffrep.cli import main  # noqa: E402
from diffrep.errors import DiffrepError  # noqa: E402
from diffrep.probes.prefilter import check_prefilter  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_noise_norm_prefilter_generates_for_exactly_the_prompts_the_probe_flags(caption_run, captioned, tmp_path,
                                                                                capsys):
    import diffrep

    diffrep.index(captioned, tmp_path / "index")
    caps = [json.loads(x)["caption"] for x in (captioned / "captions.jsonl").read_text().splitlines()]
    tested = caps[:4] + ["a red truck", "small blue frog"]
    (tmp_path / "p.txt").write_text("\n".join(tested) + "\n")
    (tmp_path / "r.txt").write_text("blue car\nsmall green frog\nyellow bus\n")
    common = [str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--reference-prompts", str(tmp_path / "r.txt")]
    assert main(["probe", *common, "--out", str(tmp_path / "probe"), "--sample-steps", "3", "-q"]) == 0
    assert main(["extract", *common, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "x"),
                 "--per-prompt", "3", "--min-clique", "2", "--steps", "3", "-q"]) == 0  # the default prefilter
    said = capsys.readouterr().out
    probed = _rows(tmp_path / "probe" / "prompts.csv")
    flagged = [r["prompt"] for r in probed if r["is_memorized"] in ("1", "True")]
    pre = _rows(tmp_path / "x" / "prefilter.csv")
    assert [r["prompt"] for r in pre] == tested
    np.testing.assert_allclose([float(r["score"]) for r in pre], [float(r["score"]) for r in probed], rtol=1e-5)
    assert [r["prompt"] for r in pre if r["generated"] == "1"] == flagged
    s = json.loads((tmp_path / "x" / "summary.json").read_text())
    ps = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert s["prefilter"] == "noise-norm" and s["keep"] is None and s["generated_for"] == len(flagged)
    assert s["prefilter_threshold"] == pytest.approx(ps["threshold"], rel=1e-5)
    assert "(3) at 0.01" in s["prefilter_source"]
    assert any(w.startswith("noise-norm prefilter: 3 null scores cannot resolve") for w in s["warnings"])
    assert f"The noise-norm prefilter flagged {len(flagged)} of 6 prompts at a false-positive rate of 0.01." in said
    rows = _rows(tmp_path / "x" / "extracted.csv")
    assert {r["prompt"] for r in rows} <= set(flagged) and len(rows) == s["cliques"]
    if not flagged:
        assert any("flagged none of the prompts" in w for w in s["warnings"])
    assert main(["report", str(tmp_path / "probe"), "--extract", str(tmp_path / "x"), "-q"]) == 0
    page = (tmp_path / "probe" / "report.html").read_text()
    assert f"Generated for {len(flagged)} of 6 prompts: those the noise-norm probe flagged" in page
    # the same folder without a prefilter: every prompt is generated for, and the old prefilter.csv goes (the
    # audit of the cliques this makes is calibrated on 24 real emoji the model never saw)
    held = _held(tmp_path)
    assert main(["extract", *common, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "x"),
                 "--reference", str(held), "--per-prompt", "3", "--min-clique", "2", "--steps", "3", "--prefilter",
                 "none", "-q"]) == 0
    assert json.loads((tmp_path / "x" / "summary.json").read_text())["generated_for"] == 6
    assert "prefilter flagged" not in capsys.readouterr().out
    assert not (tmp_path / "x" / "prefilter.csv").exists()
    # --prefilter-fpr sets the prefilter's rate apart from the edge's: the probe's flags at that rate
    assert main(["probe", *common, "--out", str(tmp_path / "probe5"), "--sample-steps", "3", "--fpr", "0.5",
                 "-q"]) == 0
    flagged5 = [r["prompt"] for r in _rows(tmp_path / "probe5" / "prompts.csv") if r["is_memorized"] == "True"]
    assert main(["extract", *common, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "x5"),
                 "--per-prompt", "3", "--min-clique", "2", "--steps", "3", "--prefilter-fpr", "0.5", "-q"]) == 0
    assert f"flagged {len(flagged5)} of 6 prompts at a false-positive rate of 0.5." in capsys.readouterr().out
    s5 = json.loads((tmp_path / "x5" / "summary.json").read_text())
    assert [r["prompt"] for r in _rows(tmp_path / "x5" / "prefilter.csv") if r["generated"] == "1"] == flagged5
    assert (s5["prefilter_fpr"], s5["generated_for"]) == (0.5, len(flagged5)) and set(flagged) <= set(flagged5)
    assert "at 0.01" in s5["edge_threshold_source"]  # the edge keeps --fpr
    assert main(["extract", *common, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "k"),
                 "--prefilter", "none", "--prefilter-fpr", "0.5"]) == 2
    assert "--prefilter-fpr would change nothing" in capsys.readouterr().err
    # --keep is the one-step prefilter's share: with noise-norm it would change nothing, so it is refused
    assert main(["extract", *common, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "k"),
                 "--prefilter", "noise-norm", "--keep", "0.5"]) == 2
    assert "add --prefilter one-step" in capsys.readouterr().err and not (tmp_path / "k").exists()


def _held(tmp_path: Path) -> Path:
    """24 real emoji the test models never saw, for the audit's calibration."""
    from diffrep.datasets import get_dataset

    held = tmp_path / "held"
    held.mkdir()
    src = get_dataset("emoji")
    for line in (src / "captions.jsonl").read_text().splitlines()[300:324]:
        name = json.loads(line)["file"]
        shutil.copyfile(src / "images" / name, held / Path(name).name)
    return held


def test_min_share_floor_only_moves_small_cliques_to_below_floor(caption_run, captioned, tmp_path, capsys):
    import diffrep

    diffrep.index(captioned, tmp_path / "index")
    caps = [json.loads(x)["caption"] for x in (captioned / "captions.jsonl").read_text().splitlines()]
    (tmp_path / "p.txt").write_text("\n".join(caps[:6] + ["a red truck", "small blue frog"]) + "\n")
    (tmp_path / "r.txt").write_text("blue car\nsmall green frog\nyellow bus\n")
    run = ["extract", str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--reference-prompts",
           str(tmp_path / "r.txt"), "--index", str(tmp_path / "index"), "--out", str(tmp_path / "x"), "--reference",
           str(_held(tmp_path)), "--per-prompt", "4", "--min-clique", "2", "--steps", "3", "--prefilter", "none", "-q"]
    assert main([*run, "--min-share", "0"]) == 0  # no floor
    assert not (tmp_path / "x" / "below_floor.csv").exists()
    whole = _rows(tmp_path / "x" / "extracted.csv")
    s = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert s["min_share"] == 0 and s["below_floor"] == 0 and s["cliques"] == len(whole)
    assert whole, "the 3-step model's generations form no clique: the floor has nothing to split"
    sizes = sorted(int(r["clique_size"]) for r in whole)
    share = sizes[0] / 4 if sizes[0] < 4 else 0.9  # the smallest clique sits on the floor, so it goes below
    capsys.readouterr()
    assert main([*run, "--min-share", str(share)]) == 0  # the same folder: the journaled generations are reused
    said = capsys.readouterr().out
    listed, below = _rows(tmp_path / "x" / "extracted.csv"), _rows(tmp_path / "x" / "below_floor.csv")
    assert below and all(int(r["clique_size"]) <= share * 4 for r in below)
    assert all(int(r["clique_size"]) > share * 4 for r in listed)
    assert sorted(listed + below, key=lambda r: r["generated"]) == whole  # same rows, same verdicts, none lost
    f = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert (f["cliques"], f["below_floor"], f["min_share"]) == (len(listed), len(below), share)
    assert f["edge_threshold_tiled_l2"] == s["edge_threshold_tiled_l2"]  # the edge does not move with the floor
    assert f["extracted"] == sum(r["is_copy"] == "True" for r in listed)
    assert f["below_floor_copies"] == sum(r["is_copy"] == "True" for r in below)
    assert f"{len(below)} more clique(s) of at most {int(share * 4)} generations are below the --min-share" in said
    if f["below_floor_copies"]:
        assert any("below the --min-share" in w for w in f["warnings"])
    probe = ["probe", str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--reference-prompts",
             str(tmp_path / "r.txt"), "--out", str(tmp_path / "probe"), "--sample-steps", "3", "-q"]
    assert main(probe) == 0 and main(["report", str(tmp_path / "probe"), "--extract", str(tmp_path / "x"), "-q"]) == 0
    page = (tmp_path / "probe" / "report.html").read_text()
    assert (f"{len(below)} smaller clique(s), of at most {share:g} of a prompt's generations, are below the "
            f"--min-share floor and not shown (below_floor.csv); the audit verifies {f['below_floor_copies']}") in page
    assert main([*run[:-1], "--min-share", "1", "--out", str(tmp_path / "y")]) == 2
    assert "--min-share 1.0: give a share of --per-prompt between 0 (no floor) and 1" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_an_unknown_prefilter_is_refused():
    with pytest.raises(DiffrepError, match="--prefilter 'clip': use one-step or noise-norm"):
        check_prefilter("clip", 0.1)
    with pytest.raises(DiffrepError, match=r"--keep 0: give the share of prompts to keep, in \(0, 1\]"):
        check_prefilter("one-step", 0)
