"""The commands that act: `check` a deployment, `run` a job or `backfill` a range, `pause` and
`resume` a job (or every job), `cancel` a run, `migrate-state` to another store.

`run` and `backfill` drive the engine: they import it (jobhost.app.serve) at their start, and
no other command here does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import click

from jobhost import operations
from jobhost.actors import command_line_actor
from jobhost.app.bootstrap import App, pass_app
from jobhost.app.params import MAX_SLOTS, MAX_SLOTS_CEILING, UTF8, Seconds, day_or_instant_param, slot_param
from jobhost.clock import now as wall_now
from jobhost.definition.parameters import parse_pairs
from jobhost.errors import StoreError
from jobhost.hoststatus import NUDGE_SIGNAL, read_status
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, StateStore, open_store
from jobhost.store.model import EVERY_JOB, OneOff


@click.command()
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


@click.command()
@click.argument("name", type=UTF8)
@click.option(
    "--slot",
    type=UTF8,
    help="The slot to run for (ISO 8601; no offset means the job's zone). Default: the latest slot.",
)
@click.option(
    "--param",
    "pairs",
    multiple=True,
    type=UTF8,
    metavar="KEY=VALUE",
    help="A keyword argument for the job function, made as its parameter's type (int, float, bool, "
    "Decimal, date, datetime, Path, str); again for each. Without, the function's defaults.",
)
@click.option(
    "--at",
    type=UTF8,
    help="Not now: once, at this later instant (ISO 8601; no offset: the job's zone), by the loop of "
    "whichever host takes it then. It survives restarts and can be cancelled by its run id until it starts.",
)
@pass_app
def run(app: App, name: str, slot: str | None, pairs: tuple[str, ...], at: str | None) -> None:
    """Run job NAME once now, in the foreground, isolated and logged; exit 0 if it succeeded.
    With --at, record a run for a later instant instead, and exit 0."""
    from jobhost.app.serve import run_once  # the engine and its runners: only the commands that run jobs

    settings = app.load(log_to_stdout=at is None)
    spec = app.job(name)
    try:
        params = operations.run_params(spec, parse_pairs(pairs)) if pairs else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from None
    if at is not None:
        if slot is not None:
            raise click.UsageError("give --at (a run at a later instant) or --slot (a slot run now), not both")
        try:
            planned = operations.one_off(spec, app.store(), at, command_line_actor(), wall_now(), params)
        except ValueError as exc:
            raise click.BadParameter(str(exc).partition(": ")[2], param_hint="--at") from None
        if settings.status_file is not None:
            nudge_loop(settings.status_file)
        click.echo(f"one-off run {planned.run_id} of {name} at {planned.at.isoformat()}: recorded")
        return
    if slot is not None and not slot.strip():
        raise click.BadParameter("is empty: give a slot, or leave --slot out for the latest", param_hint="--slot")
    when = slot_param(spec, slot) if slot else operations.default_slot(spec, wall_now())
    app.usable_data_dir()
    succeeded = run_once(app, spec, when, params) == RunStatus.SUCCEEDED
    if succeeded and settings.status_file is not None:  # jobs blocked on this slot run now, not at the next tick
        nudge_loop(settings.status_file)
    sys.exit(0 if succeeded else 1)


@click.command("backfill")
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
    first = day_or_instant_param(start, zone, "--from", end_of_day=False)
    last = day_or_instant_param(end, zone, "--to", end_of_day=True) if end else now
    if first > now:
        raise click.BadParameter(f"{start} is in the future; backfill runs past slots", param_hint="--from")
    if first > last:
        raise click.BadParameter(f"{start} is after {end}: the range is reversed", param_hint="--from")
    if last > now:
        click.echo(f"backfill: slots after now ({now.isoformat()}) are left to the schedule", err=True)
        last = now
    sys.exit(0 if backfill_range(app, spec, first, last, max_slots) == RunStatus.SUCCEEDED else 1)


def job_or_all(app: App, name: str | None, every: bool) -> str:
    """The target of `pause` or `resume`: NAME, or EVERY_JOB for --all; a usage error for neither or both."""
    if every == (name is not None):
        raise click.UsageError(f"give a job's NAME or --all (every job), not {'both' if every else 'neither'}")
    if name is not None:
        app.job(name)
        return name
    return EVERY_JOB


@click.command()
@click.argument("name", type=UTF8, required=False)
@click.option("--all", "every", is_flag=True, help="Every job, those added meanwhile too (a freeze), on every host.")
@click.option("--reason", default="", type=UTF8, help="Why, for the audit trail, `list` and the status page.")
@click.option("--until", type=UTF8, help="Resume by itself at this instant (ISO 8601; no offset: the job's zone).")
@click.option("--for", "for_", type=UTF8, help="Resume by itself after this long (e.g. 30m, 2h, 1d).")
@pass_app
def pause(app: App, name: str | None, every: bool, reason: str, until: str | None, for_: str | None) -> None:
    """Stop starting runs of NAME, or of every job with --all (its slots are recorded as skipped),
    until `resume`, or until the end given; at the end it resumes by itself and catches up by its policy.

    Times without an offset are in the job's zone, for --all in JOBS_TIMEZONE.
    """
    settings = app.load()
    target = job_or_all(app, name, every)
    zone = app.registry.jobs[target].schedule.zone if target != EVERY_JOB else settings.timezone
    now = wall_now()
    try:
        end = operations.pause_end(until, for_, zone, now)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise click.BadParameter(message, param_hint=f"--{field}") from None
    try:
        operations.set_paused(app.registry.jobs, app.store(), target, True, command_line_actor(), now, reason, end)
    except ValueError as exc:  # the reason
        raise click.BadParameter(str(exc).partition(": ")[2], param_hint="--reason") from None
    what = "every job (a freeze)" if target == EVERY_JOB else target
    click.echo(f"{what}: paused" + (f" until {end.isoformat(timespec='seconds')}" if end else " until `resume`"))


@click.command()
@click.argument("name", type=UTF8, required=False)
@click.option("--all", "every", is_flag=True, help="End the freeze of every job (`pause --all`).")
@click.option("--reason", default="", type=UTF8, help="Why, for the audit trail.")
@pass_app
def resume(app: App, name: str | None, every: bool, reason: str) -> None:
    """Start running NAME on its schedule again, or end the freeze of every job with --all;
    catch-up runs what the pause skipped, by each job's policy."""
    app.load()
    target = job_or_all(app, name, every)
    store = app.store()
    try:
        operations.set_paused(app.registry.jobs, store, target, False, command_line_actor(), wall_now(), reason)
    except operations.NotPaused:
        freeze = operations.freeze(store)
        if target == EVERY_JOB:
            click.echo("nothing is frozen")
        elif freeze is not None:  # it does not run all the same: say why, and what ends it
            by = f" by {freeze.by}" if freeze.by else ""
            click.echo(f"{target}: not paused on its own, but every job is frozen{by}: `resume --all` ends the freeze")
        else:
            click.echo(f"{target}: not paused")
        return
    except ValueError as exc:  # the reason
        raise click.BadParameter(str(exc).partition(": ")[2], param_hint="--reason") from None
    if target == EVERY_JOB:
        still = sorted(name for name in store.pauses() if name != EVERY_JOB)
        click.echo("every job: resumed" + (f"; still paused on their own: {', '.join(still)}" if still else ""))
    elif (freeze := operations.freeze(store)) is not None:
        by = f" by {freeze.by}" if freeze.by else ""
        click.echo(f"{target}: resumed, but every job is still frozen{by}: `resume --all` ends the freeze")
    else:
        click.echo(f"{target}: resumed")


@click.command()
@click.argument("target", metavar="RUN_ID|NAME", type=UTF8)
@click.option("--reason", default="", type=UTF8, help="Why, for the audit trail and the run's record.")
@click.option(
    "--wait",
    "wait_for",
    default=30.0,
    show_default=True,
    type=Seconds(0, 3600),
    help="Seconds to wait for the run to end (0: ask, and do not wait).",
)
@pass_app
def cancel(app: App, target: str, reason: str, wait_for: float) -> None:
    """Stop run RUN_ID, or the run of job NAME going now, wherever it runs: SIGTERM (raised in the job,
    so its traceback shows where it was), SIGKILL after the grace. It is recorded `cancelled`, is not
    retried, and settles its slot (a job that comes after it is blocked). Exit 0 once it has ended
    cancelled, 1 if it ended otherwise or is still going after --wait, 2 if there is nothing to cancel."""
    settings = app.load()
    store = app.store()
    actor = command_line_actor()
    try:
        record, request = operations.cancel(app.registry.jobs, store, target, actor, wall_now(), reason)
    except operations.CannotCancel as exc:
        click.echo(f"jobhost: {exc}", err=True)
        sys.exit(2)
    except ValueError as exc:  # the reason
        raise click.BadParameter(str(exc).partition(": ")[2], param_hint="--reason") from None
    if isinstance(record, OneOff):
        click.echo(
            f"one-off run {record.run_id} of {record.job} at {record.at.isoformat()}: cancelled; it never starts"
        )
        return
    if settings.status_file is not None and record.host == settings.host.hostname:
        nudge_loop(settings.status_file)
    said = "" if request.asked_by == actor and request.reason == reason else f" (asked before, by {request.asked_by})"
    click.echo(f"run {record.run_id} of {record.job}: cancel asked{said}; the host {record.host or '?'} stops it")
    if wait_for == 0:
        return
    ended = wait_until_ended(store, record.run_id, wait_for)
    if ended is None:
        click.echo(f"run {record.run_id} is still going after {wait_for:g} s; its host stops it when it next looks")
        sys.exit(1)
    click.echo(f"run {record.run_id} of {record.job}: {ended.status}" + (f" ({ended.reason})" if ended.reason else ""))
    sys.exit(0 if ended.status == RunStatus.CANCELLED else 1)


def nudge_loop(status_file: Path) -> None:
    """Have the loop on this machine look at the requests now, not at its next tick."""
    status = read_status(status_file)
    if status is not None and status.alive_loop:
        with contextlib.suppress(OSError):  # gone meanwhile: the next loop looks at its start
            os.kill(status.pid, NUDGE_SIGNAL)


def wait_until_ended(store: StateStore, run_id: str, seconds: float) -> RunRecord | None:
    """The run's record once it has ended, within `seconds`; None if it has not by then."""
    deadline = time.monotonic() + seconds
    while True:
        record = store.run(run_id)
        if record is not None and record.status.ended:
            return record
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


@click.command("migrate-state")
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
