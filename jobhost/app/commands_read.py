"""The commands that only read: `list`, `history`, `next`, `health` and `audit`.

They import the definition of jobs, the state store and the app's own modules, never the loop,
the runners or the observers (tests/e2e/test_import_cost.py holds them to it): a monitor's `health`
every few seconds, or a script's `history --json`, costs an interpreter and little more.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from jobhost import operations
from jobhost.app.bootstrap import App, pass_app
from jobhost.app.params import MAX_HEARTBEAT_AGE, MAX_HISTORY, UTF8, Seconds, instant_param
from jobhost.app.table import print_table
from jobhost.clock import now as wall_now
from jobhost.definition.durations import format_duration, parse_duration
from jobhost.errors import SettingError, StoreError, UnknownJobError
from jobhost.health import Look, watch
from jobhost.health import as_json as health_json
from jobhost.health import health as verdict_of
from jobhost.hoststatus import read_status
from jobhost.outcomes import RunStatus
from jobhost.release import release_line
from jobhost.store import Heartbeat, open_store


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@pass_app
def list_jobs(app: App, as_json: bool) -> None:
    """The jobs: schedule, next slot, last status, paused; first, the release of this code and the one
    the running loop has (and since when)."""
    settings = app.load()
    now = wall_now()
    rows = operations.catalog(app.registry.jobs, app.store(), now)
    here = settings.release()
    loop = read_status(settings.status_file) if settings.status_file is not None else None
    line = release_line(here, loop, now)
    if as_json:  # the array of jobs, as ever; a loop on another release is still said, on stderr
        click.echo(json.dumps(rows, indent=2))
        if loop is not None and loop.alive_loop and loop.release not in (None, here):
            click.echo(f"jobhost: {line}", err=True)
        return
    click.echo(line)
    print_table(
        ["NAME", "NEXT SLOT", "LAST", "SCHEDULE"],
        [
            [
                r["name"] + (" (paused)" if r["paused"] else ""),
                r["next_slot"] or "-",
                r["last_status"] or "-",
                r["schedule"],
            ]
            for r in rows
        ],
    )
    freeze = operations.freeze(app.store())
    if freeze is not None:
        click.echo(f"every job (a freeze): {pause_line(freeze.as_json())}")
    for r in rows:
        if r["pause"] is not None:
            click.echo(f"{r['name']}: {pause_line(r['pause'])}")
    for r in rows:
        for planned in r["one_offs"]:
            click.echo(f"{r['name']}: {one_off_line(planned)}")


def one_off_line(planned: dict[str, Any]) -> str:
    """A one-off run to come, in words."""
    return f"one-off run at {planned['at']}, asked for by {planned['requested_by']} (run {planned['run_id']})"


def pause_line(pause: dict[str, str | None]) -> str:
    """A pause in words: by whom, since when, why, until when."""
    since = f" since {pause['since']}" if pause["since"] else ""
    why = f": {pause['reason']}" if pause["reason"] else ""
    end = f"; resumes by itself at {pause['until']}" if pause["until"] else "; until `resume`"
    return f"paused by {pause['by'] or 'someone'}{since}{why}{end}"


@click.command()
@click.option("--since", type=UTF8, help="Only actions from this instant (ISO 8601) or this long ago (e.g. 24h).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, MAX_HISTORY), help="Actions at most.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@pass_app
def audit(app: App, since: str | None, limit: int, as_json: bool) -> None:
    """What people did, newest first: runs asked for, pauses, resumes, backfills; who, when, why."""
    app.load()
    start = since_param(since, app.registry.default_zone) if since else None
    actions = operations.audit_trail(app.store(), start, limit)
    if as_json:
        click.echo(json.dumps([a.as_json() for a in actions], indent=2, ensure_ascii=False))
        return
    print_table(
        ["AT", "ACTOR", "ACTION", "TARGET", "REASON"],
        [[a.at.isoformat(timespec="seconds"), a.actor, a.action, a.target, a.reason or "-"] for a in actions],
    )


def since_param(text: str, zone: ZoneInfo) -> dt.datetime:
    """--since: an ISO 8601 instant, or a duration back from now."""
    now = wall_now()
    if text[:1].isdigit() and not text[:4].isdigit():  # 24h, 30m: not a year
        try:
            return now - dt.timedelta(seconds=parse_duration(text, what="--since"))
        except ValueError:
            pass
    try:
        return operations.instant(text, zone, now)
    except ValueError as exc:
        raise click.BadParameter(
            f"{exc}; or a duration back from now, such as 24h or 30m", param_hint="--since"
        ) from None


RUN_ID_SHOWN = 12  # characters of a run id in the table: enough to tell runs apart, and to grep the log


@click.command()
@click.argument("name", required=False, type=UTF8)
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=1, max=MAX_HISTORY), help="How many runs."
)
@click.option(
    "--status", type=click.Choice([str(s) for s in RunStatus]), help="Only runs that ended so (or are running)."
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array, newest first, for scripts.")
@pass_app
def history(app: App, name: str | None, limit: int, status: str | None, as_json: bool) -> None:
    """Past runs, newest first, of one job or all."""
    app.load()
    try:
        records = operations.history(app.registry.jobs, app.store(), name, limit, RunStatus(status) if status else None)
    except UnknownJobError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps([r.as_json() for r in records], indent=2))
        return
    counted = operations.tries(records)
    print_table(
        ["SLOT", "JOB", "RUN", "TRY", "STATUS", "STARTED", "TOOK", "HOST", "REASON"],
        [
            [
                r.slot.isoformat(),
                r.job,
                r.run_id[:RUN_ID_SHOWN],
                str(counted[r.run_id] or "-"),
                str(r.status),
                r.started.isoformat(timespec="seconds") if r.started is not None else "-",
                format_duration(r.duration_ms / 1000) if r.duration_ms is not None else "-",
                r.host or "-",
                "; ".join(part for part in (f"by hand: {r.requested_by}" if r.requested_by else "", r.reason) if part),
            ]
            for r in records
        ],
    )


@click.command("next")
@click.argument("name", type=UTF8)
@click.option("--count", default=5, show_default=True, type=click.IntRange(min=1, max=100000), help="How many slots.")
@click.option(
    "--from",
    "start",
    type=UTF8,
    help="Start after this instant (ISO 8601; no offset means the job's zone). Default: now.",
)
@pass_app
def next_slots(app: App, name: str, count: int, start: str | None) -> None:
    """The next slots of NAME, one per line, in the job's time zone."""
    app.load()
    spec = app.job(name)
    when = instant_param(start, spec.schedule.zone, "--from") if start is not None else wall_now()
    try:
        for slot in itertools.islice(operations.upcoming(spec, when), count):
            click.echo(slot.isoformat())
    except operations.PastTheCalendar as exc:
        raise click.ClickException(str(exc)) from None
    # Not slots of the schedule, and stdout stays one instant a line for scripts: said beside it.
    for planned in operations.pending_one_offs(app.store()).get(name, []):
        if planned.at > when:
            click.echo(f"and a {one_off_line(planned.as_json())}", err=True)


@click.command()
@click.option(
    "--max-age",
    type=Seconds(min=1, max=MAX_HEARTBEAT_AGE),
    help="Seconds a heartbeat stays fresh. Default: 3 heartbeat intervals of the loop (90 s at the default 30 s).",
)
@click.option("--host", "host_name", type=UTF8, help="The host to look at (its JOBS_HOST_NAME). Default: this one.")
@click.option(
    "--for",
    "window",
    type=Seconds(min=0, max=MAX_HEARTBEAT_AGE),
    help="Watch the loop this many seconds (about once a second): healthy only if it stayed healthy "
    "throughout and was never restarted (one pid). Ends at the first look that is not.",
)
@click.option("--json", "as_json", is_flag=True, help="The verdict as /healthz gives it, with the loop's release.")
@pass_app
def health(app: App, max_age: float | None, host_name: str | None, window: float | None, as_json: bool) -> None:
    """Exit 0 when the loop of this host (or --host) is beating, else 1 with one line saying why not:
    stuck, gone, stopped, refused to start, or the state store failing. Imports no job."""
    look = _looker(app, max_age, host_name)
    seen: list[Look] = []

    def remembered() -> Look:
        seen.append(look())
        return seen[-1]

    verdict = remembered().health if window is None else watch(remembered, window)
    if as_json:
        click.echo(json.dumps(health_json(verdict, seen[-1].status), indent=2))
    else:
        click.echo(verdict.message)
    sys.exit(0 if verdict.healthy else 1)


def _looker(app: App, max_age: float | None, host_name: str | None) -> Callable[[], Look]:
    """How `health` looks at the loop, once or again and again: its status file read anew each time,
    the state store's heartbeat where that does not settle it."""
    try:
        settings = app.configure(log_to_stdout=False)
    except SettingError as exc:  # the loop refused these too: its status file says so, if it can be found
        witnesses, problem = app.witnesses(), str(exc)
        if witnesses.status_file is None or read_status(witnesses.status_file) is None:
            app.fail(problem, 2)
        status_file: Path | None = witnesses.status_file
        hostname = host_name or witnesses.hostname

        def heartbeat() -> Heartbeat | None:
            raise StoreError(problem)

    else:
        status_file, hostname = settings.status_file, host_name or settings.host.hostname

        def heartbeat() -> Heartbeat | None:
            store = open_store(settings.state_url, settings.base_dir)
            try:
                return store.heartbeat(hostname)
            finally:
                store.close()

    def look() -> Look:
        status = read_status(status_file) if status_file is not None else None
        beats: list[Heartbeat | None] = []

        def remembered() -> Heartbeat | None:
            beats.append(heartbeat())
            return beats[-1]

        verdict = verdict_of(status, remembered, hostname, max_age, wall_now())
        if status is not None and status.host == hostname:
            return Look(verdict, status.pid, status)
        return Look(verdict, beats[-1].pid if beats and beats[-1] is not None else None)

    return look
