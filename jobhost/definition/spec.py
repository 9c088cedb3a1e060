"""JobSpec: one registered job, the function, its schedule and its validated options."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobhost.definition.schedules import Schedule
from jobhost.monitors import DEFAULT_MARGIN

CATCHUP = ("latest", "all", "none")
OVERLAP = ("skip", "queue", "allow")
ISOLATION = ("process", "thread")
DEFAULT_TIMEOUT = 3600.0
DEFAULT_CATCHUP_WINDOW = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One registered job: the function, its schedule and its validated options."""

    name: str
    func: Callable[..., Any]
    schedule: Schedule
    timeout: float | None = DEFAULT_TIMEOUT
    retries: int = 0
    retry_delay: float = 60.0
    catchup: str = "latest"
    overlap: str = "skip"
    after: tuple[str, ...] = ()
    isolation: str = "process"
    catchup_window: float = DEFAULT_CATCHUP_WINDOW
    monitor: str | None = None  # the Sentry Crons monitor slug; None: no monitor
    checkin_margin: float = DEFAULT_MARGIN
    report_each_attempt: bool = False  # a Sentry event for every failed attempt, not only the last
    wants_slot: bool = False
    wants_data_dir: bool = False
    file: str = "?"
    line: int = 0

    def call(self, slot: dt.datetime, data_dir: Path | None = None) -> object:
        """Call the function, with `slot` and `data_dir` (the host's JOBS_DATA_DIR) if it asks for them."""
        given: dict[str, object] = {"slot": slot} if self.wants_slot else {}
        if self.wants_data_dir:
            if data_dir is None:
                raise RuntimeError(f"job {self.name!r} takes `data_dir`, but this host was given no data directory")
            given["data_dir"] = data_dir
        return self.func(**given)

    def options(self) -> dict[str, Any]:
        """The options as plain data, for `list --json`."""
        return {
            "timeout": self.timeout,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "catchup": self.catchup,
            "overlap": self.overlap,
            "after": list(self.after),
            "isolation": self.isolation,
            "catchup_window": self.catchup_window,
            "monitor": self.monitor,
            "checkin_margin": self.checkin_margin,
            "report_each_attempt": self.report_each_attempt,
        }


OPTION_NAMES = {
    "timeout",
    "retries",
    "retry_delay",
    "catchup",
    "catchup_window",
    "overlap",
    "after",
    "isolation",
    "monitor",
    "checkin_margin",
    "report_each_attempt",
}
