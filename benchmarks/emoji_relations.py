"""Emoji that share a drawing, by names and code points: benchmark truth, not detection.

The partial-copy and dedup benchmarks (``eval_partial.py``, ``eval_dedup.py``) use these relations to keep
held-out images that contain, or are contained in, a training emoji out of the "unseen" set, and to build a
base collection without natural near-duplicates. diffrep's detectors never import this file.
"""
from __future__ import annotations

from pathlib import Path

from diffrep.datasets.emoji import TONE_CODES, name_family


def _components(stem: str) -> list[tuple[str, ...]]:
    """The code-point components of an emoji between zero-width joiners, without fe0f and skin tones."""
    out: list[tuple[str, ...]] = []
    cur: list[str] = []
    for c in stem.lower().split("-") + ["200d"]:
        if c == "200d":
            if cur:
                out.append(tuple(x for x in cur if x not in TONE_CODES))
            cur = []
        elif c != "fe0f":
            cur.append(c)
    return out


def _words(caption: str) -> tuple[str, ...]:
    return tuple(w for w in "".join(ch if ch.isalnum() else " " for ch in caption.lower()).split())


def composed_of(candidates: list[str], training: list[str], captions: dict[str, str]) -> dict[str, str]:
    """Which ``candidates`` (held-out emoji files) are drawn from a ``training`` emoji's picture: {file: the
    training file}. Google's designs reuse components: "man office worker" is the "man" head on a suit,
    "skull and crossbones" the "skull", "cloud with lightning and rain" the "cloud with lightning". Such a
    held-out image *contains* a training image (a partial copy by construction), so a partial-replication
    benchmark must not count it as unseen. Rule (names and code points only, no pixels): a single-component
    training emoji is in a candidate when it is one of the candidate's ZWJ components, or its name's words
    appear, in order and contiguous, in the candidate's name."""
    single: dict[tuple[str, ...], str] = {}
    by_name: dict[tuple[str, ...], str] = {}
    for t in sorted(training):
        comps = _components(Path(t).stem)
        if len(comps) == 1:
            single.setdefault(comps[0], t)
            w = _words(captions.get(t, ""))
            if w:
                by_name.setdefault(w, t)
    out: dict[str, str] = {}
    for f in candidates:
        comps = _components(Path(f).stem)
        hit = next((single[c] for c in comps if len(comps) > 1 and c in single), None)
        w = _words(captions.get(f, ""))
        for size in range(len(w) - 1, 0, -1):
            if hit is not None:
                break
            hit = next((by_name[w[i:i + size]] for i in range(len(w) - size + 1) if w[i:i + size] in by_name), None)
        if hit is not None and hit != f:
            out[f] = hit
    return out


def unrelated_subset(order: list[str], captions: dict[str, str], limit: int | None = None) -> list[str]:
    """A subset of ``order`` (emoji files, taken greedily in that order) in which no emoji is drawn from
    another by :func:`composed_of`'s rule ("mobile phone with rightwards arrow" is the "mobile phone" with
    an arrow, "fountain pen" names the "pen") and no two multi-part emoji share a ZWJ component ("man
    office worker" and "man health worker" are the same man in other clothes; gender signs count too, which
    is stricter than :func:`related_to`). The relation is symmetric, so which of two related emoji is kept
    depends only on their order. A collection meant to hold no near-duplicates (the dedup benchmark's
    base, docs/dedup.md) needs this beyond the families of ``groups.csv``, which only merge variants of
    one picture. Names and code points only, no pixels."""
    taken: list[str] = []
    own: set[tuple[str, ...]] = set()  # identities of taken single-part emoji: components, name words
    parts: set[tuple[str, ...]] = set()  # what taken emoji contain: components, contiguous name sub-phrases
    shared: set[tuple[str, ...]] = set()  # components of taken multi-part emoji
    for f in order:
        comps = _components(Path(f).stem)
        w = _words(captions.get(f, ""))
        mine = {("c",) + comps[0], ("w",) + w} if len(comps) == 1 else set()
        multi = {("c",) + c for c in comps} if len(comps) > 1 else set()
        inside = multi | {("w",) + w[i:i + n] for n in range(1, len(w)) for i in range(len(w) - n + 1)}
        if mine & parts or inside & own or multi & shared:
            continue
        taken.append(f)
        own |= mine
        parts |= inside
        shared |= multi
        if limit is not None and len(taken) >= limit:
            break
    return taken


_MODIFIERS = {("2640",), ("2642",), ("27a1",), ("2b1b",), ("2b1c",)}  # gender signs, arrows, colour squares
_VARIANT_WORDS = frozenset("red orange yellow green blue purple brown small large big little".split())


def related_to(candidates: list[str], training: list[str], captions: dict[str, str]) -> dict[str, str]:
    """Which ``candidates`` share a drawing with a ``training`` emoji, by names and code points (no pixels):
    {file: a related training file}. Beyond :func:`composed_of` (the candidate contains a training emoji):
    the reverse (a training emoji contains the candidate: the "mobile phone" is in the training "mobile
    phone with rightwards arrow"), a ZWJ component shared by two multi-part emoji (the same man in "man
    office worker" and "man health worker"; gender signs and arrows do not count), and names equal up to
    colour and size words ("orange book" / "blue book", "small" / "large orange diamond", "red" / "green
    apple": one picture recoloured or scaled, which ``groups.csv``'s edge-map families miss when the
    drawings differ slightly). Held-out images like these are partial or whole copies of training images,
    not unseen ones."""
    out = dict(composed_of(candidates, training, captions))
    for t, c in composed_of(training, candidates, captions).items():
        out.setdefault(c, t)
    by_comp: dict[tuple[str, ...], str] = {}
    by_name: dict[str, str] = {}
    for t in sorted(training):
        comps = _components(Path(t).stem)
        if len(comps) > 1:
            for c in comps:
                if c not in _MODIFIERS:
                    by_comp.setdefault(c, t)
        by_name.setdefault(_variant_name(captions.get(t, "")), t)
    by_name.pop("", None)
    for f in candidates:
        if f in out:
            continue
        comps = _components(Path(f).stem)
        hit = next((by_comp[c] for c in comps if len(comps) > 1 and c in by_comp), None)
        hit = hit or by_name.get(_variant_name(captions.get(f, "")))
        if hit is not None and hit != f:
            out[f] = hit
    return out


def _variant_name(caption: str) -> str:
    """The family name (:func:`diffrep.datasets.emoji.name_family`) without colour and size words."""
    return " ".join(w for w in name_family(caption).split() if w not in _VARIANT_WORDS)
