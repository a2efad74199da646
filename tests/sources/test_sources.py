"""Tests for diffrep.sources on real folders and webdataset tar shards built in tmp_path."""
from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from diffrep.decode import decode_image
from diffrep.errors import SourceError
from diffrep.progress import Progress
from diffrep.sources import IMAGE_EXTENSIONS, Record, Skip, open_source


def _img_bytes(color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _put(root / "b.png", _img_bytes((255, 0, 0)))
    _put(root / "a.jpg", _img_bytes((0, 255, 0), "JPEG"))
    _put(root / "sub" / "deep" / "c.webp", _img_bytes((0, 0, 255), "WEBP"))
    _put(root / "sub" / "D.JPEG", _img_bytes((9, 9, 9), "JPEG"))
    _put(root / "sub" / "notes.txt", b"sidecar, ignored")
    _put(root / "sub" / "meta.json", b"{}")
    _put(root / "readme.md", b"# hello")
    _put(root / "model.ckpt", b"\0" * 10)
    _put(root / "empty.png", b"")
    _put(root / ".hidden.png", _img_bytes((1, 1, 1)))
    _put(root / ".cache" / "x.png", _img_bytes((1, 1, 1)))
    return root


def _ids(records: list[Record]) -> list[str]:
    return [r.id for r in records]


def test_folder_recursive_scan(folder: Path) -> None:
    events: list[Progress] = []
    src = open_source(folder)
    records, skips = src.scan(progress=events.append)
    assert _ids(records) == ["a.jpg", "b.png", "empty.png", "sub/D.JPEG", "sub/deep/c.webp"]
    by_id = {r.id: r for r in records}
    rec = by_id["sub/deep/c.webp"]
    assert rec.path == str(folder / "sub" / "deep" / "c.webp")
    assert rec.size == (folder / "sub" / "deep" / "c.webp").stat().st_size
    assert rec.mtime == pytest.approx((folder / "sub" / "deep" / "c.webp").stat().st_mtime)
    assert rec.caption is None
    assert tuple(decode_image(rec.read())[0, 0]) == (0, 0, 255)
    assert by_id["empty.png"].size == 0 and by_id["empty.png"].read() == b""
    assert sorted((Path(s.path).name, s.reason) for s in skips) == [
        ("model.ckpt", "unsupported file type '.ckpt'"),
        ("readme.md", "unsupported file type '.md'"),
    ]
    assert all(isinstance(s, Skip) for s in skips)
    assert events and events[-1].stage == "scan" and events[-1].done == 5
    assert src.root == str(folder)


def test_scan_is_deterministic_and_records_pickle(folder: Path) -> None:
    first, _ = open_source(folder).scan()
    (folder / "zz.png").write_bytes(_img_bytes((5, 5, 5)))
    (folder / "zz.png").unlink()
    second, _ = open_source(str(folder)).scan()
    assert first == second
    clone = pickle.loads(pickle.dumps(first[1]))
    assert clone == first[1] and clone.read() == first[1].read()


def test_captions_jsonl(folder: Path) -> None:
    lines = [
        {"file": "b.png", "caption": "a red square"},
        {"file_name": "sub/deep/c.webp", "text": "blue"},
        {"image": "D.JPEG", "caption": "by bare name"},
        {"path": "gone.png", "caption": "no such file"},
    ]
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    src = open_source(folder)
    records, skips = src.scan()
    caps = {r.id: r.caption for r in records}
    assert caps == {"a.jpg": None, "b.png": "a red square", "empty.png": None,
                    "sub/D.JPEG": "by bare name", "sub/deep/c.webp": "blue"}
    assert not any(Path(s.path).name.startswith("captions") for s in skips)  # the caption file is not a skip
    assert src.caption_stats["matched"] == 3 and src.caption_stats["unmatched"] == 1


def test_captions_csv(folder: Path) -> None:
    (folder / "captions.csv").write_text(
        'filename,caption\nb.png,"red, with a comma"\n./a.jpg,green\n', encoding="utf-8")
    records, _ = open_source(folder).scan()
    caps = {r.id: r.caption for r in records}
    assert caps["b.png"] == "red, with a comma" and caps["a.jpg"] == "green"


def test_captions_override(folder: Path, tmp_path: Path) -> None:
    (folder / "captions.jsonl").write_text(json.dumps({"file": "b.png", "caption": "inside"}) + "\n")
    override = tmp_path / "mine.csv"
    override.write_text("file,text\nb.png,from override\n")
    records, _ = open_source(folder, captions=override).scan()
    assert {r.id: r.caption for r in records}["b.png"] == "from override"
    with pytest.raises(SourceError, match="does not exist"):
        open_source(folder, captions=tmp_path / "missing.jsonl")


def test_training_data_names_a_caption_file_that_is_not_a_file(tmp_path: Path) -> None:
    from diffrep.models.data import load_training_set

    folder = tmp_path / "train"
    _put(folder / "b.png", _img_bytes((255, 0, 0)))
    _put(folder / "a.png", _img_bytes((0, 255, 0)))
    for bad in (tmp_path / "missing.jsonl", folder):
        with pytest.raises(SourceError, match=f"caption file {bad} does not exist or is not a file"):
            load_training_set(folder, size=32, captions=bad)
    override = tmp_path / "mine.csv"
    override.write_text("file,text\nb.png,from override\n")
    assert "from override" in load_training_set(folder, size=32, captions=override).captions


def test_bad_caption_files_name_the_line(folder: Path) -> None:
    (folder / "captions.jsonl").write_text('{"file": "b.png", "caption": "ok"}\n{not json\n')
    with pytest.raises(SourceError, match=r"captions.jsonl line 2: not valid JSON"):
        open_source(folder).scan()
    (folder / "captions.jsonl").write_text('{"caption": "no file key"}\n')
    with pytest.raises(SourceError, match=r"line 1: no file name"):
        open_source(folder).scan()
    (folder / "captions.jsonl").unlink()
    (folder / "captions.csv").write_text("name,words\nb.png,x\n")
    with pytest.raises(SourceError, match=r"line 1: the header must name"):
        open_source(folder).scan()
    (folder / "captions.csv").write_text("file,caption\nb.png,ok\na.jpg\n")
    with pytest.raises(SourceError, match=r"line 3: wrong number of columns"):
        open_source(folder).scan()


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "nope")
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("sidecars do not count")
    src = open_source(tmp_path / "empty")
    with pytest.raises(SourceError, match=r"no images found in .*looked for .*\.png.*\.jpg"):
        src.scan()


def test_folder_with_only_skips_returns_them(tmp_path: Path) -> None:
    _put(tmp_path / "d" / "x.psd", b"8BPS")
    records, skips = open_source(tmp_path / "d").scan()
    assert records == [] and [s.reason for s in skips] == ["unsupported file type '.psd'"]


def test_symlink_loop_and_broken_link(folder: Path) -> None:
    os.symlink(folder, folder / "sub" / "loop")
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    records, skips = open_source(folder).scan()
    assert len(records) == 5
    assert ("dangling.png", "broken symbolic link") in [(Path(s.path).name, s.reason) for s in skips]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_is_skipped(folder: Path) -> None:
    locked = folder / "b.png"
    locked.chmod(0)
    try:
        records, skips = open_source(folder).scan()
    finally:
        locked.chmod(0o644)
    assert "b.png" not in _ids(records)
    assert any(s.path.endswith("b.png") and "permission" in s.reason for s in skips)


def test_unreadable_file_reason_when_root(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import diffrep.sources as sources

    real_access = os.access
    monkeypatch.setattr(sources.os, "access",
                        lambda p, mode: not str(p).endswith("b.png") and real_access(p, mode))
    records, skips = open_source(folder).scan()
    assert "b.png" not in _ids(records)
    assert [s.reason for s in skips if s.path.endswith("b.png")] == ["cannot read file: permission denied"]


def test_single_file_and_mixed_list_rejected(folder: Path) -> None:
    with pytest.raises(SourceError, match="not a folder, a .tar shard or a .parquet table"):
        open_source(folder / "b.png")
    with pytest.raises(SourceError, match="is a folder"):
        open_source([folder, folder / "sub"])
    with pytest.raises(SourceError, match="no files match"):
        open_source(str(folder / "*.tar"))


# --- webdataset shards ---------------------------------------------------------------------------

def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _make_shard(path: Path, samples: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in samples:
            _add(tf, name, data)
    return path


@pytest.fixture()
def shards(tmp_path: Path) -> Path:
    d = tmp_path / "shards"
    d.mkdir()
    _make_shard(d / "s-000001.tar", [
        ("000010.jpg", _img_bytes((0, 255, 0), "JPEG")),
        ("000010.txt", "  a green jpeg \n".encode()),
        ("000011.png", _img_bytes((255, 0, 0))),
        ("000011.json", json.dumps({"caption": "a red png", "width": 8}).encode()),
        ("000012.txt", b"caption without an image"),
        ("000012.cls", b"3"),
    ])
    _make_shard(d / "s-000000.tar", [
        ("dir/sample.a.png", _img_bytes((0, 0, 255))),
        ("dir/sample.a.json", b'{"text": "nested"}'),
    ])
    return d


def test_webdataset_shards_glob(shards: Path) -> None:
    src = open_source(str(shards / "*.tar"))
    records, skips = src.scan()
    assert _ids(records) == ["s-000000.tar/dir/sample.a.png", "s-000001.tar/000010.jpg",
                             "s-000001.tar/000011.png"]
    caps = [r.caption for r in records]
    assert caps == ["nested", "a green jpeg", "a red png"]
    shard1 = shards / "s-000001.tar"
    assert records[1].path == f"{shard1}::000010.jpg"
    assert records[1].mtime == pytest.approx(shard1.stat().st_mtime)
    assert tuple(decode_image(records[2].read())[0, 0]) == (255, 0, 0)
    assert decode_image(records[1].read())[0, 0, 1] > 240
    assert records[2].read() == _img_bytes((255, 0, 0)) and records[2].size == len(records[2].read())
    assert [(s.path, s.reason) for s in skips] == [
        (f"{shard1}::000012", "no image member in sample '000012' (found .cls, .txt)")]


def test_single_shard_list_and_pathlike(shards: Path) -> None:
    one, _ = open_source(shards / "s-000000.tar").scan()
    both, _ = open_source([shards / "s-000001.tar", str(shards / "s-000000.tar")]).scan()
    assert _ids(one) == ["s-000000.tar/dir/sample.a.png"]
    assert len(both) == 3 and _ids(both) == sorted(_ids(both))


def test_captions_override_applies_to_shards(shards: Path, tmp_path: Path) -> None:
    cap = tmp_path / "c.jsonl"
    cap.write_text(json.dumps({"file": "000011.png", "caption": "override"}) + "\n")
    records, _ = open_source(shards / "s-000001.tar", captions=cap).scan()
    assert [r.caption for r in records] == ["a green jpeg", "override"]


def test_corrupt_tar_is_one_skip(shards: Path) -> None:
    bad = shards / "s-000002.tar"
    bad.write_bytes(b"this is not a tar archive at all" * 40)
    records, skips = open_source(str(shards / "*.tar")).scan()
    assert len(records) == 3
    assert [Path(s.path).name for s in skips if s.path == str(bad)] == ["s-000002.tar"]
    assert "corrupt or unreadable tar" in next(s.reason for s in skips if s.path == str(bad))


def test_truncated_tar_keeps_complete_members(tmp_path: Path) -> None:
    big = _img_bytes((7, 7, 7), "PNG", size=(300, 300)) + b"\0" * 20000
    shard = _make_shard(tmp_path / "t.tar", [("a.png", _img_bytes((1, 2, 3))), ("b.png", big)])
    data = shard.read_bytes()
    shard.write_bytes(data[: 512 * 6])  # header of b.png present, its data cut
    records, skips = open_source(shard).scan()
    assert _ids(records) == ["t.tar/a.png"]
    assert tuple(decode_image(records[0].read())[0, 0]) == (1, 2, 3)
    assert skips and all(s.path.startswith(str(shard)) for s in skips)


def test_compressed_tar_is_explained(tmp_path: Path) -> None:
    import gzip

    plain = _make_shard(tmp_path / "p.tar", [("a.png", _img_bytes((1, 2, 3)))]).read_bytes()
    (tmp_path / "z.tar").write_bytes(gzip.compress(plain))
    records, skips = open_source(tmp_path / "z.tar").scan()
    assert records == [] and "gzip-compressed tar is not supported" in skips[0].reason


def test_only_corrupt_tar_gives_skips_not_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.tar"
    bad.write_bytes(b"garbage" * 200)
    records, skips = open_source(bad).scan()
    assert records == [] and len(skips) == 1


def test_image_extensions_constant() -> None:
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)


def test_prompts_jsonl_of_diffrep_sample_is_read_as_captions(tmp_path, emoji_files):
    """`diffrep sample` writes prompts.jsonl beside its PNGs: a source reads it as captions, not as a skip."""
    import json
    import shutil

    from diffrep.sources import open_source

    for f in emoji_files[:2]:
        shutil.copyfile(f, tmp_path / f.name)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"file": f.name, "caption": f"a {i}"}) + "\n"
                                                    for i, f in enumerate(emoji_files[:2])))
    records, skips = open_source(tmp_path).scan()
    assert not skips and [r.caption for r in records] == ["a 0", "a 1"]
