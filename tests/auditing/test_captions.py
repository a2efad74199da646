from __future__ import annotations

import math

import pytest

from diffrep.auditing.captions import caption_analysis, jaccard, over_represented, shared_tokens, tokens


def test_tokens_and_jaccard_hand_computed():
    assert tokens("The Canvas Wall-Art print, of a CAT") == ["canvas", "wall", "art", "print", "cat"]
    assert jaccard("canvas wall art", "wall art print") == pytest.approx(2 / 4)
    assert jaccard("a cat", "the dog") == 0.0
    assert jaccard(None, "dog") is None and jaccard("the", "dog") is None
    assert shared_tokens("Red Fox at dawn", "a red fox") == {"red", "fox"}


def test_over_represented_log_odds():
    prompts = ["canvas print cat"] * 4 + ["cat photo"] * 6 + ["dog photo"] * 10
    reps = [True] * 4 + [False] * 16
    top = over_represented(prompts, reps)
    assert top[0]["word"] in ("canvas", "print") and top[0]["replica_prompts"] == 4
    assert top[0]["other_prompts"] == 0
    assert top[0]["log_odds"] == pytest.approx(math.log((4.5 / 0.5) / (0.5 / 16.5)))
    assert all(d["word"] != "photo" for d in top)  # never in replica prompts


def test_caption_analysis_summary():
    s = caption_analysis(["canvas wall art", "a dog", None], ["canvas wall art print", "cat", "x"],
                         [True, False, False])
    assert s["with_prompt"] == 2
    assert s["jaccard_replicas"] == pytest.approx(3 / 4) and s["jaccard_non_replicas"] == 0.0
    assert caption_analysis([None, ""], ["a", "b"], [True, False]) is None
