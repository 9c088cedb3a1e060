"""Claims and their leases: which attempts this host holds, renewing them, and taking over
those whose host stopped renewing.

Each attempt of each slot is claimed in the store before anything is recorded or started
for it; only the host whose claim succeeds goes on. A claim is held under a lease the
holder renews every `lease / 3`; one not renewed for a lease is another host's to take
over. Leases run on the store's clock, slots on each host's: a host warns when they differ.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobhost.clock import Clock
from jobhost.config import HostConfig
from jobhost.engine.attempt import Attempt
from jobhost.store.model import TakenOver

if TYPE_CHECKING:
    from jobhost.engine.recorder import StoreCalls

logger = logging.getLogger("jobhost.host")

LONE_LOOK_EVERY = 3600.0  # seconds between two looks for claims to take over, alone on a store
SKEW_WARNING = 2.0  # seconds between the host's clock and the store's before a warning
SKEW_CHECK_EVERY = 600.0  # seconds between two looks at the clocks


class Leases:
    """The attempts this host holds a claim for, by run id; `attempt.token` is the claim's."""

    def __init__(
        self, calls: StoreCalls, config: HostConfig, jobs: list[str], clock: Clock, monotonic: Callable[[], float]
    ):
        self.call = calls
        self.store = calls.store
        self.config = config
        self.jobs = jobs
        self.clock = clock
        self.monotonic = monotonic
        self.held: dict[str, Attempt] = {}
        self.take_over_after = 0.0  # hosts cut off with this one get a lease to renew theirs first
        self.next_lone_look = 0.0
        self.next_skew_check = 0.0

    @property
    def shared(self) -> bool:
        """Whether other hosts may use the store (PostgreSQL): alone on it (SQLite), a host has
        nobody to take over from or to wait on."""
        return self.store.shared

    @property
    def interval(self) -> float:
        """Seconds between renewals: a third of the lease on a shared store; alone on its store
        a host renews once a heartbeat."""
        if self.shared:
            return self.config.lease / 3
        return max(self.config.lease / 3, self.config.heartbeat_interval)

    def claim(self, attempt: Attempt) -> bool:
        """Claim the attempt for this host; True if this host holds it (now or already)."""
        if attempt.token is not None:
            return True
        lease = self.config.lease
        token = self.call(
            lambda: self.store.claim(
                attempt.job, attempt.slot, attempt.number, attempt.run_id, self.config.hostname, lease
            ),
            None,
        )
        if token is None:
            return False
        self.hold(attempt, token)
        return True

    def hold(self, attempt: Attempt, token: int) -> None:
        """This host holds `attempt` under `token` (claimed, taken over, or reissued)."""
        attempt.token = token
        self.held[attempt.run_id] = attempt

    def let_go(self, attempt: Attempt | None) -> int | None:
        """Forget the claim (it is settled, withdrawn or lost); its token, if it had one."""
        if attempt is None:
            return None
        self.held.pop(attempt.run_id, None)
        token, attempt.token = attempt.token, None
        return token

    def renew(self, also: list[int]) -> list[Attempt]:
        """Renew the claims of attempts held and of the ends not written yet (`also`); return the
        attempts whose claim another host took over (their lease ran out while this host was
        cut off or stalled). Without any claim, a store that is down is probed."""
        tokens = [attempt.token for attempt in self.held.values() if attempt.token is not None] + also
        if not tokens:
            if not self.call.up:
                self.call(self.store.database_time, None)  # is it back?
            return []
        held = self.call(lambda: self.store.renew(tokens, self.config.lease), None)
        if held is None:  # unreachable: the leases run on, other hosts wait for them
            return []
        lost = [attempt for attempt in self.held.values() if attempt.token not in held]
        for attempt in lost:
            self.let_go(attempt)
            logger.warning(
                "the lease of run %s was taken over by another host; it is stopped and its result not recorded",
                attempt.run_id,
                extra={"event": "lease_lost", "lost_run_id": attempt.run_id},
            )
        return lost

    def look_soon(self) -> None:
        """A claim this host held may be left unrenewed (the store failed as its run was to start):
        look for it to take over once its lease has run out, even alone on the store."""
        self.next_lone_look = min(self.next_lone_look, self.monotonic() + self.config.lease + 1)

    def outage_ended(self) -> None:
        """Hosts cut off with this one need a lease to renew theirs before any is taken over."""
        self.take_over_after = self.monotonic() + self.config.lease

    def due_to_look(self) -> bool:
        """Whether to look for claims to take over and retries left by others now: on a shared
        store at every tick; alone on its store, a host has only its own crashed backfills to
        take over and its own retries, already queued: hourly, and an idle host stays idle."""
        if self.shared or self.monotonic() >= self.next_lone_look:
            self.next_lone_look = self.monotonic() + LONE_LOOK_EVERY
            return True
        return False

    def take_over(self, *, own: bool = False) -> list[TakenOver]:
        """Claims whose host stopped renewing them, now this host's (`own`: this host's own, at start)."""
        if not own and self.monotonic() < self.take_over_after:
            return []
        now = self.clock()
        return self.call(
            lambda: self.store.take_over(self.config.hostname, self.jobs, self.config.lease, now, own=own), []
        )

    def check_clock(self) -> None:
        """Leases run on the store's clock, slots on each host's: warn when they differ."""
        self.next_skew_check = self.monotonic() + SKEW_CHECK_EVERY
        before = self.clock()
        theirs = self.call(self.store.database_time, None)
        if theirs is None:
            return
        mine = before + (self.clock() - before) / 2
        skew = (mine - theirs).total_seconds()
        if abs(skew) > SKEW_WARNING:
            logger.warning(
                "this host's clock is %.1f s %s the state store's: its runs start up to that late or early; "
                "keep every host on NTP",
                abs(skew),
                "ahead of" if skew > 0 else "behind",
                extra={"event": "clock_skew", "skew_ms": int(skew * 1000)},
            )
