"""The manifest: resolved from chunk tables with bounded memory (spilled partitions give the same file as one
in-memory pass), memory-mapped reads of rows and values, and manifests of older indexes (Parquet)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import copy_images
from diffrep.indexing import index, open_index
from diffrep.indexing import manifest as mf
from diffrep.indexing.store import IndexDir


def _row(image_id: str, status: str, row: int, tag: str) -> dict:
    return {"id": image_id, "path": f"/src/{image_id}", "caption": tag, "sha256": tag, "bytes": len(tag),
            "mtime": 1.0, "width": 8, "height": 8, "status": status,
            "reason": None if status == "ok" else f"{status} {tag}", "row": row}


def _chunks(root, seed: int = 0, numbers=range(1, 13)) -> tuple[IndexDir, dict[str, dict]]:
    """An index directory of 12 chunks (or ``numbers`` of them) whose ids recur across chunks (re-embedded,
    skipped, deleted), and the latest row of each id computed the plain way."""
    idx = IndexDir(root)
    latest: dict[str, dict] = {}
    for number in numbers:
        rng = np.random.default_rng([seed, number])
        rows, n_ok = [], 0
        for k in rng.choice(300, size=40, replace=False):
            image_id = f"d{int(k) % 7}/img-{int(k):04d}.png"
            status = str(rng.choice(["ok", "ok", "ok", "skipped", "deleted"]))
            rows.append(_row(image_id, status, n_ok if status == "ok" else -1, f"c{number}"))
            n_ok += status == "ok"
        idx.write_chunk(number, rows, np.zeros((n_ok, 4), np.float32))
        for r in rows:
            latest[r["id"]] = r
    return idx, latest


@pytest.mark.parametrize("max_rows,max_parts", [(10_000, 256), (100, 256), (37, 256), (37, 2)])
def test_spilled_partitions_resolve_like_one_pass(tmp_path, monkeypatch, max_rows, max_parts):
    monkeypatch.setattr(mf, "MAX_PARTS", max_parts)  # 2: partitions larger than max_rows
    idx, latest = _chunks(tmp_path / "idx")
    n, skips = mf.write_manifest(idx, tmp_path / "m.arrow", max_rows=max_rows)
    m = mf.Manifest(tmp_path / "m.arrow")
    live = sorted(i for i, r in latest.items() if r["status"] == "ok")
    assert n == m.num_rows == len(live) and m.column_names == mf.MANIFEST_SCHEMA.names
    assert m.column("id").to_pylist() == live and m.column("idx").to_pylist() == list(range(n))
    assert m.column("caption").to_pylist() == [latest[i]["caption"] for i in live]  # the latest chunk's row
    assert sorted(skips) == sorted((r["path"], r["reason"]) for r in latest.values() if r["status"] == "skipped")
    assert not any(p.name.startswith(".shards-") for p in idx.root.iterdir())  # the scratch folder is gone
    if max_rows < 10_000:  # the same file as one in-memory pass
        mf.write_manifest(idx, tmp_path / "one.arrow")
        assert mf.Manifest(tmp_path / "one.arrow").table.equals(m.table)


def test_rows_and_values_come_from_their_batches(tmp_path, monkeypatch):
    idx, _ = _chunks(tmp_path / "idx", seed=1)
    monkeypatch.setattr(mf, "BATCH_ROWS", 16)  # many record batches
    n, _ = mf.write_manifest(idx, tmp_path / "m.arrow")
    m = mf.Manifest(tmp_path / "m.arrow")
    assert len(m.table.to_batches()) == -(-n // 16)
    whole = m.table.combine_chunks()
    rows = np.array([n - 1, 0, 17, 17, 5, 33, n // 2, 16, 15])
    assert m.take(rows).equals(whole.take(pa.array(rows)))
    assert m.take([]).num_rows == 0
    ids = m.lookup("id")
    assert len(ids) == n and ids[17] == whole.column("id")[17].as_py() and ids[-1] == whole.column("id")[n - 1].as_py()
    assert ids[3:6] == whole.column("id").to_pylist()[3:6]
    with pytest.raises(IndexError):
        m.take([n])
    with pytest.raises(IndexError):
        ids[n]


def test_an_index_with_a_parquet_manifest_still_opens(tmp_path, emoji_files, sscd):
    train = copy_images(emoji_files[:6], tmp_path / "train")
    index(train, tmp_path / "idx", descriptor=sscd)
    before = open_index(tmp_path / "idx")
    ids, vec = before.column("id"), before.vectors(np.arange(6))
    arrow = next((tmp_path / "idx").glob("manifest-*.arrow"))
    pq.write_table(before.manifest.table, arrow.with_suffix(".parquet"))  # as indexes written before stored it
    del before
    arrow.unlink()
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    del meta["build_state"]  # nor did those indexes record what a generation was built from
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    after = open_index(tmp_path / "idx")
    assert after.column("id") == ids and np.array_equal(after.vectors(np.arange(6)), vec)
    assert after.lookup("path")[2] == str(train / ids[2])
    index(train, tmp_path / "idx", descriptor=sscd)  # the next build writes an Arrow manifest, removes the old one
    assert [p.suffix for p in (tmp_path / "idx").glob("manifest-*")] == [".arrow"]


def test_a_manifest_whose_last_rows_fail_to_write_does_not_appear(tmp_path, monkeypatch):
    idx, _ = _chunks(tmp_path / "idx")

    def fails(self, final):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mf.ManifestWriter, "_flush", fails)
    with pytest.raises(Exception, match="No space left"):
        mf.write_manifest(idx, tmp_path / "m.arrow")
    assert not any(p.name.startswith(("m.arrow", ".m.arrow")) for p in tmp_path.iterdir())  # nor its temp file
