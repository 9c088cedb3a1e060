"""How the loop calls the state store: a failing store never takes the loop down, and an
outage (a database out of reach, a state file that cannot be written) is reported once,
with its end, and tried again with backoff.

While the store is out of reach nothing can be claimed, so nothing new starts;
runs already going go on, and what they end with waits to be written. An outage ends
when a write succeeds (the probe), not a read: a full disk still answers reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from jobhost.definition.durations import format_duration
from jobhost.errors import StoreUnavailable

logger = logging.getLogger("jobhost.host")

T = TypeVar("T")
FIRST_RETRY = 0.5  # seconds before the first try after a failure; doubled each time
_FAILED = object()  # what `_try` returns when the store failed


class StoreLink:
    """Calls the store for the loop: `call(fn, fallback)` returns `fallback` if the store fails."""

    def __init__(
        self,
        max_backoff: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        probe: Callable[[], object] | None = None,
    ):
        """`probe`: a write tried first after an outage, which must succeed for it to end (None: the call itself)."""
        self.max_backoff = max_backoff
        self.monotonic = monotonic
        self.probe = probe
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_RETRY
        self._recovered = False
        self._failure = ""
        self.misses = 0  # calls answered with their fallback in an outage: a caller sees whether a batch all worked
        self.last_ok = monotonic()  # when a call last succeeded
        self._ended_event = StoreUnavailable.ended  # what the end of the outage going on is logged as

    @property
    def up(self) -> bool:
        """False from the first failed call of an outage until the probe (or, without one, a call) succeeds."""
        return self.down_since is None

    @property
    def failure(self) -> str | None:
        """What is wrong with the store while it fails, in words (for health); None while it works."""
        return None if self.down_since is None else self._failure

    def call(self, fn: Callable[[], T], fallback: Any) -> T:
        """`fn()`, or `fallback` if the store fails or is still in backoff after an outage."""
        if self.down_since is not None and (
            self.monotonic() < self._retry_at or (self.probe is not None and self._try(self.probe) is _FAILED)
        ):
            self.misses += 1
            return fallback
        value = self._try(fn)
        if value is _FAILED:
            if self.down_since is not None:  # an outage, not a bug: what the caller did not get is owed
                self.misses += 1
            return fallback
        self.last_ok = self.monotonic()
        return cast(T, value)  # not _FAILED: what fn returned

    def _try(self, fn: Callable[[], T]) -> T | object:
        """`fn()`, or _FAILED if the store failed; a success ends an outage."""
        try:
            value = fn()
        except StoreUnavailable as exc:
            self._failed(exc)
            return _FAILED
        except Exception:
            logger.exception(
                "the state store failed; the run goes on but may be missing from history",
                extra={"event": "store_failed"},
            )
            return _FAILED
        if self.down_since is not None:
            self._back()
        return value

    def recovered(self) -> bool:
        """True once after an outage ended: the caller catches up on what it could not do."""
        recovered, self._recovered = self._recovered, False
        return recovered

    def _failed(self, exc: StoreUnavailable) -> None:
        now = self.monotonic()
        self._failure = str(exc)
        if self.down_since is None:
            self.down_since = now
            self._backoff = FIRST_RETRY
            self._ended_event = exc.ended
            logger.error(
                "%s; no new run starts until the state store works again (runs going on go on)",
                exc,
                extra={"event": exc.began},
            )
        else:
            self._backoff = min(self._backoff * 2, self.max_backoff)
        self._retry_at = now + self._backoff

    def _back(self) -> None:
        outage = self.monotonic() - (self.down_since or 0.0)
        self.down_since = None
        self._recovered = True
        logger.warning(
            "the state store works again after %s; catching up",
            format_duration(max(1, round(outage))),
            extra={"event": self._ended_event, "outage_ms": int(outage * 1000)},
        )
