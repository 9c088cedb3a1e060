"""Which release runs: the words `list` and the status page use for the release (commit) of
the code and for the one the running loop has, as its status file records them.

A command runs the code of its own checkout, which a deploy may have replaced since the
loop started; so `list` names both, and says when they differ (deployed, not restarted).
"""

from __future__ import annotations

import datetime as dt
import re

from jobhost.definition.durations import format_duration
from jobhost.hoststatus import Status

UNKNOWN = "unknown"  # no REVISION file and no git commit to tell it


def short(release: str | None) -> str:
    """A release as a person reads it: a commit's first 12 hex digits, any other name whole."""
    if not release:
        return UNKNOWN
    return release[:12] if re.fullmatch(r"[0-9a-f]{40}", release) else release


def since(started_at: str | None, now: dt.datetime) -> str:
    """When a loop started, and how long ago: `2026-12-01 23:40:12 UTC (3h ago)`."""
    if started_at is None:
        return "at a time not known"
    started = dt.datetime.fromisoformat(started_at)
    ago = format_duration(max(0, round((now - started).total_seconds())))
    return f"{started.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC ({ago} ago)"


def release_line(here: str | None, loop: Status | None, now: dt.datetime) -> str:
    """`list`'s first line: this checkout's release, and the running loop's (or that none runs)."""
    line = f"release {short(here)} (this checkout)"
    if loop is None or not loop.alive_loop:
        return f"{line}; no loop runs on this host"
    since_then = since(loop.started_at, now)
    if loop.release is None:  # a loop of a release that did not record it yet
        return f"{line}; the loop (pid {loop.pid}) runs since {since_then}, on a release it does not name"
    if loop.release == here:
        return f"{line}, run by the loop (pid {loop.pid}) since {since_then}"
    return (
        f"{line}; the loop (pid {loop.pid}) runs release {short(loop.release)} since {since_then}: "
        "deployed but not restarted"
    )
