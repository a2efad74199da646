"""The judges of ``diffrep experiment mitigation`` (``mitigation_table.py``): copies on memorized prompts
(the calibrated audit and SSCD similarity to the memorized image) and quality on ordinary prompts (KID and a
prompt-adherence classifier on EfficientNet-Lite0 features)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..progress import ProgressCallback

BOOT = 1000  # bootstrap replicates of the intervals


def prompts_of(folder: Path) -> dict[str, str]:
    """{file name: the prompt it was asked for} from a sample folder's ``prompts.jsonl`` (before any edit)."""
    out = {}
    for line in (folder / "prompts.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["file"]] = rec["caption"]
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def memorized_metrics(folder: Path, data: dict[str, Any], root: Path, fpr: float, seed: int,
                      progress: Optional[ProgressCallback]) -> dict[str, Any]:
    """Audit ``folder/memorized`` against the training index; per generation, is it a flagged copy of its
    prompt's own training image, and its SSCD cosine to that image. Replica rate with a 95% bootstrap interval
    over prompts, mean / top-3 / share > 0.5 of the cosine (MemBench's three figures)."""
    import diffrep
    from ..descriptors import get_descriptor
    from ..embedding import embed_source

    gens = folder / "memorized"
    r = diffrep.audit(gens, root / "index", folder / "audit", reference=root / "data" / "reference", fpr=fpr,
                      seed=seed, progress=progress)
    src = embed_source(root / "data" / "memorized", get_descriptor("sscd"), stage="memorized images")
    src_vec = {Path(rec.path).name: v for rec, v in zip(src.records, _unit(src.vectors))}
    asked = prompts_of(gens)
    q_vec = _unit(r.query_vectors)
    per_prompt: dict[str, list[tuple[bool, float]]] = {q: [] for q in data["memorized"]}
    for i, (q, top1, rep) in enumerate(zip(r.query_paths, r.top1_train_paths, r.is_replica)):
        prompt = asked[Path(q).name]
        source = data["memorized"][prompt]
        copy = bool(rep) and bool(top1) and Path(top1).name == source
        per_prompt[prompt].append((copy, float(q_vec[i] @ src_vec[source])))
    kept = [v for v in per_prompt.values() if v]
    hits = np.array([sum(c for c, _ in v) for v in kept], float)
    counts = np.array([len(v) for v in kept], float)
    sims = [np.array([s for _, s in v]) for v in kept]
    flat = np.concatenate(sims)
    rng = np.random.default_rng([seed, 26])
    boot = []
    for _ in range(BOOT):
        j = rng.integers(0, len(kept), len(kept))
        boot.append(hits[j].sum() / counts[j].sum())
    return {"memorized_generations": int(counts.sum()), "replicas": int(hits.sum()),
            "replica_rate": float(hits.sum() / counts.sum()),
            "replica_rate_ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
            "prompts_copied": int((hits > 0).sum()), "sscd_mean": float(flat.mean()),
            "sscd_top3": float(np.mean([np.sort(s)[-3:].mean() for s in sims])),
            "sscd_share_above_0.5": float((flat > 0.5).mean()),
            "audit_threshold": float(r.summary["calibration"]["threshold"])}


class Quality:
    """KID and prompt adherence of ordinary-prompt generations (features cached under ``data``)."""

    def __init__(self, data: Path, seed: int, progress: Optional[ProgressCallback]) -> None:
        from .mitigation_data import label_of

        self.seed, self.progress = seed, progress
        _, self.real = self._cached(data / "real", data / "real_features.npz")
        names, feats = self._cached(data / "classifier", data / "classifier_features.npz")
        labels = np.array([label_of(n) for n in names])
        perm = np.random.default_rng([seed, 27]).permutation(len(labels))
        cut = int(0.8 * len(labels))
        self.clf = fit_classifier(feats[perm[:cut]], labels[perm[:cut]], seed)
        self.ceiling = float((self.clf(feats[perm[cut:]]) == labels[perm[cut:]]).mean())

    def _named(self, folder: Path) -> tuple[list[str], np.ndarray]:
        from ..descriptors import get_descriptor
        from ..embedding import embed_source

        s = embed_source(folder, get_descriptor("effnet-lite0"), stage="features", progress=self.progress)
        return [Path(r.path).name for r in s.records], np.asarray(s.vectors, np.float64)

    def _cached(self, folder: Path, cache: Path) -> tuple[list[str], np.ndarray]:
        """``_named(folder)``, kept in ``cache`` (written atomically) for the next run on the same data."""
        from ..fsutil import write_npz

        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                return [str(n) for n in z["names"]], z["features"]
        names, feats = self._named(folder)
        write_npz(cache, {"names": np.array(names, dtype=str), "features": feats}, compress=False)
        return names, feats

    def ordinary_metrics(self, folder: Path, prompts: list[str]) -> dict[str, Any]:
        """KID x1000 (with its interval) against the real images and the classifier's accuracy on the class
        each prompt names (Wilson interval); the features are kept in ``folder/../ordinary_features.npy``."""
        from ..fsutil import write_npy
        from .quality import kid

        names, feats = self._named(folder)
        write_npy(folder.parent / "ordinary_features.npy", feats)
        asked = prompts_of(folder)
        want = np.array([prompts.index(asked[n]) for n in names])
        right = int((self.clf(feats) == want).sum())
        k = kid(feats, self.real, boot=BOOT, seed=self.seed)
        return {"ordinary_generations": len(names), "kid_x1000": 1000 * k["kid"],
                "kid_ci_x1000": [1000 * v for v in k["ci"]], "adherence": right / len(names),
                "adherence_ci": list(wilson(right, len(names)))}

    def kid_change(self, row: Path, base: Path) -> list[float]:
        """95% bootstrap interval of KID(row) - KID(base) (x1000), resampling both sets and the real images."""
        from .quality import mmd2_unbiased

        a, b = np.load(row / "ordinary_features.npy"), np.load(base / "ordinary_features.npy")
        rng = np.random.default_rng([self.seed, 28])
        m = min(len(a), len(b), len(self.real))
        diffs = []
        for _ in range(BOOT):
            ia, ib, ir = (rng.integers(0, n, m) for n in (len(a), len(b), len(self.real)))
            real = self.real[ir]
            diffs.append(mmd2_unbiased(a[ia], real, ia, ir) - mmd2_unbiased(b[ib], real, ib, ir))
        return [1000 * float(v) for v in np.percentile(diffs, [2.5, 97.5])]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))


def newcombe(k1: int, n1: int, k2: int, n2: int) -> list[float]:
    """95% interval of the difference of proportions k1/n1 - k2/n2 (Newcombe's hybrid score method, from the
    two Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    return [float(d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)), float(d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))]


def fit_classifier(x: np.ndarray, y: np.ndarray, seed: int, l2: float = 1e-3) -> Any:
    """Multinomial logistic regression on standardized features (L-BFGS, torch); returns predict(x)."""
    import torch

    mu, sd = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(seed)
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return lin(torch.tensor((z - mu) / sd, dtype=torch.float32)).argmax(1).numpy()

    return predict
