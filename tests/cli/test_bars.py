"""Plain progress lines when stderr is not a terminal (batch jobs, `nohup`, CI logs)."""
from __future__ import annotations

from diffrep.cli.bars import ProgressBars
from diffrep.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed(bars: ProgressBars, clock: Clock, events: list[tuple[float, Progress]]) -> None:
    for t, ev in events:
        clock.now = t
        bars(ev)


def test_a_running_stage_prints_a_line_each_interval_and_once_when_done(capsys):
    clock = Clock()
    with ProgressBars(interval=60, clock=clock) as bars:
        _feed(bars, clock, [(0, Progress("train", 0, 100, "step")), (30, Progress("train", 10, 100, "step")),
                            (61, Progress("train", 20, 100, "step", "seed 17 [bold]run")),
                            (90, Progress("train", 30, 100, "step")), (200, Progress("train", 100, 100, "step")),
                            (201, Progress("train", 100, 100, "step"))])
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["Training: 20/100 (20%), 1:01 elapsed, about 4:04 left (seed 17 [bold]run)",
                     "Training: 100/100 done in 200.0s (0.5 step/s)"]


def test_a_stage_run_again_counts_afresh_and_unknown_totals_print(capsys):
    clock = Clock()
    with ProgressBars(interval=60, clock=clock) as bars:
        _feed(bars, clock, [(0, Progress("train", 0, 10, "step")), (40, Progress("train", 10, 10, "step")),
                            (50, Progress("train", 0, 20, "step")), (130, Progress("train", 5, 20, "step")),
                            (150, Progress("train", 20, 20, "step")),
                            (0, Progress("scan", 0, None)), (3700, Progress("scan", 7, None))])
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["Training: 10/10 done in 40.0s (0.2 step/s)",
                     "Training: 5/20 (25%), 1:20 elapsed, about 4:00 left",
                     "Training: 20/20 done in 100.0s (0.2 step/s)",
                     "Scanning: 7/?, 1:01:40 elapsed"]


def test_quiet_prints_nothing(capsys):
    clock = Clock()
    with ProgressBars(quiet=True, interval=0, clock=clock) as bars:
        _feed(bars, clock, [(0, Progress("train", 0, 10)), (5, Progress("train", 5, 10)),
                            (9, Progress("train", 10, 10))])
    assert capsys.readouterr().err == ""
