"""The emoji dataset's families: which emoji are copies of each other (a train / held-out split must never
cut one).

Used by ``diffrep.datasets`` when it builds the emoji dataset's ``groups.csv``. Skin-tone and gender variants
share a concept key; pictures that are identical, mirrored, recoloured or rotated versions of each other
are found from their edge maps; captions that differ only by direction, gender or colour words form one
family; all flags form one family (they copy each other's designs).
"""
from __future__ import annotations

import csv
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit
from .fetch import npm_pack
from .twins import min_union_find, structural_twins, thumbnail_twins

EMOJI_PACKAGE = "emoji-datasource-google@16.0.0"
_IMG_PREFIX = "package/img/google/64/"
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}

TONE_CODES = {code.lower() for code in SKIN_TONES}
# man/woman/person, boy/girl/child, old man/old woman/older person: one concept each.
_PEOPLE = {"1f468": "P", "1f469": "P", "1f9d1": "P", "1f466": "C", "1f467": "C", "1f9d2": "C",
           "1f474": "O", "1f475": "O", "1f9d3": "O"}
_ALIASES = {"1f46b": "hands", "1f46c": "hands", "1f46d": "hands", "P-200d-1f91d-200d-P": "hands",
            "1f48f": "kiss", "P-200d-2764-200d-1f48b-200d-P": "kiss",
            "1f491": "couple", "P-200d-2764-200d-P": "couple",
            "1f385": "claus", "1f936": "claus", "P-200d-1f384": "claus",
            "1f934": "royal", "1f478": "royal", "1fac5": "royal"}


def emoji_concept(stem: str) -> str:
    """A key shared by an emoji's skin-tone and gender variants (e.g. man/woman/person astronaut)."""
    cps = [c for c in stem.lower().split("-") if c not in TONE_CODES and c != "fe0f"]
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


def merge_groups(images: Path, rows: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """Merge base groups that share a concept or whose pictures are identical or mirror images (e.g. France
    and St. Martin flags; wheelchair users facing left and right); the merged group's id is its smallest base id."""
    parent = {g: g for _f, _c, g, _k in rows}
    find, union = min_union_find(parent)
    by_concept: dict[str, str] = {}
    for g in sorted(parent):
        union(by_concept.setdefault(emoji_concept(g), g), g)
    files = [r[0] for r in rows]
    for a, b in thumbnail_twins(images, files) + structural_twins(images, files):
        union(rows[a][2], rows[b][2])
    by_name: dict[str, str] = {}
    for _f, c, g, _k in rows:
        union(by_name.setdefault(name_family(c), g), g)
    # Flags copy each other's designs (tricolours, the Union Jack canton, Indonesia = Monaco): a held-out
    # flag is usually a whole or partial copy of a training flag, so all flags form one family.
    flags = sorted(g for _f, _c, g, k in rows if k == "Flags")
    for g in flags[1:]:
        union(flags[0], g)
    return [(f, c, find(g), k) for f, c, g, k in rows]


_FAMILY_WORDS = frozenset(
    "man woman person men women people boy girl child adult older old up down left right leftwards "
    "rightwards upwards downwards facing black white light medium dark skin tone tones".split())


def name_family(caption: str) -> str:
    """A caption with direction, gender, colour-word and skin-tone words removed: "white up pointing
    backhand index dark skin tone" and "white right pointing backhand index" share "pointing backhand
    index" (one picture rotated); "pregnant man" and "pregnant woman" share "pregnant". When nothing
    distinctive is left ("older man") only the skin tone is dropped."""
    words = [w.strip(",:") for w in caption.lower().replace("-", " ").split()]
    kept = [w for w in words if w and w not in _FAMILY_WORDS]
    if kept:
        return " ".join(kept)
    return " ".join(w for w in words if w not in ("light", "medium", "dark", "skin", "tone", "tones"))


def emoji_caption(base_name: str, tone_code: str | None = None) -> str:
    """Lowercased emoji name, plus the skin tone(s) in words for a variant (e.g. '1F3FB-1F3FD')."""
    caption = base_name.strip().lower()
    if not tone_code:
        return caption
    words: list[str] = []
    for part in tone_code.upper().split("-"):
        word = SKIN_TONES.get(part, part.lower())
        if word not in words:
            words.append(word)
    return f"{caption} {', '.join(words)}"


def build_emoji(out: Path, progress: Optional[ProgressCallback], _root: Path) -> None:
    images = out / "images"
    images.mkdir()
    with tempfile.TemporaryDirectory(prefix="diffrep-npm-") as scratch_s:
        scratch = Path(scratch_s)
        emit(progress, "download", 0, 1, unit="file", message=EMOJI_PACKAGE)
        tgz = npm_pack(EMOJI_PACKAGE, scratch)
        emit(progress, "download", 1, 1, unit="file", message=EMOJI_PACKAGE)
        meta: bytes | None = None
        n_png = 0
        with tarfile.open(tgz, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.name == "package/emoji.json":
                    meta = _read_member(tar, member)
                elif member.name == "package/LICENSE":
                    (out / "LICENSE").write_bytes(_read_member(tar, member))
                elif member.name.startswith(_IMG_PREFIX) and member.name.endswith(".png"):
                    fname = member.name[len(_IMG_PREFIX):]
                    if "/" in fname or fname.startswith("."):
                        continue
                    (images / fname).write_bytes(_read_member(tar, member))
                    n_png += 1
                    if n_png % 500 == 0:
                        emit(progress, "extract", n_png, None)
    if meta is None:
        raise DiffrepError(f"{EMOJI_PACKAGE} has no package/emoji.json; the package layout changed")
    present = {p.name for p in images.iterdir()}
    rows = merge_groups(images, _emoji_rows(json.loads(meta), present))
    kept = {r[0] for r in rows}
    for name in present - kept:  # an image with no metadata cannot be captioned
        (images / name).unlink()
    emit(progress, "extract", len(rows), len(rows))
    with open(out / "captions.jsonl", "w", encoding="utf-8") as fh:
        for fname, caption, _g, _c in rows:
            fh.write(json.dumps({"file": fname, "caption": caption}, ensure_ascii=False) + "\n")
    with open(out / "groups.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "group", "category"])
        for fname, _cap, group, category in rows:
            writer.writerow([fname, group, category])


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    return fh.read() if fh is not None else b""


def _emoji_rows(entries: list[dict], present: set[str]) -> list[tuple[str, str, str, str]]:
    """(file, caption, group, category) for every entry whose PNG exists, sorted by file name."""
    rows: dict[str, tuple[str, str, str, str]] = {}
    for entry in entries:
        base_img = entry.get("image")
        name = entry.get("name") or entry.get("short_name") or ""
        if not base_img or not name:
            continue
        group = Path(base_img).stem
        category = entry.get("category") or ""
        if entry.get("has_img_google", True) and base_img in present:
            rows[base_img] = (base_img, emoji_caption(name), group, category)
        for code, var in (entry.get("skin_variations") or {}).items():
            img = var.get("image")
            if img and var.get("has_img_google", True) and img in present and img not in rows:
                rows[img] = (img, emoji_caption(name, code), group, category)
    return [rows[k] for k in sorted(rows)]
