"""What the audit called a copy in a finished `diffrep experiment memorization` folder.

Reads the labelling audit (`audit/matches.csv`, rank-1 rows) and prints, for the generations flagged as copies of
their own caption's picture, the median SSCD cosine, verification and pixel scores by how many of the caption's
generations were flagged (a caption copying 4 of 4 against one copying 1 of 4), how many of them reach the paper's
fixed SSCD 0.5, and how many test captions (never trained on) had a generation flagged as a copy of some training
picture. `--pairs PNG` draws flagged pairs side by side (generation left, training picture right; up to
`--per-group` per group: own-picture copies by copy count, then test captions) for a look by eye.
`--model-resolution DIR` audits the same generations again with the training pictures and the held-out reference
brought to the model's resolution first (as training saw them: on white, centre square, bicubic), into DIR, and
prints the labels that audit gives beside the folder's.

Usage:  python benchmarks/memorization_labels.py OUT [--pairs pairs.png] [--model-resolution /tmp/relabel]
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from diffrep.decode import decode_image
from diffrep.eval.memorization import flagged_captions
from diffrep.models.data import _square


def rgb(path: str | Path) -> np.ndarray:
    """An image as RGB on white (the audit's and training's decoding)."""
    return np.asarray(decode_image(Path(path).read_bytes()))


def rank1(folder: Path) -> pd.DataFrame:
    """Rank-1 rows of the labelling audit with each query's role and its own picture's file (training captions)."""
    split = json.loads((folder / "data" / "split.json").read_text())
    roles = {r["prompt"]: r["role"] for r in csv.DictReader((folder / "probe_scores.csv").open(encoding="utf-8"))}
    m = pd.read_csv(folder / "audit" / "matches.csv")
    m = m[m["rank"] == 1].copy()
    m["role"] = m["query_caption"].map(roles)
    m["own"] = m["query_caption"].map(split["train"])
    m["is_replica"] = m["is_replica"].astype(str) == "True"
    return m


def own_copies(m: pd.DataFrame) -> pd.DataFrame:
    """The rows flagged as copies of their own caption's training picture."""
    return m[m["is_replica"] & (m["train_id"] == m["own"])]


def describe(m: pd.DataFrame, copies: dict[str, int]) -> pd.DataFrame:
    """Median scores of the own-picture copies by the caption's number of flagged generations."""
    own = own_copies(m).copy()
    own["copies"] = own["query_caption"].map(copies)
    cols = ["score", "verify_score", "pixel_score"]
    out = own.groupby("copies")[cols].median()
    out["generations"] = own.groupby("copies").size()
    out["sscd_at_least_0.5"] = own.assign(hi=own["score"] >= 0.5).groupby("copies")["hi"].sum()
    return out


def draw_pairs(m: pd.DataFrame, copies: dict[str, int], path: Path, per_group: int, size: int = 96) -> int:
    """Save flagged pairs side by side; the number of rows drawn."""
    own = own_copies(m)
    groups = [own[own["query_caption"].map(copies) == c].head(per_group) for c in sorted(set(copies.values()))]
    groups.append(m[m["is_replica"] & (m["role"] == "test")].head(per_group))
    rows = pd.concat(groups)
    sheet = Image.new("RGB", (2 * size + 8, size * max(1, len(rows))), "white")
    for i, r in enumerate(rows.itertuples()):
        for j, p in enumerate((r.query_path, r.train_path)):
            sheet.paste(Image.fromarray(rgb(p)).resize((size, size)), (j * (size + 8), i * size))
    sheet.save(path)
    return len(rows)


def relabel(folder: Path, work: Path) -> tuple[dict[str, int], int, float]:
    """Audit the generations against the training pictures at the model's resolution, calibrated on the held-out
    pictures at that resolution: (own-picture copies per training caption, test captions copying, threshold)."""
    import diffrep

    size = int(json.loads((folder / "summary.json").read_text())["preset"]["size"])
    for part in ("train", "heldout"):
        (work / part).mkdir(parents=True, exist_ok=True)
        for p in sorted((folder / "data" / part).glob("*.png")):
            Image.fromarray(_square(rgb(p), size)).save(work / part / p.name)
    diffrep.index(work / "train", work / "index")
    r = diffrep.audit(folder / "samples", work / "index", work / "audit", reference=work / "heldout", fpr=0.01,
                      captions=folder / "samples" / "prompts.jsonl", seed=0)
    split = json.loads((folder / "data" / "split.json").read_text())
    records = [json.loads(x) for x in (folder / "samples" / "prompts.jsonl").read_text().splitlines()]
    caption_of = {r["file"]: r["caption"] for r in records}
    hits, copying = flagged_captions(r, caption_of, split)
    return hits, len(copying), float(r.summary["calibration"]["threshold"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a finished `diffrep experiment memorization --out` folder")
    ap.add_argument("--pairs", default=None, help="save flagged pairs side by side to this PNG")
    ap.add_argument("--per-group", type=int, default=6)
    ap.add_argument("--model-resolution", default=None, metavar="DIR",
                    help="audit again with the training and reference pictures at the model's resolution, in DIR")
    a = ap.parse_args()
    folder = Path(a.folder)
    labels = json.loads((folder / "labels.json").read_text())
    copies = {k: int(v) for k, v in labels["copies"].items()}
    m = rank1(folder)
    n_test = int((m["role"] == "test").groupby(m["query_caption"]).any().sum())
    copying = m[m["is_replica"] & (m["role"] == "test")]["query_caption"].nunique()
    print(f"{folder}: audit threshold {labels['audit_threshold']:.4f}; {len(copies)} training captions memorized "
          f"(captions by flagged generations: {dict(sorted(Counter(copies.values()).items()))}); "
          f"{copying} of {n_test} test captions had a generation flagged as a copy of some training picture\n")
    print(describe(m, copies).round(3).to_string())
    if a.pairs:
        print(f"{draw_pairs(m, copies, Path(a.pairs), a.per_group)} pairs drawn in {a.pairs}")
    if a.model_resolution:
        hits, n_copying, t = relabel(folder, Path(a.model_resolution))
        print(f"at the model's resolution: threshold {t:.4f}; {len(hits)} training captions memorized (by flagged "
              f"generations: {dict(sorted(Counter(hits.values()).items()))}); {n_copying} test captions copying")


if __name__ == "__main__":
    main()
