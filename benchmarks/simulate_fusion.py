"""Re-fuse stored audit scores under another agreement rule, without re-running the audits.

Reads each ``<work>/<kind>-seed<N>/audit-partial/scores.npz`` (per-channel scores of generations and reference
images) and ``truth.csv`` written by ``benchmarks/eval_kinds.py``, and counts the unseen generations flagged and
the copies flagged under (a) the audit's rule (geometric mean of the two smallest p-values of SSCD top-1,
verified and region scores; pixel and object scores may decide alone) and (b) the same rule with the SSCD
top-1 and the region (window) cosine counted as one family (the smaller of their p-values). The specificity
void masks are not stored in scores.npz, so both simulated rules ignore them; the stored verdicts are printed
beside them for comparison. Usage:  python benchmarks/simulate_fusion.py /tmp/kinds [/tmp/unseen ...]
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from diffrep.auditing.channels import ALONE_FLOOR
from diffrep.matching.calibration import fuse_channels, threshold_at_fpr


def fuse(nulls: list, qs: list, family: bool) -> tuple[np.ndarray, np.ndarray]:
    """Channels: global, verified, region, pixel, object."""
    kw = dict(alone_floor=ALONE_FLOOR)
    if not family:
        return fuse_channels(nulls, qs, alone=(3, 4), saturating=(3, 4), **kw)
    # min of the two SSCD-family p-values inside the geometric mean = max of the two fusions
    a = fuse_channels([nulls[i] for i in (0, 1, 3, 4)], [qs[i] for i in (0, 1, 3, 4)], alone=(2, 3),
                      saturating=(2, 3), **kw)
    b = fuse_channels([nulls[i] for i in (2, 1, 3, 4)], [qs[i] for i in (2, 1, 3, 4)], alone=(2, 3),
                      saturating=(2, 3), **kw)
    return np.maximum(a[0], b[0]), np.maximum(a[1], b[1])


def main() -> None:
    print("| folder | unseen | flagged (stored) | flagged (rule, no void) | flagged (SSCD family) | copies | "
          "copies flagged (stored / rule / family) |")
    print("|---|---|---|---|---|---|---|")
    total = np.zeros(8, int)
    for work in sys.argv[1:]:
        for d in sorted(Path(work).glob("*-seed*")):
            f = d / "audit-partial" / "scores.npz"
            if not f.is_file():
                continue
            s = np.load(f)
            truth = {r["generation"]: r["is_copy"] == "0" for r in csv.DictReader(open(d / "truth.csv"))}
            order: list[str] = []
            for r in csv.DictReader(open(d / "audit-partial" / "matches.csv")):
                if r["query_id"] not in order:
                    order.append(r["query_id"])
            unseen = np.array([truth[q] for q in order])
            nulls = [s[k] for k in ("reference_top1", "reference_verified", "null_region", "null_pixel", "null_object")]
            qs = [s[k] for k in ("query_top1", "query_verified", "query_region", "query_pixel", "query_object")]
            flags = [s["query_verdict"] > s["threshold"][0]]
            for family in (False, True):
                fn, fq = fuse(nulls, qs, family)
                flags.append(fq > threshold_at_fpr(fn, 0.01)[0])
            row = [int(unseen.sum())] + [int((fl & unseen).sum()) for fl in flags] + [int((~unseen).sum())] + \
                [int((fl & ~unseen).sum()) for fl in flags]
            total += row
            print(f"| {d.name} | {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]} | {row[5]} / {row[6]} / {row[7]} |")
    print(f"| all | {total[0]} | {total[1]} | {total[2]} | {total[3]} | {total[4]} | {total[5]} / {total[6]} / {total[7]} |")


if __name__ == "__main__":
    main()
