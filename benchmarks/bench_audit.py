"""Audit cost: wall time and peak memory of one audit, per verification setting, each in a fresh process.

Runs on a built demo scenario (``make demo`` leaves one in demo-out/): its generations against its index,
calibrated on its reference images, with verification off, with RANSAC alignment only, and with the
default (RANSAC + keypoint-free ECC alignment).

Usage:  python benchmarks/bench_audit.py [--demo demo-out] [--out /tmp/bench-audit]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "--no-verify": {"verify": False},
    "verify, RANSAC alignment only": {"verify": True, "ecc": False},
    "verify (default: RANSAC + ECC alignment)": {"verify": True, "ecc": True},
}


def _one(demo: Path, out: Path, setting: str) -> None:
    from diffrep.auditing.run import audit
    from diffrep.matching.verify import VerifyConfig

    kw = SETTINGS[setting]
    t0 = time.perf_counter()
    res = audit(demo / "scenario" / "generations", demo / "index", out, reference=demo / "scenario" / "reference",
                verify=kw["verify"], verify_config=VerifyConfig(ecc=kw.get("ecc", True)))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"setting": setting, "wall_s": round(wall, 1), "peak_rss_mb": round(rss),
                      "queries": res.summary["queries"], "replicas": res.summary["replicas"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="demo-out", help="a demo output folder (scenario/ and index/)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    demo = Path(a.demo)
    if not (demo / "index").is_dir() or not (demo / "scenario" / "generations").is_dir():
        sys.exit(f"{demo} is not a demo output folder: run `make demo` first (or give --demo)")
    out = Path(a.out or tempfile.mkdtemp(prefix="diffrep-bench-audit-"))
    if a.one:
        _one(demo, out / "audit", a.one)
        return
    print("| setting | wall time (s) | peak RSS (MB) | generations | replicas |\n|---|---|---|---|---|")
    for setting in SETTINGS:
        r = subprocess.run([sys.executable, __file__, "--demo", str(demo), "--out", str(out), f"--one={setting}"],
                           capture_output=True, text=True, check=True)
        row = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"| {setting} | {row['wall_s']} | {row['peak_rss_mb']} | {row['queries']} | {row['replicas']} |",
              flush=True)


if __name__ == "__main__":
    main()
