"""Which emoji are copies of each other: the families a train / held-out split must never cut.

Used by ``diffrep.data`` when it builds the emoji dataset's ``groups.csv``. Skin-tone and gender variants
share a concept key; pictures that are identical, mirrored, recoloured or rotated versions of each other
are found from their edge maps; captions that differ only by direction, gender or colour words form one
family; all flags form one family (they copy each other's designs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}

_TONES = {code.lower() for code in SKIN_TONES}
# man/woman/person, boy/girl/child, old man/old woman/older person: one concept each.
_PEOPLE = {"1f468": "P", "1f469": "P", "1f9d1": "P", "1f466": "C", "1f467": "C", "1f9d2": "C",
           "1f474": "O", "1f475": "O", "1f9d3": "O"}
_ALIASES = {"1f46b": "hands", "1f46c": "hands", "1f46d": "hands", "P-200d-1f91d-200d-P": "hands",
            "1f48f": "kiss", "P-200d-2764-200d-1f48b-200d-P": "kiss",
            "1f491": "couple", "P-200d-2764-200d-P": "couple",
            "1f385": "claus", "1f936": "claus", "P-200d-1f384": "claus",
            "1f934": "royal", "1f478": "royal", "1fac5": "royal"}
_TWIN_NCC = 0.95  # edge-map correlation above which two emoji are one picture recoloured/flipped/rotated
_DUPLICATE_RMS = 0.01  # 16 px thumbnails closer than this show the same picture (e.g. flags)


def emoji_concept(stem: str) -> str:
    """A key shared by an emoji's skin-tone and gender variants (e.g. man/woman/person astronaut)."""
    cps = [c for c in stem.lower().split("-") if c not in _TONES and c != "fe0f"]
    out: list[str] = []
    i = 0
    while i < len(cps):
        if cps[i] == "200d" and i + 1 < len(cps) and cps[i + 1] in ("2640", "2642"):
            i += 2
            continue
        out.append(_PEOPLE.get(cps[i], cps[i]))
        i += 1
    key = "-".join(out)
    if len(out) == 1 and len(out[0]) == 5 and "1f550" <= out[0] <= "1f567":
        return "clock-face"  # the 24 clock faces differ only by the hands' angle
    return _ALIASES.get(key, key)


def min_union_find(parent: dict) -> tuple[Callable[[Any], Any], Callable[[Any, Any], None]]:
    """``(find, union)`` over ``parent`` (every key mapped to itself at first), updated in place; a merged
    set's root is its smallest member."""
    def find(g: Any) -> Any:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    def union(a: Any, b: Any) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    return find, union


def _merge_groups(images: Path, rows: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """Merge base groups that share a concept or whose pictures are identical or mirror images (e.g. France
    and St. Martin flags; wheelchair users facing left and right); the merged group's id is its smallest base id."""
    parent = {g: g for _f, _c, g, _k in rows}
    find, union = min_union_find(parent)
    by_concept: dict[str, str] = {}
    for g in sorted(parent):
        union(by_concept.setdefault(emoji_concept(g), g), g)
    files = [r[0] for r in rows]
    for a, b in _thumbnail_twins(images, files) + _structural_twins(images, files):
        union(rows[a][2], rows[b][2])
    by_name: dict[str, str] = {}
    for _f, c, g, _k in rows:
        union(by_name.setdefault(_name_family(c), g), g)
    # Flags copy each other's designs (tricolours, the Union Jack canton, Indonesia = Monaco): a held-out
    # flag is usually a whole or partial copy of a training flag, so all flags form one family.
    flags = sorted(g for _f, _c, g, k in rows if k == "Flags")
    for g in flags[1:]:
        union(flags[0], g)
    return [(f, c, find(g), k) for f, c, g, k in rows]


_FAMILY_WORDS = frozenset(
    "man woman person men women people boy girl child adult older old up down left right leftwards "
    "rightwards upwards downwards facing black white light medium dark skin tone tones".split())


def _name_family(caption: str) -> str:
    """A caption with direction, gender, colour-word and skin-tone words removed: "white up pointing
    backhand index dark skin tone" and "white right pointing backhand index" share "pointing backhand
    index" (one picture rotated); "pregnant man" and "pregnant woman" share "pregnant". When nothing
    distinctive is left ("older man") only the skin tone is dropped."""
    words = [w.strip(",:") for w in caption.lower().replace("-", " ").split()]
    kept = [w for w in words if w and w not in _FAMILY_WORDS]
    if kept:
        return " ".join(kept)
    return " ".join(w for w in words if w not in ("light", "medium", "dark", "skin", "tone", "tones"))


def _thumbnail_twins(images: Path, files: list[str]) -> list[tuple[int, int]]:
    """Pairs whose 16 px thumbnails on white (or one's mirror image) are closer than ``_DUPLICATE_RMS``:
    the same picture (flags; "... facing right" variants and clock faces 3/9 are exact mirror images, i.e.
    flip copies, which must never straddle a train / held-out split)."""
    from PIL import Image

    thumbs = []
    for fname in files:
        with Image.open(images / fname) as im:
            rgba = im.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        thumbs.append(np.asarray(flat.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR),
                                 dtype=np.float32).ravel() / 255.0)
    if not thumbs:
        return []
    x = np.stack(thumbs)
    sq = (x * x).sum(1)
    mirrored = x.reshape(len(x), 16, 16, 3)[:, :, ::-1].reshape(len(x), -1)
    pairs: set[tuple[int, int]] = set()
    for y in (x, mirrored):
        for start in range(0, len(x), 512):
            d2 = sq[start:start + 512, None] + sq[None, :] - 2.0 * (y[start:start + 512] @ x.T)
            close = np.nonzero(d2 < (_DUPLICATE_RMS ** 2) * x.shape[1])
            pairs.update((int(a) + start, int(b)) for a, b in zip(*close) if int(a) + start != int(b))
    return sorted(pairs)


def _edge_map(path: Path, size: int = 32) -> np.ndarray:
    """Gradient magnitude of the grayscale picture on white: shape, not colour."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    g = np.asarray(flat.convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float32)
    gy, gx = np.gradient(g)
    return np.sqrt(gx * gx + gy * gy)


def _structural_twins(images: Path, files: list[str]) -> list[tuple[int, int]]:
    """Pairs whose edge maps correlate above ``_TWIN_NCC`` under one of the 8 flips/90-degree rotations:
    recoloured, mirrored or rotated versions of one picture (hearts and circles in 9 colours, tricolour
    flags, left/right pointing hands, arrows). Such a pair is an *edit* of one image, i.e. a copy, so
    it must never be split between training and held-out sets."""
    if not files:
        return []
    m = np.stack([_edge_map(images / f) for f in files])

    def unit(v: np.ndarray) -> np.ndarray:
        v = v.reshape(len(v), -1)
        v = v - v.mean(1, keepdims=True)
        return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6)

    base = unit(m)
    views = [unit(np.ascontiguousarray(np.rot90(m, k, axes=(1, 2))[:, :, ::-1] if flip else
                                       np.rot90(m, k, axes=(1, 2)))) for k in range(4) for flip in (False, True)]
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(files), 512):
        best = np.max([v[start:start + 512] @ base.T for v in views], axis=0)
        a, b = np.nonzero(best > _TWIN_NCC)
        pairs.extend((int(i) + start, int(j)) for i, j in zip(a, b) if i + start < j)
    return pairs




def _components(stem: str) -> list[tuple[str, ...]]:
    """The code-point components of an emoji between zero-width joiners, without fe0f and skin tones."""
    out: list[tuple[str, ...]] = []
    cur: list[str] = []
    for c in stem.lower().split("-") + ["200d"]:
        if c == "200d":
            if cur:
                out.append(tuple(x for x in cur if x not in _TONES))
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
    """The family name (:func:`_name_family`) without colour and size words."""
    return " ".join(w for w in _name_family(caption).split() if w not in _VARIANT_WORDS)
