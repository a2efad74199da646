"""Variants of Wen et al.'s noise-norm score on a finished `diffrep experiment memorization` folder.

Recomputes ||eps(x_t, c) - eps(x_t, empty)||_2 per prompt, seed and DDIM step (seeds paired across prompts, as
`diffrep probe` draws them; the trajectory follows guidance `--guidance`) and scores, against the folder's
audit-judged labels (`labels.json`) and its test captions, the ways of pooling it: the mean over the first
`--seeds` seeds (for several seed counts), the max, median and 75th percentile over seeds, each single step,
and the mean over the first k steps. Beside them, two other readings of the same model calls: the first-step gap
relative to the unconditional prediction (||eps_c - eps_u|| / ||eps_u||, and 1 - cos(eps_c, eps_u)), and how
much the seeds agree on the image (the mean, smallest and 10% quantile of the pairwise L2 distances between the
seeds' one-step estimates x0_hat at each step; closer = higher score), and Ren et al.'s first-step cross-attention
readings (ECCV 2024; `--attention`): the entropy over the prompt's tokens of the attention averaged over heads,
pixels and layers (their "E" score, higher = memorized), the mean per-pixel entropy, each divided by the log of
the token count too, and the attention left on the beginning token (lower = memorized). A study of what the
model calls can see on one model, not a tuning loop: a folder it was run on is no longer held out for a rule it
suggests.

Usage:  python benchmarks/probe_variants.py OUT --seeds 32 --steps 12 --json variants.json
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrep.eval.memorization import consistently_memorized
from diffrep.models.adapter import load_model, repeat_cond
from diffrep.probes.roc import auc, tpr_at_fpr
from diffrep.probes.scores import _trajectory


def gaps(model: Any, prompts: list[str], seeds: int, steps: int, sample_steps: int, guidance: float
         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """[prompt, seed, step] noise gaps along each prompt's DDIM trajectory (the probe's own ``_trajectory``) and
    the other readings (``readings``) per prompt."""
    noise = torch.cat([model.noise(1, torch.Generator().manual_seed(s)) for s in range(seeds)])
    out = np.zeros((len(prompts), seeds, steps))
    other: dict[str, list[np.ndarray]] = {}
    per = max(1, 256 // seeds)
    with torch.no_grad():
        for start in range(0, len(prompts), per):
            chunk = prompts[start:start + per]
            cond, uncond = repeat_cond(model.encode(chunk), seeds), model.empty(len(chunk) * seeds)
            seen: list[dict[str, np.ndarray]] = []
            norms, _, _ = _trajectory(model, noise.repeat(len(chunk), 1, 1, 1), cond, uncond, steps, sample_steps,
                                      guidance, lambda t, x, eu, ec: seen.append(
                                          readings(model, t, x, eu, ec, seeds, first=not seen)))
            out[start:start + len(chunk)] = norms.view(len(chunk), seeds, steps).double().cpu().numpy()
            for j, r in enumerate(seen):
                for name, v in r.items():
                    other.setdefault(f"{name}, step {j + 1}", []).append(v)
    return out, {k: np.concatenate(v) for k, v in other.items()}


def readings(model: Any, t: Any, x: Any, eps_u: Any, eps_c: Any, seeds: int, first: bool) -> dict[str, np.ndarray]:
    """Per-prompt scores of one step (rows prompt-major, ``seeds`` per prompt): the seeds' agreement on the
    one-step estimate x0_hat (negated distances: high = agree), and on the ``first`` step the relative gaps
    averaged over seeds."""
    eu, ec = eps_u.float().flatten(1), eps_c.float().flatten(1)
    b = len(eu) // seeds
    a = model.alphas[int(t)].float()
    x0 = ((x.float().flatten(1) - (1 - a).sqrt() * ec) / a.sqrt()).clamp(-1, 1).view(b, seeds, -1)
    d = torch.cdist(x0, x0)
    iu = torch.triu_indices(seeds, seeds, 1)
    pairs = d[:, iu[0], iu[1]]
    out = {}
    if first:
        mean = {"gap / ||eps_u||": (ec - eu).norm(dim=1) / eu.norm(dim=1),
                "1 - cos(eps_c, eps_u)": 1 - torch.nn.functional.cosine_similarity(ec, eu)}
        out = {k: v.view(b, seeds).mean(1).double().numpy() for k, v in mean.items()}
    out |= {"seeds agree on x0_hat (mean pair)": -pairs.mean(1).double().numpy(),
            "seeds agree on x0_hat (closest pair)": -pairs.min(1).values.double().numpy(),
            "seeds agree on x0_hat (10% pair)": -torch.quantile(pairs, 0.1, dim=1).double().numpy()}
    return out


def attention(model: Any, prompts: list[str], seeds: int, sample_steps: int) -> dict[str, np.ndarray]:
    """Ren et al.'s first-step cross-attention readings per prompt (mean over ``seeds`` seeds, the same noise as
    ``gaps``), recorded through a plain (factor 1) attention processor on every cross-attention layer."""
    from diffrep.mitigation.attention import BosRescaleProcessor, cross_attention_processor

    sched = model.make_scheduler("ddim")
    sched.set_timesteps(sample_steps)
    t = sched.timesteps[0].to(model.device)
    noise = torch.cat([model.noise(1, torch.Generator().manual_seed(s)) for s in range(seeds)])
    seen: list[Any] = []
    proc = BosRescaleProcessor(1.0, lambda probs, batch: seen.append(probs.view(batch, -1, *probs.shape[1:])))
    out: dict[str, list[np.ndarray]] = {}
    per = max(1, 256 // seeds)
    with torch.no_grad(), cross_attention_processor(model, proc):
        for start in range(0, len(prompts), per):
            chunk = prompts[start:start + per]
            cond = repeat_cond(model.encode(chunk), seeds)
            seen.clear()
            model.predict(noise.repeat(len(chunk), 1, 1, 1), t, cond)
            for name, v in attention_readings(seen, cond.get("mask")).items():
                out.setdefault(name, []).append(v.view(len(chunk), seeds).mean(1).double().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def attention_readings(layers: list[Any], mask: Any) -> dict[str, Any]:
    """Per-sample readings of one forward pass's cross-attention ``layers`` ([batch, heads, pixels, tokens]
    each); ``mask`` [batch, tokens] marks the real tokens (None: all)."""
    probs = torch.stack([p.float().mean((1, 2)) for p in layers], 1)  # [batch, layers, tokens]
    tokens = probs.shape[-1] * torch.ones(len(probs)) if mask is None else mask.float().sum(1).cpu()
    log_n = tokens.clamp(min=2).log()
    mean_dist = probs.mean(1)
    ren_e = -torch.xlogy(mean_dist, mean_dist).sum(-1)
    per_pixel = torch.stack([-torch.xlogy(p.float(), p.float()).sum(-1).mean((1, 2)) for p in layers], 1).mean(1)
    return {"attention entropy (Ren E), step 1": ren_e, "attention entropy / log tokens, step 1": ren_e / log_n,
            "per-pixel attention entropy, step 1": per_pixel,
            "per-pixel attention entropy / log tokens, step 1": per_pixel / log_n,
            "attention off the beginning token, step 1": 1 - mean_dist[:, 0]}


def pools(g: np.ndarray) -> dict[str, np.ndarray]:
    """Per-prompt scores by every pooling studied."""
    first = g[:, :, 0]
    out = {f"mean of {s} seeds, step 1": first[:, :s].mean(1) for s in (4, 8, 16, 32) if s <= g.shape[1]}
    out |= {"max over seeds, step 1": first.max(1), "median over seeds, step 1": np.median(first, 1),
            "75th percentile over seeds, step 1": np.quantile(first, 0.75, axis=1)}
    out |= {f"step {j + 1} alone": g[:, :, j].mean(1) for j in range(1, g.shape[2])}
    out |= {f"mean of steps 1-{k}": g[:, :, :k].mean((1, 2)) for k in (5, 10, g.shape[2]) if 1 < k <= g.shape[2]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a finished `diffrep experiment memorization --out` folder")
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12, help="DDIM steps of the trajectory to record")
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--attention", action="store_true", help="add the first-step cross-attention readings")
    ap.add_argument("--json", default=None, help="also write the table here")
    a = ap.parse_args()
    folder = Path(a.folder)
    summary = json.loads((folder / "summary.json").read_text())
    labels = json.loads((folder / "labels.json").read_text())
    rows = list(csv.DictReader((folder / "probe_scores.csv").open(encoding="utf-8")))
    prompts = [r["prompt"] for r in rows]
    t0 = time.perf_counter()
    model = load_model(folder / "run", "cpu")
    g, other = gaps(model, prompts, a.seeds, a.steps, summary["preset"]["sample_steps"], a.guidance)
    if a.attention:
        other |= attention(model, prompts, a.seeds, summary["preset"]["sample_steps"])
    seconds = time.perf_counter() - t0
    role = [r["role"] for r in rows]
    label_sets = {"memorized": set(labels["memorized"]),
                  "consistent": consistently_memorized(labels["copies"], summary["generations_labelled"])}
    idx = {k: [i for i, q in enumerate(prompts) if role[i] == "train" and q in v] for k, v in label_sets.items()}
    neg = [i for i in range(len(prompts)) if role[i] == "test"]
    table = []
    for name, s in (pools(g) | other).items():
        row = {"pooling": name}
        for label, pos in idx.items():
            row[f"{label}_auc"] = auc(s[pos], s[neg])
            row[f"{label}_tpr_at_1pct_fpr"] = tpr_at_fpr(s[pos], s[neg], 0.01)
        table.append(row)
    print(f"{folder}: {len(idx['memorized'])} memorized ({len(idx['consistent'])} consistently) vs {len(neg)} test "
          f"captions; {a.seeds} seeds x {a.steps} steps, guidance {a.guidance:g}, in {seconds:.0f} s")
    print("| pooling | AUC (memorized) | TPR@1%FPR | AUC (consistent) | TPR@1%FPR |\n|---|---|---|---|---|")
    for r in table:
        print(f"| {r['pooling']} | {r['memorized_auc']:.3f} | {r['memorized_tpr_at_1pct_fpr']:.3f} | "
              f"{r['consistent_auc']:.3f} | {r['consistent_tpr_at_1pct_fpr']:.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"folder": str(folder), "seeds": a.seeds, "steps": a.steps,
                                            "guidance": a.guidance, "seconds": seconds, "table": table}, indent=1))


if __name__ == "__main__":
    main()
