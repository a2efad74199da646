"""Small nulls: the false-positive rate a fused threshold achieves on fresh null draws, by null size and rule.

Synthetic channels shaped like the audit's (three correlated channels that must agree, two bounded
pixel-level channels that may decide alone from 0.5 on, ``fuse_channels``), a null of N items and 400 fresh
null items per draw, 300 draws per size. Rules compared at a 1% target:

- ``conformal``: ``threshold_at_fpr`` (the audit's rule; the largest null score when N + 1 < 100);
- ``tail``: an exponential tail fitted to the fused null's top 10% on -log(1 - s), extrapolated to the target;
- ``max(tail, conformal)``: the more conservative of the two.

It prints the mean achieved rate and its 95th percentile over draws. Pooling the reference null with the
training set's own null (``audit(pool_null=...)``) is the same as a larger N here.

Usage:  python benchmarks/sim_small_null.py [--sizes 50 60 100 300] [--draws 300]
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from diffrep.matching.calibration import TAIL_MIN, TAIL_SHARE, fuse_channels, saturating_scale, threshold_at_fpr


def tail_threshold(null: np.ndarray, fpr: float) -> float:
    """The fused score whose exponential-tail p-value (top 10% of the null on -log(1 - s)) is ``fpr``."""
    y = np.sort(saturating_scale(null))
    n = len(y)
    k = min(n, max(TAIL_MIN, int(np.ceil(TAIL_SHARE * n))))
    u = y[n - k]
    beta = float(np.mean(y[n - k:] - u))
    if beta <= 0 or fpr * (n + 1) >= 1 + k:
        return threshold_at_fpr(null, fpr)[0]
    return float(-np.expm1(-(u + beta * math.log((1 + k) / ((n + 1) * fpr)))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 60, 100, 300])
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    cov = np.full((3, 3), 0.4) + 0.6 * np.eye(3)

    def draw(n: int) -> list[np.ndarray]:
        return [*rng.multivariate_normal([0, 0, 0], cov, size=n).T, *rng.beta(2, 5, size=(2, n))]

    print("| null size | conformal: mean | 95th pct | tail: mean | 95th pct | max(tail, conformal): mean | 95th pct |")
    print("|---|---|---|---|---|---|---|")
    for n in a.sizes:
        rates: dict[str, list[float]] = {"conformal": [], "tail": [], "max": []}
        for _ in range(a.draws):
            fn, fq = fuse_channels(draw(n), draw(400), alone=(3, 4), saturating=(3, 4), alone_floor=0.5)
            tc, tt = threshold_at_fpr(fn, a.fpr)[0], tail_threshold(fn, a.fpr)
            for name, t in (("conformal", tc), ("tail", tt), ("max", max(tc, tt))):
                rates[name].append(float(np.mean(fq > t)))
        print(f"| {n} | " + " | ".join(f"{100 * np.mean(r):.2f}% | {100 * np.quantile(r, 0.95):.2f}%"
                                       for r in rates.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
