"""Local-feature candidates (diffrep.indexing.local): RootSIFT voting over real emoji, stored in the index
directory and found again, and how they join region search."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import paste_object

from diffrep.decode import decode_image
from diffrep.indexing.build import index
from diffrep.indexing.load import open_index
from diffrep.indexing.local import LocalConfig, build_local, load_local, local_features, open_local


def _segmix(obj: Path, bg: Path, seed: int) -> np.ndarray:
    return paste_object(obj, bg, seed)[0]


def test_rootsift_rows_are_unit_vectors_and_a_flat_image_has_none(emoji_files: list[Path]) -> None:
    des = local_features(decode_image(emoji_files[648].read_bytes()))
    assert des.shape[1] == 128 and len(des) > 20
    assert np.allclose(np.linalg.norm(des, axis=1), 1, atol=1e-4) and des.min() >= 0
    assert local_features(np.full((64, 64, 3), 200, np.uint8)).shape == (0, 128)


def test_votes_find_pasted_objects_and_the_index_is_stored(emoji_files: list[Path], tmp_path: Path) -> None:
    train = emoji_files[600:700]
    read = lambda j: decode_image(train[j].read_bytes())  # noqa: E731
    local = build_local(read, len(train), tmp_path, 3)
    assert local.descriptors == int(local.counts.sum()) > 1000
    found = 0
    for src, bg, seed in ((648, 2500, 3), (620, 3100, 7), (690, 40, 11), (611, 1700, 5)):
        ids, score = local.vote(_segmix(emoji_files[src], emoji_files[bg], seed), 5)
        assert np.all(np.diff(score) <= 0)
        found += int(src - 600 in ids[:3])
        # leaving the source out (a training image as its own null) removes it from the votes
        assert src - 600 not in local.vote(_segmix(emoji_files[src], emoji_files[bg], seed), 5, exclude=src - 600)[0]
    assert found >= 3, found
    again = load_local(tmp_path, 3, len(train), LocalConfig())
    assert again is not None and again.descriptors == local.descriptors
    assert np.array_equal(again.counts, local.counts)
    # another generation of the training index, or another image count, is stale
    assert load_local(tmp_path, 4, len(train), LocalConfig()) is None
    assert load_local(tmp_path, 3, len(train) + 1, LocalConfig()) is None
    assert not list(tmp_path.glob(".local-staging-*"))  # the staged descriptors are removed


def test_open_local_builds_once_in_the_index_directory(emoji_files: list[Path], tmp_path: Path) -> None:
    from conftest import copy_images

    index(copy_images(emoji_files[600:640], tmp_path / "train"), tmp_path / "idx", descriptor="sscd-fast")
    idx = open_index(tmp_path / "idx")
    first = open_local(idx)
    assert len(list((tmp_path / "idx").glob("local-*/local.json"))) == 1

    def fail(j: int) -> np.ndarray:
        raise AssertionError("rebuilt instead of loaded")

    assert open_local(idx, read=fail).descriptors == first.descriptors


def test_region_search_appends_local_candidates_with_their_window_scores(emoji_files: list[Path]) -> None:
    from diffrep.auditing.partial import FlatIndex, region_search
    from diffrep.descriptors import get_descriptor
    from diffrep.descriptors.regions import RegionEmbedder

    d = get_descriptor("sscd-fast")
    train = emoji_files[600:700]
    vecs = d.embed_images([decode_image(f.read_bytes()) for f in train])
    local = build_local(lambda j: decode_image(train[j].read_bytes()), len(train), Path("/nonexistent"), 0,
                        save=False)
    query = _segmix(emoji_files[648], emoji_files[2500], 3)
    rm = region_search(lambda i: query, 1, FlatIndex(vecs), RegionEmbedder(d), k=3, local=local, local_k=4,
                       train_vectors=lambda ids: vecs[ids])
    assert rm.ids.shape == (1, 7) and rm.votes is not None and rm.local_only is not None
    extra = rm.local_only[0]
    assert not extra[:3].any() and set(rm.ids[0, extra]).isdisjoint(rm.ids[0, :3])
    # an appended candidate's region score is its best window's cosine against its stored vector
    for c in np.nonzero(extra)[0]:
        win, boxes = RegionEmbedder(d).regions(query)
        assert rm.scores[0, c] == pytest.approx(float((win @ vecs[rm.ids[0, c]]).max()), abs=1e-5)
    assert rm.top[0] == rm.scores[0].max()
    with pytest.raises(ValueError, match="train_vectors"):
        region_search(lambda i: query, 1, FlatIndex(vecs), RegionEmbedder(d), k=3, local=local, local_k=4)
