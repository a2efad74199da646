"""Which emoji share a drawing, by names and code points (benchmark hygiene: docs/partial.md, docs/dedup.md)."""
from __future__ import annotations

import pytest

from diffrep.datasets import get_dataset, read_captions
from emoji_relations import composed_of, related_to, unrelated_subset

PHONE, PHONE_ARROW = "1f4f1.png", "1f4f2.png"
PEN, FOUNTAIN_PEN = "1f58a-fe0f.png", "1f58b-fe0f.png"
MAN, OFFICE, HEALTH = "1f468.png", "1f468-200d-1f4bc.png", "1f468-200d-2695-fe0f.png"
SKULL, CROSSBONES = "1f480.png", "2620-fe0f.png"
BLUE_BOOK, ORANGE_BOOK, RED_APPLE = "1f4d8.png", "1f4d9.png", "1f34e.png"
WOMAN_RUNNING, WOMAN_BIKING = "1f3c3-200d-2640-fe0f.png", "1f6b4-200d-2640-fe0f.png"


@pytest.fixture(scope="module")
def captions() -> dict[str, str]:
    caps = read_captions(get_dataset("emoji"))
    for f in (PHONE, PHONE_ARROW, PEN, FOUNTAIN_PEN, MAN, OFFICE, HEALTH, SKULL, CROSSBONES, BLUE_BOOK,
              ORANGE_BOOK, RED_APPLE, WOMAN_RUNNING, WOMAN_BIKING):
        assert f in caps, f
    return caps


def test_composed_of_finds_contained_training_emoji(captions):
    got = composed_of([OFFICE, CROSSBONES, RED_APPLE], [MAN, SKULL, PEN], captions)
    assert got == {OFFICE: MAN, CROSSBONES: SKULL}


def test_related_to_adds_reverse_shared_parts_and_recolours(captions):
    got = related_to([PHONE, OFFICE, ORANGE_BOOK, RED_APPLE, WOMAN_BIKING],
                     [PHONE_ARROW, HEALTH, BLUE_BOOK, PEN, WOMAN_RUNNING], captions)
    # the phone is inside "mobile phone with rightwards arrow"; the office and health workers are one man;
    # the orange book is the blue book recoloured. A shared gender sign is not a shared drawing.
    assert got == {PHONE: PHONE_ARROW, OFFICE: HEALTH, ORANGE_BOOK: BLUE_BOOK}


def test_unrelated_subset_keeps_one_of_each_shared_drawing(captions):
    order = [PHONE, PHONE_ARROW, PEN, FOUNTAIN_PEN, OFFICE, HEALTH, RED_APPLE]
    assert unrelated_subset(order, captions) == [PHONE, PEN, OFFICE, RED_APPLE]
    assert unrelated_subset(order, captions, limit=2) == [PHONE, PEN]
