"""How far from now an instant a person names may lie, and which stored slots the engine can read.

A person names slots and instants (`run --slot`, the API's `slot`, `backfill --from/--to`,
`next --from`): each must lie within HORIZON of now. A re-run of last week or a backfill of
the last decade passes; year 1 or 9999 does not, and every datetime the engine derives from
a slot (its next slot, a retry's backoff, the catch-up window) stays well inside the calendar.

What the state store holds is read back only inside READABLE, fixed years far inside the
calendar, so that a record written before this bound existed cannot stop a host.
Pure: the caller passes `now`.
"""

from __future__ import annotations

import datetime as dt

HORIZON = dt.timedelta(days=7305)  # 20 years
HORIZON_WORDS = "20 years"
READABLE = (dt.datetime(1900, 1, 1, tzinfo=dt.UTC), dt.datetime(9000, 1, 1, tzinfo=dt.UTC))
READABLE_EPOCHS = (READABLE[0].timestamp(), READABLE[1].timestamp())


class OutsideHorizon(ValueError):
    """An instant too far from now (or outside the calendar) to be a slot."""

    def __init__(self, text: str, now: dt.datetime):
        super().__init__(f"{text} is more than {HORIZON_WORDS} from now ({now.date().isoformat()})")


def bounded(value: dt.datetime, text: str, now: dt.datetime) -> dt.datetime:
    """`value` (aware), or OutsideHorizon naming `text` if it lies more than HORIZON from `now`."""
    # Subtraction of aware datetimes never leaves the calendar; converting them might.
    if abs(value - now) > HORIZON:
        raise OutsideHorizon(text, now)
    return value


def readable(slot: dt.datetime) -> bool:
    """Whether a slot read back from the state store is one the engine can work with."""
    return READABLE[0] <= slot < READABLE[1]
