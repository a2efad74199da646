"""Cost of the model-free parts of a membership run: the shift control and the dataset-inference set test.

``--part shift`` (``probes.shift.shift_control``): per configuration TESTEDxREFERENCE@SIDE, real emoji images
(the packaged set, flattened onto white) resized to the side and drawn with replacement for both sides, held as
uint8 the way ``diffrep membership`` holds them, then one ``shift_control`` call with its defaults (199
permutations, 5 folds).

``--part set`` (``probes.setinfer.set_test``): per configuration SETxREFERENCE, 15 membership features per image
(standard normal, the set's shifted by 0.05 standard deviations: the cost does not depend on the values) and
three image statistics, then one ``set_test`` call with its defaults (9,999 permutations; 20 subsets per size
for the smallest set size, 999 permutations each).

Each configuration runs in a fresh process. Printed per configuration: seconds, the resident memory before the
call and its peak during the call (the peak is reset just before it: Linux's ``/proc/self/clear_refs``), and
the result, which should agree between code versions.

``--baseline-src DIR`` runs every configuration a second time with another checkout's ``src`` first on the
path (for example a ``git worktree`` of an earlier commit) and prints the ratio, measured in the same run.

Usage:  python benchmarks/bench_membership_stats.py [--part shift|set]
            [--configs 200x300@32,10000x10000@32,1000x1000@256,1000x1000@512 | 100x300,1000x1000,1000x10000]
            [--baseline-src DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MEASURE = r"""
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":")) / 1024


def measure(call, extra):
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    before = status("VmRSS")
    t = time.perf_counter()
    result = call()
    sec = time.perf_counter() - t
    print(json.dumps({"seconds": sec, "peak_rss_mb": status("VmHWM"), "rss_before_mb": before, **extra(result)}))
"""

SHIFT = r"""
import json, sys, time
import numpy as np
from PIL import Image
from diffrep.datasets import get_dataset
import diffrep.probes.shift as shift

n_t, n_r, side = (int(v) for v in sys.argv[1:4])
files = sorted((get_dataset("emoji") / "images").glob("*.png"))
pool = []
for f in files[:min(len(files), n_t + n_r)]:
    with Image.open(f) as im:
        rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    pool.append(np.asarray(Image.alpha_composite(white, rgba).convert("RGB").resize((side, side), Image.BICUBIC)))
pool = np.stack(pool)
order = np.random.default_rng(0).integers(0, len(pool), n_t + n_r)  # both sides drawn from one pool
tested, reference = pool[order[:n_t]], pool[order[n_t:]]
del pool
""" + MEASURE + r"""
measure(lambda: shift.shift_control(tested, reference), extra=lambda r: {
    "images_mb": (tested.nbytes + reference.nbytes) / 2**20, "result": f"AUC {r['auc']:.6f}, p {r['p_value']:.3g}"})
"""

SET = r"""
import json, sys, time
import numpy as np
import diffrep.probes.setinfer as setinfer

n_s, n_r = (int(v) for v in sys.argv[1:3])
rng = np.random.default_rng(0)
feats, ref = rng.normal(size=(n_s, 15)) + 0.05, rng.normal(size=(n_r, 15))
stats, ref_stats = rng.random((n_s, 3)), rng.random((n_r, 3))
""" + MEASURE + r"""
measure(lambda: setinfer.set_test(feats, ref, set_stats=stats, ref_stats=ref_stats), extra=lambda r: {
    "images_mb": 0.0, "result": f"p {r['p_value']:.4g}, smallest set {r['smallest_set_for_alpha']}"})
"""

PARTS = {"shift": (SHIFT, "200x300@32,10000x10000@32,1000x1000@256,1000x1000@512"),
         "set": (SET, "100x300,1000x1000,1000x10000")}


def run(part: str, config: str, src: str | None) -> dict:
    args = config.replace("@", "x").split("x")
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run([sys.executable, "-c", PARTS[part][0], *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{config}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return {"config": config, "images": int(args[0]) + int(args[1]), **json.loads(r.stdout.splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=sorted(PARTS), default="shift")
    ap.add_argument("--configs", default=None, help="comma-separated; see the module docstring")
    ap.add_argument("--baseline-src", default=None, help="another checkout's src folder, run as the baseline")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    a = ap.parse_args()
    rows = []
    head = "| configuration | images MB | seconds | ms per image | RSS MB before -> peak during the call | result |"
    if a.baseline_src:
        head += " baseline seconds | baseline RSS MB before -> peak | speed-up | baseline result |"
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for config in (a.configs or PARTS[a.part][1]).split(","):
        row = run(a.part, config, None)
        line = (f"| {config} | {row['images_mb']:.0f} | {row['seconds']:.2f} | "
                f"{1000 * row['seconds'] / row['images']:.2f} | {row['rss_before_mb']:.0f} -> {row['peak_rss_mb']:.0f} "
                f"| {row['result']} |")
        if a.baseline_src:
            base = run(a.part, config, a.baseline_src)
            row["baseline"] = base
            line += (f" {base['seconds']:.2f} | {base['rss_before_mb']:.0f} -> {base['peak_rss_mb']:.0f} | "
                     f"{base['seconds'] / row['seconds']:.1f}x | {base['result']} |")
        print(line, flush=True)
        rows.append(row)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
