"""Cost of the membership shift control (``probes.shift.shift_control``): seconds and peak memory.

Each configuration (tested images, reference images, side in pixels) runs in a fresh process: real emoji
images (the packaged set, flattened onto white) resized to the side and repeated to the count, held as uint8 the
way ``diffrep membership`` holds them, then one ``shift_control`` call with its defaults (199 permutations, 5
folds). Printed per configuration: seconds, the resident memory before the call and its peak during the call
(the peak is reset just before it: Linux's ``/proc/self/clear_refs``), and the result (AUC, p-value), which
should agree between code versions.

``--baseline-src DIR`` runs every configuration a second time with another checkout's ``src`` first on the
path (for example a ``git worktree`` of an earlier commit) and prints the ratio, measured in the same run.

Usage:  python benchmarks/bench_shift.py [--configs 200x300@32,10000x10000@32,1000x1000@256,1000x1000@512]
            [--baseline-src DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
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


def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":")) / 1024


with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
    fh.write("5")
before = status("VmRSS")
t = time.perf_counter()
r = shift.shift_control(tested, reference)
sec = time.perf_counter() - t
print(json.dumps({"seconds": sec, "peak_rss_mb": status("VmHWM"), "rss_before_mb": before,
                  "images_mb": (tested.nbytes + reference.nbytes) / 2**20, "auc": r["auc"], "p_value": r["p_value"],
                  "source": shift.__file__}))
"""


def run(config: str, src: str | None) -> dict:
    n_t, rest = config.split("x")
    n_r, side = rest.split("@")
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run([sys.executable, "-c", CHILD, n_t, n_r, side], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{config}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return {"tested": int(n_t), "reference": int(n_r), "side": int(side), **json.loads(r.stdout.splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="200x300@32,10000x10000@32,1000x1000@256,1000x1000@512")
    ap.add_argument("--baseline-src", default=None, help="another checkout's src folder, run as the baseline")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    a = ap.parse_args()
    rows = []
    head = ("| tested | reference | side | images MB | seconds | ms per image | RSS MB before -> peak during the call "
            "| AUC | p |")
    if a.baseline_src:
        head += " baseline seconds | baseline RSS MB before -> peak | speed-up | baseline AUC, p |"
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for config in a.configs.split(","):
        row = run(config, None)
        line = (f"| {row['tested']} | {row['reference']} | {row['side']} | {row['images_mb']:.0f} | "
                f"{row['seconds']:.2f} | {1000 * row['seconds'] / (row['tested'] + row['reference']):.2f} | "
                f"{row['rss_before_mb']:.0f} -> {row['peak_rss_mb']:.0f} | {row['auc']:.6f} | {row['p_value']:.3g} |")
        if a.baseline_src:
            base = run(config, a.baseline_src)
            row["baseline"] = base
            line += (f" {base['seconds']:.2f} | {base['rss_before_mb']:.0f} -> {base['peak_rss_mb']:.0f} | "
                     f"{base['seconds'] / row['seconds']:.1f}x | {base['auc']:.6f}, {base['p_value']:.3g} |")
        print(line, flush=True)
        rows.append(row)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
