"""Reviewed lists of pictures drawn from one another (diffrep.shared_drawings)."""
from diffrep import shared_drawings
from diffrep.clipart import family_key


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
    from diffrep.emoji_groups import unrelated_subset

    pairs = shared_drawings.related_pairs("emoji")
    assert len(pairs) == 46
    for a, b in pairs:
        # code points alone (no captions here) would put both in one collection: hence the list
        assert unrelated_subset([a, b], {}) == [a, b], (a, b)
