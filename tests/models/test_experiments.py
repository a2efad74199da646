"""The experiment grids (`diffrep experiment data-size|conditioning|caption-mitigation`) and the train-time
caption mitigations on real Fashion-MNIST images: tiny runs (8 images, 32 px, tens of steps) on one thread."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffrep.decode import decode_image  # noqa: E402
from diffrep.errors import DiffrepError  # noqa: E402
from diffrep.models.train import train  # noqa: E402

FAST = dict(steps=12, batch=8, sample_every=0, checkpoint_every=6)


pytestmark = pytest.mark.usefixtures("torch_one_thread", "short_grids")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    """6 held-out Fashion-MNIST test images (one per class 0-5): the experiments' calibration set."""
    from diffrep.datasets import get_dataset

    src = get_dataset("fashion-mnist") / "images" / "test"
    ref = tmp_path_factory.mktemp("reference")
    for label in range(6):
        shutil.copyfile(sorted((src / str(label)).iterdir())[0], ref / f"{label}.png")
    return ref


def test_experiment_end_to_end_and_rerun_reuses_runs(fashion, heldout, tmp_path):
    """Two data-size runs (4 and 8 images, 4 steps, 4 samples) audited against 6 held-out images."""
    import csv
    import os

    from diffrep.eval.experiment import COLUMNS, run_experiment

    ref = heldout
    out = tmp_path / "exp"
    tiny = {"steps": 4, "batch": 4, "samples": 4, "sample_steps": 2, "sizes": [4, 8]}
    with pytest.raises(DiffrepError, match="--reference"):
        run_experiment("data-size", str(fashion), out, overrides=tiny)
    res = run_experiment("data-size", str(fashion), out, reference=str(ref), overrides=tiny)
    assert [r["run"] for r in res] == ["n4", "n8"]
    assert [r["training_images"] for r in res] == [4, 8]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert list(rows[0]) == COLUMNS and len(rows) == 2
    for r in res:
        assert r["samples"] == 4 and 0 <= r["replication_rate"] <= 1 and len(r["reference_top1_scores"]) == 6
        assert -1 <= r["top1_mean"] <= r["top1_p95"] + 1e-6 <= 1 + 1e-6 and np.isfinite(r["kid_sscd_x1000"])
        # pixel channel: nearest-training-image RMS against the held-out 1% quantile
        assert 0 <= r["pixel_rms_median"] <= 255 and 0 <= r["pixel_replication_rate"] <= 1
        assert r["pixel_threshold"] <= r["reference_pixel_rms_median"]
        assert sum(r["pixel_matches_per_training_image"].values()) == round(r["pixel_replication_rate"] * 4)
        assert decode_image((out / "runs" / r["run"] / "pairs.png").read_bytes()).shape[2] == 3
    md = (out / "results.md").read_text()
    assert "| n4 | none | 4 |" in md and "replication_rate" in md and "kid_sscd_x1000" in md
    assert decode_image((out / "similarity.png").read_bytes()).shape[2] == 3
    assert len(list((out / "runs" / "n8" / "train_images").iterdir())) == 8
    stamp = [os.stat(out / "runs" / n / "result.json").st_mtime_ns for n in ("n4", "n8")]
    again = run_experiment("data-size", str(fashion), out, reference=str(ref), overrides=tiny)
    assert [os.stat(out / "runs" / n / "result.json").st_mtime_ns for n in ("n4", "n8")] == stamp
    assert [r["replicas"] for r in again] == [r["replicas"] for r in res]


def test_experiment_generate_here_audit_elsewhere(fashion, heldout, tmp_path):
    """Stage 1 (train + sample, as on a GPU machine) for one run of the conditioning grid; the run folder
    is copied without its checkpoint and stage 2 audits it there without training again."""
    from diffrep.eval.experiment import run_experiment

    tiny = {"steps": 4, "batch": 4, "samples": 4, "sample_steps": 2, "cond_subset": 8}
    gen = run_experiment("conditioning", str(fashion), tmp_path / "gpu", reference=str(heldout), overrides=tiny,
                         only=["n8-randtok"], generate_only=True)
    assert len(gen) == 1 and gen[0]["step"] == 4 and gen[0]["device"] == "cpu"
    run = tmp_path / "gpu" / "runs" / "n8-randtok"
    caps = [json.loads(x)["caption"] for x in (run / "random_captions.jsonl").read_text().splitlines()]
    assert len(caps) == 8 and len(set(caps)) == 8 and all(len(c.split()) == 6 for c in caps)
    prompts = [json.loads(x)["caption"] for x in (run / "samples" / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 4 and set(prompts) <= set(caps)  # sampled with training images' own random keys
    assert not (run / "audit").exists() and not (tmp_path / "gpu" / "results.md").exists()
    shutil.copytree(tmp_path / "gpu" / "runs", tmp_path / "cpu" / "runs")
    (tmp_path / "cpu" / "runs" / "n8-randtok" / "train" / "checkpoint.pt").unlink()
    res = run_experiment("conditioning", str(fashion), tmp_path / "cpu", reference=str(heldout), overrides=tiny,
                         only=["n8-randtok"])
    assert res[0]["steps"] == 4 and res[0]["trained_on"] == "cpu" and res[0]["samples"] == 4
    assert not (tmp_path / "cpu" / "runs" / "n8-randtok" / "train" / "checkpoint.pt").exists()  # not retrained
    with pytest.raises(DiffrepError, match="n8-randtok"):
        run_experiment("conditioning", str(fashion), tmp_path / "cpu", reference=str(heldout), overrides=tiny,
                       only=["n8-nope"])


def test_cli_experiment_generate_only(fashion, heldout, tmp_path):
    base = [sys.executable, "-m", "diffrep", "experiment", "caption-mitigation", "--data", str(fashion), "--reference",
            str(heldout), "--out", str(tmp_path / "e"), "--steps", "2", "--samples", "2", "--batch", "2", "-q"]
    r = subprocess.run(base + ["--only", "n64-randtok-zz"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "n64-randtok-rc" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(base + ["--only", "n64-randtok-rt", "--generate-only"], capture_output=True, text=True,
                       timeout=300)
    # the preset's 64-image subset is larger than the 8-image folder: a clear error, no traceback
    assert r.returncode != 0 and "--subset 64" in r.stderr and "Traceback" not in r.stderr


def test_caption_mitigations_edit_ids():
    from diffrep.models.mitigate import CaptionMitigation

    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1, 5, 6, 7, 0, 0, 0], [1, 8, 0, 0, 0, 0, 0]])
    cond = {"ids": ids, "mask": ids != 0}
    rc = CaptionMitigation("rc", 1.0, 20, gen).apply(cond)["ids"]
    assert rc.shape == ids.shape and (rc[:, 0] == 1).all() and ((rc != 0).sum(1) == (ids != 0).sum(1)).all()
    assert int(rc[:, 1:].masked_select(rc[:, 1:] != 0).min()) >= 3  # random words, never special tokens
    rt = CaptionMitigation("rt", 1.0, 20, gen).apply(cond)["ids"]
    assert ((rt != 0).sum(1) == (ids != 0).sum(1) + 2).all()
    cwr = CaptionMitigation("cwr", 1.0, 20, gen).apply(cond)
    assert set(cwr["ids"][0].tolist()) <= {0, 1, 5, 6, 7} and cwr["ids"][1].tolist() == [1, 8, 8, 8, 0, 0, 0]
    assert (cwr["mask"] == (cwr["ids"] != 0)).all()
    assert CaptionMitigation("rt", 0.0001, 20, gen).apply(cond) is cond  # p: most steps leave captions alone
    gn = CaptionMitigation("gn", 1.0, 20, gen).apply(cond)
    assert torch.allclose(gn["text_noise"], torch.full((2,), 0.1)) and gn["ids"] is ids


def test_train_with_mitigation(fashion, tmp_path):
    r = train(fashion, tmp_path / "rt", cond="caption", mitigate="rt", mitigate_p=0.5, **FAST)
    cfg = json.loads((r.run_dir / "config.json").read_text())
    assert cfg["mitigate"] == "rt" and cfg["mitigate_p"] == 0.5 and np.isfinite(r.loss)
    words = max(len(c.split()) for c in ["T-shirt/top", "Ankle boot", "Trouser", "Pullover", "Dress", "Coat",
                                         "Sandal", "Shirt", "Sneaker", "Bag"])
    assert cfg["model"]["text"]["max_len"] >= words + 1  # room for the two inserted words
    r = train(fashion, tmp_path / "gn", cond="caption", mitigate="gn", mitigate_p=1.0, **FAST)
    assert np.isfinite(r.loss)
    with pytest.raises(DiffrepError, match="caption"):
        train(fashion, tmp_path / "x", cond="none", mitigate="rc", **FAST)
    with pytest.raises(DiffrepError, match="probability"):
        train(fashion, tmp_path / "x", cond="caption", mitigate="rc", mitigate_p=0.0, **FAST)
    with pytest.raises(DiffrepError, match="rc, rt, cwr, gn"):
        train(fashion, tmp_path / "x", cond="caption", mitigate="mc", **FAST)


def test_wen_filter_leaves_high_noise_norm_samples_out(fashion, tmp_path):
    fast = FAST | {"steps": 50}
    r = train(fashion, tmp_path / "all", cond="caption", mitigate="wen-filter", wen_threshold=1e9, **fast)
    rows = (r.run_dir / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,steps_per_s,wen_dropped,noise_norm"
    dropped, norm = map(float, rows[1].split(",")[3:])
    assert dropped == 0.0 and norm > 0 and np.isfinite(r.loss)
    cfg = json.loads((r.run_dir / "config.json").read_text())
    assert cfg["mitigate"] == "wen-filter" and cfg["wen_threshold"] == 1e9
    # a threshold under every conditioned sample's norm leaves out all but the caption-dropped ones (10%)
    r = train(fashion, tmp_path / "none", cond="caption", mitigate="wen-filter", wen_threshold=1e-6, **fast)
    dropped = float((r.run_dir / "log.csv").read_text().splitlines()[1].split(",")[3])
    assert 0.75 < dropped < 1.0 and np.isfinite(r.loss)
    with pytest.raises(DiffrepError, match="needs --wen-threshold"):
        train(fashion, tmp_path / "x", cond="caption", mitigate="wen-filter", **FAST)
    with pytest.raises(DiffrepError, match="--uncond-p > 0"):
        train(fashion, tmp_path / "x", cond="caption", mitigate="wen-filter", wen_threshold=1.0, uncond_p=0.0, **FAST)
    with pytest.raises(DiffrepError, match="--wen-threshold applies to --mitigate wen-filter"):
        train(fashion, tmp_path / "x", cond="caption", wen_threshold=1.0, **FAST)
    with pytest.raises(DiffrepError, match="--wen-threshold applies to --mitigate wen-filter"):
        train(fashion, tmp_path / "x", cond="caption", mitigate="rc", wen_threshold=1.0, **FAST)
