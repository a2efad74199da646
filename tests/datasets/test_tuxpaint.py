"""Tux Paint stamps: which stamps are kept, their captions and families, from a tree laid out as the Debian
package lays it out (``usr/share/tuxpaint/stamps/<category>/.../<name>.png`` beside ``<name>.txt``)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from diffrep.datasets.tuxpaint import extract_stamps
from diffrep.datasets.twins import write_family_tables
from diffrep.errors import DiffrepError


def _stamp(path: Path, seed: int, size: int = 128, text: str | None = None) -> None:
    """A transparent stamp holding one random coloured polygon; ``text``: its description file."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pts = [tuple(int(v) for v in rng.integers(8, size - 8, 2)) for _ in range(6)]
    ImageDraw.Draw(im).polygon(pts, fill=tuple(int(v) for v in rng.integers(0, 255, 3)) + (255,))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    if text is not None:
        path.with_suffix(".txt").write_text(text, encoding="utf-8")


def test_stamps_keep_objects_with_captions_and_families(tmp_path):
    s = tmp_path / "stamps"
    _stamp(s / "food/fruit/apple_green.png", 1, text="A green apple.\nfr.utf8=Une pomme verte.\n")
    _stamp(s / "food/fruit/apple_red.png", 2, text="A red apple.\n")
    _stamp(s / "food/fruit/cartoon/apple.png", 3)  # no description: the file name's words
    _stamp(s / "vehicles/boat.png", 4, text="A boat.\n")
    _stamp(s / "vehicles/boat_copy.png", 4, text="A boat.\n")  # byte-identical to boat.png: kept once
    _stamp(s / "vehicles/tinycar.png", 5, size=40, text="A car.\n")  # under MIN_SIDE
    _stamp(s / "symbols/alphabets/a.png", 6, text="The letter A.\n")  # glyphs are left out
    _stamp(s / "vehicles/locomotive/cartoon/tender.png", 9, text="A tender.\n")  # wagons share their wheels
    _stamp(s / "vehicles/locomotive/cartoon/caboose.png", 10, text="A caboose.\n")
    _stamp(s / "clothes/t_shirt.png", 11, text="A shirt.\n")  # one template drawing style
    _stamp(s / "clothes/t_sock.png", 12, text="A sock.\n")
    out = tmp_path / "ds"
    events = []
    rows = extract_stamps(s, out / "images", progress=events.append)
    assert (events[-1].done, events[-1].total) == (10, 10)  # the bar ends though the last file (tinycar) is skipped
    files = [r[0] for r in rows]
    assert files == ["clothes/t_shirt.png", "clothes/t_sock.png", "food/fruit/apple_green.png", "food/fruit/apple_red.png", "food/fruit/cartoon/apple.png",
                     "vehicles/boat.png", "vehicles/locomotive/cartoon/caboose.png",
                     "vehicles/locomotive/cartoon/tender.png"]
    assert {r[0]: r[1] for r in rows}["food/fruit/apple_green.png"] == "A green apple."
    assert {r[0]: r[1] for r in rows}["food/fruit/cartoon/apple.png"] == "apple"
    write_family_tables(out, rows)
    groups = {row["file"]: row["group"] for row in csv.DictReader(open(out / "groups.csv", encoding="utf-8"))}
    assert groups["food/fruit/apple_green.png"] == groups["food/fruit/apple_red.png"] \
        == groups["food/fruit/cartoon/apple.png"] == "food:apple"
    assert groups["vehicles/boat.png"] == "vehicles:boat"
    assert groups["vehicles/locomotive/cartoon/caboose.png"] == groups["vehicles/locomotive/cartoon/tender.png"]
    assert groups["clothes/t_shirt.png"] == groups["clothes/t_sock.png"] == "clothes:clothes-templates"
    caps = [json.loads(line) for line in open(out / "captions.jsonl", encoding="utf-8")]
    assert [c["file"] for c in caps] == files and (out / "images/vehicles/boat.png").is_file()


def test_a_mirrored_stamp_joins_its_pictures_family(tmp_path):
    s = tmp_path / "stamps"
    _stamp(s / "animals/cat.png", 7, text="A cat.\n")
    with Image.open(s / "animals/cat.png") as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(s / "animals/kitten_left.png")
    _stamp(s / "animals/dog.png", 8, text="A dog.\n")
    out = tmp_path / "ds"
    rows = extract_stamps(s, out / "images")
    write_family_tables(out, rows)
    groups = {row["file"]: row["group"] for row in csv.DictReader(open(out / "groups.csv", encoding="utf-8"))}
    assert groups["animals/cat.png"] == groups["animals/kitten_left.png"] != groups["animals/dog.png"]


def test_a_tree_without_stamps_is_refused(tmp_path):
    _stamp(tmp_path / "stamps/symbols/a.png", 1)
    with pytest.raises(DiffrepError, match="no stamp pictures"):
        extract_stamps(tmp_path / "stamps", tmp_path / "images")
