"""What the HTML pages need besides the data: how times, durations and outcomes read."""

from __future__ import annotations

import datetime as dt
import math

from jinja2 import Environment

from jobhost.definition.durations import format_duration
from jobhost.outcomes import RunStatus
from jobhost.release import short

BAR_RUNS = 30  # recent runs drawn in a job's bar on the status page
REFRESH = 10  # seconds between two refreshes of a page (?refresh=N changes it)
MAX_REFRESH = 3600  # the longest ?refresh=N
NONE = "\u2013"  # an en dash: nothing to show


def tone(status: object) -> str:
    """The CSS class of a status's badge and bar."""
    try:
        return RunStatus(str(status)).tone
    except ValueError:  # none yet, or a status this release does not know
        return "none"


def took(duration_ms: int | None) -> str:
    """A run's duration as a person reads it: 120ms, 4.2s, 3m12s."""
    if duration_ms is None:
        return NONE
    if duration_ms < 1000:
        return f"{duration_ms}ms"
    if duration_ms < 60_000:
        return f"{duration_ms / 1000:.1f}s"
    return format_duration(duration_ms // 1000)


def ago(when: dt.datetime | str | None, now: dt.datetime) -> str:
    """`in 4m` or `3h ago`, to the second under a minute."""
    if when is None:
        return NONE
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when)
    seconds = (when - now).total_seconds()
    text = format_duration(max(1, round(abs(seconds))) if abs(seconds) >= 1 else 0)
    if abs(seconds) < 1:
        return "now"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def stamp(when: dt.datetime | str | None) -> str:
    """An instant in its own offset, to the second: 2026-11-23 06:00:00 +01:00."""
    if when is None:
        return NONE
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when)
    offset = when.strftime("%z")
    return when.strftime("%Y-%m-%d %H:%M:%S ") + (f"{offset[:3]}:{offset[3:]}" if offset else "")


def bar_level(duration_ms: int | None, longest: int) -> int:
    """How tall one run's bar is, 2 to 10 tenths: its duration against the longest shown. A class
    (h2 ... h10), not a style attribute: the pages' Content-Security-Policy allows no inline style."""
    if not duration_ms or longest <= 0:
        return 2
    return max(2, math.ceil(10 * duration_ms / longest))


def seconds(value: float | None) -> str:
    """An option given in seconds as the person wrote it: 20s, 45m, 1h30m; none without one."""
    return "none" if value is None else format_duration(value)


def install_filters(env: Environment) -> None:
    env.filters.update(tone=tone, took=took, stamp=stamp, release=short, seconds=seconds)
    env.globals.update(ago=ago, bar_level=bar_level)
