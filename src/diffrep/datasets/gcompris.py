"""GCompris pictures (Debian package ``gcompris-qt-data``, GPL-3 and CC licences: the package's ``copyright``
file is kept as ``LICENSE``): a collection no diffrep rule was chosen on.

- ``gcompris-photos``: the photographs of five activities (objects by category, animals, monuments; about 240
  pictures, most of them real scenes, some objects on white);
- ``gcompris-drawings``: the cartoon drawings of the vocabulary activity (about 110, transparent backgrounds).

The pictures are read out of the package's Qt resource archives (``rcc.py``) and kept as they are (WebP).
Captions come from file names ("screwDriver2" -> "screw driver"); a *family* (``groups.csv``) is a caption
within an activity (nine photographs of hammers are one family), merged with the pictures that are one
picture (``twins.py``) and with the vocabulary drawings drawn from shared parts (``SHARED_SETS``: the colour
words are one paint can recoloured, the numbers one style of digit, the body parts one boy with arrows, the
family words the same characters), so a split by family keeps near-copies and shared drawings on one side.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit
from .fetch import download_deb
from .rcc import read_rcc
from .twins import keep_picture, write_family_tables

GCOMPRIS_DEB = "gcompris-qt-data"
RCC_DIR = "usr/share/gcompris-qt/rcc"
COPYRIGHT = "usr/share/doc/gcompris-qt-data/copyright"
KINDS = {
    "photos": ("categorization", "erase", "explore_monuments", "explore_world_animals", "explore_farm_animals"),
    "drawings": ("lang",),
}
EXTENSIONS = (".webp", ".png", ".jpg", ".jpeg")
MIN_SIDE = 96  # sprites and thumbnails under this are left out
# vocabulary drawings (activity "lang") made from one drawing each set: one family per set (looked at by eye)
SHARED_SETS = {
    "colours": {"black", "blue", "brown", "color", "gray", "green", "mauve", "orange color", "pink", "red", "white",
                "yellow"},
    "numbers": {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "sixteen"},
    "body": {"arm", "back", "ear", "eyes", "face", "finger", "foot", "hair", "hand", "head", "knee", "leg", "mouth",
             "neck", "nose", "skin", "teeth", "thumb", "tongue"},
    "people": {"boy", "brother", "child", "dad", "family", "friend", "girl", "grandmother", "man", "mother", "sister",
               "son", "woman"},
}


def caption_of(stem: str) -> str:
    """Words of a file name: camelCase and underscores split, digits and single letters dropped."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem).replace("_", " ").replace("-", " ")
    kept = [w.lower() for w in re.sub(r"\d+", " ", words).split() if len(w) > 1]
    return " ".join(kept) or stem.lower()


def build_gcompris(kind: str, out: Path, progress: Optional[ProgressCallback]) -> None:
    """Fetch the package and write ``images/``, ``captions.jsonl``, ``groups.csv`` and ``LICENSE`` for ``kind``."""
    if kind not in KINDS:
        raise DiffrepError(f"unknown GCompris set {kind!r}; use one of {', '.join(KINDS)}")
    with tempfile.TemporaryDirectory(prefix="diffrep-deb-") as scratch:
        x = download_deb(GCOMPRIS_DEB, Path(scratch), progress, "elsewhere no other source is supported")
        shutil.copyfile(x / COPYRIGHT, out / "LICENSE")
        rows = _extract(x / RCC_DIR, KINDS[kind], out / "images", progress)
    if not rows:
        raise DiffrepError(f"{GCOMPRIS_DEB} holds no pictures for {kind}; the package layout changed, report this")
    write_family_tables(out, rows)


def _extract(rcc_dir: Path, activities: tuple[str, ...], images: Path,
             progress: Optional[ProgressCallback]) -> list[tuple[str, str, str, str]]:
    """(file, caption, family, activity) of every distinct picture of ``activities``, sorted by file."""
    seen: set[str] = set()
    rows = []
    for i, activity in enumerate(activities):
        archive = rcc_dir / f"{activity}.rcc"
        if not archive.is_file():
            raise DiffrepError(f"{GCOMPRIS_DEB} has no {activity}.rcc; the package layout changed, report this")
        for name, blob in sorted(read_rcc(archive).items()):
            stem, ext = Path(name).stem, Path(name).suffix.lower()
            rel = f"{activity}/{Path(name).parent.name}/{stem}{ext}"
            if ext not in EXTENSIONS or not keep_picture(images, rel, blob, seen, MIN_SIDE):
                continue
            caption = caption_of(stem)
            family = next((f"{activity}:{name}" for name, words in SHARED_SETS.items()
                           if activity == "lang" and caption in words), f"{activity}:{caption}")
            rows.append((rel, caption, family, activity))
        emit(progress, "extract", i + 1, len(activities), unit="archive")
    return sorted(rows)
