"""probe, membership and extract resume after an interruption: the finished batches kept under
``OUT/.partial`` are read back (a value planted in one shows up in the outputs), the rest is computed, and the
journal is gone once the outputs are written; other settings start afresh."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffrep.probes import probe  # noqa: E402
from diffrep.probes.journal import FOLDER  # noqa: E402
from diffrep.probes.membership import membership  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Stop(Exception):
    pass


def stop_after(stage: str, done: int):
    def cb(p):
        if p.stage == stage and p.done >= done:
            raise Stop
    return cb


def _plant(out: Path, stage: str, key: str, value: float) -> None:
    """Overwrite ``key`` in the first kept batch of ``stage`` with ``value``."""
    (folder,) = (out / FOLDER).glob(f"{stage}-*")
    first = sorted(folder.glob("b*.npz"))[0]
    with np.load(first) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = np.full_like(arrays[key], value)
    np.savez(first, **arrays)


def test_probe_resumes_from_its_kept_batches(caption_run, tmp_path):
    prompts = [f"prompt number {i}" for i in range(5)]
    out = tmp_path / "p"
    kw = dict(seeds=1, batch=2, fpr=0.5, explain=True)
    with pytest.raises(Stop):
        probe(caption_run, prompts, out, reference_prompts=["a", "b", "c"], progress=stop_after("probe", 2), **kw)
    _plant(out, "prompts", "score/noise-norm", 123.0)
    probe(caption_run, prompts, out, reference_prompts=["a", "b", "c"], **kw)
    scores = [float(r["score"]) for r in csv.DictReader(open(out / "prompts.csv"))]
    assert scores[:2] == [123.0, 123.0] and all(s < 100 for s in scores[2:])  # batch 1 read back, the rest made
    assert not (out / FOLDER).exists() and (out / "tokens.csv").is_file()
    with pytest.raises(Stop):
        probe(caption_run, prompts, out, reference_prompts=["a", "b", "c"], progress=stop_after("probe", 2), **kw)
    _plant(out, "prompts", "score/noise-norm", 123.0)
    probe(caption_run, prompts, out, reference_prompts=["a", "b", "c"], **(kw | {"seeds": 2}))  # other settings
    assert all(float(r["score"]) < 100 for r in csv.DictReader(open(out / "prompts.csv")))
    assert not (out / FOLDER).exists()


def test_membership_resumes_from_its_kept_batches(caption_run, captioned, tmp_path):
    out = tmp_path / "m"
    kw = dict(images=captioned, reference=captioned, fpr=0.2, batch=4, method="loss")
    ref = tmp_path / "ref"
    ref.mkdir()
    for f in sorted(captioned.glob("*.png"))[:8]:  # the reference: the same images, flipped (not identical)
        from PIL import Image, ImageOps

        ImageOps.mirror(Image.open(f).convert("RGB")).save(ref / f.name)
    kw["reference"] = ref
    with pytest.raises(Stop):
        membership(caption_run, out, progress=stop_after("images", 4), **kw)
    _plant(out, "images", "loss@100", -999.0)
    s = membership(caption_run, out, **kw)
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [float(r["score"]) for r in rows[:4]] == [-999.0] * 4 and all(float(r["score"]) > -999 for r in rows[4:])
    assert s["images"] == 16 and not (out / FOLDER).exists()


def test_extract_resumes_after_the_prompts_it_finished(caption_run, captioned, emoji_files, tmp_path):
    import shutil

    import diffrep
    from diffrep.probes.extract import extract

    diffrep.index(captioned, tmp_path / "index", descriptor="sscd-fast")
    rows = [json.loads(x) for x in (captioned / "captions.jsonl").read_text().splitlines()]
    caps = [r["caption"] for r in rows]
    out = tmp_path / "x"
    held_out = tmp_path / "held_out"  # the audit's reference: emoji nobody trained on
    held_out.mkdir()
    for f in emoji_files[1000:1030]:
        shutil.copyfile(f, held_out / f.name)
    kw = dict(reference_prompts=["blue car", "small green frog", "yellow bus"], per_prompt=3, min_clique=2, steps=2,
              reference=held_out, prefilter=None)
    with pytest.raises(Stop):
        extract(caption_run, caps[:3], tmp_path / "index", out, progress=stop_after("generate", 2), **kw)
    kept = sorted((out / FOLDER).glob("generate-*/b*.npz"))
    assert len(kept) == 2 and len(list((out / FOLDER).glob("reference-*/b*.npz"))) == 3
    # plant a clique for the first prompt: its own training image, which the audit must then find
    shutil.copyfile(captioned / rows[0]["file"], out / "cliques" / "00000.png")
    planted = {"prompt": caps[0], "generated": "00000.png", "clique_size": 3, "clique_max_distance": 0.0}
    np.savez(kept[0], row=np.asarray(json.dumps(planted)))
    r = extract(caption_run, caps[:3], tmp_path / "index", out, **kw)
    found = list(csv.DictReader(open(out / "extracted.csv")))
    assert len(found) == r.cliques and found[0]["generated"] == "cliques/00000.png"
    assert found[0]["training_image"].endswith(rows[0]["file"]) and found[0]["is_copy"] == "True"
    assert not (out / FOLDER).exists()
