"""Options that only some runs use: refused where they would change nothing, passed on only when given."""
from __future__ import annotations

import argparse
from typing import Any, Iterable


def refuse_unused(checks: Iterable[tuple[str, bool, bool, str]]) -> None:
    """``(flag, given, applies, hint)`` per option: DiffrepError naming the first one given where it does not
    apply (a setting that silently does nothing is a setting the user believes in)."""
    from ..errors import DiffrepError

    for flag, given, applies, hint in checks:
        if given and not applies:
            raise DiffrepError(f"{flag} would change nothing in this run: {hint}")


def given(a: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options among ``names`` that the command line set (parsed with ``default=None``), so that the library's
    defaults apply to the rest."""
    return {n: getattr(a, n) for n in names if getattr(a, n) is not None}
