"""The state store's interface: run history, per-job state, nothing else.

It knows nothing of the loop, the runner or Sentry. Every backend passes the
same tests (tests/test_store.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from jobhost.outcomes import RunStatus
from jobhost.retries import PendingRetry


@dataclass
class RunRecord:
    """One run (or one slot that did not run) as history keeps it."""

    run_id: str
    job: str
    slot: dt.datetime
    attempt: int
    status: RunStatus
    reason: str = ""
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    duration_ms: int | None = None
    host: str = ""
    pid: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as the `history --json` contract spells it."""
        data = asdict(self)
        data["status"] = str(self.status)
        for key in ("slot", "started", "ended"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        return data


@dataclass(frozen=True)
class Heartbeat:
    """The loop's last sign of life on one host."""

    host: str
    pid: int
    at: dt.datetime
    stopped: bool = False


@dataclass
class StateDump:
    """A store's whole contents, to move it to another store (`migrate-state`)."""

    runs: list[RunRecord]
    retries: list[PendingRetry]
    paused: set[str]


# Outcomes that settle a slot: catch-up starts after the newest of them. A slot
# left interrupted, abandoned or paused is still owed a run.
SETTLED = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED, RunStatus.SKIPPED, RunStatus.MISSED}
)


class StateStore(Protocol):
    """Where runs and job state live; one instance per process, not shared across threads."""

    def add_run(self, record: RunRecord) -> None:
        """Record a run before anything is started for it."""

    def set_pid(self, run_id: str, pid: int) -> None:
        """Record the process that executes the run."""

    def finish_run(
        self, run_id: str, status: RunStatus, reason: str, ended: dt.datetime, duration_ms: int | None
    ) -> None:
        """Record how a run ended."""

    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Runs newest first, of one job or of all."""

    def add_retry(self, retry: PendingRetry) -> None:
        """Keep a pending retry (one per job and slot; a newer one replaces it)."""

    def drop_retry(self, job: str, slot: dt.datetime) -> None:
        """Forget the pending retry of a slot (its attempt has ended)."""

    def pending_retries(self) -> list[PendingRetry]:
        """Every pending retry, earliest first."""

    def succeeded_slots(self, job: str, start: dt.datetime, end: dt.datetime) -> set[float]:
        """The slots (as POSIX timestamps) of `job` between `start` and `end` that have a succeeded run."""

    def prune(self, before: dt.datetime, limit: int) -> int:
        """Delete up to `limit` ended runs recorded (ended, or started) before `before`; return how many.

        Each job's newest run and newest settled run are kept, whatever their age, so
        that catch-up still knows where a rarely running job stands.
        """

    def unsettled_slots(self, job: str, since: dt.datetime, before: dt.datetime) -> list[dt.datetime]:
        """Slots of `job` in [since, before) that have records but none settled and none running
        (interrupted, abandoned, skipped while paused, waiting), oldest first."""

    def final_status(self, job: str, slot: dt.datetime) -> RunStatus | None:
        """The newest settled outcome of that slot of `job`, if it has one."""

    def settled_slots(self) -> dict[str, dt.datetime]:
        """Where each job's catch-up starts (exclusive): its newest slot with a settled outcome (SETTLED;
        skipped for a pause does not count), or, for a job none of whose slots has settled, just before
        its oldest slot."""

    def last_statuses(self) -> dict[str, RunStatus]:
        """The status of each job's newest run."""

    def set_paused(self, job: str, paused: bool) -> None:
        """Pause or resume a job; a paused job's slots are recorded as skipped."""

    def paused_jobs(self) -> set[str]:
        """The names of the paused jobs."""

    def running(self, host: str) -> list[RunRecord]:
        """The runs of `host` recorded as running, or waiting and not closed, oldest first."""

    def beat(self, host: str, pid: int, at: dt.datetime, *, stopped: bool = False) -> None:
        """Record that the loop of `host` (process `pid`) was alive at `at` (or, `stopped`, ended cleanly)."""

    def heartbeat(self, host: str) -> Heartbeat | None:
        """The last heartbeat of `host`, if any."""

    def lock_for_loop(self, pid: int) -> None:
        """Claim the right to run the forever loop here, or raise StoreError naming who holds it."""

    def dump(self) -> StateDump:
        """Everything, to move to another store."""

    def load(self, dump: StateDump) -> None:
        """Add a dump's contents (to an empty store)."""

    def close(self) -> None:
        """Release the connection (and the loop's lock)."""
