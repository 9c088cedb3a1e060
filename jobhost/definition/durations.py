"""Durations written by people: 90, 2.5, "90", "30s", "45m", "2h", "1h30m", "1d"."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
LONGEST = 3650 * 86400.0  # seconds: no timeout, delay or window the host takes is longer
_WHOLE = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d))+\s*")


def parse_duration(value: object, *, what: str = "duration", allow_zero: bool = False) -> float:
    """Return seconds for a number or a string such as "45m" or "1h30m".

    Raises ValueError with a message that shows the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be seconds or a string like '30s', '45m', '2h', not {value!r}")
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.fullmatch(value.lower()):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value.lower()))
    else:
        raise ValueError(f"{what} {value!r} is not a duration: write seconds (90) or '30s', '45m', '2h', '1h30m', '1d'")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{what} must be more than zero, not {value!r}")
    if not seconds <= LONGEST:  # also NaN and infinity (a float, or a number of 400 digits)
        raise ValueError(f"{what} must be at most {format_duration(LONGEST)} (ten years), not {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The short form a person reads in a log line: 45s, 12m, 2h, 1h30m, 0.5s."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts) or "0s"
