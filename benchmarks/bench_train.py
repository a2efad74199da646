"""Training speed and memorization of the small diffusion models on this machine.

1. Speed: steps/s of the default 32 px model at batch 16 for --cond none, class and caption on 32
   Fashion-MNIST training images (``--speed-steps`` timed steps after a short warm-up; sample grids and
   checkpoints excluded).
2. Memorization: the same 32 images, unconditional, trained for about ``--minutes`` (the run is extended
   500 steps at a time through diffrep's resume), then ``--samples`` 50-step DDIM samples of the EMA
   weights. Each sample's pixel RMS (0-255, at the 32 px training resolution) to its nearest training
   image is compared with that of held-out Fashion-MNIST test images: near-copies sit far below the
   held-out distribution. Writes ``nearest.png`` (sample | nearest training image pairs) and
   ``results.json``.

    python benchmarks/bench_train.py --out bench-out/train [--threads 1] [--minutes 5]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from diffrep.eval.experiment import nearest_rms


def audit_samples(out: Path, fm: Path, reference_n: int) -> dict:
    """Index the run's training images, audit its samples with held-out test images as the null."""
    import shutil

    import diffrep
    from diffrep.models.data import load_training_set

    train_dir, ref_dir = out / "train_images", out / "reference"
    for d in (train_dir, ref_dir, out / "index", out / "audit"):
        shutil.rmtree(d, ignore_errors=True)
    train_dir.mkdir()
    for line in (out / "memorize" / "training_set.jsonl").read_text().splitlines():
        rec = json.loads(line)
        shutil.copyfile(rec["path"], train_dir / rec["id"].replace("/", "_"))
    ref_dir.mkdir()
    for i, path in enumerate(load_training_set(fm / "test", subset=reference_n, seed=1, size=32).paths):
        shutil.copyfile(path, ref_dir / f"{i:05d}.png")
    diffrep.index(train_dir, out / "index")
    r = diffrep.audit(out / "samples", out / "index", out / "audit", reference=ref_dir,
                      captions=out / "samples" / "prompts.jsonl")
    s = r.summary
    return {"replicas": s["replicas"], "queries": s["queries"], "replication_rate": s["replication_rate"],
            "threshold": s["calibration"]["threshold"], "calibration": s["calibration"]["source"],
            "top1_p50": s["top1"]["p50"], "top1_p95": s["top1"]["p95"],
            "reference_p95": (s.get("reference") or {}).get("p95"), "skipped": s["skipped"]}


def speed(fm: Path, out: Path, steps: int, common: dict) -> dict:
    """Steps/s and parameter count of each conditioning after a 20-step warm-up."""
    from diffrep.models.train import train

    res = {}
    for cond in ("none", "class", "caption"):
        run = out / f"speed-{cond}"
        train(fm / "train", run, cond=cond, steps=20, checkpoint_every=20, **common)  # warm-up
        r = train(fm / "train", run, cond=cond, steps=20 + steps, checkpoint_every=10**9, **common)
        res[cond] = {"steps_per_s": round(r.steps_per_s, 2), "params": r.params}
        print(f"speed {cond:<8} {r.steps_per_s:6.2f} steps/s  ({r.params / 1e6:.2f}M parameters)", flush=True)
    return res


def memorization(fm: Path, out: Path, a: argparse.Namespace, common: dict) -> dict:
    """Train unconditionally for ``a.steps`` steps (or ``a.minutes``), sample, and compare the samples' nearest
    training RMS with held-out images'; writes ``nearest.png`` (each sample beside its nearest training image)."""
    from PIL import Image

    from diffrep.models.data import load_training_set
    from diffrep.models.sample import sample, save_grid
    from diffrep.models.train import train

    run = out / "memorize"
    t0, steps = time.perf_counter(), 0
    if a.steps:
        r = train(fm / "train", run, cond="none", steps=a.steps, checkpoint_every=500, **common)
    while not a.steps and time.perf_counter() - t0 < a.minutes * 60:
        steps += 500
        r = train(fm / "train", run, cond="none", steps=steps, checkpoint_every=500, **common)
    train_s = time.perf_counter() - t0
    s = sample(run, a.samples, out / "samples", steps=50, seed=0)
    gen = np.stack([np.asarray(Image.open(s.out / f)) for f in s.files])
    train_set = load_training_set(fm / "train", subset=a.images, seed=0, size=32).images[..., 0]
    held = load_training_set(fm / "test", subset=a.samples, seed=0, size=32).images[..., 0]
    g_rms, g_idx = nearest_rms(gen, train_set)
    h_rms, _ = nearest_rms(held, train_set)
    pairs = np.stack([np.stack([g, train_set[i]]) for g, i in zip(gen, g_idx)])  # [n, 2, 32, 32]
    save_grid(pairs.reshape(-1, 32, 32)[..., None], out / "nearest.png", cols=16)
    m = {"steps": r.step, "resumed_from": r.resumed_from, "train_seconds": round(train_s, 1),
         "steps_per_s": round((r.step - r.resumed_from) / train_s, 2),
         "final_loss": round(r.loss, 4), "samples": a.samples,
         "sample_rms_median": round(float(np.median(g_rms)), 1),
         "sample_rms_p10_p90": [round(float(np.percentile(g_rms, q)), 1) for q in (10, 90)],
         "heldout_rms_median": round(float(np.median(h_rms)), 1),
         "heldout_rms_min": round(float(h_rms.min()), 1),
         "samples_below_heldout_min": int((g_rms < h_rms.min()).sum()),
         "distinct_training_images_matched": int(len(set(g_idx.tolist())))}
    print(f"memorization: {m['steps']} steps ({m['steps'] - m['resumed_from']} in {m['train_seconds']:.0f}s); "
          f"sample->nearest train RMS median {m['sample_rms_median']} vs held-out {m['heldout_rms_median']} "
          f"(held-out min {m['heldout_rms_min']}, {m['samples_below_heldout_min']}/{a.samples} samples below it, "
          f"{m['distinct_training_images_matched']} distinct training images matched)", flush=True)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/train")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--speed-steps", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=0,
                    help="train exactly this many steps instead of --minutes (continues a run already in --out)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memorization", action="store_true")
    ap.add_argument("--audit", action="store_true",
                    help="also `diffrep audit` the samples against the 32 training images (SSCD index), calibrated "
                         "on --reference-n held-out test images")
    ap.add_argument("--reference-n", type=int, default=200)
    a = ap.parse_args()

    import torch

    from diffrep.datasets import get_dataset

    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fm = get_dataset("fashion-mnist") / "images"
    results: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "images": a.images,
                     "load_average_start": os.getloadavg()}
    common = dict(subset=a.images, seed=0, batch=16, lr=2e-3, size=32, sample_every=0)

    if not a.skip_speed:
        results["speed"] = speed(fm, out, a.speed_steps, common)
    if not a.skip_memorization:
        results["memorization"] = memorization(fm, out, a, common)
    if a.audit and not a.skip_memorization:
        results["audit"] = audit_samples(out, fm, a.reference_n)
        print(f"audit: {results['audit']}", flush=True)
    results["load_average_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
