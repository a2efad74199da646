"""Models the probe tests share (built once per test session): real captioned emoji, a tiny
Stable-Diffusion-shaped pipeline trained on them and saved with save_pretrained, and a `diffrep train`
caption run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def captioned(tmp_path_factory) -> Path:
    """16 real emoji with their names as captions (captions.jsonl beside the images)."""
    from diffrep.datasets import get_dataset

    src = get_dataset("emoji")
    rows = [json.loads(x) for x in (src / "captions.jsonl").read_text().splitlines()[200:216]]
    root = tmp_path_factory.mktemp("captioned")
    for r in rows:
        shutil.copyfile(src / "images" / r["file"], root / Path(r["file"]).name)
    (root / "captions.jsonl").write_text("".join(json.dumps({"file": Path(r["file"]).name, "caption": r["caption"]})
                                                 + "\n" for r in rows))
    return root


@pytest.fixture(scope="session")
def tiny_sd(captioned, tmp_path_factory) -> Path:
    from diffrep.models.tinysd import tiny_sd_from_folder

    return tiny_sd_from_folder(captioned, tmp_path_factory.mktemp("sd") / "pipe", size=16, vae_steps=30,
                               unet_steps=40, batch=8, vae_widths=(16, 16), unet_widths=(16, 32))


@pytest.fixture(scope="session")
def caption_run(captioned, tmp_path_factory) -> Path:
    from diffrep.models.train import train

    out = tmp_path_factory.mktemp("run") / "run"
    train(captioned, out, cond="caption", steps=30, batch=8, size=16, sample_every=0, checkpoint_every=30)
    return out
