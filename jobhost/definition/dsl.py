"""The `schedule` DSL (``every(10).minutes``) with its mistakes kept for `@job` to report."""

from __future__ import annotations

from typing import Any

import schedule as schedule_lib


class CheckedJob(schedule_lib.Job):
    """A `schedule` Job whose DSL mistakes (``.at("25:00")``, ``every(2).monday``) are kept for
    ``@job`` to report with the job's name, file and line, instead of stopping the import of the
    whole module at the first one."""

    error: str | None = None
    _GUARDED = frozenset({"at", "to", "until", "tag"})

    def __getattribute__(self, name: str) -> Any:
        try:
            value = super().__getattribute__(name)
        except (schedule_lib.ScheduleError, ValueError, TypeError) as exc:  # a unit property refused
            self._keep(f".{name}: {exc}")
            return self
        if name not in CheckedJob._GUARDED:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except (schedule_lib.ScheduleError, ValueError, TypeError) as exc:
                said = str(exc).replace("({} is not", "(the hour is not")  # schedule 1.2.2 leaves {} unfilled
                shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
                self._keep(f".{name}({shown}): {said}")
                return self

        return guarded

    def _keep(self, message: str) -> None:
        if object.__getattribute__(self, "error") is None:
            object.__setattr__(self, "error", message)
