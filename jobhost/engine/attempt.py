"""One attempt of one slot, from its claim until it is settled: everything the loop knows of it.

The loop used to keep this in maps keyed by run id (the claim's token, the release
instant, whether it was asked for by hand...), kept in step by hand. An `Attempt` holds
it in one place, and `parked` says where an attempt not started yet waits.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from jobhost.context import Params, RunContext
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.runs.base import Run


class Parked(StrEnum):
    """Where an attempt that has not started waits (see `Backlog`)."""

    READY = "ready"  #: for a free worker
    BEHIND = "behind"  #: behind its job's run going on this host (overlap="queue", a retry, a catch-up backlog)
    BEHIND_REMOTE = "behind_remote"  #: behind its job's run on another host (overlap="queue")
    PARENTS = "parents"  #: for the slots of the jobs it comes after to succeed (after=)
    STALLED = "stalled"  #: claimed, but the store was out of reach when it was to start


@dataclass(eq=False)
class Attempt:
    """An attempt the loop holds: its run context and what became of it so far."""

    context: RunContext
    token: int | None = None  #: of the claim this host holds for it; None: not claimed (yet, or by hand)
    manual: bool = False  #: asked for by hand: not claimed, not retried, whatever schedule and pause say
    catch_up: bool = False  #: a catch-up run: late by design, its lateness is not measured
    requested_by: str = ""  #: who asked for it by hand (an OS user, a token's name); "" for the schedule
    one_off: bool = False  #: asked for at an instant a person chose (`run --at`): settles no slot
    release_at: dt.datetime | None = None  #: prepared ahead: the instant its job is called at
    lost: bool = False  #: another host took the claim over: nothing more of it is written here
    parked: Parked | None = None  #: where it waits while not started
    # Once started (see Runner):
    run: Run | None = None
    started_mono: float = 0.0  #: when its job began, or begins for a prepared run
    stop_requested: bool = False
    watch_at: float | None = None  #: a prepared run: when the loop starts watching its pipes

    @classmethod
    def new(
        cls, spec: JobSpec, slot: dt.datetime, number: int = 1, params: Params | None = None, **fields: object
    ) -> Attempt:
        """A fresh attempt of `slot`, with a run id of its own, its slot in the job's zone, and the
        parameters a person gave it (checked, in their stored form), if any."""
        context = RunContext(spec.name, uuid.uuid4().hex, slot.astimezone(spec.schedule.zone), number, params)
        return cls(context, **fields)  # type: ignore[arg-type]

    @property
    def run_id(self) -> str:
        return self.context.run_id

    @property
    def job(self) -> str:
        return self.context.job

    @property
    def slot(self) -> dt.datetime:
        return self.context.slot

    @property
    def number(self) -> int:
        """Which attempt of its slot this is (1 for the first)."""
        return self.context.attempt

    def reissue(self) -> Attempt:
        """The same attempt under a new run id and the same claim: a waiting record is closed
        when its parents succeed, and the run that follows is a record of its own."""
        fresh = RunContext(self.job, uuid.uuid4().hex, self.slot, self.number, self.context.params)
        return Attempt(
            fresh, token=self.token, manual=self.manual, catch_up=self.catch_up, requested_by=self.requested_by
        )

    def record(
        self,
        status: RunStatus,
        host: str,
        reason: str = "",
        *,
        started: dt.datetime | None = None,
        ended: dt.datetime | None = None,
        paused: bool = False,
    ) -> RunRecord:
        return RunRecord(
            self.run_id,
            self.job,
            self.slot,
            self.number,
            status,
            reason,
            started,
            ended,
            host=host,
            paused=paused,
            params=dict(self.context.params) if self.context.params is not None else None,
            requested_by=self.requested_by,
            one_off=self.one_off,
        )
