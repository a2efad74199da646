"""One exception family for everything diffrep reports to users.

Every message says what went wrong *and* what to do about it. The CLI maps each class to an exit code
and prints the message on one line, never a traceback.
"""
from __future__ import annotations


class DiffrepError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, wrong option)."""

    exit_code = 2


class SourceError(DiffrepError):
    """A source (folder, shard list, caption file) is missing, empty or unreadable."""

    exit_code = 3


class DescriptorError(DiffrepError):
    """A descriptor cannot be loaded (unknown name, missing model file or package)."""

    exit_code = 4


class IndexError_(DiffrepError):
    """An index directory is missing, incomplete or incompatible with the request."""

    exit_code = 5


class DescriptorMismatchError(IndexError_):
    """Queries would be embedded with a different descriptor than the index was built with."""

    exit_code = 6


class OutputError(DiffrepError):
    """An output location cannot be written."""

    exit_code = 7


class CalibrationError(DiffrepError):
    """A replication threshold cannot be calibrated from the data given."""

    exit_code = 8


def brief(exc: BaseException) -> str:
    """An exception's message on one line: an OS error's own text, else the message's first line and its last
    where they differ (TorchScript puts the model's own error last), else the exception's type."""
    if getattr(exc, "strerror", None):
        return str(exc.strerror)  # type: ignore[attr-defined]
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text[:400]


def check_settings(*, fpr: float | None = None, seeds: int | None = None, batch: int | None = None,
                   sample_steps: int | None = None, guidance: float | None = None) -> None:
    """The checks of settings several commands share, with the same one-line message wherever they are given
    (``None``: not a setting of the caller). ``sample_steps`` is the sampler's number of denoising steps."""
    if fpr is not None and not 0 < fpr < 1:
        raise DiffrepError(f"--fpr {fpr}: give a rate between 0 and 1 (0.01 by default)")
    if seeds is not None and seeds < 1:
        raise DiffrepError(f"--seeds {seeds}: give at least one seed")
    if batch is not None and batch < 1:
        raise DiffrepError(f"--batch {batch}: give a positive batch size")
    if sample_steps is not None and not 1 <= sample_steps <= 1000:
        raise DiffrepError(f"--steps {sample_steps}: the sampler runs between 1 and 1000 denoising steps")
    if guidance is not None and not 0 <= guidance < float("inf"):
        raise DiffrepError(f"--guidance {guidance}: give a finite scale >= 0 (1: no guidance)")


# Public alias without the trailing underscore (the builtin IndexError is not shadowed inside the package).
DiffrepIndexError = IndexError_

__all__ = [
    "DiffrepError",
    "SourceError",
    "DescriptorError",
    "DiffrepIndexError",
    "DescriptorMismatchError",
    "OutputError",
    "CalibrationError",
]
