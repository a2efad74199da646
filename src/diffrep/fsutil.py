"""Atomic files, output-directory locks, the text-escaping rule and safe JSON parsing.

Every file diffrep writes goes through here: write to a temporary file in the same directory, fsync,
then ``os.replace``. A kill at any point leaves either the old file or the new one, never a torn one.
New files get the mode the process umask allows (``0o666 & ~umask``), like any ordinary program's.
An ``OSError`` while writing (a full disk, a read-only folder) becomes one ``OutputError`` that names
the file and says what to do.

Text rule: every text file diffrep writes is UTF-8. A file name that is not valid UTF-8 (Python holds
its undecodable bytes as lone surrogates) is written with those bytes as ``\\xNN`` escapes
(:func:`printable`), never as invalid bytes and never as a crash.
"""
from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputError

#: the free space an output directory must have before a long run starts (environment: DIFFREP_MIN_FREE_BYTES)
MIN_FREE_BYTES = int(os.environ.get("DIFFREP_MIN_FREE_BYTES", 8 << 20))


def _escape_surrogates(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: undecodable file-name bytes (lone surrogates) as ``\\xNN``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start:exc.end]:
        code = ord(ch)
        out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}")
    return "".join(out), exc.end


codecs.register_error("diffrep-escape", _escape_surrogates)


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes as ``\\xNN`` (a valid UTF-8 string; others unchanged)."""
    return text.encode("utf-8", "diffrep-escape").decode("utf-8")


def is_utf8(text: str) -> bool:
    """Whether ``text`` (e.g. a file name from the OS) is valid Unicode that UTF-8 can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_UMASK_LOCK = threading.Lock()
_UMASK: int | None = None


def _file_mode() -> int:
    global _UMASK
    with _UMASK_LOCK:
        if _UMASK is None:
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return 0o666 & ~_UMASK


def _output_error(path: Path, exc: OSError) -> OutputError:
    what = exc.strerror or str(exc)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or (free is not None and free < (1 << 20))
    if full and exc.errno != errno.ENOSPC and free is not None:
        what += f" (the disk has {free // 1024} KiB free)"
    hint = "free some space, or write to another disk" if full else "choose a location you can write to"
    return OutputError(f"cannot write {printable(str(path))}: {what}. Nothing was half-written; {hint} and "
                       "run the command again.")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    An ``OSError`` raised while the caller writes, or while committing, becomes ``OutputError``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _output_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, _file_mode())
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _output_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_npy(path: str | os.PathLike[str], array: Any) -> None:
    """A NumPy array as ``.npy``, atomically (never pickled)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)


def write_npz(path: str | os.PathLike[str], arrays: dict[str, Any], compress: bool = True) -> None:
    """Named NumPy arrays as ``.npz`` (zip-compressed unless ``compress`` is false), atomically."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text, atomically; undecodable file-name bytes are written as ``\\xNN`` (module docstring)."""
    write_bytes(path, text.encode("utf-8", "diffrep-escape"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """``obj`` as JSON (written atomically); NaN and infinite numbers, which JSON does not have, become null."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    except ValueError:
        text = json.dumps(finite(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def finite(o: Any) -> Any:
    """``o`` with every non-finite float (numpy's included) replaced by None."""
    import numpy as np

    if isinstance(o, np.ndarray):
        o = o.tolist()
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` that raises ``ValueError`` for anything it cannot parse, too-deep nesting included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_cache(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object a resumable run wrote (a marker of finished work), or None when it is missing, unreadable,
    not JSON or not an object: the work it marks is then done again, instead of the run stopping."""
    try:
        obj = parse_json(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def finished(marker: str | os.PathLike[str], settings: Any) -> dict[str, Any] | None:
    """The marker a resumable step wrote (``read_cache``) when its ``settings`` entry equals ``settings``, compared
    as JSON (a tuple equals the list it was written as); None otherwise: the step is then done again."""
    old = read_cache(marker)
    if old is None or json.loads(json.dumps(old.get("settings"))) != json.loads(json.dumps(settings)):
        return None
    return old


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Create ``path`` if needed and check we can write into it (a few KiB really written, and at least
    ``MIN_FREE_BYTES`` free); raise OutputError otherwise, before any long work starts."""
    path = Path(path)
    shown = printable(str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {shown}: {exc.strerror or exc}. "
                          "Choose a location you can write to.") from None
    if not path.is_dir():
        raise OutputError(f"{what} {shown} exists and is not a directory. Choose another path.")
    try:
        with tempfile.NamedTemporaryFile(prefix=".diffrep-write-test", dir=path) as fh:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
        free = shutil.disk_usage(path).free
    except OSError as exc:
        raise OutputError(f"cannot write into {what} {shown}: {exc.strerror or exc}. "
                          "Choose a location you can write to (or free some space).") from None
    if free < MIN_FREE_BYTES:
        raise OutputError(f"{what} {shown} is on a disk with only {free // 1024} KiB free. Free some space "
                          "or choose another location.")
    return path


class DirLock:
    """An exclusive advisory lock on an output directory (``DIR/.lock``), so two diffrep processes never
    write one directory at once. The lock file holds the holder's PID; a symbolic link there is refused."""

    def __init__(self, directory: str | os.PathLike[str], what: str = "directory") -> None:
        self.path = Path(directory) / ".lock"
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "DirLock":
        shown = printable(str(self.path.parent))
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _file_mode())
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputError(f"{printable(str(self.path))} is a symbolic link; diffrep will not write "
                                  "through it. Delete it and run the command again.") from None
            raise _output_error(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"another diffrep process is writing the {self.what} {shown}; wait for it to "
                              "finish (or stop it) and retry.") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the lock holds without the PID note (e.g. a full disk: the real writes will say so)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
