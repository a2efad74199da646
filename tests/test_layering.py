"""The package's layering (docs/architecture.md): a module imports only from its own layer or the ones below,
and nothing that detects replication reads a dataset, an evaluation or benchmark truth."""
from __future__ import annotations

import ast
from pathlib import Path

import diffrep

ROOT = Path(diffrep.__file__).resolve().parent
# the layers of DESIGN.md's table, lowest first; a module may import its own layer and any lower one
LAYERS = [("errors", "progress", "fsutil", "defaults"), ("sources", "decode"), ("descriptors", "embedding"),
          ("indexing",), ("matching",), ("auditing",), ("dedup",), ("models",), ("probes",), ("mitigation",),
          ("distributed",), ("report",), ("datasets",), ("eval",), ("cli", "__init__", "__main__")]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
DETECTORS = ("decode", "descriptors", "indexing", "matching", "auditing", "dedup", "probes")
TRUTH = ("datasets", "eval", "benchmarks", "shared_drawings", "emoji_relations")


def _unit(rel: Path) -> str:
    """The layer unit of a module path relative to the package: its top folder or module name."""
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top unit inside diffrep or a foreign top-level name) of every import in ``path``."""
    rel = path.relative_to(ROOT)
    pkg = list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # from . import x (at the package root): each name is a unit
                    out += [(node.lineno, a.name) for a in node.names]
                else:
                    out.append((node.lineno, parts[0]))
            elif node.module:
                top = node.module.split(".")
                out.append((node.lineno, top[1] if top[0] == "diffrep" and len(top) > 1 else top[0]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")
                out.append((node.lineno, top[1] if top[0] == "diffrep" and len(top) > 1 else top[0]))
    return out


def test_every_module_has_a_layer():
    units = {_unit(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")}
    assert units <= set(RANK), sorted(units - set(RANK))


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        me = _unit(path.relative_to(ROOT))
        for line, unit in _imports(path):
            if unit in RANK and RANK[unit] > RANK[me]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({me}) imports {unit}")
    assert not bad, "\n".join(bad)


def test_detection_never_reads_datasets_evaluations_or_benchmark_truth():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if _unit(path.relative_to(ROOT)) not in DETECTORS:
            continue
        bad += [f"{path.relative_to(ROOT)}:{line} imports {unit}" for line, unit in _imports(path) if unit in TRUTH]
    assert not bad, "\n".join(bad)


def test_benchmark_truth_is_not_in_the_package():
    names = {p.stem for p in ROOT.rglob("*.py")}
    assert not names & {"shared_drawings", "emoji_relations"}
    assert not any(unit in ("benchmarks", "shared_drawings", "emoji_relations")
                   for p in ROOT.rglob("*.py") for _, unit in _imports(p))
