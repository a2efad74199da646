"""`diffrep extract` on a finished `diffrep experiment memorization` folder, scored against its audit labels.

Runs generate-and-filter extraction on the folder's model for its training captions (the reference captions
calibrate the clique edge, the held-out pictures the audit), then compares `extracted.csv` with `labels.json`:
precision (rows the audit verifies as copies of the training picture they name, and of their own caption's
picture) and recall over the captions the harness judged memorized, by any copy and consistently.

Usage:  python benchmarks/eval_extract.py MEM_FOLDER EX_FOLDER [--per-prompt 16] [--steps 25]
        [--drop-reference-copies] [--min-clique K] [--json F]
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
    ap.add_argument("--drop-reference-copies", action="store_true",
                    help="leave reference captions whose tightest clique the audit flags out of the edge")
    ap.add_argument("--min-clique", type=int, default=DEFAULTS["extract"]["min_clique"],
                    help="near-identical generations a clique needs (default %(default)s, extract's)")
    ap.add_argument("--json", default=None, help="also write the result here")
    a = ap.parse_args()
    root, out = Path(a.folder), Path(a.out)
    data = json.loads((root / "data" / "split.json").read_text())
    labels = json.loads((root / "labels.json").read_text())
    summary = json.loads((root / "summary.json").read_text())
    t0 = time.perf_counter()
    r = extract(root / "run", list(data["train"]), root / "index", out, reference_prompts=data["reference"],
                reference=root / "data" / "heldout", per_prompt=a.per_prompt, steps=a.steps,
                seed=data["settings"]["seed"], drop_reference_copies=a.drop_reference_copies, min_clique=a.min_clique)
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
           "steps": a.steps, "min_clique": ex["min_clique"]}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
