"""`plan`: what a deploy of this checkout changes, said before it does (jobhost.planning).

What runs now is read from the code that runs it: `--against DIR` names a release (a directory
with its own `jobs.py`, as the Ansible role keeps under releases/) or a jobs directory, and its
`list --json`, made by that code, says its jobs. Without it, the state store's history alone tells
which jobs there were.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from jobhost.actors import command_line_actor
from jobhost.app.bootstrap import App, pass_app
from jobhost.app.params import UTF8
from jobhost.clock import now as wall_now
from jobhost.outcomes import RunStatus
from jobhost.store import StateStore

LIST_TIMEOUT = 120  # seconds the other code may take to import its jobs and list them


def runs_on_this_host(store: StateStore, hostname: str) -> tuple[dict[str, list[dt.datetime]], ...]:
    """The slots of this host's runs recorded running, by job: those whose process is gone (killed
    with the host: the next start records them abandoned and catches them up), and those going (with
    a log file, a deploy lets them finish under the release they started in)."""
    from jobhost.runs.processes import run_process_alive

    dead: dict[str, list[dt.datetime]] = {}
    going: dict[str, list[dt.datetime]] = {}
    for record in store.running(hostname):
        if record.status == RunStatus.RUNNING:
            alive = record.pid is not None and run_process_alive(record.pid)
            (going if alive else dead).setdefault(record.job, []).append(record.slot)
    return dead, going


def running_jobs(against: Path) -> list[dict[str, Any]]:
    """The jobs of the release or jobs directory `against`, as its own `list --json` says them, once
    its own `check` passed (a module that does not import would be a job it seems to have lost)."""
    env = {**os.environ}
    if (against / "jobs.py").is_file():  # a release: its own code, its own jobs/
        python = against / ".venv" / "bin" / "python"
        command = [str(python if python.exists() else sys.executable), str(against / "jobs.py")]
        env.pop("JOBS_DIR", None)
    elif (against / "__init__.py").is_file():  # a jobs directory (a package), read by this code
        command = [sys.executable, str(Path(sys.argv[0]).resolve())]
        env["JOBS_DIR"] = str(against)
    else:
        raise click.BadParameter(
            f"{against} is neither a release (with a jobs.py) nor a jobs directory (a package, with __init__.py)",
            param_hint="--against",
        )
    for args in (["check"], ["list", "--json"]):
        try:
            done = subprocess.run(
                [*command, *args], env=env, capture_output=True, text=True, timeout=LIST_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise click.ClickException(f"the jobs of {against} took more than {LIST_TIMEOUT} s to {args[0]}") from None
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no message"])[-1]
            raise click.ClickException(f"the jobs of {against} do not {args[0]} (exit {done.returncode}): {said}")
    return json.loads(done.stdout)


@click.command()
@click.option("--against", type=click.Path(path_type=Path), help="The release (or jobs directory) that runs now.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, a job an item, for scripts.")
@click.option("--job", "only", type=UTF8, help="Only this job.")
@click.option(
    "--hold-catchup",
    is_flag=True,
    help="Decide now that the next start gives the catch-up runs listed to a person (recorded missed, "
    '"held at deploy by ..."), instead of running them.',
)
@pass_app
def plan(app: App, against: Path | None, as_json: bool, only: str | None, hold_catchup: bool) -> None:
    """What a deploy of this checkout changes: jobs added, removed, renamed (the same function, a new
    name) or rescheduled, with their next slots before and after; what catch-up does at the next
    start (the slots it runs and those it gives up); the Sentry monitors made, changed or left."""
    from jobhost import planning  # the catch-up decision is the engine's: only this command loads it

    settings = app.load(strict=True)  # a checkout with a bad job is no plan: `check` says what is wrong
    running = running_jobs(against.resolve()) if against is not None else None
    store = app.store()
    dead, going = runs_on_this_host(store, settings.host.hostname)
    try:
        plans = planning.plan(app.registry.jobs, store, running, wall_now(), dead, going)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if only is not None:
        plans = [p for p in plans if only in (p.name, p.was)]
        if not plans:
            raise click.UsageError(f"no job named {only!r} in this checkout, the running code or the history")
    if hold_catchup:
        store, now = app.store(), wall_now()
        for held in planning.hold(store, plans, command_line_actor(), now):
            click.echo(f"held: the next start gives up the {len(held.runs)} catch-up run(s) of {held.name}", err=True)
        plans = planning.plan(app.registry.jobs, store, running, now, dead, going)  # as the start will now do it
        if only is not None:
            plans = [p for p in plans if only in (p.name, p.was)]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in plans], indent=2))
        return
    for line in planning.describe(plans, known=running is not None):
        click.echo(line)
