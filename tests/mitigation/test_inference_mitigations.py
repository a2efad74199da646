"""Inference-time mitigations (`diffrep sample --mitigate`) on models built here: the `diffrep train` caption
run and the tiny Stable-Diffusion-shaped pipeline of tests/conftest.py, and an unconditional run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffrep.cli import main  # noqa: E402
from diffrep.errors import DiffrepError  # noqa: E402
from diffrep.mitigation import INFERENCE, make_plan  # noqa: E402
from diffrep.models.sample import sample  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "prompts.jsonl").read_text().splitlines()]


def _images(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p), np.int16) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def plain(caption_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    sample(caption_run, 4, out, steps=8, guidance=3.0)
    return out


@pytest.mark.parametrize("name", INFERENCE)
def test_every_mitigation_samples_a_caption_run_and_records_itself(name, caption_run, plain, tmp_path, capsys):
    out = tmp_path / name
    assert main(["sample", str(caption_run), "--n", "4", "--out", str(out), "--steps", "8", "--guidance", "3",
                 "--mitigate", name, "-q"]) == 0
    assert f"mitigation {name}" in capsys.readouterr().out
    recs, base = _records(out), _records(plain)
    assert [r["caption"] for r in recs] == [r["caption"] for r in base]  # what was asked is kept
    assert all(r["mitigation"] == name and "mitigation_strength" in r for r in recs)
    if name in ("rt", "cwr", "rna"):
        assert all(len(r["prompt_used"].split()) == len(r["caption"].split()) + 2 for r in recs)
    if name == "rna":
        assert all(any(w.isdigit() for w in r["prompt_used"].split()) for r in recs)
    if name == "wen":
        assert all(r["wen_iterations"] == 10 and r["noise_norm_after"] < r["noise_norm_before"] for r in recs)
    if name == "jain":
        assert all(r["mitigation_strength"] == 3.0 for r in recs)
    assert not np.array_equal(_images(out), _images(plain))


def test_neutral_settings_reproduce_plain_sampling(caption_run, plain, tmp_path):
    sample(caption_run, 4, tmp_path / "a", steps=8, guidance=3.0, plan=make_plan("attn-rescale", 1.0))
    assert np.abs(_images(tmp_path / "a") - _images(plain)).max() <= 1  # same attention, float rounding only
    sample(caption_run, 4, tmp_path / "w", steps=8, guidance=3.0, plan=make_plan("wen", 1e9))
    assert np.array_equal(_images(tmp_path / "w"), _images(plain))  # target already met: nothing optimized
    assert all(r["wen_iterations"] == 0 for r in _records(tmp_path / "w"))
    sample(caption_run, 4, tmp_path / "c1", steps=8, guidance=3.0, plan=make_plan("cwr"), seed=5)
    sample(caption_run, 4, tmp_path / "c2", steps=8, guidance=3.0, plan=make_plan("cwr"), seed=5)
    assert _records(tmp_path / "c1") == _records(tmp_path / "c2")  # seeded edits


@pytest.mark.parametrize("name", ("gni", "rt", "wen", "jain", "attn-rescale"))
def test_mitigations_on_the_sd_pipeline(name, tiny_sd, captioned, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(json.loads(x)["caption"] for x in
                                 (captioned / "captions.jsonl").read_text().splitlines()[:2]) + "\n")
    r = sample(tiny_sd, 2, tmp_path / "o", prompts=prompts, steps=4, guidance=2.0, plan=make_plan(name))
    assert len(r.files) == 2 and all(x["mitigation"] == name for x in _records(tmp_path / "o"))


def test_refusals_are_one_line_reasons(caption_run, captioned, tmp_path, capsys):
    from diffrep.models.train import train

    uncond = tmp_path / "uncond"
    train(captioned, uncond, steps=2, batch=4, size=16, channels=(8, 16, 16), sample_every=0, checkpoint_every=2)
    for name in INFERENCE:
        with pytest.raises(DiffrepError, match="takes no prompt"):
            sample(uncond, 1, tmp_path / f"u-{name}", steps=2, plan=make_plan(name, 2.0 if name == "jain" else None))
    with pytest.raises(DiffrepError, match="give --guidance .* above 1"):
        sample(caption_run, 1, tmp_path / "j", steps=2, plan=make_plan("jain"))
    with pytest.raises(DiffrepError, match="noise scale > 0"):
        sample(caption_run, 1, tmp_path / "g", steps=2, plan=make_plan("gni", 0))
    with pytest.raises(DiffrepError, match="whole number of words"):
        sample(caption_run, 1, tmp_path / "r", steps=2, plan=make_plan("rt", 1.5))
    assert not (tmp_path / "r").exists()  # refused before anything is written
    assert main(["sample", str(caption_run), "--n", "1", "--out", str(tmp_path / "s"), "--mitigate-strength", "2"]) != 0
    assert "--mitigate-strength needs --mitigate" in capsys.readouterr().err


def test_attention_observer_sees_the_probabilities_it_applies(caption_run):
    from diffrep.mitigation.attention import BosRescaleProcessor, cross_attention_processor
    from diffrep.models.adapter import load_model

    model = load_model(caption_run, "cpu")
    before = dict(model.cross_attention_unet().attn_processors)
    cond = model.encode(["a red shoe", "a long caption of several words here"])
    x = model.noise(2, torch.Generator().manual_seed(0))
    t = torch.tensor(model.train_steps - 1)
    with torch.no_grad():
        plain = model.predict(x, t, cond)
    seen: list = []
    layers = sum(n.endswith("attn2.processor") for n in before)
    proc = BosRescaleProcessor(1.0, lambda probs, batch: seen.append((probs, batch)))
    with torch.no_grad(), cross_attention_processor(model, proc):
        observed = model.predict(x, t, cond)
    assert torch.allclose(observed, plain, atol=1e-5)  # factor 1 with an observer is plain attention
    assert layers and len(seen) == layers  # every cross-attention layer, once
    assert dict(model.cross_attention_unet().attn_processors) == before  # the model's own processors are back
    mask = cond["mask"].bool()
    for probs, batch in seen:
        p = probs.view(batch, -1, *probs.shape[1:])
        assert batch == 2 and torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)
        assert (p[0][..., ~mask[0]] < 1e-6).all()  # the short caption's padding gets no attention
