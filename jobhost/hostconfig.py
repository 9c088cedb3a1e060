"""What the deployment tells the engine's loop, apart from the loop itself: the commands
that only read history load this, not the loop and everything it runs jobs with."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class HostConfig:
    """What the deployment tells the engine (read from settings by configuration/)."""

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
    token: str | None = None  # the POST endpoints' bearer token; without one they answer 403
    names: tuple[str, ...] = ()  # what a request's Host may name besides the bound address
