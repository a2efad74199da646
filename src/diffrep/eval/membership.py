"""``diffrep experiment membership``: membership and dataset inference against a known member split.

Unconditional DDPMs are trained on N Fashion-MNIST training images (the members; the sizes are nested, each
a prefix of one seeded order) and evaluated at several training lengths. Non-members come from the same
split and distribution: a reference pool (the null every threshold is calibrated on) and disjoint test
non-members. At each (N, steps) ``probes.membership.membership`` scores the evaluation members and the test
non-members against the reference with every method (the labels are passed only for the evaluation), then:

- per method, on its own scores and difficulty-calibrated (``probes.difficulty``, as ``diffrep membership``
  does by default): AUC and TPR at 1% FPR with bootstrap intervals, the AUC gain over the plain loss attack
  with a paired bootstrap interval, the share of members flagged at the calibrated threshold, and the share of
  test non-members flagged (validity: at ``fpr`` it should stay near the target); validity is also checked over
  ``splits`` random re-splits of the pooled non-member scores into reference and test parts, reported as mean
  and range;
- dataset inference (``probes.setinfer``, on the features ``diffrep membership --set`` uses by default: the
  ``SET_METHODS``): for each set size, ``set_draws`` random member sets and as many
  non-member sets (the control) are tested against a reference drawn afresh each time from the pooled
  non-members; reported are the members' median p-value and share below 0.01, and the control's share below
  0.05 (valid: at most ~5%).

Outputs in ``out``: ``results.csv``, ``results.md``, ``summary.json``; each (N, steps) evaluation keeps its
``membership`` folder under ``eval/`` and is skipped when run again (resumable); a changed analysis setting
(``ANALYSIS_KEYS``), set statistic (``setinfer.STATISTIC``) or difficulty statistic reuses the scores (the image
statistics in ``features.npz`` are computed again from the images when their definition changed).
"""
from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError
from ..fsutil import finished, read_cache, write_json, write_npz, write_text
from ..progress import ProgressCallback

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"sizes": [100, 1000], "steps": [1000, 4000], "batch": 16, "size": 32, "channels": [16, 32, 32],
              "eval_members": 200, "reference": 300, "test_nonmembers": 300, "seeds": 2,
              "set_sizes": [10, 30, 100, 200], "set_draws": 200, "splits": 20},
    "full": {"sizes": [100, 1000, 10000], "steps": [5000, 20000, 50000], "batch": 128, "size": 32,
             "channels": [64, 128, 128], "eval_members": 1000, "reference": 1000, "test_nonmembers": 1000,
             "seeds": 4, "set_sizes": [10, 30, 100, 300], "set_draws": 200, "splits": 50},
}
METHODS = ("loss", "secmi", "pia")
ANALYSIS_KEYS = ("set_sizes", "set_draws", "splits")  # preset keys that change the analysis, not the scores
SET_METHODS = (DEFAULTS["membership"]["method"],)  # the methods whose features the set test sums, as the CLI's
STATISTICS_MARKER = "statistics.json"  # the definition of the image statistics features.npz holds


def run_membership_experiment(out: str | Path, *, preset: str = "smoke", seed: int = 0, device: str = "cpu",
                              fpr: float = 0.01, overrides: Optional[dict[str, Any]] = None,
                              progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Run (or continue) the experiment in ``out``; returns the summary (module docstring)."""
    if preset not in PRESETS:
        raise DiffrepError(f"--preset {preset!r}: use {', '.join(PRESETS)}")
    p = {**PRESETS[preset], **(overrides or {})}
    if not p["sizes"] or min(p["sizes"]) < 1:
        raise DiffrepError(f"training-set sizes {p['sizes']}: give at least one, each at least 1 image")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    data = _split(root / "data", p, seed)
    rows, set_rows = [], []
    for n in p["sizes"]:
        for steps in sorted(p["steps"]):
            ev = _evaluate(root, data, n, steps, p, seed, device, fpr, progress)
            rows += ev["methods"]
            set_rows += ev["sets"]
    summary = {"preset": preset, "settings": p, "seed": seed, "fpr": fpr, "device": device,
               "methods": rows, "dataset_inference": set_rows}
    write_json(root / "summary.json", summary)
    _write_results(root, rows, set_rows, p, fpr)
    return summary


def _split(folder: Path, p: dict[str, Any], seed: int) -> dict[str, Any]:
    """Members (nested prefixes of one seeded order), reference and test non-members: disjoint draws from the
    Fashion-MNIST training split."""
    from ..datasets import get_dataset

    want = {k: p[k] for k in ("sizes", "eval_members", "reference", "test_nonmembers")} | {"seed": seed}
    marker = folder / "split.json"
    old = finished(marker, want)
    if old is not None:
        return old
    src = get_dataset("fashion-mnist") / "images" / "train"
    files = sorted(str(f.relative_to(src)) for f in src.rglob("*.png"))
    order = [files[i] for i in np.random.default_rng([seed, 27]).permutation(len(files))]
    n_max, n_ref, n_test = max(p["sizes"]), p["reference"], p["test_nonmembers"]
    if n_max + n_ref + n_test > len(files):
        raise DiffrepError(f"the split needs {n_max + n_ref + n_test} images; Fashion-MNIST's training split has "
                           f"{len(files)}")
    ref, test, members = order[:n_ref], order[n_ref:n_ref + n_test], order[n_ref + n_test:n_ref + n_test + n_max]
    if folder.exists():
        shutil.rmtree(folder)
    _copy(src, ref, folder / "reference")
    for n in p["sizes"]:
        _copy(src, members[:n], folder / f"members-{n}")
        ev = members[:min(n, p["eval_members"])]
        _copy(src, ev, folder / f"eval-{n}")
        _copy(src, test, folder / f"eval-{n}")
        write_text(folder / f"labels-{n}.csv", "path,member\n" + "".join(f"{_flat(f)},1\n" for f in ev)
                   + "".join(f"{_flat(f)},0\n" for f in test))
    info = {"settings": want, "reference": len(ref), "test_nonmembers": len(test)}
    write_json(marker, info)
    return info


def _flat(rel: str) -> str:
    return rel.replace("/", "_")


def _copy(src: Path, files: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(src / f, dest / _flat(f))


def _evaluate(root: Path, data: dict[str, Any], n: int, steps: int, p: dict[str, Any], seed: int, device: str,
              fpr: float, progress: Optional[ProgressCallback]) -> dict[str, Any]:
    """Train the N-image model to ``steps`` (continuing a shorter run) and evaluate it; cached in ``eval/``."""
    from ..probes.membership import membership

    d = root / "eval" / f"n{n}-steps{steps}"
    marker = d / "result.json"
    from ..probes.difficulty import DESCRIPTION as DIFFICULTY
    from ..probes.setinfer import STATISTIC

    settings = {"n": n, "steps": steps, "preset": p, "seed": seed, "fpr": fpr, "set_statistic": STATISTIC,
                "per_image": [DIFFICULTY, "plain"], "set_methods": list(SET_METHODS)}
    old = finished(marker, settings)
    if old is not None:
        return old
    scored = d / "scored.json"  # the scoring settings: the analysis (sets, re-splits) can change without rescoring
    score_settings = {k: v for k, v in settings.items() if k in ("n", "steps", "seed", "fpr")} | {
        k: v for k, v in p.items() if k not in ANALYSIS_KEYS}
    snap = _trained(root, n, steps, p, seed, device, progress)
    # the set statistic is not a scoring setting (the image statistics are refreshed below); folders scored
    # when it was one still hold it in scored.json
    scored_with = read_cache(scored)
    if isinstance(scored_with, dict):
        scored_with = {k: v for k, v in scored_with.items() if k != "set_statistic"}
    s = read_cache(d / "membership" / "summary.json") if scored_with == score_settings else None
    if s is None:
        s = membership(snap["run"], d / "membership", images=root / "data" / f"eval-{n}",
                       reference=root / "data" / "reference", method="all", fpr=fpr, seeds=p["seeds"],
                       labels=root / "data" / f"labels-{n}.csv", device=device, progress=progress)
        write_json(scored, score_settings)
        _statistics_are_current(d / "membership")  # membership wrote them just now
    _refresh_statistics(d / "membership", root, n, p["size"])
    feats = np.load(d / "membership" / "features.npz")
    truth = _labels(d / "membership" / "scores.csv", root / "data" / f"labels-{n}.csv")
    epochs = round(steps * p["batch"] / n, 1)
    rng = np.random.default_rng([seed, n, steps])
    base = {"n": n, "steps": steps, "epochs": epochs, "train_seconds": snap["seconds"]}
    rows = [base | {"method": m, "seconds_per_image": s["seconds_per_image"][m]} | r
            for m in METHODS for r in _method_rows(feats, m, truth, fpr, p["splits"], rng)]
    sets = _set_rows(feats, truth, n, steps, epochs, p, rng)
    result = {"settings": settings, "methods": rows, "sets": sets}
    write_json(marker, result)
    return result


def _refresh_statistics(mdir: Path, root: Path, n: int, size: int) -> None:
    """Bring the image statistics in ``mdir/features.npz`` (``statistics/images`` and ``statistics/reference``,
    rows in the order of scores.csv and reference.csv) to the current ``difficulty.image_statistics``, computed
    afresh from the experiment's images unless ``statistics.json`` says they already are: a changed difficulty
    statistic re-analyses the scores without scoring them again."""
    from ..probes.difficulty import DESCRIPTION, image_statistics
    from ..probes.images import load_images

    if read_cache(mdir / STATISTICS_MARKER) == {"statistics": DESCRIPTION}:
        return
    with np.load(mdir / "features.npz") as f:
        arrays = {k: f[k] for k in f.files}
    for part, folder, table in (("images", f"eval-{n}", "scores.csv"), ("reference", "reference", "reference.csv")):
        loaded = load_images(root / "data" / folder, size)
        row = {q: i for i, q in enumerate(loaded.paths)}
        paths = [r["path"] for r in csv.DictReader(open(mdir / table, encoding="utf-8"))]
        missing = [q for q in paths if q not in row]
        if missing:
            raise DiffrepError(f"{mdir / table} names {len(missing)} image(s) no longer readable in "
                               f"{root / 'data' / folder} (first: {missing[0]}): delete {mdir} to score again")
        arrays[f"statistics/{part}"] = image_statistics(loaded.images[[row[q] for q in paths]])
    write_npz(mdir / "features.npz", arrays)
    _statistics_are_current(mdir)


def _statistics_are_current(mdir: Path) -> None:
    """Record that ``mdir/features.npz`` holds image statistics of the current definition."""
    from ..probes.difficulty import DESCRIPTION

    write_json(mdir / STATISTICS_MARKER, {"statistics": DESCRIPTION})


def _trained(root: Path, n: int, steps: int, p: dict[str, Any], seed: int, device: str,
             progress: Optional[ProgressCallback]) -> dict[str, Any]:
    """The N-image model after ``steps`` steps: ``runs/n{N}`` trained on (continuing a shorter run) and
    snapshotted as ``runs/n{N}-steps{S}`` (config and checkpoint), so an evaluation can be redone later."""
    from ..models.checkpoint import CHECKPOINT
    from ..models.train import train

    run, snap = root / "runs" / f"n{n}", root / "runs" / f"n{n}-steps{steps}"
    info = snap / "snapshot.json"
    done = read_cache(info)
    if done is not None:
        return done | {"run": snap}
    shutil.rmtree(snap, ignore_errors=True)  # a snapshot without a readable snapshot.json is made again
    t0 = time.perf_counter()
    tr = train(root / "data" / f"members-{n}", run, cond="none", steps=steps, batch=p["batch"], seed=seed,
               device=device, size=p["size"], channels=tuple(p["channels"]), sample_every=0,
               checkpoint_every=max(100, steps // 10), progress=progress)
    if tr.step != steps:
        raise DiffrepError(f"{run} is already trained {tr.step} steps, past the {steps} to evaluate, and has no "
                           f"snapshot at {steps}: delete {run} to retrain")
    tmp = snap.with_name(snap.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("config.json", CHECKPOINT):
        shutil.copyfile(run / f, tmp / f)
    write_json(tmp / "snapshot.json", {"step": tr.step, "seconds": round(time.perf_counter() - t0, 1)})
    tmp.rename(snap)
    return read_cache(info) | {"run": snap}


def _labels(scores_csv: Path, labels_csv: Path) -> np.ndarray:
    """Member flags in the order of scores.csv (the order of features.npz)."""
    lab = {r["path"]: int(r["member"]) for r in csv.DictReader(open(labels_csv, encoding="utf-8"))}
    paths = [r["path"] for r in csv.DictReader(open(scores_csv, encoding="utf-8"))]
    return np.array([lab[Path(q).name] for q in paths])


def _method_scores(feats: Any, method: str, part: str) -> np.ndarray:
    keys = [k for k in feats.files if k.startswith(f"{part}/{method}@")]
    return np.mean([feats[k] for k in keys], axis=0)


def _features(feats: Any, part: str, methods: Optional[tuple[str, ...]] = None) -> np.ndarray:
    """The ``part`` rows' features (``method@t`` columns, sorted), of ``methods`` only when given."""
    keys = sorted(k.split("/", 1)[1] for k in feats.files if k.startswith(part + "/"))
    keys = [k for k in keys if methods is None or k.split("@")[0] in methods]
    return np.column_stack([feats[f"{part}/{k}"] for k in keys])


def _method_rows(feats: Any, method: str, truth: np.ndarray, fpr: float, splits: int,
                 rng: np.random.Generator) -> list[dict[str, Any]]:
    """The method's evaluation twice: on its own scores (``difficulty`` none) and difficulty-calibrated
    (image-stats; one fit over the tested and reference images, as ``diffrep membership`` does); each with
    AUC and TPR at 1% FPR (bootstrap intervals), the flagged shares at the reference's conformal threshold, the
    re-split validity, and the AUC gain over the plain loss attack with its paired bootstrap interval."""
    from ..matching.calibration import calibrate
    from ..probes.difficulty import calibrate_pooled
    from ..probes.roc import detection_metrics, paired_auc_gain

    img, ref = _method_scores(feats, method, "images"), _method_scores(feats, method, "reference")
    stats = (feats["statistics/images"], feats["statistics/reference"])
    loss = _method_scores(feats, "loss", "images")
    pos, neg = truth == 1, truth == 0
    rows = []
    for how, (a, r) in (("none", (img, ref)), ("image-stats", calibrate_pooled(img, ref, *stats))):
        met = detection_metrics(a[pos], a[neg])
        flags = calibrate(reference=r, fpr=fpr, noun="image").is_replica(a)
        rows.append({"difficulty": how, "auc": met["auc"], "auc_ci": met["auc_ci"],
                     "tpr_at_1pct_fpr": met["tpr_at_1pct_fpr"], "tpr_at_1pct_fpr_ci": met["tpr_at_1pct_fpr_ci"],
                     "members_flagged": float(flags[pos].mean()), "non_members_flagged": float(flags[neg].mean()),
                     "resplit_flagged": _resplit_validity(np.concatenate([a[neg], r]), len(r), fpr, splits, rng),
                     "auc_gain_vs_loss": paired_auc_gain(a[pos], a[neg], loss[pos], loss[neg])})
    return rows


def _resplit_validity(nonmember: np.ndarray, n_ref: int, fpr: float, splits: int,
                      rng: np.random.Generator) -> dict[str, float]:
    """Flagged share of the test part over random (reference, test) re-splits of the non-member scores."""
    from ..matching.calibration import threshold_at_fpr

    rates = []
    for _ in range(splits):
        perm = rng.permutation(len(nonmember))
        ref, test = nonmember[perm[:n_ref]], nonmember[perm[n_ref:]]
        t, _ = threshold_at_fpr(ref, fpr)
        rates.append(float(np.mean(test > t)))
    return {"mean": float(np.mean(rates)), "min": float(np.min(rates)), "max": float(np.max(rates)),
            "splits": splits}


def _set_rows(feats: Any, truth: np.ndarray, n: int, steps: int, epochs: float, p: dict[str, Any],
              rng: np.random.Generator) -> list[dict[str, Any]]:
    """Dataset inference on member sets and non-member (control) sets of each size. Every draw splits the
    pooled non-members (reference and test) afresh into a reference of the reference's size and a pool the
    control set is drawn from, so the control's rejection rate estimates the test's level over draws of the
    data, not over re-draws from one fixed pair of samples."""
    from ..probes.setinfer import evidence, permutation_p

    img, ref = _features(feats, "images", SET_METHODS), _features(feats, "reference", SET_METHODS)
    mem, non = img[truth == 1], np.vstack([img[truth == 0], ref])
    img_s, ref_s = feats["statistics/images"], feats["statistics/reference"]
    mem_s, non_s = img_s[truth == 1], np.vstack([img_s[truth == 0], ref_s])
    n_ref = len(ref)
    rows = []
    for k in p["set_sizes"]:
        if k > len(mem) or k > len(non) - n_ref:
            continue
        out: dict[str, list[float]] = {"members": [], "control": []}
        for _ in range(p["set_draws"]):
            perm = rng.permutation(len(non))
            r, rest = perm[:n_ref], perm[n_ref:n_ref + k]
            out["control"].append(permutation_p(*evidence(non[rest], non[r], non_s[rest], non_s[r]), 999, rng)[1])
            pick = rng.choice(len(mem), k, replace=False)
            out["members"].append(permutation_p(*evidence(mem[pick], non[r], mem_s[pick], non_s[r]), 999, rng)[1])
        m, c = np.array(out["members"]), np.array(out["control"])
        rows.append({"n": n, "steps": steps, "epochs": epochs, "set_size": k, "draws": p["set_draws"],
                     "members_median_p": float(np.median(m)), "members_share_p_below_0.01": float(np.mean(m < 0.01)),
                     "control_share_p_below_0.05": float(np.mean(c < 0.05)),
                     "control_share_p_below_0.01": float(np.mean(c < 0.01))})
    return rows


def _write_results(root: Path, rows: list[dict[str, Any]], set_rows: list[dict[str, Any]], p: dict[str, Any],
                   fpr: float) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["n", "steps", "epochs", "method", "difficulty", "auc", "auc_lo", "auc_hi", "tpr_at_1pct_fpr", "tpr_lo",
                "tpr_hi", "members_flagged", "non_members_flagged", "resplit_flagged_mean", "resplit_flagged_max",
                "auc_gain_vs_loss", "gain_lo", "gain_hi", "seconds_per_image"])
    for r in rows:
        g = r["auc_gain_vs_loss"]
        w.writerow([r["n"], r["steps"], r["epochs"], r["method"], r["difficulty"], f"{r['auc']:.4f}",
                    *(f"{x:.4f}" for x in r["auc_ci"]), f"{r['tpr_at_1pct_fpr']:.4f}",
                    *(f"{x:.4f}" for x in r["tpr_at_1pct_fpr_ci"]), f"{r['members_flagged']:.4f}",
                    f"{r['non_members_flagged']:.4f}", f"{r['resplit_flagged']['mean']:.4f}",
                    f"{r['resplit_flagged']['max']:.4f}", f"{g['gain']:.4f}", *(f"{x:.4f}" for x in g["ci"]),
                    f"{r['seconds_per_image']:.4f}"])
    write_text(root / "results.csv", buf.getvalue())
    lines = [f"# Membership inference against a known split ({p['reference']} reference images, "
             f"{p['test_nonmembers']} test non-members, target FPR {fpr:g})", "",
             "Difficulty: *plain* rows score with the method's own score, *calibrated* rows free it of what the "
             "images' own statistics predict (`--difficulty image-stats`, the default). The AUC gain is over the "
             "plain loss attack on the same images, with its paired bootstrap interval.", "",
             "| members N | steps | epochs | method | difficulty | AUC [95% CI] | AUC gain over plain loss [95% CI] | "
             "TPR@1%FPR [95% CI] | members flagged | non-members flagged (re-splits: mean, max) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, g = r["resplit_flagged"], r["auc_gain_vs_loss"]
        how = "calibrated" if r["difficulty"] != "none" else "plain"
        lines.append(f"| {r['n']} | {r['steps']} | {r['epochs']:g} | {r['method']} | {how} | {r['auc']:.3f} "
                     f"[{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}] | {g['gain']:+.3f} [{g['ci'][0]:+.3f}, "
                     f"{g['ci'][1]:+.3f}] | {r['tpr_at_1pct_fpr']:.3f} "
                     f"[{r['tpr_at_1pct_fpr_ci'][0]:.3f}, {r['tpr_at_1pct_fpr_ci'][1]:.3f}] | "
                     f"{r['members_flagged']:.3f} | {r['non_members_flagged']:.3f} ({v['mean']:.3f}, {v['max']:.3f}) |")
    lines += ["", "## Dataset inference (set vs reference, one-sided permutation test)", "",
              f"Features: {', '.join(SET_METHODS)} (as `diffrep membership --set` by default), difficulty-calibrated.",
              "",
              "| members N | steps | set size | member sets: median p | share p < 0.01 | control sets: share p < 0.05 |",
              "|---|---|---|---|---|---|"]
    for r in set_rows:
        lines.append(f"| {r['n']} | {r['steps']} | {r['set_size']} | {r['members_median_p']:.3g} | "
                     f"{r['members_share_p_below_0.01']:.2f} | {r['control_share_p_below_0.05']:.3f} "
                     f"({r['draws']} draws) |")
    write_text(root / "results.md", "\n".join(lines) + "\n")
