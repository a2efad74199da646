"""The shift control's parts against direct computations: the spectrum rings from the half spectrum, the
features made in chunks, the AUCs of many labellings at once."""
from __future__ import annotations

import numpy as np

import diffrep.probes.difficulty as difficulty
from diffrep.probes.roc import auc
from diffrep.probes.shift import SPECTRUM_BINS, _column_aucs, shift_control, spectrum, views


def _full_spectrum_shares(gray: np.ndarray, bins: int) -> np.ndarray:
    """The ring shares from the whole spectrum in float64, one image at a time."""
    n, h, w = gray.shape
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    ring = np.minimum((r / r.max() * bins).astype(int), bins - 1).ravel()
    counts = np.bincount(ring, minlength=bins)
    out = []
    for g in gray.astype(np.float64):
        power = np.abs(np.fft.fft2(g - g.mean())) ** 2
        sums = np.bincount(ring, weights=power.ravel(), minlength=bins)
        out.append(np.log(sums / counts / sums.sum() + 1e-12))
    return np.array(out)


def test_spectrum_rings_from_the_half_spectrum_match_the_whole_one():
    rng = np.random.default_rng(0)
    for h, w in [(32, 32), (31, 33), (33, 8), (9, 5)]:
        g = rng.random((4, h, w)).astype(np.float32)
        np.testing.assert_allclose(spectrum(g), _full_spectrum_shares(g, SPECTRUM_BINS), rtol=0, atol=1e-4)


def test_features_made_in_chunks_are_the_features_made_at_once(monkeypatch):
    rng = np.random.default_rng(1)
    ims = rng.integers(0, 256, (23, 24, 24, 3), dtype=np.uint8)
    at_once = views(ims)
    monkeypatch.setattr(difficulty, "PIXELS_PER_CHUNK", 5 * 24 * 24)  # five images a chunk
    seen = []
    in_chunks = views(ims, seen.append, offset=7, total=30)
    for a, b in zip(at_once, in_chunks):
        np.testing.assert_array_equal(a, b)
    assert [e.done for e in seen] == [7, 12, 17, 22, 27, 30] and {e.total for e in seen} == {30}
    assert [v.shape for v in views(ims[:0])] == [(0, at_once[0].shape[1]), (0, at_once[1].shape[1])]


def test_column_aucs_are_the_auc_of_each_labelling_ties_counting_half():
    rng = np.random.default_rng(2)
    labels = np.column_stack([rng.permutation(np.r_[np.ones(15), np.zeros(25)]) for _ in range(9)])
    for scores in (rng.normal(size=(40, 9)), rng.integers(0, 3, (40, 9)).astype(float), np.zeros((40, 9))):
        expected = [auc(scores[labels[:, j] == 1, j], scores[labels[:, j] == 0, j]) for j in range(9)]
        np.testing.assert_allclose(_column_aucs(scores, labels), expected, rtol=0, atol=1e-12)


def test_the_control_counts_both_sides_in_one_progress_stage():
    rng = np.random.default_rng(3)
    seen = []
    res = shift_control(rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8),
                        rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8), progress=seen.append, permutations=19)
    assert {e.stage for e in seen} == {"shift control"} and seen[-1].done == seen[-1].total == 32
    assert res["permutations"] == 19 and 0.05 <= res["p_value"] <= 1
