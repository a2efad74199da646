"""Write audit tables: matches (CSV + Parquet), skipped inputs (CSV), summary (JSON). All atomic."""
from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DiffrepError, brief
from ..fsutil import atomic_path, write_json, write_npz, write_text

#: files ``diffrep report`` renders into an audit directory (a new audit removes them with the old results)
REPORT_FILES = ("report.html", "similarity_hist.png", "verdict_hist.png")

MATCH_SCHEMA = pa.schema([
    ("query_path", pa.string()), ("query_id", pa.string()), ("query_caption", pa.string()),
    ("rank", pa.int32()), ("train_path", pa.string()), ("train_id", pa.string()),
    ("train_caption", pa.string()), ("score", pa.float32()), ("global_rank", pa.int32()),
    ("verify_score", pa.float32()), ("inliers", pa.int32()), ("mirrored", pa.bool_()),
    ("pixel_score", pa.float32()), ("specific", pa.bool_()), ("match_kind", pa.string()), ("region_score", pa.float32()),
    ("object_score", pa.float32()), ("local_votes", pa.float32()), ("query_box", pa.string()), ("train_box", pa.string()),
    ("verdict_score", pa.float32()), ("is_replica", pa.bool_()), ("p_value", pa.float64()),
    ("train_dup_count", pa.int32()),
])
_FLOAT_FORMAT = {"score": "{:.6f}", "verify_score": "{:.6f}", "pixel_score": "{:.6f}", "region_score": "{:.6f}",
                 "object_score": "{:.6f}", "local_votes": "{:.4f}", "verdict_score": "{:.6f}", "p_value": "{:.6g}"}


def write_matches(out_dir: Path, rows: list[dict[str, Any]]) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=MATCH_SCHEMA)
    with atomic_path(out_dir / "matches.parquet") as tmp:
        pq.write_table(table, tmp)
    buf = io.StringIO()
    w = csv.writer(buf)
    names = MATCH_SCHEMA.names
    w.writerow(names)
    for r in rows:
        w.writerow(["" if r.get(n) is None else
                    _FLOAT_FORMAT[n].format(r[n]) if n in _FLOAT_FORMAT else r[n] for n in names])
    write_text(out_dir / "matches.csv", buf.getvalue())
    return table


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    write_json(out_dir / "summary.json", summary)


def write_distributions(out_dir: Path, arrays: dict[str, Any]) -> None:
    """Score distributions behind the summary and the report's histograms (``scores.npz``)."""
    import numpy as np

    clean = {k: np.asarray(v, np.float32) for k, v in arrays.items() if v is not None}
    write_npz(out_dir / "scores.npz", clean)


def read_distributions(out_dir: Path) -> dict[str, Any]:
    import numpy as np

    p = out_dir / "scores.npz"
    if not p.is_file():
        return {}
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise DiffrepError(f"{p} is damaged or was not written by diffrep ({brief(exc)}); run the "
                           "audit again") from None
