"""``extract``: pull training images out of a model by generate-and-filter (Carlini et al., USENIX Security 2023).

For each prompt, ``per_prompt`` images are generated with different seeds. A model that has memorized the
prompt's image makes the same picture whatever the seed, so the prompt's generations form a *clique* of
mutually near-identical images. Near-identical means a tiled L2 distance below a threshold: each image is cut
into 4 x 4 tiles (``cliques.TILES``) and the distance of two images is the largest of their per-tile RMS
differences (Carlini et al.'s tiled L2, which a single differing region cannot hide in). The threshold is not
hard-coded: it is calibrated on the decision it makes, whether a prompt's generations hold a clique of
``min_clique``. Each prompt has a *clique radius*, the smallest threshold under which ``min_clique`` of its
generations are mutually near-identical; the edge threshold is the ``fpr`` quantile (split-conformal, as the
audit's) of the clique radii of the **reference prompts'** generations, prompts known not to be memorized, so
that a share of at most ``fpr`` of unmemorized prompts is expected to form a clique. Each clique of at least
``min_clique`` members is represented by its most central member, and the representatives are audited
against the training index with the calibrated audit: ``extracted.csv`` names, per prompt, the generated
image, the training image it reproduces, the clique size, the audit's verdict and p-value. At the edge, about
``fpr`` x (prompts generated for) cliques are expected from unmemorized prompts (``chance_cliques_expected`` in
``summary.json``): where few of many prompts are memorized, that share of the rows is not a copy, and the
audit's verdict (``is_copy``) is the column that says which rows are. Training prompts the model saw
without memorizing them can form cliques more readily than the unseen reference prompts; a warning says so
when more cliques fail the audit than the expected number explains (``excess_cliques_warning``).

A reference prompt can itself make a training image (a model that memorized a picture may produce it for
related prompts too): such a prompt forms a tight clique and would set the edge too strict. The
representative of each reference prompt's tightest clique is therefore audited as well; the prompts whose
representative the audit flags are named in ``summary.json`` (``reference_copies``) and, with
``drop_reference_copies`` (the default), left out of the edge's calibration (as ``diffrep audit
--drop-reference-copies`` does with reference images); kept, a warning names them.

``min_share`` sets a floor on the clique's size: a prompt's clique is listed only when it holds more than
``min_share`` x ``per_prompt`` generations (by default more than half; 0: no floor). A memorized prompt makes
its picture for most seeds, while the cliques of unmemorized prompts that pass the edge hold a few generations;
the edge itself stays calibrated on cliques of ``min_clique``, so the floor can only remove rows. The cliques it
removes are audited like the others and written to ``below_floor.csv`` (counted in ``summary.json``, with those
the audit verifies as copies), not dropped.

``prefilter`` scores every prompt with a model-side probe first and generates only for the prompts it points to
(``probes.prefilter``): ``"noise-norm"`` (the default) the prompts the first-step noise-norm probe flags at
``prefilter_fpr`` (by default ``fpr``) against the reference prompts, ``"one-step"`` the top ``keep`` share of
the one-step scores, None (or ``"none"``) every prompt.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..defaults import DEFAULTS
from ..errors import CalibrationError, DiffrepError, SourceError, check_settings
from ..fsutil import DirLock, ensure_writable_dir, write_bytes, write_json, write_text
from ..progress import ProgressCallback, emit
from .cliques import central, clique_edge, clique_radius, excess_cliques_warning, largest_clique, pair_distances
from .journal import Journal, close_all, digest, kept, model_stamp
from .prefilter import check_prefilter
from .prefilter import prefilter as run_prefilter

X = DEFAULTS["extract"]


@dataclass
class ExtractResult:
    out: Path
    prompts: int
    generated_for: int
    cliques: int
    extracted: int  # cliques whose representative the audit flags as a copy
    edge_threshold: float
    chance_cliques: float  # cliques expected from unmemorized prompts at the edge: fpr x prompts generated for
    seconds: float
    warnings: list[str] = field(default_factory=list)
    below_floor: int = 0  # cliques of at least min_clique that the min_share floor left out of extracted.csv
    prefilter_fpr: Optional[float] = None  # the rate the noise-norm prefilter flagged at; None without it


def extract(model_path: str | os.PathLike[str], prompts: str | os.PathLike[str] | Sequence[str],
            index: str | os.PathLike[str], out: str | os.PathLike[str], *,
            reference_prompts: str | os.PathLike[str] | Sequence[str],
            reference: str | os.PathLike[str] | None = None, per_prompt: int = X["per_prompt"],
            min_clique: int = X["min_clique"], min_share: float = X["min_share"], fpr: float = X["fpr"],
            prefilter: Optional[str] = X["prefilter"], prefilter_fpr: Optional[float] = X["prefilter_fpr"],
            keep: float = X["keep"], steps: int = X["sample_steps"], guidance: float = X["guidance"],
            seed: int = 0, device: str = X["device"], drop_reference_copies: bool = X["drop_reference_copies"],
            progress: Optional[ProgressCallback] = None) -> ExtractResult:
    """Generate-and-filter extraction (module docstring). ``reference`` is the audit's held-out image folder;
    ``drop_reference_copies`` leaves reference prompts that generate audit-verified copies out of the edge;
    ``prefilter_fpr`` is the noise-norm prefilter's rate (None: ``fpr``)."""
    from ..models.adapter import load_model
    from .prompts import load_prompts, reference_without_tested

    _check_cliques(per_prompt, min_clique, min_share)
    prefilter = check_prefilter(prefilter, keep)
    check_settings(fpr=fpr, sample_steps=steps, guidance=guidance)
    pre_fpr = fpr if prefilter_fpr is None else prefilter_fpr
    check_settings(fpr=pre_fpr)
    tested = load_prompts(prompts) if isinstance(prompts, (str, os.PathLike)) else list(prompts)
    ref = (load_prompts(reference_prompts, "--reference-prompts")
           if isinstance(reference_prompts, (str, os.PathLike)) else list(reference_prompts))
    if not ref:
        raise DiffrepError("extract needs --reference-prompts (prompts known not to be memorized): their "
                           "generations calibrate what counts as near-identical")
    ref, warnings = reference_without_tested(tested, ref)
    index, reference = _audit_inputs(index, reference)  # refused now, not after hours of generation
    model = load_model(model_path, device)
    model.require_prompts("extraction")
    out_dir = ensure_writable_dir(out)
    t0 = time.perf_counter()
    with DirLock(out_dir, "extract folder"):
        stamp = model_stamp(model_path)
        settings = dict(per_prompt=per_prompt, steps=steps, guidance=guidance, seed=seed)
        journals = [Journal(out_dir, "prefilter", digest(stamp, prefilter, steps, tested)),
                    Journal(out_dir, "prefilter-reference", digest(stamp, prefilter, steps, ref))]
        pre = (run_prefilter(model, tested, ref, prefilter, keep=keep, fpr=pre_fpr, sample_steps=steps,
                             out=out_dir, journals=(journals[0], journals[1]), progress=progress)
               if prefilter else None)
        chosen = pre.chosen if pre else list(tested)
        if pre:
            warnings += pre.warnings
        else:
            (out_dir / "prefilter.csv").unlink(missing_ok=True)  # an earlier run's, in the same folder
        gen = dict(settings, progress=progress)
        journals.append(Journal(out_dir, "reference", digest(stamp, settings, ref, min_clique)))
        cal = _calibrate_edge(model, ref, min_clique, fpr, gen, journals[-1], out_dir, (index, reference, seed),
                              drop_reference_copies)
        edge = cal["edge"]
        warnings += cal["warnings"]
        journals.append(Journal(out_dir, "generate", digest(stamp, settings, chosen, float(edge), min_clique)))
        rows, reps = _cliques(model, chosen, out_dir, edge, min_clique, gen, journals[-1])
        verdicts = _audit(out_dir / "cliques", out_dir / "audit", index, reference, seed, progress) if reps else {}
        for r in rows:
            r.update(verdicts.get(r["generated"], {}))
        listed, below = _list(out_dir, rows, min_share, per_prompt)
        seconds = time.perf_counter() - t0
        extracted = sum(1 for r in listed if r.get("is_copy"))
        chance = round(fpr * len(chosen), 2)
        excess = excess_cliques_warning(len(listed) - extracted, len(chosen), fpr, len(ref) - len(cal["dropped"]))
        warnings += [excess] if excess else []
        warnings += _floor_warning(below, min_share, per_prompt)
        pre_summary = _prefilter_summary(pre, keep, pre_fpr)
        write_json(out_dir / "summary.json", {
            "model": str(model_path), "prompts": len(tested), "generated_for": len(chosen), "per_prompt": per_prompt,
            **pre_summary,
            "edge_threshold_tiled_l2": edge,
            "edge_threshold_source": f"clique radii of the reference prompts' generations ({len(ref)} prompts) "
                                     f"at {fpr:g}" + (f", {len(cal['dropped'])} generating copies left out"
                                                      if cal["dropped"] else ""),
            "reference_copies": cal["copies"], "reference_copies_dropped": cal["dropped"],
            "min_clique": min_clique, "min_share": min_share, "cliques": len(listed),
            "below_floor": len(below), "below_floor_copies": sum(1 for r in below if r.get("is_copy")),
            "chance_cliques_expected": chance, "extracted": extracted, "seconds": round(seconds, 2),
            "seconds_per_prompt": round(seconds / max(1, len(chosen) + len(ref)), 4), "warnings": warnings})
        close_all(journals)
    return ExtractResult(out_dir, len(tested), len(chosen), len(listed), extracted, edge, chance, seconds, warnings,
                         len(below), pre_summary["prefilter_fpr"])


def _prefilter_summary(pre: Any, keep: float, pre_fpr: float) -> dict[str, Any]:
    method = pre.method if pre else None
    return {"prefilter": method, "keep": keep if method == "one-step" else None,
            "prefilter_fpr": pre_fpr if method == "noise-norm" else None,
            "prefilter_threshold": pre.threshold if pre else None, "prefilter_source": pre.source if pre else None}


def _generate(model: Any, prompt: str, per_prompt: int, steps: int, guidance: float, seed: int) -> np.ndarray:
    import torch

    from ..models.sample import generate

    gen = torch.Generator().manual_seed(int(seed))
    return generate(model, [prompt] * per_prompt, per_prompt, sampler="ddim", steps=steps, generator=gen,
                    guidance=guidance)


def _reference_cliques(model: Any, prompts: list[str], min_clique: int, gen: dict[str, Any],
                       journal: Journal) -> list[tuple[float, np.ndarray]]:
    """Per reference prompt, its clique radius and the most central image of its tightest clique (kept in
    ``journal`` as each prompt finishes)."""
    progress = gen["progress"]

    def one(prompt: str) -> dict[str, Any]:
        imgs = _generate(model, prompt, gen["per_prompt"], gen["steps"], gen["guidance"], gen["seed"])
        d = pair_distances(imgs)
        r = clique_radius(d, min_clique)
        return {"radius": np.float64(r), "rep": imgs[central(d, largest_clique(d <= r))]}

    out = []
    emit(progress, "reference", 0, len(prompts), unit="prompt")
    for i, p in enumerate(prompts):
        done = kept(journal, i, lambda: one(p))
        out.append((float(done["radius"]), np.asarray(done["rep"])))
        emit(progress, "reference", i + 1, len(prompts), unit="prompt")
    return out


def _calibrate_edge(model: Any, ref: list[str], min_clique: int, fpr: float, gen: dict[str, Any], journal: Journal,
                    out: Path, audit_with: tuple[Any, Any, int], drop: bool) -> dict[str, Any]:
    """The clique edge from the reference prompts' clique radii (the conformal rule on negated radii: a small
    radius is evidence), after auditing each reference prompt's tightest clique: ``edge``, ``warnings``,
    ``copies`` (the reference prompts whose clique the audit flags) and ``dropped`` (those left out)."""
    from ..models.sample import png_bytes

    cliques = _reference_cliques(model, ref, min_clique, gen, journal)
    radii = np.array([r for r, _ in cliques])
    folder = out / "reference_cliques"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for i, (_, rep) in enumerate(cliques):
        write_bytes(folder / f"{i:05d}.png", png_bytes(rep))
    notes = []
    try:
        verdicts = _audit(folder, out / "reference_audit", *audit_with, gen["progress"])
    except CalibrationError as exc:
        verdicts = {}
        notes.append(f"the reference prompts' cliques were not audited ({exc}), so reference prompts that generate "
                     "training images can be neither named nor left out of the edge")
    found = [verdicts.get(f"{i:05d}.png") or {} for i in range(len(ref))]
    copying = np.array([bool(v.get("is_copy")) for v in found])
    copies = [{"prompt": ref[i], "clique_radius": float(radii[i]), "training_image": found[i]["training_image"],
               "p_value": found[i]["p_value"], "generated": f"reference_cliques/{i:05d}.png"}
              for i in np.flatnonzero(copying)]
    edge, warnings = clique_edge(radii, copying, fpr, drop)
    dropped = [c["prompt"] for c in copies] if drop else []
    warnings = notes + warnings
    return {"edge": edge, "warnings": warnings, "copies": copies, "dropped": dropped}


def _cliques(model: Any, prompts: list[str], out: Path, edge: float, min_clique: int, gen: dict[str, Any],
             journal: Journal) -> tuple[list[dict[str, Any]], list[Path]]:
    """Each prompt's largest clique of near-identical generations, its representative written to
    ``cliques/``, which ends up holding them and nothing else; a resumed run takes the prompts ``journal``
    kept."""
    progress = gen["progress"]
    rows, reps = [], []
    (out / "cliques").mkdir(exist_ok=True)
    emit(progress, "generate", 0, len(prompts), unit="prompt")
    for i, p in enumerate(prompts):
        done = journal.load(i)
        row = None if done is None else json.loads(str(done["row"]))
        if done is None or (row and not (out / "cliques" / row["generated"]).is_file()):
            row = _clique(model, p, i, out, edge, min_clique, gen)
            journal.save(i, {"row": json.dumps(row)})
        if row:
            rows.append(row)
            reps.append(out / "cliques" / row["generated"])
        emit(progress, "generate", i + 1, len(prompts), unit="prompt")
    keep = {p.name for p in reps}
    for other in (out / "cliques").iterdir():  # an earlier run's representatives: the folder is audited whole
        if other.name not in keep:
            shutil.rmtree(other) if other.is_dir() else other.unlink()
    return rows, reps


def _clique(model: Any, prompt: str, i: int, out: Path, edge: float, min_clique: int,
            gen: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Generate for ``prompt``; its clique's row (representative written as ``cliques/<i>.png``) or None."""
    from ..models.sample import png_bytes

    imgs = _generate(model, prompt, gen["per_prompt"], gen["steps"], gen["guidance"], gen["seed"])
    d = pair_distances(imgs)
    members = largest_clique(d < edge)
    if len(members) < min_clique:
        return None
    sub = d[np.ix_(members, members)]
    rep = central(d, members)
    name = f"{i:05d}.png"
    write_bytes(out / "cliques" / name, png_bytes(imgs[rep]))
    return {"prompt": prompt, "generated": name, "clique_size": len(members),
            "clique_max_distance": float(sub.max())}


def _check_cliques(per_prompt: int, min_clique: int, min_share: float) -> None:
    if per_prompt < 2 or not 2 <= min_clique <= per_prompt:
        raise DiffrepError(f"--per-prompt {per_prompt} / --min-clique {min_clique}: cliques need 2 <= min-clique "
                           "<= per-prompt")
    if not 0 <= min_share < 1:
        raise DiffrepError(f"--min-share {min_share}: give a share of --per-prompt between 0 (no floor) and 1")


def _list(out: Path, rows: list[dict[str, Any]], min_share: float,
          per_prompt: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows whose clique holds more than ``min_share`` x ``per_prompt`` generations, written to
    ``extracted.csv``, and the others, written to ``below_floor.csv`` when there is a floor."""
    floor = min_share * per_prompt
    listed, below = [r for r in rows if r["clique_size"] > floor], [r for r in rows if r["clique_size"] <= floor]
    _write(out / "extracted.csv", listed)
    if min_share > 0:
        _write(out / "below_floor.csv", below)
    else:
        (out / "below_floor.csv").unlink(missing_ok=True)  # an earlier run's, in the same folder
    return listed, below


def _floor_warning(below: list[dict[str, Any]], min_share: float, per_prompt: int) -> list[str]:
    """A warning when the floor left out cliques the audit verifies as copies (a memorized prompt that makes its
    picture for few seeds)."""
    copies = [r["prompt"] for r in below if r.get("is_copy")]
    if not copies:
        return []
    return [f"{len(copies)} clique(s) of at most {int(min_share * per_prompt)} generations are audit-verified copies "
            f"but below the --min-share {min_share:g} floor (below_floor.csv): "
            + ", ".join(repr(p) for p in copies[:5]) + (" ..." if len(copies) > 5 else "")]


def _audit_inputs(index: Any, reference: Any) -> tuple[Any, Any]:
    """The training index opened (``LoadedIndex``) and the reference source checked, so that a missing or
    damaged one stops the run before any image is generated."""
    from ..indexing.load import LoadedIndex, open_index
    from ..sources import open_source

    if reference is not None:
        try:
            open_source(reference)
        except SourceError as exc:
            raise SourceError(f"--reference: {exc}") from None
    return (index if isinstance(index, LoadedIndex) else open_index(index)), reference


def _audit(folder: Path, out: Path, index: Any, reference: Any, seed: int,
           progress: Optional[ProgressCallback]) -> dict[str, dict[str, Any]]:
    """The audit of the clique representatives in ``folder`` against the training index (written to ``out``),
    by file name."""
    from ..auditing.run import audit

    r = audit(folder, index, out, reference=reference, seed=seed, progress=progress)
    res = {}
    for q, t, rep, pv in zip(r.query_paths, r.top1_train_paths, r.is_replica, r.p_values):
        res[Path(q).name] = {"training_image": t or "", "is_copy": bool(rep), "p_value": float(pv)}
    return res


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["prompt", "generated", "training_image", "clique_size", "clique_max_distance", "is_copy", "p_value"]
    w.writerow(cols)
    for r in rows:
        w.writerow([("cliques/" + r[c]) if c == "generated" else
                    (f"{r[c]:.4g}" if isinstance(r.get(c), float) else r.get(c, "")) for c in cols])
    write_text(path, buf.getvalue())
