"""Indexing throughput vs the bare model, and peak memory vs collection size.

Measures, on this machine, for the same images and batch size:
  * bare model: descriptor.embed() on already decoded + preprocessed batches (the ceiling);
  * end-to-end: `diffrep.index()` = scan + read + hash + decode + preprocess + embed + write chunks + FAISS;
  * peak RSS of `diffrep index` subprocesses at two collection sizes (memory must not grow with N).

``--device cuda`` measures the CUDA path (the packaged SSCD graph on onnxruntime-gpu, else on PyTorch with CUDA,
``descriptors.onnx_torch``; or ``--descriptor torchscript:PATH``); the run stops at once where there is none.

Usage:  python benchmarks/bench_index.py [--descriptor sscd] [--device auto|cpu|cuda] [--n 600] [--batch-size 8]
            [--repeats 3] [--out FILE]
Prints a markdown table to paste into docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_sets(emoji_dir: Path, root: Path, n: int) -> dict[str, Path]:
    """Two real image sets: the 64 px emoji PNGs, and 1024x768 JPEG photos-like renders of them."""
    files = sorted(emoji_dir.glob("*.png"))[:n]
    small = root / "emoji-64px-png"
    large = root / "render-1024px-jpeg"
    small.mkdir(parents=True)
    large.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, f in enumerate(files):
        shutil.copyfile(f, small / f.name)
        if i < n // 2:
            im = Image.open(f).convert("RGBA")
            bg = Image.new("RGBA", im.size, tuple(int(c) for c in rng.integers(0, 255, 3)) + (255,))
            im = Image.alpha_composite(bg, im).convert("RGB").resize((1024, 768), Image.BICUBIC)
            noise = rng.normal(0, 6, (768, 1024, 3))
            arr = np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(large / f"{f.stem}.jpg", quality=90)
    return {"emoji 64px PNG": small, "1024x768 JPEG": large}


def bare_model(descriptor, folder: Path, batch_size: int) -> float:
    from diffrep.decode import decode_image

    pre = [descriptor.preprocess(decode_image(p.read_bytes(), min_side=descriptor.size))
           for p in sorted(folder.iterdir())]
    batches = [np.stack(pre[i:i + batch_size]) for i in range(0, len(pre), batch_size)]
    descriptor.embed(batches[0])  # warm-up
    t = time.perf_counter()
    for b in batches:
        descriptor.embed(b)
    return len(pre) / (time.perf_counter() - t)


def end_to_end(descriptor_name: str, folder: Path, batch_size: int, out: Path, device: str = "auto") -> float:
    from diffrep.indexing import index

    from diffrep.descriptors import get_descriptor

    d = get_descriptor(descriptor_name, device=device)
    d.embed(np.zeros((batch_size, d.size, d.size, 3), np.uint8))  # same warm-up as the bare run
    t = time.perf_counter()
    r = index(folder, out, descriptor=d, batch_size=batch_size, device=device)
    dt = time.perf_counter() - t
    return r.added / dt


def peak_rss_mb(folder: Path, out: Path, descriptor: str, batch_size: int, device: str = "auto") -> float:
    code = ("import resource,sys; from diffrep.indexing import index; "
            f"index({str(folder)!r}, {str(out)!r}, descriptor={descriptor!r}, batch_size={batch_size}, "
            f"device={device!r}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(r.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--descriptor", default="sscd")
    ap.add_argument("--n", type=int, default=600, help="images in the emoji set (the JPEG set gets n/2)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--repeats", type=int, default=3, help="alternating repetitions (median reported)")
    ap.add_argument("--out", default=None, help="write results JSON here")
    a = ap.parse_args()
    from diffrep.datasets import get_dataset
    from diffrep.descriptors import get_descriptor

    emoji = get_dataset("emoji") / "images"
    root = Path(tempfile.mkdtemp(prefix="diffrep-bench-"))
    try:
        sets = make_sets(emoji, root, a.n)
        d = get_descriptor(a.descriptor, device=a.device)
        rows = []
        for label, folder in sets.items():
            # alternate the two measurements and keep the median of each, so drift hits both alike
            bares, e2es = [], []
            for rep in range(a.repeats):
                bares.append(bare_model(d, folder, a.batch_size))
                e2es.append(end_to_end(a.descriptor, folder, a.batch_size, root / f"idx-{len(rows)}-{rep}", a.device))
            bare, e2e = float(np.median(bares)), float(np.median(e2es))
            rows.append({"set": label, "images": len(list(folder.iterdir())), "bare_img_s": bare,
                         "e2e_img_s": e2e, "ratio": e2e / bare, "bare_runs": bares, "e2e_runs": e2es})
        # memory: the same pipeline on N and 4N images (emoji, repeated under new names)
        many = root / "many"
        many.mkdir()
        files = sorted(emoji.glob("*.png"))
        mem = []
        for n in (a.n // 2, 2 * a.n):
            for i in range(len(list(many.iterdir())), n):
                shutil.copyfile(files[i % len(files)], many / f"{i:06d}.png")
            mem.append({"images": n, "peak_rss_mb": peak_rss_mb(many, root / f"mem-{n}", a.descriptor,
                                                                  a.batch_size, a.device)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "descriptor": a.descriptor,
            "device": a.device, "runtime": getattr(d, "runtime", "torch"),
            "batch_size": a.batch_size, "throughput": rows, "memory": mem}
    print(f"Machine: {info['machine']}; descriptor {a.descriptor} on {a.device} ({info['runtime']}); "
          f"batch size {a.batch_size}\n")
    print("| images | n | bare model (img/s) | end-to-end index (img/s) | end-to-end / bare |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['images']} | {r['bare_img_s']:.1f} | {r['e2e_img_s']:.1f} | {100 * r['ratio']:.0f}% |")
    print("\n| images indexed | peak RSS (MB) |\n|---|---|")
    for m in mem:
        print(f"| {m['images']} | {m['peak_rss_mb']:.0f} |")
    if a.out:
        Path(a.out).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
