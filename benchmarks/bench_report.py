"""Report size and load time at scale: inflate an audit directory to N generations and render it.

The rows of an existing audit (its images, scores, captions) are repeated under new query names until
there are N generations, then `render_report` runs and headless Chromium loads the page.

Usage:  python benchmarks/bench_report.py AUDIT_DIR [--n 10000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffrep.report.html import render_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audit_dir")
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    src = Path(a.audit_dir)
    work = Path(tempfile.mkdtemp(prefix="diffrep-report-bench-"))
    try:
        rows = pq.read_table(src / "matches.parquet").to_pylist()
        by_q: dict[str, list[dict]] = {}
        for r in rows:
            by_q.setdefault(r["query_path"], []).append(r)
        groups = list(by_q.values())
        out = []
        for i in range(a.n):
            for r in groups[i % len(groups)]:
                out.append({**r, "query_id": f"{i:06d}-{r['query_id']}"})
        pq.write_table(pa.Table.from_pylist(out), work / "matches.parquet")
        s = json.loads((src / "summary.json").read_text())
        reps = sum(1 for r in out if r["rank"] == 1 and r["is_replica"])
        s.update(queries=a.n, replicas=reps, replication_rate=reps / a.n)
        (work / "summary.json").write_text(json.dumps(s))
        with np.load(src / "scores.npz") as z:
            arrays = {k: np.resize(z[k], a.n) if k.startswith("query") else z[k] for k in z.files}
        np.savez(work / "scores.npz", **arrays)
        t = time.perf_counter()
        page = render_report(work)
        t_render = time.perf_counter() - t
        size = page.stat().st_size / 1e6
        chrome = shutil.which("chromium")
        t_load = None
        if chrome:
            flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={work / 'prof'}"]
            subprocess.run([chrome, *flags, "--dump-dom", "about:blank"], capture_output=True, timeout=120)
            t = time.perf_counter()
            subprocess.run([chrome, *flags, "--dump-dom", page.as_uri()], capture_output=True, timeout=120)
            t_load = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| generations | replicas | report size (MB) | render (s) | Chromium load incl. start (s) |")
    print("|---|---|---|---|---|")
    print(f"| {a.n} | {reps} | {size:.1f} | {t_render:.1f} | {t_load:.2f} |" if t_load else
          f"| {a.n} | {reps} | {size:.1f} | {t_render:.1f} | (no chromium) |")


if __name__ == "__main__":
    main()
