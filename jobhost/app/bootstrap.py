"""What every command starts with: the deployment's settings, the jobs, the state store, and the
one way a command fails (a line saying why, an exit status; the forever loop also records that it
refused to start).

Each command loads only as far as it needs: `health` reads no job, and only the forever loop waits
for a state store out of reach.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import click

from jobhost import default_registry
from jobhost.app.datadir import unusable
from jobhost.config import Configure, HostSettings, StartWitnesses
from jobhost.definition.discovery import discover
from jobhost.definition.durations import format_duration
from jobhost.definition.registry import Registry
from jobhost.definition.spec import JobSpec
from jobhost.errors import SettingError, StoreError, StoreUnavailable, UnknownJobError, display_path
from jobhost.hoststatus import State, StatusFile, file_identity, read_status
from jobhost.store import StateStore, open_store, sqlite_path

logger = logging.getLogger("jobhost")


@dataclass
class App:
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
        elif not before_logging:
            logger.critical(message, extra={"event": "host_start_failed"})
        elif (log_line := self.witnesses().log_line) is not None:
            # Logging is not set up (a setting is bad), but the stream must keep its format.
            click.echo(log_line(message, "host_start_failed"))
        else:
            click.echo(f"jobhost: {message}", err=True)


pass_app = click.make_pass_decorator(App)
