"""The pages' two charts, as geometry for server-drawn SVG: the last 24 hours across all jobs (a row
a job, a bar a run) and one job's durations over its last runs.

SVG attributes, not styles: the pages' Content-Security-Policy allows no inline style or script,
and a chart drawn on the server needs neither. Colour comes from the outcome's tone (a CSS
class); the hover text is each bar's <title>.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jobhost.store import RunRecord
from jobhost.web.pages import stamp, tone, took

WIDTH = 1000  # the drawing's own units; it scales to the page's width
ROW = 18  # height of one job's row in the timeline
LABEL = 180  # room for the job names on the left
SPAN = dt.timedelta(hours=24)
MIN_BAR = 2.0  # a run too short to see, or a slot that did not run, is still a mark
TIMELINE_RUNS = 5000  # runs read for the timeline at most; older ones of a busy day are left out
DURATION_RUNS = 100  # runs in a job's durations chart
CHART_HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    """One run in a chart: where, how big, its tone, what hovering says, and its page."""

    x: float
    y: float
    width: float
    height: float
    tone: str
    title: str
    run_id: str


@dataclass(frozen=True)
class Timeline:
    """The last 24 hours: a row a job, hour marks, and whether older runs of the day were left out."""

    jobs: list[str]
    bars: list[Bar]
    hours: list[tuple[float, str]]  # (x, label) every 3 hours
    height: float
    left_out: bool
    width: float = WIDTH
    label: float = LABEL

    @property
    def now_x(self) -> float:
        return self.width


def _title(run: RunRecord) -> str:
    reason = f": {run.reason}" if run.reason else ""
    by = f" (by hand, {run.requested_by})" if run.requested_by else ""
    return f"{run.job} {stamp(run.slot)} {run.status} {took(run.duration_ms)}{by}{reason}"


def timeline(jobs: Iterable[str], runs: Sequence[RunRecord], now: dt.datetime, left_out: bool) -> Timeline:
    """Each run that started or was due within 24 hours of `now`, on its job's row, from its start
    (its slot, for one that did not run) to its end (now, while it runs)."""
    names = sorted(jobs)
    row = {name: index for index, name in enumerate(names)}
    start = now - SPAN
    scale = (WIDTH - LABEL) / SPAN.total_seconds()
    bars = []
    for run in runs:
        if run.job not in row:
            names.append(run.job)  # a job since removed, whose runs happened
            row[run.job] = len(names) - 1
        began = run.started or run.slot
        ended = run.ended or (now if run.started is not None else began)
        if ended < start or began > now:
            continue
        x0 = LABEL + max(0.0, (began - start).total_seconds()) * scale
        x1 = LABEL + min(SPAN.total_seconds(), (ended - start).total_seconds()) * scale
        width = max(MIN_BAR, x1 - x0)
        bars.append(
            Bar(
                min(x0, WIDTH - width),
                row[run.job] * ROW + 3,
                width,
                ROW - 6,
                tone(run.status),
                _title(run),
                run.run_id,
            )
        )
    hours = []
    first = start.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    mark = first + dt.timedelta(hours=(-first.hour) % 3)
    while mark <= now:
        hours.append((LABEL + (mark - start).total_seconds() * scale, mark.strftime("%H:%M")))
        mark += dt.timedelta(hours=3)
    return Timeline(names, bars, hours, max(1, len(names)) * ROW + 16, left_out)


def durations(runs: Sequence[RunRecord]) -> list[Bar]:
    """A job's runs that ran, oldest left, each as tall as its duration against the longest."""
    ran = [run for run in reversed(runs) if run.duration_ms is not None and run.started is not None]
    if not ran:
        return []
    longest = max(run.duration_ms or 0 for run in ran) or 1
    step = WIDTH / max(len(ran), DURATION_RUNS)  # as wide for a new job as for one with a long history
    bars = []
    for index, run in enumerate(ran):
        height = max(MIN_BAR, (run.duration_ms or 0) / longest * (CHART_HEIGHT - 4))
        bars.append(
            Bar(
                index * step + 1,
                CHART_HEIGHT - height,
                max(MIN_BAR, step - 2),
                height,
                tone(run.status),
                _title(run),
                run.run_id,
            )
        )
    return bars
