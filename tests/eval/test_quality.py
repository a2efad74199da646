"""KID on EfficientNet-Lite0 features of real packaged images: unbiased near zero for one distribution, clearly
positive between two, and the bootstrap interval around the estimate."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from diffrep.eval.quality import image_features, kid, mmd2_unbiased  # noqa: E402


def test_mmd_estimator_leaves_self_pairs_out():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_unbiased(x, y, np.arange(30), np.arange(30)))
    dup = np.concatenate([np.arange(30), [0, 0, 0]])  # resampled rows: copies of image 0 are not pairs
    assert mmd2_unbiased(x[dup], y, dup, np.arange(30)) < mmd2_unbiased(x[dup], y) + 1e-9


def test_kid_separates_datasets_on_real_images(emoji_files, tmp_path):
    from diffrep.datasets import get_dataset

    fm = get_dataset("fashion-mnist") / "images" / "test"
    picks = np.random.default_rng(1).permutation(len(emoji_files))[:60]
    (tmp_path / "e").mkdir()
    for i in picks:
        shutil.copyfile(emoji_files[i], tmp_path / "e" / emoji_files[i].name)
    (tmp_path / "f").mkdir()
    for p in sorted(fm.rglob("*.png"))[::250][:30]:
        shutil.copyfile(p, tmp_path / "f" / f"{p.parent.name}_{p.name}")
    e, f = image_features(tmp_path / "e"), image_features(tmp_path / "f")
    assert e.shape == (60, 1280) and f.shape == (30, 1280)
    same = kid(e[:30], e[30:], subset_size=30, boot=200)
    other = kid(e[:30], f, subset_size=30, boot=200)
    assert same["ci"][0] <= same["kid"] <= same["ci"][1] and same["ci"][0] < 0 < same["ci"][1]
    assert other["ci"][0] > same["ci"][1] and other["kid"] > 10 * abs(same["kid"])
    assert other["features"] == "effnet-lite0" and other["subset_size"] == 30
