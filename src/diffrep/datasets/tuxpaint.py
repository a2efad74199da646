"""Tux Paint stamps (Debian package ``tuxpaint-stamps-default``, GPL-2 and CC licences: the package's
``copyright`` file is kept as ``LICENSE``): a collection no diffrep rule was chosen on.

``tuxpaint-stamps``: the pictures of objects on transparent backgrounds (about 550: photographs of fruit,
animals, tools, toys and vehicles cut out of their scenes, and cartoon drawings), every category but
``symbols`` (letters, digits, coins and shapes, which are one glyph style each). Each stamp ships a text file
whose first line is its English description: that is the caption (else the file name's words).

A *family* (``groups.csv``) is the first word of the file name within a top-level category ("apple_green",
"apple_red" and "cartoon/apple" are one family: pictures of apples), merged with the pictures that are one
picture (``twins.py``) and with the stamps drawn from shared parts (``SHARED_SETS``: the cartoon train's
wagons share one chassis and wheels, the tintable clothes one body drawing), so a split by family keeps several photographs of one kind of object,
and drawings that share a drawn part, on one side.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit
from .fetch import download_deb
from .gcompris import caption_of
from .twins import keep_picture, write_family_tables

TUXPAINT_DEB = "tuxpaint-stamps-default"
STAMPS_DIR = "usr/share/tuxpaint/stamps"
COPYRIGHT = "usr/share/doc/tuxpaint-stamps-default/copyright"
SKIPPED_CATEGORIES = ("symbols",)
MIN_SIDE = 96  # stamps smaller than this on either side are left out
# stamps drawn from shared parts, one family per set (path prefixes; looked at by eye): the wagons of the cartoon
# train share their chassis and wheels (a held-out tanker matched a training tender by that part at R^2 0.82,
# development seed 1), the tintable clothes templates ("t_") one grey drawing style and body (a held-out polo
# shirt scored pixel 0.90 against a training T-shirt), the two yellow warning diamonds one sign frame (unseen
# seeds 102-103, where they set the reference threshold)
SHARED_SETS = {
    "train-wagons": ("vehicles/locomotive/cartoon/",),
    "clothes-templates": ("clothes/t_",),
    "warning-diamonds": ("town/roadsigns/crossroads.", "town/roadsigns/t-junction."),
}


def build_tuxpaint(out: Path, progress: Optional[ProgressCallback]) -> None:
    """Fetch the package and write ``images/``, ``captions.jsonl``, ``groups.csv`` and ``LICENSE``."""
    with tempfile.TemporaryDirectory(prefix="diffrep-deb-") as scratch:
        x = download_deb(TUXPAINT_DEB, Path(scratch), progress, "elsewhere no other source is supported")
        if not (x / STAMPS_DIR).is_dir():
            raise DiffrepError(f"{TUXPAINT_DEB} has no {STAMPS_DIR}; the package layout changed, report this")
        if (x / COPYRIGHT).is_file():
            shutil.copyfile(x / COPYRIGHT, out / "LICENSE")
        rows = extract_stamps(x / STAMPS_DIR, out / "images", progress)
    write_family_tables(out, rows)


def extract_stamps(stamps: Path, images: Path, progress: Optional[ProgressCallback] = None
                   ) -> list[tuple[str, str, str, str]]:
    """Copy every distinct stamp PNG of at least ``MIN_SIDE`` px under ``stamps`` (categories other than
    ``SKIPPED_CATEGORIES``) into ``images``; return (file, caption, family, category) rows sorted by file."""
    files = sorted(p for p in stamps.rglob("*.png")
                   if p.is_file() and p.relative_to(stamps).parts[0] not in SKIPPED_CATEGORIES)
    seen: set[str] = set()
    rows = []
    for i, path in enumerate(files, 1):
        rel = path.relative_to(stamps).as_posix()
        if keep_picture(images, rel, path.read_bytes(), seen, MIN_SIDE):
            category = rel.split("/")[0]
            words = caption_of(path.stem).split()
            family = f"{category}:{words[0] if words else path.stem.lower()}"
            shared = next((name for name, prefixes in SHARED_SETS.items() if rel.startswith(prefixes)), None)
            if shared is not None:
                family = f"{category}:{shared}"
            rows.append((rel, _caption(path), family, category))
        if i % 100 == 0 or i == len(files):  # skipped files count too, so the bar always reaches its end
            emit(progress, "extract", i, len(files), unit="file")
    if not rows:
        raise DiffrepError(f"{TUXPAINT_DEB} holds no stamp pictures; the package layout changed, report this")
    return sorted(rows)


def _caption(png: Path) -> str:
    """The first line of the stamp's description file (``name.txt``), else the file name's words."""
    txt = png.with_suffix(".txt")
    if txt.is_file():
        for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and "=" not in line.split(" ")[0]:
                return line
    return caption_of(png.stem)
