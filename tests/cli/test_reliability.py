"""Bad input and faults: every case ends in a result or one line on stderr and an exit code, never a traceback,
and nothing is silently wrong (docs/reliability.md). Real emoji images, real SSCD, real FAISS indexes."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_images

BAD = os.fsdecode(b"bad\xff-name.png")  # a file name that is not valid UTF-8
NEWLINE = "evil\n/etc/passwd.png"  # a file name with a line break that names another path


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        ok: bool = True, preexec=None) -> subprocess.CompletedProcess:
    """Run ``diffrep ARGS``; a traceback fails the test whatever the exit code."""
    r = subprocess.run([sys.executable, "-m", "diffrep", *args], capture_output=True, text=True, timeout=600,
                       cwd=cwd, env={**os.environ, **(env or {})}, preexec_fn=preexec, errors="replace")
    assert "Traceback" not in r.stderr, r.stderr
    assert "Warning:" not in r.stderr and "RuntimeWarning" not in r.stderr, r.stderr
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """Exit ``code`` and one error line (beside the plain progress lines a non-terminal gets) with ``words``."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and " done in " not in ln]
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("diffrep: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory, emoji_files):
    """30 training emoji (one of them also under a non-UTF-8 name and one under a name with a newline), 8
    generations (4 copies, 4 unseen), 30 reference images, and an index of the training folder."""
    root = tmp_path_factory.mktemp("rel")
    train = copy_images(emoji_files[0:600:20], root / "train")
    shutil.copyfile(emoji_files[700], train / BAD)
    shutil.copyfile(emoji_files[720], train / NEWLINE.replace("/", "_"))
    (train / "sub").mkdir()
    shutil.copyfile(emoji_files[740], train / "sub" / NEWLINE.replace("/", "|"))
    gen = root / "gen"
    gen.mkdir()
    for f in emoji_files[0:80:20]:
        shutil.copyfile(f, gen / f"copy_{f.name}")
    copy_images(emoji_files[1000:1040:10], gen)
    copy_images(emoji_files[2000:2300:10], root / "ref")
    cli("index", str(train), "--out", str(root / "idx"))
    return root


# ----------------------------------------------------------------------------------------------- audit modes
def test_paper_threshold_audit_renders_a_report_that_matches_its_summary(data, tmp_path):
    out = tmp_path / "aud"
    r = cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(out), "--threshold", "0.5",
            "--report")
    assert "threshold 0.5000 on the SSCD cosine, set by --threshold" in r.stdout and "Report:" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["calibration"]["source"] == "explicit" and s["calibration"]["target_fpr"] is None
    page = (out / "report.html").read_text()
    assert f"{100 * s['replication_rate']:.2f}%" in page and "0.5000" in page
    assert f"{s['replicas']} of {s['queries']} generated images" in page
    assert s["replicas"] >= 4  # the four pixel copies


def test_tiny_index_without_reference(data, tmp_path, emoji_files):
    small = copy_images(emoji_files[0:100:20], tmp_path / "small")
    cli("index", str(small), "--out", str(tmp_path / "idx"))
    r = cli("audit", str(data / "gen"), "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "a"),
            "--no-verify", "--report")
    assert "the paper's fixed SSCD 0.5 (uncalibrated)" in r.stdout and (tmp_path / "a" / "report.html").is_file()
    r = cli("audit", str(data / "gen"), "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "b"), ok=False)
    one_line_error(r, 8, "give --reference")
    ref = copy_images(sorted((data / "ref").iterdir())[:10], tmp_path / "ref")
    gen = copy_images(sorted((data / "gen").iterdir())[2:6], tmp_path / "gen")  # 2 copies, 2 unseen
    r = cli("audit", str(gen), "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "c"),
            "--reference", str(ref), "--partial", "--local-k", "0", "--report")  # no RuntimeWarning either
    assert "calibrated on 10 held-out reference images" in r.stdout


def test_a_new_audit_removes_the_report_of_the_old_one(data, tmp_path):
    out = tmp_path / "aud"
    cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(out), "--report")
    assert (out / "report.html").is_file()
    cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(out), "--threshold", "0.9",
        "--no-verify")
    assert not (out / "report.html").exists() and not (out / "verdict_hist.png").exists()


def test_output_inside_the_audited_folder_is_not_audited(data, tmp_path):
    gen = copy_images(sorted((data / "gen").iterdir()), tmp_path / "gen")
    for _ in range(2):
        cli("audit", str(gen), "--index", str(data / "idx"), "--out", str(gen / "audit"), "--report", "--no-verify")
        s = json.loads((gen / "audit" / "summary.json").read_text())
        assert s["queries"] == 8 and s["skipped"] == 0
    r = cli("audit", str(gen), "--index", str(data / "idx"), "--out", str(gen), ok=False)
    one_line_error(r, 3, "is the folder being read")


# ----------------------------------------------------------------------------------------------- file names
def test_odd_file_names_are_indexed_or_listed(data, tmp_path):
    idx = data / "idx"
    info = json.loads((idx / "index.json").read_text())
    assert info["count"] == 32  # 30 + the two names with a line break; the non-UTF-8 one is listed instead
    rows = list(csv.reader(io.StringIO((idx / "skipped.csv").read_text(encoding="utf-8"))))
    assert rows[1][0].endswith("bad\\xff-name.png") and "not valid UTF-8" in rows[1][1]
    from diffrep.indexing.load import open_index

    ids = open_index(idx).column("id")
    assert NEWLINE.replace("/", "_") in ids and "sub/" + NEWLINE.replace("/", "|") in ids
    # generations with odd names are audited the same way
    gen = copy_images(sorted((data / "gen").iterdir())[:3], tmp_path / "gen")
    shutil.copyfile(gen / sorted(os.listdir(gen))[0], gen / BAD)
    shutil.copyfile(gen / sorted(os.listdir(gen))[0], gen / "line\nbreak.png")
    cli("audit", str(gen), "--index", str(idx), "--out", str(tmp_path / "aud"), "--report")
    s = json.loads((tmp_path / "aud" / "summary.json").read_text())
    assert s["queries"] == 4 and s["skipped"] == 1
    with open(tmp_path / "aud" / "matches.csv", newline="", encoding="utf-8") as fh:
        assert any(r["query_path"].endswith("line\nbreak.png") for r in csv.DictReader(fh))
    cli("dedup", str(data / "train"), "--out", str(tmp_path / "dd"), "--no-verify")
    assert "bad\\xff-name.png" in (tmp_path / "dd" / "skipped.csv").read_text(encoding="utf-8")


def test_odd_tar_members_are_listed(tmp_path, emoji_files):
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tf:
        for i, f in enumerate(emoji_files[:4]):
            tf.add(f, arcname=f"s{i}.png")
        tf.add(emoji_files[4], arcname=os.fsdecode(b"s\xfe.png"))
        for name, kind in (("link.png", tarfile.SYMTYPE), ("hard.png", tarfile.LNKTYPE), ("dev.png", tarfile.CHRTYPE),
                           ("fifo.png", tarfile.FIFOTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.linkname = "s0.png" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            tf.addfile(ti)
    cli("index", str(shard), "--out", str(tmp_path / "idx"))
    reasons = {r[0].split("::")[-1]: r[1] for r in
               csv.reader(io.StringIO((tmp_path / "idx" / "skipped.csv").read_text(encoding="utf-8")))}
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["count"] == 4
    assert "symbolic link" in reasons["link.png"] and "hard link" in reasons["hard.png"]
    assert "device" in reasons["dev.png"] and "FIFO" in reasons["fifo.png"]
    assert "not valid UTF-8" in reasons["s\\xfe.png"]


def test_dedup_lists_cannot_be_steered_by_file_names(tmp_path, emoji_files):
    src = copy_images(emoji_files[:10], tmp_path / "src")
    shutil.copyfile(emoji_files[0], src / "a-copy.png")
    shutil.copyfile(emoji_files[1], src / NEWLINE.replace("/", "|"))  # "...\n|etc|passwd.png": a duplicate
    (src / "x").mkdir()
    shutil.copyfile(emoji_files[1], src / "x" / "passwd.png")
    r = cli("dedup", str(src), "--out", str(tmp_path / "dd"))
    assert "line break" in r.stdout
    dd = tmp_path / "dd"
    lines = (dd / "remove.txt").read_text().splitlines() + (dd / "keep.txt").read_text().splitlines()
    assert all(Path(p).is_file() for p in lines), lines  # every line is a whole, existing path
    every = [p for f in ("remove.nul", "keep.nul") for p in (dd / f).read_text().split("\0") if p]
    assert len(every) == 13 and len(lines) == 12 and all(Path(p).is_file() for p in every)
    assert json.loads((dd / "summary.json").read_text())["not_in_plain_lists"] == 1


# ----------------------------------------------------------------------------------------------- the report
def test_report_escapes_every_summary_value(data, tmp_path):
    out = tmp_path / "aud"
    cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(out))
    s = json.loads((out / "summary.json").read_text())
    evil = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    s["warnings"].append(evil)
    s["created"] = s["diffrep_version"] = evil
    s["index"]["images"] = evil
    s["index"]["descriptor"]["name"] = evil
    s["calibration"]["null_size"] = evil
    s["calibration"]["target_fpr"] = evil
    s["calibration"]["source"] = "$\\frac$" + evil
    s["top1"]["mean"] = evil
    s["captions"] = {"jaccard_replicas": evil, "over_represented_words": [
        {"word": evil, "replica_prompts": evil, "other_prompts": 1, "log_odds": "x"}, evil]}
    (out / "summary.json").write_text(json.dumps(s))
    cli("report", str(out))
    page = (out / "report.html").read_text()
    assert "<img src=x" not in page and '<script>document' not in page and page.count("<script>") == 1
    assert "'unsafe-inline'" not in page.split("script-src")[1].split(";")[0]
    for bad in ({"calibration": {"threshold": "high"}}, {"replicas": "many"}, [1, 2], "{" * 100_000):
        (out / "summary.json").write_text(bad if isinstance(bad, str) else json.dumps({**s, **bad} if
                                                                                      isinstance(bad, dict) else bad))
        one_line_error(cli("report", str(out), ok=False), 2, "summary.json")


def test_damaged_audit_files_give_one_line_errors(data, tmp_path):
    out = tmp_path / "aud"
    cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(out))
    with open(out / "scores.npz", "wb") as fh:
        np.savez(fh, query_top1=np.array([{"a": 1}], dtype=object))
    one_line_error(cli("report", str(out), ok=False), 2, "scores.npz")
    (out / "scores.npz").write_bytes(b"PK\x03\x04 not a zip")
    one_line_error(cli("report", str(out), ok=False), 2, "scores.npz")
    (out / "matches.parquet").write_bytes(b"PAR1")
    one_line_error(cli("report", str(out), ok=False), 2, "matches.parquet")


# ----------------------------------------------------------------------------------------------- the index
def _damage(chunk: Path, how: str) -> None:
    v = np.load(chunk)
    if how == "truncated":
        with open(chunk, "r+b") as fh:
            fh.truncate(chunk.stat().st_size // 2)
    elif how == "missing":
        chunk.unlink()
    elif how == "wrong shape":
        np.save(chunk, v[:, :100].copy())
    elif how == "zeroed":
        np.save(chunk, np.zeros_like(v))
    elif how == "NaN":
        v[3] = np.nan
        np.save(chunk, v)
    elif how == "pickled":
        np.save(chunk, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("how", ["truncated", "missing", "wrong shape", "zeroed", "NaN", "pickled"])
def test_a_damaged_chunk_is_reported_then_repaired(data, tmp_path, how):
    idx = tmp_path / "idx"
    shutil.copytree(data / "idx", idx)
    _damage(idx / "chunks" / "c000001.npy", how)
    one_line_error(cli("audit", str(data / "gen"), "--index", str(idx), "--out", str(tmp_path / "a"), ok=False),
                   5, "damaged", "c000001", "Re-run `diffrep index`")
    r = cli("index", str(data / "train"), "--out", str(idx))
    assert "Repaired: chunk c000001" in r.stdout and "Indexed 32 images" in r.stdout and "32 embedded now" in r.stdout
    cli("audit", str(data / "gen"), "--index", str(idx), "--out", str(tmp_path / "a"), "--no-verify")  # loads again


@pytest.mark.parametrize("edit", ["not json", "a list", "generation as text", "no dimension", "nested",
                                  "truncated manifest", "manifest lacks columns", "other count"])
def test_edited_index_files_give_one_line_errors(data, tmp_path, edit):
    idx = tmp_path / "idx"
    shutil.copytree(data / "idx", idx)
    meta = json.loads((idx / "index.json").read_text())
    manifest = next(idx.glob("manifest-*.arrow"))
    text = {"not json": "{oops", "a list": "[1, 2]", "nested": "[" * 50_000 + "]" * 50_000,
            "generation as text": json.dumps({**meta, "generation": "1"}),
            "no dimension": json.dumps({**meta, "descriptor": {"name": "sscd"}}),
            "other count": json.dumps({**meta, "count": 7})}.get(edit)
    if text is not None:
        (idx / "index.json").write_text(text)
    elif edit == "truncated manifest":
        manifest.write_bytes(manifest.read_bytes()[:300])
    else:
        import pyarrow as pa

        table = pa.ipc.open_file(pa.memory_map(str(manifest))).read_all().select(["idx", "id"])
        with pa.OSFile(str(manifest.with_suffix(".new")), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        manifest.with_suffix(".new").replace(manifest)
    code = 5
    r = cli("audit", str(data / "gen"), "--index", str(idx), "--out", str(tmp_path / "a"), ok=False)
    one_line_error(r, code, str(idx))
    if "manifest" in edit:  # the manifest is rebuilt from the chunks
        cli("index", str(data / "train"), "--out", str(idx))
        cli("audit", str(data / "gen"), "--index", str(idx), "--out", str(tmp_path / "a"), "--no-verify")


def test_index_follows_deletions_and_refuses_another_source(data, tmp_path, emoji_files):
    train = copy_images(emoji_files[0:160:20], tmp_path / "train")
    cli("index", str(train), "--out", str(tmp_path / "idx"))
    (train / sorted(os.listdir(train))[0]).unlink()
    r = cli("index", str(train), "--out", str(tmp_path / "idx"))
    assert "Indexed 7 images" in r.stdout and "1 removed (no longer in the source)" in r.stdout
    assert (tmp_path / "idx" / "skipped.csv").read_text().splitlines() == ["path,reason"]  # removed, not skipped
    other = copy_images(emoji_files[3000:3004], tmp_path / "other")
    one_line_error(cli("index", str(other), "--out", str(tmp_path / "idx"), ok=False), 3, "another source")
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["count"] == 7
    # tar shards: new shards are added, a shard of the same name from elsewhere is refused
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    for name, files in (("a/s1.tar", emoji_files[0:3]), ("a/s2.tar", emoji_files[3:6]), ("b/s1.tar", emoji_files[6:9])):
        with tarfile.open(tmp_path / name, "w") as tf:
            for i, f in enumerate(files):
                tf.add(f, arcname=f"{name[0]}{name[-5]}-{i}.png" if name[0] == "a" else f"a1-{i}.png")
    cli("index", str(tmp_path / "a/s1.tar"), "--out", str(tmp_path / "tidx"))
    r = cli("index", str(tmp_path / "a/s2.tar"), "--out", str(tmp_path / "tidx"))
    assert "Indexed 6 images" in r.stdout
    one_line_error(cli("index", str(tmp_path / "b/s1.tar"), "--out", str(tmp_path / "tidx"), ok=False), 3, "s1.tar")


@pytest.mark.parametrize("args,code,words", [
    (["--index-type", "bogus"], 2, "unknown index type"),
    (["--chunk-size", "0"], 2, "--chunk-size"),
    (["--max-pixels", "-1"], 2, "--max-pixels"),
    (["--batch-size", "0"], 2, "--batch-size"),
])
def test_bad_index_options_fail_before_any_work(data, tmp_path, args, code, words):
    r = cli("index", str(data / "train"), "--out", str(tmp_path / "idx"), *args, ok=False)
    one_line_error(r, code, words)
    assert not (tmp_path / "idx").exists()


# ----------------------------------------------------------------------------------------------- descriptors
TORCH_MODELS = '''
import sys, torch
class Scalar(torch.nn.Module):
    def forward(self, x): return x.mean()
class Raises(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 2:
            raise RuntimeError("the model broke")
        return x.flatten(1)[:, :16]
class SomeNaN(torch.nn.Module):  # NaN for images with a bright red centre, a plain projection otherwise
    def forward(self, x):
        v = x.flatten(1)[:, :16] + 0.5
        c = x.shape[2] // 2
        return torch.where(x[:, 0, c, c].unsqueeze(1) > 1.0, torch.full_like(v, float("nan")), v)
for cls in (Scalar, Raises, SomeNaN):
    torch.jit.script(cls()).save(f"{sys.argv[1]}/{cls.__name__}.pt")
'''


def test_torchscript_descriptors_that_misbehave(data, tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "models.py"
    script.write_text(TORCH_MODELS)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=300)
    one_line_error(cli("index", str(data / "train"), "--out", str(tmp_path / "i1"), "--descriptor",
                       f"torchscript:{tmp_path / 'Scalar.pt'}", ok=False), 4, "single number")
    one_line_error(cli("index", str(data / "train"), "--out", str(tmp_path / "i2"), "--descriptor",
                       f"torchscript:{tmp_path / 'Raises.pt'}", ok=False), 4, "the model broke")
    # NaN rows are skipped with a reason; the options (size=48) are stored and reused from another folder
    r = cli("index", str(data / "train"), "--out", str(tmp_path / "i3"), "--descriptor",
            "torchscript:SomeNaN.pt?size=48", cwd=tmp_path)
    rows = (tmp_path / "i3" / "skipped.csv").read_text(encoding="utf-8")
    n_nan = rows.count("non-finite values")
    count = json.loads((tmp_path / "i3" / "index.json").read_text())["count"]
    assert n_nan >= 1 and count >= 1 and count + n_nan == 32, r.stdout
    meta = json.loads((tmp_path / "i3" / "index.json").read_text())["descriptor"]
    assert meta["spec"] == f"torchscript:{tmp_path / 'SomeNaN.pt'}?size=48&norm=imagenet"
    cli("audit", str(data / "gen"), "--index", str(tmp_path / "i3"), "--out", str(tmp_path / "a3"),
        "--threshold", "0.9", "--no-verify", cwd=data)
    one_line_error(cli("audit", str(data / "gen"), "--index", str(tmp_path / "i3"), "--out", str(tmp_path / "a4"),
                       "--descriptor", f"torchscript:{tmp_path / 'SomeNaN.pt'}", ok=False), 6, "size 48", "size 288")


# ----------------------------------------------------------------------------------------------- text inputs
def test_caption_and_prompt_files_that_are_not_text(tmp_path, emoji_files):
    train = copy_images(emoji_files[0:60:20], tmp_path / "train")
    (train / "captions.jsonl").write_text('{"file": "a.png", "caption": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    one_line_error(cli("index", str(train), "--out", str(tmp_path / "i"), ok=False), 3, "line 1", "not valid JSON")
    (train / "captions.jsonl").write_bytes(b'{"file": "a.png", "caption": "caf\xe9"}\n')
    one_line_error(cli("index", str(train), "--out", str(tmp_path / "i"), ok=False), 3, "UTF-8")
    from diffrep.errors import SourceError
    from diffrep.models.sample import read_prompts

    (tmp_path / "p.txt").write_bytes(b"a caf\xe9\n")
    with pytest.raises(SourceError, match="not UTF-8"):
        read_prompts(tmp_path / "p.txt")
    deep = '{"caption": ' + "[" * 100_000
    (tmp_path / "p.jsonl").write_text(deep + "\n")
    assert read_prompts(tmp_path / "p.jsonl") == [deep]  # not JSON (too deep to parse): the line is the prompt
    with pytest.raises(SourceError, match="is not a regular file. Check the --prompts path"):
        read_prompts(tmp_path)  # a folder given as a prompts file


# ----------------------------------------------------------------------------------------------- files and locks
def test_locks_refuse_a_second_writer_and_symlinks(data, tmp_path):
    from diffrep.errors import OutputError
    from diffrep.fsutil import DirLock

    out = tmp_path / "aud"
    out.mkdir()
    with DirLock(out):
        one_line_error(cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(out), ok=False),
                       7, "another diffrep process")
    target = tmp_path / "target.txt"
    (tmp_path / "aud2").mkdir()
    os.symlink(target, tmp_path / "aud2" / ".lock")
    one_line_error(cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(tmp_path / "aud2"),
                       ok=False), 7, "symbolic link")
    assert not target.exists()
    pytest.importorskip("diffusers")
    from diffrep.models.train import train

    run = tmp_path / "run"
    run.mkdir()
    with DirLock(run), pytest.raises(OutputError, match="another diffrep process"):
        train(data / "train", run, steps=1, size=16)


def test_outputs_follow_the_umask(data, tmp_path):
    r = cli("audit", str(data / "gen"), "--index", str(data / "idx"), "--out", str(tmp_path / "a"), "--report",
            preexec=lambda: os.umask(0o022))
    assert r.returncode == 0
    for name in ("summary.json", "matches.csv", "report.html", "scores.npz"):
        assert stat.S_IMODE((tmp_path / "a" / name).stat().st_mode) == 0o644, name


def test_bench_make_keeps_ids_that_flatten_to_one_name_apart(tmp_path, emoji_files):
    from diffrep.eval.bench.make import _copy_decodable
    from diffrep.sources import open_source

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    shutil.copyfile(emoji_files[0], src / "a" / "b.png")
    shutil.copyfile(emoji_files[1], src / "a\\b.png")
    shutil.copyfile(emoji_files[2], src / "a" / "b~2.png")
    records, _ = open_source(src).scan()
    copied = _copy_decodable(records, tmp_path / "refs", [])
    names = [n for _, n in copied]
    assert len(set(names)) == 3
    for rec, name in copied:
        assert (tmp_path / "refs" / name).read_bytes() == rec.read()


FULL_DISK = r'''
set -e
mount -t tmpfs -o size=4m tmpfs "$1"
head -c 4040000 /dev/zero > "$1/fill"
"$2" -m diffrep index "$3" --out "$1/idx" -q || echo "exit $?"
'''


def test_a_full_disk_gives_one_line_errors(data, tmp_path, emoji_files):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no private mount namespace here (unshare -rm) for a small tmpfs")
    many = copy_images(emoji_files[3000:3080], tmp_path / "many")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # the index's files need more than the ~150 KB left: the run fails while writing, on one line
    r = subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK, "sh", str(mnt), sys.executable, str(many)],
                       capture_output=True, text=True, timeout=600, errors="replace",
                       env={**os.environ, "DIFFREP_MIN_FREE_BYTES": "0"})
    assert "Traceback" not in r.stderr, r.stderr
    assert "exit 7" in r.stdout, (r.stdout, r.stderr)
    assert r.stderr.strip().startswith("diffrep: error: cannot write") and "free some space" in r.stderr, r.stderr
    # with the default free-space check the audit stops before any work
    r = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=4m tmpfs "$1" && '
                        'head -c 3900000 /dev/zero > "$1/fill"; "$2" -m diffrep audit "$3" --index "$4" --out "$1/a"',
                        "sh", str(mnt), sys.executable, str(data / "gen"), str(data / "idx")],
                       capture_output=True, text=True, timeout=600, errors="replace")
    one_line_error(r, 7, "KiB free")


DECODE_PEAK = r'''
import io, sys
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from diffrep.decode import bound_heap, decode_image
bound_heap()  # as the CLI does
buf = io.BytesIO()
Image.new("RGBA", (5000, 5000), (10, 200, 30, 255)).save(buf, format="PNG")
data = buf.getvalue()
def peak_kb():  # this process's own high-water mark (ru_maxrss would carry the parent's across exec)
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
base = peak_kb()
with ThreadPoolExecutor(6) as pool:
    shapes = list(pool.map(lambda _: decode_image(data).shape, range(6)))
assert all(s == (5000, 5000, 3) for s in shapes)
print((peak_kb() - base) // 1024)
'''


def test_huge_decodes_share_a_memory_budget(tmp_path):
    script = tmp_path / "peak.py"
    script.write_text(DECODE_PEAK)

    def peak_mb(budget: int) -> int:
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "DIFFREP_DECODE_BUDGET_PIXELS": str(budget)})
        assert r.returncode == 0, r.stderr
        return int(r.stdout.strip())

    unbounded, budgeted = peak_mb(10**12), peak_mb(32_000_000)
    # 25M-pixel images: RGBA 100 MB + RGB 75 MB + the array 75 MB each; six at once against one at a time
    assert budgeted < 0.6 * unbounded and budgeted < 700, (budgeted, unbounded)


def test_json_outputs_hold_no_nan_or_infinity(tmp_path):
    import numpy as np

    from diffrep.fsutil import write_json

    write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.0, np.float32("inf"), np.array([np.nan, 2.0])],
                                     "z": (np.float64(-np.inf), "s"), "ok": 0.5})
    text = (tmp_path / "a.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": None, "y": [1.0, None, [None, 2.0]], "z": [None, "s"], "ok": 0.5}


def test_a_finished_marker_is_recognized_by_its_settings_only(tmp_path):
    from diffrep.fsutil import finished, write_json

    marker = tmp_path / "done.json"
    assert finished(marker, {"steps": 10}) is None  # not written yet
    write_json(marker, {"settings": {"steps": 10, "channels": (8, 16)}, "result": 1})
    assert finished(marker, {"steps": 10, "channels": (8, 16)})["result"] == 1  # the tuple was written as a list
    assert finished(marker, {"steps": 10, "channels": [8, 16]})["result"] == 1
    assert finished(marker, {"steps": 11, "channels": (8, 16)}) is None
    marker.write_text('{"settings": {"steps": 10')  # cut short: done again, not an error
    assert finished(marker, {"steps": 10}) is None
