"""The command line's parameter types: each refuses what it cannot take with one line naming
the parameter (exit 2), never a traceback further in."""

from __future__ import annotations

import math
import os
from typing import Any

import click

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
