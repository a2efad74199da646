"""What the membership shift control catches, and what a shift does to dataset inference without it.

On models of `diffrep experiment membership` (run it first; N = 100, 1,000 steps by default), sets of images
are tested as a whole against the experiment's 300 reference images, as `diffrep membership --set` does:

- members: sets of the model's own training images (same source as the reference);
- same source: sets of test non-members (never trained on, same source);
- 5 of 10 classes: test non-members of the classes 0-4 only (a portfolio of one kind of picture);
- JPEG qQ: test non-members saved as JPEG at quality Q (another processing pipeline; 75 unless
  ``--jpeg-qualities`` names others), scored by the model;
- blurred: test non-members downscaled to 70% and back (another resize pipeline), scored by the model;
- from 3x: test non-members enlarged 3x (Lanczos) and brought back to the model's size by diffrep's loader
  (centre crop, bicubic), as a portfolio kept at a higher resolution than the reference would be.

Per scenario and model, over `--draws` random sets of `--set-size`: the share the set test calls "trained on"
(p < 0.01; plain sum and difficulty-calibrated statistic) on the features of `--set-methods` (the loss, as
`diffrep membership --set` by default; a comma-separated list compares several, e.g. `loss,all`), the share
the shift control flags (p < 0.01, 199 permutations, as in `diffrep membership`), and the share `diffrep
membership --set` finally reports as "trained on" (calibrated p < 0.01 and no shift flagged).
`--gradient-floors 0,4` compares difficulty statistics whose gradient counts steps above 0 and 4 grey levels
(``difficulty.GRADIENT_FLOOR``, 4, by default), on the same draws.

Usage:  python benchmarks/shift_control.py --experiment mia0 [--experiment mia1 ...] [--draws 100]
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from diffrep.eval.membership import _features, _labels  # noqa: E402
from diffrep.models.adapter import load_model  # noqa: E402
from diffrep.probes.difficulty import GRADIENT_FLOOR, image_statistics  # noqa: E402
from diffrep.probes.images import load_images  # noqa: E402
from diffrep.probes.mia import METHODS, score_images  # noqa: E402
from diffrep.probes.setinfer import evidence, permutation_p  # noqa: E402
from diffrep.probes.shift import shift_test, views  # noqa: E402

FLOOR = round(GRADIENT_FLOOR * 255)  # the library's gradient floor, in grey levels


def _jpeg(images: np.ndarray, quality: int = 75) -> np.ndarray:
    from PIL import Image

    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return np.stack(out)


def _from_larger(images: np.ndarray, factor: int = 3) -> np.ndarray:
    from PIL import Image

    from diffrep.models.data import _square

    h, w = images.shape[1:3]
    return np.stack([_square(np.asarray(Image.fromarray(im).resize((w * factor, h * factor), Image.LANCZOS)), h)
                     for im in images])


def _blur(images: np.ndarray, scale: float = 0.7) -> np.ndarray:
    from PIL import Image

    h, w = images.shape[1:3]
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(im).resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR))
                     for im in images])


def _scored(model, images: np.ndarray, seeds: int) -> np.ndarray:
    s = score_images(model, images, {}, METHODS, seeds=seeds)
    return np.column_stack([s.features[k] for k in sorted(s.features)])


def feature_names(root: Path, n: int = 100, steps: int = 1000) -> list[str]:
    """The ``method@t`` names of the feature columns ``scenarios`` returns."""
    feats = np.load(root / "eval" / f"n{n}-steps{steps}" / "membership" / "features.npz")
    return sorted(k.split("/", 1)[1] for k in feats.files if k.startswith("images/"))


def _stats(images: np.ndarray, floors: tuple[int, ...]) -> dict[int, np.ndarray]:
    return {f: image_statistics(images, floor=f / 255) for f in floors}


def scenarios(root: Path, n: int, steps: int, seeds: int, jpeg: tuple[int, ...] = (75,),
              floors: tuple[int, ...] = (FLOOR,)) -> tuple[dict, tuple]:
    """Per scenario: (membership features, image statistics per gradient floor in grey levels, shift-control
    views) of its pool; and the reference's."""
    d = root / "eval" / f"n{n}-steps{steps}" / "membership"
    feats = np.load(d / "features.npz")
    truth = _labels(d / "scores.csv", root / "data" / f"labels-{n}.csv")
    paths = [r["path"] for r in csv.DictReader(open(d / "scores.csv", encoding="utf-8"))]
    model = load_model(root / "runs" / f"n{n}-steps{steps}", "cpu")
    tested = load_images(root / "data" / f"eval-{n}", model.image_size)
    ref = load_images(root / "data" / "reference", model.image_size)
    order = {p: i for i, p in enumerate(tested.paths)}
    ims = tested.images[[order[p] for p in paths]]  # the rows of features.npz
    img_f, ref_f = _features(feats, "images"), _features(feats, "reference")
    cls = np.array([int(Path(p).name.split("_")[0]) for p in paths])
    non = truth == 0
    pools = {"members": truth == 1, "same source": non, "5 of 10 classes": non & (cls < 5)}
    out = {k: (img_f[m], _stats(ims[m], floors), views(ims[m])) for k, m in pools.items()}
    changes = [(f"JPEG q{q}", lambda x, q=q: _jpeg(x, q)) for q in jpeg] + [("blurred", _blur), ("from 3x", _from_larger)]
    for name, fn in changes:
        changed = fn(ims[non])
        out[name] = (_scored(model, changed, seeds), _stats(changed, floors), views(changed))
    return out, (ref_f, _stats(ref.images, floors), views(ref.images))


def variants(set_methods: tuple[str, ...], floors: tuple[int, ...]) -> list[tuple[str, str, int]]:
    """(column label, feature set, gradient floor) of each compared statistic."""
    return [(v if len(floors) == 1 else f"{v}, floor {f}", v, f) for v in set_methods for f in floors]


def run(root: Path, n: int, steps: int, seeds: int, size: int, draws: int, jpeg: tuple[int, ...] = (75,),
        set_methods: tuple[str, ...] = ("loss",), floors: tuple[int, ...] = (FLOOR,)
        ) -> list[dict]:
    pools, (ref_f, ref_s, ref_b) = scenarios(root, n, steps, seeds, jpeg, floors)
    names = feature_names(root, n, steps)
    cols = {v: [i for i, f in enumerate(names) if v == "all" or f.split("@")[0] in v.split("+")] for v in set_methods}
    labelled = variants(set_methods, floors)
    rng = np.random.default_rng([n, steps, 7])
    rows = []
    for name, (f, s, b) in pools.items():
        k = min(size, len(f))
        hits = {key: 0 for lab, _, _ in labelled for key in (f"{lab} plain", f"{lab} calibrated", f"{lab} reported")}
        hits["shift"] = 0
        for _ in range(draws):
            pick = rng.choice(len(f), k, replace=False)
            shifted = shift_test((b[0][pick], b[1][pick]), ref_b, rng=rng)["shift_detected"]
            hits["shift"] += shifted
            for lab, v, fl in labelled:
                c = cols[v]
                p_plain = permutation_p(*evidence(f[pick][:, c], ref_f[:, c]), 999, rng)[1]
                p_cal = permutation_p(*evidence(f[pick][:, c], ref_f[:, c], s[fl][pick], ref_s[fl]), 999, rng)[1]
                hits[f"{lab} plain"] += p_plain < 0.01
                hits[f"{lab} calibrated"] += p_cal < 0.01
                hits[f"{lab} reported"] += (p_cal < 0.01) and not shifted
        rows.append({"model": root.name, "scenario": name, "pool": len(f), "set_size": k, "draws": draws}
                    | {key: v / draws for key, v in hits.items()})
        print(f"{root.name}  {name:16s} pool {len(f):3d} sets of {k}: shift flagged {rows[-1]['shift']:.2f}; "
              + "; ".join(f"{v}: trained-on plain {rows[-1][f'{v} plain']:.2f}, calibrated "
                          f"{rows[-1][f'{v} calibrated']:.2f}, reported {rows[-1][f'{v} reported']:.2f}"
                          for v, _, _ in labelled), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", action="append", required=True, help="a `diffrep experiment membership` folder")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=2, help="noise draws of the loss, as the experiment used")
    ap.add_argument("--set-size", type=int, default=100)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--jpeg-qualities", default="75", help="comma-separated JPEG qualities, one scenario each")
    ap.add_argument("--set-methods", default="loss", help="comma-separated: loss, secmi, pia, all, or a+b sums")
    ap.add_argument("--gradient-floors", default=str(FLOOR),
                    help="comma-separated grey levels: the difficulty statistics' gradient counts steps above each")
    a = ap.parse_args()
    jpeg = tuple(int(q) for q in a.jpeg_qualities.split(","))
    set_methods = tuple(a.set_methods.split(","))
    floors = tuple(int(f) for f in a.gradient_floors.split(","))
    labels = [lab for lab, _, _ in variants(set_methods, floors)]
    rows = []
    for e in a.experiment:
        rows += run(Path(e), a.n, a.steps, a.seeds, a.set_size, a.draws, jpeg, set_methods, floors)
    head = " | ".join(f"{v}: plain | {v}: calibrated | {v}: reported" for v in labels)
    print(f"\nSet test p < 0.01 (\"trained on\"); reported = calibrated and no shift flagged.\n\n"
          f"| model | scenario | sets (of pool) | shift flagged | {head} |\n"
          f"|---|---|---|---|{'---|' * 3 * len(labels)}")
    for r in rows:
        cells = " | ".join(f"{r[f'{v} plain']:.2f} | {r[f'{v} calibrated']:.2f} | {r[f'{v} reported']:.2f}"
                           for v in labels)
        print(f"| {r['model']} | {r['scenario']} | {r['set_size']} of {r['pool']} | {r['shift']:.2f} | {cells} |")


if __name__ == "__main__":
    main()
