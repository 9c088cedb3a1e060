"""The command line's parameters: types and bounds, and the slots and instants a person names.
Each refuses what it cannot take with one line naming the parameter (exit 2), never a traceback
further in."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any
from zoneinfo import ZoneInfo

import click

from jobhost import operations
from jobhost.clock import now as wall_now
from jobhost.definition.spec import JobSpec
from jobhost.definition.timezones import localize
from jobhost.horizon import OutsideHorizon, bounded

MAX_HISTORY = 1_000_000  # runs `history` lists at most: each is held in memory before it is printed
MAX_HEARTBEAT_AGE = 7 * 86400.0  # seconds: `health --max-age` longer than a week tells nothing about a loop
MAX_SLOTS = 10_000  # slots a backfill runs without being told --max-slots
MAX_SLOTS_CEILING = 10_000_000  # the most --max-slots may allow: an every-minute job for 19 years


class Utf8Text(click.ParamType):
    """Text that is valid UTF-8. The command line gets bytes: those that are not UTF-8 reach
    Python as surrogate escapes, which neither the state store nor the log can hold."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(f"{os.fsencode(text)!r} is not valid UTF-8", param, ctx)
        return text


class Seconds(click.FloatRange):
    """A number of seconds in a range; NaN and infinity, which compare with no bound, are refused."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


UTF8 = Utf8Text()


def slot_param(spec: JobSpec, text: str) -> dt.datetime:
    """`--slot`: the slot `text` names; a wall time without an offset follows the DST policy of slots."""
    try:
        return operations.slot_of(spec, text, wall_now())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--slot") from None


def instant_param(text: str, zone: ZoneInfo, what: str) -> dt.datetime:
    """Option `what`: ISO 8601 within the horizon of now; a time without an offset is read in the job's zone."""
    try:
        return operations.instant(text, zone, wall_now())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


def day_or_instant_param(text: str, zone: ZoneInfo, what: str, *, end_of_day: bool) -> dt.datetime:
    """Option `what`: a date (its first or last instant in `zone`, by the DST policy) or an ISO 8601
    instant, within the horizon of now."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return instant_param(text, zone, what)
    now = wall_now()
    try:
        if end_of_day:
            midnight = localize(dt.datetime.combine(day + dt.timedelta(days=1), dt.time()), zone)
            value = midnight.astimezone(dt.UTC) - dt.timedelta(microseconds=1)  # in UTC: zoned arithmetic is wall time
        else:
            value = localize(dt.datetime.combine(day, dt.time()), zone)
        return bounded(value, text, now)
    except (OverflowError, OutsideHorizon):  # a day at the edge of the calendar, or far from now
        raise click.BadParameter(str(OutsideHorizon(text, now)), param_hint=what) from None
