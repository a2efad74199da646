"""The replication experiments of the papers, end to end: train a grid of models, sample, audit.

``run_experiment(kind, data, out)`` with ``kind`` one of

* ``data-size``: the same unconditional model trained for the same number of steps on nested subsets of
  increasing size (CVPR 2023: the smallest set's generations copy training images far more often);
* ``duplication``: one model with ``dup_frac`` of its training images sampled ``dup_weight`` times as
  often, and one without (NeurIPS 2023): per-image match rates of duplicated vs other training images;
* ``conditioning``: none / class / caption models on the same subset.

Each run lives in ``OUT/runs/NAME/``: ``train/`` (the ``diffrep train`` run directory), ``samples/``
(``diffrep sample``), ``train_images/`` (copies of the run's training images, named by id), ``index/``
(SSCD index of them), ``audit/`` (``diffrep audit`` of the samples calibrated at ``fpr`` on the held-out
reference images) and ``result.json``. A run with a ``result.json`` of the same settings is reused, so
re-running the command continues where it stopped (training itself resumes from its checkpoint).

Per run, ``results.csv`` / ``results.md`` report the replication rate at the calibrated threshold, the
mean and p95 SSCD top-1 cosine of the generations to their training set, the same for the held-out
reference images, and KID (unbiased MMD^2 with the cubic polynomial kernel, x1000) between generations
and held-out reference images on SSCD descriptors: a sample-quality/diversity figure computed offline,
not comparable with Inception-based KID. ``similarity.png`` is the paper's histogram figure: per run,
generation-vs-train top-1 against held-out-reference-vs-train top-1.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit

KINDS = ("data-size", "duplication", "conditioning")

PRESETS: dict[str, dict[str, Any]] = {
    # measured on a 2-core CPU: ~11 training steps/s at 32 px, batch 16
    "smoke": {"size": 32, "steps": 1500, "batch": 16, "samples": 64, "sample_steps": 25, "reference": 200,
              "sizes": [16, 64, 512], "dup_subset": 64, "cond_subset": 64},
    "full": {"size": 32, "steps": 30000, "batch": 64, "samples": 1000, "sample_steps": 50, "reference": 2000,
             "sizes": [100, 1000, 10000], "dup_subset": 1000, "cond_subset": 1000},
}

COLUMNS = ["run", "cond", "training_images", "duplicated", "steps", "samples", "replicas", "replication_rate",
           "threshold", "top1_mean", "top1_p95", "reference_top1_mean", "reference_top1_p95", "kid_sscd_x1000",
           "dup_matches_per_image", "other_matches_per_image", "dup_nearest_per_image", "other_nearest_per_image",
           "train_seconds"]


def run_grid(kind: str, p: dict[str, Any], dup_frac: float, dup_weight: float) -> list[dict[str, Any]]:
    if kind == "data-size":
        return [{"name": f"n{n}", "subset": n, "cond": "none", "dup_frac": 0.0} for n in p["sizes"]]
    if kind == "duplication":
        n = p["dup_subset"]
        return [{"name": f"n{n}-nodup", "subset": n, "cond": "none", "dup_frac": 0.0},
                {"name": f"n{n}-dup{dup_frac:g}x{dup_weight:g}", "subset": n, "cond": "none", "dup_frac": dup_frac}]
    if kind == "conditioning":
        n = p["cond_subset"]
        return [{"name": f"n{n}-{c}", "subset": n, "cond": c, "dup_frac": 0.0} for c in ("none", "class", "caption")]
    raise DiffrepError(f"unknown experiment {kind!r}; use one of {', '.join(KINDS)}")


def resolve_data(data: str, reference: Optional[str]) -> tuple[Path, Path, Optional[Path]]:
    """(training folder, reference folder, captions file) for a dataset name or a folder."""
    if data == "fashion-mnist":
        from ..data import get_dataset

        root = get_dataset("fashion-mnist")
        return root / "images" / "train", Path(reference) if reference else root / "images" / "test", None
    folder = Path(data)
    if not folder.is_dir():
        raise DiffrepError(f"--data {data}: neither a known dataset (fashion-mnist) nor a folder")
    if not reference:
        raise DiffrepError("--reference FOLDER is needed with a folder --data: held-out images of the same kind, "
                           "never trained on, to calibrate the audit at the target false-positive rate")
    return folder, Path(reference), None


def kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel (x.y / d + 1)^3 (KID's kernel), on the given features."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return float("nan")
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def _copy_images(rows: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """Copy the training images into ``folder`` (flat names); {copied file name: training id}."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for r in rows:
        name = r["id"].replace("/", "_").replace("\\", "_")
        if not (folder / name).is_file():
            shutil.copyfile(r["path"], folder / name)
        names[name] = r["id"]
    return names


def _reference_folder(ref_src: Path, out: Path, n: int, seed: int, size: int, draw: bool) -> Path:
    """A fixed random draw of ``n`` held-out images, copied once to ``OUT/reference`` (``draw``), or the
    user's reference folder as it is."""
    if not draw:
        return ref_src
    ref = out / "reference"
    done = ref / ".complete"
    if done.is_file() and done.read_text().strip() == f"{ref_src} {n} {seed}":
        return ref
    from .data import load_training_set

    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir(parents=True)
    ts = load_training_set(ref_src, subset=n, seed=seed + 1, size=size)
    for i, path in enumerate(ts.paths):
        shutil.copyfile(path, ref / f"{i:05d}{Path(path).suffix}")
    done.write_text(f"{ref_src} {n} {seed}\n")
    return ref


def run_one(spec: dict[str, Any], p: dict[str, Any], train_dir: Path, captions: Optional[Path], ref: Path,
            run_root: Path, *, seed: int, device: str, dup_weight: float, fpr: float,
            progress: Optional[ProgressCallback]) -> dict[str, Any]:
    settings = {"spec": spec, "preset": {k: p[k] for k in ("size", "steps", "batch", "samples", "sample_steps")},
                "seed": seed, "dup_weight": dup_weight, "fpr": fpr, "reference": str(ref)}
    result_file = run_root / "result.json"
    if result_file.is_file():
        old = json.loads(result_file.read_text())
        if old.get("settings") == json.loads(json.dumps(settings)):
            return old
    import diffrep
    from ..embedding import embed_source
    from ..indexing.build import resolve_descriptor
    from ..indexing.load import open_index
    from .sample import sample
    from .train import train

    t0 = time.perf_counter()
    tr = train(train_dir, run_root / "train", cond=spec["cond"], subset=spec["subset"], dup_frac=spec["dup_frac"],
               dup_weight=dup_weight, steps=p["steps"], batch=p["batch"], seed=seed, device=device,
               size=p["size"], sample_every=0, checkpoint_every=max(100, p["steps"] // 5), captions=captions,
               progress=progress)
    train_s = time.perf_counter() - t0
    sample(run_root / "train", p["samples"], run_root / "samples", steps=p["sample_steps"], seed=seed,
           device=device, progress=progress)
    rows = [json.loads(line) for line in (run_root / "train" / "training_set.jsonl").read_text().splitlines() if line]
    names = _copy_images(rows, run_root / "train_images")
    diffrep.index(run_root / "train_images", run_root / "index", progress=progress)
    r = diffrep.audit(run_root / "samples", run_root / "index", run_root / "audit", reference=ref, fpr=fpr,
                      captions=run_root / "samples" / "prompts.jsonl", seed=seed, progress=progress)
    idx = open_index(run_root / "index")
    d = resolve_descriptor(idx.dir, None)
    gen = embed_source(run_root / "samples", d, stage="embed-queries")
    refs = embed_source(ref, d, stage="embed-reference")
    ref_top1 = idx.search(refs.vectors, 1)[0][:, 0]
    # rank-1 training match of each replica, per training image
    by_id = {row["id"]: row for row in rows}
    dup_ids = {row["id"] for row in rows if row.get("weight", 1.0) > 1.0}
    counts: dict[str, int] = {}  # replicas whose rank-1 match is the image
    nearest: dict[str, int] = {}  # generations (replica or not) whose rank-1 match is the image
    for path, rep in zip(r.top1_train_paths, r.is_replica):
        tid = names.get(Path(path).name) if path else None
        if tid is not None:
            nearest[tid] = nearest.get(tid, 0) + 1
            if rep:
                counts[tid] = counts.get(tid, 0) + 1
    other_ids = set(by_id) - dup_ids
    s = r.summary
    res = {
        "run": spec["name"], "cond": spec["cond"], "training_images": len(rows), "duplicated": len(dup_ids),
        "steps": tr.step, "samples": int(s["queries"]), "replicas": int(s["replicas"]),
        "replication_rate": float(s["replication_rate"]), "threshold": float(s["calibration"]["threshold"]),
        "top1_mean": float(np.mean(r.top1_scores)), "top1_p95": float(np.percentile(r.top1_scores, 95)),
        "reference_top1_mean": float(ref_top1.mean()), "reference_top1_p95": float(np.percentile(ref_top1, 95)),
        "kid_sscd_x1000": 1000 * kid(gen.vectors, refs.vectors),
        "dup_matches_per_image": (sum(counts.get(i, 0) for i in dup_ids) / len(dup_ids)) if dup_ids else None,
        "other_matches_per_image": sum(counts.get(i, 0) for i in other_ids) / max(1, len(other_ids)),
        "dup_nearest_per_image": (sum(nearest.get(i, 0) for i in dup_ids) / len(dup_ids)) if dup_ids else None,
        "other_nearest_per_image": sum(nearest.get(i, 0) for i in other_ids) / max(1, len(other_ids)),
        "train_seconds": round(train_s, 1),
        "top1_scores": [float(v) for v in r.top1_scores], "reference_top1_scores": [float(v) for v in ref_top1],
        "matches_per_training_image": counts, "nearest_per_training_image": nearest, "settings": settings,
    }
    result_file.write_text(json.dumps(res, indent=1) + "\n")
    emit(progress, "experiment", 1, 1, message=f"{spec['name']}: {res['replicas']}/{res['samples']} replicas")
    return res


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_results(kind: str, results: list[dict[str, Any]], out: Path, fpr: float) -> None:
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in results:
            w.writerow([_fmt(r[c]) for c in COLUMNS])
    md_cols = ["run", "cond", "training_images", "steps", "samples", "replicas", "replication_rate", "top1_mean",
               "top1_p95", "reference_top1_p95", "kid_sscd_x1000"]
    if kind == "duplication":
        md_cols += ["duplicated", "dup_matches_per_image", "other_matches_per_image", "dup_nearest_per_image",
                    "other_nearest_per_image"]
    lines = [f"# diffrep experiment {kind}", "",
             f"Replication rate: share of generations whose audit verdict exceeds the threshold calibrated at "
             f"{fpr:.0%} FPR on held-out reference images. top1: SSCD cosine of each generation to its nearest "
             "training image (reference_top1: the same for held-out real images). kid_sscd_x1000: KID "
             "(cubic-kernel unbiased MMD², ×1000) between generations and held-out images on SSCD descriptors "
             "(lower: closer to real data; not Inception KID)." + (
                 " dup/other_matches_per_image: replicas whose rank-1 training match is a duplicated / other "
                 "training image, divided by the number of such images; *_nearest_per_image: the same over all "
                 "generations." if kind == "duplication" else ""), "",
             "| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for r in results:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in md_cols) + " |")
    lines += ["", "![similarity](similarity.png)", ""]
    (out / "results.md").write_text("\n".join(lines), encoding="utf-8")
    histogram(results, out / "similarity.png")


def histogram(results: list[dict[str, Any]], path: Path) -> None:
    from ..report.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.0), sharey=False, squeeze=False)
    bins = np.linspace(0.0, 1.0, 41)
    for ax, r in zip(axes[0], results):
        for key, label, color in (("top1_scores", "generated vs train", "#d62728"),
                                  ("reference_top1_scores", "held-out vs train", "#1f77b4")):
            v = np.clip(np.asarray(r[key]), bins[0], bins[-1])
            ax.hist(v, bins=bins, density=True, alpha=0.45, color=color, edgecolor=color, histtype="stepfilled",
                    label=f"{label} (n={len(v)})")
        ax.set_title(f"{r['run']}: {r['replicas']}/{r['samples']} replicas", fontsize=9)
        ax.set_xlabel("top-1 SSCD cosine to training set", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("density", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_experiment(kind: str, data: str, out: str | os.PathLike[str], *, preset: str = "smoke",
                   device: str = "cpu", seed: int = 0, reference: Optional[str] = None, fpr: float = 0.01,
                   dup_frac: float = 0.05, dup_weight: float = 5.0, overrides: Optional[dict[str, Any]] = None,
                   progress: Optional[ProgressCallback] = None) -> list[dict[str, Any]]:
    """Run experiment ``kind`` (data-size, duplication, conditioning) into ``out``; see the module docstring.
    ``overrides`` replaces preset entries (size, steps, batch, samples, sample_steps, reference, sizes,
    dup_subset, cond_subset)."""
    if kind not in KINDS:
        raise DiffrepError(f"unknown experiment {kind!r}; use one of {', '.join(KINDS)}")
    if preset not in PRESETS:
        raise DiffrepError(f"--preset {preset!r}: use smoke or full")
    p = {**PRESETS[preset], **(overrides or {})}
    grid = run_grid(kind, p, dup_frac, dup_weight)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_dir, ref_src, captions = resolve_data(data, reference)
    ref = _reference_folder(ref_src, out_dir, p["reference"], seed, p["size"],
                            draw=data == "fashion-mnist" and reference is None)
    results = []
    for i, spec in enumerate(grid):
        emit(progress, "experiment", i, len(grid), message=spec["name"])
        results.append(run_one(spec, p, train_dir, captions, ref, out_dir / "runs" / spec["name"], seed=seed,
                               device=device, dup_weight=dup_weight, fpr=fpr, progress=progress))
    write_results(kind, results, out_dir, fpr)
    return results
