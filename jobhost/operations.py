"""The operations the command line and the HTTP API share: the catalog of jobs, history,
pause and resume (whether the loop is healthy: jobhost.health). Each face only parses its input and
formats the answer, so neither knows something the other does not."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from jobhost.definition.durations import parse_duration
from jobhost.definition.parameters import JSONValue, parameters, run_arguments, stored
from jobhost.definition.spec import JobSpec
from jobhost.definition.timezones import localize
from jobhost.errors import UnknownJobError
from jobhost.horizon import OutsideHorizon, bounded
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, StateStore
from jobhost.store.model import EVERY_JOB, Action, CancelRequest, OneOff, Pause

T = TypeVar("T")


def catalog(jobs: Mapping[str, JobSpec], store: StateStore, now: dt.datetime) -> list[dict[str, Any]]:
    """Every job as `list --json` gives it, by name."""
    last, pauses, planned = store.last_statuses(), store.pauses(), pending_one_offs(store)
    return [
        describe_job(spec, last.get(name), pauses, now, planned.get(name, ())) for name, spec in sorted(jobs.items())
    ]


def describe_job(
    spec: JobSpec,
    last: RunStatus | None,
    pauses: Mapping[str, Pause],
    now: dt.datetime,
    one_offs: Sequence[OneOff] = (),
) -> dict[str, Any]:
    """One job as `list --json` gives it: schedule in words, next slot, last status, paused (by its
    own `pause`, or by the `freeze` of every job), the one-off runs to come, options."""
    upcoming = spec.schedule.next_slot(now)
    pause, freeze = pauses.get(spec.name), pauses.get(EVERY_JOB)
    return {
        "name": spec.name,
        "schedule": spec.schedule.describe(),
        "timezone": spec.schedule.zone.key,
        "next_slot": upcoming.isoformat() if upcoming else None,
        "last_status": str(last) if last is not None else None,
        "paused": pause is not None or freeze is not None,
        "pause": pause.as_json() if pause is not None else None,
        "freeze": freeze.as_json() if freeze is not None else None,
        "one_offs": [planned.as_json() for planned in one_offs],
        "next_slots": [slot.isoformat() for slot in next_slots(spec, now, 3)],
        **spec.options(),
        "function": function_of(spec),
        "parameters": job_parameters(spec),
        "file": spec.file,
        "line": spec.line,
    }


def instant(text: str, zone: ZoneInfo, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 instant within the horizon of `now`; a time without an offset is a wall time in
    `zone` (the DST policy of slots). Raises ValueError saying what is expected."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not ISO 8601, e.g. 2026-11-23T06:00 or 2026-11-23T06:00+01:00") from None
    try:
        value = localize(value, zone) if value.tzinfo is None else value
    except OverflowError:  # a wall time at the very edge of the calendar
        raise OutsideHorizon(text, now) from None
    return bounded(value, text, now)


def slot_of(spec: JobSpec, text: str, now: dt.datetime) -> dt.datetime:
    """The slot of `spec` that `text` names, at or before `now`; ValueError naming the slots around
    it if it is none, or saying what to do instead for a slot still to come (the loop runs it then:
    a run of it by hand now would be a second run of that slot)."""
    value = instant(text, spec.schedule.zone, now)
    slot = spec.schedule.latest_slot(value)
    if slot is None or slot.timestamp() != value.timestamp():
        after = spec.schedule.next_slot(value)
        around = " and ".join(s.isoformat() for s in (slot, after) if s is not None)
        raise ValueError(f"{text} is not a slot of {spec.name}; the slots around it are {around}")
    if slot > now:
        latest = spec.schedule.latest_slot(now)
        instead = f"the latest slot ({latest.isoformat()})" if latest is not None else "the latest slot"
        raise ValueError(
            f"{text} is still to come: the schedule runs it then; to run {spec.name} now, "
            f"leave the slot out and {instead} is run"
        )
    return slot


def default_slot(spec: JobSpec, now: dt.datetime) -> dt.datetime:
    """The slot a run asked for by hand belongs to when none is named: the latest one."""
    return spec.schedule.latest_slot(now) or now


class PastTheCalendar(ValueError):
    """No slot of a job after an instant fits the calendar, which ends in the year 9999."""

    def __init__(self, name: str, after: dt.datetime):
        super().__init__(f"no slot of {name} after {after.isoformat()} fits the calendar (it ends in 9999)")


def upcoming(spec: JobSpec, after: dt.datetime) -> Iterator[dt.datetime]:
    """The slots of `spec` after `after`, in order and in its zone, until its schedule ends; where the
    calendar ends first, PastTheCalendar after the last slot that fits."""
    when = after
    while True:
        try:
            slot = spec.schedule.next_slot(when)
        except (OverflowError, ValueError):  # past the year 9999
            raise PastTheCalendar(spec.name, when) from None
        if slot is None:
            return
        yield slot
        when = slot


def next_slots(spec: JobSpec, after: dt.datetime, count: int) -> list[dt.datetime]:
    """Up to `count` slots of `spec` after `after`, in its zone; fewer where the schedule or the calendar ends."""
    slots: list[dt.datetime] = []
    with contextlib.suppress(PastTheCalendar):  # the slots up to the calendar's end are kept
        slots.extend(itertools.islice(upcoming(spec, after), count))
    return slots


MAX_PARAMS_CHARS = 8_000  # of a run's parameters in all, as JSON: they go on each of its log lines


def run_params(spec: JobSpec, given: Mapping[str, object]) -> dict[str, JSONValue]:
    """The parameters a person gives a run of `spec` (text from `run --param`, or the API's JSON
    values), checked against the function's signature and kept in their stored form; ValueError
    "name: what is wrong" naming the parameter at fault."""
    arguments = stored(run_arguments(spec.func, given))
    if len(json.dumps(arguments, ensure_ascii=False)) > MAX_PARAMS_CHARS:
        raise ValueError(f"params: more than {MAX_PARAMS_CHARS:,} characters in all, as JSON")
    return arguments


def function_of(spec: JobSpec) -> str:
    """The job's function as `module.qualname`: what it is, whatever its name (a rename keeps it)."""
    return f"{getattr(spec.func, '__module__', '?')}.{getattr(spec.func, '__qualname__', '?')}"


def job_parameters(spec: JobSpec) -> list[dict[str, JSONValue]]:
    """The parameters a run of `spec` may be given by hand: name, type and default (for a form)."""
    known, _ = parameters(spec.func)
    return [parameter.as_json() for parameter in known.values() if parameter.unconvertible is None]


def known_job(jobs: Mapping[str, JobSpec], store: StateStore, name: str) -> None:
    """Raise UnknownJobError unless `name` is a job now or has history (a job since removed)."""
    if name not in jobs and not store.runs(name, 1):
        raise UnknownJobError(name, list(jobs))


def history(
    jobs: Mapping[str, JobSpec], store: StateStore, name: str | None, limit: int, status: RunStatus | None = None
) -> list[RunRecord]:
    """Past runs newest first, of one job or all, of one status or any."""
    if name is not None:
        known_job(jobs, store, name)
    return store.runs(name, limit, status)


def tries(records: Sequence[RunRecord]) -> dict[str, int | None]:
    """Which try of its slot each record is, as a person counts: a slot skipped while its job was
    paused was no try (None), so the run that catches it up after the resume is its first, though
    its attempt (the claim's number) is 2. Counted among `records` (a page of history)."""
    skipped: dict[tuple[str, float], list[int]] = {}
    for record in records:
        if record.paused:
            skipped.setdefault((record.job, record.slot.timestamp()), []).append(record.attempt)
    counted: dict[str, int | None] = {}
    for record in records:
        before = skipped.get((record.job, record.slot.timestamp()), [])
        counted[record.run_id] = None if record.paused else record.attempt - sum(a < record.attempt for a in before)
    return counted


MAX_REASON = 1000  # characters of a reason a person gives


def reason_of(text: str) -> str:
    """A reason as it is kept: one line of text (a newline would forge lines in `list` and `audit`),
    stripped; ValueError "reason: ..." otherwise."""
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise ValueError("reason: one line of text, without a newline or another control character")
    if len(text) > MAX_REASON:
        raise ValueError(f"reason: at most {MAX_REASON} characters, not {len(text)}")
    return text.strip()


def audited(store: StateStore, action: Action, change: Callable[[], T]) -> T:
    """Make `change` and keep `action` in the audit trail, at once: no action without its record,
    no record of an action that did not happen."""
    with store.atomic():
        result = change()
        store.add_action(action)
    return result


def pause_end(until: str | None, for_: str | None, zone: ZoneInfo, now: dt.datetime) -> dt.datetime | None:
    """When a pause asked for with --until (an ISO 8601 instant) or --for (a duration such as 2h)
    ends, or None for a pause until someone resumes; ValueError naming the field at fault."""
    if until is not None and for_ is not None:
        raise ValueError("until: give --until or --for, not both")
    if for_ is not None:
        try:
            return now + dt.timedelta(seconds=parse_duration(for_, what="for"))
        except ValueError as exc:
            raise ValueError(f"for: {exc}") from None
    if until is None:
        return None
    try:
        end = instant(until, zone, now)
    except ValueError as exc:
        raise ValueError(f"until: {exc}") from None
    if end <= now:
        raise ValueError(f"until: {until} is not in the future (now is {now.isoformat(timespec='seconds')})")
    return end


def freeze(store: StateStore) -> Pause | None:
    """The freeze of every job (`pause --all`), if one holds."""
    return store.pauses().get(EVERY_JOB)


class NotPaused(Exception):
    """A resume of a job that is not paused, or a thaw with no freeze: nothing to do, nothing changed."""


def set_paused(
    jobs: Mapping[str, JobSpec],
    store: StateStore,
    name: str,
    paused: bool,
    actor: str,
    now: dt.datetime,
    reason: str = "",
    until: dt.datetime | None = None,
) -> None:
    """Pause (its slots are recorded as skipped) or resume a job, or with `name` EVERY_JOB freeze
    or thaw every job (those added meanwhile too), on every host sharing the store, with its audit
    record. A resume of what is not paused raises NotPaused and changes nothing: no record, and no
    catch-up for hosts to look for."""
    if name != EVERY_JOB and name not in jobs:
        raise UnknownJobError(name, list(jobs))
    reason = reason_of(reason)
    if not paused and name not in store.pauses():
        raise NotPaused(name)
    detail = {"until": until.isoformat()} if until is not None else {}
    verb = ("freeze" if paused else "thaw") if name == EVERY_JOB else ("pause" if paused else "resume")
    action = Action(now, actor, verb, name, reason, detail)
    audited(store, action, lambda: store.set_paused(name, paused, Pause(reason, actor, now, until)))


class CannotCancel(ValueError):
    """A cancel that changes nothing: no such run, one that has ended, or a job with no run going
    (or several: which one is for the person to say). `code` is its HTTP status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def one_off(
    spec: JobSpec,
    store: StateStore,
    text: str,
    actor: str,
    now: dt.datetime,
    params: Mapping[str, JSONValue] | None = None,
) -> OneOff:
    """Keep a run of `spec` at the instant `text` names (ISO 8601; no offset: the job's zone), to run
    once, on whichever host takes it then, with its audit record. ValueError "at: ..." for an instant
    not in the future, or one that is a slot of the job's schedule (which runs then anyway, under
    that slot's claim)."""
    try:
        at = instant(text, spec.schedule.zone, now)
    except ValueError as exc:
        raise ValueError(f"at: {exc}") from None
    if at <= now:
        raise ValueError(
            f"at: {text} is not in the future (now is {now.isoformat(timespec='seconds')}); to run it now, leave --at out"
        )
    if spec.schedule.latest_slot(at) == at:
        raise ValueError(f"at: {text} is a slot of {spec.name}'s schedule, which runs it then anyway")
    planned = OneOff(
        uuid.uuid4().hex, spec.name, at.astimezone(spec.schedule.zone), actor, now, dict(params) if params else None
    )
    detail: dict[str, object] = {"at": planned.at.isoformat(), "run_id": planned.run_id}
    if params:
        detail["params"] = dict(params)
    audited(store, Action(now, actor, "run", spec.name, "", detail), lambda: store.add_one_off(planned))
    return planned


def pending_one_offs(store: StateStore) -> dict[str, list[OneOff]]:
    """The one-off runs still to come, by job, soonest first."""
    found: dict[str, list[OneOff]] = {}
    for pending in store.pending_one_offs():
        found.setdefault(pending.job, []).append(pending)
    return found


RELEASED = "released:"  # the reason of a waiting record whose slot went on as a run of its own


def cancellable(record: RunRecord) -> bool:
    """Whether a cancel of `record` does something: a run going, a slot waiting for its parents, or
    one left waiting (blocked, or its host stopped), whose cancel settles it so nothing runs it later."""
    if record.status == RunStatus.RUNNING:
        return True
    return record.status == RunStatus.WAITING and not record.reason.startswith(RELEASED)


def run_to_cancel(jobs: Mapping[str, JobSpec], store: StateStore, target: str) -> RunRecord:
    """The run `target` names: a run id, or a job whose one run is going (or one slot waiting);
    CannotCancel otherwise."""
    record = store.run(target)
    if record is None and target in jobs:
        going = store.running_runs(target) or [
            r for r in store.runs(target, 100) if r.status == RunStatus.WAITING and r.ended is None
        ]
        if not going:
            raise CannotCancel(f"no run of {target} is going; nothing changed", 409)
        if len(going) > 1:
            ids = ", ".join(r.run_id for r in going)
            raise CannotCancel(f"{target} has {len(going)} runs going ({ids}): cancel one by its run id", 409)
        record = going[0]
    if record is None:
        raise CannotCancel(f"no run {target} in history (nor a job of that name); nothing changed", 404)
    if not cancellable(record):
        when = record.ended.isoformat(timespec="seconds") if record.ended else "an unknown time"
        how = f"{record.status} ({record.reason})" if record.status == RunStatus.WAITING else str(record.status)
        raise CannotCancel(f"run {record.run_id} of {record.job} ended at {when} as {how}; nothing changed", 409)
    return record


def cancel(
    jobs: Mapping[str, JobSpec], store: StateStore, target: str, actor: str, now: dt.datetime, reason: str = ""
) -> tuple[RunRecord | OneOff, CancelRequest]:
    """Ask the host that has the run `target` names (its id, or a job whose one run is going) to
    stop it: recorded `cancelled`, not retried, its slot settled. The request goes through the
    store, so it reaches that host wherever it was made; the run and the request (the first one,
    if it was asked before) are returned. A one-off run not started yet is cancelled at once: it
    never starts (the OneOff is returned). CannotCancel, changing nothing, for a run that is not
    going or waiting, and a one-off that has started or was cancelled."""
    reason = reason_of(reason)
    planned = store.one_off(target) if store.run(target) is None else None
    if planned is not None:
        return _cancel_one_off(store, planned, actor, now, reason), CancelRequest(
            target, planned.job, actor, now, reason
        )
    record = run_to_cancel(jobs, store, target)
    request = CancelRequest(record.run_id, record.job, actor, now, reason)
    detail = {"job": record.job, "slot": record.slot.isoformat(), "host": record.host}
    action = Action(now, actor, "cancel", record.run_id, reason, detail)
    if record.status == RunStatus.WAITING and record.ended is not None:  # no host holds it: settled here
        why = f"{request.outcome_reason()} (it was {record.reason})"
        audited(store, action, lambda: store.finish_run(record.run_id, RunStatus.CANCELLED, why, now, None))
        return record, request
    kept = audited(store, action, lambda: store.ask_cancel(request))
    return record, kept


def _cancel_one_off(store: StateStore, planned: OneOff, actor: str, now: dt.datetime, reason: str) -> OneOff:
    """A one-off run not started is cancelled, with its audit record; CannotCancel if a host has
    taken it meanwhile (or it was cancelled before), and then nothing is recorded."""

    def change() -> None:
        if not store.cancel_one_off(planned.run_id):
            found = store.one_off(planned.run_id)
            state = found.state if found is not None else "gone"
            raise CannotCancel(f"the one-off run {planned.run_id} of {planned.job} is {state}; nothing changed", 409)

    detail = {"job": planned.job, "at": planned.at.isoformat()}
    audited(store, Action(now, actor, "cancel", planned.run_id, reason, detail), change)
    return planned


def record_action(store: StateStore, action: Action) -> None:
    """Keep an action whose change the engine makes later (a run asked for, a backfill started)."""
    store.add_action(action)


def audit_trail(store: StateStore, since: dt.datetime | None, limit: int) -> list[Action]:
    """What people (and jobhost itself, ending a pause) did, newest first."""
    return store.actions(since, limit)
