"""Whether the loop of a host is healthy: one verdict, which `health` and `/healthz` both give.

The loop's own status file (jobhost.hoststatus) says what it is doing, and whether the
process that wrote it is still alive; the state store's heartbeat is the answer where
there is no status file to read (another machine on PostgreSQL, or a file that could
not be written), and a second witness when the file has fallen behind.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from jobhost.definition.durations import format_duration
from jobhost.errors import StoreError
from jobhost.hoststatus import State, Status
from jobhost.store import Heartbeat

HEALTH_BEATS = 3  # heartbeat intervals without a beat before the loop counts as stuck
DEFAULT_MAX_AGE = 90.0  # seconds, where the loop's heartbeat interval is not known (the store's heartbeat)


class Verdict(enum.StrEnum):
    BEATING = "beating"
    STARTING = "starting"
    STUCK = "stuck"
    GONE = "gone"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REFUSED = "refused"
    STORE_FAILING = "store_failing"
    UNKNOWN = "unknown"  # no heartbeat, or no way to read one
    RESTARTED = "restarted"  # another loop than the one watched: it ended and was started again


@dataclass(frozen=True)
class Health:
    verdict: Verdict
    message: str  # starts with "healthy: " or "unhealthy: "

    @property
    def healthy(self) -> bool:
        return self.verdict == Verdict.BEATING


def as_json(verdict: Health, status: Status | None) -> dict[str, Any]:
    """The verdict as `/healthz` and `health --json` give it, with the release the loop of `status`
    runs (or ran, if it stopped) and when its process started; null where no status tells them."""
    return {
        "healthy": verdict.healthy,
        "state": str(verdict.verdict),
        "message": verdict.message,
        "release": status.release if status is not None else None,
        "started_at": status.started_at if status is not None else None,
    }


HeartbeatReader = Callable[[], "Heartbeat | None"]  # raises StoreError if the store cannot be read


def health(
    status: Status | None,
    heartbeat: HeartbeatReader,
    hostname: str,
    max_age: float | None,
    now: dt.datetime,
    *,
    alive: Callable[[Status], bool] = Status.writer_alive,
) -> Health:
    """The verdict on the loop of `hostname`, from its `status` (None: none to read) and, where
    that does not settle it, its heartbeat in the store. `max_age` None: HEALTH_BEATS heartbeat
    intervals of the loop. `alive`: is the status's writer running (in its own process: yes)."""
    if status is not None and status.host == hostname:
        verdict = _from_status(status, heartbeat, max_age, now, alive)
    else:
        verdict = _from_heartbeat(heartbeat, hostname, max_age or DEFAULT_MAX_AGE, now)
    # One line, for a monitor's check: a reason quoted from SQLite may span several.
    return replace(verdict, message=" ".join(verdict.message.split()))


def _from_status(
    status: Status, heartbeat: HeartbeatReader, max_age: float | None, now: dt.datetime, alive: Callable[[Status], bool]
) -> Health:
    limit = max_age or HEALTH_BEATS * status.heartbeat_interval
    age = max(status.age(now), 0.0)
    who = f"pid {status.pid} on {status.host}"
    ago = f"{format_duration(round(age))} ago"
    if status.state == State.REFUSED:
        return Health(Verdict.REFUSED, f"unhealthy: the host refused to start {ago} ({who}): {status.reason}")
    if status.state == State.STOPPED:
        return Health(Verdict.STOPPED, f"unhealthy: the loop stopped cleanly {ago} ({who})")
    if not alive(status):
        return Health(
            Verdict.GONE,
            f"unhealthy: the loop is gone: {who} ended without a clean stop (crashed or killed) while "
            f"{_doing(status)}; last seen {ago}",
        )
    if age > limit and status.state != State.STARTING:
        beat = _beat_of(heartbeat, status)
        if beat is None or (now - beat.at).total_seconds() > limit:
            return Health(
                Verdict.STUCK,
                f"unhealthy: the loop is stuck: {who} is alive but its last heartbeat was {ago}, "
                f"more than {format_duration(limit)}",
            )
        age = max((now - beat.at).total_seconds(), 0.0)
        ago = f"{format_duration(round(age))} ago (in the state store)"
    if status.store_failure is not None:
        return Health(
            Verdict.STORE_FAILING,
            f"unhealthy: the state store is failing: {status.store_failure}; the loop ({who}) starts no new run "
            f"until it is back (last status {ago})",
        )
    if status.state == State.STARTING:
        return Health(Verdict.STARTING, f"unhealthy: the host is starting ({status.reason}) since {ago} ({who})")
    if status.state == State.STOPPING:
        return Health(Verdict.STOPPING, f"unhealthy: the loop is stopping ({status.reason}) since {ago} ({who})")
    return Health(Verdict.BEATING, f"healthy: last heartbeat {ago} ({who})")


def _doing(status: Status) -> str:
    if status.state == State.STARTING:
        return f"starting ({status.reason})"
    return "stopping" if status.state == State.STOPPING else "running"


def _beat_of(heartbeat: HeartbeatReader, status: Status) -> Heartbeat | None:
    """The store's heartbeat of the status's writer, if the store can be read and has one."""
    try:
        beat = heartbeat()
    except StoreError:
        return None
    return beat if beat is not None and beat.pid == status.pid and not beat.stopped else None


def _from_heartbeat(heartbeat: HeartbeatReader, hostname: str, max_age: float, now: dt.datetime) -> Health:
    try:
        beat = heartbeat()
    except StoreError as exc:
        return Health(Verdict.UNKNOWN, f"unhealthy: cannot read the heartbeat of {hostname}: {exc}")
    if beat is None:
        return Health(
            Verdict.UNKNOWN,
            f"unhealthy: no heartbeat recorded for {hostname}: the loop has not run against this state",
        )
    age = (now - beat.at).total_seconds()
    seen = f"last heartbeat {format_duration(max(round(age), 0))} ago (pid {beat.pid} on {hostname})"
    if beat.stopped:
        return Health(Verdict.STOPPED, f"unhealthy: the loop stopped cleanly; {seen}")
    if age > max_age:
        return Health(
            Verdict.STUCK,
            f"unhealthy: {seen}, more than {format_duration(max_age)}: the loop is stuck or gone",
        )
    return Health(Verdict.BEATING, f"healthy: {seen}")


@dataclass(frozen=True)
class Look:
    """One look at the loop: the verdict, the pid of the loop it is about (None: no loop known), and
    that loop's status record when it is this host's (what `--json` adds: its release and start)."""

    health: Health
    pid: int | None
    status: Status | None = None


def watch(
    look: Callable[[], Look],
    window: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    every: float = 1.0,
) -> Health:
    """Look at the loop every `every` seconds for `window` seconds (a deploy's stability window):
    healthy only if every look was healthy and about the same loop (one pid: a loop that crashed
    and was started again by its supervisor looks healthy a moment later, and is not). The first
    look that is not ends the watch at once, saying what and when."""
    started = clock()
    first = look()
    seen = first
    while True:
        into = f"{_seconds(clock() - started)} into the {_seconds(window)} window"
        if seen.pid != first.pid:  # first: the new loop's own verdict (starting, most often) is not the news
            return Health(
                Verdict.RESTARTED,
                f"unhealthy {into}: the loop restarted (pid {first.pid}, now {seen.pid}): {_reason(seen.health)}",
            )
        if not seen.health.healthy:
            return Health(seen.health.verdict, f"unhealthy {into}: {_reason(seen.health)}")
        left = window - (clock() - started)
        if left <= 0:
            return Health(Verdict.BEATING, f"healthy for {_seconds(window)}: {_reason(seen.health)}")
        sleep(min(every, left))
        seen = look()


def _reason(health: Health) -> str:
    return health.message.split(": ", 1)[1] if ": " in health.message else health.message


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s"
