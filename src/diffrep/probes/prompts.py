"""Prompt lists for probes: a text file, a jsonl/csv table, or a ``diffrep train`` run folder's captions."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import DiffrepError, SourceError

COLUMNS = ("prompt", "caption", "text")


def load_prompts(source: str | os.PathLike[str], what: str = "--prompts") -> list[str]:
    """Prompts in order, blanks skipped: one per line (.txt), a ``prompt``/``caption``/``text`` column
    (.csv), a string or object per line (.jsonl, as ``diffrep sample`` reads), or the distinct training
    captions of a run folder (its ``training_set.jsonl``). An empty list is refused."""
    p = Path(source).expanduser()
    if p.is_dir():
        ts = p / "training_set.jsonl"
        if not ts.is_file():
            raise SourceError(f"{what} {source}: a folder must be a `diffrep train` run (training_set.jsonl); "
                              "give a text, jsonl or csv file of prompts instead")
        from ..models.cond import distinct

        prompts = distinct([json.loads(line).get("caption") for line in ts.read_text(encoding="utf-8").splitlines()
                            if line.strip()])
    elif p.suffix.lower() == ".csv":
        prompts = _csv(p, what)
    else:
        from ..models.sample import read_prompts

        prompts = read_prompts(p, what)
    if not prompts:
        raise SourceError(f"{what} {source} holds no prompts")
    return prompts


def _csv(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{what} {path}: cannot read it as UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
    col = next((fields[c] for c in COLUMNS if c in fields), None)
    if col is None:
        raise SourceError(f"{what} {path}: a csv needs a column named {', '.join(COLUMNS)}; it has "
                          f"{', '.join(reader.fieldnames or []) or 'none'}")
    return [row[col].strip() for row in reader if (row.get(col) or "").strip()]


def _key(prompt: str) -> str:
    return " ".join(prompt.split()).casefold()


def reference_without_tested(tested: list[str], reference: list[str]) -> tuple[list[str], list[str]]:
    """``reference`` without the prompts that are also tested (the same words, ignoring case and spacing),
    and a warning for each kind of change (none when nothing was left out). Reference prompts are the
    non-memorized null; a tested prompt among them would calibrate the threshold on itself. DiffrepError when
    every reference prompt is also tested."""
    seen = {_key(p) for p in tested}
    kept = [p for p in reference if _key(p) not in seen]
    dropped = len(reference) - len(kept)
    if reference and not kept:
        raise DiffrepError(f"--reference-prompts: all {len(reference)} are also tested prompts; the reference must "
                           "hold prompts known not to be memorized (e.g. held-out captions), apart from those tested")
    if not dropped:
        return kept, []
    return kept, [f"{dropped} reference prompts are also tested prompts and were left out of the reference (it "
                  "must hold prompts known not to be memorized, apart from those tested)"]
