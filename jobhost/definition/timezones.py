"""Time zones: naming them, and turning a wall-clock time into one instant.

The DST policy lives here, in one place, for every schedule:
- a wall time inside a spring-forward gap happens at the end of the gap;
- a wall time that occurs twice in a fall-back hour happens once, the first time.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC


def get_zone(name: str) -> ZoneInfo:
    """Return the IANA zone `name`, or raise ValueError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/London' or 'UTC'") from exc


def system_zone() -> ZoneInfo:
    """The machine's own zone: $TZ, else the /etc/localtime link, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return ZoneInfo("UTC")
    marker = "/zoneinfo/"
    if marker in target:
        try:
            return ZoneInfo(target.split(marker, 1)[1])
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _exists(wall: dt.datetime, zone: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def localize(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The one instant (aware, in `zone`) at which the naive wall time `wall` is due.

    Ambiguous (fall-back) times take their first occurrence; times inside a
    spring-forward gap move to the instant the gap ends.
    """
    wall = wall.replace(tzinfo=None)
    if _exists(wall, zone):
        return wall.replace(tzinfo=zone, fold=0)
    # Inside a gap: the transition lies between the two readings of the wall
    # time; find it to the second. Offsets change once inside such a window.
    early = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    late = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    low, high = min(early, late), max(early, late)
    after = high.astimezone(zone).utcoffset()
    while (high - low) > dt.timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).utcoffset() == after:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0).astimezone(zone)
