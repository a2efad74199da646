"""The openclipart collection's families (diffrep.datasets.clipart): names, identical and recoloured pictures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from diffrep.datasets.clipart import MAX_SIDE, build, caption_of, family_key
from diffrep.datasets import read_captions, read_groups


def test_family_key_drops_numbers_letters_and_colours():
    assert family_key("shapes/jigsaw/jigsaw_red_07.png") == family_key("shapes/jigsaw/jigsaw_blue_12.png")
    assert family_key("shapes/stars/star_74pt33step.png") == family_key("shapes/stars/star_16pt05step.png")
    assert family_key("recreation/games/cards/simple/simple_d_k.png") == \
        family_key("recreation/games/cards/simple/simple_h_a.png")
    assert family_key("animals/cat_01.png") != family_key("animals/dog_01.png")
    assert family_key("geography/map_of_poland_guziec_.png") == \
        family_key("transportation/map_of_poland_guziec_.png")  # one picture, two folders
    assert family_key("computer/alcatel_oxo_nicolas_cle_.png") == family_key("computer/alcatel_oxo_nicolas_clem1.png")
    assert family_key("signs_and_symbols/flags/semaphore/semaphore_lima.png") == family_key("x/flag_of_chad.png")
    assert family_key("computer/icons/70a001.png") != family_key("computer/70a002.png")  # no words: folder


def test_symbol_sets_are_one_family_each():
    """An icon theme's pictures share parts (its help lifebuoy is drawn into its document icons): one family."""
    theme = family_key("computer/icons/etiquette-theme/gtk-stock-help.png")
    assert theme == family_key("computer/icons/etiquette-theme/mimetypes/gnome-mime-text-x-troff-man.png")
    assert theme != family_key("computer/icons/flat-theme/zip.png")  # another theme
    assert family_key("computer/icons/flat-theme/action/zip.png") == family_key("computer/icons/flat-theme/zip.png")
    assert family_key("people/smilies/air_stefan_bazelkov_01.png") == family_key("people/smilies/base.png")
    assert family_key("people/smilies/base.png") != theme
    assert family_key("computer/hardware/computer.png") != theme  # a sibling folder is not in the set
    assert caption_of("recreation/music/trumpet_herald__ganson.png") == "trumpet herald ganson"


def _tree(tmp: Path, pictures: dict[str, Image.Image]) -> Path:
    root = tmp / "x"
    for rel, im in pictures.items():
        p = root / "usr/share/openclipart/png" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        im.save(p)
    return root


def test_build_groups_variants_and_skips_empty_pictures(tmp_path, emoji_files):
    apple = Image.open(emoji_files[1200]).convert("RGBA").resize((300, 300), Image.Resampling.LANCZOS)
    other = Image.open(emoji_files[400]).convert("RGBA")
    recoloured = apple.copy()
    px = np.asarray(recoloured).copy()
    px[..., :3] = px[..., [2, 0, 1]]  # channels swapped: a recolour of the same drawing
    empty = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    root = _tree(tmp_path, {"food/apple_anna_01.png": apple, "food/fruit/tasty.png": Image.fromarray(px, "RGBA"),
                            "animals/zebra.png": other, "special/blank.png": empty})
    out = tmp_path / "ds"
    (out / "images").mkdir(parents=True)
    build(out, root)
    groups = read_groups(out)
    assert sorted(groups) == ["animals/zebra.png", "food/apple_anna_01.png", "food/fruit/tasty.png"]
    assert groups["food/fruit/tasty.png"][0] == groups["food/apple_anna_01.png"][0]  # recolour: one family
    assert groups["animals/zebra.png"][0] != groups["food/apple_anna_01.png"][0]
    with Image.open(out / "images/food/apple_anna_01.png") as im:
        assert max(im.size) == MAX_SIDE and im.mode == "RGBA"
    assert read_captions(out)["food/apple_anna_01.png"] == "apple anna"
    assert json.loads((out / "captions.jsonl").read_text().splitlines()[0])["file"] == "animals/zebra.png"
