"""Index directories on real emoji with real SSCD: build, append, change, resume after kill -9, mismatch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_images
from diffrep.errors import DescriptorMismatchError, DiffrepIndexError
from diffrep.indexing import index, open_index


def _vectors_by_id(path: Path) -> dict[str, np.ndarray]:
    idx = open_index(path)
    ids = idx.column("id")
    vec = idx.vectors(np.arange(len(ids)))
    return dict(zip(ids, vec))


def test_build_search_and_append(tmp_path, emoji_files, sscd):
    train = copy_images(emoji_files[:24], tmp_path / "train")
    r = index(train, tmp_path / "idx", descriptor=sscd)
    assert (r.images, r.added, r.unchanged, r.skipped) == (24, 24, 0, 0)
    idx = open_index(tmp_path / "idx")
    assert idx.fingerprint["name"] == "sscd" and idx.meta["count"] == 24 and idx.pending_chunks == 0
    # each training image finds itself at rank 1 with cosine ~1
    vec = idx.vectors(np.arange(24))
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-4)
    s, i = idx.search(vec, 1)
    assert (i[:, 0] == np.arange(24)).all() and (s[:, 0] > 0.999).all()

    # re-run: nothing to do
    r2 = index(train, tmp_path / "idx", descriptor=sscd)
    assert (r2.images, r2.added, r2.unchanged) == (24, 0, 24)
    # append new images: only they are embedded
    copy_images(emoji_files[24:30], train)
    r3 = index(train, tmp_path / "idx", descriptor=sscd)
    assert (r3.images, r3.added, r3.unchanged) == (30, 6, 24)
    # a changed image is re-embedded and replaces its old row
    target = train / emoji_files[0].name
    target.write_bytes(emoji_files[100].read_bytes())
    os.utime(target, (time.time() + 5, time.time() + 5))
    r4 = index(train, tmp_path / "idx", descriptor=sscd)
    assert (r4.images, r4.added) == (30, 1)
    after = _vectors_by_id(tmp_path / "idx")
    fresh = sscd.embed_images([_decode(emoji_files[100])])[0]
    assert float(after[emoji_files[0].name] @ fresh) > 0.999
    assert len(open_index(tmp_path / "idx").dir.chunk_numbers()) == 3  # one chunk per run that embedded


def _decode(path: Path) -> np.ndarray:
    from diffrep.decode import decode_image

    return decode_image(path.read_bytes())


def test_descriptor_mismatch_refused(tmp_path, emoji_files):
    train = copy_images(emoji_files[:8], tmp_path / "train")
    index(train, tmp_path / "idx", descriptor="sscd-fast")
    with pytest.raises(DescriptorMismatchError, match="sscd-fast"):
        index(train, tmp_path / "idx", descriptor="sscd")
    from diffrep.auditing import audit

    with pytest.raises(DescriptorMismatchError, match="not comparable"):
        audit(train, tmp_path / "idx", tmp_path / "out", descriptor="sscd")


def test_missing_and_unfinished_index(tmp_path):
    with pytest.raises(DiffrepIndexError, match="does not exist"):
        open_index(tmp_path / "nope")
    (tmp_path / "half" / "chunks").mkdir(parents=True)
    (tmp_path / "half" / "chunks" / "c000001.parquet").write_bytes(b"")
    with pytest.raises(DiffrepIndexError, match="interrupted"):
        open_index(tmp_path / "half")


def test_resume_after_kill_9(tmp_path, emoji_files):
    """kill -9 mid-run, then resume: finished chunks are not recomputed and the result equals a clean run."""
    files = emoji_files[200:296]
    train = copy_images(files, tmp_path / "train")
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "diffrep", "index", str(train), "--out", str(out), "--chunk-size", "16",
           "--batch-size", "8", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "chunks" / "c000002.parquet").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = sorted((out / "chunks").glob("c*.parquet"))
    assert 2 <= len(committed) < 6, "the run should have been killed part-way"
    assert not (out / "index.json").exists()  # never finalized
    with pytest.raises(DiffrepIndexError, match="interrupted"):
        open_index(out)

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import re

    m = re.search(r"(\d+) embedded now .*?, (\d+) unchanged", done.stdout)
    assert m, done.stdout
    embedded, unchanged = int(m.group(1)), int(m.group(2))
    assert unchanged == 16 * len(committed) and embedded + unchanged == len(files)
    resumed = _vectors_by_id(out)
    clean = index(train, tmp_path / "clean", descriptor="sscd", batch_size=8)
    assert clean.images == len(files)
    ref = _vectors_by_id(tmp_path / "clean")
    assert resumed.keys() == ref.keys()
    for k in ref:
        assert float(resumed[k] @ ref[k]) > 0.999


def test_ctrl_c_leaves_index_consistent(tmp_path, emoji_files):
    files = emoji_files[300:364]
    out = tmp_path / "idx"
    index(copy_images(files[:8], tmp_path / "train"), out)  # a finished generation exists
    train = copy_images(files[8:], tmp_path / "train")  # then 56 more images arrive
    cmd = [sys.executable, "-m", "diffrep", "index", str(train), "--out", str(out), "--chunk-size", "8", "-q"]
    # the child gets the default SIGINT disposition: when the suite itself runs as a background job
    # (`make test &` in a script), the shell ignores SIGINT, the child would inherit that and finish
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "chunks" / "c000003.parquet").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in err
    idx = open_index(out)  # the previous generation is still readable
    assert len(idx) == 8 and idx.pending_chunks >= 1


def test_unchanged_chunks_are_not_read_again_unless_asked(tmp_path, emoji_files, sscd):
    """An index run checks only chunks that are new or whose files changed since they last passed, and keeps
    the current generation when nothing changed, so it does not read the whole index again; ``check_chunks``
    reads every chunk. Shown with damage that keeps a chunk's size and modification time (zeroed in place):
    the plain run cannot see it, the full check can."""
    from diffrep.indexing.store import CHECKED_FILE

    train = copy_images(emoji_files[:12], tmp_path / "train")
    index(train, tmp_path / "idx", descriptor=sscd, chunk_size=4, batch_size=4)
    assert not (tmp_path / "idx" / CHECKED_FILE).exists()  # chunks are checked by the run after the one writing them
    index(train, tmp_path / "idx", descriptor=sscd)
    checked = np.load(tmp_path / "idx" / CHECKED_FILE)
    assert checked[:, 0].tolist() == [1, 2, 3] and (checked[:, 1] == 512).all()  # one row per chunk that passed
    chunk = tmp_path / "idx" / "chunks" / "c000002.npy"
    before = chunk.stat()
    v = np.load(chunk)
    with open(chunk, "r+b") as fh:  # zero the vectors, keep the header, the size and the modification time
        fh.seek(before.st_size - v.nbytes)
        fh.write(bytes(v.nbytes))
    os.utime(chunk, ns=(before.st_atime_ns, before.st_mtime_ns))
    generation = open_index(tmp_path / "idx").meta["generation"]
    r = index(train, tmp_path / "idx", descriptor=sscd)
    assert (r.repaired, r.added, r.images) == ([], 0, 12)
    assert open_index(tmp_path / "idx").meta["generation"] == generation  # nothing changed: no rebuild either
    r = index(train, tmp_path / "idx", descriptor=sscd, check_chunks=True)
    assert [n for n, _ in r.repaired] == [2] and r.added == 4
    assert open_index(tmp_path / "idx").meta["generation"] == generation + 1
    assert np.load(tmp_path / "idx" / CHECKED_FILE)[:, 0].tolist() == [1, 3]  # chunk 4 is checked by the next run
    (tmp_path / "idx" / CHECKED_FILE).write_bytes(b"not an array")  # an unreadable record: every chunk is read
    assert index(train, tmp_path / "idx", descriptor=sscd).added == 0
    assert np.load(tmp_path / "idx" / CHECKED_FILE)[:, 0].tolist() == [1, 3, 4]
