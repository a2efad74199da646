"""Calibration math: thresholds at a target FPR, p-values, source preference order."""
from __future__ import annotations

import numpy as np
import pytest

from diffrep.matching.calibration import (PAPER_SSCD_THRESHOLD, calibrate, empirical_p_values, fuse_channels,
                                          threshold_at_fpr)
from diffrep.auditing.stats import score_stats
from diffrep.errors import CalibrationError


def test_threshold_hand_computed():
    null = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    t, warn = threshold_at_fpr(null, 0.05)
    # conformal: floor(0.05 * 101) - 1 = 4 null scores may exceed: 0.97..1.00 exceed 0.96
    assert t == pytest.approx(0.96)
    assert np.sum(null > t) == 4
    assert not warn


@pytest.mark.parametrize("seed", range(20))
def test_threshold_controls_fpr_on_null(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 5000))
    fpr = float(rng.choice([0.001, 0.01, 0.05, 0.1]))
    null = rng.normal(size=n)
    null[: n // 10] = null[0]  # ties
    t, _ = threshold_at_fpr(null, fpr)
    assert np.mean(null > t) <= fpr + 1e-12
    # every score above t has conformal p-value <= fpr; the next lower order statistic would not
    m = int(np.floor(fpr * (n + 1) + 1e-9)) - 1
    if m >= 0:
        assert empirical_p_values(null, np.array([np.nextafter(t, np.inf)]))[0] <= fpr + 1e-12
        lower = np.sort(null)[::-1]
        if m + 1 < n and lower[m + 1] < t:
            assert empirical_p_values(null, np.array([np.nextafter(lower[m + 1], np.inf)]))[0] > fpr


def test_threshold_controls_fpr_on_new_null_images():
    # the conformal guarantee: a new image from the null's distribution is flagged with probability <= a,
    # averaged over null draws (the plain empirical quantile gives (floor(aN) + 1) / (N + 1) = 1.33% here)
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(4000):
        t, _ = threshold_at_fpr(rng.normal(size=300), 0.01)
        rates.append(np.mean(rng.normal(size=50) > t))
    assert np.mean(rates) <= 0.01 + 0.0006  # 3 / 301 = 0.997% expected; MC error ~0.0002


def test_small_null_warns_and_uses_max():
    t, warn = threshold_at_fpr(np.array([0.1, 0.5, 0.3]), 0.01)
    assert t == 0.5 and warn and "cannot resolve" in warn[0]


def test_p_values_hand_computed():
    null = np.array([0.1, 0.2, 0.3, 0.4])
    p = empirical_p_values(null, np.array([0.05, 0.2, 0.35, 0.9]))
    np.testing.assert_allclose(p, [5 / 5, 4 / 5, 2 / 5, 1 / 5])


def test_p_value_uniform_under_null():
    # averaged over many null draws, P(p <= a) is a (valid and not wastefully conservative)
    rng = np.random.default_rng(0)
    for a in (0.01, 0.05, 0.2):
        rates = [np.mean(empirical_p_values(rng.normal(size=500), rng.normal(size=2000)) <= a)
                 for _ in range(100)]
        assert abs(np.mean(rates) - a) < 0.1 * a + 0.002


def test_preference_order():
    ref, bg = np.linspace(0, 1, 200), np.linspace(0, 0.5, 200)
    assert calibrate(reference=ref, background=bg).source == "reference"
    assert calibrate(background=bg).source == "background"
    c = calibrate(reference=ref, threshold=0.7)
    assert c.source == "explicit" and c.threshold == 0.7 and c.null_fpr == pytest.approx(np.mean(ref > 0.7))
    f = calibrate(background=bg[:5], descriptor_name="sscd")
    assert f.source == "fixed" and f.threshold == PAPER_SSCD_THRESHOLD and f.warnings
    with pytest.raises(CalibrationError):
        calibrate(background=bg[:5], descriptor_name="pixel")
    with pytest.raises(CalibrationError):
        calibrate(reference=ref, fpr=1.5)


def test_verdict_consistent_with_p_value():
    rng = np.random.default_rng(1)
    null = rng.uniform(size=1000)
    cal = calibrate(reference=null, fpr=0.01)
    s = rng.uniform(size=5000)
    rep = cal.is_replica(s)
    assert np.all(cal.p_values(s)[rep] <= (10 + 1) / 1001 + 1e-12)


def test_score_stats_matches_numpy():
    s = np.random.default_rng(2).uniform(size=999)
    st = score_stats(s)
    assert st["n"] == 999 and st["mean"] == pytest.approx(s.mean())
    assert st["p95"] == pytest.approx(np.percentile(s, 95))
    assert st["share_above_0.5"] == pytest.approx(np.mean(s > 0.5))
    assert score_stats(np.array([]))["n"] == 0


def test_void_evidence_gets_p_one_for_null_and_queries_alike() -> None:
    rng = np.random.default_rng(0)
    null = [rng.normal(size=300), rng.normal(size=300)]
    queries = [np.array([5.0, 5.0, 0.0]), np.array([0.0, 0.0, 0.0])]
    plain_null, plain = fuse_channels(null, queries, agree=1)
    null_void = np.zeros(300, bool)
    null_void[np.argsort(null[0])[-10:]] = True  # the null's top of channel 0 set aside
    fused_null, fused = fuse_channels(null, queries, agree=1, void={0: (null_void, np.array([False, True, False]))})
    assert fused[0] == pytest.approx(plain[0])  # counted evidence is unchanged
    assert fused[1] < plain[1] and fused[1] == pytest.approx(fused[2], abs=0.05)  # void: as if it scored nothing
    assert (fused_null[null_void] <= plain_null[null_void] + 1e-12).all()
    assert np.allclose(fused_null[~null_void], plain_null[~null_void])


def test_candidates_ordered_by_the_fusions_p_values_beyond_the_null() -> None:
    """Two candidates beyond every null score: plain rank p-values tie at 1 / (N + 1) and the raw cosine
    used to break the tie (a look-alike with a higher cosine outranked a pasted object at R^2 0.998); the
    fusion's smooth tails order them by how far beyond the null they are."""
    from diffrep.matching.calibration import channel_p_values
    from diffrep.auditing.evidence import _strength

    rng = np.random.default_rng(1)
    null_obj = np.clip(rng.beta(2, 5, 400), 0, 0.9)
    nulls = {"global": rng.uniform(0.1, 0.6, 400), "object": null_obj}
    paste = {"score": 0.25, "region_score": 0.3, "object_score": 0.998}
    lookalike = {"score": 0.55, "region_score": 0.7, "object_score": 0.94}
    assert empirical_p_values(null_obj, np.array([0.998, 0.94])).tolist() == [1 / 401] * 2  # the old tie
    p = channel_p_values(null_obj, np.array([0.998, 0.94]), saturating=True)
    assert p[0] < p[1] < 1 / 401
    assert sorted([lookalike, paste], key=lambda c: _strength(c, nulls))[0] is paste
    # the same p-values as the fusion gives a one-channel query
    _, fused = fuse_channels([null_obj], [np.array([0.998, 0.94])], agree=1, saturating=(0,))
    assert np.allclose(1 - fused, p)


def test_achieved_fpr_bound_holds_for_this_null():
    """The 95% upper bound on the false-positive rate a conformal threshold achieves for one small null: over
    fresh null draws the true rate (known here: uniform scores) exceeds it in about 5% of draws, while the
    plain target is exceeded far more often."""
    from diffrep.matching.calibration import calibrate

    rng = np.random.default_rng(0)
    over_bound = over_target = 0
    draws = 2000
    for _ in range(draws):
        cal = calibrate(reference=rng.random(70), fpr=0.01)
        true_rate = 1.0 - cal.threshold  # P(U > t) for a new uniform score
        over_bound += true_rate > cal.achieved_fpr()["upper"]
        over_target += true_rate > 0.01
    assert 0.03 < over_bound / draws < 0.07
    assert over_target / draws > 0.4


def test_small_null_says_how_many_reference_images_to_add():
    from diffrep.matching.calibration import calibrate, fpr_upper_bound, null_size_for

    need = null_size_for(0.01)
    assert need == 313  # from here on the 95% bound stays under 2%
    for n in range(need, need + 700):
        k = max(0, int(np.floor(0.01 * (n + 1) + 1e-9)) - 1)
        assert fpr_upper_bound(n, k) <= 0.02
    assert fpr_upper_bound(need - 1, 2) > 0.02
    cal = calibrate(reference=np.linspace(0, 1, 70), fpr=0.01)
    d = cal.describe()["achieved_fpr"]
    assert d["mean_at_most"] == round(1 / 71, 6) and abs(d["upper"] - (1 - 0.05 ** (1 / 70))) < 1e-6
    assert any("313 or more held-out reference images" in w for w in cal.warnings)
    assert not any("95% bound" in w for w in calibrate(reference=np.linspace(0, 1, 400), fpr=0.01).warnings)
