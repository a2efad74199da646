"""Pictures that are one picture: identical, mirrored, recoloured or turned copies, found from thumbnails and
edge maps. The packaged datasets merge such pictures into one family (``groups.csv``), so a split by family
never holds out a copy of a training picture."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

TWIN_NCC = 0.95  # edge-map correlation above which two pictures are one picture recoloured/flipped/rotated
DUPLICATE_RMS = 0.01  # 16 px thumbnails closer than this show the same picture (e.g. flags)


def min_union_find(parent: dict) -> tuple[Callable[[Any], Any], Callable[[Any, Any], None]]:
    """``(find, union)`` over ``parent`` (every key mapped to itself at first), updated in place; a merged
    set's root is its smallest member."""
    def find(g: Any) -> Any:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    def union(a: Any, b: Any) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    return find, union


def thumbnail_twins(images: Path, files: list[str]) -> list[tuple[int, int]]:
    """Pairs whose 16 px thumbnails on white (or one's mirror image) are closer than ``DUPLICATE_RMS``:
    the same picture (flags; "... facing right" variants and clock faces 3/9 are exact mirror images, i.e.
    flip copies, which must never straddle a train / held-out split)."""
    from PIL import Image

    thumbs = []
    for fname in files:
        with Image.open(images / fname) as im:
            rgba = im.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        thumbs.append(np.asarray(flat.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR),
                                 dtype=np.float32).ravel() / 255.0)
    if not thumbs:
        return []
    x = np.stack(thumbs)
    sq = (x * x).sum(1)
    mirrored = x.reshape(len(x), 16, 16, 3)[:, :, ::-1].reshape(len(x), -1)
    pairs: set[tuple[int, int]] = set()
    for y in (x, mirrored):
        for start in range(0, len(x), 512):
            d2 = sq[start:start + 512, None] + sq[None, :] - 2.0 * (y[start:start + 512] @ x.T)
            close = np.nonzero(d2 < (DUPLICATE_RMS ** 2) * x.shape[1])
            pairs.update((int(a) + start, int(b)) for a, b in zip(*close) if int(a) + start != int(b))
    return sorted(pairs)


def _edge_map(path: Path, size: int = 32) -> np.ndarray:
    """Gradient magnitude of the grayscale picture on white: shape, not colour."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    g = np.asarray(flat.convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float32)
    gy, gx = np.gradient(g)
    return np.sqrt(gx * gx + gy * gy)


def structural_twins(images: Path, files: list[str]) -> list[tuple[int, int]]:
    """Pairs whose edge maps correlate above ``TWIN_NCC`` under one of the 8 flips/90-degree rotations:
    recoloured, mirrored or rotated versions of one picture (hearts and circles in 9 colours, tricolour
    flags, left/right pointing hands, arrows). Such a pair is an *edit* of one image, i.e. a copy, so
    it must never be split between training and held-out sets."""
    if not files:
        return []
    m = np.stack([_edge_map(images / f) for f in files])

    def unit(v: np.ndarray) -> np.ndarray:
        v = v.reshape(len(v), -1)
        v = v - v.mean(1, keepdims=True)
        return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6)

    base = unit(m)
    views = [unit(np.ascontiguousarray(np.rot90(m, k, axes=(1, 2))[:, :, ::-1] if flip else
                                       np.rot90(m, k, axes=(1, 2)))) for k in range(4) for flip in (False, True)]
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(files), 512):
        best = np.max([v[start:start + 512] @ base.T for v in views], axis=0)
        a, b = np.nonzero(best > TWIN_NCC)
        pairs.extend((int(i) + start, int(j)) for i, j in zip(a, b) if i + start < j)
    return pairs


def keep_picture(images: Path, rel: str, blob: bytes, seen: set[str], min_side: int) -> bool:
    """Write ``blob`` to ``images/rel`` when it is a picture at least ``min_side`` px on both sides whose bytes
    were not kept before (``seen``: SHA-256 digests kept so far, updated); whether it was kept."""
    import hashlib

    from ..decode import DecodeError, image_size

    digest = hashlib.sha256(blob).hexdigest()
    if digest in seen:
        return False
    try:
        if min(image_size(blob)) < min_side:
            return False
    except DecodeError:
        return False
    seen.add(digest)
    (images / rel).parent.mkdir(parents=True, exist_ok=True)
    (images / rel).write_bytes(blob)
    return True


def write_family_tables(out: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """``captions.jsonl`` and ``groups.csv`` in ``out`` for (file, caption, family, category) ``rows`` of the
    pictures in ``out/images``, each family merged with the families of the pictures that are one picture
    (``thumbnail_twins``, ``structural_twins``)."""
    import csv
    import json

    files = [r[0] for r in rows]
    parent = {r[2]: r[2] for r in rows}
    find, union = min_union_find(parent)
    for a, b in thumbnail_twins(out / "images", files) + structural_twins(out / "images", files):
        union(rows[a][2], rows[b][2])
    with open(out / "captions.jsonl", "w", encoding="utf-8") as fh:
        for f, caption, _g, _c in rows:
            fh.write(json.dumps({"file": f, "caption": caption}) + "\n")
    with open(out / "groups.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "group", "category"])
        for f, _caption, group, category in rows:
            w.writerow([f, find(group), category])
