"""A labelled replication scenario built from packaged data, and its scoring.

``build_scenario`` splits a packaged dataset by *group* (``groups.csv``: an emoji and all its skin-tone
variants, an openclipart or GCompris family; ``diffrep.datasets``) into a training set, held-out reference
images and an unseen pool, then writes "generations": edited
copies of training images plus unseen images, with the ground truth in ``truth.csv``.
``evaluate`` scores an audit's ``matches.csv`` against that truth.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from .. import datasets as data
from .bench.edits import EDIT_KINDS, apply_edit, prepare
from ..errors import DiffrepError, SourceError
from ..fsutil import ensure_writable_dir, write_json, write_text
from ..progress import ProgressCallback, emit

SCENARIO_FORMAT = 1
#: the packaged datasets with families (groups.csv) a scenario can split, and the package each comes from
GROUPED = {"emoji": data.EMOJI_PACKAGE, "openclipart": "openclipart-png", "gcompris-photos": "gcompris-qt-data",
           "gcompris-drawings": "gcompris-qt-data", "tuxpaint-stamps": "tuxpaint-stamps-default"}
MAX_PER_GROUP = 6  # at most this many images of one group (e.g. 104 "holding hands" variants) per pool
TRUTH_COLUMNS = ("generation", "is_copy", "source", "edit", "params")


@dataclass(frozen=True)
class Scenario:
    """Paths of a built scenario."""

    train_dir: Path
    reference_dir: Path
    generations_dir: Path
    truth_csv: Path
    root: Path


def _scenario_paths(root: Path) -> Scenario:
    return Scenario(root / "train", root / "reference", root / "generations", root / "truth.csv", root)


def _split_groups(groups: dict[str, list[str]], sizes: list[int],
                  rng: np.random.Generator) -> list[list[str]]:
    """Fill pools of the given sizes from groups in a seeded order; pools never share a group.

    A pool takes at most MAX_PER_GROUP members of a group (a seeded choice) and the last group it
    takes may be cut short; members not taken are left unused, never put in another pool.
    """
    names = sorted(groups)
    order = [names[i] for i in rng.permutation(len(names))]
    pools: list[list[str]] = []
    pos = 0
    for size in sizes:
        pool: list[str] = []
        while len(pool) < size:
            if pos >= len(order):
                raise DiffrepError(
                    f"the dataset has too few groups for pools of {sizes} images; "
                    "ask for fewer training, reference, copy or unseen images")
            members = groups[order[pos]]
            if len(members) > MAX_PER_GROUP:
                keep = rng.choice(len(members), size=MAX_PER_GROUP, replace=False)
                members = [members[i] for i in sorted(keep)]
            pool.extend(members[: size - len(pool)])
            pos += 1
        pools.append(pool)
    return pools


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_captions(path: Path, files: list[str], captions: dict[str, str]) -> None:
    lines = [json.dumps({"file": f, "caption": captions.get(f, "")}, ensure_ascii=False) for f in files]
    write_text(path, "".join(line + "\n" for line in lines))


def flat_name(rel: str) -> str:
    """A dataset file's name in a scenario folder: sub-folders joined with "__" (openclipart's
    "animals/cat.png" -> "animals__cat.png"; emoji names have none)."""
    return rel.replace("/", "__")


def _copy_originals(src_dir: Path, dst: Path, files: list[str], captions: dict[str, str]) -> None:
    dst.mkdir(parents=True)
    for f in sorted(files):
        shutil.copyfile(src_dir / f, dst / flat_name(f))
    flat = sorted(flat_name(f) for f in files)
    _write_captions(dst / "captions.jsonl", flat, {flat_name(f): c for f, c in captions.items()})


def build_scenario(out_dir: str | os.PathLike[str], *, dataset: str = "emoji", seed: int = 0,
                   n_train: int = 1200, n_reference: int = 300, n_copies: int = 200,
                   n_unseen: int = 200, progress: Optional[ProgressCallback] = None) -> Scenario:
    """Write (or reuse) a labelled scenario in ``out_dir``; same seed => byte-identical files."""
    params = _params(dataset, seed, n_train=n_train, n_reference=n_reference, n_copies=n_copies, n_unseen=n_unseen)
    root = ensure_writable_dir(out_dir, "scenario directory")
    sc = _scenario_paths(root)
    marker = root / "scenario.json"
    if _is_complete(marker, params, sc):
        return sc
    if marker.exists():
        marker.unlink()
    for d in (sc.train_dir, sc.reference_dir, sc.generations_dir):
        if d.exists():
            shutil.rmtree(d)
    if sc.truth_csv.exists():
        sc.truth_csv.unlink()

    ds = data.get_dataset(dataset, progress)
    images = ds / "images"
    captions = data.read_captions(ds)
    groups: dict[str, list[str]] = {}
    for f, (g, _cat) in data.read_groups(ds).items():
        if (images / f).is_file():
            groups.setdefault(g, []).append(f)
    for members in groups.values():
        members.sort()

    rng = np.random.default_rng(seed)
    train, reference, unseen = _split_groups(groups, [n_train, n_reference, n_unseen], rng)
    unseen = [unseen[i] for i in rng.permutation(len(unseen))]
    _copy_originals(images, sc.train_dir, train, captions)
    _copy_originals(images, sc.reference_dir, reference, captions)
    total = n_train + n_reference + n_copies + n_unseen
    emit(progress, "scenario", n_train + n_reference, total)
    rows, unseen_sources = _write_generations(sc, images, captions, sorted(train), unseen, n_copies, rng,
                                              lambda done: emit(progress, "scenario", done, total),
                                              n_train + n_reference)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    writer.writerows(rows)
    write_text(sc.truth_csv, buf.getvalue())
    write_json(marker, {"params": params, "train": len(train), "reference": len(reference),
                        "generations": len(rows), "unseen_sources": unseen_sources})
    emit(progress, "scenario", total, total)
    return sc


def _params(dataset: str, seed: int, **counts: Any) -> dict[str, Any]:
    """The scenario's parameters (``scenario.json``: a rerun with the same ones reuses the files); checked."""
    if dataset not in GROUPED:
        raise DiffrepError(f"build_scenario needs a dataset with families: one of {', '.join(GROUPED)} "
                           f"(got {dataset!r})")
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DiffrepError(f"{key} must be a non-negative integer (got {value!r})")
        counts[key] = int(value)
    if counts["n_copies"] > 0 and counts["n_train"] == 0:
        raise DiffrepError("n_copies > 0 needs at least one training image (n_train >= 1)")
    return {"format": SCENARIO_FORMAT, "dataset": dataset, "dataset_format": data.DATASET_FORMATS[dataset],
            "package": GROUPED[dataset], "max_per_group": MAX_PER_GROUP, "seed": int(seed), **counts}


def _write_generations(sc: Scenario, images: Path, captions: dict[str, str], train_sorted: list[str],
                       unseen: list[str], n_copies: int, rng: np.random.Generator,
                       progress: Callable[[int], None], done: int) -> tuple[list[list[str]], dict[str, str]]:
    """The generations: ``n_copies`` edited copies of training images drawn by ``rng`` (the edit kinds in
    turn), then the unseen images; their captions file; ``progress(images done)`` every 25 images counted from
    ``done``. Returns the truth rows and unseen name -> source."""
    n_train = len(train_sorted)
    picks = rng.choice(n_train, size=n_copies, replace=n_copies > n_train) if n_copies else []
    sc.generations_dir.mkdir(parents=True)
    rows: list[list[str]] = []
    gen_files: list[str] = []
    gen_caps: dict[str, str] = {}
    unseen_sources: dict[str, str] = {}
    for i, pick in enumerate(picks):
        source = train_sorted[int(pick)]
        kind = EDIT_KINDS[i % len(EDIT_KINDS)]
        with Image.open(images / source) as src:
            edited, edit_params = apply_edit(src, kind, rng)
        name = f"copy_{i:04d}.png"
        (sc.generations_dir / name).write_bytes(_png_bytes(edited))
        rows.append([name, "1", flat_name(source), kind, json.dumps(edit_params, sort_keys=True)])
        gen_files.append(name)
        gen_caps[name] = captions.get(source, "")
        done += 1
        if done % 25 == 0:
            progress(done)
    for i, source in enumerate(unseen):
        with Image.open(images / source) as src:
            img = prepare(src)
        name = f"unseen_{i:04d}.png"
        (sc.generations_dir / name).write_bytes(_png_bytes(img))
        rows.append([name, "0", "", "", "{}"])
        unseen_sources[name] = source
        gen_files.append(name)
        gen_caps[name] = captions.get(source, "")
        done += 1
        if done % 25 == 0:
            progress(done)
    _write_captions(sc.generations_dir / "captions.jsonl", gen_files, gen_caps)
    return rows, unseen_sources


def _is_complete(marker: Path, params: dict[str, Any], sc: Scenario) -> bool:
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(saved, dict) and saved.get("params") == params and sc.truth_csv.is_file()
            and sc.train_dir.is_dir() and sc.reference_dir.is_dir() and sc.generations_dir.is_dir())


# ------------------------------------------------------------------------------------ evaluation
def _read_csv(path: str | os.PathLike[str], required: tuple[str, ...], what: str) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise SourceError(f"{what} {path} lacks column(s) {', '.join(missing)}; "
                                  f"expected {', '.join(required)}")
            return list(reader)
    except FileNotFoundError:
        raise SourceError(f"{what} {path} does not exist; check the path") from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "y", "t")


def _score(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def pixel_twins(train_dir: str | os.PathLike[str]) -> dict[str, str]:
    """{file name: hash of its decoded pixels} for the images in ``train_dir`` (top level), so that
    :func:`evaluate` can tell when the true source has a pixel-identical twin in the training set."""
    from ..dedup.run import pixel_hash
    from ..decode import DEFAULT_MAX_PIXELS

    out = {}
    for f in sorted(Path(train_dir).iterdir()):
        if f.is_file():
            h = pixel_hash(str(f), DEFAULT_MAX_PIXELS)
            if h is not None:
                out[f.name] = h
    return out


def evaluate(truth_csv: str | os.PathLike[str], matches_csv: str | os.PathLike[str],
             groups: dict[str, str] | None = None, twins: dict[str, str] | None = None) -> dict[str, Any]:
    """Score an audit's matches.csv (rank-1 rows) against a scenario's truth.csv.

    ``recall`` needs the source at rank 1: the source file, or with ``twins`` ({file: pixel hash},
    :func:`pixel_twins`) a training file with exactly the same pixels (the emoji set draws some skin-tone
    variants identically, e.g. the snowboarder, whose face is hidden: no method can tell which of them a
    copy came from, so the truth is ambiguous there); ``recall_exact_file`` counts the file name only and
    ``twin_hits`` the copies credited through a twin. With ``groups`` ({file: group}),
    ``recall_same_group`` also accepts a training image of the source's group (its skin-tone / recolour
    variants, which are near-identical to it and may sit in the training set beside it)."""
    truth = _read_csv(truth_csv, TRUTH_COLUMNS, "truth file")
    matches = _read_csv(matches_csv, ("query_path", "rank", "train_path", "score", "is_replica"),
                        "matches file")
    top1: dict[str, dict[str, str]] = {}
    for row in matches:
        try:
            rank = int(float(row["rank"]))
        except (TypeError, ValueError):
            continue
        key = os.path.basename((row["query_path"] or "").rstrip("/\\"))
        if rank == 1 and key not in top1:
            top1[key] = row

    per_edit: dict[str, dict[str, Any]] = {}
    misses: list[dict[str, Any]] = []
    false_alarms: list[dict[str, Any]] = []
    copies = found = exact_file = any_source = same_group = unseen = n_false = 0
    for row in truth:
        gen = os.path.basename(row["generation"])
        hit = top1.get(gen)
        flagged = hit is not None and _truthy(hit.get("is_replica"))
        top_file = os.path.basename((hit or {}).get("train_path") or "")
        score = _score((hit or {}).get("score"))
        if _truthy(row["is_copy"]):
            copies += 1
            edit = row["edit"] or ""
            stats = per_edit.setdefault(edit, {"n": 0, "found": 0, "recall": None})
            stats["n"] += 1
            exact = top_file == row["source"]
            h = (twins or {}).get(top_file)
            twin = not exact and h is not None and h == (twins or {}).get(row["source"])
            ok = flagged and (exact or twin)
            exact_file += int(flagged and exact)
            if ok:
                found += 1
                stats["found"] += 1
            else:
                misses.append({"generation": gen, "source": row["source"], "edit": edit,
                               "top1": top_file, "score": score})
            any_source += int(flagged)
            if groups is not None and flagged and top_file in groups and \
                    groups.get(top_file) == groups.get(row["source"]):
                same_group += 1
        else:
            unseen += 1
            if flagged:
                n_false += 1
                false_alarms.append({"generation": gen, "top1": top_file, "score": score})
    for stats in per_edit.values():
        stats["recall"] = _ratio(stats["found"], stats["n"])
    return {
        "copies": copies, "copies_found": found, "recall": _ratio(found, copies),
        "recall_exact_file": _ratio(exact_file, copies), "twin_hits": found - exact_file,
        "recall_any_source": _ratio(any_source, copies),
        "recall_same_group": _ratio(same_group, copies) if groups is not None else None,
        "unseen": unseen, "false_alarms": n_false, "fpr": _ratio(n_false, unseen),
        "per_edit": per_edit, "misses": misses, "false_alarm_list": false_alarms,
    }


__all__ = ["Scenario", "build_scenario", "evaluate", "pixel_twins"]
