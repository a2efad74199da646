"""Small diffusion models on real Fashion-MNIST and emoji images: data, duplication, training, resume,
determinism, conditioning, sampling and the CLI. Tiny runs (8 images, 32 px, tens of steps) on one thread. The
experiments and the train-time mitigations: test_experiments.py."""
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
from diffrep.models import data as mdata  # noqa: E402
from diffrep.models.checkpoint import load_checkpoint  # noqa: E402
from diffrep.models.sample import read_prompts, sample  # noqa: E402
from diffrep.models.train import train  # noqa: E402

FAST = dict(steps=12, batch=8, sample_every=0, checkpoint_every=6)


pytestmark = pytest.mark.usefixtures("torch_one_thread", "short_grids")


def weights(run: Path, key: str = "ema") -> dict:
    return load_checkpoint(run)[key]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ data
def test_training_set_from_packaged_layout(fashion):
    ts = mdata.load_training_set(fashion, size=32)
    assert ts.images.shape == (8, 32, 32, 1) and ts.images.dtype == np.uint8
    assert ts.ids[0].startswith("0/") and ts.ids[7].startswith("7/")
    assert ts.caption_file and ts.caption_file.endswith("captions.jsonl")  # found two folders up
    assert ts.captions[0] == "T-shirt/top" and ts.captions[1] == "Trouser"
    assert ts.classes() == [str(i) for i in range(8)]
    assert ts.class_captions()["7"] == "Sneaker"
    small = mdata.load_training_set(fashion, size=28)
    assert small.images.shape == (8, 28, 28, 1)
    sub = mdata.load_training_set(fashion, subset=4, seed=1)
    assert len(sub) == 4 and sub.ids == mdata.load_training_set(fashion, subset=4, seed=1).ids
    assert any(mdata.load_training_set(fashion, subset=4, seed=s).ids != sub.ids for s in (2, 3, 4))
    with pytest.raises(DiffrepError, match="larger than the 8 images"):
        mdata.load_training_set(fashion, subset=9)
    with pytest.raises(DiffrepError, match="multiple of 4"):
        mdata.load_training_set(fashion, size=30)


def test_rgba_emoji_become_rgb_on_white(tmp_path, emoji_files):
    for f in emoji_files[:3]:
        shutil.copyfile(f, tmp_path / f.name)
    ts = mdata.load_training_set(tmp_path, size=32)
    assert ts.images.shape == (3, 32, 32, 3)
    assert ts.images[:, 0, 0].min() > 240  # transparent corners composited onto white
    assert ts.class_keys is None  # flat folder, no captions: no classes


def test_duplication_weights_and_sampler_frequencies():
    w, dup = mdata.duplication_weights(200, 0.05, 5.0, seed=3)
    assert len(dup) == 10 and sorted(dup) == dup and set(np.flatnonzero(w == 5.0)) == set(dup)
    assert mdata.duplication_weights(200, 0.05, 5.0, seed=3)[1] == dup
    assert mdata.duplication_weights(200, 0.05, 5.0, seed=4)[1] != dup
    assert mdata.duplication_weights(200, 0.0, 5.0)[1] == []
    sampler = mdata.BatchSampler(w, torch.Generator().manual_seed(0))
    counts = np.bincount(torch.cat([sampler.draw(1000) for _ in range(200)]).numpy(), minlength=200)
    per_dup, per_other = counts[dup].mean(), np.delete(counts, dup).mean()
    # 200k draws, total weight 240: expected 4167 per duplicated image and 833 per other one
    assert abs(per_dup / 4167 - 1) < 0.05 and abs(per_other / 833 - 1) < 0.02
    assert 4.5 < per_dup / per_other < 5.5
    with pytest.raises(DiffrepError, match="dup-frac"):
        mdata.duplication_weights(10, 1.5, 5.0)
    with pytest.raises(DiffrepError, match="dup-weight"):
        mdata.duplication_weights(10, 0.1, 0.0)


# ---------------------------------------------------------------------------------- model pieces
@pytest.mark.parametrize("cond", ["none", "class", "caption"])
def test_noise_prediction_shapes(cond):
    from diffrep.models.nets import build_model, model_config, predict_noise
    from diffrep.models.text import WordTokenizer

    tok = WordTokenizer.build(["a red shoe", "a blue bag"])
    text = {"kind": "word", "vocab_size": len(tok.vocab), "max_len": tok.max_len, "dim": 64, "layers": 2, "heads": 4}
    for size, ch in ((32, 1), (28, 3)):
        model = build_model(model_config(cond, image_channels=ch, size=size, num_classes=3, text=text))
        x = torch.randn(2, ch, size, size)
        c = {"none": {}, "class": {"labels": torch.tensor([0, 2])}}.get(cond)
        if c is None:
            ids, mask = tok.encode(["a red shoe", ""])
            c = {"ids": ids, "mask": mask}
        assert predict_noise(model, x, torch.tensor([10, 900]), c).shape == x.shape


def test_word_tokenizer():
    from diffrep.models.text import WordTokenizer

    tok = WordTokenizer.build(["T-shirt/top", "Ankle boot", "ankle  BOOT!"])
    assert tok.vocab[:3] == ("<pad>", "<bos>", "<unk>") and set(tok.vocab[3:]) == {"ankle", "boot", "shirt", "t", "top"}
    assert tok.max_len == 4  # <bos> + the longest caption's 3 words
    ids, mask = tok.encode(["ankle boot", "", "red boot"])
    assert ids.shape == (3, 4) and mask[:, 0].all()  # <bos> keeps every attention mask non-empty
    assert mask.sum(1).tolist() == [3, 1, 3] and ids[2, 1] == tok.vocab.index("<unk>")
    assert tok.unknown_words("red boot") == ["red"]
    assert WordTokenizer.from_json(tok.to_json()) == tok


def test_missing_extra_and_clip_errors(monkeypatch, tmp_path):
    from diffrep.models.deps import require_models
    from diffrep.models.text import load_clip_text_encoder

    with pytest.raises(DiffrepError, match="not a folder with a CLIP text encoder"):
        load_clip_text_encoder(tmp_path)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(DiffrepError, match=r"pip install 'diffrep\[models\]'"):
        require_models()


# -------------------------------------------------------------------------------------- training
def test_loss_decreases(fashion, tmp_path, monkeypatch):
    import diffrep.models.loop as mtrain

    monkeypatch.setattr(mtrain, "LOG_EVERY", 10)
    r = train(fashion, tmp_path / "run", steps=50, batch=8, sample_every=0, checkpoint_every=50)
    log = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().split()[1:]]
    losses = [float(x[1]) for x in log]
    assert [int(x[0]) for x in log] == [10, 20, 30, 40, 50]
    assert losses[-1] < 0.5 * losses[0], losses
    assert r.step == 50 and r.params == 267_313 and r.images == 8  # the measured 0.27M recipe
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["channels"] == [16, 32, 32] and cfg["cond"] == "none"
    grid = decode_image((tmp_path / "run" / "samples" / "step_000050.png").read_bytes())
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2, 3)


def test_resume_after_interruption_matches_uninterrupted_run(fashion, tmp_path):
    opts = dict(FAST, steps=15, checkpoint_every=5, dup_frac=0.25, dup_weight=3.0, seed=7)
    full = train(fashion, tmp_path / "full", **opts)
    assert full.resumed_from == 0 and len(full.duplicated) == 2

    def stop_at_13(ev):
        if ev.stage == "train" and ev.done == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fashion, tmp_path / "cut", progress=stop_at_13, **opts)
    assert load_checkpoint(tmp_path / "cut")["step"] == 10
    again = train(fashion, tmp_path / "cut", **opts)  # the same command continues
    assert again.resumed_from == 10 and again.step == 15
    for key in ("model", "ema"):
        assert same_state(weights(tmp_path / "full", key), weights(tmp_path / "cut", key))
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    assert (tmp_path / "cut" / "duplicated.txt").read_text() == (tmp_path / "full" / "duplicated.txt").read_text()
    assert len((tmp_path / "full" / "duplicated.txt").read_text().split()) == 2
    # a longer --steps extends the finished run; other options are refused
    assert train(fashion, tmp_path / "cut", **dict(opts, steps=17)).resumed_from == 15
    with pytest.raises(DiffrepError, match="other options.*lr"):
        train(fashion, tmp_path / "cut", **dict(opts, steps=20, lr=1e-3))


def test_determinism_with_seed(fashion, tmp_path):
    a = train(fashion, tmp_path / "a", cond="class", seed=3, **FAST)
    train(fashion, tmp_path / "b", cond="class", seed=3, **FAST)
    train(fashion, tmp_path / "c", cond="class", seed=4, **FAST)
    assert a.step == 12
    assert same_state(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not same_state(weights(tmp_path / "a"), weights(tmp_path / "c"))
    s1 = sample(tmp_path / "a", 3, tmp_path / "s1", steps=4, seed=5)
    s2 = sample(tmp_path / "a", 3, tmp_path / "s2", steps=4, seed=5)
    s3 = sample(tmp_path / "a", 3, tmp_path / "s3", steps=4, seed=6)
    png = [[(s.out / f).read_bytes() for f in s.files] for s in (s1, s2, s3)]
    assert png[0] == png[1] and png[0] != png[2]


# -------------------------------------------------------------------------------------- sampling
def test_class_sampling_writes_audit_ready_outputs(fashion, tmp_path):
    from diffrep.sources import open_source

    train(fashion, tmp_path / "run", cond="class", **FAST)
    r = sample(tmp_path / "run", 10, tmp_path / "gen", steps=3, batch=4, sampler="ddpm")
    assert r.files == [f"{i:05d}.png" for i in range(10)] and r.step == 12
    for f in r.files:
        img = decode_image((tmp_path / "gen" / f).read_bytes())
        assert img.shape == (32, 32, 3) and (img[..., 0] == img[..., 2]).all()  # gray PNG
    recs = [json.loads(x) for x in (tmp_path / "gen" / "prompts.jsonl").read_text().splitlines()]
    assert [x["class"] for x in recs] == ["0", "1", "2", "3", "4", "5", "6", "7", "0", "1"]
    assert recs[1] == {"file": "00001.png", "class": "1", "caption": "Trouser"}
    records, skips = open_source(tmp_path / "gen", captions=tmp_path / "gen" / "prompts.jsonl").scan()
    assert len(records) == 10 and records[3].caption == "Dress"
    assert all(s.path.endswith("prompts.jsonl") for s in skips)  # the only non-image file
    (tmp_path / "p.txt").write_text("Sneaker\n7\n")  # a class's caption or its name
    r = sample(tmp_path / "run", 2, tmp_path / "gen2", prompts=tmp_path / "p.txt", steps=2)
    assert [json.loads(x)["class"] for x in (tmp_path / "gen2" / "prompts.jsonl").read_text().splitlines()] == ["7", "7"]
    (tmp_path / "bad.txt").write_text("spaceship\n")
    with pytest.raises(DiffrepError, match="not a class of this model.*Sneaker"):
        sample(tmp_path / "run", 1, tmp_path / "gen3", prompts=tmp_path / "bad.txt")


def test_caption_conditioning(fashion, tmp_path):
    r = train(fashion, tmp_path / "run", cond="caption", **FAST)
    assert r.step == 12 and r.params > 267_313
    ck = load_checkpoint(tmp_path / "run")
    assert any(k.startswith("text.") for k in ck["ema"]) and "sneaker" in ck["conditioning"]["tokenizer"]["vocab"]
    (tmp_path / "p.jsonl").write_text('{"caption": "Sneaker"}\n"Trouser"\nred trouser\n')
    assert read_prompts(tmp_path / "p.jsonl") == ["Sneaker", "Trouser", "red trouser"]
    s = sample(tmp_path / "run", 4, tmp_path / "gen", prompts=tmp_path / "p.jsonl", steps=3)
    caps = [json.loads(x)["caption"] for x in (tmp_path / "gen" / "prompts.jsonl").read_text().splitlines()]
    assert caps == ["Sneaker", "Trouser", "red trouser", "Sneaker"] and s.unknown_words == ["red"]
    train(fashion, tmp_path / "u", **dict(FAST, steps=1))
    with pytest.raises(DiffrepError, match="unconditional"):
        sample(tmp_path / "u", 1, tmp_path / "g", prompts=tmp_path / "p.jsonl")


def test_local_clip_text_encoder(fashion, tmp_path):
    """A tiny randomly initialised CLIP text encoder saved locally stands in for a user's real one."""
    transformers = pytest.importorskip("transformers")
    tok_dir, enc_dir = tmp_path / "clip" / "tokenizer", tmp_path / "clip" / "text_encoder"
    tok_dir.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz/-":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                               model_max_length=16).save_pretrained(str(tok_dir))
    cfg = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=16, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModel(cfg).save_pretrained(str(enc_dir))
    r = train(fashion, tmp_path / "run", cond="caption", text_encoder=enc_dir, **dict(FAST, steps=4))
    ck = load_checkpoint(tmp_path / "run")
    assert r.step == 4 and ck["config"]["model"]["text"]["kind"] == "clip"
    assert not any(k.startswith("text.") for k in ck["ema"])  # the frozen encoder is not saved
    s = sample(tmp_path / "run", 2, tmp_path / "gen", steps=2)
    assert len(s.files) == 2 and (tmp_path / "gen" / "prompts.jsonl").read_text().count("caption") == 2


def test_bad_options(fashion, tmp_path, emoji_files):
    with pytest.raises(DiffrepError, match="--cond 'text'.*none, class, caption"):
        train(fashion, tmp_path / "r", cond="text")
    with pytest.raises(DiffrepError, match="device"):
        train(fashion, tmp_path / "r", device="tpu")
    with pytest.raises(DiffrepError, match="inside the training folder"):
        train(fashion, fashion / "run")
    with pytest.raises(DiffrepError, match="multiple of 8"):
        train(fashion, tmp_path / "r", size=28, channels=(16, 32, 32, 32))
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in emoji_files[:2]:
        shutil.copyfile(f, flat / f.name)
    with pytest.raises(DiffrepError, match="--cond class needs labels"):
        train(flat, tmp_path / "r2", cond="class", **FAST)
    with pytest.raises(DiffrepError, match="--cond caption needs captions"):
        train(flat, tmp_path / "r3", cond="caption", **FAST)


def test_dedup_before_training_with_keep(emoji_files, tmp_path, capsys):
    """`diffrep dedup` then `diffrep train --keep keep.nul`: the duplicate is not trained on."""
    from diffrep.cli import main

    data = tmp_path / "data"
    data.mkdir()
    picks = emoji_files[::300][:6]
    for f in picks:
        shutil.copyfile(f, data / f.name)
    shutil.copyfile(picks[0], data / "again.png")
    assert main(["dedup", str(data), "--out", str(tmp_path / "dd"), "-q"]) == 0
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--keep", str(tmp_path / "dd" / "keep.nul"),
                 "--steps", "2", "--batch", "4", "--size", "16", "--channels", "8,16,16", "-q"]) == 0
    kept = [json.loads(x)["id"] for x in (tmp_path / "run" / "training_set.jsonl").read_text().splitlines()]
    listed = {Path(p).name for p in (tmp_path / "dd" / "keep.nul").read_bytes().decode().split("\0") if p}
    assert set(kept) == listed and len(kept) < 7 and len({"again.png", picks[0].name} & set(kept)) == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["keep"].endswith("keep.nul")
    bad = tmp_path / "other.txt"
    bad.write_text("/nowhere/x.png\n")
    with pytest.raises(DiffrepError, match="none of its 1 paths is an image of"):
        train(data, tmp_path / "r2", keep=bad, **FAST)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_train_sample_round_trip(fashion, tmp_path, capsys):
    from diffrep.cli import main

    code = main(["train", str(fashion), "--out", str(tmp_path / "run"), "--cond", "caption", "--steps", "6",
                 "--batch", "4", "--sample-every", "3", "--dup-frac", "0.25", "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "Trained 6 steps on 8 images" in out and "2 images sampled 5x as often" in out
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    code = main(["sample", str(tmp_path / "run"), "--n", "3", "--out", str(tmp_path / "gen"), "--steps", "4", "-q"])
    assert code == 0 and "Wrote 3 images" in capsys.readouterr().out
    recs = [json.loads(x) for x in (tmp_path / "gen" / "prompts.jsonl").read_text().splitlines()]
    assert [x["caption"] for x in recs] == ["T-shirt/top", "Trouser", "Pullover"]
    assert main(["sample", str(tmp_path / "nothing"), "--n", "1", "--out", str(tmp_path / "g")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    # options that would change nothing in the run asked for are refused, before anything is written
    for extra, says in ((["--dup-weight", "10"], "--dup-weight would change nothing in this run: add --dup-frac"),
                        (["--mitigate-p", "0.5"], "--mitigate-p would change nothing in this run: add --mitigate"),
                        (["--uncond-p", "0.2"], "--uncond-p would change nothing in this run: it applies to "
                                                "--cond caption")):
        assert main(["train", str(fashion), "--out", str(tmp_path / "refused"), "--steps", "2", *extra]) == 2
        assert says in capsys.readouterr().err and not (tmp_path / "refused").exists()
    code = main(["train", str(fashion), "--out", str(tmp_path / "given"), "--cond", "caption", "--steps", "2",
                 "--batch", "4", "--dup-frac", "0.25", "--dup-weight", "3", "--mitigate", "rc", "--mitigate-p", "0.3",
                 "--uncond-p", "0.2", "-q"])
    assert code == 0 and "2 images sampled 3x as often" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "given" / "config.json").read_text())
    assert (cfg["dup_weight"], cfg["mitigate_p"], cfg["uncond_p"]) == (3.0, 0.3, 0.2)


def test_cli_bad_cond_is_one_line_error(fashion, tmp_path):
    r = subprocess.run([sys.executable, "-m", "diffrep", "train", str(fashion), "--out", str(tmp_path / "x"),
                        "--cond", "pixels"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice: 'pixels'" in r.stderr and "Traceback" not in r.stderr


def test_pairs_figure_skips_moved_training_files(fashion, tmp_path):
    import csv

    from diffrep.eval.experiment import pairs_figure

    img = next(fashion.rglob("*.png"))
    audit = tmp_path / "audit"
    audit.mkdir()
    with open(audit / "matches.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["query_path", "train_path", "rank", "is_replica", "p_value", "verdict_score"])
        w.writeheader()
        w.writerow({"query_path": img, "train_path": img, "rank": 1, "is_replica": "True", "p_value": 0.001,
                    "verdict_score": 0.999})
        w.writerow({"query_path": img, "train_path": tmp_path / "moved.png", "rank": 1, "is_replica": "False",
                    "p_value": 0.5, "verdict_score": 0.5})
    pairs_figure(audit, tmp_path / "pairs.png")
    sheet = decode_image((tmp_path / "pairs.png").read_bytes())
    assert sheet.shape[0] == 128 + 2 * 6  # one pair row: the pair with the vanished training file is left out


def test_sample_writes_only_into_a_folder_of_its_own(caption_run, tmp_path):
    from diffrep.errors import OutputError

    out = tmp_path / "gen"
    first = sample(caption_run, 4, out, steps=2)
    assert sorted(p.name for p in out.glob("*.png")) == first.files
    again = sample(caption_run, 2, out, steps=2)  # a rerun replaces the earlier images, none is left over
    assert sorted(p.name for p in out.glob("*.png")) == again.files == ["00000.png", "00001.png"]
    assert [json.loads(x)["file"] for x in (out / "prompts.jsonl").read_text().splitlines()] == again.files
    (out / "photo.jpg").write_bytes(b"a user's file")
    with pytest.raises(OutputError, match="did not write"):
        sample(caption_run, 2, out, steps=2)
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(DiffrepError, match="give a finite scale >= 0"):
            sample(caption_run, 1, tmp_path / "g", guidance=bad)
    theirs = tmp_path / "training"
    theirs.mkdir()
    (theirs / "00000.png").write_bytes(b"their own image, named like a generation")
    with pytest.raises(OutputError, match="did not write"):
        sample(caption_run, 1, theirs, steps=2)
    assert (theirs / "00000.png").read_bytes() == b"their own image, named like a generation"


@pytest.mark.parametrize("damage", ["truncated", "text", "pickled code"])
def test_a_damaged_checkpoint_is_one_line(caption_run, tmp_path, damage, capsys):
    import pickle

    from diffrep.cli import main

    run = tmp_path / "run"
    shutil.copytree(caption_run, run)
    ckpt = run / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
    elif damage == "text":
        ckpt.write_text("garbage\n")
    else:  # a pickle that would run code if loaded without weights_only
        ckpt.write_bytes(pickle.dumps(print))
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "s"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot read {ckpt}" in err and "Delete it to train from scratch" in err
    assert "weights_only" not in err  # torch's advice to load without it would run the file's code
