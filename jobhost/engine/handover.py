"""What the engine does for a run its keeper carries on after the host has stopped
(docs/design.md, "Hand-over"): the keeper knows processes, this knows the store and the reporters.

It runs in the keeper, a fork of the host: the host's store connection and log writer must
not be used there, so `KeeperSetup` (from the deployment) gives it a store and a log of its own
(the store served by a fresh process: store/piped.py says why).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from jobhost.clock import Clock
from jobhost.config import HostConfig
from jobhost.definition.spec import JobSpec
from jobhost.engine.attempt import Attempt
from jobhost.engine.recorder import ended_event, settlement_of
from jobhost.engine.retries import retry_due
from jobhost.hoststatus import NUDGE_SIGNAL
from jobhost.observe.events import Lifecycle
from jobhost.outcomes import Outcome, RunStatus
from jobhost.store.model import Heartbeat, PendingRetry, Settlement

logger = logging.getLogger("jobhost.host")
T = TypeVar("T")

SETTLE_FOR = 30.0  # seconds a store out of reach is tried for, before the outcome file is left to the next start


def _alive(pid: int) -> bool:
    """Whether process `pid` lives (the loop of this host name runs on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KeptStore(Protocol):
    """The store calls a keeper makes."""

    def heartbeat(self, host: str) -> Heartbeat | None: ...
    def renew(self, tokens: list[int], lease: float) -> set[int]: ...
    def settle(self, settlement: Settlement, token: int | None) -> bool: ...
    def cancel_requested(self, run_id: str) -> str | None: ...
    def cancels_done(self, run_ids: list[str], at: dt.datetime) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class KeeperSetup:
    """What the deployment gives the engine so that runs can outlive a restart: a store opened
    anew (in the keeper, after the fork) and logging pointed at the log file alone."""

    open_store: Callable[[], KeptStore]
    log_alone: Callable[[], None]


class Carried:
    """The aftercare of one attempt (runs/keeper.Aftercare): its successor, its claim, its end."""

    def __init__(
        self,
        attempt: Attempt,
        spec: JobSpec,
        config: HostConfig,
        lifecycle: Lifecycle,
        clock: Clock,
        setup: KeeperSetup,
        *,
        shared: bool,
        scheduled: bool,
        result_file: Path | None,
    ):
        self.attempt = attempt
        self.spec = spec
        self.config = config
        self.lifecycle = lifecycle
        self.clock = clock
        self.setup = setup
        self.scheduled = scheduled
        self.result_file = result_file
        self.host_pid = os.getpid()  # made in the host: the keeper's successor is any other loop
        self.stop_grace = config.stop_grace
        self.renew_every: float | None = config.lease / 3 if shared and attempt.token is not None else None
        self.store: KeptStore | None = None
        self.successor_pid: int | None = None

    def begin(self) -> None:
        self.setup.log_alone()
        self.lifecycle = self.lifecycle.alone()  # Sentry's client of its own; the host's metrics stay the host's
        logger.info(
            "run %s of %s goes on to its end under its keeper, after the host stopped",
            self.attempt.run_id,
            self.attempt.job,
            extra={"event": "run_kept", **self.attempt.context.fields(), "keeper_pid": os.getpid()},
        )
        self.store = self._try(self.setup.open_store)

    def handing_host_runs(self) -> bool:
        return os.getppid() == self.host_pid  # the keeper's parent until it exits

    def successor(self) -> bool:
        store = self._store()
        beat = None if store is None else self._try(lambda: store.heartbeat(self.config.hostname))
        if beat is None or beat.stopped or beat.pid == self.host_pid or not _alive(beat.pid):
            return False  # (a beat not stopped whose loop is gone: it was killed; supervisord starts another)
        self.successor_pid = beat.pid
        return True

    def renew(self) -> bool:
        store, token = self._store(), self.attempt.token
        if store is None or token is None:
            return True
        held = self._try(lambda: store.renew([token], self.config.lease))
        return held is None or token in held  # out of reach: the lease runs on, as the host's would

    def cancelled(self) -> Outcome | None:
        store = self._store()
        if store is None or (reason := self._try(lambda: store.cancel_requested(self.attempt.run_id))) is None:
            return None
        self._try(lambda: store.cancels_done([self.attempt.run_id], self.clock()))
        logger.info(
            "run %s of %s is being cancelled under its keeper (%s): SIGTERM now, SIGKILL after the grace",
            self.attempt.run_id,
            self.attempt.job,
            reason,
            extra={"event": "run_cancelling", **self.attempt.context.fields()},
        )
        return Outcome(RunStatus.CANCELLED, reason)

    def settle(self, outcome: Outcome, duration_ms: int) -> None:
        attempt = self.attempt
        retry_at = None
        if not attempt.manual:
            retry_at = retry_due(self.spec, attempt.number, outcome, attempt.slot, self.clock(), stopping=False)
        retry = None if retry_at is None else PendingRetry(retry_at, attempt.job, attempt.slot, attempt.number + 1)
        settlement = settlement_of(attempt, outcome, self.clock(), duration_ms, retry)
        written = None
        give_up = time.monotonic() + SETTLE_FOR
        while written is None and time.monotonic() < give_up:
            store = self._store()
            written = None if store is None else self._try(partial(store.settle, settlement, attempt.token))
            if written is None:
                time.sleep(1.0)
        if written and self.result_file is not None:
            self.result_file.unlink(missing_ok=True)
        elif written is False:
            logger.warning(
                "the result of run %s (%s) was not recorded: another host took the run over meanwhile",
                attempt.run_id,
                outcome.status,
                extra={"event": "result_discarded", "discarded_run_id": attempt.run_id},
            )
        self.lifecycle.emit(ended_event(attempt, outcome, duration_ms, retry_at, scheduled=self.scheduled))
        if written and self.successor_pid is not None:  # its retry, and the children after it, now
            with contextlib.suppress(OSError):
                os.kill(self.successor_pid, NUDGE_SIGNAL)
        self.lifecycle.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        logging.shutdown()  # the log file's writer lets its lines out before the keeper's group is killed

    def _store(self) -> KeptStore | None:
        if self.store is None:
            self.store = self._try(self.setup.open_store)
        return self.store

    def _try(self, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the keeper must outlive any failure of the store
            if self.store is not None:  # a fresh one at the next call
                with contextlib.suppress(Exception):
                    self.store.close()
                self.store = None
            logger.warning(
                "the keeper of run %s could not reach the state store: %s",
                self.attempt.run_id,
                exc,
                extra={"event": "store_failing", "run_id": self.attempt.run_id},
            )
            return None
