"""Dedup link scores of edited copies of large drawings: which copies pass neither link rule.

Every second GCompris drawing (``diffrep data get gcompris-drawings``, 600 px; 58 drawings) gets one padded,
one blurred and one JPEG copy (the benchmark's own edits, ``diffrep.eval.bench.edits``); each copy is verified
against its original with the dedup verifier (text lines and flat frames on) and the copies whose verified
score is under 0.95 and pixel score under 0.94 (the default link thresholds) are listed.

Usage:  python benchmarks/dedup_link_scores.py [--seed 5]
"""
from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from diffrep import datasets as data
from diffrep.decode import decode_image
from diffrep.defaults import DEFAULTS
from diffrep.eval.bench.edits import apply_edit, compose_on_white
from diffrep.matching.verify import Verifier, VerifyConfig


def _array(im: Image.Image) -> np.ndarray:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "PNG")
    return decode_image(buf.getvalue(), max_pixels=10**9, min_side=256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    d = DEFAULTS["dedup"]
    files = sorted((data.get_dataset("gcompris-drawings") / "images").rglob("*.webp"))[::2]
    v = Verifier(VerifyConfig(text_overlay=True, frame_background=True))
    rng = np.random.default_rng(a.seed)
    res: dict[str, list] = {"pad": [], "blur": [], "jpeg": []}
    for f in files:
        with Image.open(f) as im:
            im.load()
            original = v.features(_array(compose_on_white(im)))
            for kind in res:
                copy, params = apply_edit(im, kind, rng)
                r = v.verify(v.query_features(_array(copy)), original)
                res[kind].append((r.score, r.pixel, f.name, params))
    for kind, rows in res.items():
        missed = [x for x in rows if x[0] < d["verified_threshold"] and x[1] < d["pixel_threshold"]]
        print(f"{kind}: {len(missed)} of {len(rows)} copies pass neither link rule")
        for score, pixel, name, params in missed:
            print(f"    {name}: verified {score:.3f}, pixel {pixel:.3f}, "
                  f"{ {k: v for k, v in params.items() if k != 'kind'} }")


if __name__ == "__main__":
    main()
