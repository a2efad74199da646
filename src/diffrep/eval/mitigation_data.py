"""The data of ``diffrep experiment mitigation``: a captioned Fashion-MNIST training folder in which a few
images are near-duplicated many times under their own caption (the memorized prompts), and the held-out real
images that judge the generations.

``build(folder, p, seed)`` writes, once per settings (``folder/split.json`` records them):

- ``train/``: ``per_class`` ordinary images per class, captioned by a template naming the class ("a photo of a
  sneaker"), plus ``dup_copies`` exact copies of each of ``dup_images`` memorized images (files of their own,
  as exact duplicates sit in scraped data), captioned "<class> <three pseudo-words>" (a caption unique to the
  image: LAION's memorized prompts are such captions of duplicated images);
  ``captions.jsonl``.
- ``sources/``: each distinct training image once (the audit's index); ``memorized/``: the memorized originals.
- ``reference/``: ``reference`` held-out test images (calibrate the audit); ``real/``: ``real`` other held-out
  test images at the training resolution (KID's real side; the classifier's ceiling); ``classifier/``:
  ``classifier_per_class`` training-split images per class never trained on (the adherence classifier).

Ordinary prompts are *held out*: for class c the template ``TEMPLATES[c % 4]`` never captions a training
image of class c (every word of it captions other classes), so no ordinary prompt string was trained on.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import finished, write_json, write_text

CLASS_WORDS = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}", "a {}")
KEY_WORDS = 3  # pseudo-words in a memorized caption
LAYOUT = 2  # bumped when the files built from the same settings change (2: exact copies)


def ordinary_prompts() -> list[str]:
    """The held-out ordinary prompt of each class (index = class)."""
    return [TEMPLATES[c % len(TEMPLATES)].format(w) for c, w in enumerate(CLASS_WORDS)]


def build(folder: Path, p: dict[str, Any], seed: int) -> dict[str, Any]:
    """Write the experiment's data into ``folder`` (see the module docstring); returns ``split.json``."""
    keys = ("per_class", "dup_images", "dup_copies", "reference", "real", "classifier_per_class", "size")
    want = {k: p[k] for k in keys} | {"seed": seed, "layout": LAYOUT}
    marker = folder / "split.json"
    old = finished(marker, want)
    if old is not None:
        return old
    from ..datasets.fashion import load_fashion_mnist_arrays
    from .experiment import random_captions

    train_x, train_y, test_x, _test_y = load_fashion_mnist_arrays()
    rng = np.random.default_rng([seed, 25])
    if folder.exists():
        shutil.rmtree(folder)
    for name in ("train", "sources", "memorized", "reference", "real", "classifier"):
        (folder / name).mkdir(parents=True)
    n_cls = len(CLASS_WORDS)
    mem_classes = [k % n_cls for k in range(p["dup_images"])]
    chosen: dict[int, list[int]] = {}
    for c in range(n_cls):
        pool = rng.permutation(np.flatnonzero(train_y == c))
        need = p["per_class"] + mem_classes.count(c) + p["classifier_per_class"]
        chosen[c] = [int(i) for i in pool[:need]]
    captions, memorized = [], {}
    keys_text = random_captions([str(k) for k in range(p["dup_images"])], seed)
    for c in range(n_cls):
        idx = chosen[c]
        ordinary, rest = idx[:p["per_class"]], idx[p["per_class"]:]
        others = [t for j, t in enumerate(TEMPLATES) if j != c % len(TEMPLATES)]
        for j, i in enumerate(ordinary):
            name = f"o{c}_{j:03d}.png"
            _save(train_x[i], folder / "train" / name)
            shutil.copyfile(folder / "train" / name, folder / "sources" / name)
            captions.append({"file": name, "caption": others[j % len(others)].format(CLASS_WORDS[c])})
        for k in [k for k, mc in enumerate(mem_classes) if mc == c]:
            i = rest.pop(0)
            caption = f"{CLASS_WORDS[c]} " + " ".join(keys_text[k].split()[:KEY_WORDS])
            memorized[caption] = f"m{k:03d}.png"
            _save(train_x[i], folder / "sources" / f"m{k:03d}.png")
            shutil.copyfile(folder / "sources" / f"m{k:03d}.png", folder / "memorized" / f"m{k:03d}.png")
            for copy in range(p["dup_copies"]):
                name = f"m{k:03d}_{copy:03d}.png"
                shutil.copyfile(folder / "sources" / f"m{k:03d}.png", folder / "train" / name)
                captions.append({"file": name, "caption": caption})
        for j, i in enumerate(rest):
            _save(train_x[i], folder / "classifier" / f"c{c}_{j:04d}.png", p["size"])
    write_text(folder / "train" / "captions.jsonl", "".join(json.dumps(r) + "\n" for r in captions))
    order = rng.permutation(len(test_x))
    for j, i in enumerate(order[:p["reference"]]):
        _save(test_x[i], folder / "reference" / f"r{j:05d}.png")
    for j, i in enumerate(order[p["reference"]:p["reference"] + p["real"]]):
        _save(test_x[i], folder / "real" / f"t{j:05d}.png", p["size"])
    info = {"settings": want, "memorized": memorized, "ordinary": ordinary_prompts(),
            "training_files": len(captions)}
    write_json(marker, info)
    return info


def label_of(name: str) -> int:
    """The class of a ``classifier/`` file (``c<class>_<n>.png``)."""
    return int(Path(name).name[1:].split("_", 1)[0])


def _save(img: np.ndarray, path: Path, size: int = 0) -> None:
    """Save a uint8 grayscale image as PNG, resized (bicubic, as training resizes) to ``size`` when given."""
    from PIL import Image

    im = Image.fromarray(img)
    if size and im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    im.save(path, format="PNG")
