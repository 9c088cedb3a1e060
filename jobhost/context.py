"""The context of one run, carried by every log line that belongs to it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# A run's parameters as it keeps them: plain JSON by name (jobhost.definition.parameters).
Params = Mapping[str, "str | int | float | bool | None"]


@dataclass(frozen=True)
class RunContext:
    """Who a log line belongs to: the contract's `job`, `run_id`, `slot`, `attempt`; and the
    parameters a person gave the run, if any (None: the function's defaults)."""

    job: str
    run_id: str
    slot: dt.datetime
    attempt: int = 1
    params: Params | None = None

    def fields(self) -> dict[str, Any]:
        found = {"job": self.job, "run_id": self.run_id, "slot": self.slot.isoformat(), "attempt": self.attempt}
        if self.params is not None:
            found["params"] = dict(self.params)
        return found

    def apply(self, record: logging.LogRecord) -> None:
        """Put the run's fields on `record`; a job's own `extra` of the same name is kept as extra_<name>."""
        for key, value in self.fields().items():
            existing = getattr(record, key, value)
            if existing != value:
                setattr(record, f"extra_{key}", existing)
            setattr(record, key, value)


current_run: ContextVar[RunContext | None] = ContextVar("jobhost_current_run", default=None)


class RunContextFilter(logging.Filter):
    """Add the current run's fields to records made inside it (thread-isolated runs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_run.get()
        if context is not None and getattr(record, "run_id", None) is None:
            context.apply(record)
        return True
