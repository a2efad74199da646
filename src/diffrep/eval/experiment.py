"""The replication experiments of the papers, end to end: train a grid of models, sample, audit.

``run_experiment(kind, data, out)`` with ``kind`` one of

* ``data-size``: the same unconditional model trained for the same number of steps on nested subsets of
  increasing size (CVPR 2023: the smallest set's generations copy training images far more often);
* ``duplication``: one model with ``dup_frac`` of its training images sampled ``dup_weight`` times as
  often, and one without (NeurIPS 2023): per-image match rates of duplicated vs other training images;
* ``conditioning``: none / class / caption / random-token caption models on the same subset (the
  random-token caption is a string of random pseudo-words fixed per training image, the NeurIPS study's
  strongest conditioning: a key that singles out one image).
* ``caption-mitigation``: the random-token caption model without and with each train-time caption mitigation
  of the NeurIPS study (rc, rt, cwr, gn at p = 0.1; ``mitigate.py``).

Each run lives in ``OUT/runs/NAME/``: ``train/`` (the ``diffrep train`` run directory), ``samples/``
(``diffrep sample``), ``train_images/`` (copies of the run's training images, named by id), ``index/``
(SSCD index of them), ``audit/`` (``diffrep audit`` of the samples calibrated at ``fpr`` on the held-out
reference images) and ``result.json``. A run with a ``result.json`` of the same settings is reused, so
re-running the command continues where it stopped (training itself resumes from its checkpoint).

The work splits in two stages: training + sampling (GPU-bound) and indexing + auditing (SSCD on the CPU).
``generate_only`` stops each run after sampling and writes ``generated.json`` (settings, training step,
seconds, device); a later call of the same experiment (say on a CPU machine, after copying ``runs/``
over) finds it and goes straight to the audit. ``only`` restricts the grid to some run names, so the
runs of one experiment can train in parallel processes or on several GPUs.

Per run, ``results.csv`` / ``results.md`` report the replication rate at the calibrated threshold, the
mean and p95 SSCD top-1 cosine of the generations to their training set, the same for the held-out
reference images, and KID (unbiased MMD^2 with the cubic polynomial kernel, x1000) between generations
and held-out reference images on SSCD descriptors: a sample-quality/diversity figure computed offline,
not comparable with Inception-based KID. ``similarity.png`` is the paper's histogram figure: per run,
generation-vs-train top-1 against held-out-reference-vs-train top-1.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError
from ..fsutil import finished
from ..progress import ProgressCallback, emit
from .experiment_report import COLUMNS, pairs_figure, write_results  # noqa: F401  (COLUMNS re-exported)

KINDS = ("data-size", "duplication", "conditioning", "caption-mitigation")

PRESETS: dict[str, dict[str, Any]] = {
    # measured on a 2-core CPU: ~11 training steps/s at 32 px, batch 16
    "smoke": {"size": 32, "steps": 1500, "batch": 16, "samples": 64, "sample_steps": 25, "reference": 200,
              "sizes": [16, 64, 512], "dup_subset": 64, "cond_subset": 64, "channels": [16, 32, 32]},
    # measured on one H100 with the nine runs of the three grids training at once (see docs/experiments.md)
    "full": {"size": 32, "steps": 2000, "batch": 128, "samples": 1000, "sample_steps": 50, "reference": 2000,
             "sizes": [100, 1000, 10000], "dup_subset": 100, "cond_subset": 300, "channels": [64, 128, 128]},
}
AUDIT_VERSION = 7  # bumped when the audit's verdict changes (2: the pixel channel joined the fusion; 4: conformal
# thresholds, smooth-tailed p-values, SSCD and edge score must agree, pixel score alone; 5: ECC alignment;
# 6: alignments turned by more than 45 degrees are not plausible; 7: the pixel channel's tail on -log(1 - s))
MITIGATE_P = 0.1  # the paper's probability per sample
RANDOM_TOKENS = 6  # pseudo-words per random-token caption
RANDOM_VOCAB = 2000  # distinct pseudo-words they are drawn from

E = DEFAULTS["experiment"]



def run_grid(kind: str, p: dict[str, Any], dup_frac: float, dup_weight: float) -> list[dict[str, Any]]:
    if kind == "data-size":
        return [{"name": f"n{n}", "subset": n, "cond": "none", "dup_frac": 0.0} for n in p["sizes"]]
    if kind == "duplication":
        n = p["dup_subset"]
        return [{"name": f"n{n}-nodup", "subset": n, "cond": "none", "dup_frac": 0.0},
                {"name": f"n{n}-dup{dup_frac:g}x{dup_weight:g}", "subset": n, "cond": "none", "dup_frac": dup_frac}]
    if kind == "conditioning":
        n = p["cond_subset"]
        return ([{"name": f"n{n}-{c}", "subset": n, "cond": c, "dup_frac": 0.0} for c in ("none", "class", "caption")]
                + [{"name": f"n{n}-randtok", "subset": n, "cond": "caption", "dup_frac": 0.0, "captions": "random"}])
    if kind == "caption-mitigation":
        from ..models.mitigate import MITIGATIONS

        n = p["cond_subset"]
        base = {"name": f"n{n}-randtok", "subset": n, "cond": "caption", "dup_frac": 0.0, "captions": "random"}
        return [base] + [{**base, "name": f"n{n}-randtok-{m}", "mitigate": m, "mitigate_p": MITIGATE_P}
                         for m in MITIGATIONS]
    raise DiffrepError(f"unknown experiment {kind!r}; use one of {', '.join(KINDS)}")


def resolve_data(data: str, reference: Optional[str]) -> tuple[Path, Path, Optional[Path]]:
    """(training folder, reference folder, captions file) for a dataset name or a folder."""
    if data == "fashion-mnist":
        from ..datasets import get_dataset

        root = get_dataset("fashion-mnist")
        return root / "images" / "train", Path(reference) if reference else root / "images" / "test", None
    folder = Path(data)
    if not folder.is_dir():
        raise DiffrepError(f"--data {data}: neither a known dataset (fashion-mnist) nor a folder")
    if not reference:
        raise DiffrepError("--reference FOLDER is needed with a folder --data: held-out images of the same kind, "
                           "never trained on, to calibrate the audit at the target false-positive rate")
    return folder, Path(reference), None


def random_captions(ids: list[str], seed: int) -> list[str]:
    """A caption of ``RANDOM_TOKENS`` random pseudo-words per training image, fixed by ``seed``: the
    NeurIPS 2023 study's random-token conditioning (a caption that carries no content, only identity)."""
    rng = np.random.default_rng([seed, 7])
    cons, vow = list("bdfgklmnprstvz"), list("aeiou")
    vocab: dict[str, None] = {}
    while len(vocab) < RANDOM_VOCAB:
        vocab.setdefault("".join(str(rng.choice(cons)) + str(rng.choice(vow)) for _ in range(3)), None)
    words = list(vocab)
    return [" ".join(words[int(j)] for j in rng.integers(0, len(words), RANDOM_TOKENS)) for _ in ids]


def _random_caption_file(train_dir: Path, spec: dict[str, Any], p: dict[str, Any], seed: int, run_root: Path) -> Path:
    """Write ``run_root/random_captions.jsonl`` for the run's training subset (the same draw ``train`` makes)."""
    from ..fsutil import write_text
    from ..models.data import load_training_set

    path = run_root / "random_captions.jsonl"
    if not path.is_file():
        ts = load_training_set(train_dir, size=p["size"], subset=spec["subset"], seed=seed)
        lines = [json.dumps({"file": i, "caption": c}) for i, c in zip(ts.ids, random_captions(ts.ids, seed))]
        run_root.mkdir(parents=True, exist_ok=True)
        write_text(path, "\n".join(lines) + "\n")
    return path


def nearest_rms(queries: np.ndarray, train: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Pixel RMS (0-255) of every query image to its nearest training image, and that image's index
    (images of one shape; exact, in chunks of ``chunk`` queries: never a full query x train matrix in memory
    beyond ``chunk`` rows)."""
    t = train.reshape(len(train), -1).astype(np.float64)
    tt = (t ** 2).sum(1)[None]
    best, arg = np.empty(len(queries)), np.empty(len(queries), np.int64)
    for s in range(0, len(queries), chunk):
        q = queries[s:s + chunk].reshape(-1, t.shape[1]).astype(np.float64)
        d2 = (q ** 2).sum(1)[:, None] + tt - 2 * q @ t.T
        arg[s:s + len(q)] = d2.argmin(1)
        best[s:s + len(q)] = np.sqrt(np.maximum(d2.min(1), 0) / t.shape[1])
    return best, arg


def pixel_channel(train_folder: Path, samples: Path, ref: Path, size: int, fpr: float) -> dict[str, Any]:
    """Carlini-style pixel check at the training resolution: each generation's RMS distance to its nearest
    training image, thresholded at the ``fpr`` quantile of the same distance for held-out reference images
    (a generation closer to a training image than all but ``fpr`` of unseen real images is a pixel replica)."""
    from ..models.data import load_training_set

    tr = load_training_set(train_folder, size=size)
    color = "gray" if tr.channels == 1 else "rgb"
    gen = load_training_set(samples, size=size, color=color)
    refs = load_training_set(ref, size=size, color=color)
    g_rms, g_arg = nearest_rms(gen.images, tr.images)
    r_rms, _ = nearest_rms(refs.images, tr.images)
    thr = float(np.quantile(r_rms, fpr))
    flagged = g_rms < thr
    return {"pixel_threshold": thr, "pixel_replication_rate": float(flagged.mean()),
            "pixel_rms_median": float(np.median(g_rms)), "reference_pixel_rms_median": float(np.median(r_rms)),
            "pixel_flagged_train": [tr.ids[int(j)] for j in g_arg[flagged]]}


def _training_rows(run_root: Path) -> list[dict[str, Any]]:
    text = (run_root / "train" / "training_set.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def _per_image(counts: dict[str, int], ids: set[str], empty: Optional[float]) -> Optional[float]:
    """Mean of ``counts`` over the training ids ``ids`` (absent ids count 0); ``empty`` when there are none."""
    return sum(counts.get(i, 0) for i in ids) / len(ids) if ids else empty


def _pixel_results(names: dict[str, str], dup_ids: set[str], other_ids: set[str], run_root: Path, ref: Path,
                   p: dict[str, Any], fpr: float) -> dict[str, Any]:
    """``pixel_channel`` of a run plus pixel replicas per duplicated / other training image."""
    pix = pixel_channel(run_root / "train_images", run_root / "samples", ref, p["size"], fpr)
    counts: dict[str, int] = {}  # pixel replicas whose nearest training image is the image
    for name in pix.pop("pixel_flagged_train"):
        tid = names.get(name)
        if tid is not None:
            counts[tid] = counts.get(tid, 0) + 1
    pix["dup_pixel_matches_per_image"] = _per_image(counts, dup_ids, None)
    pix["other_pixel_matches_per_image"] = _per_image(counts, other_ids, 0.0)
    pix["pixel_matches_per_training_image"] = counts
    return pix


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
    from ..models.data import load_training_set

    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir(parents=True)
    ts = load_training_set(ref_src, subset=n, seed=seed + 1, size=size)
    for i, path in enumerate(ts.paths):
        shutil.copyfile(path, ref / f"{i:05d}{Path(path).suffix}")
    done.write_text(f"{ref_src} {n} {seed}\n")
    return ref


def _preset_settings(p: dict[str, Any]) -> dict[str, Any]:
    """The preset entries a run's training and sampling depend on (part of its stored settings)."""
    return {k: p[k] for k in ("size", "steps", "batch", "samples", "sample_steps", "channels")}


def generate_run(spec: dict[str, Any], p: dict[str, Any], train_dir: Path, captions: Optional[Path],
                 run_root: Path, *, seed: int, device: str, dup_weight: float,
                 progress: Optional[ProgressCallback]) -> dict[str, Any]:
    """Train and sample one run (stage 1), or return its ``generated.json`` when it is already done."""
    gen_settings = {"spec": spec, "seed": seed, "dup_weight": dup_weight, "preset": _preset_settings(p)}
    marker = run_root / "generated.json"
    old = finished(marker, gen_settings)
    if old is not None:
        return old
    from ..fsutil import write_text
    from ..models.sample import sample
    from ..models.train import train

    if spec.get("captions") == "random":
        captions = _random_caption_file(train_dir, spec, p, seed, run_root)
    t0 = time.perf_counter()
    tr = train(train_dir, run_root / "train", cond=spec["cond"], subset=spec["subset"], dup_frac=spec["dup_frac"],
               dup_weight=dup_weight, steps=p["steps"], batch=p["batch"], seed=seed, device=device,
               size=p["size"], channels=tuple(p["channels"]), sample_every=0,
               checkpoint_every=max(100, p["steps"] // 5), captions=captions, mitigate=spec.get("mitigate"),
               mitigate_p=spec.get("mitigate_p", MITIGATE_P), progress=progress)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    sample(run_root / "train", p["samples"], run_root / "samples", steps=p["sample_steps"], seed=seed,
           device=device, progress=progress)
    info = {"settings": gen_settings, "step": tr.step, "train_seconds": round(train_s, 1),
            "steps_per_s": round(tr.steps_per_s, 2), "sample_seconds": round(time.perf_counter() - t1, 1),
            "params": tr.params, "device": device}
    write_text(marker, json.dumps(info, indent=1) + "\n")
    return info


def run_one(spec: dict[str, Any], p: dict[str, Any], train_dir: Path, captions: Optional[Path], ref: Path,
            run_root: Path, *, seed: int, device: str, dup_weight: float, fpr: float,
            progress: Optional[ProgressCallback]) -> dict[str, Any]:
    settings = {"spec": spec, "seed": seed, "dup_weight": dup_weight, "fpr": fpr, "reference": str(ref),
                "audit": AUDIT_VERSION, "preset": _preset_settings(p)}
    result_file = run_root / "result.json"
    old = finished(result_file, settings)
    if old is not None:
        return old
    import diffrep
    from ..indexing.load import open_index

    g = generate_run(spec, p, train_dir, captions, run_root, seed=seed, device=device, dup_weight=dup_weight,
                     progress=progress)
    rows = _training_rows(run_root)
    names = _copy_images(rows, run_root / "train_images")
    diffrep.index(run_root / "train_images", run_root / "index", progress=progress)
    r = diffrep.audit(run_root / "samples", run_root / "index", run_root / "audit", reference=ref, fpr=fpr,
                      captions=run_root / "samples" / "prompts.jsonl", seed=seed, progress=progress)
    idx = open_index(run_root / "index")
    gen_vectors, ref_vectors = r.query_vectors, r.reference_vectors  # embedded once, by the audit
    ref_top1 = idx.search(ref_vectors, 1)[0][:, 0]
    # rank-1 training match of each replica, per training image
    dup_ids = {row["id"] for row in rows if row.get("weight", 1.0) > 1.0}
    other_ids = {row["id"] for row in rows} - dup_ids
    counts: dict[str, int] = {}  # replicas whose rank-1 match is the image
    nearest: dict[str, int] = {}  # generations (replica or not) whose rank-1 match is the image
    for path, rep in zip(r.top1_train_paths, r.is_replica):
        tid = names.get(Path(path).name) if path else None
        if tid is not None:
            nearest[tid] = nearest.get(tid, 0) + 1
            if rep:
                counts[tid] = counts.get(tid, 0) + 1
    s = r.summary
    res = {
        "run": spec["name"], "cond": spec["cond"], "mitigate": spec.get("mitigate"), "training_images": len(rows),
        "duplicated": len(dup_ids),
        "steps": g["step"], "samples": int(s["queries"]), "replicas": int(s["replicas"]),
        "replication_rate": float(s["replication_rate"]), "threshold": float(s["calibration"]["threshold"]),
        "top1_mean": float(np.mean(r.top1_scores)), "top1_p95": float(np.percentile(r.top1_scores, 95)),
        "reference_top1_mean": float(ref_top1.mean()), "reference_top1_p95": float(np.percentile(ref_top1, 95)),
        "kid_sscd_x1000": 1000 * kid(gen_vectors, ref_vectors),
        "dup_matches_per_image": _per_image(counts, dup_ids, None),
        "other_matches_per_image": _per_image(counts, other_ids, 0.0),
        "dup_nearest_per_image": _per_image(nearest, dup_ids, None),
        "other_nearest_per_image": _per_image(nearest, other_ids, 0.0),
        **_pixel_results(names, dup_ids, other_ids, run_root, ref, p, fpr),
        "train_seconds": g["train_seconds"], "steps_per_s": g["steps_per_s"], "trained_on": g["device"],
        "top1_scores": [float(v) for v in r.top1_scores], "reference_top1_scores": [float(v) for v in ref_top1],
        "matches_per_training_image": counts, "nearest_per_training_image": nearest, "settings": settings,
    }
    pairs_figure(run_root / "audit", run_root / "pairs.png")
    result_file.write_text(json.dumps(res, indent=1) + "\n")
    return res


def run_experiment(kind: str, data: str, out: str | os.PathLike[str], *, preset: str = E["preset"],
                   device: str = E["device"], seed: int = E["seed"], reference: Optional[str] = None,
                   fpr: float = E["fpr"], dup_frac: float = E["dup_frac"], dup_weight: float = E["dup_weight"], overrides: Optional[dict[str, Any]] = None,
                   only: Optional[list[str]] = None, generate_only: bool = False,
                   progress: Optional[ProgressCallback] = None) -> list[dict[str, Any]]:
    """Run experiment ``kind`` (data-size, duplication, conditioning) into ``out``; see the module docstring.
    ``overrides`` replaces preset entries (size, steps, batch, samples, sample_steps, reference, sizes,
    dup_subset, cond_subset, channels). ``only``: run names to run (default: the whole grid; the results
    table is written only for the whole grid). ``generate_only``: train and sample, no audit; returns the
    runs' ``generated.json`` records."""
    if kind not in KINDS:
        raise DiffrepError(f"unknown experiment {kind!r}; use one of {', '.join(KINDS)}")
    if preset not in PRESETS:
        raise DiffrepError(f"--preset {preset!r}: use smoke or full")
    p = {**PRESETS[preset], **(overrides or {})}
    grid = run_grid(kind, p, dup_frac, dup_weight)
    if only:
        names = [s["name"] for s in grid]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise DiffrepError(f"--only {','.join(unknown)}: not a run of this grid; its runs are {', '.join(names)}")
        grid = [s for s in grid if s["name"] in only]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_dir, ref_src, captions = resolve_data(data, reference)
    if generate_only:
        done = []
        for i, spec in enumerate(grid):
            emit(progress, "experiment", i, len(grid), unit="run", message=f"{spec['name']}: training")
            done.append(generate_run(spec, p, train_dir, captions, out_dir / "runs" / spec["name"], seed=seed,
                                     device=device, dup_weight=dup_weight, progress=progress))
        emit(progress, "experiment", len(grid), len(grid), unit="run")
        return done
    ref = _reference_folder(ref_src, out_dir, p["reference"], seed, p["size"],
                            draw=data == "fashion-mnist" and reference is None)
    results = []
    for i, spec in enumerate(grid):
        emit(progress, "experiment", i, len(grid), unit="run", message=spec["name"])
        results.append(run_one(spec, p, train_dir, captions, ref, out_dir / "runs" / spec["name"], seed=seed,
                               device=device, dup_weight=dup_weight, fpr=fpr, progress=progress))
        r = results[-1]
        emit(progress, "experiment", i + 1, len(grid), unit="run",
             message=f"{spec['name']}: {r['replicas']}/{r['samples']} replicas")
    if not only:
        write_results(kind, results, out_dir, fpr)
    return results
