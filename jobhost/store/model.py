"""The state store's records: what goes in and comes out of it, with no behaviour of the store.

The engine, the commands and the web face build and read these; the store's
protocols (protocols.py) and its backends take and return them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from jobhost.outcomes import RunStatus


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
    # Skipped because its job was paused: the slot is not settled by it (catch-up runs it after the
    # resume). Kept as data, not read from the reason, which only tells the reader why.
    paused: bool = False
    # The keyword arguments a person gave the run (`run --param`, the API), or None for the function's defaults.
    params: dict[str, Any] | None = None
    # Who asked for the run by hand (an OS user, an HTTP token's name); "" for a run of the schedule.
    requested_by: str = ""
    # A run at an instant a person chose (`run --at`), not a slot of the schedule: it settles no slot.
    one_off: bool = False

    def as_json(self) -> dict[str, Any]:
        """The record as the `history --json` contract spells it (the reason says "paused")."""
        data = asdict(self)
        del data["paused"]
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


@dataclass(frozen=True, order=True)
class PendingRetry:
    """The next attempt of one slot of one job."""

    due: dt.datetime
    job: str = field(compare=False)
    slot: dt.datetime = field(compare=False)
    attempt: int = field(compare=False)


@dataclass(frozen=True)
class Settlement:
    """How one claimed attempt of a slot ended: written with the claim's release, all at once."""

    run_id: str
    job: str
    slot: dt.datetime
    attempt: int
    status: RunStatus
    reason: str
    ended: dt.datetime
    duration_ms: int | None = None
    retry: PendingRetry | None = None  # the slot's next attempt, if it gets one


@dataclass(frozen=True)
class SlotState:
    """Where one slot of one job stands, across hosts."""

    last_attempt: int  # the highest attempt claimed or recorded; 0 if none
    held: bool  # an attempt is claimed and has not settled: some host is on it
    settled: bool  # an attempt has settled (SETTLED, not a pause)


@dataclass(frozen=True)
class TakenOver:
    """A claim whose lease ran out, now held by the host that took it (under a new token)."""

    job: str
    slot: dt.datetime
    attempt: int
    run_id: str
    previous_host: str
    token: int
    abandoned: bool  # a run was going: it is now recorded abandoned; else the slot was never started


# The name a freeze is kept under, beside the jobs' own pauses: a pause of every job, those added
# while it holds too. No job can have it (a name is letters, digits, '_', '.' and '-').
EVERY_JOB = "*"


@dataclass(frozen=True)
class Pause:
    """Why a job is paused, by whom, since and until when (None: until someone resumes it)."""

    reason: str = ""
    by: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The pause as `list --json` and /api/jobs spell it."""
        return {
            "reason": self.reason,
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


@dataclass(frozen=True)
class Hold:
    """A person's decision before a deploy (`plan --hold-catchup`): the next start gives the job's
    catch-up runs of slots up to `at` to them (recorded missed), instead of running them."""

    job: str
    by: str
    at: dt.datetime

    def reason(self) -> str:
        return f"held at deploy by {self.by} ({self.at.isoformat(timespec='seconds')}): not run by catch-up"


@dataclass(frozen=True)
class OneOff:
    """A run a person asked for at a later instant (`run --at`): kept until a host takes it (once,
    across hosts) or someone cancels it first; its run gets `run_id`."""

    run_id: str
    job: str
    at: dt.datetime
    requested_by: str
    asked_at: dt.datetime
    params: dict[str, Any] | None = None
    state: str = "pending"  # pending, taken (a host has started it), cancelled

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "at": self.at.isoformat(),
            "requested_by": self.requested_by,
            "asked_at": self.asked_at.isoformat(),
            "params": self.params,
            "state": self.state,
        }


@dataclass(frozen=True)
class CancelRequest:
    """A person's request to cancel a run: kept in the store until the host running it acts on it,
    so a request made on any host, by the command line or the API, reaches the one that has it."""

    run_id: str
    job: str
    asked_by: str
    asked_at: dt.datetime
    reason: str = ""

    def outcome_reason(self) -> str:
        """The reason the cancelled run is recorded with: who, and why if they said."""
        return f"cancelled by {self.asked_by}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class Action:
    """One thing a person did to the host (run, cancel, pause, resume, freeze, thaw, backfill), as the
    audit trail keeps it."""

    at: dt.datetime
    actor: str  # the OS user of a command, the name of the HTTP token
    action: str
    target: str  # a job, a run id, or "*" for every job
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # the slot, the parameters, the until

    def as_json(self) -> dict[str, Any]:
        """The action as `audit --json` and /api/audit spell it."""
        return {**asdict(self), "at": self.at.isoformat()}


@dataclass
class StateDump:
    """A store's whole contents, to move it to another store (`migrate-state`)."""

    runs: list[RunRecord]
    retries: list[PendingRetry]
    paused: set[str]


# The reason a run gets when another host takes its expired lease over.
LEASE_EXPIRED = (
    "host {previous} stopped renewing the run's lease (killed, hung or cut off from the state store); "
    "{taker} took the slot over"
)
