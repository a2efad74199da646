"""Fetching packaged data with the system's ordinary clients (npm, apt-get + dpkg-deb) into a cache folder.

Each dataset folder is built in a temporary directory and renamed into place with a ``.complete`` marker
(holding the dataset's format tag), so an interrupted fetch is simply redone and an older layout rebuilt.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional

from ..errors import DiffrepError
from ..progress import ProgressCallback, emit

COMPLETE = ".complete"
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


def _is_done(folder: Path, tag: str | None) -> bool:
    try:
        return tag is None or (folder / COMPLETE).read_text(encoding="utf-8").strip() == tag
    except OSError:
        return False


def cached(root: Path, name: str, build: Callable[[Path], None], tag: str | None = None) -> Path:
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


def npm_pack(spec: str, dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise DiffrepError("npm is needed to fetch the emoji dataset: install Node.js/npm "
                           "(e.g. apt-get install npm) and retry")
    env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false",
               npm_config_audit="false")
    advice = "check that npm can reach its registry (npm config get registry) and retry"
    run([npm, "pack", spec, "--ignore-scripts"], dest, f"npm pack {spec}", advice, env)
    tgz = sorted(dest.glob("*.tgz"))
    if not tgz:
        raise DiffrepError(f"npm pack {spec} wrote no .tgz; {advice}")
    return tgz[0]


def download_deb(package: str, scratch: Path, progress: Optional[ProgressCallback],
                  advice_no_client: str) -> Path:
    """``apt-get download`` one Debian package into ``scratch`` and unpack it (no root needed); return
    the unpacked tree."""
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise DiffrepError(f"{'apt-get' if apt is None else 'dpkg-deb'} is needed to fetch {package}: on "
                           f"Debian/Ubuntu install the packages 'apt' and 'dpkg'; {advice_no_client}")
    emit(progress, "download", 0, 1, unit="file", message=package)
    run([apt, "download", package], scratch, "apt-get download", "run 'apt-get update' (as root) and retry")
    debs = sorted(scratch.glob("*.deb"))
    if not debs:
        raise DiffrepError(f"apt-get download {package} produced no .deb; run 'apt-get update' (as root) and retry")
    run([dpkg, "-x", str(debs[0]), str(scratch / "x")], scratch, "dpkg-deb -x", "check free disk space and retry")
    emit(progress, "download", 1, 1, unit="file", message=package)
    return scratch / "x"


def run(cmd: list[str], cwd: Path, what: str, advice: str, env: dict[str, str] | None = None) -> None:
    """Run a command quietly; on failure raise with the last line of its error output."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DiffrepError(f"{what} took over {_TIMEOUT_S} s; {advice}") from None
    if proc.returncode != 0:
        raise DiffrepError(f"{what} failed: {error_summary(proc.stderr or proc.stdout or '', proc.returncode)}"
                           f". {advice[:1].upper() + advice[1:]}")


def error_summary(text: str, returncode: int) -> str:
    """The last line of a tool's error output, preceded by its first real error line when that
    last line is only a pointer (npm ends with 'A complete log of this run can be found in: ...')."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return f"exit code {returncode}"
    useful = [ln for ln in lines if "warn" not in ln.lower()[:10] and not ln.startswith("W:")
              and " code " not in ln[:20] and "complete log" not in ln]
    return lines[-1] if not useful or useful[0] == lines[-1] else f"{useful[0]} ({lines[-1]})"
