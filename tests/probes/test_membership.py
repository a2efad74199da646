"""Membership and dataset inference on models trained here: an unconditional DDPM overfit on 12 real
Fashion-MNIST images (members) with 12 others as non-members, the tiny Stable-Diffusion-shaped pipeline
(latent space, captions) and a `diffrep train` caption run; the permutation test's validity on draws from
one distribution."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffrep.cli import main  # noqa: E402
from diffrep.errors import DiffrepError  # noqa: E402
from diffrep.models.adapter import load_model  # noqa: E402
from diffrep.probes.images import load_images  # noqa: E402
from diffrep.probes.membership import membership  # noqa: E402
from diffrep.probes.mia import score_images, timesteps_for  # noqa: E402
from diffrep.probes.roc import auc  # noqa: E402
from diffrep.probes.difficulty import calibrate_pooled, explained_share, image_statistics  # noqa: E402
from diffrep.probes.roc import paired_auc_gain  # noqa: E402
from diffrep.probes.setinfer import STATISTIC_PLAIN, evidence, permutation_p, set_test  # noqa: E402
from diffrep.probes.shift import shift_control, shift_test, views  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> dict[str, Path]:
    """Members, non-members (12 each) and a reference of 30 other images, drawn at random from 60 images of
    the test split (6 per class); ``labels.csv`` for the tested folder (members + non-members)."""
    from diffrep.datasets import get_dataset

    src = get_dataset("fashion-mnist") / "images" / "test"
    files = [f"{c}/{f}" for c in sorted(os.listdir(src)) for f in sorted(os.listdir(src / c))[:6]]
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))]  # classes mixed in every part
    root = tmp_path_factory.mktemp("mia")
    parts = {"members": files[:12], "non": files[12:24], "reference": files[24:54]}
    for name, part in parts.items():
        (root / name).mkdir()
        for f in part:
            shutil.copyfile(src / f, root / name / f.replace("/", "_"))
    (root / "tested").mkdir()
    rows = ["path,member"]
    for name, member in (("members", 1), ("non", 0)):
        for p in sorted((root / name).iterdir()):
            shutil.copyfile(p, root / "tested" / p.name)
            rows.append(f"{p.name},{member}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {k: root / k for k in ("members", "non", "reference", "tested")} | {"labels": root / "labels.csv",
                                                                               "root": root}


@pytest.fixture(scope="module")
def overfit(split) -> Path:
    from diffrep.models.train import train

    out = split["root"] / "run"
    train(split["members"], out, steps=400, batch=8, size=16, channels=(8, 16, 16), sample_every=0,
          checkpoint_every=400)
    return out


def test_permutation_test_is_valid_under_the_null_and_finds_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(100, 3))
    null_p = [permutation_p(*evidence(rng.normal(size=(30, 3)), ref), 499, rng)[1] for _ in range(200)]
    assert np.mean(np.array(null_p) < 0.05) <= 0.09  # 5% nominal; binomial allowance for 200 draws
    shifted = rng.normal(size=(60, 3)) + 0.6
    res = set_test(shifted, ref, permutations=999, draws=10)
    assert res["p_value"] < 0.01 and res["statistic"] > 0
    assert res["smallest_set_for_alpha"] is not None and res["smallest_set_for_alpha"] <= 60
    assert [c["n_images"] for c in res["subsets"]][-1] == 60


def test_timesteps_are_each_scored_once_and_within_the_schedule():
    assert timesteps_for("loss", [100, 50, 100], 1000) == (100, 50)
    assert timesteps_for("pia", None, 1000) == (200,)
    with pytest.raises(DiffrepError, match="between 10 and 999"):
        timesteps_for("secmi", [0], 1000)
    with pytest.raises(DiffrepError, match="multiple"):
        timesteps_for("secmi", [105], 1000)


def _easy_to_hard(rng: np.random.Generator):
    """(images(n), score(images, shift)): gray squares of random brightness and contrast, easy (flat) to hard
    (busy), and a loss-like score that is mostly the image's ease and a little membership (``shift``)."""
    def images(n):
        level = rng.uniform(20, 200, (n, 1, 1, 1))
        return np.clip(level + rng.uniform(0, 60, (n, 1, 1, 1)) * rng.normal(size=(n, 8, 8, 3)), 0, 255).astype(np.uint8)

    def score(ims, shift):
        st = image_statistics(ims)
        return -3 * st[:, 1] - st[:, 0] + 0.05 * rng.normal(size=len(ims)) + shift

    return images, score


def test_difficulty_calibration_finds_a_shift_that_image_ease_hides_and_stays_valid():
    rng = np.random.default_rng(3)
    images, score = _easy_to_hard(rng)

    def features(ims, shift):
        return score(ims, shift)[:, None]

    ref_i = images(300)
    ref_f, ref_s = features(ref_i, 0.0), image_statistics(ref_i)
    st = image_statistics(ref_i[:2])
    assert st.shape == (2, 3) and (st >= 0).all() and (st <= 2).all()
    found = {"plain": 0, "calibrated": 0}
    null_p = []
    for _ in range(20):
        mem_i = images(50)
        mem_f = features(mem_i, 0.04)
        found["plain"] += permutation_p(*evidence(mem_f, ref_f), 499, rng)[1] < 0.01
        found["calibrated"] += permutation_p(*evidence(mem_f, ref_f, image_statistics(mem_i), ref_s), 499, rng)[1] < 0.01
    for _ in range(100):
        non_i = images(50)
        null_p.append(permutation_p(*evidence(features(non_i, 0.0), ref_f, image_statistics(non_i), ref_s), 199,
                                    rng)[1])
    assert found["calibrated"] >= 18 and found["plain"] <= 8, found
    assert np.mean(np.array(null_p) < 0.05) <= 0.12  # 5% nominal; binomial allowance for 100 draws
    res = set_test(mem_f, ref_f, set_stats=image_statistics(mem_i), ref_stats=ref_s, permutations=999, draws=5)
    assert res["p_value"] < 0.01


def test_difficulty_statistics_barely_move_when_images_are_saved_as_jpeg():
    """JPEG's block edges and ringing are steps of a few grey levels: the gradient above the floor moves far less
    than the plain mean absolute gradient when real images are re-compressed (relative to its spread over images)."""
    import io

    from PIL import Image

    from diffrep.datasets import get_dataset
    from diffrep.probes.difficulty import gray_chunks, gray_statistics

    ims = load_images(get_dataset("fashion-mnist") / "images" / "test", 32).images[:600:10]

    def stats(x, floor):
        return np.vstack([gray_statistics(g, floor) for _, g in gray_chunks(x)])

    for q in (90, 95):
        saved = []
        for im in ims:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, "JPEG", quality=q)
            saved.append(np.asarray(Image.open(buf).convert("RGB")))
        shift = {}
        for floor in (0.0, 4 / 255):
            before, after = stats(ims, floor), stats(np.stack(saved), floor)
            shift[floor] = (after - before).mean(axis=0) / before.std(axis=0)
        assert np.allclose(image_statistics(np.stack(saved)), stats(np.stack(saved), 4 / 255))
        assert 0 < shift[4 / 255][2] < 0.6 * shift[0.0][2], (q, shift)  # the gradient: JPEG adds small steps
        assert np.abs(shift[4 / 255][:2]).max() < 0.05  # mean and spread hardly change


def test_per_image_difficulty_calibration_separates_members_and_keeps_the_fpr():
    from diffrep.matching.calibration import calibrate

    images, score = _easy_to_hard(np.random.default_rng(5))

    ref_i, mem_i, non_i = images(400), images(200), images(2000)
    tested_i = np.concatenate([mem_i, non_i])
    raw = np.concatenate([score(mem_i, 0.05), score(non_i, 0.0)])
    ref = score(ref_i, 0.0)
    cal, cal_ref = calibrate_pooled(raw, ref, image_statistics(tested_i), image_statistics(ref_i))
    assert explained_share(np.concatenate([raw, ref]), image_statistics(np.concatenate([tested_i, ref_i]))) > 0.9
    gain = paired_auc_gain(cal[:200], cal[200:], raw[:200], raw[200:], n=200)
    assert gain["gain"] > 0.2 and gain["ci"][0] > 0.1, gain  # ease hid the members; calibrated they stand out
    flags = calibrate(reference=cal_ref, fpr=0.05, noun="image").is_replica(cal)
    plain = calibrate(reference=ref, fpr=0.05, noun="image").is_replica(raw)
    assert flags[200:].mean() <= 0.07  # 5% target on 2,000 non-members
    assert flags[:200].mean() > 0.15 and flags[:200].mean() > 2 * plain[:200].mean()  # a one-sd shift: ~26% at 5%


def test_shift_control_is_valid_on_one_source_and_finds_processed_and_biased_ones():
    from PIL import Image

    from diffrep.datasets import get_dataset

    src = get_dataset("fashion-mnist") / "images" / "test"
    files = sorted(src.rglob("*.png"))
    files = [files[i] for i in np.random.default_rng(1).permutation(len(files))[:400]]
    ims = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    proc, content = views(ims)
    assert proc.shape == (400, 64 + 6 + 3 + 1 + 8) and content.shape == (400, 82 + 256) and np.isfinite(content).all()
    rng = np.random.default_rng(0)
    null_p = []
    for _ in range(30):  # one source split at random: the control must stay quiet
        perm = rng.permutation(400)
        a, b = perm[:100], perm[100:]
        null_p.append(shift_test((proc[a], content[a]), (proc[b], content[b]), permutations=49, rng=rng)["p_value"])
    assert np.mean(np.array(null_p) <= 0.06) <= 0.2  # 6% nominal; binomial allowance for 30 draws
    brighter = np.clip(ims[:100].astype(np.int16) + 12, 0, 255).astype(np.uint8)  # a different processing
    res = shift_control(brighter, ims[100:])
    assert res["shift_detected"] and res["p_value"] == 0.005 and res["auc"] > 0.8 and "told from" in res["sentence"]
    classes = np.array([int(f.parent.name) for f in files])
    tops = ims[:200][classes[:200] < 3]  # one kind of picture (T-shirts, trousers, pullovers) against all kinds
    res = shift_control(tops, ims[200:])
    assert len(tops) > 40 and res["shift_detected"] and res["auc_by_view"]["content"] > 0.75, res
    same = shift_control(ims[:100], ims[100:])
    assert not same["shift_detected"] and "cannot be told" in same["sentence"]
    assert "skipped" in shift_control(ims[:5], ims[100:])


def test_members_of_an_overfit_model_score_higher(overfit, split):
    m = load_model(overfit)
    mem, non = load_images(split["members"], 16), load_images(split["non"], 16)
    assert mem.resized == 12  # 28 px images at the model's 16 px
    a = score_images(m, mem.images, {}, ("loss", "pia"), seeds=4)
    b = score_images(m, non.images, {}, ("loss", "pia"), seeds=4)
    assert auc(a.scores["loss"], b.scores["loss"]) >= 0.65
    again = score_images(m, mem.images, {}, ("loss",), seeds=4)
    assert np.array_equal(again.scores["loss"], a.scores["loss"])  # paired seeds: deterministic
    assert a.model_calls == {"loss": 4, "pia": 2}
    assert set(a.features) == {"loss@100", "pia@200"}


def test_cli_membership_with_labels_and_report(overfit, split, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["membership", str(overfit), "--images", str(split["tested"]), "--reference", str(split["reference"]),
                 "--out", str(out), "--method", "all", "--fpr", "0.1", "--labels", str(split["labels"]),
                 "--timesteps", "50,100", "--report", "-q"]) == 0
    text = capsys.readouterr().out
    assert "24 images scored by loss (difficulty-calibrated) against 30 reference images" in text and "AUC" in text
    s = json.loads((out / "summary.json").read_text())
    assert s["difficulty"]["method"] == "image-stats" and set(s["difficulty"]["explained_share"]) == {
        "loss", "secmi", "pia"}
    assert s["threshold_source"] == "reference" and s["conditioning"] == "unconditional"
    assert s["timesteps"] == {"loss": [50, 100], "secmi": [50, 100], "pia": [50, 100]}
    assert s["model_calls_per_image"] == {"loss": 4, "secmi": 17, "pia": 4}
    ev = s["evaluation"]
    assert ev["members"] == 12 and ev["non_members"] == 12
    for m in ("loss", "secmi", "pia"):
        assert 0 <= ev[m]["auc"] <= 1 and ev[m]["auc_ci"][0] <= ev[m]["auc"] <= ev[m]["auc_ci"][1]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert list(rows[0])[:5] == ["path", "score", "p_value", "is_member", "raw_score"] and "raw_secmi" in rows[0]
    assert {r["score"] for r in rows} != {r["raw_score"] for r in rows}
    assert {r["label"] for r in rows} == {"0", "1"}
    # p-values are conformal on the 30 reference scores: (1 + #{null >= s}) / 31
    p = np.array([float(r["p_value"]) for r in rows])
    assert np.allclose(p * 31, np.round(p * 31)) and p.min() >= 1 / 31
    flagged = [r["is_member"] == "True" for r in rows]
    assert sum(flagged) == s["flagged"]
    page = (out / "report.html").read_text()
    assert "ROC on the labelled images" in page and "Content-Security-Policy" in page and "<th>label</th>" in page
    assert "Shift control: The tested images cannot be told" in page and "freed of image difficulty" in page
    assert main(["report", str(out), "-q"]) == 0


@pytest.fixture(scope="module")
def set_run(overfit, split) -> tuple[Path, dict]:
    """Dataset inference on the members (a folder of this module's tests to read, or copy and damage)."""
    out = split["root"] / "set"
    return out, membership(overfit, out, set_source=split["members"], reference=split["reference"], fpr=0.1)


def test_dataset_inference_writes_a_p_value_and_a_sentence(set_run):
    out, s = set_run
    st = json.loads((out / "set.json").read_text())
    assert st["shift_control"]["shift_detected"] is False and 0 < st["shift_control"]["p_value"] <= 1
    assert 0 < st["p_value"] <= 1 and st["n_images"] == 12 and st["reference_images"] == 30
    assert st["features"] == ["loss@100"]  # the asked method's features (the loss by default)
    assert not any("the set test sums" in w for w in s["warnings"])
    assert st["sentence"] == s["set"]["sentence"] and str(st["n_images"]) in st["sentence"]
    assert st["decision"] in ("trained on", "not shown to be trained on")
    assert st["subsets"][-1]["n_images"] == 12


def test_one_image_and_labels_of_one_class(overfit, split, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(split["members"].iterdir())[0]
    shutil.copyfile(first, one / first.name)
    (tmp_path / "labels.csv").write_text(f"path,member\n{first.name},1\n")
    assert main(["membership", str(overfit), "--set", str(one), "--reference", str(split["reference"]), "--out",
                 str(tmp_path / "m"), "--labels", str(tmp_path / "labels.csv"), "--fpr", "0.1", "--report",
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert "the labels give 1 members and 0 non-members" in out and "AUC nan" not in out
    text = (tmp_path / "m" / "summary.json").read_text()
    assert "NaN" not in text  # JSON has no NaN: strict readers (browsers, jq) refuse it
    ev = json.loads(text)["evaluation"]
    assert ev["loss"]["auc"] is None and ev["loss"]["non_members_flagged"] is None
    sentence = json.loads((tmp_path / "m" / "set.json").read_text())["sentence"]
    assert "this image" in sentence and "1 images" not in sentence
    assert "difficulty calibration not applied: 31 tested and reference images" in out  # too few to fit


def test_a_set_unlike_its_reference_is_inconclusive(overfit, split, tmp_path, capsys):
    from PIL import Image, ImageOps

    inverted = tmp_path / "inverted"  # the members as another pipeline might have stored them: inverted
    inverted.mkdir()
    for f in sorted(split["members"].iterdir()):
        ImageOps.invert(Image.open(f).convert("RGB")).save(inverted / f.name)
    assert main(["membership", str(overfit), "--set", str(inverted), "--reference", str(split["reference"]),
                 "--out", str(tmp_path / "m"), "--fpr", "0.1"]) == 0
    out, err = capsys.readouterr()
    for stage in ("Loading set: 12/12", "Loading reference: 30/30", "Scoring images: 12/12",
                  "Scoring reference: 30/30", "Shift control: 42/42"):  # one labelled progress line per stage
        assert f"{stage} done in" in err, err
    st = json.loads((tmp_path / "m" / "set.json").read_text())
    assert st["decision"].startswith("inconclusive") and st["shift_control"]["shift_detected"]
    assert st["sentence"].startswith("Inconclusive: these 12 images can be told from the reference")
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["warnings"][0].startswith("The tested images can be told from the reference without the model")
    assert "Warning: The tested images can be told" in out and "Shift control:" not in out


def test_tested_images_in_the_reference_are_left_out_of_it(overfit, split, tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(split["reference"], ref)
    for f in sorted(split["members"].iterdir())[:4]:  # four tested images also given as reference
        shutil.copyfile(f, ref / ("copy-" + f.name))
    s = membership(overfit, tmp_path / "set", set_source=split["members"], reference=ref, fpr=0.1,
                   difficulty="none", method="all")
    assert s["reference_images"] == 30 and s["reference_dropped_as_tested"] == 4
    assert s["difficulty"] == {"method": "none"}
    st = json.loads((tmp_path / "set" / "set.json").read_text())
    assert st["statistic"] == STATISTIC_PLAIN and st["features"] == ["loss@100", "pia@200", "secmi@100"]
    assert any(w.startswith("the set test sums secmi and pia features too") for w in s["warnings"])
    assert "4 reference images are identical to tested images" in s["warnings"][0]
    with pytest.raises(DiffrepError, match="has 0 images once the 12 identical to tested images are left out"):
        membership(overfit, tmp_path / "self", images=split["members"], reference=split["members"], fpr=0.1)


def test_report_of_a_damaged_membership_folder_is_one_line(set_run, tmp_path, capsys):
    out = tmp_path / "m"
    shutil.copytree(set_run[0], out)
    good = {n: (out / n).read_text() for n in ("summary.json", "set.json", "scores.csv")}
    edits = [("summary.json", "[1, 2]", "not a JSON object"),
             ("summary.json", good["summary.json"].replace('"method": "loss"', '"method": "nope"'),
              "do not match its method"),
             ("set.json", good["set.json"].replace('"p_value": ', '"p_value": "x", "was": '),
              "p_value is not a number"),
             ("scores.csv", "x,y\n1,2\n", "KeyError")]
    for name, text, says in edits:
        for n, t in good.items():
            (out / n).write_text(t)
        (out / name).write_text(text)
        assert main(["report", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and err.count("\n") == 0 and "Run `diffrep membership" in err


def test_bad_input_gets_one_line_reasons(overfit, split, caption_run, captioned, tmp_path, capsys):
    with pytest.raises(DiffrepError, match="too few to resolve --fpr 0.01"):
        membership(overfit, tmp_path / "a", images=split["tested"], reference=split["reference"])
    with pytest.raises(DiffrepError, match="unconditional model: it takes no captions"):
        membership(overfit, tmp_path / "b", images=split["tested"], reference=split["reference"], fpr=0.1,
                   captions=str(captioned / "captions.jsonl"))
    with pytest.raises(DiffrepError, match="--difficulty 'pixels': use image-stats or none"):
        membership(overfit, tmp_path / "b2", images=split["tested"], reference=split["reference"], fpr=0.1,
                   difficulty="pixels")
    with pytest.raises(DiffrepError, match="not both"):
        membership(overfit, tmp_path / "c", images=split["tested"], set_source=split["tested"],
                   reference=split["reference"], fpr=0.1)
    bad = tmp_path / "labels.csv"
    bad.write_text("file,label\nx.png,1\n")
    with pytest.raises(DiffrepError, match="columns path and member"):
        membership(overfit, tmp_path / "d", images=split["tested"], reference=split["reference"], fpr=0.1,
                   labels=bad)
    with pytest.raises(DiffrepError, match="--labels .*missing.csv does not exist or is not a file"):
        membership(overfit, tmp_path / "d1", images=split["tested"], reference=split["reference"], fpr=0.1,
                   labels=tmp_path / "missing.csv")
    with pytest.raises(DiffrepError, match="--seeds 0: give at least one seed"):
        membership(overfit, tmp_path / "d3", images=split["tested"], reference=split["reference"], fpr=0.1,
                   seeds=0)
    first = sorted(split["tested"].iterdir())[0].name
    bad.write_text(f"path,member\n{first},1\ntested/{first},1\n{first},0\n")
    with pytest.raises(DiffrepError, match=f"{first} is labelled both member and non-member"):
        membership(overfit, tmp_path / "d2", images=split["tested"], reference=split["reference"], fpr=0.1,
                   labels=bad)
    with pytest.raises(DiffrepError, match="--timesteps 15: secmi inverts in steps of 10"):
        membership(overfit, tmp_path / "e", images=split["tested"], reference=split["reference"], fpr=0.1,
                   method="secmi", timesteps=[15])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DiffrepError, match="--reference"):
        membership(overfit, tmp_path / "f", images=split["tested"], reference=empty, fpr=0.1)
    with pytest.raises(DiffrepError, match=r"--reference has 0 images once the \d+ identical to tested images are "
                       r"left out, too few .* or a larger --fpr\.$"):
        membership(overfit, tmp_path / "f2", images=split["tested"], reference=split["tested"], fpr=0.1)
    assert main(["membership", str(overfit), "--images", str(split["tested"]), "--reference", str(empty),
                 "--out", str(tmp_path / "g"), "-q"]) != 0
    assert main(["membership", str(overfit), "--images", str(split["tested"]), "--reference", str(split["reference"]),
                 "--out", str(tmp_path / "h"), "--method", "pia", "--seeds", "3", "-q"]) == 2
    assert "--seeds would change nothing in this run" in capsys.readouterr().err and not (tmp_path / "h").exists()


def test_caption_models_and_the_sd_pipeline(caption_run, tiny_sd, captioned, split, tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    from diffrep.datasets import get_dataset

    src = get_dataset("emoji")
    rows = [json.loads(x) for x in (src / "captions.jsonl").read_text().splitlines()[300:320]]
    for r in rows:
        shutil.copyfile(src / "images" / r["file"], ref / Path(r["file"]).name)
    caps = tmp_path / "captions.jsonl"
    caps.write_text((captioned / "captions.jsonl").read_text() + "".join(
        json.dumps({"file": Path(r["file"]).name, "caption": r["caption"]}) + "\n" for r in rows))
    s = membership(caption_run, tmp_path / "run", images=captioned, reference=ref, fpr=0.1)
    assert s["conditioning"] == "empty prompt" and s["images"] == 16
    s = membership(tiny_sd, tmp_path / "sd", images=captioned, reference=ref, fpr=0.1, method="all",
                   captions=str(caps))
    assert s["conditioning"] == "captions" and s["model_kind"] == "diffusers"
    rows = list(csv.DictReader((tmp_path / "sd" / "scores.csv").open()))
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("score", "score_secmi", "score_pia"))
    assert rows[0]["caption"]
    partial = tmp_path / "partial.jsonl"
    partial.write_text((captioned / "captions.jsonl").read_text())
    with pytest.raises(DiffrepError, match="20 --reference images have no caption"):
        membership(tiny_sd, tmp_path / "sd2", images=captioned, reference=ref, fpr=0.1, captions=str(partial))


def test_membership_experiment_runs_and_resumes(tmp_path, capsys):
    from diffrep.eval.membership import run_membership_experiment

    kw = dict(overrides=dict(sizes=[24], steps=[20, 40], eval_members=24, reference=19, test_nonmembers=24,
                             set_sizes=[10], set_draws=10, splits=3, channels=[8, 16, 16], batch=8, size=16,
                             seeds=1), fpr=0.1)
    s = run_membership_experiment(tmp_path, **kw)
    assert [(r["steps"], r["method"], r["difficulty"]) for r in s["methods"]] == [
        (st, m, d) for st in (20, 40) for m in ("loss", "secmi", "pia") for d in ("none", "image-stats")]
    plain_loss = [r for r in s["methods"] if r["method"] == "loss" and r["difficulty"] == "none"]
    assert all(r["auc_gain_vs_loss"]["gain"] == 0 for r in plain_loss)
    assert all(r["epochs"] == pytest.approx(r["steps"] * 8 / 24, abs=0.05) for r in s["methods"])
    assert {r["set_size"] for r in s["dataset_inference"]} == {10}
    assert (tmp_path / "runs" / "n24-steps20" / "checkpoint.pt").is_file()
    md = (tmp_path / "results.md").read_text()
    assert "| 24 | 40 |" in md and "Features: loss (as `diffrep membership --set` by default)" in md
    marker = tmp_path / "eval" / "n24-steps40" / "result.json"
    before = marker.stat().st_mtime_ns
    assert run_membership_experiment(tmp_path, **kw)["methods"] == s["methods"]
    assert marker.stat().st_mtime_ns == before  # reused, not recomputed
    # image statistics of another definition: computed again from the images, the scores reused
    mdir = marker.parent / "membership"
    with np.load(mdir / "features.npz") as f:
        arrays = {k: f[k] for k in f.files}
    stats = {k: arrays[k].copy() for k in ("statistics/images", "statistics/reference")}
    np.savez_compressed(mdir / "features.npz", **(arrays | {k: np.zeros_like(v) for k, v in stats.items()}))
    (mdir / "statistics.json").write_text('{"statistics": "another definition"}')
    marker.unlink()
    scored = (mdir / "summary.json").stat().st_mtime_ns
    assert run_membership_experiment(tmp_path, **kw)["methods"] == s["methods"]
    assert (mdir / "summary.json").stat().st_mtime_ns == scored  # not scored again
    with np.load(mdir / "features.npz") as f:
        assert all(np.array_equal(f[k], v) for k, v in stats.items())
    (mdir / "statistics.json").write_text('{"statistics": "another definition"}')
    marker.unlink()
    next((tmp_path / "data" / "eval-24").iterdir()).unlink()
    with pytest.raises(DiffrepError, match="no longer readable"):
        run_membership_experiment(tmp_path, **kw)
