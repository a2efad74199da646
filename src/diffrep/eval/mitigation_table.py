"""``diffrep experiment mitigation``: every mitigation on one memorizing model, replication against quality
(MemBench, TMLR 2025: score memorized prompts *and* ordinary prompts on the same model).

1. **Data** (``mitigation_data.py``): captioned Fashion-MNIST where ``dup_images`` images are near-duplicated
   ``dup_copies`` times under a caption of their own; held-out real images for the audit, KID and a classifier.
2. **Models**: the base model (caption-conditioned, caption dropout for guidance) and one model per train-time
   mitigation: ``dedup`` (``diffrep dedup`` of the training folder, then training on its ``keep.nul``),
   ``wen-filter`` (threshold: the ``wen_quantile`` of the base model's noise gap over the distinct training
   images, no labels used), and the NeurIPS 2023 caption mitigations named in ``train_caption``.
3. **Rows**: no mitigation and every inference-time mitigation (``mitigation.INFERENCE``) on the base model,
   at its default strength and at the preset's ``strengths`` (rows ``NAME@S``); each train-time model
   sampled plainly. Every row samples ``per_memorized`` images per memorized prompt and
   ``per_ordinary`` per held-out ordinary prompt with the same seed and the preset's ``guidance``, except
   ``jain`` (guidance ``jain_scale`` once its switch fires), which gets a reference row ``none-gS``: no
   mitigation at that scale throughout.
4. **Judge**: on memorized prompts, the audit (calibrated at ``fpr`` on held-out images) flags copies of the
   prompt's own training image: the replica rate with a bootstrap interval over prompts; the SSCD cosine of
   each generation to that image (mean; top-3 = per prompt the mean of its three most similar generations;
   share > 0.5). On ordinary prompts: KID on EfficientNet-Lite0 features against held-out real images (and
   the bootstrap interval of its difference to the unmitigated row), and prompt adherence = accuracy of a
   classifier (logistic regression on the same features, trained on real images never trained on) on the
   class the prompt names. Cost: sampling seconds per image.

Outputs in ``OUT``: ``data/``, ``runs/`` (models), ``rows/NAME/`` (``memorized/``, ``ordinary/``, ``audit/``,
``row.json``), ``results.csv``, ``results.md``, ``pareto.png``, ``summary.json``. Re-running continues: trained
models, sampled rows and judged rows are reused when their settings match.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DiffrepError
from ..fsutil import finished, write_json
from ..progress import ProgressCallback, emit

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"per_class": 10, "dup_images": 10, "dup_copies": 25, "reference": 200, "real": 500,
              "classifier_per_class": 100, "size": 32, "steps": 4000, "batch": 16, "channels": [16, 32, 32],
              "per_memorized": 8, "per_ordinary": 20, "sample_steps": 25, "guidance": 1.0, "jain_scale": 2.0,
              "wen_quantile": 0.9, "train_caption": ["rt"],
              "strengths": {"gni": [1.0], "rt": [4], "rna": [4], "attn-rescale": [2.0]}},
    "full": {"per_class": 300, "dup_images": 50, "dup_copies": 50, "reference": 1000, "real": 2000,
             "classifier_per_class": 500, "size": 32, "steps": 30000, "batch": 128, "channels": [64, 128, 128],
             "per_memorized": 16, "per_ordinary": 100, "sample_steps": 50, "guidance": 1.0, "jain_scale": 2.0,
             "wen_quantile": 0.9,
             "train_caption": ["rt", "gn", "rc", "cwr"],
             "strengths": {"gni": [1.0], "rt": [4], "rna": [4], "attn-rescale": [2.0]}},
}
TRAIN_CAPTION_P = 0.1  # the NeurIPS study's probability per sample


def run_mitigation_experiment(out: str | Path, *, preset: str = "smoke", seed: int = 0, device: str = "cpu",
                              fpr: float = 0.01, overrides: Optional[dict[str, Any]] = None,
                              only: Optional[list[str]] = None,
                              progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Run (or continue) the trade-off table in ``out``; returns the summary (see the module docstring).
    ``only``: row names to run (default all); the table is written whenever the unmitigated row ``none`` is
    among them, and lists the rows left out."""
    from . import mitigation_data
    from .mitigation_report import write_tables

    if preset not in PRESETS:
        raise DiffrepError(f"--preset {preset!r}: use {', '.join(PRESETS)}")
    p = {**PRESETS[preset], **(overrides or {})}
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rows = row_specs(p)
    if only:
        unknown = sorted(set(only) - {r["name"] for r in rows})
        if unknown:
            raise DiffrepError(f"--only {','.join(unknown)}: not a row of this table; its rows are "
                               f"{', '.join(r['name'] for r in rows)}")
        rows = [r for r in rows if r["name"] in only]
    data = mitigation_data.build(root / "data", p, seed)
    judge = Judge(root, data, p, seed, fpr, progress)
    results = []
    for i, spec in enumerate(rows):
        emit(progress, "experiment", i, len(rows), unit="row", message=spec["name"])
        run_dir = train_model(root, spec["model"], data, p, seed, device, progress)
        results.append(judge.row(spec, run_dir, device))
        emit(progress, "experiment", i + 1, len(rows), unit="row",
             message=f"{spec['name']}: replica rate {results[-1]['replica_rate']:.2f}")
    summary = {"preset": p, "seed": seed, "fpr": fpr, "memorized_prompts": len(data["memorized"]),
               "ordinary_prompts": len(data["ordinary"]), "classifier_real_accuracy": judge.ceiling,
               "rows": results}
    if any(r["row"] == "none" for r in results):
        compare(summary, judge)
        summary["rows_left_out"] = [r["name"] for r in row_specs(p) if r["name"] not in {x["row"] for x in results}]
        write_json(root / "summary.json", summary)
        write_tables(root, summary)
    return summary


def row_specs(p: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows: name, kind (none / inference / train), the model they sample, the mitigation."""
    from ..mitigation import INFERENCE

    rows = [{"name": "none", "kind": "none", "model": "base", "mitigation": None}]
    for m in INFERENCE:
        rows.append({"name": m, "kind": "inference", "model": "base", "mitigation": m})
        rows += [{"name": f"{m}@{s:g}", "kind": "inference", "model": "base", "mitigation": m, "strength": s}
                 for s in p.get("strengths", {}).get(m, [])]
    if p["jain_scale"] != p["guidance"]:  # jain switches guidance on: its own reference is that scale throughout
        g = p["jain_scale"]
        rows.insert(1, {"name": f"none-g{g:g}", "kind": "none", "model": "base", "mitigation": None, "guidance": g})
        next(r for r in rows if r["name"] == "jain").update(guidance=g)
    rows += [{"name": m, "kind": "train", "model": m, "mitigation": None} for m in ("dedup", "wen-filter")]
    rows += [{"name": f"train-{m}", "kind": "train", "model": f"train-{m}", "mitigation": None}
             for m in p["train_caption"]]
    return rows


def train_model(root: Path, name: str, data: dict[str, Any], p: dict[str, Any], seed: int, device: str,
                progress: Optional[ProgressCallback]) -> Path:
    """Train (or reuse) model ``name`` (base, dedup, wen-filter, train-<caption mitigation>) in ``runs/``."""
    from ..models.train import train

    run = root / "runs" / name
    kw: dict[str, Any] = {}
    if name == "dedup":
        kw["keep"] = dedup_keep(root, progress)
    elif name == "wen-filter":
        kw.update(mitigate="wen-filter", wen_threshold=wen_threshold(root, data, p, seed, device, progress))
    elif name.startswith("train-"):
        kw.update(mitigate=name[len("train-"):], mitigate_p=TRAIN_CAPTION_P)
    elif name != "base":
        raise DiffrepError(f"unknown model {name!r}")
    marker = run / "trained.json"
    settings = {"steps": p["steps"], "batch": p["batch"], "channels": p["channels"], "size": p["size"],
                "seed": seed, "data": data["settings"],
                **{k: str(v) if isinstance(v, Path) else v for k, v in kw.items()}}
    if finished(marker, settings) is not None:
        return run
    t0 = time.perf_counter()
    tr = train(root / "data" / "train", run, cond="caption", steps=p["steps"], batch=p["batch"], seed=seed,
               device=device, size=p["size"], channels=tuple(p["channels"]), sample_every=0,
               checkpoint_every=max(100, p["steps"] // 5), progress=progress, **kw)
    write_json(marker, {"settings": settings, "step": tr.step, "images": tr.images,
                        "train_seconds": round(time.perf_counter() - t0, 1)})
    return run


def dedup_keep(root: Path, progress: Optional[ProgressCallback]) -> Path:
    """``diffrep dedup`` of the training folder (default settings); its ``keep.nul``."""
    from ..dedup.run import dedup

    out = root / "runs" / "dedup-groups"
    if not (out / "keep.nul").is_file():
        dedup(root / "data" / "train", out, progress=progress)
    return out / "keep.nul"


def wen_threshold(root: Path, data: dict[str, Any], p: dict[str, Any], seed: int, device: str,
                  progress: Optional[ProgressCallback]) -> float:
    """The ``wen_quantile`` of the base model's text-conditional noise gap ||eps_c - eps_u|| over the distinct
    training images with their captions, each at one random timestep (no membership labels used)."""
    import torch

    from ..models.adapter import load_model, noise_gap
    from ..models.data import load_training_set

    base = train_model(root, "base", data, p, seed, device, progress)
    ts = load_training_set(root / "data" / "train", size=p["size"])
    first = {}
    for i, (path, cap) in enumerate(zip(ts.paths, ts.captions)):
        first.setdefault(Path(path).name.split("_")[0] if Path(path).name.startswith("m") else path, i)
    pick = sorted(first.values())
    model = load_model(base, device)
    gen = torch.Generator().manual_seed(seed)
    gaps = []
    with torch.no_grad():
        for s in range(0, len(pick), 64):
            idx = pick[s:s + 64]
            x0 = model.to_model(ts.images[idx]).float()
            t = torch.randint(0, model.train_steps, (len(idx),), generator=gen)
            a = model.alphas[t].to(x0.device).view(-1, 1, 1, 1).float()
            e = torch.randn(x0.shape, generator=gen).to(x0.device)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * e
            eps_u, eps_c = model.predict_pair(xt, t.repeat(2).to(x0.device), model.encode([ts.captions[i] for i in idx]),
                                              model.empty(len(idx)))
            gaps.append(noise_gap(eps_c, eps_u).cpu().numpy())
    return float(np.quantile(np.concatenate(gaps), p["wen_quantile"]))


class Judge:
    """Samples and judges rows against one data split (see the module docstring, step 4)."""

    def __init__(self, root: Path, data: dict[str, Any], p: dict[str, Any], seed: int, fpr: float,
                 progress: Optional[ProgressCallback]) -> None:
        import diffrep

        from .mitigation_quality import Quality

        self.root, self.data, self.p, self.seed, self.fpr, self.progress = root, data, p, seed, fpr, progress
        diffrep.index(root / "data" / "sources", root / "index", progress=progress)
        self.quality = Quality(root / "data", seed, progress)
        self.ceiling = self.quality.ceiling

    def row(self, spec: dict[str, Any], run_dir: Path, device: str) -> dict[str, Any]:
        from .mitigation_quality import memorized_metrics

        folder = self.root / "rows" / spec["name"]
        settings = {"spec": spec, "run": json.loads((run_dir / "trained.json").read_text())["settings"],
                    "fpr": self.fpr, "seed": self.seed,
                    **{k: self.p[k] for k in ("per_memorized", "per_ordinary", "sample_steps", "guidance")}}
        marker = folder / "row.json"
        old = finished(marker, settings)
        if old is not None:
            return old
        secs = self._generate(spec, run_dir, folder, device)
        res = {"row": spec["name"], "kind": spec["kind"], "seconds_per_image": secs,
               **memorized_metrics(folder, self.data, self.root, self.fpr, self.seed, self.progress),
               **self.quality.ordinary_metrics(folder / "ordinary", self.data["ordinary"]),
               "settings": settings}
        write_json(marker, res)
        return res

    def _generate(self, spec: dict[str, Any], run_dir: Path, folder: Path, device: str) -> float:
        """Sample the row's memorized and ordinary prompts; sampling seconds per image."""
        from ..mitigation import make_plan
        from ..models.sample import sample

        p = self.p
        guidance = spec.get("guidance", p["guidance"])
        mem = [q for q in self.data["memorized"] for _ in range(p["per_memorized"])]
        ordi = [q for q in self.data["ordinary"] for _ in range(p["per_ordinary"])]
        t0 = time.perf_counter()
        for name, prompts in (("memorized", mem), ("ordinary", ordi)):
            plan = make_plan(spec["mitigation"], spec.get("strength")) if spec["mitigation"] else None
            sample(run_dir, len(prompts), folder / name, prompts=prompts, steps=p["sample_steps"], seed=self.seed,
                   device=device, guidance=guidance, plan=plan, progress=self.progress)
        return (time.perf_counter() - t0) / (len(mem) + len(ordi))


def compare(summary: dict[str, Any], judge: Judge) -> None:
    """Add to every row its change against the unmitigated row: the replica-rate reduction; the 95% interval
    of its KID difference (bootstrap) and of its adherence difference (Newcombe's score interval); and
    ``quality_kept``: neither interval lies wholly on the worse side (KID up, adherence down)."""
    from .mitigation_quality import newcombe

    base = next((r for r in summary["rows"] if r["row"] == "none"), None)
    if base is None:
        return
    rows_dir = judge.root / "rows"
    for r in summary["rows"]:
        b = base["replica_rate"]
        r["replica_reduction"] = (1 - r["replica_rate"] / b) if b > 0 else None
        r["adherence_change"] = r["adherence"] - base["adherence"]
        r["adherence_change_ci"] = newcombe(round(r["adherence"] * r["ordinary_generations"]),
                                            r["ordinary_generations"],
                                            round(base["adherence"] * base["ordinary_generations"]),
                                            base["ordinary_generations"])
        r["kid_change_ci_x1000"] = judge.quality.kid_change(rows_dir / r["row"], rows_dir / "none")
        r["kid_kept"] = bool(r["kid_change_ci_x1000"][0] <= 0)
        r["adherence_kept"] = bool(r["adherence_change_ci"][1] >= 0)
        r["quality_kept"] = r["kid_kept"] and r["adherence_kept"]
    summary["baseline_replica_rate"] = base["replica_rate"]
