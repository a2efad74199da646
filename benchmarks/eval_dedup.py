"""Dedup accuracy on a collection with injected edited duplicates (ground truth known).

Collection: one emoji per family (families = the demo's groups: skin tones, recolourings, mirrors, flags),
so it holds no natural near-duplicates; then edited copies of some of them are injected (resize, JPEG,
recolour, flip, crop, pad, blur, text overlay). Pair recall = injected (original, copy) pairs put in one
group; precision = share of same-group pairs that are true pairs (original-copy or copy-copy of one
original). Compared: diffrep dedup (default), dedup --no-verify, and plain union-find over an SSCD
threshold graph at 0.75 (SSCD's README threshold) and 0.6.

Usage:  python benchmarks/eval_dedup.py --seed 1 [--n-base 800] [--n-dup 200]
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import shared_drawings
from diffrep.eval.bench.edits import DUPLICATE_KINDS, apply_edit
from diffrep.datasets import get_dataset, read_captions, read_groups
from diffrep.dedup import dedup
from diffrep.eval.scenario import flat_name
from emoji_relations import unrelated_subset
from diffrep.indexing import index, open_index


def build(root: Path, seed: int, n_base: int, n_dup: int, base_rule: str = "unrelated",
          dataset: str = "emoji") -> dict[str, str]:
    """Write the collection; return {file: original file} for every image (originals map to themselves).

    ``base_rule="families"``: one emoji per family of groups.csv (the benchmark until 2026-11-23);
    ``"unrelated"`` (default): also no emoji drawn from another one in the base (names and code points,
    ``emoji_relations.unrelated_subset``): "mobile phone" and "mobile phone with rightwards arrow" are one
    drawing plus an arrow, i.e. a duplicate by the benchmark's own edits (overlay, pad), not a false pair.
    ``n_dup`` > ``n_base``: originals are drawn with replacement (some get several copies).
    ``dataset="openclipart"``: one picture per family (``diffrep.datasets.clipart``: names, folders, symbol sets,
    identical and recoloured or turned pictures). For both collections ``"unrelated"`` also leaves out
    one of each reviewed pair of drawings filed twice (``shared_drawings.py``, since 2026-11-23:
    another label or emblem, a recolour, a mirror image)."""
    ds = get_dataset(dataset)
    groups = read_groups(ds)
    first: dict[str, str] = {}
    for f in sorted(groups):
        first.setdefault(groups[f][0], f)
    rng = np.random.default_rng(seed)
    if base_rule == "families":
        base = sorted(rng.choice(sorted(first.values()), size=n_base, replace=False).tolist())
        rest = sorted(set(first.values()) - set(base))
    else:
        order = [str(f) for f in rng.permutation(sorted(first.values()))]
        if dataset == "emoji":  # names and code points first, then the reviewed pairs
            order = unrelated_subset(order, read_captions(ds))
        pool = shared_drawings.unrelated_subset(order, shared_drawings.related_pairs(dataset))
        if len(pool) < n_base:
            raise SystemExit(f"only {len(pool)} unrelated {dataset} families; ask for fewer (--n-base)")
        # the relation is symmetric, so the greedy pool's tail is exactly what stays unrelated to the base
        base, rest = sorted(pool[:n_base]), sorted(pool[n_base:])
    root.mkdir(parents=True)
    truth = {}
    for f in base:
        shutil.copyfile(ds / "images" / f, root / flat_name(f))
        truth[flat_name(f)] = flat_name(f)
    for i, f in enumerate(rng.choice(base, size=n_dup, replace=n_dup > len(base)).tolist()):
        kind = DUPLICATE_KINDS[i % len(DUPLICATE_KINDS)]
        img, _ = apply_edit(Image.open(ds / "images" / f), kind, rng)
        name = f"dup_{i:04d}_{kind}.png"
        img.save(root / name)
        truth[name] = flat_name(f)
    # held-out families (`rest`, never in the collection): the reference for --fpr calibration
    ref = root.parent / "reference"
    ref.mkdir()
    for f in sorted(rng.choice(rest, size=min(300, len(rest)), replace=False).tolist()):
        shutil.copyfile(ds / "images" / f, ref / flat_name(f))
    return truth


def score(groups_of: dict[str, int], truth: dict[str, str]) -> dict[str, float]:
    by_g: dict[int, list[str]] = {}
    for f, g in groups_of.items():
        by_g.setdefault(g, []).append(f)
    tp = fp = 0
    for members in by_g.values():
        for a, b in itertools.combinations(members, 2):
            if truth[a] == truth[b]:
                tp += 1
            else:
                fp += 1
    true_pairs = [(f, o) for f, o in truth.items() if f != o]
    found = sum(groups_of[f] == groups_of[o] for f, o in true_pairs)
    return {"recall": found / len(true_pairs), "precision": tp / (tp + fp) if tp + fp else 1.0,
            "pairs_found": found, "true_pairs": len(true_pairs), "false_pairs": fp}


def union_find(idx_dir: Path, threshold: float, k: int = 10) -> dict[str, int]:
    idx = open_index(idx_dir)
    n = len(idx)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    s, nb = idx.search(idx.vectors(np.arange(n)), min(k + 1, n))
    for i in range(n):
        for sc, j in zip(s[i], nb[i]):
            if j >= 0 and j != i and sc >= threshold:
                parent[find(i)] = find(int(j))
    names = [Path(p).name for p in idx.column("path")]
    return {names[i]: find(i) for i in range(n)}


def read_groups_csv(out: Path, all_files: list[str]) -> dict[str, int]:
    g = {f: -(i + 1) for i, f in enumerate(all_files)}  # singletons
    with open(out / "groups.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            g[Path(row["path"]).name] = int(row["group"])
    return g


def false_pairs(groups_of: dict[str, int], truth: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs put in one group whose originals differ (the precision's numerator's complement)."""
    by_g: dict[int, list[str]] = {}
    for f, g in groups_of.items():
        by_g.setdefault(g, []).append(f)
    return [(a, b) for members in by_g.values() for a, b in itertools.combinations(sorted(members), 2)
            if truth[a] != truth[b]]


def pairs_figure(pairs: list[tuple[str, str]], folder: Path, out: Path, cell: int = 96) -> None:
    """One row per false pair: the two images side by side (for reading what the method linked)."""
    from PIL import ImageDraw

    if not pairs:
        return
    sheet = Image.new("RGB", (2 * cell + 8, len(pairs) * (cell + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (a, b) in enumerate(pairs):
        for c, f in enumerate((a, b)):
            with Image.open(folder / f) as im:
                im = im.convert("RGBA")
                im.thumbnail((cell, cell))
                sheet.paste(im, (c * (cell + 8), r * (cell + 16) + 14), im)
        draw.text((2, r * (cell + 16)), f"{a}  |  {b}"[:60], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def grouped_per_edit(groups_of: dict[str, int], truth: dict[str, str]) -> dict[str, list[bool]]:
    """Per edit kind (from the copy's file name): whether each injected copy shares its original's group."""
    per_kind: dict[str, list[bool]] = {}
    for f, o in truth.items():
        if f != o:
            per_kind.setdefault(f.split("_")[2].split(".")[0], []).append(groups_of[f] == groups_of[o])
    return per_kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-base", type=int, default=800)
    ap.add_argument("--n-dup", type=int, default=200)
    ap.add_argument("--verified-threshold", type=float, default=None, help="override the default")
    ap.add_argument("--threshold", type=float, default=None, help="override the default SSCD link threshold")
    ap.add_argument("--pixel-threshold", type=float, nargs="*", default=[],
                    help="also run dedup with a pixel-score link rule at each threshold")
    ap.add_argument("--fpr", type=float, nargs="*", default=[],
                    help="also run dedup --fpr F --reference (300 held-out emoji families) for each F")
    ap.add_argument("--base", choices=("unrelated", "families"), default="unrelated",
                    help="base collection: one picture per family and none drawn from another (default: emoji "
                         "by names and code points, both collections by the reviewed pairs of "
                         "shared_drawings.py), or one per family only (the benchmark before 2026-11-23)")
    ap.add_argument("--dataset", choices=("emoji", "openclipart", "gcompris-drawings", "gcompris-photos",
                                          "tuxpaint-stamps"),
                    default="emoji",
                    help="the collection: emoji, openclipart (rules were chosen on some seeds of both: docs/results/), "
                         "or the large (600 px) GCompris drawings and photographs; with more duplicates than "
                         "originals some originals get several copies")
    ap.add_argument("--out", default=None)
    ap.add_argument("--false-pairs", default=None, metavar="PNG",
                    help="write the default run's false pairs side by side to this image")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="diffrep-dedup-eval-"))
    rows = []
    try:
        truth = build(work / "images", a.seed, a.n_base, a.n_dup, a.base, a.dataset)
        index(work / "images", work / "index")
        files = sorted(truth)
        over = {k: v for k, v in (("verified_threshold", a.verified_threshold),
                                   ("global_threshold", a.threshold)) if v is not None}
        for name, kw in (("diffrep dedup (default)", {}), ("diffrep dedup --no-pixel", {"pixel_threshold": None}),
                         ("diffrep dedup --no-verify", {"verify": False})):
            out = work / name.split()[-1].strip("()-").replace("no", "no-")
            r = dedup(None, out, index=work / "index", **kw, **over)
            rows.append({"method": name, **score(read_groups_csv(out, files), truth),
                         "seconds": r.summary["seconds"]})
        for t in a.pixel_threshold:
            out = work / f"pixel{t}"
            r = dedup(None, out, index=work / "index", pixel_threshold=t, **over)
            g = read_groups_csv(out, files)
            rows.append({"method": f"diffrep dedup --pixel-threshold {t:g}", **score(g, truth),
                         "seconds": r.summary["seconds"],
                         "per_kind": {k: round(float(np.mean(v)), 2) for k, v in grouped_per_edit(g, truth).items()}})
        for f in a.fpr:
            out = work / f"fpr{f}"
            r = dedup(None, out, index=work / "index", fpr=f, reference=work / "reference")
            cal = r.summary["rule"]["calibration"]
            rows.append({"method": f"diffrep dedup --fpr {f:g} --reference (cos >= {cal['global_threshold']:.3f}, "
                                   f"verified >= {cal['verified_threshold']:.3f})",
                         **score(read_groups_csv(out, files), truth), "seconds": r.summary["seconds"]})
        for t in (0.75, 0.6):
            rows.append({"method": f"union-find, SSCD >= {t}", **score(union_find(work / "index", t), truth)})
        default_groups = read_groups_csv(work / "default", files)
        per_kind = grouped_per_edit(default_groups, truth)
        wrong = false_pairs(default_groups, truth)
        if a.false_pairs:
            pairs_figure(wrong, work / "images", Path(a.false_pairs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = a.base
    print(f"seed {a.seed}: {a.dataset}, {a.n_base} originals ({base} base), {a.n_dup} injected duplicates\n")
    print("| method | pairs grouped (recall) | precision | false pairs |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {100 * r['recall']:.1f}% | {100 * r['precision']:.1f}% | {r['false_pairs']} |"
              + (f" {r['per_kind']}" if "per_kind" in r else ""))
    print("\nfalse pairs (default): " + (", ".join(f"{x} ~ {y}" for x, y in wrong) or "none"))
    print("\nrecall per edit (default): " + ", ".join(f"{k} {100 * np.mean(v):.0f}%" for k, v in per_kind.items()))
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "per_kind": {k: float(np.mean(v)) for k, v in
                                                                        per_kind.items()}}, indent=2))


if __name__ == "__main__":
    main()
