"""eval_scenarios.py with one of this version's rules switched off, to tell which rule moved a figure.

    python benchmarks/ablate_scenarios.py nofloor --seeds 1 --rules fused   # pixel-level channels decide alone at any score
    python benchmarks/ablate_scenarios.py noband --seeds 1 --rules fused    # no frame-edge band in the verifier

The rule is switched off by patching the library in this process only; every other argument goes to
``eval_scenarios.py``.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("nofloor", "noband"):
        raise SystemExit(__doc__)
    which = sys.argv.pop(1)
    if which == "nofloor":
        import diffrep.auditing.channels as channels

        channels.ALONE_FLOOR = -np.inf
    else:
        from diffrep.matching.verify import Verifier

        Verifier.edge_margin = property(lambda self: 0)  # type: ignore[assignment]
        Verifier.pixel_margin = property(lambda self: 0)  # type: ignore[assignment]
    sys.path.insert(0, str(HERE))
    sys.argv[0] = str(HERE / "eval_scenarios.py")
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
