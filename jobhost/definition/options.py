"""The checks of what `@job` is given: each option's value, and the function's own parameters.

Each check returns the value a JobSpec keeps, or raises ValueError with a message that
names the option, so that `@job` can report every bad option of a job at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from jobhost.definition.durations import parse_duration

GIVEN = ("slot", "data_dir")  # parameters the host fills in, by name: the slot, and JOBS_DATA_DIR


Check = Callable[[object, str], object]  # (the value given, the option's name) -> the value kept


def timeout(value: object, what: str) -> float | None:
    """A duration, or None for no limit."""
    return None if value is None else parse_duration(value, what=what)


def duration(value: object, what: str) -> float:
    return parse_duration(value, what=what)


def duration_or_zero(value: object, what: str) -> float:
    return parse_duration(value, what=what, allow_zero=True)


def whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number of at least 0, not {value!r}")
    return value


def flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be True or False, not {value!r}")
    return value


def one_of(choices: tuple[str, ...]) -> Check:
    """The check of an option that takes one of `choices`."""

    def choice(value: object, what: str) -> str:
        if value not in choices:
            raise ValueError(f"{what}={value!r} is not one of: {', '.join(repr(c) for c in choices)}")
        return str(value)

    return choice


def given_parameters(func: Callable[..., Any]) -> frozenset[str] | str:
    """Which of the parameters the host gives (`slot`, `data_dir`) the function takes; a message when
    it needs arguments we cannot give."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return frozenset()
    for parameter in parameters.values():
        required = parameter.default is inspect.Parameter.empty and parameter.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if required and parameter.name not in GIVEN:
            return (
                f"the function's parameter {parameter.name!r} has no default: a scheduled run could give it no "
                "value. Give it one (a run by hand may set another: `run --param`), or name it `slot` or `data_dir`"
            )
    return frozenset(GIVEN) & set(parameters)
