"""The state store's interface, by concern: run history, claims, job state, heartbeats, kept run lines.

It knows nothing of the loop, the runner or Sentry. Every backend implements all of
it (`StateStore`, the union) and passes the same tests (tests/test_store.py); each user
of a store declares the narrow protocol it uses, so what it may touch can be read off
its signature.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any, Protocol

from jobhost.outcomes import RunStatus
from jobhost.store.model import (
    Action,
    CancelRequest,
    Heartbeat,
    Hold,
    OneOff,
    Pause,
    PendingRetry,
    RunRecord,
    Settlement,
    SlotState,
    StateDump,
    TakenOver,
)


class History(Protocol):
    """The runs as recorded, and where each job's slots stand by them (for catch-up and after=)."""

    def add_run(self, record: RunRecord) -> None:
        """Record a run before anything is started for it."""

    def set_pid(self, run_id: str, pid: int) -> None:
        """Record the process that executes the run."""

    def finish_run(
        self, run_id: str, status: RunStatus, reason: str, ended: dt.datetime, duration_ms: int | None
    ) -> None:
        """Record how a run ended."""

    def finish_left_run(self, run_id: str, status: RunStatus, reason: str, ended: dt.datetime) -> bool:
        """Record how a run left `running` by a gone process ended, unless its record says it has
        ended meanwhile (its keeper recorded it as the host looked); whether it was written."""

    def runs(self, job: str | None = None, limit: int = 20, status: RunStatus | None = None) -> list[RunRecord]:
        """Runs newest first, of one job or of all, of one status or of any."""

    def run(self, run_id: str) -> RunRecord | None:
        """One run by its id, if history still has it."""

    def running(self, host: str) -> list[RunRecord]:
        """The runs of `host` recorded as running, or waiting and not closed, oldest first."""

    def running_runs(self, job: str) -> list[RunRecord]:
        """The runs of `job` recorded as running, on any host."""

    def last_statuses(self) -> dict[str, RunStatus]:
        """The status of each job's newest run."""

    def succeeded_slots(self, job: str, start: dt.datetime, end: dt.datetime) -> set[float]:
        """The slots (as POSIX timestamps) of `job` between `start` and `end` that have a succeeded run."""

    def unsettled_slots(self, job: str, since: dt.datetime, before: dt.datetime) -> list[dt.datetime]:
        """Slots of `job` in [since, before) that have records but none settled and none running
        (interrupted, abandoned, skipped while paused, waiting) and none claimed by a host now, oldest first."""

    def blocked_slots(self, job: str, since: dt.datetime) -> list[dt.datetime]:
        """The unsettled slots of `job` from `since` on (as `unsettled_slots` has them) that were
        blocked by a parent that had failed for good: owed a run once that parent's slot succeeds."""

    def final_status(self, job: str, slot: dt.datetime) -> RunStatus | None:
        """The newest settled outcome of that slot of `job`, if it has one."""

    def settled_slots(self) -> dict[str, dt.datetime]:
        """Where each job's catch-up starts (exclusive): its newest slot with a settled outcome (SETTLED;
        skipped for a pause does not count), or, for a job none of whose slots has settled, just before
        its oldest slot."""

    def prune(self, before: dt.datetime, limit: int) -> int:
        """Delete up to `limit` ended runs recorded (ended, or started) before `before`, and up to `limit`
        kept log lines and audit records older than it; return how many runs.

        Each job's newest run and newest settled run are kept, whatever their age, so
        that catch-up still knows where a rarely running job stands.
        """

    def report_unreadable(self, limit: int = 100) -> int:
        """Report (a log line each, once per process) up to `limit` runs whose status or slot the engine
        cannot interpret, and return how many. Every query leaves such records out, as it does any
        record found unreadable as it is read."""


class Claims(Protocol):
    """Each attempt of each slot happens once across hosts.

    A host inserts (job, slot, attempt) before it records or starts anything for it, and
    only the one insert that succeeds goes on. A claim is held under a lease the host
    renews and a token that fences every later write: a host whose lease was taken over
    writes nothing more for that attempt.
    """

    shared: bool  # several hosts may use the store at once: claims are contended, leases taken over

    def claim(
        self, job: str, slot: dt.datetime, attempt: int, run_id: str, host: str, lease: float | None
    ) -> int | None:
        """Claim one attempt of a slot for `host`; its token, or None if it was claimed before (by anyone).

        `lease`: seconds the claim is held before another host may take it over; None for a
        slot settled at once (missed, skipped)."""

    def claim_and_record(self, record: RunRecord) -> bool:
        """Claim the record's attempt settled and add the record, at once; False if claimed before."""

    def start_run(self, record: RunRecord, token: int | None) -> bool:
        """Add a running (or waiting) record under its claim; False if the claim is no longer held.

        Without a token (a run nobody claims: `run`), just add the record."""

    def settle(self, settlement: Settlement, token: int | None) -> bool:
        """Record how an attempt ended, release its claim and keep its next attempt, at once;
        False, writing nothing, if the claim was taken over."""

    def record_unstarted(self, record: RunRecord, token: int) -> bool:
        """Add a record for a claimed attempt that does not run (skipped) and release the claim."""

    def withdraw(self, run_id: str, token: int | None) -> bool:
        """Undo a run that was prepared but never started: its record goes and its claim expires at
        once, as a claim whose run never started, so the next host to look (another one, or this
        one at its next start) takes the slot over and runs it. Without a token (this host's next
        start, which takes its own claims over anyway) only the record goes. False if the claim
        was taken over meanwhile."""

    def renew(self, tokens: list[int], lease: float) -> set[int]:
        """Extend the leases of held claims by `lease` seconds; the tokens still held."""

    def take_over(
        self, host: str, jobs: list[str], lease: float, now: dt.datetime, *, own: bool = False
    ) -> list[TakenOver]:
        """Take the claims of `jobs` whose lease ran out (`own`: every claim `host` still holds, at its
        start); a run they covered is recorded abandoned (ended `now`). Claims whose attempt is already recorded
        settled are simply released."""

    def slot_state(self, job: str, slot: dt.datetime) -> SlotState:
        """Where a slot stands: its highest attempt, whether one is claimed and not settled,
        whether one has settled."""

    def database_time(self) -> dt.datetime:
        """The state store's clock, which times the leases (the host's own for an embedded store)."""


class JobState(Protocol):
    """What is kept of each job between its runs: paused or not, resumes, its pending retries."""

    def set_paused(self, job: str, paused: bool, pause: Pause | None = None) -> None:
        """Pause (with why, by whom, since and until when) or resume a job, or every job as one (the
        freeze, `job` EVERY_JOB); a paused job's slots are recorded as skipped."""

    def paused_jobs(self) -> set[str]:
        """The names of the paused jobs, with EVERY_JOB while a freeze holds."""

    def pauses(self) -> dict[str, Pause]:
        """Each paused job's own pause, and the freeze under EVERY_JOB."""

    def end_pauses(self, now: dt.datetime) -> list[str]:
        """Resume the jobs whose pause was to end by `now` (counted as resumes, so catch-up runs), and
        keep a "resume" action for each ("thaw" for a freeze); the jobs resumed, by this call alone on
        every host."""

    def resumes(self) -> dict[str, int]:
        """How many times each job not paused now has been resumed (a resume since a look raises it),
        and under EVERY_JOB how many times a freeze has ended."""

    def add_retry(self, retry: PendingRetry) -> None:
        """Keep a pending retry (one per job and slot; a newer one replaces it)."""

    def drop_retry(self, job: str, slot: dt.datetime) -> None:
        """Forget the pending retry of a slot (its attempt has ended)."""

    def pending_retries(self) -> list[PendingRetry]:
        """Every pending retry, earliest first."""


class Heartbeats(Protocol):
    """Which host loops are alive, and one loop per host."""

    def beat(self, host: str, pid: int, at: dt.datetime, *, stopped: bool = False) -> None:
        """Record that the loop of `host` (process `pid`) was alive at `at` (or, `stopped`, ended cleanly)."""

    def heartbeat(self, host: str) -> Heartbeat | None:
        """The last heartbeat of `host`, if any."""

    def lock_for_loop(self, pid: int, host: str = "") -> None:
        """Claim the right to run the forever loop of `host` here, or raise StoreError naming who holds it."""


class RunLineStore(Protocol):
    """The last log lines of ended runs, for the status page."""

    def keep_lines(self, run_id: str, job: str, at: dt.datetime, lines: list[dict[str, Any]], dropped: int) -> None:
        """Keep the last log lines of an ended run for the status page (`dropped`: earlier ones not kept);
        pruned by `at` with the runs."""

    def prune_lines(self, before: dt.datetime, limit: int) -> int:
        """Delete up to `limit` kept log lines older than `before`; return how many runs' lines."""

    def kept_lines(self, run_id: str) -> tuple[list[dict[str, Any]], int] | None:
        """The log lines kept of a run and how many earlier ones were not, if any were kept."""


class AuditTrail(Protocol):
    """What people did to the host, oldest first: kept with the runs, pruned with them."""

    def add_action(self, action: Action) -> None:
        """Keep one operator action."""

    def actions(self, since: dt.datetime | None = None, limit: int = 100) -> list[Action]:
        """The newest `limit` actions at or after `since` (all if None), newest first."""


class CancelRequests(Protocol):
    """Runs a person asked to cancel, until the host that has each one acts on it."""

    def ask_cancel(self, request: CancelRequest) -> CancelRequest:
        """Keep the request; if the run was asked to be cancelled before, the first request, unchanged."""

    def cancel_requests(self) -> list[CancelRequest]:
        """The requests no host has acted on yet, oldest first."""

    def cancels_done(self, run_ids: list[str], at: dt.datetime) -> None:
        """The host that had these runs has stopped them (or kept them from starting)."""


class CatchUpHolds(Protocol):
    """Catch-up runs a person held before a deploy, until the next start has given them up."""

    def hold_catchup(self, hold: Hold) -> None:
        """Keep the hold of a job (a newer one replaces it)."""

    def catchup_holds(self) -> dict[str, Hold]:
        """The holds not yet consumed, by job."""

    def drop_catchup_holds(self, jobs: list[str]) -> None:
        """A start has given these jobs' held runs up: the holds are done."""


class OneOffRuns(Protocol):
    """Runs a person asked for at a later instant, until a host takes each or someone cancels it."""

    def add_one_off(self, one_off: OneOff) -> None:
        """Keep a one-off run, pending."""

    def pending_one_offs(self) -> list[OneOff]:
        """The one-off runs no host has taken and no one has cancelled, soonest first."""

    def one_off(self, run_id: str) -> OneOff | None:
        """The one-off run of that id, in whatever state."""

    def take_one_off(self, run_id: str) -> bool:
        """Take a pending one-off run to start it: True for the one host (or call) that does."""

    def cancel_one_off(self, run_id: str) -> bool:
        """Cancel a pending one-off run: True if it was pending (and is now cancelled)."""


class StateStore(
    History, Claims, JobState, Heartbeats, RunLineStore, AuditTrail, CancelRequests, OneOffRuns, CatchUpHolds, Protocol
):
    """Where runs and job state live: all of the above, and the store's own upkeep. One instance
    per process, not shared across threads."""

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Everything written inside is written at once or not at all (an action with its audit record)."""

    def probe(self) -> None:
        """Write something that changes nothing: whether the store takes writes again after an
        outage (a full disk still answers reads). Raises as any write would."""

    def verify(self) -> bool:
        """Check the store's own integrity, bounded in time (at `check` and the loop's start); raise
        StoreError naming what is damaged and what to do. False if the check was cut short."""

    def dump(self) -> StateDump:
        """Everything, to move to another store."""

    def load(self, dump: StateDump) -> None:
        """Add a dump's contents (to an empty store)."""

    def close(self) -> None:
        """Release the connection (and the loop's lock)."""
