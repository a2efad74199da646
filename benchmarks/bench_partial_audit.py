"""Cost of ``diffrep audit --partial`` per image, end to end, on 256 px generations against a few hundred
training images.

The scenario: 300 training emoji (``diffrep data get emoji``), 30 held-out reference emoji, and 30 generations
(10 edited whole-image copies, 10 training emoji pasted onto held-out emoji at 40-75% of a 256 px canvas, 10
held-out emoji), built by ``eval_kinds.build`` with seed 1. The audit runs with the default settings and
``--pool-null never`` where the code has it (so that every run scores the same images), once, after the
index and the local-feature index are built. Reported from ``summary.json``: seconds per scored image (the
generations plus the reference images) for the window search, the local-feature voting and the object
matching, and the audit's total wall time per scored image. Then, outside the audit and on one thread, the
object matcher alone: each generation against 20 training images drawn with a fixed seed plus its own source
where it has one (milliseconds per pair; the scores go to ``pairs-<code>.npy`` in the work folder, so two
versions' scores can be compared).

To compare with an earlier commit, run the same script with that commit's package first on the path:
    git worktree add /tmp/base REV && PYTHONPATH=/tmp/base/src python benchmarks/bench_partial_audit.py
    python benchmarks/bench_partial_audit.py

Usage:  python benchmarks/bench_partial_audit.py [--work DIR]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
from pathlib import Path

import eval_kinds
from diffrep.auditing.run import audit
from diffrep.indexing.build import index
from diffrep.indexing.load import open_index
from diffrep.indexing.local import LocalConfig, open_local

KIND = dict(dataset="emoji", backgrounds="self", counts=dict(n_train=300, n_reference=30, n_copies=10, n_unseen=10),
            pastes=10, unseen_pastes=0, reference_composites=0, paste_half_reference=False, reference_backgrounds=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/diffrep-bench-partial-audit")
    a = ap.parse_args()
    eval_kinds.KINDS["bench"] = KIND
    work = Path(a.work)
    sc, _ = eval_kinds.build("bench", work, 1)
    import diffrep
    tag = Path(inspect.getfile(diffrep)).resolve().parent.parent.parent.name
    idx = work / f"index-{tag}"
    index(sc.train_dir, idx)
    out = work / f"audit-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    kw = {"pool_null": "never"} if "pool_null" in inspect.signature(audit).parameters else {}
    open_local(open_index(idx), LocalConfig())  # the local-feature index, built once per index
    res = audit(sc.generations_dir, idx, out, reference=sc.reference_dir, partial=True, **kw)
    s = res.summary
    p = s["partial"]
    scored = s["queries"] + s["calibration"]["null_size"]
    row = {"code": tag, "cores": os.cpu_count(), "generations": s["queries"], "reference": s["calibration"]["null_size"],
           "training": s["index"]["images"], "windows_s": p["seconds_per_image"],
           "local_s": (p.get("local_features") or {}).get("seconds_per_image"),
           "objects_s": p["object_seconds_per_image"], "total_s_per_image": round(s["timings_s"]["total"] / scored, 3)}
    print(json.dumps(row))
    print(json.dumps({"code": tag, **pair_cost(sc, work / f"pairs-{tag}.npy")}))


def pair_cost(sc, out: Path) -> dict:
    """Milliseconds per (generation, candidate) pair of the object matcher on one thread."""
    import csv
    import random
    import time

    import cv2
    import numpy as np
    from diffrep.auditing.objects import ObjectMatcher, object_template
    from diffrep.decode import decode_image

    cv2.setNumThreads(1)
    train = sorted(Path(sc.train_dir).glob("*.png"))
    drawn = [object_template(p.read_bytes()) for p in random.Random(0).sample(train, 20)]
    with open(Path(sc.generations_dir).parent / "truth.csv", newline="") as f:
        source = {r["generation"]: r["source"] for r in csv.DictReader(f) if r["source"]}
    m = ObjectMatcher()
    gens = sorted(Path(sc.generations_dir).glob("*.png"))
    pairs = [(m.prepare(decode_image(g.read_bytes(), min_side=m.config.fine)), drawn + (
        [object_template((Path(sc.train_dir) / source[g.name]).read_bytes())] if g.name in source else []))
        for g in gens]
    t0 = time.perf_counter()
    scores = [m.match(prepared, t).score for prepared, ts in pairs for t in ts]
    seconds = time.perf_counter() - t0
    np.save(out, np.array(scores))
    return {"pairs": len(scores), "ms_per_pair": round(1e3 * seconds / len(scores), 1)}


if __name__ == "__main__":
    main()
