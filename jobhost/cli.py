"""The command line: the same operations a person and a script need, on click.

Exit status: 0 success, 1 a failed run or invalid job definitions, 2 bad usage
(unknown command or job, a bad option or setting).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from zoneinfo import ZoneInfo

import click

from jobhost import default_registry, operations
from jobhost.backfill import MAX_SLOTS, MAX_SLOTS_CEILING, count_slots
from jobhost.cliparams import MAX_HEARTBEAT_AGE, MAX_HISTORY, UTF8, Seconds
from jobhost.clock import now as wall_now
from jobhost.config import Configure, HostSettings, StartWitnesses
from jobhost.datadir import unusable
from jobhost.discovery import discover
from jobhost.durations import format_duration
from jobhost.errors import (
    JobhostError,
    LoopRunning,
    SettingError,
    StoreError,
    StoreUnavailable,
    UnknownJobError,
    display_path,
)
from jobhost.health import Look, watch
from jobhost.health import as_json as health_json
from jobhost.health import health as verdict_of
from jobhost.horizon import OutsideHorizon, bounded
from jobhost.hoststatus import State, StatusFile, file_identity, read_status
from jobhost.lifecycle import Lifecycle, Reporter
from jobhost.outcomes import Outcome, RunStatus
from jobhost.registry import JobSpec, Registry
from jobhost.release import release_line
from jobhost.store import Heartbeat, StateStore, open_store, sqlite_path
from jobhost.timezones import localize

if TYPE_CHECKING:
    from jobhost.host import Host

logger = logging.getLogger("jobhost")


@dataclass
class _App:
    """Loads settings, jobs and the store once per command, lazily.

    In the forever loop (`log_stream`), fatal problems are log records on the
    JSON stream that supervisord ships; other commands print plain lines to stderr.
    """

    configure: Configure
    witnesses: Callable[[], StartWitnesses] = StartWitnesses
    registry: Registry = field(default_factory=lambda: default_registry)
    settings: HostSettings | None = None
    log_stream: bool = False
    # The forever loop's status file, from the start on (None in the other commands).
    status: StatusFile | None = None
    problems: list[str] = field(default_factory=list)

    def load(self, *, log_to_stdout: bool = False, strict: bool = False, loop: bool = False) -> HostSettings:
        """Settings, then the jobs. `loop`: the forever loop, which says in its status file that it
        is starting, and, if it refuses to start, why."""
        self.log_stream = log_to_stdout
        if loop:
            self.status = StatusFile(None, "", 0)  # set once the settings say where
        try:
            self.settings = self.configure(log_to_stdout=log_to_stdout, loop=loop)
        except SettingError as exc:
            self.fail(str(exc), 2, before_logging=True)
        assert self.settings is not None
        if loop:
            host = self.settings.host
            self.status = StatusFile(
                self.settings.status_file, host.hostname, host.heartbeat_interval, self.settings.release()
            )
            other = self.status.taken_by_another()
            if other is not None:
                logger.warning(
                    "the loop of pid %d runs against this state; this process leaves its status file alone",
                    other.pid,
                    extra={"event": "status_file_taken"},
                )
            self.status.write(State.STARTING, "importing jobs")
            self.usable_data_dir()
        self.registry.default_zone = self.settings.timezone
        problems = discover(self.settings.jobs_dir, self.registry, self.settings.import_timeout, self._importing)
        self.problems = [problem.describe() for problem in problems]
        for problem in problems:
            if self.log_stream:
                logger.error(
                    problem.describe(),
                    extra={"event": "job_invalid", "file": problem.file, "line": problem.line, "job_name": problem.job},
                )
            else:
                click.echo(problem.describe(), err=True)
        if problems and strict:
            started = "; nothing was started" if self.log_stream else ""
            self.fail(f"{len(problems)} problem(s) in the job definitions{started}", 1)
        return self.settings

    def usable_data_dir(self) -> None:
        """The commands that run jobs (and `check`): make JOBS_DATA_DIR if missing and prove it writable,
        or exit 2 naming it (the forever loop records that it refused to start, as for a bad setting)."""
        assert self.settings is not None
        where = self.settings.host.data_dir
        problem = None if where is None else unusable(where)
        if problem is not None:
            self.fail(problem, 2)

    def _importing(self, location: Path) -> None:
        """The forever loop's status names the module it imports (a host dying in it is found out)."""
        if self.status is not None:
            self.status.write(State.STARTING, f"importing {display_path(str(location))}")

    def store(self, *, wait: bool = False) -> StateStore:
        """Open the state store; `wait` (the loop): a database server out of reach is waited for,
        with backoff, so a host started before its database does not give up."""
        assert self.settings is not None
        if not wait:
            self._not_under_the_loop()
        delay, began, outage = 1.0, time.monotonic(), None
        while True:
            try:
                store = open_store(self.settings.state_url, self.settings.base_dir)
            except StoreUnavailable as exc:
                if not wait:
                    self.fail(f"JOBS_STATE_URL: {exc}", 2)
                if self.status is not None:
                    self.status.write(State.STARTING, "opening the state store", store_failure=str(exc))
                if outage is None:
                    outage = exc
                    logger.error("%s; waiting for it", exc, extra={"event": exc.began})
                time.sleep(delay)  # SIGTERM ends the wait: nothing runs yet
                delay = min(delay * 2, 30.0)
                continue
            except StoreError as exc:
                self.fail(f"JOBS_STATE_URL: {exc}", 2)
            if outage is not None:
                waited = time.monotonic() - began
                logger.warning(
                    "the state store works again after %s",
                    format_duration(max(1, round(waited))),
                    extra={"event": outage.ended, "outage_ms": int(waited * 1000)},
                )
            return store

    def _not_under_the_loop(self) -> None:
        """Refuse to open a SQLite state file that is not the one the running loop has open (it was
        replaced, or deleted and made anew, under the loop): the write-ahead log beside it is the
        loop's, and opening the file would pair the two, reading the wrong history or corrupting both."""
        assert self.settings is not None
        where = self.settings.status_file
        status = read_status(where) if where is not None else None
        if status is None or status.state_file is None or status.state in (State.STOPPED, State.REFUSED):
            return
        if not status.writer_alive():
            return
        here = sqlite_path(self.settings.state_url, self.settings.base_dir)
        if here is not None and file_identity(here) != status.state_file:
            self.fail(
                f"JOBS_STATE_URL: {str(here)!r} is not the file the running loop (pid {status.pid}) has open: it "
                "was replaced or deleted under the loop, and opening it would mix the loop's write-ahead log into "
                "it; put the loop's file back at that path, or stop the loop first",
                2,
            )

    def verify(self, store: StateStore) -> None:
        """The store's own integrity check (`check`, the loop's start): a damaged one is refused, exit 2."""
        try:
            whole = store.verify()
        except StoreError as exc:
            store.close()
            self.fail(f"JOBS_STATE_URL: {exc}", 2)
        if whole:
            return
        message = "JOBS_STATE_URL: the state store's integrity check was cut short (it is bounded in time); the part checked is sound"
        if self.log_stream:
            logger.warning(message, extra={"event": "store_check_cut_short"})
        else:
            click.echo(f"jobhost: {message}", err=True)

    def job(self, name: str) -> JobSpec:
        spec = self.registry.jobs.get(name)
        if spec is None:
            raise click.UsageError(str(UnknownJobError(name, list(self.registry.jobs))))
        return spec

    def fail(self, message: str, code: int, *, before_logging: bool = False, refused: bool = True) -> NoReturn:
        """Say `message` and exit with `code`. The forever loop also records that it `refused` to
        start, in its status file and to Sentry (not so a second loop, which the first one shuts out)."""
        self._say(message, before_logging=before_logging)
        if self.status is not None and refused:
            self._refused(message)
        sys.exit(code)

    def _refused(self, message: str) -> None:
        witnesses = self.witnesses()
        status = self.status
        if self.settings is None and witnesses.status_file is not None:  # a bad setting: found without them
            status = StatusFile(witnesses.status_file, witnesses.hostname, witnesses.heartbeat_interval)
            status.taken_by_another()
        reason = "; ".join([message, *self.problems])
        if status is not None:
            status.write(State.REFUSED, reason)
            status.close()
        if witnesses.report is not None:
            witnesses.report(message, self.problems)

    def _say(self, message: str, *, before_logging: bool) -> None:
        if not self.log_stream:
            click.echo(f"jobhost: {message}", err=True)
        elif before_logging and os.environ.get("JOBS_LOG_FORMAT", "json").strip().lower() != "text":
            # Logging is not set up yet (a setting is bad), but the stream must stay JSON.
            stamp = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
            line = {"timestamp": stamp, "level": "CRITICAL", "logger": "jobhost", "message": message}
            click.echo(json.dumps({**line, "event": "host_start_failed"}))
        elif before_logging:
            click.echo(f"jobhost: {message}", err=True)
        else:
            logger.critical(message, extra={"event": "host_start_failed"})


pass_app = click.make_pass_decorator(_App)


def _make_host(
    settings: HostSettings,
    jobs: dict[str, JobSpec],
    store: StateStore,
    *observers: Reporter,
    status: StatusFile | None = None,
) -> Host:
    from jobhost.host import Host  # here: the commands that only read history never load the loop

    return Host(jobs, store, settings.host, Lifecycle([*settings.reporters(), *observers]), status=status)


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
        app: _App = ctx.obj
        settings = app.load(log_to_stdout=True, strict=True, loop=True)
        store = app.store(wait=True)
        try:
            store.lock_for_loop(os.getpid(), settings.host.hostname)
        except LoopRunning as exc:
            if app.status is not None:
                app.status.withdraw()  # the loop that runs speaks for the state, not this process
            app.fail(str(exc), 1, refused=False)
        except StoreError as exc:  # no loop holds it, but something does: a refused start, said as such
            app.fail(str(exc), 1)
        if app.status is not None:
            path = getattr(store, "path", None)  # a SQLite file: the others commands check they open that one
            app.status.state_file = file_identity(path) if path is not None else None
            app.status.claim()
        app.verify(store)
        try:
            sys.exit(_serve(app, settings, store))
        finally:
            store.close()


def _serve(app: _App, settings: HostSettings, store: StateStore) -> int:
    """The forever loop, with its HTTP server beside it when JOBS_HTTP_ADDR asks for one."""
    jobs = app.registry.jobs
    if settings.http is None:
        return _make_host(settings, jobs, store, status=app.status).run_forever()
    from jobhost.web.server import WebServer  # only a host that serves HTTP loads the web stack

    web = WebServer(settings.http, jobs, lambda: open_store(settings.state_url, settings.base_dir))
    host = _make_host(settings, jobs, store, *web.observers(), status=app.status)
    try:
        web.start(host)
    except OSError as exc:
        address = f"{settings.http.host}:{settings.http.port}"
        app.fail(f"cannot serve HTTP on {address} (JOBS_HTTP_ADDR): {exc.strerror or exc}; nothing was started", 2)
    try:
        return host.run_forever()
    finally:
        web.stop()


@cli.command()
@pass_app
def check(app: _App) -> None:
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
def list_jobs(app: _App, as_json: bool) -> None:
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
def run(app: _App, name: str, slot: str | None) -> None:
    """Run job NAME once now, in the foreground, isolated and logged; exit 0 if it succeeded."""
    settings = app.load(log_to_stdout=True)
    spec = app.job(name)
    when = _slot_of(spec, slot) if slot else operations.default_slot(spec, wall_now())
    app.usable_data_dir()
    store = app.store()
    host = _make_host(settings, app.registry.jobs, store)
    try:
        outcome = host.run_now(spec, when)
    finally:
        host.close()
        store.close()
    sys.exit(0 if outcome.status == RunStatus.SUCCEEDED else 1)


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
def backfill_command(app: _App, name: str, start: str, end: str | None, max_slots: int) -> None:
    """Run every slot of NAME from --from to --to that has not succeeded yet, in order.

    Dates and times without an offset are in the job's time zone. Slots that
    already succeeded are skipped, so a backfill stopped with Ctrl-C can be
    started again with the same range. Exit 0 when every slot succeeded.
    """
    from jobhost.backfill import backfill, slots_between  # with the loop it drives: only here

    settings = app.load(log_to_stdout=True)
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
    if count_slots(spec.schedule, first, last, max_slots) is None:
        raise click.BadParameter(
            f"the range holds more than {max_slots:,} slots of {name} ({spec.schedule.describe()}); "
            "narrow --from/--to, or raise --max-slots to run them all",
            param_hint="--max-slots",
        )
    app.usable_data_dir()
    store = app.store()
    try:
        done = store.succeeded_slots(spec.name, first, last)

        def missing() -> Iterator[dt.datetime]:  # produced as they run: the range is never held
            return (slot for slot in slots_between(spec.schedule, first, last) if slot.timestamp() not in done)

        total = sum(1 for _ in missing())
        click.echo(f"backfill {name}: {total} slot(s) to run, {len(done)} already succeeded", err=True)

        # Progress goes to the terminal's stderr, kept aside before the host turns
        # descriptors 1 and 2 into its stray-output pipe.
        progress = open(os.dup(2), "w", buffering=1)  # noqa: SIM115 - closed with the process

        def report(index: int, total: int, slot: dt.datetime, outcome: Outcome) -> None:
            reason = f": {outcome.reason}" if outcome.reason else ""
            progress.write(f"[{index}/{total}] {slot.isoformat()} {outcome.status}{reason}\n")

        host = _make_host(settings, app.registry.jobs, store)
        try:
            status = backfill(host, spec, missing(), total, report)
        finally:
            host.close()
    finally:
        store.close()
    if status == RunStatus.INTERRUPTED:
        progress.write("backfill stopped; run the same command again to go on\n")
    sys.exit(0 if status == RunStatus.SUCCEEDED else 1)


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
def history(app: _App, name: str | None, limit: int, status: str | None, as_json: bool) -> None:
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
def migrate_state(app: _App, target: str) -> None:
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
def pause(app: _App, name: str) -> None:
    """Stop starting runs of NAME (its slots are recorded as skipped) until `resume`."""
    _set_paused(app, name, True)


@cli.command()
@click.argument("name", type=UTF8)
@pass_app
def resume(app: _App, name: str) -> None:
    """Start running NAME on its schedule again."""
    _set_paused(app, name, False)


def _set_paused(app: _App, name: str, paused: bool) -> None:
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
def next_slots(app: _App, name: str, count: int, start: str | None) -> None:
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
def health(app: _App, max_age: float | None, host_name: str | None, window: float | None, as_json: bool) -> None:
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


def _looker(app: _App, max_age: float | None, host_name: str | None) -> Callable[[], Look]:
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
        cli.main(args=argv, obj=_App(configure, witnesses), prog_name="jobs.py", standalone_mode=True)
    except JobhostError as exc:
        click.echo(f"jobhost: {exc}", err=True)
        return 1
    return 0
