"""End-to-end CLI runs on real emoji images with real SSCD, and one-line errors for user mistakes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import copy_images


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffrep", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def scenario_sources(root: Path) -> list[Path]:
    return [Path(line) for line in (root / "sources.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, emoji_files):
    """40 training images, 12 flipped/cropped copies of them, 12 unseen, 60 held-out references, 2 bad files."""
    root = tmp_path_factory.mktemp("cli")
    train = copy_images(emoji_files[0:800:20], root / "train")
    (train / "captions.jsonl").write_text("".join(
        json.dumps({"file": f.name, "caption": f"caption of {f.stem}"}) + "\n" for f in emoji_files[0:800:20]))
    gen = root / "gen"
    gen.mkdir()
    (root / "sources.txt").write_text("\n".join(str(f) for f in emoji_files[0:240:20]))
    for i, f in enumerate(emoji_files[0:240:20]):
        im = Image.open(f).convert("RGBA")
        bg = Image.new("RGBA", im.size, "white")
        im = Image.alpha_composite(bg, im).convert("RGB").resize((256, 256), Image.BICUBIC)
        im = ImageOps.mirror(im) if i % 2 else im.crop((20, 20, 236, 236))
        im.save(gen / f"copy_{i:02d}.jpg", quality=90)
    copy_images(emoji_files[1001:1200:17], gen)  # unseen: never in train
    (gen / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (gen / "empty.jpg").write_bytes(b"")
    copy_images(emoji_files[2000:3800:30], root / "ref")
    r = run("index", str(train), "--out", str(root / "idx"), "--local")
    assert r.returncode == 0, r.stderr
    (root / "index_stdout.txt").write_text(r.stdout)
    return root


def test_index_and_audit_end_to_end(scenario):
    assert "Indexed 40 images" in (scenario / "index_stdout.txt").read_text()
    assert "RootSIFT descriptors" in (scenario / "index_stdout.txt").read_text()
    assert len(list((scenario / "idx").glob("local-*/local.faiss"))) == 1
    r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(scenario / "aud"),
            "--reference", str(scenario / "ref"), "--fpr", "0.05", "--top-k", "3")
    assert r.returncode == 0, r.stderr
    assert "Replicas:" in r.stdout and "calibrated on 60 held-out reference images" in r.stdout
    out = scenario / "aud"
    s = json.loads((out / "summary.json").read_text())
    assert s["queries"] == 24 and s["skipped"] == 2
    assert s["calibration"]["source"] == "reference" and s["calibration"]["target_fpr"] == 0.05
    for key in ("mean", "p50", "p75", "p90", "p95", "p99"):
        assert key in s["top1"] and key in s["reference"] and key in s["background"]
    rows = list(csv.DictReader(open(out / "matches.csv")))
    assert len(rows) == 24 * 3
    top = {Path(r["query_path"]).name: r for r in rows if r["rank"] == "1"}
    sources = [f.name for f in scenario_sources(scenario)]
    flagged = 0
    for name, row in top.items():
        if name.startswith("copy_"):
            # every copy's rank-1 match is its real source, with its caption
            assert row["train_id"] == sources[int(name[5:7])], row
            assert row["train_caption"].startswith("caption of ")
            if row["is_replica"] == "True":
                flagged += 1
                assert float(row["p_value"]) <= 0.05 + 1e-9  # conformal: a replica has p <= the target FPR
    # at FPR 0.05 with 60 references, some flat-colour flag crops stay undecided; most copies are flagged
    assert flagged >= 10, flagged
    unseen_flagged = sum(r["is_replica"] == "True" for n, r in top.items() if not n.startswith("copy_"))
    assert unseen_flagged <= 1
    assert all(r["is_replica"] == "" for r in rows if r["rank"] != "1")
    skipped = list(csv.DictReader(open(out / "skipped.csv")))
    assert {Path(r["path"]).name for r in skipped} == {"broken.png", "empty.jpg"}
    assert all(r["reason"] for r in skipped)
    import pyarrow.parquet as pq

    t = pq.read_table(out / "matches.parquet")
    assert t.num_rows == 72 and {"query_path", "rank", "train_path", "train_caption", "score", "is_replica",
                                 "p_value"} <= set(t.column_names)


def test_background_calibration_when_no_reference(scenario):
    r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(scenario / "aud2"))
    assert r.returncode == 0, r.stderr
    s = json.loads((scenario / "aud2" / "summary.json").read_text())
    assert s["calibration"]["source"] == "background" and s["calibration"]["null_size"] == 40
    assert s["verification"]["ecc"] is True and s["verification"]["ecc_pixel_gate"] == 0.9
    r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(scenario / "aud5"),
            "--reference", str(scenario / "ref"), "--no-ecc")
    assert r.returncode == 0, r.stderr
    assert json.loads((scenario / "aud5" / "summary.json").read_text())["verification"]["ecc"] is False
    r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(scenario / "aud3"),
            "--threshold", "0.9")
    s = json.loads((scenario / "aud3" / "summary.json").read_text())
    assert s["calibration"]["source"] == "explicit" and s["calibration"]["threshold"] == 0.9
    assert s["verdict_score"].startswith("global")
    r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(scenario / "aud4"),
            "--reference", str(scenario / "ref"), "--no-verify")
    assert r.returncode == 0 and "on the SSCD cosine" in r.stdout, r.stderr
    rows = list(csv.DictReader(open(scenario / "aud4" / "matches.csv")))
    assert all(row["verify_score"] == "" for row in rows)


@pytest.mark.parametrize("case", ["missing", "empty", "mismatch", "unwritable", "noindex"])
def test_user_errors_are_one_line(scenario, tmp_path, case):
    if case == "missing":
        r = run("index", str(tmp_path / "nope"), "--out", str(tmp_path / "i"))
        expect = "does not exist"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        r = run("index", str(tmp_path / "empty"), "--out", str(tmp_path / "i"))
        expect = "no images"
    elif case == "mismatch":
        r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(tmp_path / "o"),
                "--descriptor", "sscd-fast")
        expect = "not comparable"
    elif case == "unwritable":
        if os.geteuid() == 0:
            target = "/proc/diffrep-out"  # not writable even for root
        else:
            ro = tmp_path / "ro"
            ro.mkdir()
            ro.chmod(0o500)
            target = str(ro / "out")
        r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", target)
        expect = "cannot"
    else:
        r = run("audit", str(scenario / "gen"), "--index", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
        expect = "diffrep index"
    assert r.returncode not in (0, 1), (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("diffrep: error:") and expect in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_help_is_fast_and_lists_commands():
    import time

    t = time.perf_counter()
    r = run("--help")
    assert r.returncode == 0 and "index" in r.stdout and "audit" in r.stdout
    assert time.perf_counter() - t < 5
    r = run("descriptors")
    assert "sscd" in r.stdout and "sscd-fast" in r.stdout


def test_tar_shards_index_and_verified_audit(tmp_path, emoji_files):
    """Training images inside webdataset shards: indexed, and read back from the shard for verification."""
    import io
    import tarfile

    import diffrep

    shard = tmp_path / "train-000.tar"
    with tarfile.open(shard, "w") as tf:
        for f in emoji_files[900:930]:
            for name, data in ((f"{f.stem}.png", f.read_bytes()), (f"{f.stem}.txt", f"cap {f.stem}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    r = diffrep.index([shard], out=tmp_path / "idx")
    assert r.images == 30
    gen = copy_images(emoji_files[900:903], tmp_path / "gen")
    res = diffrep.audit(gen, index=tmp_path / "idx", out=tmp_path / "aud")  # background-calibrated, verified
    import csv as _csv

    top = [row for row in _csv.DictReader(open(tmp_path / "aud" / "matches.csv")) if row["rank"] == "1"]
    assert all("::" in row["train_path"] and float(row["verify_score"]) > 0.99 for row in top)
    assert all(row["train_caption"].startswith("cap ") for row in top)
    assert res.summary["replicas"] == 3 and res.summary["calibration"]["source"] == "background"
    assert not [w for w in res.summary["warnings"] if "could not be read" in w]


@pytest.mark.parametrize("args,expect", [(["--fpr", "2"], "between 0 and 1"), (["--top-k", "0"], "at least 1")])
def test_bad_options_fail_before_any_work(scenario, tmp_path, args, expect):
    import time

    t = time.perf_counter()
    r = run("audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(tmp_path / "o"), *args)
    assert r.returncode not in (0, 1) and expect in r.stderr and "Traceback" not in r.stderr
    assert time.perf_counter() - t < 10 and not (tmp_path / "o").exists()


def test_reference_copies_are_named_and_can_be_dropped(scenario, tmp_path):
    """A reference set that holds copies of training images sets the threshold with them: the audit names
    them (calibration_top, a warning) and --drop-reference-copies leaves them out of the null."""
    ref = copy_images(sorted((scenario / "ref").glob("*.png"))[:40], tmp_path / "ref")
    copies = sorted((scenario / "train").glob("*.png"))[:3]
    for f in copies:
        (ref / f"copy_of_{f.name}").write_bytes(f.read_bytes())
    base = ["audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--reference", str(ref),
            "--fpr", "0.05", "--top-k", "3", "-q"]
    r = run(*base, "--out", str(tmp_path / "keep"))
    assert r.returncode == 0, r.stderr
    kept = json.loads((tmp_path / "keep" / "summary.json").read_text())
    assert {Path(t["path"]).name for t in kept["calibration_top"][:3]} == {f"copy_of_{f.name}" for f in copies}
    top = kept["calibration_top"][0]
    assert Path(top["global_match"]).name == Path(top["path"]).name.removeprefix("copy_of_")
    assert any("score like copies" in w for w in kept["warnings"]) and kept["reference_copies_dropped"] == []
    r = run(*base, "--out", str(tmp_path / "drop"), "--drop-reference-copies")
    assert r.returncode == 0, r.stderr
    dropped = json.loads((tmp_path / "drop" / "summary.json").read_text())
    assert {Path(p).name for p in dropped["reference_copies_dropped"]} == {f"copy_of_{f.name}" for f in copies}
    assert dropped["calibration"]["null_size"] == 40 and kept["calibration"]["null_size"] == 43
    assert dropped["calibration"]["threshold"] < kept["calibration"]["threshold"]
    assert dropped["replicas"] >= kept["replicas"]


@pytest.mark.parametrize("argv", [["experiment", "memorization", "--out", "x"],
                                  ["sample", "run", "--n", "1", "--out", "x"], ["train", "data", "--out", "x"],
                                  ["audit", "gen", "--index", "i", "--out", "x"], ["bench", "make", "imgs", "--out", "x"]])
def test_a_negative_seed_is_a_usage_error(argv, capsys):
    from diffrep.cli import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--seed", "-1"])
    assert e.value.code == 2 and "--seed: -1: give a whole number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("argv,sizes", [(["membership"], "0"), (["membership"], "100,-1"),
                                        (["data-size", "--data", "fashion-mnist"], "5,-1")])
def test_training_set_sizes_below_one_are_refused_before_any_work(argv, sizes, tmp_path, capsys):
    from diffrep.cli import main

    out = tmp_path / "e"
    assert main(["experiment", *argv, "--out", str(out), "--sizes", sizes, "-q"]) == 2
    assert f"--sizes '{sizes}': every value must be at least 1" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("kind,flag", [("membership", "--dup-frac"), ("data-size", "--dup-weight")])
def test_duplication_flags_are_refused_where_they_do_nothing(kind, flag, tmp_path, capsys):
    from diffrep.cli import main

    out = tmp_path / "e"
    data = ["--data", "fashion-mnist"] if kind == "data-size" else []
    assert main(["experiment", kind, *data, "--out", str(out), flag, "0.5", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} would change nothing in this run: it applies to the duplication and memorization" in err
    assert not out.exists()


@pytest.mark.parametrize("argv,says", [
    (["index", "IMGS", "--address", "auto"], "--address would change nothing in this run: it applies to --engine ray"),
    (["index", "IMGS", "--num-workers", "4"], "--num-workers would change nothing in this run: it applies to --engine ray"),
    (["audit", "IMGS", "--index", "IDX", "--num-workers", "4"], "--num-workers would change nothing in this run: it applies to --engine ray"),
    (["index", "IMGS", "--index-type", "flat", "--on-disk"], "a flat index has none"),
    (["index", "IMGS", "--index-type", "hnsw", "--on-disk"], "a hnsw index has none")])
def test_options_that_would_change_nothing_are_refused_before_any_work(argv, says, scenario, tmp_path, capsys):
    from diffrep.cli import main

    out = tmp_path / "o"
    paths = {"IMGS": str(scenario / "gen"), "IDX": str(scenario / "idx")}
    assert main([paths.get(x, x) for x in argv] + ["--out", str(out), "-q"]) == 2
    assert says in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("extra,says", [
    (["--partial-k", "4"], "--partial-k would change nothing in this run: it applies with --partial"),
    (["--local-k", "0"], "--local-k would change nothing"), (["--no-specificity"], "--no-specificity would change"),
    (["--specificity-margin", "0.1"], "--specificity-margin would change"),
    (["--no-verify", "--verify-k", "5"], "--verify-k would change nothing in this run: verification is off"),
    (["--no-verify", "--no-ecc"], "--no-ecc would change nothing"),
    (["--page-limit", "10"], "--page-limit would change nothing in this run: it applies with --report"),
    (["--reference-captions", "caps.jsonl"], "--reference-captions would change nothing")])
def test_audit_options_for_other_modes_are_refused(extra, says, scenario, tmp_path, capsys):
    from diffrep.cli import main

    out = tmp_path / "o"
    assert main(["audit", str(scenario / "gen"), "--index", str(scenario / "idx"), "--out", str(out), *extra]) == 2
    assert says in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("extra,says", [
    (["--eps", "0.1"], "--eps would change nothing in this run: it applies to --mode semdedup"),
    (["--mode", "semdedup", "--threshold", "0.9"], "--threshold would change nothing in this run: --mode semdedup"),
    (["--mode", "semdedup", "--no-verify"], "--no-verify would change nothing"),
    (["--no-pixel", "--pixel-threshold", "0.9"], "the pixel rule is off (--no-pixel)"),
    (["--no-verify", "--verified-threshold", "0.9"], "verification is off (--no-verify)"),
    (["--fpr", "0.1", "--reference", "IMGS", "--threshold", "0.9"], "--fpr calibrates the link thresholds")])
def test_dedup_options_for_other_modes_are_refused(extra, says, scenario, tmp_path, capsys):
    from diffrep.cli import main

    out = tmp_path / "o"
    argv = ["dedup", str(scenario / "gen"), "--out", str(out), *extra]
    assert main([str(scenario / "gen") if x == "IMGS" else x for x in argv]) == 2
    assert says in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("argv,says", [
    (["memorization", "--data", "fashion-mnist"], "--data would change nothing in this run: experiment memorization "
                                                  "builds its own data"),
    (["membership", "--reference", "x"], "--reference would change nothing"),
    (["memorization", "--sizes", "10,20"], "--sizes would change nothing in this run: it applies to the data-size"),
    (["membership", "--subset", "10"], "--subset would change nothing"),
    (["memorization", "--subset", "1"], "--subset 1: the experiment needs at least 2 training captions"),
    (["data-size", "--data", "fashion-mnist", "--subset", "10"], "the data-size experiment takes --sizes"),
    (["memorization", "--only", "a"], "experiment memorization is one run, not a grid"),
    (["membership", "--generate-only"], "--generate-only would change nothing"),
    (["data-size", "--data", "fashion-mnist", "--label-per-prompt", "2"], "it applies to the memorization experiment"),
    (["membership", "--samples", "3"], "experiment membership generates nothing")])
def test_experiment_options_for_other_experiments_are_refused(argv, says, tmp_path, capsys):
    from diffrep.cli import main

    out = tmp_path / "e"
    assert main(["experiment", *argv, "--out", str(out), "-q"]) == 2
    assert says in capsys.readouterr().err and not out.exists()
