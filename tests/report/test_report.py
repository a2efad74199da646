"""report.html: self-contained, renders in headless Chromium without console errors, expected gallery."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import copy_images

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory, emoji_files):
    root = tmp_path_factory.mktemp("report")
    files = emoji_files[3000:3060]
    train = copy_images(files, root / "train")
    (train / "captions.jsonl").write_text("".join(json.dumps({"file": f.name, "caption": f"canvas print {f.stem}"})
                                                  + "\n" for f in files))
    gen = root / "gen"
    gen.mkdir()
    caps = []
    for i, f in enumerate(files[:10]):
        im = Image.open(f).convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im).convert("RGB").resize((200, 200))
        (ImageOps.mirror(im) if i % 2 else im).save(gen / f"copy_{i}.png")
        caps.append({"file": f"copy_{i}.png", "caption": f"a canvas print of <{f.stem}>"})
    for f in emoji_files[100:110]:
        shutil.copyfile(f, gen / f.name)
        caps.append({"file": f.name, "caption": "a photo & a dog"})
    (gen / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    copy_images(emoji_files[1200:1300], root / "ref")
    for cmd in (["index", str(train), "--out", str(root / "idx")],
                ["audit", str(gen), "--index", str(root / "idx"), "--out", str(root / "aud"), "--reference",
                 str(root / "ref"), "--fpr", "0.05", "--report"]):
        r = subprocess.run([sys.executable, "-m", "diffrep", *cmd], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    assert "Report:" in r.stdout
    return root / "aud"


def test_report_is_self_contained(audit_dir):
    page = (audit_dir / "report.html").read_text()
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I), "external URL in report"
    assert "Content-Security-Policy" in page
    assert (audit_dir / "similarity_hist.png").stat().st_size > 1000
    assert (audit_dir / "verdict_hist.png").stat().st_size > 1000
    s = json.loads((audit_dir / "summary.json").read_text())
    # captions are HTML-escaped and shared words highlighted
    assert "&lt;" in page and "<mark>canvas</mark>" in page
    cap = s["captions"]
    assert cap["jaccard_replicas"] > cap["jaccard_non_replicas"]
    assert {"canvas", "print"} <= {w["word"] for w in cap["over_represented_words"]}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_report_renders_in_chromium(audit_dir):
    s = json.loads((audit_dir / "summary.json").read_text())
    n_rep = s["replicas"]
    n_items_expected = n_rep + min(48, s["queries"] - n_rep)
    url = (audit_dir / "report.html").as_uri()
    prof = audit_dir / "chrome-profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}", "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=3000", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console
    html_after_js = dom.stdout
    assert len(re.findall(r'<div class="item (?:replica|borderline)"', html_after_js)) == n_items_expected
    assert f"{n_items_expected} shown" in html_after_js  # the script ran and counted the cards
    assert n_rep >= 8  # the ten copies (mirrored or not) are found
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}", "--window-size=1280,2000",
                        f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.stat().st_size > 50_000


def test_report_command_rerenders_and_rejects_non_audit(audit_dir, tmp_path):
    (audit_dir / "report.html").unlink()
    r = subprocess.run([sys.executable, "-m", "diffrep", "report", str(audit_dir), "--page-limit", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (audit_dir / "report.html").is_file(), r.stderr
    assert "Showing the 3 strongest" in (audit_dir / "report.html").read_text()
    r = subprocess.run([sys.executable, "-m", "diffrep", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and "is not a folder that `diffrep audit`, `probe` or `membership` wrote" in r.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_an_injected_script_does_not_run(audit_dir, tmp_path):
    """Defence in depth: were a value ever inserted unescaped, the page's policy runs only its own script."""
    page = (audit_dir / "report.html").read_text()
    evil = page.replace("<body>", '<body><script>document.title="pwned"</script>'
                                  '<img src="data:," onerror="document.title=\'pwned\'">', 1)
    (tmp_path / "evil.html").write_text(evil)
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'prof'}", "--virtual-time-budget=3000",
                          "--dump-dom", (tmp_path / "evil.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>pwned</title>" not in dom.stdout and "<title>diffrep audit" in dom.stdout
    assert re.search(r"\d+ shown", dom.stdout)  # the report's own script still ran
