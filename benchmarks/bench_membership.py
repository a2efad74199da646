"""Seconds per image of each membership score (loss, SecMI, PIA) on the two kinds of model diffrep loads.

Builds (or reuses, in --work) (a) an unconditional `diffrep train` run on Fashion-MNIST (32 px, the
experiment's smoke UNet) and (b) a tiny Stable-Diffusion-shaped pipeline on captioned emoji (latent space,
captions), then scores the same --images images with each method at its default timesteps, one method at a
time, and prints seconds per image and noise predictions per image. docs/benchmarks.md records the output
with the command.

Usage:  python benchmarks/bench_membership.py [--images 256] [--device cpu] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffrep.datasets import get_dataset
from diffrep.models.adapter import load_model
from diffrep.models.tinysd import tiny_sd_from_folder
from diffrep.models.train import train
from diffrep.probes.images import load_images
from diffrep.probes.mia import METHODS, score_images


def _folder(src: Path, files: list[str], dest: Path, captions: dict[str, str] | None = None) -> Path:
    if not dest.is_dir():
        dest.mkdir(parents=True)
        for f in files:
            shutil.copyfile(src / f, dest / Path(f).name)
        if captions:
            (dest / "captions.jsonl").write_text("".join(json.dumps({"file": Path(f).name, "caption": captions[f]})
                                                         + "\n" for f in files))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="diffrep-bench-membership-"))
    fm = get_dataset("fashion-mnist") / "images" / "train"
    files = sorted(str(p.relative_to(fm)) for p in fm.rglob("*.png"))
    pick = [files[i] for i in np.random.default_rng(5).permutation(len(files))[:a.images]]
    fashion = _folder(fm, pick, work / "fashion")
    train(fashion, work / "run", steps=200, size=32, channels=(16, 32, 32), sample_every=0, device=a.device)
    em = get_dataset("emoji")
    rows = [json.loads(x) for x in (em / "captions.jsonl").read_text().splitlines()][:a.images]
    emoji = _folder(em / "images", [r["file"] for r in rows], work / "emoji", {r["file"]: r["caption"] for r in rows})
    if not (work / "sd" / "model_index.json").is_file():
        tiny_sd_from_folder(emoji, work / "sd", size=32, vae_steps=100, unet_steps=100, batch=16)
    print(f"torch threads {torch.get_num_threads()}, device {a.device}, {a.images} images per model")
    print("| model | method | timesteps | noise predictions per image | seconds per image |")
    print("|---|---|---|---|---|")
    for name, path, folder in (("diffrep train run, 32 px, UNet 16/32/32", work / "run", fashion),
                               ("tiny SD pipeline, 32 px (4x16x16 latents)", work / "sd", emoji)):
        model = load_model(path, a.device)
        imgs = load_images(folder, model.image_size)
        cond = model.encode(imgs.captions) if model.conditional else {}
        for m in METHODS:
            t0 = time.perf_counter()
            r = score_images(model, imgs.images, cond, (m,), seeds=2)
            s = (time.perf_counter() - t0) / len(imgs)
            ts = ",".join(k.split("@")[1] for k in r.features)
            print(f"| {name} | {m} | {ts} | {r.model_calls[m]} | {s:.4f} |", flush=True)


if __name__ == "__main__":
    main()
