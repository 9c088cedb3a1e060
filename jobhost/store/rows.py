"""Reading records back: what the engine cannot interpret is set aside, never acted on.

A record written by an older release, by hand or by a damaged disk (a slot of year
9999, a status that does not exist, a garbled time) must not stop a host from
starting or a command from answering. Each such record is reported once per process,
naming it and what is wrong, and every query leaves it out.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from jobhost.horizon import READABLE, readable
from jobhost.outcomes import RunStatus

logger = logging.getLogger("jobhost.store")

STATUSES = frozenset(str(status) for status in RunStatus)
READABLE_RANGE = f"{READABLE[0].year} to {READABLE[1].year - 1}"


class Unreadable(ValueError):
    """A field of a stored record the engine cannot interpret; the message says which and why."""


def status_of(text: object) -> RunStatus:
    if text not in STATUSES:
        raise Unreadable(f"status {text!r} is not one of {', '.join(sorted(STATUSES))}")
    return RunStatus(text)


def slot_of(text: object) -> dt.datetime:
    """A stored slot: ISO 8601 with an offset, inside the years the engine computes with."""
    try:
        slot = dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise Unreadable(f"slot {text!r} is not an ISO 8601 time") from None
    if slot.tzinfo is None:
        raise Unreadable(f"slot {text!r} has no offset")
    if not readable(slot):
        raise Unreadable(f"slot {text!r} is outside the years {READABLE_RANGE}")
    return slot


def params_of(text: object) -> dict[str, Any] | None:
    """Stored keyword arguments of a run: NULL, or a JSON object."""
    if text is None:
        return None
    try:
        params = json.loads(str(text))
    except ValueError:
        raise Unreadable(f"params {shorten(str(text))!r} are not JSON") from None
    if not isinstance(params, dict):
        raise Unreadable(f"params {shorten(str(text))!r} are not a JSON object")
    return params


def shorten(text: str, most: int = 80) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


class SetAside:
    """The records one process has reported as set aside: each is reported once."""

    def __init__(self) -> None:
        self._reported: set[tuple[str, str]] = set()

    def report(self, kind: str, key: str, job: str, problem: str) -> None:
        if (kind, key) in self._reported:
            return
        self._reported.add((kind, key))
        logger.warning(
            "%s %s of %s in the state store cannot be interpreted (%s): set aside, not acted on; correct or delete it",
            kind,
            key,
            job,
            problem,
            extra={"event": "record_set_aside", "record": kind, "record_id": key, "job": job, "problem": problem},
        )
