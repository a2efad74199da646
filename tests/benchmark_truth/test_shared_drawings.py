"""Reviewed lists of pictures drawn from one another (diffrep.shared_drawings)."""
import shared_drawings
from diffrep.datasets.clipart import family_key


def test_unrelated_subset_keeps_the_first_of_each_related_pair_in_order():
    pairs = [("a.png", "b.png"), ("b.png", "c.png"), ("d.png", "e.png")]
    # b is related to a (taken first): left out; c is related only to b, which is not taken: kept
    assert shared_drawings.unrelated_subset(["a.png", "b.png", "c.png", "x.png"], pairs) == ["a.png", "c.png", "x.png"]
    # the relation is symmetric: the order alone decides which of two related files stays
    assert shared_drawings.unrelated_subset(["e.png", "d.png"], pairs) == ["e.png"]
    assert shared_drawings.unrelated_subset(["d.png", "e.png"], pairs) == ["d.png"]


def test_openclipart_list_is_well_formed():
    pairs = shared_drawings.related_pairs("openclipart")
    assert len(pairs) == 63
    keys = [tuple(sorted(p)) for p in pairs]
    assert len(set(keys)) == len(keys), "a pair is listed twice"
    for a, b in pairs:
        assert a != b and a.endswith(".png") and b.endswith(".png")
        # the list only holds pairs the family rule keeps apart (else it would add nothing)
        assert family_key(a) != family_key(b), (a, b)
    assert shared_drawings.related_pairs("photos") == ()


def test_emoji_list_holds_pairs_the_name_rule_keeps():
    from emoji_relations import unrelated_subset

    pairs = shared_drawings.related_pairs("emoji")
    assert len(pairs) == 46
    for a, b in pairs:
        # code points alone (no captions here) would put both in one collection: hence the list
        assert unrelated_subset([a, b], {}) == [a, b], (a, b)


def test_related_to_training_spreads_a_reviewed_pair_over_both_families():
    groups = {"hand/a.png": "hand", "hand/b.png": "hand", "star/s.png": "star", "star/t.png": "star",
              "cat/c.png": "cat", "dog/d.png": "dog"}
    pairs = [("hand/b.png", "star/t.png")]
    # a.png was never reviewed, but its family holds b.png, which the review pairs with the training family
    # "star" (through t.png, which is not even in training: s.png is)
    got = shared_drawings.related_to_training(["hand/a.png", "dog/d.png"], ["star/s.png", "cat/c.png"], pairs, groups)
    assert got == {"hand/a.png": "star/s.png"}
    # the same family on both sides is related without a pair; unknown files are their own family
    assert shared_drawings.related_to_training(["cat/c.png", "x.png"], ["cat/c.png", "cat/e.png"], (), groups) == {}
    assert shared_drawings.related_to_training(["hand/a.png"], ["hand/b.png"], (), groups) == {"hand/a.png": "hand/b.png"}


def test_openclipart_whole_collection_pairs_are_well_formed():
    pairs = shared_drawings.contained_pairs("openclipart")
    assert pairs, "the whole-collection review is empty"
    keys = [tuple(sorted(p)) for p in pairs]
    assert len(set(keys)) == len(keys), "a pair is listed twice"
    assert not set(keys) & {tuple(sorted(p)) for p in shared_drawings.related_pairs("openclipart")}
    for a, b in pairs:
        assert a != b and a.endswith(".png") and b.endswith(".png")
        # candidates were cross-family pairs: the family rule alone would not keep them together
        assert family_key(a) != family_key(b), (a, b)
    assert shared_drawings.contained_pairs("emoji") == ()
