"""The command line: parse arguments, draw progress, call the library, print one-line errors.

``parser.py`` builds the parser (defaults from ``diffrep.defaults``), ``commands.py`` holds one function per
command, ``bars.py`` draws the progress. Heavy modules (onnxruntime, faiss, pyarrow, torch) are imported
inside the commands, so `diffrep --help` is instant.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from ..errors import DiffrepError, OutputError
from ..fsutil import printable
from .bars import ProgressBars
from .parser import build_parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..decode import bound_heap

    bound_heap()
    func: Callable[[argparse.Namespace, ProgressBars], int] = args.func
    try:
        with ProgressBars(quiet=getattr(args, "quiet", False)) as bars:
            return func(args, bars)
    except DiffrepError as exc:
        print(f"diffrep: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly, as other tools do
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except OSError as exc:  # a fault outside the library's own checks (disk, permissions): one line, no traceback
        where = f" ({printable(str(exc.filename))})" if exc.filename else ""
        print(f"diffrep: error: {exc.strerror or exc}{where}. Check the disk and the paths, then run the same "
              "command again; finished work is kept.", file=sys.stderr)
        return OutputError.exit_code
    except KeyboardInterrupt:
        print("diffrep: interrupted. Finished work is saved; run the same command again to resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
