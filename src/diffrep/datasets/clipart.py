"""The openclipart collection (Debian package ``openclipart-png``: public-domain clip art, about 8,000 PNGs).

A second packaged image collection, drawn by many hands: the collection the dedup and partial-replication
benchmarks were measured on besides emoji (docs/results/ says which rules were chosen on which of its seeds). ``datasets.get_dataset("openclipart")`` unpacks
the package and keeps each picture as an RGBA PNG at most ``MAX_SIDE`` px on its longer side (aspect kept),
with a caption from its file name and a ``groups.csv`` of *families*: pictures that are variants of one
another must share a group, so that a split by group never holds out a near-copy of a training picture and
a collection of one picture per group holds no natural duplicates. Families are merged from

- names: the file name's first 20 characters without digits, colour words and variant words, in any
  folder (the 48 jigsaw pieces in three colours, the ~1,360 generated stars ``star_74pt33step``, one
  author's numbered series ``clock_michael_breuer_01/_02``, a playing-card deck ``simple_d_k``: single
  letters are dropped; one picture filed in two folders; names the package cut short); all flags;
- symbol sets: every picture in a folder of a designed icon or symbol system (``SYMBOL_SETS``: the icon
  themes (one family per theme), buttons, map and AIGA symbols, road signs, LEDs, weather icons, smilies, stick figures, flowchart
  shapes and callouts) is one family per set, because such sets are drawn from shared parts (a theme's
  help lifebuoy reappears in its document icons; one smiley face under many hats);
- pixels: identical or mirror-image 16 px thumbnails, and edge maps that correlate above 0.95 under a
  flip or quarter turn (recoloured or turned copies), the rules the emoji groups use.

Pictures that are nearly empty (under 1% of the canvas drawn, or one flat colour) or over 40 megapixels
(eight generated stars) are left out.
"""
from __future__ import annotations

import csv
import json
import re
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from ..progress import ProgressCallback, emit
from .fetch import download_deb
from .twins import min_union_find, structural_twins, thumbnail_twins

OPENCLIPART_DEB = "openclipart-png"
MAX_SIDE = 128
_KEY_CHARS = 20
MAX_PIXELS = 40_000_000  # eight star pictures of ~170 MP (680 MB decoded each) are left out
_PREFIX = "usr/share/openclipart/png/"
_VARIANT_WORDS = frozenset(
    "red orange yellow green blue purple violet pink brown black white grey gray gold silver cyan magenta "
    "light dark small big large little mini tiny disabled active inactive hover pressed normal on off "
    "left right up down top bottom front back side color colour bw mono outline filled plain "
    "version ver alt new old".split())
# Folders whose pictures were designed as one system from shared parts (chosen from the folder names and
# file names, before any benchmark result with the rule): a picture under one of them belongs to that
# set's family, whatever its name.
SYMBOL_SETS = ("computer/icons/etiquette-theme", "computer/icons/flat-theme", "computer/icons/lemon-theme",
               "computer/buttons", "signs_and_symbols/map_symbols", "signs_and_symbols/led",
               "signs_and_symbols/weather", "transportation/aiga-symbols", "transportation/roadsigns",
               "people/smilies", "people/stickmen", "shapes/flowchart", "shapes/callouts")


def family_key(rel: str) -> str:
    """The name family of a picture ``folder/name.png``: the first ``_KEY_CHARS`` characters of its name's
    words other than numbers, single letters, colour and variant words, in any folder
    ("shapes/jigsaw/jigsaw_red_07.png" -> "jigsaw"). The package files one picture under several folders
    ("geography/map_of_poland_guziec_.png" and "signs_and_symbols/map_symbols/map_of_poland_guziec_.png")
    and cuts long names ("alcatel_oxo_nicolas_cle_" / "alcatel_oxo_nicolas_clem1"), hence no folder and a
    prefix. Flags share designs (the Union Jack canton, tricolours, semaphore figures): every picture under
    a ``flags`` folder or with "flag" in its name is one family, and so is every picture of a symbol set
    (``SYMBOL_SETS``, any subfolder). A name with no words left keeps its folder."""
    folder, _, name = rel.rpartition("/")
    for sym in SYMBOL_SETS:
        if folder == sym or folder.startswith(sym + "/"):
            return f"set:{sym}"
    if "flags" in folder.split("/") or "flag" in name.lower():
        return "flags"
    words = [w for w in re.split(r"[^a-z]+", Path(name).stem.lower())
             if len(w) > 1 and w not in _VARIANT_WORDS]
    return " ".join(words)[:_KEY_CHARS] if words else f"{folder}:"


def caption_of(rel: str) -> str:
    """A caption from the file name: "recreation/music/trumpet_herald__ganson.png" -> "trumpet herald ganson"."""
    return " ".join(w for w in re.split(r"[^a-zA-Z]+", Path(rel).stem) if w).lower() or "clip art"


def _normalise(data: bytes) -> Optional["np.ndarray"]:
    """RGBA array at most MAX_SIDE px, or None for an unreadable or nearly empty picture."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                return None
            im.draft("RGBA", (MAX_SIDE, MAX_SIDE))
            rgba = im.convert("RGBA")
    except Exception:  # noqa: BLE001 - a broken file in the package is skipped, not fatal
        return None
    if min(rgba.size) < 8:
        return None
    rgba.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    a = np.asarray(rgba)
    drawn = a[..., 3] > 32
    if drawn.mean() < 0.01 or a[drawn][:, :3].std() < 1.0 and drawn.mean() > 0.99:
        return None
    return a


def build(out: Path, extracted: Path, progress: Optional[ProgressCallback] = None) -> None:
    """Write ``images/``, ``captions.jsonl``, ``groups.csv`` and ``LICENSE`` into ``out`` from the
    unpacked package at ``extracted``."""
    from PIL import Image

    src = extracted / _PREFIX
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    if not files:
        from ..errors import DiffrepError
        raise DiffrepError(f"{OPENCLIPART_DEB} holds no PNG under /{_PREFIX}; the package layout changed")
    images = out / "images"
    kept: list[str] = []
    for i, rel in enumerate(files):
        a = _normalise((src / rel).read_bytes())
        if a is not None:
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a, "RGBA").save(images / rel, format="PNG")
            kept.append(rel)
        if (i + 1) % 500 == 0 or i + 1 == len(files):
            emit(progress, "export", i + 1, len(files))
    find, union = min_union_find({i: i for i in range(len(kept))})
    first: dict[str, int] = {}
    for i, rel in enumerate(kept):
        union(first.setdefault(family_key(rel), i), i)
    for a, b in thumbnail_twins(images, kept) + structural_twins(images, kept):
        union(a, b)
    with open(out / "captions.jsonl", "w", encoding="utf-8") as fh:
        for rel in kept:
            fh.write(json.dumps({"file": rel, "caption": caption_of(rel)}) + "\n")
    with open(out / "groups.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "group", "category"])
        for i, rel in enumerate(kept):
            w.writerow([rel, Path(kept[find(i)]).with_suffix("").as_posix(), rel.split("/")[0]])
    lic = extracted / "usr/share/doc/openclipart-png/copyright"
    if lic.is_file():
        (out / "LICENSE").write_bytes(lic.read_bytes())


def build_openclipart(out: Path, progress: Optional[ProgressCallback], _root: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="diffrep-deb-") as scratch_s:
        x = download_deb(OPENCLIPART_DEB, Path(scratch_s), progress,
                          "elsewhere no other source is supported")
        build(out, x, progress)
