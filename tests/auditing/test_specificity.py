"""Specificity: verified and pixel evidence counts for candidates that retrieval singles out."""
from __future__ import annotations

import numpy as np
import pytest

from diffrep.auditing.specificity import SpecificityConfig, distinct_margins, gate_pixel_channels, gated_best
from diffrep.errors import DiffrepError


def _unit(*v: float) -> np.ndarray:
    x = np.asarray(v, np.float32)
    return x / np.linalg.norm(x)


# training vectors: 0 and 1 are near-duplicates (a recolour), 2 and 3 are distinct look-alikes of 0
VEC = {0: _unit(1, 0, 0), 1: _unit(1, 0.1, 0), 2: _unit(0.6, 0.8, 0), 3: _unit(0.6, 0, 0.8), 4: _unit(0, 0, 1)}


def lookup(ids: np.ndarray) -> np.ndarray:
    return np.stack([VEC[int(j)] for j in ids])


def test_margin_leaves_out_near_duplicates_and_handles_missing_candidates() -> None:
    scores = np.array([[0.90, 0.88, 0.50, -np.inf],   # a copy of 0 (1 is its recolour): margin over 2
                       [0.80, 0.78, 0.20, 0.10],      # as close to 2 as to 0: not singled out
                       [0.70, -np.inf, -np.inf, -np.inf],  # the only candidate
                       [0.90, 0.85, -np.inf, -np.inf]])    # only near-duplicates listed: against the lowest
    ids = np.array([[0, 1, 2, -1], [0, 2, 3, 4], [4, -1, -1, -1], [0, 1, -1, -1]])
    m = distinct_margins(scores, ids, lookup)
    assert m[0, 0] == pytest.approx(0.40) and m[0, 1] == pytest.approx(0.38) and m[0, 2] == pytest.approx(-0.40)
    assert np.isnan(m[0, 3])
    assert m[1, 0] == pytest.approx(0.02) and m[1, 1] == pytest.approx(-0.02)
    assert m[2, 0] == np.inf and np.isnan(m[2, 1:]).all()
    assert m[3, 0] == pytest.approx(0.05)
    assert np.allclose(distinct_margins(scores, ids, VEC)[np.isfinite(m)], m[np.isfinite(m)])  # dict lookup too


def test_pixel_evidence_counts_only_for_singled_out_or_pixel_exact_candidates() -> None:
    # three queries, each with verified candidates 0 and 2 (global top-2 of a top-3 list)
    g_ids = np.array([[0, 2, 4], [0, 2, 4], [0, 2, 4]])
    g_scores = np.array([[0.80, 0.79, 0.30],   # look-alike: 0 and 2 tie globally
                         [0.80, 0.50, 0.30],   # 0 singled out globally
                         [0.60, 0.59, 0.30]])  # tie, but a pixel-exact copy of 0
    cand = g_ids[:, :2]
    verified = np.array([[0.85, 0.70], [0.85, 0.70], [0.90, 0.40]])
    pixel = np.array([[0.86, 0.80], [0.86, 0.80], [0.995, 0.50]])
    v, px, void, allowed = gate_pixel_channels(verified, pixel, cand, g_scores, g_ids, None, None, lookup)
    assert allowed.tolist() == [[False, False], [True, False], [True, False]]
    # the look-alike's evidence is void (p = 1 in the fusion); its value stays the plain best
    assert void.tolist() == [True, False, False]
    assert v.tolist() == pytest.approx([0.85, 0.85, 0.90]) and px.tolist() == pytest.approx([0.86, 0.86, 0.995])
    # the region score singles out the look-alike query's candidate 0: its evidence counts again
    r_ids = np.array([[0, 3, -1], [0, 3, -1], [0, 3, -1]])
    r_scores = np.array([[0.90, 0.60, -np.inf]] * 3)
    _, px2, void2, allowed2 = gate_pixel_channels(verified, pixel, cand, g_scores, g_ids, r_scores, r_ids, lookup)
    assert allowed2[0].tolist() == [True, False] and px2[0] == pytest.approx(0.86) and not void2.any()
    # a larger margin sets the second query's evidence aside too
    _, _, void3, _ = gate_pixel_channels(verified, pixel, cand, g_scores, g_ids, None, None, lookup,
                                         SpecificityConfig(margin=0.35))
    assert void3.tolist() == [True, True, False]


def test_gated_best_and_config_checks() -> None:
    vals = np.array([[0.5, np.nan], [0.2, 0.9], [0.3, 0.6], [np.nan, np.nan]])
    best, void = gated_best(vals, np.array([[False, True], [True, True], [True, False], [True, True]]))
    assert best.tolist() == pytest.approx([0.5, 0.9, 0.3, 0.0]) and void.tolist() == [True, False, False, False]
    with pytest.raises(DiffrepError, match="margin"):
        SpecificityConfig(margin=-0.1)
    with pytest.raises(DiffrepError, match="near-duplicate"):
        SpecificityConfig(same=1.5)
    assert "0.98" in SpecificityConfig().describe()["rule"]
