"""The end-to-end demo: a labelled scenario from packaged emoji -> index -> audit -> evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..auditing.run import audit
from ..datasets import get_dataset, read_groups
from .scenario import build_scenario, evaluate, pixel_twins
from ..fsutil import write_json
from ..indexing.build import index
from ..progress import ProgressCallback


def run_demo(out: Path, *, seed: int = 0, descriptor: str = "sscd", n_train: int = 1200,
             n_reference: int = 300, n_copies: int = 200, n_unseen: int = 200, fpr: float = 0.01,
             progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Build (or reuse) the scenario under ``out``, index its training set, audit its generations with the
    held-out reference for calibration, and score the verdicts against the known truth."""
    sc = build_scenario(out / "scenario", seed=seed, n_train=n_train, n_reference=n_reference,
                        n_copies=n_copies, n_unseen=n_unseen, progress=progress)
    index(sc.train_dir, out / "index", descriptor=descriptor, progress=progress)
    res = audit(sc.generations_dir, out / "index", out / "audit", reference=sc.reference_dir, fpr=fpr,
                seed=seed, progress=progress)
    groups = {f: g for f, (g, _cat) in read_groups(get_dataset("emoji")).items()}
    ev = evaluate(sc.truth_csv, out / "audit" / "matches.csv", groups=groups, twins=pixel_twins(sc.train_dir))
    write_json(out / "evaluation.json", ev)
    return {"summary": res.summary, "evaluation": ev, "scenario": sc}
