"""What the commands that run jobs do with the engine: the forever loop (with its HTTP server
beside it), one run in the foreground, a backfill.

Only those commands import this module, at their start, and with it the loop, the runners and
the observers; the commands that only read history never do.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import click

from jobhost import operations
from jobhost.actors import command_line_actor
from jobhost.app.bootstrap import App
from jobhost.clock import now as wall_now
from jobhost.config import HostSettings
from jobhost.context import Params
from jobhost.definition.schedules import count_slots, slots_between
from jobhost.definition.spec import JobSpec
from jobhost.engine.backfill import backfill
from jobhost.engine.foreground import ForegroundRun
from jobhost.engine.handover import KeeperSetup
from jobhost.engine.host import Host
from jobhost.errors import LoopRunning, StoreError
from jobhost.hoststatus import StatusFile, file_identity
from jobhost.observe.events import Lifecycle, Reporter
from jobhost.outcomes import Outcome, RunStatus
from jobhost.store import StateStore, open_store
from jobhost.store.model import Action
from jobhost.store.piped import PipedStore


def make_host(
    settings: HostSettings,
    jobs: dict[str, JobSpec],
    store: StateStore,
    *observers: Reporter,
    status: StatusFile | None = None,
) -> Host:
    """The engine's loop for these jobs, observed by the deployment's reporters and `observers`;
    with a log file, its runs outlive a restart (each has a keeper that can carry it on)."""
    keeper = None
    if settings.log_alone is not None:
        keeper = KeeperSetup(lambda: PipedStore(settings.state_url, settings.base_dir), settings.log_alone)
    lifecycle = Lifecycle([*settings.reporters(), *observers])
    return Host(jobs, store, settings.host, lifecycle, status=status, keeper=keeper)


def make_foreground(settings: HostSettings, jobs: dict[str, JobSpec], store: StateStore) -> ForegroundRun:
    """One run at a time in the foreground (`run`, `backfill`), observed by the deployment's reporters."""
    return ForegroundRun(jobs, store, settings.host, Lifecycle(list(settings.reporters())))


def serve_forever(app: App) -> int:
    """The forever loop: settings and jobs (strictly: one bad job and nothing starts), the store
    (waited for), the loop's lock on it, the store's own check, then the loop; its exit status."""
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
        return _serve(app, settings, store)
    finally:
        store.close()


def _serve(app: App, settings: HostSettings, store: StateStore) -> int:
    """The forever loop, with its HTTP server beside it when JOBS_HTTP_ADDR asks for one."""
    jobs = app.registry.jobs
    if settings.http is None:
        return make_host(settings, jobs, store, status=app.status).run_forever()
    from jobhost.web.server import WebServer  # only a host that serves HTTP loads the web stack

    web = WebServer(settings.http, jobs, lambda: open_store(settings.state_url, settings.base_dir), settings.timezone)
    host = make_host(settings, jobs, store, *web.observers(), status=app.status)
    try:
        web.start(host)
    except OSError as exc:
        address = f"{settings.http.host}:{settings.http.port}"
        app.fail(f"cannot serve HTTP on {address} (JOBS_HTTP_ADDR): {exc.strerror or exc}; nothing was started", 2)
    try:
        return host.run_forever()
    finally:
        web.stop()


def run_once(app: App, spec: JobSpec, slot: dt.datetime, params: Params | None = None) -> RunStatus:
    """`run`: one run of `spec` for `slot`, now, in the foreground, with the `params` a person gave
    it (checked); how it ended."""
    assert app.settings is not None
    store = app.store()
    actor = command_line_actor()
    detail: dict[str, object] = {"slot": slot.isoformat()}
    if params is not None:
        detail["params"] = dict(params)
    operations.record_action(store, Action(wall_now(), actor, "run", spec.name, "", detail))
    host = make_foreground(app.settings, app.registry.jobs, store)
    try:
        return host.run(spec, slot, requested_by=actor, params=params).status
    finally:
        host.close()
        store.close()


def backfill_range(app: App, spec: JobSpec, first: dt.datetime, last: dt.datetime, max_slots: int) -> RunStatus:
    """`backfill`: every slot of `spec` from `first` to `last` that has not succeeded, in order, with
    progress on the terminal; SUCCEEDED if every one did. A range of more than `max_slots` slots is
    refused before anything runs."""
    assert app.settings is not None
    if count_slots(spec.schedule, first, last, max_slots) is None:
        raise click.BadParameter(
            f"the range holds more than {max_slots:,} slots of {spec.name} ({spec.schedule.describe()}); "
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
        click.echo(f"backfill {spec.name}: {total} slot(s) to run, {len(done)} already succeeded", err=True)

        # Progress goes to the terminal's stderr, kept aside before the host turns
        # descriptors 1 and 2 into its stray-output pipe.
        progress = open(os.dup(2), "w", buffering=1)  # noqa: SIM115 - closed with the process

        def report(index: int, total: int, slot: dt.datetime, outcome: Outcome) -> None:
            reason = f": {outcome.reason}" if outcome.reason else ""
            progress.write(f"[{index}/{total}] {slot.isoformat()} {outcome.status}{reason}\n")

        actor = command_line_actor()
        detail = {"from": first.isoformat(), "to": last.isoformat(), "slots": total}
        operations.record_action(store, Action(wall_now(), actor, "backfill", spec.name, "", detail))
        host = make_foreground(app.settings, app.registry.jobs, store)
        try:
            status = backfill(host, spec, missing(), total, report, actor)
        finally:
            host.close()
    finally:
        store.close()
    if status == RunStatus.INTERRUPTED:
        progress.write("backfill stopped; run the same command again to go on\n")
    return status
