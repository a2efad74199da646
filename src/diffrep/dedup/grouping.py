"""Group near-duplicates without chaining.

Plain union-find over a threshold graph chains distinct images into giant components through series of
borderline links (Webster et al. 2023 on LAION). Here every member is linked *to its group's
representative*: images are visited in representative-priority order (largest resolution, then id); an
unassigned image founds a group, and joins it only those unassigned neighbours whose own link to the
founder passes the test. A chain a-b-c with no a-c link yields two groups, never one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Link:
    score: float  # score of the link (verified, or 1.0 for exact duplicates)
    kind: str  # "content" | "pixels" | "near"


def star_groups(priority: np.ndarray, links: dict[int, dict[int, Link]]) -> tuple[np.ndarray, dict[int, Link]]:
    """Assign each image a group id (= its representative's index).

    ``priority``: image indices, best representative first. ``links[i][j]``: an accepted, symmetric link.
    Returns (group of each image, the link of each member to its representative)."""
    n = len(priority)
    group = np.full(n, -1, np.int64)
    to_rep: dict[int, Link] = {}
    for r in priority:
        r = int(r)
        if group[r] >= 0:
            continue
        group[r] = r
        for j, link in sorted(links.get(r, {}).items(), key=lambda kv: (-kv[1].score, kv[0])):
            if group[j] < 0:
                group[j] = r
                to_rep[j] = link
    return group, to_rep
