"""How the loop calls the state store: a failing store never takes the loop down, and an
unreachable one is reported once per outage, then tried again with backoff.

While the store is out of reach nothing can be claimed, so nothing new starts;
runs already going go on, and what they end with waits to be written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from jobhost.durations import format_duration
from jobhost.errors import StoreUnavailable

logger = logging.getLogger("jobhost.host")

T = TypeVar("T")
FIRST_RETRY = 0.5  # seconds before the first try after a failure; doubled each time


class StoreLink:
    """Calls the store for the loop: `call(fn, fallback)` returns `fallback` if the store fails."""

    def __init__(self, max_backoff: float = 10.0, monotonic: Callable[[], float] = time.monotonic):
        self.max_backoff = max_backoff
        self.monotonic = monotonic
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_RETRY
        self._recovered = False
        self.last_outage_began = 0.0  # monotonic time the last outage began
        self._failure = ""

    @property
    def up(self) -> bool:
        """False from the first failed call of an outage until a call succeeds again."""
        return self.down_since is None

    @property
    def failure(self) -> str | None:
        """What is wrong with the store while it fails, in words (for health); None while it works."""
        return None if self.down_since is None else self._failure

    def call(self, fn: Callable[[], T], fallback: Any) -> T:
        """`fn()`, or `fallback` if the store fails or is still in backoff after an outage."""
        if self.down_since is not None and self.monotonic() < self._retry_at:
            return fallback
        try:
            value = fn()
        except StoreUnavailable as exc:
            self._failed(exc)
            return fallback
        except Exception:
            logger.exception(
                "the state store failed; the run goes on but may be missing from history",
                extra={"event": "store_failed"},
            )
            return fallback
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
            logger.error(
                "%s; no new run starts until it is back (runs going on go on)",
                exc,
                extra={"event": "store_unreachable"},
            )
        else:
            self._backoff = min(self._backoff * 2, self.max_backoff)
        self._retry_at = now + self._backoff

    def _back(self) -> None:
        self.last_outage_began = self.down_since or 0.0
        outage = self.monotonic() - self.last_outage_began
        self.down_since = None
        self._recovered = True
        logger.warning(
            "the state store is reachable again after %s; catching up",
            format_duration(max(1, round(outage))),
            extra={"event": "store_reachable", "outage_ms": int(outage * 1000)},
        )
