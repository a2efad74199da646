"""Progress bars: one rich bar per stage on stderr, plain "done" lines when stderr is not a terminal."""
from __future__ import annotations

from typing import Any

from ..progress import Progress

STAGE_LABELS = {
    "scan": "Scanning", "check chunks": "Checking chunks", "embed": "Embedding", "embed-queries": "Embedding generations",
    "embed-reference": "Embedding reference", "search": "Searching", "background": "Background",
    "build-index": "Building FAISS index", "verify-queries": "Verifying generations",
    "verify-reference": "Verifying reference", "verify-background": "Verifying background",
    "regions-queries": "Regions: generations", "regions-reference": "Regions: reference",
    "regions-background": "Regions: background", "objects-queries": "Objects: generations",
    "objects-reference": "Objects: reference", "objects-background": "Objects: background",
    "report": "Rendering report", "exact": "Exact duplicates", "neighbours": "Nearest neighbours",
    "verify-pairs": "Verifying pairs", "semdedup": "SemDeDup clusters", "fetch": "Fetching", "scenario": "Building scenario",
    "load": "Loading images", "load images": "Loading images",
    "load reference": "Loading reference", "load set": "Loading set", "images": "Scoring images",
    "reference": "Scoring reference", "probe": "Scoring prompts", "prefilter": "One-step prefilter",
    "generate": "Generating", "shift control": "Shift control", "train": "Training", "sample": "Sampling",
    "experiment": "Experiment runs",
}


class ProgressBars:
    """A progress callback drawing one rich bar per stage on stderr (plain lines when not a terminal)."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self._bar = RichProgress(
            TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, disable=not self.live)
        self._tasks: dict[str, Any] = {}
        self._done_printed: set[str] = set()

    def __enter__(self) -> "ProgressBars":
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.stop()

    def __call__(self, ev: Progress) -> None:
        label = STAGE_LABELS.get(ev.stage, ev.stage)
        if ev.stage not in self._tasks:
            self._tasks[ev.stage] = self._bar.add_task(label, total=ev.total, rate="")
        tid = self._tasks[ev.stage]
        task = self._bar.tasks[[t.id for t in self._bar.tasks].index(tid)]
        rate = f"{task.speed:6.1f} {ev.unit}/s" if task.speed else ""
        self._bar.update(tid, completed=ev.done, total=ev.total, rate=rate)
        if not self.live and not self.quiet and ev.total is not None and ev.done >= ev.total \
                and ev.stage not in self._done_printed and ev.total > 0:
            self._done_printed.add(ev.stage)
            el = task.elapsed or 0.0
            speed = f" ({ev.done / el:.1f} {ev.unit}/s)" if el > 0 else ""
            self.console.print(f"{label}: {ev.done}/{ev.total} done in {el:.1f}s{speed}")


def _out(msg: str = "") -> None:
    """One line of command output, with characters a terminal could act on made printable."""
    from ..fsutil import printable

    print(printable(msg), flush=True)
