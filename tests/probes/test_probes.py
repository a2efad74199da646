"""The model adapter and the memorization probes, on models built here: a tiny Stable-Diffusion-shaped
pipeline trained briefly on real emoji and saved with save_pretrained (the code path a user's local SD
folder takes), and `diffrep train` caption runs on real emoji."""
from __future__ import annotations

import csv
import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffrep.cli import main  # noqa: E402
from diffrep.errors import DiffrepError  # noqa: E402
from diffrep.models.adapter import load_model  # noqa: E402
from diffrep.probes import probe  # noqa: E402
from diffrep.probes.memorization import prompt_verdict  # noqa: E402
from diffrep.probes.scores import score_prompts, ssim  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _captions(folder: Path) -> list[str]:
    return [json.loads(x)["caption"] for x in (folder / "captions.jsonl").read_text().splitlines()]


def test_sd_folder_loads_through_the_user_path(tiny_sd, captioned):
    assert sorted(p.name for p in tiny_sd.iterdir()) == ["model_index.json", "scheduler", "text_encoder",
                                                         "tokenizer", "unet", "vae"]
    m = load_model(tiny_sd)
    assert m.kind == "diffusers" and m.conditional and m.has_unconditional
    assert m.shape == (4, 8, 8) and m.image_size == 16 and m.train_steps == 1000
    caps = _captions(captioned)[:2]
    cond = m.encode(caps)
    assert cond["hidden"].shape[:2] == (2, 16)
    x = m.noise(2, torch.Generator().manual_seed(0))
    eps = m.predict(x, 500, cond)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    guided = m.guided(x, 500, cond, m.empty(2), 3.0)
    plain = m.guided(x, 500, cond, None, 3.0)
    assert torch.allclose(plain, eps) and not torch.allclose(guided, eps)
    from PIL import Image

    img = np.asarray(Image.open(next(captioned.glob("*.png"))).convert("RGB").resize((16, 16)))[None]
    z = m.to_model(img)
    assert z.shape == (1, 4, 8, 8) and m.from_model(z).shape == (1, 16, 16, 3)
    toks = m.tokens(caps[0])
    assert toks[0] == "<|startoftext|>" and toks[-1] == "<|endoftext|>"
    assert m.truncated(" ".join(["word"] * 40)) and not m.truncated(caps[0])


def test_the_tiny_pipelines_tokenizer_is_the_same_on_every_run(captioned, tmp_path):
    """The BPE vocabulary is learnt deterministically (ties by the pair's text), so the same captions give
    the same tokenizer files, and CLIPTokenizer reads them: a caption's words become learnt tokens."""
    from transformers import CLIPTokenizer

    from diffrep.models.tinysd import write_clip_tokenizer

    caps = _captions(captioned)
    write_clip_tokenizer(caps, tmp_path / "a")
    write_clip_tokenizer(list(reversed(caps)), tmp_path / "b")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    tok = CLIPTokenizer.from_pretrained(tmp_path / "a", local_files_only=True)
    word = max((w for c in caps for w in c.lower().split() if w.isalpha()), key=lambda w: sum(
        w in c.lower().split() for c in caps))  # the most common word is one token
    assert tok.tokenize(word) == [word + "</w>"]
    ids = tok(caps[0])["input_ids"]
    assert ids[0] == 0 and ids[-1] == 1 and 1 not in ids[1:-1]  # no unknown pieces


def test_incomplete_or_unknown_folders_are_refused(tiny_sd, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(DiffrepError, match="missing tokenizer/vocab.json, tokenizer/merges.txt"):
        load_model(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffrepError, match="neither a `diffrep train` run folder"):
        load_model(tmp_path / "empty")


def test_sample_an_sd_folder_with_guidance(tiny_sd, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("grinning face\nred apple\n")
    code = main(["sample", str(tiny_sd), "--n", "3", "--out", str(tmp_path / "gen"), "--steps", "3",
                 "--prompts", str(tmp_path / "p.txt"), "--guidance", "4", "-q"])
    assert code == 0 and "guidance 4" in capsys.readouterr().out
    recs = [json.loads(x) for x in (tmp_path / "gen" / "prompts.jsonl").read_text().splitlines()]
    assert [r["caption"] for r in recs] == ["grinning face", "red apple", "grinning face"]
    assert all(r["guidance"] == 4 for r in recs)
    from PIL import Image

    assert Image.open(tmp_path / "gen" / recs[0]["file"]).size == (16, 16)


def test_caption_runs_learn_the_empty_caption(caption_run, captioned, tmp_path):
    from diffrep.models.cond import drop_captions

    cfg = json.loads((caption_run / "config.json").read_text())
    assert cfg["uncond_p"] == 0.1
    m = load_model(caption_run)
    assert m.kind == "run" and m.has_unconditional
    cond = {"ids": torch.arange(12).view(3, 4), "mask": torch.ones(3, 4, dtype=torch.bool), "text_noise": torch.ones(3)}
    empty = {"ids": torch.full((1, 4), 7), "mask": torch.zeros(1, 4, dtype=torch.bool)}
    out = drop_captions(cond, empty, torch.tensor([False, True, False]))
    assert out["ids"][1].tolist() == [7] * 4 and out["ids"][0].tolist() == [0, 1, 2, 3]
    assert not out["mask"][1].any() and out["mask"][2].all() and out["text_noise"] is cond["text_noise"]
    # a run trained without caption dropout has no meaningful empty-caption prediction: probes refuse it
    from diffrep.models.train import train

    train(captioned, tmp_path / "nodrop", cond="caption", steps=2, batch=4, size=16, sample_every=0,
          checkpoint_every=2, uncond_p=0.0)
    with pytest.raises(DiffrepError, match="trained without caption dropout"):
        probe(tmp_path / "nodrop", ["a"], tmp_path / "p")
    with pytest.raises(DiffrepError, match="--uncond-p 1"):
        train(captioned, tmp_path / "x", cond="caption", steps=2, uncond_p=1.0)


def test_probe_scores_are_paired_deterministic_and_explained(caption_run, captioned):
    m = load_model(caption_run)
    caps = _captions(captioned)[:3]
    a = score_prompts(m, caps, ("noise-norm", "seed-ssim", "one-step"), seeds=3, steps=2, sample_steps=10,
                      attribute=True)
    b = score_prompts(m, caps[::-1], ("noise-norm", "seed-ssim", "one-step"), seeds=3, steps=2, sample_steps=10,
                      batch=2)
    for k in ("noise-norm", "seed-ssim", "one-step"):  # order and batching do not change a prompt's score
        assert np.all(np.isfinite(a.scores[k]))
        np.testing.assert_allclose(a.scores[k], b.scores[k][::-1], rtol=1e-3, atol=1e-5)  # float32 batching
    assert np.all(a.scores["noise-norm"] > 0) and np.all(a.scores["seed-ssim"] <= 1)
    for p, toks in zip(caps, a.tokens):
        assert [t for t, _ in toks] == m.tokens(p) and sum(s for _, s in toks) == pytest.approx(1.0)
    x = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert ssim(x, x) == pytest.approx(1.0) and ssim(x, torch.randn(4, 8, 8)) < 0.5


@pytest.mark.parametrize("which", ["caption_run", "tiny_sd"])
def test_the_shared_first_step_prediction_changes_no_score(which, request, captioned):
    """eps(x_T, empty) depends on the seed only: predicted once per seed, it gives the scores (and token shares)
    of predicting it beside every prompt, with one noise prediction per prompt and seed fewer."""
    m = load_model(request.getfixturevalue(which))
    caps, seeds = _captions(captioned)[:5], 3
    kw = dict(seeds=seeds, sample_steps=10, batch=6, attribute=True)
    for methods, steps in ((("noise-norm", "seed-ssim"), 1), (("noise-norm",), 2)):
        shared = score_prompts(m, caps, methods, steps=steps, **kw)
        alone = score_prompts(m, caps, methods, steps=steps, share_first_uncond=False, **kw)
        for k in methods:
            np.testing.assert_allclose(shared.scores[k], alone.scores[k], rtol=1e-3, atol=1e-5)  # float32 batching
        for a, b in zip(shared.tokens, alone.tokens):
            assert [t for t, _ in a] == [t for t, _ in b]
            np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-3, atol=1e-5)
        assert alone.model_calls - shared.model_calls == 2 * len(caps) * seeds - seeds  # probe and attribution


def test_verdict_is_conformal_on_reference_prompts_and_labelled_without():
    null = np.arange(1, 200, dtype=float)  # 199 reference scores 1..199
    v = prompt_verdict(np.array([0.5, 198.5, 200.0]), null, 0.01)
    assert v["source"] == "reference" and v["threshold"] == 198.0  # floor(0.01 * 200) - 1 = 1 score above it
    np.testing.assert_allclose(v["p"], [200 / 200, 2 / 200, 1 / 200])
    assert v["flags"].tolist() == [False, True, True]
    u = prompt_verdict(np.r_[np.ones(20), 10.0], None, 0.01)
    assert u["source"] == "uncalibrated" and u["flags"].tolist() == [False] * 20 + [True]
    assert np.isnan(u["p"]).all() and "NOT calibrated" in u["warnings"][0]


def test_cli_probe_writes_calibrated_outputs(caption_run, captioned, tmp_path, capsys):
    caps = _captions(captioned)
    (tmp_path / "ref.txt").write_text("\n".join(["blue car", "small green frog", "yellow bus", "tall tree"]) + "\n")
    code = main(["probe", str(caption_run), "--prompts", str(caption_run), "--reference-prompts",
                 str(tmp_path / "ref.txt"), "--out", str(tmp_path / "out"), "--method", "all", "--seeds", "2",
                 "--steps", "2", "--sample-steps", "10", "--report", "-q"])
    out = capsys.readouterr().out
    assert code == 0 and f"{len(set(caps))} prompts scored by noise-norm" in out and "from the reference" in out
    rows = list(csv.DictReader((tmp_path / "out" / "prompts.csv").open()))
    assert [r["prompt"] for r in rows] == list(dict.fromkeys(caps))
    assert set(rows[0]) >= {"prompt", "score", "p_value", "is_memorized", "score_seed-ssim", "score_one-step",
                            "truncated"}
    assert all(float(r["p_value"]) in {k / 5 for k in range(1, 6)} for r in rows)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["threshold_source"] == "reference" and s["reference_prompts"] == 4 and s["prompts"] == len(rows)
    assert s["flagged"] == sum(r["is_memorized"] == "True" for r in rows) and s["seconds_per_prompt"] > 0
    toks = list(csv.DictReader((tmp_path / "out" / "tokens.csv").open()))
    assert {int(t["prompt_index"]) for t in toks} == set(range(len(rows)))
    ref = list(csv.DictReader((tmp_path / "out" / "reference.csv").open()))
    assert [r["prompt"] for r in ref] == ["blue car", "small green frog", "yellow bus", "tall tree"]
    top = max(float(r["score_noise-norm"]) for r in ref)  # 4 prompts at 1%: the highest sets the threshold
    at_top = [r["prompt"] for r in ref if float(r["score_noise-norm"]) >= top - 1e-6]  # ties: words it never saw
    assert [x["prompt"] for x in s["threshold_set_by"]] == at_top[:3]
    assert all(x["score"] == pytest.approx(s["threshold"], abs=1e-6) for x in s["threshold_set_by"])
    assert f"set by the top reference prompts: {at_top[0]!r}" in out
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Content-Security-Policy" in page and "<script" not in page and "data:image/png;base64" in page
    assert f"of {len(rows)} prompts score above what 4 prompts known not to be memorized" in page
    assert html.escape(rows[0]["prompt"]) in page
    assert main(["report", str(tmp_path / "out"), "--page-limit", "3"]) == 2  # an audit report's setting
    assert "--page-limit would change nothing in this run" in capsys.readouterr().err
    # bad input: one line each
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["probe", str(caption_run), "--prompts", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o2")]) == 3
    assert "holds no prompts" in capsys.readouterr().err
    assert main(["probe", str(caption_run), "--prompts", str(tmp_path / "ref.txt"), "--out", str(tmp_path / "o3"),
                 "--method", "seed-ssim", "--seeds", "1"]) == 2
    assert "--seeds 2 or more" in capsys.readouterr().err
    assert main(["probe", str(caption_run), "--prompts", str(tmp_path / "ref.txt"), "--out", str(tmp_path / "o4"),
                 "--seeds", "0"]) == 2
    assert "--seeds 0: give at least one seed" in capsys.readouterr().err
    for extra in (["--steps", "5"], ["--no-explain"]):  # noise-norm's settings, with a method that has neither
        assert main(["probe", str(caption_run), "--prompts", str(tmp_path / "ref.txt"), "--out", str(tmp_path / "o5"),
                     "--method", "one-step", *extra]) == 2
        assert f"{extra[0]} would change nothing in this run" in capsys.readouterr().err
    assert not (tmp_path / "o5").exists()


def test_tiled_l2_and_cliques_on_real_images(captioned):
    from PIL import Image

    from diffrep.probes.cliques import clique_radius, largest_clique, pair_distances, tiled_l2

    files = sorted(captioned.glob("*.png"))
    a = np.asarray(Image.open(files[0]).convert("RGB"))
    b = np.asarray(Image.open(files[1]).convert("RGB"))
    shifted = a.copy()
    shifted[:16, :16] = 255 - shifted[:16, :16]  # one changed corner: the tiled distance sees it
    assert tiled_l2(a, a) == 0 and tiled_l2(a, shifted) > 4 * np.sqrt(((a.astype(float) - shifted) ** 2).mean()) / 2
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 3, a.shape), 0, 255).astype(np.uint8)
    d = pair_distances(np.stack([a, b, noisy, a]))
    assert d[0, 2] < 5 and d[0, 3] == 0 and d[0, 1] > 20 and np.allclose(d, d.T)
    assert largest_clique(d < 5) == [0, 2, 3]
    assert largest_clique(np.eye(3, dtype=bool)) == []
    # the clique radius: the smallest threshold under which k images are mutually near-identical
    assert clique_radius(d, 2) == 0 and clique_radius(d, 3) == d[0, 2] and clique_radius(d, 4) == d.max()
    assert clique_radius(d, 5) == float("inf")
    assert len(largest_clique(d < clique_radius(d, 3))) < 3 <= len(largest_clique(d <= clique_radius(d, 3)))
    rng = np.random.default_rng(1)  # against the definition: the smallest largest-pair-distance over all triples
    for _ in range(20):
        r = rng.random((7, 7))
        r = np.triu(r, 1) + np.triu(r, 1).T
        triples = [max(r[i, j], r[i, k], r[j, k]) for i in range(7) for j in range(i + 1, 7) for k in range(j + 1, 7)]
        assert clique_radius(r, 3) == min(triples)


def test_cli_extract_writes_audited_cliques(caption_run, captioned, tmp_path, capsys):
    import diffrep

    diffrep.index(captioned, tmp_path / "index")
    caps = _captions(captioned)
    (tmp_path / "p.txt").write_text("\n".join(caps[:3]) + "\n")
    (tmp_path / "r.txt").write_text("blue car\nsmall green frog\nyellow bus\n")
    code = main(["extract", str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--index", str(tmp_path / "index"),
                 "--reference-prompts", str(tmp_path / "r.txt"), "--out", str(tmp_path / "x"), "--per-prompt", "3",
                 "--min-clique", "2", "--steps", "3", "--prefilter", "one-step", "--keep", "0.67", "-q"])
    said = capsys.readouterr().out
    assert code == 0 and "2 of 3 prompts generated" in said and "about 0.02 expected from unmemorized prompts" in said
    s = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert s["chance_cliques_expected"] == 0.02  # 1% of the 2 prompts generated for
    assert s["generated_for"] == 2 and s["edge_threshold_tiled_l2"] > 0 and "(3 prompts)" in s["edge_threshold_source"]
    assert any("3 null scores cannot resolve" in w for w in s["warnings"])  # too few reference prompts for 1%
    rows = list(csv.DictReader((tmp_path / "x" / "extracted.csv").open()))
    assert len(rows) == s["cliques"] and all((tmp_path / "x" / r["generated"]).is_file() for r in rows)
    # 3 reference prompts bound the chance rate by 1/4, not 1%: 2 prompts' cliques never reach the warning's 5%
    assert not any("not audit-verified copies" in w for w in s["warnings"])
    assert main(["extract", str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--index", str(tmp_path / "index"),
                 "--reference-prompts", str(tmp_path / "r.txt"), "--out", str(tmp_path / "y"), "--per-prompt", "3",
                 "--min-clique", "4"]) == 2
    assert "min-clique" in capsys.readouterr().err


def test_more_unverified_cliques_than_the_edge_explains_are_warned_about():
    """The Poisson tail of the unverified cliques against the edge's expected chance cliques (figures of the
    seed-15 and seed-18 extraction runs of docs/results/2026-12-probes.md)."""
    from diffrep.probes.cliques import excess_cliques_warning

    w = excess_cliques_warning(3, 256, 0.001, 891)  # 891 reference captions at 0.1%: 3 unverified of 256 prompts
    assert w and "3 clique(s)" in w and "at most 0.29 expected" in w and "p = 0.0032" in w  # the bound is 1/892
    assert "p = 0.046" in excess_cliques_warning(6, 256, 0.01, 100)  # 6 unverified where 2.56 are expected
    assert excess_cliques_warning(0, 256, 0.01, 100) is None and excess_cliques_warning(2, 250, 0.01, 100) is None
    assert excess_cliques_warning(1, 10, 0.0001, 10**6)  # 0.001 expected: one unverified clique is more than chance
    assert excess_cliques_warning(60, 5000, 0.01, 1000) is None  # a long tail stays finite


def test_reference_prompts_that_make_training_images_are_named_and_can_be_dropped(caption_run, captioned, tmp_path,
                                                                                   capsys):
    """A reference prompt whose generations are a training image would set the edge with its tight clique:
    extract audits each reference prompt's tightest clique and names the copying ones. The copy is real: the
    picture the briefly trained model makes (the same for every prompt: it has learnt little of the text) is
    put in the training set, so every reference prompt copies it, and --drop-reference-copies has nothing left."""
    import diffrep
    from diffrep.datasets import get_dataset
    from PIL import Image

    caps = _captions(captioned)
    (tmp_path / "p.txt").write_text(caps[0] + "\n")
    (tmp_path / "r.txt").write_text("\n".join(caps[1:4]) + "\n")
    train, held = tmp_path / "train", tmp_path / "held"
    shutil.copytree(captioned, train)
    diffrep.index(train, tmp_path / "i0")
    held.mkdir()
    for f in sorted((get_dataset("emoji") / "images").glob("*.png"))[400:430]:  # never in `captioned`
        shutil.copyfile(f, held / f.name)

    def run(out: str, index: str, *flags: str) -> int:
        return main(["extract", str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--index",
                     str(tmp_path / index), "--reference-prompts", str(tmp_path / "r.txt"), "--out",
                     str(tmp_path / out), "--per-prompt", "3", "--min-clique", "2", "--steps", "3", "--reference",
                     str(held), "--prefilter", "none", "--no-drop-reference-copies", "-q", *flags])

    def summary(out: str) -> dict:
        return json.loads((tmp_path / out / "summary.json").read_text())

    assert run("a", "i0") == 0
    first = summary("a")
    assert first["reference_copies"] == [] and first["reference_copies_dropped"] == []
    assert sorted(p.name for p in (tmp_path / "a" / "reference_cliques").iterdir()) == [
        "00000.png", "00001.png", "00002.png"]
    Image.open(tmp_path / "a" / "reference_cliques" / "00000.png").save(train / "made.png")
    diffrep.index(train, tmp_path / "i1")
    assert run("b", "i1") == 0
    kept = summary("b")
    assert [c["prompt"] for c in kept["reference_copies"]] == caps[1:4]
    assert {Path(c["training_image"]).name for c in kept["reference_copies"]} == {"made.png"}
    assert kept["reference_copies_dropped"] == []
    assert kept["edge_threshold_tiled_l2"] == first["edge_threshold_tiled_l2"]  # named, not dropped
    assert any("3 reference prompt(s) generate audit-verified copies" in w for w in kept["warnings"])
    assert main(["probe", str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--reference-prompts",
                 str(tmp_path / "r.txt"), "--out", str(tmp_path / "pr"), "--seeds", "2", "-q"]) == 0
    assert main(["report", str(tmp_path / "pr"), "--extract", str(tmp_path / "b"), "-q"]) == 0
    page = (tmp_path / "pr" / "report.html").read_text()
    assert "Extracted training images (0)" in page
    unverified = sum(r["is_copy"] != "True" for r in csv.DictReader((tmp_path / "b" / "extracted.csv").open()))
    assert (f"{unverified} further clique(s)" in page) == (unverified > 0)
    shutil.copytree(tmp_path / "b", tmp_path / "b2")  # and a clique the audit did not verify, as extract writes it
    with (tmp_path / "b2" / "extracted.csv").open("a", encoding="utf-8") as f:
        csv.writer(f).writerow([caps[0], "cliques/00000.png", str(train / "made.png"), 3, 70.5, False, 0.41])
    assert main(["report", str(tmp_path / "pr"), "--extract", str(tmp_path / "b2"), "-q"]) == 0
    page = (tmp_path / "pr" / "report.html").read_text()
    assert "Extracted training images (0)" in page and f"{unverified + 1} further clique(s)" in page
    assert "3 reference prompt(s) generate training images themselves (kept in" in page
    assert html.escape(caps[1]) in page
    capsys.readouterr()
    assert run("c", "i1", "--drop-reference-copies") != 0
    err = capsys.readouterr().err
    assert "every one of the 3 reference prompts generates audit-verified copies" in err and "Traceback" not in err


def test_the_clique_edge_leaves_copying_reference_prompts_out_on_request():
    from diffrep.probes.cliques import clique_edge

    radii = np.arange(100, dtype=float) + 50  # 100 reference prompts: radii 50 .. 149
    copying = np.zeros(100, bool)
    radii[[10, 20, 30]], copying[[10, 20, 30]] = [5.0, 6.0, 70.0], True  # two tight copies, one loose
    edge, notes = clique_edge(radii, copying, 0.01, drop=False)  # 1% of 100: the smallest radius
    assert edge == 5.0 and any("3 reference prompt(s)" in n and "1 of them as tight" in n for n in notes)
    edge, notes = clique_edge(radii, copying, 0.01, drop=True)
    assert edge == 50.0 and not any("reference prompt(s)" in n for n in notes)  # 97 left: still resolves 1%
    edge, _ = clique_edge(radii, np.zeros(100, bool), 0.01, drop=True)
    assert edge == 5.0  # nothing flagged, nothing dropped
    with pytest.raises(DiffrepError, match="every one of the 2 reference prompts"):
        clique_edge(np.array([1.0, 2.0]), np.ones(2, bool), 0.01, drop=True)


def test_extract_refuses_a_missing_index_or_reference_before_generating(caption_run, captioned, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a cat\n")
    (tmp_path / "r.txt").write_text("blue car\n")
    base = ["extract", str(caption_run), "--prompts", str(tmp_path / "p.txt"), "--reference-prompts",
            str(tmp_path / "r.txt"), "--per-prompt", "2", "--min-clique", "2", "--steps", "2", "-q"]
    assert main([*base, "--index", str(tmp_path / "nope"), "--out", str(tmp_path / "a")]) == 5
    assert "does not exist. Build it first" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing generated, no folder left
    import diffrep

    diffrep.index(captioned, tmp_path / "index", descriptor="sscd-fast")
    assert main([*base, "--index", str(tmp_path / "index"), "--reference", str(tmp_path / "gone"),
                 "--out", str(tmp_path / "b")]) == 3
    assert "--reference: " in capsys.readouterr().err and not (tmp_path / "b").exists()
    base[5] = str(tmp_path / "gone.txt")  # the missing file is named with its own option
    assert main([*base, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "c")]) == 3
    assert "gone.txt does not exist. Check the --reference-prompts path" in capsys.readouterr().err
    assert main([*base, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "d"), "--keep", "0.5"]) == 2
    assert "add --prefilter one-step" in capsys.readouterr().err and not (tmp_path / "d").exists()
    # settings the calibration or the sampler cannot use are refused before the reference prompts' generations
    for flags, message in ((["--fpr", "2"], "--fpr 2.0: give a rate between 0 and 1"),
                           (["--steps", "0"], "--steps 0: the sampler runs between 1 and 1000")):
        assert main([*base, "--index", str(tmp_path / "index"), "--out", str(tmp_path / "e"), *flags]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_tested_prompts_are_left_out_of_the_reference(caption_run, tmp_path):
    from diffrep.probes.prompts import reference_without_tested

    kept, notes = reference_without_tested(["A red  Apple", "blue car"], ["a red apple", "yellow bus", "Blue car"])
    assert kept == ["yellow bus"] and notes and notes[0].startswith("2 reference prompts are also tested")
    assert reference_without_tested(["x"], ["y"]) == (["y"], [])
    (tmp_path / "p.txt").write_text("a cat\nyellow bus\n")
    (tmp_path / "r.txt").write_text("yellow bus\nsmall green frog\nblue car\n")
    r = probe(caption_run, tmp_path / "p.txt", tmp_path / "o", reference_prompts=tmp_path / "r.txt", fpr=0.4,
              seeds=1, explain=False)
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["reference_prompts"] == 2 and "1 reference prompts are also tested" in r.warnings[0]
    with pytest.raises(DiffrepError, match="all 2 are also tested"):
        probe(caption_run, tmp_path / "p.txt", tmp_path / "o2", reference_prompts=tmp_path / "p.txt", fpr=0.4)


def test_a_damaged_sd_folder_is_one_line(tiny_sd, tmp_path, capfd):
    bad = tmp_path / "sd"
    shutil.copytree(tiny_sd, bad)
    cfg = json.loads((bad / "unet" / "config.json").read_text())
    cfg["block_out_channels"] = [2 * c for c in cfg["block_out_channels"]]
    (bad / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DiffrepError, match=r"the weights do not fit the config.json beside them \(size mismatch"):
        load_model(bad)
    shutil.copytree(tiny_sd / "unet", bad / "unet", dirs_exist_ok=True)
    (bad / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    capfd.readouterr()
    with pytest.raises(DiffrepError, match="cannot load the Stable Diffusion folder"):
        load_model(bad)
    assert capfd.readouterr().err == ""  # diffusers' own error log is not printed beside the one line


def test_report_of_a_damaged_probe_folder_is_one_line(caption_run, tmp_path, capsys):
    out = tmp_path / "p"
    probe(caption_run, ["a cat", "blue car"], out, seeds=1, explain=False)
    summary, table = (out / "summary.json").read_text(), (out / "prompts.csv").read_text()
    edits = [("summary.json", "{bad json", "is unreadable"),
             ("summary.json", summary.replace('"seeds": 1', '"seeds": "<script>alert(1)</script>"'),
              "seeds is not a whole number"),
             ("prompts.csv", table.replace(table.splitlines()[1].split(",")[1], "abc", 1), "tables in"),
             ("prompts.csv", "x,y\n1,2\n", "KeyError")]
    for name, text, says in edits:
        (out / "summary.json").write_text(summary)
        (out / "prompts.csv").write_text(table)
        (out / name).write_text(text)
        assert main(["report", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and err.count("\n") == 0 and "Run `diffrep probe` again" in err
