"""The geometry and the statistics of generate-and-filter cliques (``probes.extract``): the tiled L2 distance
(Carlini et al., USENIX Security 2023), maximum cliques and clique radii of a set of generations, the edge
calibrated on the reference prompts' radii, and the check of the unverified cliques against the edge's rate."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..defaults import DEFAULTS
from ..errors import DiffrepError

TILES = 4


def tiled_l2(a: np.ndarray, b: np.ndarray, tiles: int = TILES) -> float:
    """Largest per-tile RMS difference (0-255 scale) of two same-size uint8 images."""
    h, w = a.shape[:2]
    d = (a.astype(np.float32) - b.astype(np.float32)) ** 2
    ys, xs = np.linspace(0, h, tiles + 1).astype(int), np.linspace(0, w, tiles + 1).astype(int)
    return float(max(np.sqrt(d[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean())
                     for i in range(tiles) for j in range(tiles)))


def pair_distances(images: np.ndarray) -> np.ndarray:
    """Symmetric matrix of tiled L2 distances between the rows of ``images``."""
    n = len(images)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = tiled_l2(images[i], images[j])
    return d


def clique_radius(d: np.ndarray, k: int) -> float:
    """The smallest distance e such that ``k`` of the images are mutually within e (the largest pair distance
    of their tightest ``k``-clique): a clique of ``k`` forms under an edge threshold exactly when the radius is
    below it. ``inf`` for fewer than ``k`` images."""
    n = len(d)
    if n < max(k, 2):
        return float("inf")
    vals = np.unique(d[np.triu_indices(n, 1)])
    lo, hi = 0, len(vals) - 1  # at vals[-1] every pair is joined: a clique of n >= k
    while lo < hi:
        mid = (lo + hi) // 2
        if len(largest_clique(d <= vals[mid])) >= k:
            hi = mid
        else:
            lo = mid + 1
    return float(vals[lo])


def largest_clique(adj: np.ndarray) -> list[int]:
    """A maximum clique of the boolean adjacency matrix (Bron-Kerbosch with pivoting; small graphs)."""
    n = len(adj)
    nbrs = [set(np.flatnonzero(adj[i])) - {i} for i in range(n)]
    best: list[int] = []

    def expand(r: list[int], p: set[int], x: set[int]) -> None:
        nonlocal best
        if not p and not x:
            if len(r) > len(best):
                best = list(r)
            return
        if len(r) + len(p) <= len(best):
            return
        pivot = max(p | x, key=lambda u: len(nbrs[u] & p))
        for v in list(p - nbrs[pivot]):
            expand(r + [v], p & nbrs[v], x & nbrs[v])
            p = p - {v}
            x = x | {v}

    expand([], set(range(n)), set())
    return sorted(best) if len(best) > 1 else []


def central(d: np.ndarray, members: list[int]) -> int:
    """The member of a clique with the smallest summed distance to the others."""
    sub = d[np.ix_(members, members)]
    return members[int(np.argmin(sub.sum(axis=1)))]


def clique_edge(radii: np.ndarray, copying: np.ndarray, fpr: float, drop: bool) -> tuple[float, list[str]]:
    """The edge threshold and its warnings: the conformal ``fpr`` rule on the reference prompts' negated clique
    radii (a small radius is evidence), leaving out the prompts marked ``copying`` when ``drop``."""
    from ..matching.calibration import threshold_at_fpr

    radii, copying = np.asarray(radii, np.float64), np.asarray(copying, bool)
    keep = ~copying if drop else np.ones(len(radii), bool)
    if not keep.any():
        raise DiffrepError(f"every one of the {len(radii)} reference prompts generates audit-verified copies of "
                           "training images: no edge can be calibrated on them; give prompts the model has not "
                           "memorized (reference_cliques/ and reference_audit/ show what they make)")
    t, warnings = threshold_at_fpr(-radii[keep], fpr, noun="prompt")
    edge = -t
    if copying.any() and not drop:
        tight = int((radii[copying] <= edge).sum())
        warnings.append(f"{int(copying.sum())} reference prompt(s) generate audit-verified copies of training "
                        f"images (reference_copies in summary.json), {tight} of them as tight as the edge they "
                        "help set, so the edge may be stricter than unmemorized prompts need; "
                        "--drop-reference-copies (the default) leaves them out")
    return edge, warnings


def excess_cliques_warning(unverified: int, generated_for: int, fpr: float, n_reference: int,
                           alpha: float = DEFAULTS["extract"]["excess_alpha"]) -> Optional[str]:
    """A warning when more cliques fail the audit than the edge's rate explains. The edge, calibrated on
    ``n_reference`` prompts, lets a new prompt *like the reference prompts* form a clique with probability at
    most ``max(fpr, 1 / (n_reference + 1))`` (the conformal bound); the warning comes when a Poisson count with
    that rate times ``generated_for`` reaches ``unverified`` with probability below ``alpha``. Training prompts
    the model saw without memorizing them, whose generations can sit near their picture without being copies,
    form cliques more readily, and the rate does not carry over to them."""
    if unverified <= 0:
        return None
    from scipy.stats import poisson  # imported here: scipy.stats adds ~0.4 s to any import of this module

    expected = generated_for * max(fpr, 1.0 / (n_reference + 1))
    p = float(poisson.sf(unverified - 1, expected))  # P(X >= unverified)
    if p >= alpha:
        return None
    return (f"{unverified} clique(s) are not audit-verified copies, against at most {expected:.2g} expected by "
            f"chance from {generated_for} prompts like the reference prompts (Poisson p = {p:.2g}): the tested "
            "prompts form cliques more readily, as training prompts the model saw can, so the edge's rate does not "
            "hold for them; read the is_copy column (docs/probes.md)")
