"""``diffrep dedup``: find groups of near-duplicates inside one collection; choose what to keep.

1. Exact duplicates first, cheaply: same content hash (from the index manifest), then same decoded pixels.
   Each exact cluster becomes one unit.
2. Near-duplicate candidates: each unit's k nearest units by SSCD (FAISS, never an N x N matrix) with cosine
   >= ``candidate_floor``.
3. A candidate is a link when pixel-level verification (``diffrep.auditing.verify``: alignment + edge
   correlation) scores >= ``verified_threshold``, or its blurred-intensity correlation (the verifier's
   ``pixel`` score) is >= ``pixel_threshold`` (text overlays, crops and recolourings whose edges changed).
   With ``text_overlay`` (default) both scores are also taken leaving out text lines where the pair differs
   (``auditing/textlines.py``: a caption or watermark over a copy), if the rest's edges agree >= 0.95.
   The SSCD cosine alone (>= ``global_threshold``) links a pair only where there is no pixel evidence:
   with ``verify=False``, or when the image itself cannot be decoded for verification (a candidate that
   cannot be read scores 0, which is evidence; look-alike icons reach cosine 0.96 while their pixels
   disagree). With ``fpr`` the two calibrated thresholds replace the verified and cosine rules
   and the (uncalibrated) pixel rule is off.
4. Star grouping (``grouping.py``): members link to their representative, no chaining. Representative:
   largest resolution, then the smallest id (earliest in sorted order).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..decode import load_path
from ..matching.rerank import verify_indexed
from ..matching.verify import Verifier, VerifyConfig
from ..decode import DEFAULT_MAX_PIXELS
from ..defaults import DEFAULTS as _DEFAULTS
from ..errors import DiffrepError, check_settings
from ..fsutil import DirLock, ensure_writable_dir, write_json, write_text
from ..indexing.build import check_options, index as build_index
from ..indexing.duplicates import load_dup_counts, save_dup_counts
from ..indexing.load import open_index
from ..progress import ProgressCallback, emit
from ..sources import open_source
from .grouping import Link, star_groups
from .links import DEDUP_NPROBE, calibrate_links, candidate_search_params

PathLike = str | Path
DEFAULTS = _DEFAULTS["dedup"]


@dataclass
class DedupResult:
    out_dir: Path
    summary: dict[str, Any]
    group: np.ndarray  # group id (representative index) per indexed image
    paths: list[str]


def pixel_hash(path: str, max_pixels: int) -> Optional[str]:
    """Hash of the decoded pixels (composited RGB) and shape: equal for files that show the same image."""
    arr = load_path(path, max_pixels, 256)
    if arr is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def dedup(source: PathLike | Sequence[PathLike] | None, out: PathLike, *, index: PathLike | None = None,
          descriptor: str | None = None, k: int = DEFAULTS["k"], candidate_floor: float = DEFAULTS["candidate_floor"],
          verified_threshold: float = DEFAULTS["verified_threshold"],
          global_threshold: float = DEFAULTS["global_threshold"], verify: bool = True,
          captions: PathLike | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
          verify_config: VerifyConfig | None = None, mode: str = DEFAULTS["mode"], eps: float = DEFAULTS["eps"],
          fpr: float | None = None, reference: PathLike | Sequence[PathLike] | None = None,
          nprobe: int = DEDUP_NPROBE, pixel_threshold: float | None = DEFAULTS["pixel_threshold"],
          text_overlay: bool | None = None, progress: Optional[ProgressCallback] = None) -> DedupResult:
    """Group near-duplicates of ``source`` (or of an existing ``index``); write results into ``out``.

    ``mode="verified"`` (default) is described in the module docstring; ``mode="semdedup"`` is the
    SemDeDup rule for very large collections (``semdedup.py``: clusters, cosine > 1 - ``eps``).

    ``fpr`` with ``reference`` (held-out images that are not in the collection) calibrates both link
    thresholds instead of the fixed defaults: see :func:`calibrate_links`.

    ``verify_config`` is used as given; without one, dedup verifies with text lines left out and flat coloured
    frames counted as background (``VerifyConfig(text_overlay=True, frame_background=True)``). ``text_overlay``
    (``--no-text-lines``), when set, overrides that one field of either."""
    if mode not in ("verified", "semdedup"):
        raise DiffrepError(f"unknown dedup mode {mode!r}: use verified or semdedup")
    if nprobe < 1:
        raise DiffrepError(f"--nprobe {nprobe}: probe at least one cell")
    check_options(max_pixels=max_pixels, k=k)
    if index is not None:
        for v, why in ((source, "a SOURCE with --index: the index already holds its images. Give the SOURCE "
                                "folder or the --index, not both"),
                       (descriptor, "--descriptor with --index: the index's images are embedded with its own "
                                    "descriptor. Drop --descriptor"),
                       (captions, "--captions with --index: the index holds the captions it was built with. Drop "
                                  "--captions")):
            if v is not None:
                raise DiffrepError(why)
    if reference is not None and fpr is None:
        raise DiffrepError("--reference is the null for --fpr: add --fpr RATE (e.g. 0.01) to calibrate the link "
                           "thresholds on it")
    if fpr is not None:
        check_settings(fpr=fpr)
        if reference is None:
            raise DiffrepError("--fpr needs --reference: held-out images that are NOT in the collection; how "
                               "closely they match it shows how high unrelated images score")
        if mode != "verified":
            raise DiffrepError("--fpr calibrates the verified mode's links; semdedup uses --eps")
    t0 = time.perf_counter()
    if verify_config is None:
        verify_config = VerifyConfig(text_overlay=True, frame_background=True)
    if text_overlay is not None:
        verify_config = replace(verify_config, text_overlay=text_overlay)
    if source is not None and index is None:  # an --out that is the source folder: refused before writing there
        open_source(source, captions=captions).exclude(out)
    out_dir = ensure_writable_dir(out, "output directory")
    with DirLock(out_dir, "dedup directory"):
        return _dedup(source, out_dir, index, descriptor, k, candidate_floor, verified_threshold, global_threshold,
                      verify, captions, max_pixels, verify_config, mode, eps, fpr, reference, nprobe, pixel_threshold,
                      progress, t0)


def _dedup(source: PathLike | Sequence[PathLike] | None, out_dir: Path, index: PathLike | None,
           descriptor: str | None, k: int, candidate_floor: float, verified_threshold: float, global_threshold: float,
           verify: bool, captions: PathLike | None, max_pixels: int, verify_config: VerifyConfig, mode: str,
           eps: float, fpr: float | None, reference: PathLike | Sequence[PathLike] | None, nprobe: int,
           pixel_threshold: float | None, progress: Optional[ProgressCallback], t0: float) -> DedupResult:
    if index is None:
        if source is None:
            raise DiffrepError("give a SOURCE folder or an existing --index")
        index = out_dir / "index"
        build_index(source, index, descriptor=descriptor, captions=captions, max_pixels=max_pixels,
                    exclude=[out_dir], progress=progress)
    idx = open_index(index)
    n = len(idx)
    paths, ids, sha = idx.column("path"), idx.column("id"), idx.column("sha256")
    area = np.asarray(idx.column("width"), np.int64) * np.asarray(idx.column("height"), np.int64)
    if mode == "semdedup":
        return _semdedup(idx, out_dir, paths, ids, sha, area, eps, t0, progress)
    calibration = None
    if fpr is not None:
        pixel_threshold = None
        global_threshold, verified_threshold, calibration = calibrate_links(
            idx, reference, fpr, verify=verify, verify_config=verify_config, max_pixels=max_pixels,
            progress=progress)  # type: ignore[arg-type]

    unit_of, kind_of = exact_units(sha, paths, max_pixels, progress)
    units = np.nonzero(unit_of == np.arange(n))[0]
    unit_pos = {int(u): p for p, u in enumerate(units)}
    kk = min(k + 1, n)
    emit(progress, "neighbours", 0, len(units), unit="img")
    search_params = candidate_search_params(idx.faiss, kk, nprobe)
    sims, nbr = idx.search(idx.vectors(units), kk)
    emit(progress, "neighbours", len(units), len(units), unit="img")
    cand, cand_sim = _candidates(units, unit_of, unit_pos, sims, nbr, k, candidate_floor)
    verified = np.full(cand.shape, np.nan, np.float32)
    pixel = np.full(cand.shape, np.nan, np.float32)
    if verify and (cand >= 0).any():
        rr = verify_indexed(units, cand, paths, Verifier(verify_config), max_pixels=max_pixels,
                            stage="verify-pairs", progress=progress)
        verified, pixel = rr.scores, rr.pixel
    links = _links(units, cand, cand_sim, verified, pixel, global_threshold, verified_threshold, pixel_threshold)
    group, score, link_kind = _groups(units, unit_of, unit_pos, kind_of, links, area, ids)
    save_dup_counts(idx, group)
    summary = _write(out_dir, paths, ids, area, group, score, link_kind, idx, start=t0, params={
        "k": k, "candidate_floor": candidate_floor, "verified_threshold": verified_threshold,
        "global_threshold": global_threshold, "pixel_threshold": pixel_threshold, "verify": verify,
        "text_overlay": verify_config.text_overlay, "frame_background": verify_config.frame_background,
        "mode": "verified", "candidate_search": search_params,
        "calibration": calibration or {"source": "defaults (fixed thresholds; give --fpr and --reference to "
                                                 "calibrate them)"}})
    return DedupResult(out_dir, summary, group, paths)


def exact_units(sha: list[str], paths: list[str], max_pixels: int,
                progress: Optional[ProgressCallback]) -> tuple[np.ndarray, list[str]]:
    """Step 1: (unit of each image, how it joined its unit): same file content, then same decoded pixels."""
    n = len(sha)
    emit(progress, "exact", 0, n)
    unit_of = np.arange(n)
    kind_of = ["" for _ in range(n)]
    first: dict[str, int] = {}
    for i, h in enumerate(sha):
        if h in first:
            unit_of[i], kind_of[i] = first[h], "content"
        else:
            first[h] = i
    pix_first: dict[str, int] = {}
    todo = [i for i in range(n) if unit_of[i] == i]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        for done, (i, ph) in enumerate(zip(todo, pool.map(lambda i: pixel_hash(paths[i], max_pixels), todo))):
            if ph is not None:
                if ph in pix_first:
                    unit_of[i], kind_of[i] = pix_first[ph], "pixels"
                else:
                    pix_first[ph] = i
            if done % 256 == 0:
                emit(progress, "exact", done, len(todo))
    emit(progress, "exact", len(todo), len(todo))
    return unit_of, kind_of


def _candidates(units: np.ndarray, unit_of: np.ndarray, unit_pos: dict[int, int], sims: np.ndarray,
                nbr: np.ndarray, k: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: candidate units per unit, symmetrized (verification is asymmetric: a crop aligns better as the
    query than as the reference, so every pair is verified both ways and the links keep the best score)."""
    rows: list[dict[int, float]] = [dict() for _ in units]
    for p, u in enumerate(units):
        for s, j in zip(sims[p], nbr[p]):
            if j < 0 or s < floor:
                continue
            uj = int(unit_of[j])
            if uj != u and len(rows[p]) < k:
                rows[p][uj] = float(s)
    for p, u in enumerate(units):
        for uj, s in list(rows[p].items()):
            rows[unit_pos[uj]].setdefault(int(u), s)
    width = max((len(r) for r in rows), default=0)
    cand = np.full((len(units), max(width, 1)), -1, np.int64)
    cand_sim = np.zeros(cand.shape, np.float32)
    for p, r in enumerate(rows):
        for c, (uj, s) in enumerate(sorted(r.items(), key=lambda kv: -kv[1])):
            cand[p, c], cand_sim[p, c] = uj, s
    return cand, cand_sim


def _links(units: np.ndarray, cand: np.ndarray, cand_sim: np.ndarray, verified: np.ndarray, pixel: np.ndarray,
           global_threshold: float, verified_threshold: float,
           pixel_threshold: float | None) -> dict[int, dict[int, Link]]:
    """Step 3: the candidate pairs that pass a link rule (module docstring), both directions, best score."""
    links: dict[int, dict[int, Link]] = defaultdict(dict)
    for p, u in enumerate(units):
        for c in range(cand.shape[1]):
            j = int(cand[p, c])
            if j < 0:
                continue
            v, px = float(verified[p, c]), float(pixel[p, c])
            # the cosine alone decides only where no pixel evidence exists (--no-verify, or this image could not be decoded)
            unverified = not np.isfinite(v) and not np.isfinite(px)
            ok = (unverified and cand_sim[p, c] >= global_threshold) or (
                np.isfinite(v) and v >= verified_threshold) or (
                pixel_threshold is not None and np.isfinite(px) and px >= pixel_threshold)
            if ok:
                score = v if np.isfinite(v) else float(cand_sim[p, c])
                for a, b in ((int(u), j), (j, int(u))):
                    if b not in links[a] or links[a][b].score < score:
                        links[a][b] = Link(score, "near")
    return links


def _groups(units: np.ndarray, unit_of: np.ndarray, unit_pos: dict[int, int], kind_of: list[str],
            links: dict[int, dict[int, Link]], area: np.ndarray,
            ids: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Step 4: star grouping over units, then exact clusters expanded: (group, score to representative, link)."""
    n = len(unit_of)
    priority = [unit_pos[u] for u in sorted((int(u) for u in units), key=lambda i: (-int(area[i]), ids[i]))]
    sub_group, to_rep = star_groups(np.asarray(priority, np.int64), _remap(links, unit_pos))
    group = np.empty(n, np.int64)
    score = np.ones(n, np.float32)
    link_kind = [""] * n
    for i in range(n):
        u = int(unit_of[i])
        rep_unit = int(units[sub_group[unit_pos[u]]])
        group[i] = rep_unit
        if i != u:  # exact duplicate of its unit
            link_kind[i], score[i] = kind_of[i], 1.0
        elif u != rep_unit:
            lk = to_rep[unit_pos[u]]
            link_kind[i], score[i] = lk.kind, lk.score
    return group, score, link_kind


def _semdedup(idx: Any, out_dir: Path, paths: list[str], ids: list[str], sha: list[str], area: np.ndarray,
              eps: float, t0: float, progress: Optional[ProgressCallback]) -> DedupResult:
    from .semdedup import semdedup_groups

    n = len(paths)
    priority = np.array(sorted(range(n), key=lambda i: (-int(area[i]), ids[i])), np.int64)
    vectors = np.concatenate([idx.vectors(np.arange(s, min(n, s + 65536))) for s in range(0, n, 65536)])
    group, link = semdedup_groups(vectors, priority, eps=eps, progress=progress)
    kind = ["" if group[i] == i else ("content" if sha[i] == sha[group[i]] else "semdedup") for i in range(n)]
    save_dup_counts(idx, group)
    summary = _write(out_dir, paths, ids, area, group, link, kind, idx, start=t0,
                     params={"mode": "semdedup", "eps": eps})
    return DedupResult(out_dir, summary, group, paths)


def ensure_dup_counts(index: PathLike, progress: Optional[ProgressCallback] = None) -> None:
    """Count near-duplicates of the index ``index`` (a dedup run into ``INDEX/dedup``) unless it has counts."""
    if load_dup_counts(open_index(index)) is None:
        dedup(None, Path(index) / "dedup", index=index, progress=progress)


def _remap(links: dict[int, dict[int, Link]], pos: dict[int, int]) -> dict[int, dict[int, Link]]:
    """Links between image indices -> links between unit positions."""
    return {pos[a]: {pos[b]: lk for b, lk in nb.items()} for a, nb in links.items()}


def write_path_lists(out_dir: Path, lists: dict[str, list[str]]) -> int:
    """``NAME.txt`` (one path per line; a path containing a line break is left out, so no name can add a
    line of its own) and ``NAME.nul`` (every path, each ended by a NUL byte, for ``xargs -0``) per list.
    Returns how many paths the plain lists left out."""
    left_out = 0
    for name, paths in lists.items():
        paths = sorted(paths)
        plain = [p for p in paths if "\n" not in p and "\r" not in p]
        left_out += len(paths) - len(plain)
        write_text(out_dir / f"{name}.txt", "".join(p + "\n" for p in plain))
        write_text(out_dir / f"{name}.nul", "".join(p + "\0" for p in paths))
    return left_out


def _write(out_dir: Path, paths: list[str], ids: list[str], area: np.ndarray, group: np.ndarray, score: np.ndarray,
           kind: list[str], idx: Any, start: float, params: dict[str, Any]) -> dict[str, Any]:
    """groups.csv, keep.txt, remove.txt, skipped.csv, summary.json."""
    n = len(paths)
    sizes = np.bincount(group, minlength=n)
    in_group = [i for i in range(n) if sizes[group[i]] >= 2]
    reps = sorted({int(group[i]) for i in in_group}, key=lambda r: ids[r])
    number = {r: g + 1 for g, r in enumerate(reps)}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", "path", "score_to_representative", "is_representative", "link"])
    for i in sorted(in_group, key=lambda i: (number[int(group[i])], group[i] != i, ids[i])):
        rep = group[i] == i
        w.writerow([number[int(group[i])], paths[i], "" if rep else f"{score[i]:.4f}", int(rep),
                    "" if rep else kind[i]])
    write_text(out_dir / "groups.csv", buf.getvalue())
    keep = [paths[i] for i in range(n) if group[i] == i]
    remove = [paths[i] for i in range(n) if group[i] != i]
    not_listed = write_path_lists(out_dir, {"keep": keep, "remove": remove})
    skipped = idx.dir.root / "skipped.csv"
    if skipped.is_file():
        write_text(out_dir / "skipped.csv", skipped.read_text(encoding="utf-8"))
    kinds = defaultdict(int)
    for i in range(n):
        if group[i] != i:
            kinds[kind[i]] += 1
    summary = {
        "images": n, "groups": len(reps), "duplicates": len(remove),
        "share_removable": len(remove) / n if n else 0.0,
        "largest_group": int(sizes.max()) if n else 0,
        "duplicates_by_link": dict(kinds),
        "rule": {**params, "representative": "largest resolution, then smallest id"},
        "skipped": int(idx.meta.get("skipped", 0)),
        "not_in_plain_lists": not_listed,
        "warnings": [f"{not_listed} path(s) contain a line break and are left out of keep.txt / remove.txt; "
                     "keep.nul / remove.nul and groups.csv hold every path"] if not_listed else [],
        "seconds": round(time.perf_counter() - start, 2),
        "meaning": {
            "groups": "sets of 2+ images that are copies of one picture (exact or edited)",
            "duplicates": "images that can be removed: every group keeps its representative",
            "share_removable": "duplicates / images",
            "not_in_plain_lists": "paths with a line break, left out of keep.txt and remove.txt (never split "
                                  "into two lines); keep.nul and remove.nul list every path",
        },
    }
    write_json(out_dir / "summary.json", summary)
    return summary
