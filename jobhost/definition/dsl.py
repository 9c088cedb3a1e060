"""The `schedule` DSL (``every(10).minutes``) with its mistakes kept for `@job` to report."""

from __future__ import annotations

from typing import Any

import schedule as schedule_lib

_UNITS = frozenset(
    {"second", "seconds", "minute", "minutes", "hour", "hours", "day", "days", "week", "weeks"}
    | {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
)


class CheckedJob(schedule_lib.Job):
    """A `schedule` Job whose DSL mistakes (``.at("25:00")``, ``every(2).monday``) are kept for
    ``@job`` to report with the job's name, file and line, instead of stopping the import of the
    whole module at the first one. It keeps the chain as the person wrote it
    (``every().day.at('25:00')``), to echo it in the error."""

    error: str | None = None
    written = "every()"  # how the chain began; Registry.every sets it
    _GUARDED = frozenset({"at", "to", "until", "tag"})
    _depth = 0  # units read inside the library's own units (.day reads .days) are not the person's

    def __getattribute__(self, name: str) -> Any:
        if name in _UNITS:
            depth = object.__getattribute__(self, "_depth")
            object.__setattr__(self, "_depth", depth + 1)
            try:
                value = super().__getattribute__(name)
            except (schedule_lib.ScheduleError, ValueError, TypeError) as exc:  # a unit property refused
                if depth == 0:
                    self._wrote(f".{name}")
                    self._keep(str(exc))
                return self
            finally:
                object.__setattr__(self, "_depth", depth)
            if depth == 0:
                self._wrote(f".{name}")
            return value
        value = super().__getattribute__(name)
        if name not in CheckedJob._GUARDED:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._wrote(f".{name}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})")
            try:
                return value(*args, **kwargs)
            except (schedule_lib.ScheduleError, ValueError, TypeError) as exc:
                self._keep(str(exc).replace("({} is not", "(the hour is not"))  # schedule 1.2.2 leaves {} unfilled
                return self

        return guarded

    def _wrote(self, part: str) -> None:
        if object.__getattribute__(self, "error") is None:  # up to the first mistake
            object.__setattr__(self, "written", object.__getattribute__(self, "written") + part)

    def _keep(self, message: str) -> None:
        if object.__getattribute__(self, "error") is None:
            object.__setattr__(self, "error", message)
