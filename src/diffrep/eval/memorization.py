"""``diffrep experiment memorization``: ground truth for the memorization probes, judged by the audit.

One caption-conditioned model is trained on captioned emoji (each picture its own name) of which a share is
duplicated by sampling weight, so some are memorized and most are not. Then:

1. **Generate**: ``per_prompt`` images for every training caption and for held-out test captions (never
   trained on), with the run's default sampler.
2. **Probe**: every probe score (``probes.scores``; noise-norm at k = 1 and k = ``long_steps``) for the
   training captions, the test captions and a separate set of held-out *reference* captions that calibrate
   the verdict; seconds per prompt for each.
3. **Label by the audit** (not by construction): a training caption is *memorized* when the calibrated audit
   (``--fpr``, calibrated on held-out images) flags at least one of its generations with its own training
   image as the match. Test captions are the negatives.
4. **Score**: per method AUC and TPR at 1% and 0.1% FPR with bootstrap intervals (memorized vs test
   captions), the calibrated verdict (threshold from the reference captions at 1%) on both sets, and the cost
   against the brute-force baseline (generate ``per_prompt`` images and audit them); beside them, with labels
   by construction, AUC and TPR at 1% FPR of the duplicated captions against the test captions (what the
   probes see when the model learned the duplicated pictures without copying them).

``generate_only`` stops after step 2 (the GPU part) and writes ``generated.json``; a later call audits.
Everything lands in ``OUT``: ``data/`` (the split), ``run/`` (the ``diffrep train`` run), ``samples/``,
``probe_scores.csv``, ``index/``, ``audit/``, ``labels.json``, ``results.md``, ``results.csv``,
``summary.json``. Re-running continues: training resumes, finished stages are reused.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..fsutil import finished, read_cache, write_json, write_text
from ..progress import ProgressCallback

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"train": 64, "reference_prompts": 100, "test_prompts": 100, "dup_frac": 0.125, "dup_weight": 25.0,
              "steps": 10000, "batch": 16, "size": 32, "channels": [32, 64, 64], "per_prompt": 4,
              "sample_steps": 25, "probe_seeds": 4, "long_steps": 10},
    "full": {"train": 1000, "reference_prompts": 1000, "test_prompts": 1000, "dup_frac": 0.05, "dup_weight": 25.0,
             "steps": 20000, "batch": 128, "size": 32, "channels": [64, 128, 128], "per_prompt": 8,
             "sample_steps": 50, "probe_seeds": 4, "long_steps": 10},
}
METHOD_ROWS = (("noise-norm", 1), ("noise-norm", "long"), ("seed-ssim", 1), ("one-step", 1))


def run_memorization(out: str | Path, *, preset: str = "smoke", seed: int = 0, device: str = "cpu",
                     fpr: float = 0.01, generate_only: bool = False, overrides: Optional[dict[str, Any]] = None,
                     label_per_prompt: Optional[int] = None, label_reference: Optional[int] = None,
                     progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Run (or continue) the memorization experiment in ``out``; returns the summary (see module docstring).
    ``label_per_prompt`` audits only the first N generations of each training caption and ``label_reference``
    calibrates the audit on the first N held-out images (sorted by name): a cheaper labelling, stated in the
    summary (the audit verifies every image it is given, which dominates the CPU stage)."""
    from ..errors import DiffrepError

    if preset not in PRESETS:
        raise DiffrepError(f"--preset {preset!r}: use {', '.join(PRESETS)}")
    p = {**PRESETS[preset], **(overrides or {})}
    if int(p["train"]) < 2:
        raise DiffrepError(f"--subset {p['train']}: the experiment needs at least 2 training captions")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    data = split(root / "data", p, seed)
    gen = _generate(root, data, p, seed, device, progress)
    if generate_only:
        return gen
    labels = _label(root, data, seed, fpr, label_per_prompt, label_reference, progress)
    return _score(root, data, gen, labels, p, fpr, seed)


def split(folder: Path, p: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train / reference-caption / test-caption split of the packaged emoji (distinct captions only), disjoint
    by near-duplicate group (``groups.csv``: an emoji with its skin-tone and gender variants)."""
    from ..datasets import get_dataset, read_groups

    marker = folder / "split.json"
    want = {k: p[k] for k in ("train", "reference_prompts", "test_prompts")} | {"seed": seed, "split": "groups"}
    old = finished(marker, want)
    if old is not None and (folder / "train").is_dir() and (folder / "heldout").is_dir():
        return old
    src = get_dataset("emoji")
    rows = [json.loads(x) for x in (src / "captions.jsonl").read_text().splitlines() if x.strip()]
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(r["caption"].strip().lower(), r)
    rows = list(seen.values())
    order = np.random.default_rng([seed, 24]).permutation(len(rows))
    group = read_groups(src)
    train, ref, test = group_split([rows[i] for i in order], lambda r: group[r["file"]][0],
                                   (p["train"], p["reference_prompts"], p["test_prompts"]))
    if folder.exists():
        shutil.rmtree(folder)
    for name, part in (("train", train), ("heldout", ref + test)):
        d = folder / name
        d.mkdir(parents=True)
        for r in part:
            shutil.copyfile(src / "images" / r["file"], d / Path(r["file"]).name)
        write_text(d / "captions.jsonl", "".join(json.dumps({"file": Path(r["file"]).name, "caption": r["caption"]})
                                                 + "\n" for r in part))
    info = {"settings": want, "train": {r["caption"]: Path(r["file"]).name for r in train},
            "reference": [r["caption"] for r in ref], "test": [r["caption"] for r in test]}
    write_json(marker, info)
    return info


def group_split(rows: list[Any], group_of: Any, counts: tuple[int, ...]) -> list[list[Any]]:
    """``rows`` (in a seeded random order) cut into parts of ``counts`` rows that share no group. Where there are
    as many groups as rows wanted, every row is the first of its group (no two rows near-duplicates); otherwise
    the groups are dealt to the parts in proportion to their counts, and within a part one row per group comes
    before any second one."""
    from ..errors import DiffrepError

    groups: dict[str, list[Any]] = {}
    for r in rows:
        groups.setdefault(group_of(r), []).append(r)
    members = list(groups.values())
    if len(members) >= sum(counts):
        firsts = [g[0] for g in members]
        cuts = np.cumsum((0,) + tuple(counts))
        return [firsts[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    dealt: list[list[list[Any]]] = [[] for _ in counts]
    for g in members:  # to the part with the fewest groups for its count
        dealt[min(range(len(counts)), key=lambda k: len(dealt[k]) / counts[k])].append(g)
    parts = []
    for n, taken in zip(counts, dealt):
        by_rank = [g[k] for k in range(max(map(len, taken), default=0)) for g in taken if k < len(g)]
        if len(by_rank) < n:
            raise DiffrepError(f"the packaged emoji hold too few images for parts of {', '.join(map(str, counts))}")
        parts.append(by_rank[:n])
    return parts


def _generate(root: Path, data: dict[str, Any], p: dict[str, Any], seed: int, device: str,
              progress: Optional[ProgressCallback]) -> dict[str, Any]:
    """Train, sample ``per_prompt`` images per training and test caption, and score every caption."""
    marker = root / "generated.json"
    settings = {"preset": p, "seed": seed}
    old = finished(marker, settings)
    if old is not None:
        return old
    from ..models.adapter import load_model
    from ..models.sample import sample
    from ..probes.scores import score_prompts

    t0 = time.perf_counter()
    tr = train_model(root, p, seed, device, p["steps"], progress)
    train_s = time.perf_counter() - t0
    prompts = list(data["train"]) + data["test"]
    per = int(p["per_prompt"])
    t1 = time.perf_counter()
    sample(root / "run", len(prompts) * per, root / "samples", prompts=[q for q in prompts for _ in range(per)],
           steps=p["sample_steps"], seed=seed, device=device, progress=progress)
    gen_s = (time.perf_counter() - t1) / len(prompts)
    model = load_model(root / "run", device)
    everything = prompts + data["reference"]
    cols: dict[str, np.ndarray] = {}
    cost: dict[str, float] = {}
    for method, k in METHOD_ROWS:
        steps = p["long_steps"] if k == "long" else 1
        r = score_prompts(model, everything, (method,), seeds=p["probe_seeds"], steps=steps,
                          sample_steps=p["sample_steps"], progress=progress, stage=f"{method} k={steps}")
        cols[f"{method}@{steps}"] = r.scores[method]
        cost[f"{method}@{steps}"] = r.seconds / len(everything)
    _write_scores(root / "probe_scores.csv", everything, data, cols)
    dup = [x.strip() for x in (root / "run" / "duplicated.txt").read_text().splitlines() if x.strip()]
    info = {"settings": settings, "step": tr.step, "train_seconds": round(train_s, 1), "device": device,
            "generate_seconds_per_prompt": round(gen_s, 4), "probe_seconds_per_prompt": cost, "duplicated": dup}
    write_json(marker, info)
    return info


def train_model(root: Path, p: dict[str, Any], seed: int, device: str, steps: int,
                progress: Optional[ProgressCallback] = None) -> Any:
    """Train (or continue) the experiment's caption model to ``steps`` in ``root / "run"``."""
    from ..models.train import train

    return train(root / "data" / "train", root / "run", cond="caption", dup_frac=p["dup_frac"],
                 dup_weight=p["dup_weight"], steps=steps, batch=p["batch"], seed=seed, device=device,
                 size=p["size"], channels=tuple(p["channels"]), sample_every=0,
                 checkpoint_every=max(100, steps // 10), progress=progress)


def _write_scores(path: Path, prompts: list[str], data: dict[str, Any], cols: dict[str, np.ndarray]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["prompt", "role"] + list(cols))
    roles = {**{q: "train" for q in data["train"]}, **{q: "test" for q in data["test"]},
             **{q: "reference" for q in data["reference"]}}
    for i, q in enumerate(prompts):
        w.writerow([q, roles[q]] + [f"{cols[c][i]:.6g}" for c in cols])
    write_text(path, buf.getvalue())


def _label(root: Path, data: dict[str, Any], seed: int, fpr: float, per_prompt: Optional[int],
           n_reference: Optional[int], progress: Optional[ProgressCallback]) -> dict[str, Any]:
    """Audit the generations; a training caption is memorized when one of its generations is flagged with
    its own training image as the match. ``test_copying``: the test captions with generations flagged as a copy
    of any training image, and how many (None when only training captions were audited)."""
    marker = root / "labels.json"
    want = {"fpr": fpr, "label_per_prompt": per_prompt, "label_reference": n_reference}
    old = read_cache(marker)
    if old is not None and all(old.get(k) == v for k, v in want.items()) and "test_copying" in old:
        return old
    import diffrep

    caption_of = {}
    for line in (root / "samples" / "prompts.jsonl").read_text().splitlines():
        rec = json.loads(line)
        caption_of[rec["file"]] = rec["caption"]
    queries, audited = root / "samples", len(caption_of)
    if per_prompt:
        seen: dict[str, int] = {}
        chosen = []
        for f, cap in sorted(caption_of.items()):
            if cap in data["train"] and seen.get(cap, 0) < per_prompt:
                seen[cap] = seen.get(cap, 0) + 1
                chosen.append(root / "samples" / f)
        queries, audited = _copies(chosen, root / "label_queries"), len(chosen)
    ref = root / "data" / "heldout"
    if n_reference:
        ref = _copies(sorted(ref.glob("*.png"))[:n_reference], root / "label_reference")
    t0 = time.perf_counter()
    diffrep.index(root / "data" / "train", root / "index", progress=progress)
    r = diffrep.audit(queries, root / "index", root / "audit", reference=ref, fpr=fpr,
                      captions=root / "samples" / "prompts.jsonl", seed=seed, progress=progress)
    audit_s = time.perf_counter() - t0
    hits, test_copying = flagged_captions(r, caption_of, data)
    labels = {**want, "memorized": sorted(hits), "copies": hits, "test_copying": None if per_prompt else test_copying,
              "audit_seconds": round(audit_s, 1),
              "audited_generations": audited, "audit_seconds_per_image": audit_s / max(1, audited),
              "audit_threshold": float(r.summary["calibration"]["threshold"])}
    write_json(marker, labels)
    return labels


def flagged_captions(result: Any, caption_of: dict[str, str], data: dict[str, Any]
                     ) -> tuple[dict[str, int], dict[str, int]]:
    """From an audit of the harness's generations (``caption_of``: generated file name -> caption): per training
    caption, its generations flagged as copies of its own picture; per test caption, its generations flagged as
    copies of any training picture."""
    own, test = data["train"], set(data["test"])
    hits: dict[str, int] = {}
    copying: dict[str, int] = {}
    for q, t, rep in zip(result.query_paths, result.top1_train_paths, result.is_replica):
        cap = caption_of.get(Path(q).name)
        if rep and cap in own and t and Path(t).name == own[cap]:
            hits[cap] = hits.get(cap, 0) + 1
        if rep and cap in test:
            copying[cap] = copying.get(cap, 0) + 1
    return hits, copying


def _copies(files: list[Path], folder: Path) -> Path:
    """A fresh folder holding copies of ``files`` (the audit reads folders)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)
    return folder


def _score(root: Path, data: dict[str, Any], gen: dict[str, Any], labels: dict[str, Any], p: dict[str, Any],
           fpr: float, seed: int) -> dict[str, Any]:
    """Score every probe column of ``probe_scores.csv`` against three labellings of the training captions:
    memorized (the audit flags one generation or more as a copy of the caption's own picture), memorized
    consistently (more than half of the audited generations), and duplicated (by construction); and the
    memorized captions against the test captions none of whose generations the audit flags as a copy of any
    training image (``clean_test``: a test caption whose generations copy a training picture is no clean
    negative)."""
    from .memorization_report import write_tables

    rows = list(csv.DictReader((root / "probe_scores.csv").open(encoding="utf-8")))
    memorized = set(labels["memorized"])
    n_gen = int(labels.get("label_per_prompt") or p["per_prompt"])
    copies = {q: int(labels.get("copies", {}).get(q, 0)) for q in data["train"]}
    consistent = consistently_memorized(copies, n_gen)
    sets = {"memorized": memorized, "consistent": consistent, "duplicated": _dup_captions(root, gen)}
    copying = labels.get("test_copying")
    clean = None if copying is None else [q for q in data["test"] if not copying.get(q)]
    brute = gen["generate_seconds_per_prompt"] + labels["audit_seconds_per_image"] * p["per_prompt"]
    results = [_method_row(col, {r["prompt"]: float(r[col]) for r in rows}, data, sets, copies, n_gen, fpr, seed,
                           clean)
               | {"seconds_per_prompt": gen["probe_seconds_per_prompt"][col]}
               for col in [c for c in rows[0] if c not in ("prompt", "role")]]
    for r in results:
        secs = r["seconds_per_prompt"]
        r["cheaper_than_brute_force"] = brute / secs if secs else None
    summary = {"preset": p, "seed": seed, "fpr": fpr, "training_captions": len(data["train"]),
               "duplicated": len(gen["duplicated"]), "memorized": len(memorized),
               "memorized_duplicated": len(memorized & sets["duplicated"]),
               "memorized_consistently": len(consistent), "generations_labelled": n_gen,
               "test_captions": len(data["test"]), "reference_captions": len(data["reference"]),
               "test_captions_copying": None if copying is None else len(data["test"]) - len(clean),
               "brute_force_seconds_per_prompt": brute, "generation": gen, "audit": labels, "methods": results}
    write_json(root / "summary.json", summary)
    write_tables(root, summary)
    return summary


def consistently_memorized(copies: dict[str, int], generations: int) -> set[str]:
    """The captions memorized consistently: more than half of their ``generations`` audited generations were
    flagged as copies of their own picture (``copies``: caption -> flagged generations, ``labels.json``)."""
    return {q for q, c in copies.items() if c > generations / 2}


def _method_row(col: str, val: dict[str, float], data: dict[str, Any], sets: dict[str, set[str]],
                copies: dict[str, int], n_gen: int, fpr: float, seed: int,
                clean: Optional[list[str]] = None) -> dict[str, Any]:
    """One probe column's metrics: against the audit's labels in full, against the consistent and the
    by-construction labels in brief (``DUP_KEYS``), the audit's labels against the ``clean`` test captions in
    brief (``clean_test``, when known), and the median score of the training captions by the number of their
    generations flagged as copies."""
    from ..matching.calibration import threshold_at_fpr
    from ..probes.roc import auc, detection_metrics
    from .memorization_report import DUP_KEYS

    memorized = sets["memorized"]
    pos = np.array([val[q] for q in data["train"] if q in memorized])
    neg = np.array([val[q] for q in data["test"]])
    rest = np.array([val[q] for q in data["train"] if q not in memorized])
    t, _ = threshold_at_fpr(np.array([val[q] for q in data["reference"]]), fpr)
    row = {"method": col, **detection_metrics(pos, neg, seed=seed)}
    for name in ("consistent", "duplicated"):
        m = detection_metrics(np.array([val[q] for q in data["train"] if q in sets[name]]), neg, seed=seed)
        row[name] = {k: m[k] for k in DUP_KEYS}
    if clean is not None:
        m = detection_metrics(pos, np.array([val[q] for q in clean]), seed=seed)
        row["clean_test"] = {k: m[k] for k in DUP_KEYS}
    row["by_copies"] = [{"copies": c, "captions": len(v), "median": float(np.median(v)) if v else None}
                        for c in range(n_gen + 1)
                        for v in [[val[q] for q in data["train"] if copies[q] == c]]]
    return row | {"auc_vs_unmemorized_training": auc(pos, rest), "threshold": t,
                  "tpr_at_threshold": float(np.mean(pos > t)) if len(pos) else float("nan"),
                  "test_flagged_at_threshold": float(np.mean(neg > t))}


def _dup_captions(root: Path, gen: dict[str, Any]) -> set[str]:
    dup = set(gen["duplicated"])
    caps = set()
    for line in (root / "run" / "training_set.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["id"] in dup:
            caps.add(rec["caption"])
    return caps
