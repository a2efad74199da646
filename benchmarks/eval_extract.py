"""`diffrep extract` on a finished `diffrep experiment memorization` folder, scored against its audit labels.

Runs generate-and-filter extraction on the folder's model for its training captions (the reference captions
calibrate the clique edge, the held-out pictures the audit), then compares `extracted.csv` with `labels.json`:
precision (rows the audit verifies as copies of the training picture they name, and of their own caption's
picture) and recall over the captions the harness judged memorized, by any copy and consistently.

`--more-reference N` adds N reference captions from the packaged emoji the folder's split left unused (the first
caption of each near-duplicate group no part of the split touches, in a seeded order), so that a small `--fpr`
can be resolved (the edge at 0.001 needs about 1,000 reference prompts).

Usage:  python benchmarks/eval_extract.py MEM_FOLDER EX_FOLDER [--per-prompt 16] [--steps 25]
        [--[no-]drop-reference-copies] [--min-clique K] [--min-share S] [--fpr F] [--more-reference N]
        [--prefilter noise-norm|one-step|none] [--prefilter-fpr F] [--json F]
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from diffrep.defaults import DEFAULTS
from diffrep.eval.memorization import consistently_memorized
from diffrep.probes.extract import extract


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a finished `diffrep experiment memorization --out` folder")
    ap.add_argument("out", help="where the extract run writes")
    ap.add_argument("--per-prompt", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps (the smoke preset samples with 25)")
    ap.add_argument("--drop-reference-copies", action=argparse.BooleanOptionalAction,
                    default=DEFAULTS["extract"]["drop_reference_copies"],
                    help="leave reference captions whose tightest clique the audit flags out of the edge (default "
                         "%(default)s, extract's)")
    ap.add_argument("--min-clique", type=int, default=DEFAULTS["extract"]["min_clique"],
                    help="near-identical generations a clique needs (default %(default)s, extract's)")
    ap.add_argument("--min-share", type=float, default=DEFAULTS["extract"]["min_share"],
                    help="list a clique only above this share of --per-prompt (default %(default)s, extract's)")
    ap.add_argument("--fpr", type=float, default=DEFAULTS["extract"]["fpr"],
                    help="the clique edge's false-positive rate (default %(default)s, extract's)")
    ap.add_argument("--more-reference", type=int, default=0, metavar="N",
                    help="add N unused emoji captions (one per unused near-duplicate group) to the reference")
    ap.add_argument("--prefilter", default=DEFAULTS["extract"]["prefilter"], choices=("noise-norm", "one-step", "none"),
                    help="extract's --prefilter (default %(default)s, extract's; none: generate for every caption)")
    ap.add_argument("--prefilter-fpr", type=float, default=DEFAULTS["extract"]["prefilter_fpr"],
                    help="extract's --prefilter-fpr (default: --fpr)")
    ap.add_argument("--json", default=None, help="also write the result here")
    a = ap.parse_args()
    root, out = Path(a.folder), Path(a.out)
    data = json.loads((root / "data" / "split.json").read_text())
    labels = json.loads((root / "labels.json").read_text())
    summary = json.loads((root / "summary.json").read_text())
    reference = list(data["reference"]) + unused_captions(data, a.more_reference)
    t0 = time.perf_counter()
    r = extract(root / "run", list(data["train"]), root / "index", out, reference_prompts=reference,
                reference=root / "data" / "heldout", per_prompt=a.per_prompt, steps=a.steps,
                seed=data["settings"]["seed"], drop_reference_copies=a.drop_reference_copies, min_clique=a.min_clique,
                min_share=a.min_share, fpr=a.fpr, prefilter=a.prefilter, prefilter_fpr=a.prefilter_fpr)
    seconds = time.perf_counter() - t0
    rows = list(csv.DictReader((out / "extracted.csv").open(encoding="utf-8")))
    ex = json.loads((out / "summary.json").read_text())
    copies = [x for x in rows if x["is_copy"] in ("1", "True", "true")]
    own = [x for x in copies if Path(x["training_image"]).name == data["train"][x["prompt"]]]
    found = {x["prompt"] for x in copies}
    n_gen = summary.get("generations_labelled") or summary["preset"]["per_prompt"]
    memorized = set(labels["memorized"])
    consistent = consistently_memorized(labels["copies"], n_gen)
    res = {"rows": len(rows), "audit_verified": len(copies), "verified_own_picture": len(own),
           "precision": len(copies) / len(rows) if rows else None,
           "memorized": len(memorized), "memorized_extracted": len(found & memorized),
           "recall": len(found & memorized) / len(memorized) if memorized else None,
           "consistent": len(consistent), "consistent_extracted": len(found & consistent),
           "extracted_not_memorized": sorted(found - memorized), "edge": r.edge_threshold,
           "reference_copies": len(ex["reference_copies"]),
           "reference_copies_dropped": len(ex["reference_copies_dropped"]),
           "seconds": round(seconds, 1), "generated_for": r.generated_for, "per_prompt": a.per_prompt,
           "steps": a.steps, "min_clique": ex["min_clique"],
           "min_share": ex["min_share"], "below_floor": ex["below_floor"],
           "below_floor_copies": ex["below_floor_copies"], "fpr": a.fpr, "reference_prompts": len(reference),
           "chance_cliques_expected": ex["chance_cliques_expected"], "prefilter": a.prefilter,
           "prefilter_threshold": ex.get("prefilter_threshold"),
           "prefilter_fpr": ex.get("prefilter_fpr"),
           "memorized_generated_for": len(memorized & set(_generated_for(out, data, a.prefilter)))}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


def _generated_for(out: Path, data: dict, prefilter: str) -> list[str]:
    """The captions the run generated for: all training captions, or those its prefilter kept."""
    if prefilter == "none":
        return list(data["train"])
    return [r["prompt"] for r in csv.DictReader((out / "prefilter.csv").open(encoding="utf-8")) if r["generated"] == "1"]


def unused_captions(data: dict, n: int) -> list[str]:
    """``n`` captions of the packaged emoji outside every near-duplicate group the split used, one per group, in
    an order seeded by the split's seed."""
    import numpy as np

    from diffrep.datasets import get_dataset, read_captions, read_groups

    if n <= 0:
        return []
    src = get_dataset("emoji")
    group, captions = read_groups(src), read_captions(src)
    files = list(captions)
    first: dict[str, str] = {}  # the file the split keeps for a caption (its first occurrence)
    for f in files:
        first.setdefault(captions[f].strip().lower(), f)
    used = set(data["train"].values()) | {Path(first[c.strip().lower()]).name for c in data["reference"] + data["test"]}
    used_groups = {group[f][0] for f in files if Path(f).name in used}
    firsts: dict[str, str] = {}
    for i in np.random.default_rng([data["settings"]["seed"], 25]).permutation(len(files)):
        g = group[files[i]][0]
        if g not in used_groups:
            firsts.setdefault(g, captions[files[i]])
    if len(firsts) < n:
        raise SystemExit(f"--more-reference {n}: the emoji hold {len(firsts)} unused groups")
    return list(firsts.values())[:n]


if __name__ == "__main__":
    main()
