"""Copy-detection metrics: hand-computed cases and agreement with scikit-learn on random cases."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from diffrep.eval.bench.metrics import (accuracy_at_1, average_precision, mean_average_precision, micro_ap, mrr,
                                   precision_at_k, recall_at_k, recall_at_precision)


def test_hand_computed():
    preds = {"q1": [("a", 0.9), ("b", 0.8), ("c", 0.7)], "q2": [("x", 0.95), ("y", 0.6)], "q3": [("z", 0.85)]}
    truth = {"q1": {"b"}, "q2": {"x", "w"}, "q3": set()}
    assert average_precision(preds["q1"], {"b"}) == pytest.approx(1 / 2)
    assert average_precision(preds["q2"], {"x", "w"}) == pytest.approx((1 / 1) / 2)  # w never retrieved
    assert mean_average_precision(preds, truth) == pytest.approx((0.5 + 0.5) / 2)  # q3 has no positives
    # pooled: x .95 (+), a .9, z .85, b .8 (+), c .7, y .6 ; 3 GT pairs
    assert micro_ap(preds, truth) == pytest.approx((1 / 1 + 2 / 4) / 3)
    assert recall_at_k(preds, truth, 1) == 0.5 and recall_at_k(preds, truth, 2) == 1.0
    assert accuracy_at_1(preds, truth) == 0.5
    assert precision_at_k(preds, truth, 2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert mrr(preds, truth) == pytest.approx((1 / 2 + 1) / 2)
    assert recall_at_precision(preds, truth, 0.9) == pytest.approx(1 / 3)  # only the first hit keeps P >= .9
    assert recall_at_precision(preds, truth, 0.5) == pytest.approx(2 / 3)


def test_ties_are_pessimistic():
    preds = {"q": [("pos", 0.5), ("neg", 0.5)]}
    assert micro_ap(preds, {"q": {"pos"}}) == pytest.approx(1 / 2)


@pytest.mark.parametrize("seed", range(25))
def test_matches_sklearn_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    n_q, n_ref = int(rng.integers(2, 15)), int(rng.integers(5, 40))
    preds, truth = {}, {}
    ys, ss = [], []
    for q in range(n_q):
        scores = rng.random(n_ref)  # continuous: no ties
        pos = set(np.flatnonzero(rng.random(n_ref) < 0.2).tolist()) or {int(rng.integers(n_ref))}
        preds[q] = [(r, float(s)) for r, s in enumerate(scores)]
        truth[q] = pos
        y = np.array([r in pos for r in range(n_ref)])
        # per-query AP over the full ranking equals sklearn's
        assert average_precision(preds[q], pos) == pytest.approx(average_precision_score(y, scores), abs=1e-9)
        ys.append(y)
        ss.append(scores)
    # pooled muAP over all pairs equals sklearn's AP of the pooled problem
    assert micro_ap(preds, truth) == pytest.approx(average_precision_score(np.concatenate(ys), np.concatenate(ss)),
                                                   abs=1e-9)
    # truncated lists (top 5): muAP = sklearn AP over what was predicted x share of GT pairs predicted
    top5 = {q: sorted(p, key=lambda t: -t[1])[:5] for q, p in preds.items()}
    y5 = np.array([r in truth[q] for q, p in top5.items() for r, _ in p])
    s5 = np.array([s for p in top5.values() for _, s in p])
    n_gt = sum(len(t) for t in truth.values())
    expect = average_precision_score(y5, s5) * y5.sum() / n_gt if y5.any() else 0.0
    assert micro_ap(top5, truth) == pytest.approx(expect, abs=1e-9)
