"""Cross-kind evaluation: the audit at default settings on kinds of data no diffrep rule was chosen on.

Three kinds, from the Debian package gcompris-qt-data (``diffrep data get gcompris-drawings`` /
``gcompris-photos``), each split by family (``diffrep.eval.scenario.build_scenario``):

- ``drawings``: cartoon drawings on white. Generations: edited whole-image copies of training drawings,
  training drawings' objects pasted (Segmix, 40-75% of the canvas) onto held-out drawings, held-out drawings.
  Reference: held-out drawings.
- ``photos``: photographs (objects, animals, monuments; most are real scenes). Generations: edited copies of
  training photographs and held-out photographs. Reference: held-out photographs.
- ``pasted``: training drawings' objects pasted onto photographs (the busy, textured backgrounds of issue 28),
  edited whole-image copies of training drawings, held-out drawings pasted onto photographs and held-out
  drawings as they are. Reference: held-out drawings, half as they are (on white), half pasted onto photographs.

Every reference set holds at most 100 images. For each kind it prints the share of whole-image copies and of
pasted objects found with their source at rank 1 and the share of unseen images flagged, at ``--fpr``.

Seeds: 1-3 are for development (looking at them is allowed, and what is learnt from them is said in
docs/results/); seeds 101-110 are kept unseen until a rule is final and are then run once.

Usage:  python benchmarks/eval_kinds.py --kinds drawings photos pasted --seeds 1 [--work DIR] [--no-partial]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffrep import datasets as data
from diffrep.auditing.run import audit
from diffrep.eval.bench.generate import make_query
from diffrep.eval.scenario import build_scenario, evaluate, flat_name, pixel_twins
from diffrep.indexing.build import index
from eval_partial import _source

IMAGE_GLOB = ("*.png", "*.webp", "*.jpg")
# (objects' dataset, background dataset or None, scenario counts, pastes, unseen pastes, reference pastes)
KINDS = {
    "drawings": ("gcompris-drawings", "self", dict(n_train=40, n_reference=36, n_copies=30, n_unseen=40), 30, 10, 0),
    "photos": ("gcompris-photos", None, dict(n_train=100, n_reference=60, n_copies=50, n_unseen=60), 0, 0, 0),
    "pasted": ("gcompris-drawings", "gcompris-photos", dict(n_train=40, n_reference=36, n_copies=30, n_unseen=40),
               40, 30, 36),
}


def _images(folder: Path) -> list[Path]:
    return sorted(p for g in IMAGE_GLOB for p in folder.glob(g))


def _paste(objects: list[Path], backgrounds: list[Path], n: int, rng: np.random.Generator, out: Path,
           prefix: str) -> list[tuple[str, str]]:
    """``n`` Segmix images: an object of ``objects`` pasted onto a picture of ``backgrounds``."""
    made = []
    for i in range(n):
        obj = objects[int(rng.integers(len(objects)))]
        with Image.open(backgrounds[int(rng.integers(len(backgrounds)))]) as b:
            fill = b.convert("RGBA")
        q = make_query("segmix", _source(obj), fill, np.random.default_rng([int(rng.integers(2**31)), i]))
        name = f"{prefix}_{i:04d}.png"
        q.image.convert("RGB").save(out / name)
        made.append((name, obj.name))
    return made


def build(kind: str, work: Path, seed: int) -> tuple[object, Path]:
    """The scenario of ``kind`` and seed in ``work``: scenario folders plus pastes, and ``truth.csv``."""
    dataset, backgrounds, counts, n_paste, n_unseen_paste, n_ref_paste = KINDS[kind]
    sc = build_scenario(work / "scenario", dataset=dataset, seed=seed, **counts)
    truth = work / "truth.csv"
    marker = work / "kind.json"
    params = {"kind": kind, "seed": seed, "format": 1}
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return sc, truth
    rng = np.random.default_rng(2000 + seed)
    ds = data.get_dataset(dataset) / "images"
    meta = json.loads((sc.root / "scenario.json").read_text())
    unseen = [ds / f for f in sorted(meta["unseen_sources"].values())]
    refs = _images(sc.reference_dir)
    if backgrounds == "self":
        bg = unseen
    elif backgrounds:
        bg = sorted(p for p in (data.get_dataset(backgrounds) / "images").rglob("*") if p.is_file())
    rows = list(csv.reader(open(sc.truth_csv, encoding="utf-8")))
    if n_paste:
        for name, src in _paste(_images(sc.train_dir), bg, n_paste, rng, sc.generations_dir, "segmix"):
            rows.append([name, "1", src, "segmix", "{}"])
    if n_unseen_paste:
        for name, _ in _paste(unseen, bg, n_unseen_paste, rng, sc.generations_dir, "unseenpaste"):
            rows.append([name, "0", "", "", "{}"])
    if n_ref_paste:  # half the reference images pasted onto photographs, the others left on white
        half = refs[::2]
        _paste(half, bg, len(half), rng, sc.reference_dir, "refpaste")
        for p in half:
            p.unlink()
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    truth.write_text(buf.getvalue())
    marker.write_text(json.dumps(params))
    return sc, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=list(KINDS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--work", default="/tmp/diffrep-kinds-eval")
    ap.add_argument("--no-partial", dest="partial", action="store_false")
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--out", default=None, help="append one JSON line per (kind, seed) to this file")
    args = ap.parse_args()
    for kind in args.kinds:
        groups = {flat_name(f): g for f, (g, _c) in data.read_groups(data.get_dataset(KINDS[kind][0])).items()}
        for seed in args.seeds:
            work = Path(args.work) / f"{kind}-seed{seed}"
            sc, truth = build(kind, work, seed)
            index(sc.train_dir, work / "index")
            t0 = time.perf_counter()
            out = work / ("audit-partial" if args.partial else "audit")
            res = audit(sc.generations_dir, work / "index", out, reference=sc.reference_dir, fpr=args.fpr,
                        partial=args.partial)
            ev = evaluate(truth, out / "matches.csv", groups, pixel_twins(sc.train_dir))
            seg = ev["per_edit"].get("segmix", {"n": 0, "found": 0})
            whole_n = sum(v["n"] for k, v in ev["per_edit"].items() if k != "segmix")
            whole_f = sum(v["found"] for k, v in ev["per_edit"].items() if k != "segmix")
            row = {"kind": kind, "seed": seed, "partial": args.partial, "fpr": args.fpr,
                   "whole": [whole_f, whole_n], "pasted": [seg["found"], seg["n"]],
                   "unseen_flagged": [ev["false_alarms"], ev["unseen"]],
                   "reference": res.summary["calibration"]["null_size"],
                   "achieved_fpr": res.summary["calibration"].get("achieved_fpr"),
                   "seconds": round(time.perf_counter() - t0, 1),
                   "false_alarms": ev["false_alarm_list"], "misses": ev["misses"]}
            print(f"{kind} seed {seed}: whole-image {whole_f}/{whole_n}, pasted {seg['found']}/{seg['n']}, unseen "
                  f"flagged {ev['false_alarms']}/{ev['unseen']} ({100 * ev['fpr']:.1f}%), {row['reference']} "
                  f"reference images, {row['seconds']} s", flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
