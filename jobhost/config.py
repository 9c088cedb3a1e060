"""The deployment contract: what configuration/ hands the engine, built from its settings.

`HostSettings` is all a command needs from the deployment; `HostConfig` is the part the
forever loop itself reads, `HttpConfig` where it serves HTTP. Nothing here imports the loop,
so the commands that only read history pay for none of it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from jobhost.observe.events import Reporter


@dataclass(frozen=True)
class HostConfig:
    """What the deployment tells the engine's loop (read from settings by configuration/)."""

    max_workers: int = 4
    stop_grace: float = 30.0
    hostname: str = field(default_factory=socket.gethostname)
    heartbeat_interval: float = 30.0  # the loop records a heartbeat this often, and sleeps no longer
    # Turn descriptors 1 and 2 into a pipe the loop reads, so that output no run
    # captures (a thread job's subprocess, native code) becomes log lines too. Only
    # when the log handler writes through a descriptor of its own.
    capture_stray_output: bool = False
    history_days: float = 90.0  # run history older than this is pruned, a batch at a time
    # Where each run's process leaves its outcome until the host has recorded it, so a
    # host killed between reaping a run and recording it loses nothing (None: not kept).
    results_dir: Path | None = None
    # Seconds a claim is held without renewal before another host may take its run over;
    # the loop renews every lease / 3.
    lease: float = 60.0
    # A slot's run is claimed, recorded and forked this long before its instant, and its
    # process calls the job at the instant: the job starts on time, not after that work.
    prepare_ahead: float = 0.1
    # The directory jobs write their files in (JOBS_DATA_DIR), given to a job that takes `data_dir`.
    data_dir: Path | None = None


@dataclass(frozen=True)
class HttpConfig:
    """Where the host serves its status page, health, metrics and API (None in HostSettings: nowhere)."""

    host: str
    port: int
    token: str | None = None  # the POST endpoints' bearer token; without any token they answer 403
    names: tuple[str, ...] = ()  # what a request's Host may name besides the bound address
    named_tokens: tuple[tuple[str, str], ...] = ()  # (name, token): each person's or tool's own
    sentry_issues: str | None = None  # where a failed run's page links to, `{run_id}` filled in (Sentry on)

    SINGLE_TOKEN_NAME = "http token"  # who an action with the single JOBS_HTTP_TOKEN is recorded under

    def holders(self) -> tuple[tuple[str, str], ...]:
        """Every accepted bearer token with the name its actions are recorded under."""
        single = ((self.SINGLE_TOKEN_NAME, self.token),) if self.token is not None else ()
        return (*self.named_tokens, *single)

    @property
    def actions(self) -> bool:
        """Whether the POST endpoints act at all (a token is set)."""
        return bool(self.holders())


@dataclass(frozen=True)
class HostSettings:
    """What a deployment hands the engine (built by configuration/ from the environment)."""

    state_url: str
    base_dir: Path
    jobs_dir: Path
    timezone: ZoneInfo
    host: HostConfig = field(default_factory=HostConfig)
    # What observes runs besides the log (Sentry): made only for the commands that run jobs.
    reporters: Callable[[], Sequence[Reporter]] = tuple
    http: HttpConfig | None = None  # the forever loop serves its status page and API there
    status_file: Path | None = None  # where the forever loop says what it does, for `health`
    import_timeout: float | None = None  # seconds one job module may take to import (None: no bound)
    # The release (commit) of this code, found only by the commands that show it (it may run git).
    release: Callable[[], str | None] = lambda: None
    # Points logging at the log file alone, in a process forked from the loop (a run's keeper, which
    # outlives the loop): None where there is no log file, and runs then end with the loop.
    log_alone: Callable[[], None] | None = None


class Configure(Protocol):
    """How a command gets its HostSettings: configuration/ reads the settings and sets up logging
    (on stdout when the command's output is the log; the log file only for the forever `loop`).
    A bad setting raises SettingError."""

    def __call__(self, *, log_to_stdout: bool, loop: bool = False) -> HostSettings: ...


@dataclass(frozen=True)
class StartWitnesses:
    """Who hears of a forever loop that refuses to start, found from the environment even when a
    setting is bad: the status file `health` reads, and a report (Sentry) of the reason and problems.
    Also how a command whose output is the log says a bad setting, when logging could not be set up."""

    status_file: Path | None = None
    hostname: str = ""
    heartbeat_interval: float = 30.0
    report: Callable[[str, Sequence[str]], None] | None = None
    # (message, event) as a line of the log stream, in the format configuration/ owns (None: plain
    # words on stderr, as the other commands say them).
    log_line: Callable[[str, str], str] | None = None
