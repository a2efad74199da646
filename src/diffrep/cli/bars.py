"""Progress bars: one rich bar per stage on stderr; plain lines when stderr is not a terminal.

Without a terminal (a batch job, `nohup`, a CI log) each stage prints a line every ``PLAIN_INTERVAL_S`` seconds
while it runs (done/total, share, elapsed, estimated time left) and one line when it finishes.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ..fsutil import printable
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
    "reference": "Scoring reference", "probe": "Scoring prompts", "prefilter": "Prefilter",
    "prefilter-reference": "Prefilter: reference",
    "generate": "Generating", "shift control": "Shift control", "train": "Training", "sample": "Sampling",
    "experiment": "Experiment runs",
}
PLAIN_INTERVAL_S = 60.0  # seconds between plain progress lines of a running stage when stderr is not a terminal


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ProgressBars:
    """A progress callback drawing one rich bar per stage on stderr (plain lines when not a terminal)."""

    def __init__(self, quiet: bool = False, interval: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self._bar = RichProgress(
            TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, disable=not self.live, get_time=clock)
        self._tasks: dict[str, Any] = {}
        self._done_printed: set[str] = set()
        self.interval, self._clock = interval, clock
        self._last_line: dict[str, float] = {}  # stage -> clock at its last plain line

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
        if ev.done < task.completed:  # the stage runs again (the next run of an experiment): count afresh
            self._bar.reset(tid, total=ev.total)
            self._done_printed.discard(ev.stage)
            self._last_line.pop(ev.stage, None)
        rate = f"{task.speed:6.1f} {ev.unit}/s" if task.speed else ""
        self._bar.update(tid, completed=ev.done, total=ev.total, rate=rate)
        if not self.live and not self.quiet:
            self._plain(ev, label, task.elapsed or 0.0)

    def _plain(self, ev: Progress, label: str, el: float) -> None:
        """Plain lines: one every ``interval`` seconds while a stage runs (``el``: seconds since its first event),
        one when it finishes."""
        now = self._clock()
        if ev.total is not None and ev.done >= ev.total:
            if ev.stage not in self._done_printed and ev.total > 0:
                self._done_printed.add(ev.stage)
                speed = f" ({ev.done / el:.1f} {ev.unit}/s)" if el > 0 else ""
                self.console.print(f"{label}: {ev.done}/{ev.total} done in {el:.1f}s{speed}", markup=False,
                                   soft_wrap=True)
            return
        if now - self._last_line.get(ev.stage, now - el) < self.interval or ev.done <= 0:
            return
        self._last_line[ev.stage] = now
        share = f" ({100 * ev.done / ev.total:.0f}%)" if ev.total else ""
        left = f", about {_clock_text(el * (ev.total - ev.done) / ev.done)} left" if ev.total else ""
        note = f" ({printable(ev.message)})" if ev.message else ""
        self.console.print(f"{label}: {ev.done}/{ev.total if ev.total is not None else '?'}{share}, "
                           f"{_clock_text(el)} elapsed{left}{note}", markup=False, highlight=False,
                           soft_wrap=True)


def _out(msg: str = "") -> None:
    """One line of command output, with characters a terminal could act on made printable."""
    print(printable(msg), flush=True)
