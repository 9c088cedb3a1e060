"""The command line: the same operations a person and a script need, on click.

Exit status: 0 success, 1 a failed run or invalid job definitions, 2 bad usage
(unknown command or job, a bad option or setting).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from jobhost import operations
from jobhost.app.bootstrap import App, pass_app
from jobhost.app.params import MAX_HEARTBEAT_AGE, MAX_HISTORY, MAX_SLOTS, MAX_SLOTS_CEILING, UTF8, Seconds
from jobhost.clock import now as wall_now
from jobhost.config import Configure, StartWitnesses
from jobhost.durations import format_duration
from jobhost.errors import JobhostError, SettingError, StoreError, UnknownJobError
from jobhost.health import Look, watch
from jobhost.health import as_json as health_json
from jobhost.health import health as verdict_of
from jobhost.horizon import OutsideHorizon, bounded
from jobhost.hoststatus import read_status
from jobhost.outcomes import RunStatus
from jobhost.registry import JobSpec
from jobhost.release import release_line
from jobhost.store import Heartbeat, open_store
from jobhost.timezones import localize


def _slot_of(spec: JobSpec, text: str) -> dt.datetime:
    """The slot `text` names; a wall time without an offset follows the DST policy of slots."""
    try:
        return operations.slot_of(spec, text, wall_now())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--slot") from None


def _instant(text: str | None, zone: ZoneInfo, what: str) -> dt.datetime | None:
    """Parse ISO 8601 within the horizon of now; a time without an offset is read in the job's zone."""
    if text is None:
        return None
    try:
        return operations.instant(text, zone, wall_now())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run the jobs in jobs/ forever (no command), or one of the commands below."""
    if ctx.invoked_subcommand is None:
        from jobhost.app.serve import serve_forever  # the loop and all it runs jobs with: only here

        sys.exit(serve_forever(ctx.obj))


@cli.command()
@pass_app
def check(app: App) -> None:
    """Import and validate every job, setting and the state store (SQLite's own check of the file), and
    write in the data directory; exit 1 listing each problem as file:line, 2 for a bad setting, a damaged
    state file or a data directory the jobs cannot write in."""
    app.load(strict=True)
    store = app.store()
    app.verify(store)
    store.close()
    app.usable_data_dir()
    click.echo(f"ok: {len(app.registry.jobs)} jobs")


@cli.command("list")
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
    _table(
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


@cli.command()
@click.argument("name", type=UTF8)
@click.option(
    "--slot",
    type=UTF8,
    help="The slot to run for (ISO 8601; no offset means the job's zone). Default: the latest slot.",
)
@pass_app
def run(app: App, name: str, slot: str | None) -> None:
    """Run job NAME once now, in the foreground, isolated and logged; exit 0 if it succeeded."""
    from jobhost.app.serve import run_once  # the engine and its runners: only the commands that run jobs

    app.load(log_to_stdout=True)
    spec = app.job(name)
    when = _slot_of(spec, slot) if slot else operations.default_slot(spec, wall_now())
    app.usable_data_dir()
    sys.exit(0 if run_once(app, spec, when) == RunStatus.SUCCEEDED else 1)


@cli.command("backfill")
@click.argument("name", type=UTF8)
@click.option(
    "--from", "start", type=UTF8, required=True, help="First day or instant (ISO 8601; a date means its start)."
)
@click.option("--to", "end", type=UTF8, help="Last day or instant, included (a date means all of it). Default: now.")
@click.option(
    "--max-slots",
    default=MAX_SLOTS,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_SLOTS_CEILING),
    help="Refuse a range of more slots than this: raise it on purpose for a long range of a frequent job.",
)
@pass_app
def backfill_command(app: App, name: str, start: str, end: str | None, max_slots: int) -> None:
    """Run every slot of NAME from --from to --to that has not succeeded yet, in order.

    Dates and times without an offset are in the job's time zone. Slots that
    already succeeded are skipped, so a backfill stopped with Ctrl-C can be
    started again with the same range. Exit 0 when every slot succeeded.
    """
    from jobhost.app.serve import backfill_range  # the engine and its runners: only the commands that run jobs

    app.load(log_to_stdout=True)
    spec = app.job(name)
    zone, now = spec.schedule.zone, wall_now()
    first = _day_or_instant(start, zone, "--from", end_of_day=False)
    last = _day_or_instant(end, zone, "--to", end_of_day=True) if end else now
    if first > now:
        raise click.BadParameter(f"{start} is in the future; backfill runs past slots", param_hint="--from")
    if first > last:
        raise click.BadParameter(f"{start} is after {end}: the range is reversed", param_hint="--from")
    if last > now:
        click.echo(f"backfill: slots after now ({now.isoformat()}) are left to the schedule", err=True)
        last = now
    sys.exit(0 if backfill_range(app, spec, first, last, max_slots) == RunStatus.SUCCEEDED else 1)


def _day_or_instant(text: str, zone: ZoneInfo, what: str, *, end_of_day: bool) -> dt.datetime:
    """A date (its first or last instant in `zone`, by the DST policy) or an ISO 8601 instant,
    within the horizon of now."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        value = _instant(text, zone, what)
        assert value is not None
        return value
    now = wall_now()
    try:
        if end_of_day:
            midnight = localize(dt.datetime.combine(day + dt.timedelta(days=1), dt.time()), zone)
            value = midnight.astimezone(dt.UTC) - dt.timedelta(microseconds=1)  # in UTC: zoned arithmetic is wall time
        else:
            value = localize(dt.datetime.combine(day, dt.time()), zone)
        return bounded(value, text, now)
    except (OverflowError, OutsideHorizon):  # a day at the edge of the calendar, or far from now
        raise click.BadParameter(str(OutsideHorizon(text, now)), param_hint=what) from None


@cli.command()
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
    _table(
        ["SLOT", "JOB", "TRY", "STATUS", "TOOK", "HOST", "REASON"],
        [
            [
                r.slot.isoformat(),
                r.job,
                str(r.attempt),
                str(r.status),
                format_duration(r.duration_ms / 1000) if r.duration_ms is not None else "-",
                r.host or "-",
                r.reason,
            ]
            for r in records
        ],
    )


@cli.command("migrate-state")
@click.argument("target", type=UTF8)
@pass_app
def migrate_state(app: App, target: str) -> None:
    """Copy the run history and job state from JOBS_STATE_URL to TARGET (an empty store),
    e.g. from SQLite to postgresql://user:password@host/database. Stop the host first."""
    settings = app.load()
    source = app.store()
    try:
        try:
            source.lock_for_loop(os.getpid(), settings.host.hostname)  # no loop may write while the history moves
        except StoreError as exc:
            app.fail(f"{exc}; stop the host before moving its state", 1)
        try:
            destination = open_store(target, settings.base_dir)
        except StoreError as exc:
            app.fail(f"TARGET: {exc}", 2)
        try:
            if destination.runs(limit=1) or destination.paused_jobs():
                app.fail("TARGET already holds run history; migrate-state only fills an empty store", 1)
            dump = source.dump()
            destination.load(dump)
        finally:
            destination.close()
    finally:
        source.close()
    click.echo(
        f"copied {len(dump.runs)} runs, {len(dump.retries)} pending retries and {len(dump.paused)} paused jobs; "
        "now set JOBS_STATE_URL to the target on every host"
    )


@cli.command()
@click.argument("name", type=UTF8)
@pass_app
def pause(app: App, name: str) -> None:
    """Stop starting runs of NAME (its slots are recorded as skipped) until `resume`."""
    _set_paused(app, name, True)


@cli.command()
@click.argument("name", type=UTF8)
@pass_app
def resume(app: App, name: str) -> None:
    """Start running NAME on its schedule again."""
    _set_paused(app, name, False)


def _set_paused(app: App, name: str, paused: bool) -> None:
    app.load()
    app.job(name)
    operations.set_paused(app.registry.jobs, app.store(), name, paused)
    click.echo(f"{name}: {'paused' if paused else 'resumed'}")


@cli.command("next")
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
    when = _instant(start, spec.schedule.zone, "--from") or wall_now()
    for _ in range(count):
        try:
            slot = spec.schedule.next_slot(when)
        except (OverflowError, ValueError):
            raise click.ClickException(
                f"no slot of {name} after {when.isoformat()} fits the calendar (it ends in 9999)"
            ) from None
        if slot is None:
            break
        click.echo(slot.isoformat())
        when = slot


@cli.command()
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


def _table(headers: list[str], rows: list[list[str]]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def main(
    configure: Configure, witnesses: Callable[[], StartWitnesses] = StartWitnesses, argv: list[str] | None = None
) -> int:
    """Run the command line with the deployment's `configure` (and `witnesses`, told when the forever
    loop refuses to start); return the exit status."""
    try:
        cli.main(args=argv, obj=App(configure, witnesses), prog_name="jobs.py", standalone_mode=True)
    except JobhostError as exc:
        click.echo(f"jobhost: {exc}", err=True)
        return 1
    return 0
