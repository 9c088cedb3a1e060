"""The errors jobhost raises on purpose; each message says what to do instead."""

from __future__ import annotations

import functools
import os


class JobhostError(Exception):
    """Base of every error jobhost raises on purpose."""


class JobDefinitionError(JobhostError):
    """A job is defined wrongly: bad option, bad schedule, duplicate name.

    Carries where the definition is, so `check` can print `file:line`.
    """

    def __init__(self, message: str, *, job: str | None = None, file: str | None = None, line: int | None = None):
        self.problem = message
        self.job = job
        self.file = file
        self.line = line
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file else ""
        who = f"job {self.job!r}: " if self.job else ""
        return f"{where}{who}{self.problem}"


class ScheduleError(JobhostError):
    """A schedule cannot be turned into stable slots (raised without a location;
    the registry adds the job, file and line)."""


class SettingError(JobhostError):
    """A setting (environment variable) has a value the host cannot use."""

    def __init__(self, variable: str, value: str | None, accepts: str):
        """`value` None: a secret, left out of the message (it ends up in logs and deploy output)."""
        self.variable = variable
        shown = f"{variable}={value!r}" if value is not None else f"{variable} (value not shown: it may hold a secret)"
        super().__init__(f"{shown} is not valid: {accepts}")


class UnknownJobError(JobhostError):
    """A command named a job that is not registered."""

    def __init__(self, name: str, known: list[str]):
        listing = ", ".join(sorted(known)) or "(no jobs are registered)"
        super().__init__(f"no job named {name!r}; the jobs are: {listing}")


class StoreError(JobhostError):
    """The state store cannot be opened or used."""


class LoopRunning(StoreError):
    """Another forever loop holds the state store's lock: this one must not start, nor speak for it."""


@functools.lru_cache(maxsize=256)  # the same few files, for every job they define
def display_path(path: str) -> str:
    """A file name as a person at the repository would write it (relative when inside)."""
    try:
        shown = os.path.relpath(path)
    except (ValueError, OSError):  # OSError: the working directory was removed (getcwd fails)
        return path
    return path if shown.startswith("..") else shown


class StoreUnavailable(StoreError):
    """The state store cannot be reached just now (a database restart, a network partition):
    the host waits and tries again rather than treating it as a fault of its own."""

    began = "store_unreachable"  # the events an outage of this kind is logged with, once each
    ended = "store_reachable"


class StoreFailing(StoreUnavailable):
    """The state store answers but cannot keep what it is given (a full or read-only disk, an I/O
    error, a damaged file, a file deleted or replaced under the host): held and tried again like an
    unreachable one, so no slot is lost, and told apart in the log."""

    began = "store_failing"
    ended = "store_recovered"


class HostStopping(JobhostError):
    """The host is stopping: it starts nothing new (a run asked for over HTTP is refused)."""
