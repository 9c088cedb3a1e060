"""JobSpec: one registered job, the function, its schedule and its validated options.

The options `@job` takes are the JobSpec fields made with `option()`, each with its
default and its check: the one list that the decorator's checks, the names it accepts
and `options()` (what `list --json` shows) are read from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobhost.definition.options import Check, duration, duration_or_zero, flag, one_of, timeout, whole
from jobhost.definition.schedules import Schedule

CATCHUP = ("latest", "all", "none")
OVERLAP = ("skip", "queue", "allow")
ISOLATION = ("process", "thread")
DEFAULT_TIMEOUT = 3600.0
DEFAULT_CATCHUP_WINDOW = 7 * 86400.0
DEFAULT_MARGIN = 300.0  # seconds a check-in may come after its slot (queueing behind busy workers)


def option(default: object, check: Check | None) -> Any:
    """A JobSpec field that `@job` takes as an option, with its default and the check of a value
    given. None for the two checked elsewhere: `after` (names the registry resolves once every job
    is known) and `monitor` (the slug rules of Sentry's monitors, see `JobRules`)."""
    return dataclasses.field(default=default, metadata={"option": check})


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One registered job: the function, its schedule and its validated options."""

    name: str
    func: Callable[..., Any]
    schedule: Schedule
    timeout: float | None = option(DEFAULT_TIMEOUT, timeout)
    retries: int = option(0, whole)
    retry_delay: float = option(60.0, duration_or_zero)
    catchup: str = option("latest", one_of(CATCHUP))
    overlap: str = option("skip", one_of(OVERLAP))
    after: tuple[str, ...] = option((), None)
    isolation: str = option("process", one_of(ISOLATION))
    catchup_window: float = option(DEFAULT_CATCHUP_WINDOW, duration)
    monitor: str | None = option(None, None)  # the Sentry Crons monitor slug; None: no monitor
    checkin_margin: float = option(DEFAULT_MARGIN, duration)
    report_each_attempt: bool = option(False, flag)  # a Sentry event for every failed attempt, not only the last
    wants_slot: bool = False
    wants_data_dir: bool = False
    file: str = "?"
    line: int = 0

    def call(
        self, slot: dt.datetime, data_dir: Path | None = None, arguments: Mapping[str, object] | None = None
    ) -> object:
        """Call the function, with `slot` and `data_dir` (the host's JOBS_DATA_DIR) if it asks for
        them, and the `arguments` a person gave the run (jobhost.definition.parameters)."""
        given: dict[str, object] = dict(arguments or {})
        if self.wants_slot:
            given["slot"] = slot
        if self.wants_data_dir:
            if data_dir is None:
                raise RuntimeError(f"job {self.name!r} takes `data_dir`, but this host was given no data directory")
            given["data_dir"] = data_dir
        return self.func(**given)

    def options(self) -> dict[str, Any]:
        """The options as plain data, for `list --json`."""
        shown = {option.name: getattr(self, option.name) for option in OPTIONS}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in shown.items()}


@dataclass(frozen=True)
class Option:
    """One option of `@job`, as the JobSpec field declares it."""

    name: str
    default: object
    check: Check | None


OPTIONS = tuple(
    Option(f.name, f.default, f.metadata["option"]) for f in dataclasses.fields(JobSpec) if "option" in f.metadata
)
OPTION_NAMES = frozenset(option.name for option in OPTIONS)
