"""The GPU stage of `diffrep experiment memorization` inside a time budget, packed for the trip back.

Used for the `full` preset on a lent GPU: trains 100 steps to warm up and 200 more to measure the rate, continues the same run to the
largest multiple of 1,000 steps that fits `--budget` seconds of training (at most `--max-steps`), then
generates and probes (`--generate-only`), and packs what the CPU stage needs (samples, probe scores,
generated.json, the run's config, log and training set) into `--pack` as `mem.tar.gz.partNN` pieces of 15 MB.
Back on a CPU machine: `cat mem.tar.gz.part* | tar xz -C OUT`, then
`diffrep experiment memorization --preset full --seed S --steps N --out OUT` audits and scores.

Usage:  python benchmarks/memorization_gpu.py --out /tmp/mem --seed 1 --budget 300 --pack $OUT
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from diffrep.eval.memorization import PRESETS, run_memorization, split, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of training")
    ap.add_argument("--max-steps", type=int, default=PRESETS["full"]["steps"])
    ap.add_argument("--pack", default=None)
    ap.add_argument("--overrides", default="{}", help="JSON of preset settings to change (a quick dry run)")
    a = ap.parse_args()
    extra = json.loads(a.overrides)
    out, p = Path(a.out), {**PRESETS[a.preset], **extra}
    split(out / "data", p, a.seed)
    train_model(out, p, a.seed, a.device, 100)  # warm-up: lazy CUDA initialisation and kernel selection
    t0 = time.perf_counter()
    train_model(out, p, a.seed, a.device, 300)
    rate = 200 / (time.perf_counter() - t0)
    steps = max(1000, min(a.max_steps, int(rate * a.budget) // 1000 * 1000))
    print(f"measured {rate:.1f} steps/s over steps 100-300: training to {steps} steps", flush=True)
    t1 = time.perf_counter()
    gen = run_memorization(out, preset=a.preset, seed=a.seed, device=a.device, generate_only=True,
                           overrides={**extra, "steps": steps})
    print(json.dumps({k: gen[k] for k in ("step", "train_seconds", "generate_seconds_per_prompt",
                                          "probe_seconds_per_prompt")}), f"stage {time.perf_counter() - t1:.0f} s",
          flush=True)
    if a.pack:
        files = ["samples", "generated.json", "probe_scores.csv", "data/split.json", "run/config.json",
                 "run/log.csv", "run/training_set.jsonl", "run/duplicated.txt"]
        subprocess.run(f"tar czf - {' '.join(files)} | split -b 15M -d - {Path(a.pack).resolve()}/mem.tar.gz.part",
                       shell=True, check=True, cwd=out)


if __name__ == "__main__":
    main()
