"""``diffrep bench make``: a copy-detection benchmark with ground truth from any image collection.

Layout of ``BENCH_DIR``::

    bench.json        parameters, counts, format version
    references/       the reference images (byte copies of the sources chosen), indexed by ``bench run``
    background/       held-out images of other groups, for score normalization (never in a query)
    references.csv    reference file, original id, caption
    queries/          q00000.png ... (PNG, deterministic)
    manifest.csv      query, source, kind, params (JSON), query_box, source_box
    skipped.csv       sources that could not be decoded, with the reason

The collection is split by group (``--groups FILE``: one group per row, ``file,group``; images of one
group are near-duplicates such as the emoji skin tones): one image per group becomes a reference, and
a held-out share of the groups (10%, at most 500) provides fill images and stickers only, so a query's
background never matches a reference; another such share goes to ``background/`` (unrelated images for
SSCD's score normalization, disjoint from both). Sources of queries are drawn from the references without
replacement while enough remain. Each query's randomness comes from ``(seed, query number)``: the
same seed gives byte-identical manifests and query images.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ...decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from ...defaults import DEFAULTS
from ...errors import DiffrepError, SourceError
from ...fsutil import write_text as atomic_write_text
from ...progress import ProgressCallback, emit
from ...sources import Record, open_source
from .edits import compose_on_white
from .generate import QUERY_KINDS, SourceImage, get_filler, make_query, object_mask

FORMAT = 1
FILL_SHARE, FILL_MAX = 0.10, 500
MANIFEST_COLUMNS = ("query", "source", "kind", "params", "query_box", "source_box")


@dataclass
class BenchInfo:
    out: Path
    queries: int
    references: int
    fill_images: int
    skipped: int
    by_kind: dict[str, int]


def parse_kinds(kinds: str | Sequence[str] | None) -> list[str]:
    if kinds is None:
        return list(QUERY_KINDS)
    items = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
    bad = [k for k in items if k not in QUERY_KINDS]
    if bad or not items:
        raise DiffrepError(f"unknown query kind(s) {', '.join(bad) or '(none)'}; choose from "
                           f"{', '.join(QUERY_KINDS)}")
    return list(dict.fromkeys(items))


def read_groups_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{file: group}`` from a CSV with columns ``file`` (or ``path``) and ``group``."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise SourceError(f"cannot read groups file {path}: {exc.strerror or exc}") from None
    if not rows or "group" not in rows[0] or not ({"file", "path"} & set(rows[0])):
        raise SourceError(f"groups file {path} needs the columns 'file' (or 'path') and 'group'")
    return {(r.get("file") or r.get("path") or ""): r["group"] for r in rows}


def _group_of(rec: Record, groups: dict[str, str]) -> str:
    return groups.get(rec.id) or groups.get(rec.id.rsplit("/", 1)[-1]) or f"\0{rec.id}"


def _load(rec: Record) -> tuple[Image.Image, str | None]:
    """(PIL image keeping its alpha, None) or (None, reason). Decoding is checked by the safe decoder."""
    try:
        data = rec.read()
        rgb = decode_image(data, max_pixels=DEFAULT_MAX_PIXELS, min_side=512)
    except (OSError, DecodeError) as exc:
        return None, (exc.reason if isinstance(exc, DecodeError) else f"cannot read: {exc}")  # type: ignore[return-value]
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                if rgba.size == (rgb.shape[1], rgb.shape[0]):
                    return rgba, None
    except Exception:  # noqa: BLE001 - the safe decoder already accepted the file; keep its RGB
        pass
    return Image.fromarray(rgb), None


def make_bench(source: str | os.PathLike[str] | Sequence[str], out: str | os.PathLike[str], *,
               kinds: str | Sequence[str] | None = None, n: int = DEFAULTS["bench"]["n"],
               seed: int = DEFAULTS["bench"]["seed"], fill: str = DEFAULTS["bench"]["fill"],
               masks: str | os.PathLike[str] | None = None,
               groups: str | os.PathLike[str] | None = None, max_references: int | None = None,
               progress: ProgressCallback | None = None) -> BenchInfo:
    """Build a benchmark in ``out`` (which must not exist or be empty); see the module docstring."""
    kind_list = parse_kinds(kinds)
    if n < 1:
        raise DiffrepError(f"--n must be at least 1, got {n}")
    filler = _named_filler(fill)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DiffrepError(f"{out} exists and is not empty; choose a new --out folder (a benchmark is "
                           "built once and never modified)")
    records, scan_skips = open_source(source).scan(progress)
    rng = np.random.default_rng(seed)
    refs, fills, backgrounds = _roles(records, read_groups_file(groups) if groups else {}, rng, max_references)
    if not refs:
        raise SourceError(f"no reference images in {source}: a benchmark needs at least one image")

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "queries").mkdir(parents=True)
    skipped: list[tuple[str, str]] = [(s.path, s.reason) for s in scan_skips]

    fill_images: list[Image.Image] = []
    for rec in fills:
        im, why = _load(rec)
        if im is None:
            skipped.append((rec.path, str(why)))
        else:
            fill_images.append(im)

    n_bg_ok = len(_copy_decodable(backgrounds, tmp / "background", skipped))
    usable = _copy_decodable(refs, tmp / "references", skipped, progress)
    ref_rows = [(f"references/{name}", rec.id, rec.caption or "") for rec, name in usable]
    if not usable:
        raise SourceError(f"none of the images in {source} could be decoded; see the skipped list")

    mask_dir = Path(masks) if masks else None
    rows, by_kind = _write_queries(tmp, usable, fill_images, kind_list, n, seed, _source_order(len(usable), n, rng),
                                   mask_dir, filler, progress)

    _write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, [[r[c] for c in MANIFEST_COLUMNS] for r in rows])
    _write_csv(tmp / "references.csv", ("reference", "id", "caption"), ref_rows)
    _write_csv(tmp / "skipped.csv", ("path", "reason"), sorted(skipped))
    meta: dict[str, Any] = {"format": FORMAT, "seed": seed, "kinds": kind_list, "n": n, "fill": fill,
                            "masks": "user" if masks else None, "grouped": bool(groups),
                            "references": len(usable), "fill_images": len(fill_images),
                            "background_images": n_bg_ok,
                            "queries_by_kind": by_kind, "skipped": len(skipped)}
    atomic_write_text(tmp / "bench.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return BenchInfo(out, n, len(usable), len(fill_images), len(skipped), by_kind)


def _roles(records: list[Record], group_map: dict[str, str], rng: np.random.Generator,
           max_references: int | None) -> tuple[list[Record], list[Record], list[Record]]:
    """(references, fill images, background images): groups shuffled by ``rng``, the first ``FILL_SHARE`` of
    them (at most ``FILL_MAX``) fill, as many give backgrounds, the rest are references; each group's first
    record in id order stands for it."""
    by_group: dict[str, list[Record]] = {}
    for rec in records:
        by_group.setdefault(_group_of(rec, group_map), []).append(rec)
    names = sorted(by_group)
    order = rng.permutation(len(names))
    n_fill = min(FILL_MAX, max(1, round(len(names) * FILL_SHARE))) if len(names) > 1 else 0
    n_bg = n_fill if len(names) > 2 else 0
    ref_groups = [names[i] for i in order[n_fill + n_bg:]]
    if max_references is not None:
        ref_groups = ref_groups[:max_references]
    return ([by_group[g][0] for g in ref_groups], [by_group[names[i]][0] for i in order[:n_fill]],
            [by_group[names[i]][0] for i in order[n_fill:n_fill + n_bg]])


def _write_queries(tmp: Path, usable: list[tuple[Record, str]], fill_images: list[Image.Image], kind_list: list[str],
                   n: int, seed: int, source_order: np.ndarray, mask_dir: Path | None, filler: Any,
                   progress: ProgressCallback | None) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The ``n`` queries (kinds in turn, query q drawn from the generator seeded [seed, q]) as PNGs in
    ``tmp/queries``; returns their manifest rows and the count per kind."""
    rows: list[dict[str, str]] = []
    by_kind: dict[str, int] = {k: 0 for k in kind_list}
    for q in range(n):
        kind = kind_list[q % len(kind_list)]
        qrng = np.random.default_rng([seed, q])
        rec, name = usable[int(source_order[q])]
        fill_img = fill_images[int(qrng.integers(len(fill_images)))] if fill_images else None
        query = make_query(kind, _source_image(rec, mask_dir), fill_img, qrng, filler)
        qname = f"queries/q{q:05d}.png"
        buf = io.BytesIO()
        query.image.convert("RGB").save(buf, format="PNG", optimize=False)
        (tmp / qname).write_bytes(buf.getvalue())
        rows.append({"query": qname, "source": f"references/{name}", "kind": query.kind,
                     "params": json.dumps(query.params, sort_keys=True),
                     "query_box": json.dumps(query.query_box), "source_box": json.dumps(query.source_box)})
        by_kind[kind] += 1
        emit(progress, "queries", q + 1, n, unit="query")
    return rows, by_kind


def _copy_decodable(records: list[Record], dest_dir: Path, skipped: list[tuple[str, str]],
                    progress: ProgressCallback | None = None) -> list[tuple[Record, str]]:
    """Byte-copy the records that decode into ``dest_dir``; record the others in ``skipped``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    copied: list[tuple[Record, str]] = []
    used: set[str] = set()
    for i, rec in enumerate(records):
        name = _unique(_ref_name(rec), used)
        try:
            data = rec.read()
            decode_image(data, min_side=64)
        except (OSError, DecodeError) as exc:
            skipped.append((rec.path, exc.reason if isinstance(exc, DecodeError) else f"cannot read: {exc}"))
            continue
        dest = dest_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        copied.append((rec, name))
        emit(progress, dest_dir.name, i + 1, len(records), unit="image")
    return copied


def _named_filler(name: str):  # noqa: ANN202 - a Filler
    try:
        return get_filler(name)
    except ValueError as exc:
        raise DiffrepError(str(exc)) from None


def _ref_name(rec: Record) -> str:
    """A safe relative file name for a reference: its id with shard separators flattened."""
    name = rec.id.replace("::", "__").replace("\\", "/").lstrip("/")
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "image"


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``stem~2.ext``, ``stem~3.ext``, ... when ids that differ flatten to one file name."""
    stem, ext = os.path.splitext(name)
    k, out = 1, name
    while out in used:
        k += 1
        out = f"{stem}~{k}{ext}"
    used.add(out)
    return out


def _source_order(n_sources: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct sources while they last, then further passes in fresh random orders."""
    passes = -(-n // n_sources)
    return np.concatenate([rng.permutation(n_sources) for _ in range(passes)])[:n]


def _source_image(rec: Record, mask_dir: Path | None) -> SourceImage:
    im, _ = _load(rec)
    user_mask = None
    if mask_dir is not None:
        stem = os.path.splitext(rec.id)[0]
        for ext in (".png", ".jpg", ".bmp", ".webp"):
            p = mask_dir / (stem + ext)
            if p.is_file():
                with Image.open(p) as m:
                    user_mask = m.convert("L")
                break
    mask, method = object_mask(im, user_mask)
    return SourceImage(compose_on_white(im), mask, method)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_manifest(bench_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The manifest rows with boxes and params parsed."""
    path = Path(bench_dir) / "manifest.csv"
    if not path.is_file():
        raise SourceError(f"{bench_dir} is not a benchmark folder (no manifest.csv); build one with "
                          "`diffrep bench make`")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["params"] = json.loads(r["params"])
        r["query_box"] = json.loads(r["query_box"])
        r["source_box"] = json.loads(r["source_box"])
    return rows


__all__ = ["BenchInfo", "make_bench", "parse_kinds", "read_groups_file", "read_manifest"]
