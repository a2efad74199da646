"""The commands with `--device cuda` on a lent GPU: SSCD embedding (its runtime, its vectors against ONNX Runtime
on the CPU, images/s of the bare model), then a tiny SD-layout pipeline (float16 on CUDA) and a `diffrep train`
caption run, each sampled with guidance, probed with every method and scored by `diffrep membership` with every
method (CPU runs of the same commands are in tests/probes). Prints each command's first output line and checks
that the CUDA and CPU scores agree.

Usage:  python benchmarks/cuda_check.py --work /tmp/cuda-check
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np

from diffrep.cli import main as cli
from diffrep.datasets import get_dataset


def run(args: list[str]) -> None:
    t0 = time.perf_counter()
    code = cli(args + ["-q"])
    print(f"[{code}] {time.perf_counter() - t0:6.1f} s  diffrep {' '.join(args[:2])} ... {' '.join(args[-4:])}",
          flush=True)
    if code:
        raise SystemExit(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a quick dry run of this script (tiny training)")
    a = ap.parse_args()
    quick = a.device == "cpu"
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    src = get_dataset("emoji")
    rows = [json.loads(x) for x in (src / "captions.jsonl").read_text().splitlines()][300:364]
    data = work / "data"
    data.mkdir(parents=True)
    for r in rows:
        shutil.copyfile(src / "images" / r["file"], data / Path(r["file"]).name)
    (data / "captions.jsonl").write_text("".join(json.dumps({"file": Path(r["file"]).name, "caption": r["caption"]})
                                                 + "\n" for r in rows))
    (work / "p.txt").write_text("\n".join(r["caption"] for r in rows[:16]) + "\n")
    (work / "r.txt").write_text("\n".join(r["caption"] for r in rows[48:]) + "\n")
    sscd_on_device(data, a.device)
    from diffrep.models.tinysd import tiny_sd_from_folder

    t0 = time.perf_counter()
    tiny_sd_from_folder(data, work / "sd", size=32, device=a.device, **(dict(vae_steps=5, unet_steps=5) if quick else {}))
    print(f"tiny SD pipeline built and trained on {a.device} in {time.perf_counter() - t0:.1f} s", flush=True)
    run(["train", str(data), "--out", str(work / "run"), "--cond", "caption", "--steps", "5" if quick else "500",
         "--device", a.device])
    for model in ("sd", "run"):
        m = str(work / model)
        run(["sample", m, "--n", "32", "--out", str(work / f"gen-{model}"), "--prompts", str(work / "p.txt"),
             "--guidance", "3", "--device", a.device] + (["--steps", "3"] if quick else []))
        for dev in (a.device, "cpu"):
            run(["probe", m, "--prompts", str(work / "p.txt"), "--reference-prompts", str(work / "r.txt"), "--out",
                 str(work / f"probe-{model}-{dev}"), "--method", "all", "--report", "--device", dev])
        got = {dev: np.array([float(r["raw_score"]) for r in csv.DictReader(
            (work / f"probe-{model}-{dev}" / "prompts.csv").open())]) for dev in (a.device, "cpu")}
        rel = np.abs(got[a.device] - got["cpu"]).max() / np.abs(got["cpu"]).max()
        secs = json.loads((work / f"probe-{model}-{a.device}" / "summary.json").read_text())["seconds_per_prompt"]
        print(f"{model}: noise-norm {a.device} vs cpu, largest difference {100 * rel:.2f}% of the largest score "
              f"({secs} s/prompt on {a.device})", flush=True)
        membership_on_device(m, data, work, model, a.device)


def sscd_on_device(data: Path, device: str) -> None:
    """SSCD on ``device`` against ONNX Runtime on the CPU (cosine of each image's vectors), and the bare model's
    images/s at batch 64."""
    from diffrep.decode import decode_image
    from diffrep.descriptors import get_descriptor

    images = [decode_image(f.read_bytes()) for f in sorted(data.glob("*.png"))]
    cpu = get_descriptor("sscd", device="cpu").embed_images(images)
    d = get_descriptor("sscd", device=device)
    got = d.embed_images(images)
    cos = (got * cpu).sum(axis=1)
    batch = np.stack([d.preprocess(im) for im in (images * 4)[:64]])
    d.embed(batch)  # warm-up
    t0 = time.perf_counter()
    for _ in range(5):
        d.embed(batch)
    rate = 5 * len(batch) / (time.perf_counter() - t0)
    print(f"sscd on {device} ({d.runtime}): cosine to ONNX Runtime on the CPU min {cos.min():.4f} mean "
          f"{cos.mean():.4f} over {len(images)} images; bare model {rate:.0f} images/s at batch 64", flush=True)


def membership_on_device(model: str, data: Path, work: Path, name: str, device: str) -> None:
    """``diffrep membership --method all`` on ``device`` and on the CPU: the largest difference of the scores."""
    files = sorted(data.glob("*.png"))
    tested, reference = work / f"mi-{name}-tested", work / f"mi-{name}-reference"
    for folder, part in ((tested, files[:16]), (reference, files[16:48])):
        folder.mkdir(exist_ok=True)
        for f in part:
            shutil.copyfile(f, folder / f.name)
    for dev in (device, "cpu"):
        run(["membership", model, "--images", str(tested), "--reference", str(reference), "--out",
             str(work / f"mi-{name}-{dev}"), "--method", "all", "--fpr", "0.1", "--device", dev])
    got = {dev: np.array([float(r["raw_score"]) for r in csv.DictReader(
        (work / f"mi-{name}-{dev}" / "scores.csv").open())]) for dev in (device, "cpu")}
    rel = np.abs(got[device] - got["cpu"]).max() / np.abs(got["cpu"]).max()
    secs = json.loads((work / f"mi-{name}-{device}" / "summary.json").read_text()).get("seconds_per_image")
    print(f"{name}: membership loss {device} vs cpu, largest difference {100 * rel:.2f}% of the largest score "
          f"({secs} s/image on {device})", flush=True)


if __name__ == "__main__":
    main()
