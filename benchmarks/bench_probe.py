"""Cost of the first-step noise-norm probe against the brute-force baseline, measured in one run.

Trains a small caption model on captioned emoji (or continues it in --work), then for the same prompts times
(a) `diffrep probe`'s noise-norm at k = 1 (4 seeds), with the first step's unconditional prediction shared
across prompts (as the probe runs) and predicted beside every prompt, and (b) the baseline: generate
--per-prompt images per prompt (50 DDIM steps) and audit them against the training index (calibrated on
held-out emoji). Prints seconds per prompt for each and their ratios; docs/benchmarks.md records the output
with the command.

Usage:  python benchmarks/bench_probe.py [--prompts 32] [--per-prompt 4] [--repeats 3] [--device cpu]
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

import diffrep
from diffrep.datasets import get_dataset
from diffrep.models.adapter import load_model
from diffrep.models.sample import sample
from diffrep.models.train import train
from diffrep.probes.scores import score_prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--per-prompt", type=int, default=4)
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="timed probe runs per mode (the fastest is kept)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="diffrep-bench-probe-"))
    src = get_dataset("emoji")
    rows = [json.loads(x) for x in (src / "captions.jsonl").read_text().splitlines()]
    order = np.random.default_rng(3).permutation(len(rows))
    train_rows, held = [rows[i] for i in order[:a.train]], [rows[i] for i in order[a.train:a.train + 200]]
    for name, part in (("train", train_rows), ("heldout", held)):
        d = work / name
        if not d.is_dir():
            d.mkdir(parents=True)
            for r in part:
                shutil.copyfile(src / "images" / r["file"], d / Path(r["file"]).name)
            (d / "captions.jsonl").write_text("".join(json.dumps({"file": Path(r["file"]).name, "caption": r["caption"]})
                                                      + "\n" for r in part))
    train(work / "train", work / "run", cond="caption", steps=a.steps, sample_every=0, device=a.device)
    diffrep.index(work / "train", work / "index")
    prompts = [r["caption"] for r in train_rows[:a.prompts]]
    model = load_model(work / "run", a.device)

    probe_s, alone_s = {}, {}
    for _ in range(a.repeats):  # alternated, the fastest of each kept: less noise from other load
        for share, into in ((True, probe_s), (False, alone_s)):
            t0 = time.perf_counter()
            r = score_prompts(model, prompts, ("noise-norm",), seeds=4, steps=1, share_first_uncond=share)
            into.setdefault("s", []).append((time.perf_counter() - t0) / len(prompts))
            into["calls"] = r.model_calls / len(prompts)

    t0 = time.perf_counter()
    gen = work / "gen"
    shutil.rmtree(gen, ignore_errors=True)
    sample(work / "run", len(prompts) * a.per_prompt, gen, prompts=[p for p in prompts for _ in range(a.per_prompt)],
           steps=50, device=a.device)
    gen_s = (time.perf_counter() - t0) / len(prompts)
    t0 = time.perf_counter()
    diffrep.audit(gen, work / "index", work / "audit", reference=work / "heldout")
    audit_s = (time.perf_counter() - t0) / len(prompts)
    brute = gen_s + audit_s
    print(f"device {a.device}, torch threads {torch.get_num_threads()}, {len(prompts)} prompts, "
          f"{a.per_prompt} generations per prompt")
    shared, alone = min(probe_s["s"]), min(alone_s["s"])
    print(f"noise-norm k=1, 4 seeds: {shared:.4f} s/prompt ({probe_s['calls']:.2f} noise predictions per prompt); "
          f"predicting eps(x_T, empty) beside every prompt: {alone:.4f} s/prompt ({alone_s['calls']:.2f}), "
          f"{alone / shared:.2f}x the time (fastest of {a.repeats} alternated runs each)")
    print(f"generate {a.per_prompt} x 50 DDIM steps: {gen_s:.3f} s/prompt; audit them: {audit_s:.3f} s/prompt; "
          f"together {brute:.3f} s/prompt")
    print(f"noise-norm is {brute / shared:.0f}x cheaper per prompt ({brute / alone:.0f}x without sharing)")


if __name__ == "__main__":
    main()
