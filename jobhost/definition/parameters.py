"""A run's parameters: the keyword arguments a person gives a run by hand (`run --param`, the API).

They are checked against the job function's signature and converted to each parameter's
annotated type (or its default's, without an annotation). A run keeps them as plain JSON
(`stored`), the form the store, the log lines and Sentry get, and its process converts them
again from that form: the same text always makes the same value. A scheduled run has none:
the function's defaults apply, which is why a job's parameters must all have one.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobhost.definition.options import GIVEN

JSONValue = str | int | float | bool | None

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
MAX_PARAMS = 100  # parameters one run may be given
MAX_TEXT = 10_000  # characters of one parameter's value


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false (also yes/no, on/off, 1/0)")


_WHOLE = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would take "١٢٣" and "1_000" too
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _to_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError("a whole number, such as 42")


def _to_float(value: object) -> float:
    found: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        found = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        found = float(value.strip())
    if found is None or not math.isfinite(found):  # NaN and infinity are no JSON: no record could keep them
        raise ValueError("a finite number, such as 0.5")
    return found


def _to_decimal(value: object) -> decimal.Decimal:
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            found = decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            pass
        else:
            if found.is_finite():
                return found
    raise ValueError("a decimal number, such as 12.50 (in JSON, as a string, so no digit is lost)")


def _from_text(parse: Callable[[str], Any], expected: str) -> Callable[[object], Any]:
    """A converter of text only (JSON has no date): `parse` of the stripped text, else what is expected."""

    def convert(value: object) -> Any:
        if isinstance(value, str):
            try:
                return parse(value.strip())
            except ValueError:
                pass
        raise ValueError(expected)

    return convert


_to_date = _from_text(dt.date.fromisoformat, "a date, ISO 8601, such as 2026-11-30")
_to_datetime = _from_text(
    dt.datetime.fromisoformat, "a date and time, ISO 8601, such as 2026-11-30T06:00 or 2026-11-30T06:00+01:00"
)


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("text (in JSON, a string)")


def _to_path(value: object) -> Path:
    if isinstance(value, str) and value.strip() and "\0" not in value:
        return Path(value)
    raise ValueError("a path")


# The types a parameter may be given as text, with what each accepts. bool before int: a bool is an int.
CONVERTERS: dict[type, Callable[[object], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    decimal.Decimal: _to_decimal,
    dt.datetime: _to_datetime,  # before date: a datetime is a date
    dt.date: _to_date,
    str: _to_str,
    Path: _to_path,
}


@dataclass(frozen=True)
class Parameter:
    """One parameter a person may give a job's run: its name, its type, and the default a scheduled run uses."""

    name: str
    kind: type | None  # None: no annotation and a default of None; the value is kept as given (text)
    default: Any
    optional: bool  # None is a value it takes (`X | None`, or a default of None)
    unconvertible: str | None = None  # why no value can be given for it by hand (its annotation), if so

    @property
    def type_name(self) -> str:
        names: dict[type, str] = {dt.date: "date", dt.datetime: "datetime"}
        return "text" if self.kind is None else names.get(self.kind, self.kind.__name__)

    def as_json(self) -> dict[str, JSONValue]:
        """For the page's form and `/api/jobs/NAME`."""
        return {"name": self.name, "type": self.type_name, "default": stored_value(self.default)}

    def convert(self, value: object) -> Any:
        """The value as the function gets it; ValueError saying what is expected."""
        if self.unconvertible is not None:
            raise ValueError(self.unconvertible)
        if value is None or (self.optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if self.optional:
                return None
            article = "an" if self.type_name[0] in "aeiou" else "a"
            raise ValueError(f"{article} {self.type_name} (this parameter takes no none)")
        if isinstance(value, (list, dict)):
            raise ValueError(f"one {self.type_name}, not a list or an object")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT} characters")
        if self.kind is None:
            return value if isinstance(value, str) else stored_value(value)
        return CONVERTERS[self.kind](value)


def _kind(annotation: object, default: object) -> tuple[type | None, bool]:
    """The type to convert to, and whether None is allowed; TypeError for a type we cannot convert."""
    optional = default is None
    if annotation is inspect.Parameter.empty:
        if default is None:
            return None, True
        annotation = type(default)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = optional or len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"{annotation} is a union of several types")
        annotation = args[0]
    if annotation is typing.Any:
        return None, optional
    if not isinstance(annotation, type) or annotation not in CONVERTERS:
        known = ", ".join(sorted(getattr(t, "__name__", str(t)) for t in CONVERTERS))
        shown = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
        raise TypeError(f"its type {shown or annotation} is not one a run's parameter is made as ({known})")
    return annotation, optional


@functools.cache
def parameters(func: Callable[..., Any]) -> tuple[Mapping[str, Parameter], bool]:
    """The parameters a person may give `func` by name (those the host gives left out), and whether
    it takes any other name too (`**kwargs`: kept as given). Read once a function: `list` and the
    status page describe every job's parameters at each look, and a signature does not change."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return {}, False
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: go by the defaults
        hints = {}
    found, open_ended = {}, False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
            continue
        if parameter.name in GIVEN or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.POSITIONAL_ONLY,
        ):
            continue
        annotation = hints.get(parameter.name, parameter.annotation)
        try:
            kind, optional = _kind(annotation, parameter.default)
        except TypeError as exc:  # a run by hand cannot give it; a scheduled run still uses its default
            found[parameter.name] = Parameter(parameter.name, None, parameter.default, False, str(exc))
            continue
        found[parameter.name] = Parameter(parameter.name, kind, parameter.default, optional)
    return found, open_ended


def run_arguments(func: Callable[..., Any], given: Mapping[str, object]) -> dict[str, Any]:
    """The keyword arguments for a run given `given` (text from the command line, or JSON values),
    each converted to its parameter's type; ValueError "name: what is wrong" for the first bad one,
    every unknown name listed with the parameters the job takes."""
    if len(given) > MAX_PARAMS:
        raise ValueError(f"params: at most {MAX_PARAMS} parameters, not {len(given)}")
    known, open_ended = parameters(func)
    unknown = sorted(name for name in given if name not in known)
    if unknown and not open_ended:
        takes = ", ".join(known) or "none"
        given_by_host = [name for name in unknown if name in GIVEN]
        if given_by_host:
            how = "the slot of the run: --slot" if given_by_host[0] == "slot" else "JOBS_DATA_DIR"
            raise ValueError(f"{given_by_host[0]}: the host gives it ({how}); the job's parameters: {takes}")
        raise ValueError(f"{unknown[0]}: the job takes no such parameter; its parameters: {takes}")
    arguments = {}
    for name, value in given.items():
        parameter = known.get(name) or Parameter(name, None, None, True)
        try:
            arguments[name] = parameter.convert(value)
        except ValueError as exc:
            if parameter.unconvertible is not None:
                raise ValueError(f"{name}: {exc}") from None
            shown = repr(value) if isinstance(value, str) else json.dumps(value)  # as the person wrote it
            raise ValueError(f"{name}: {shown} is not {exc}") from None
    return arguments


def stored_value(value: object) -> JSONValue:
    """A parameter's value as a run keeps it: plain JSON, from which `run_arguments` makes it again."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)  # Decimal, Path: their text makes them again


def stored(arguments: Mapping[str, object]) -> dict[str, JSONValue]:
    """The arguments of a run as it keeps them (the store, its log lines, Sentry)."""
    return {name: stored_value(value) for name, value in arguments.items()}


def parse_pairs(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`key=value` texts (`run --param`) as a mapping; ValueError naming a pair that is not one, or a key given twice."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sign, value = pair.partition("=")
        if not sign or not key.strip():
            raise ValueError(f"{pair!r} is not key=value")
        if key.strip() in found:
            raise ValueError(f"{key.strip()!r} is given twice")
        found[key.strip()] = value
    return found
