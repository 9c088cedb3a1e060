"""`jobs.py plan`: what a deploy of this checkout will change, before it does.

It compares the jobs of this checkout with what runs now: the jobs of another release or jobs
directory (their `list --json`, made by that code), and the state store's history. For each job it
says whether it is added, removed, renamed (the same function under a new name) or has a new
schedule, with its next slots before and after; what catch-up does at the next start (the runs
and the slots given up, by the same decision the loop makes: engine.catchup.start_plan); and
which Sentry monitors are made, changed or left behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePath
from typing import Any

from jobhost.definition.spec import JobSpec
from jobhost.engine.admission import is_paused
from jobhost.engine.catchup import start_plan
from jobhost.operations import audited, function_of, next_slots
from jobhost.store import StateStore
from jobhost.store.model import Action, Hold

NEXT = 3  # slots shown before and after a change of schedule
PAUSED = "skipped: the job is paused (catch-up runs it after the resume, by its policy)"
SHOWN = 5  # slots of catch-up shown per job (the counts are whole)


@dataclass
class JobPlan:
    """What the deploy does to one job."""

    name: str
    change: str  # added, removed, renamed, rescheduled, unchanged
    was: str | None = None  # the name it had (renamed)
    schedule: str | None = None
    old_schedule: str | None = None
    next_slots: list[str] = field(default_factory=list)
    old_next_slots: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # slots catch-up runs at the next start
    missed: list[tuple[str, str]] = field(default_factory=list)  # slots it gives up, with why
    monitor: str | None = None  # created, changed, left behind; None: no monitor, or unchanged
    rescheduled: bool = False  # its slots change (a renamed job's too)
    guessed: bool = False  # a rename matched by file and schedule: that release did not say its functions
    uncounted: bool = False  # more slots are given up than are listed (past the catch-up window)
    in_flight: list[str] = field(default_factory=list)  # slots of its runs going now, which finish as they are

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "change": self.change,
            "was": self.was,
            "schedule": self.schedule,
            "old_schedule": self.old_schedule,
            "next_slots": self.next_slots,
            "old_next_slots": self.old_next_slots,
            "catch_up": {"runs": self.runs, "missed": [{"slot": s, "reason": r} for s, r in self.missed]},
            "monitor": self.monitor,
            "rescheduled": self.rescheduled,
            "in_flight": self.in_flight,
        }


def _identity(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a job is, whatever its name: its function, as `module.qualname` within the jobs package
    (two releases' packages sit in different places); for a release that did not say its functions,
    its module file's name and its schedule."""
    function = row.get("function")
    if function:
        return ("function", function.partition(".")[2])
    return ("file", PurePath(str(row.get("file"))).name, row.get("schedule"))


def plan(
    jobs: Mapping[str, JobSpec],
    store: StateStore,
    running: Sequence[Mapping[str, Any]] | None,
    now: dt.datetime,
    dead: Mapping[str, Sequence[dt.datetime]] | None = None,
    going: Mapping[str, Sequence[dt.datetime]] | None = None,
) -> list[JobPlan]:
    """One JobPlan a job of this checkout or of what runs now (`running`: its `list --json`; None
    when not known: then only the store's history tells which jobs there were). `dead`: the slots,
    by job, of runs recorded running whose process is gone, which the start records abandoned and
    then catches up as any slot left unsettled. `going`: the slots of this host's runs going now,
    which the restart lets finish under the code they started with."""
    old = {row["name"]: row for row in running} if running is not None else {}
    known = set(old) | set(store.settled_slots()) | set(store.pauses()) - {"*"}
    new_rows = {name: _row(spec) for name, spec in jobs.items()}
    added = [name for name in jobs if name not in known]
    removed = [name for name in known if name not in jobs]
    renamed: dict[str, str] = {}  # new name -> old name
    for name in added:
        # Matched by the same kind of identity: a release that said its functions, or one that did not.
        match = [
            was
            for was in removed
            if was in old and _identity(old[was]) == _identity({**new_rows[name], **_as_said(old[was])})
        ]
        if len(match) == 1:
            renamed[name] = match[0]
            removed.remove(match[0])
    settled, holds, pauses = store.settled_slots(), store.catchup_holds(), store.pauses()
    plans = []
    for name, spec in sorted(jobs.items()):
        was = renamed.get(name)
        before = old.get(was or name)
        entry = JobPlan(name, "unchanged", was=was, schedule=spec.schedule.describe())
        entry.next_slots = [slot.isoformat() for slot in next_slots(spec, now, NEXT)]
        if was is not None:
            entry.change = "renamed"
            entry.guessed = not before or not before.get("function")  # matched by file and schedule only
        elif name in added:
            entry.change = "added"
        if before is not None:
            entry.old_schedule = before.get("schedule")
            entry.old_next_slots = list(before.get("next_slots") or [s for s in [before.get("next_slot")] if s])
            # The slots tell: a new wording of the same slots (cron for every) is no change, an
            # until() that ends them is one.
            shown = (
                entry.next_slots[: len(entry.old_next_slots)] if before.get("next_slots") is None else entry.next_slots
            )
            entry.rescheduled = shown != entry.old_next_slots or before.get("timezone") != spec.schedule.zone.key
            if (
                entry.change == "unchanged"
                and before.get("function")
                and before["function"].partition(".")[2] != (function_of(spec).partition(".")[2])
            ):
                entry.change = "replaced"  # the same name, another function: its history is now this one's
            elif entry.change == "unchanged" and entry.rescheduled:
                entry.change = "rescheduled"
        entry.monitor = _monitor_change(before, spec) if running is not None else None  # unknown without it
        if was is not None and before is not None and before.get("monitor") not in (None, spec.monitor):
            entry.monitor = f"{entry.monitor or 'kept'}; {before['monitor']!r}, its old one, is left behind"
        if name in settled:  # (a renamed job's history stays under its old name: it starts afresh)
            since = now - dt.timedelta(seconds=spec.catchup_window)
            orphans = sorted(
                {*store.unsettled_slots(name, since, settled[name])}
                | {slot for slot in (dead or {}).get(name, ()) if since <= slot < settled[name]}
            )
            start = start_plan(spec, settled[name], now, orphans, holds.get(name))
            entry.runs = [slot.isoformat() for slot in start.run]
            entry.missed = [(slot.isoformat(), reason) for slot, reason in start.missed]
            entry.uncounted = any("not recorded one by one" in reason for _, reason in start.missed)
            if is_paused(name, pauses, now) and entry.runs:  # the start records them skipped: paused
                entry.missed += [(slot, PAUSED) for slot in entry.runs]
                entry.runs = []
        entry.in_flight = [slot.isoformat() for slot in (going or {}).get(name, ())]
        plans.append(entry)
    for name in sorted(removed):
        before = old.get(name)
        entry = JobPlan(name, "removed", old_schedule=before.get("schedule") if before else None)
        entry.monitor = "left behind" if before is not None and before.get("monitor") else None
        entry.in_flight = [slot.isoformat() for slot in (going or {}).get(name, ())]
        plans.append(entry)
    if running is not None and not running and known:  # the code that runs now listed nothing it has history of
        raise ValueError(
            "the running code listed no job, though the store has the history of some: is it the right one?"
        )
    return plans


def hold(store: StateStore, plans: Sequence[JobPlan], actor: str, now: dt.datetime) -> list[JobPlan]:
    """Keep a person's decision that the next start gives up the catch-up runs of `plans` (recorded
    missed, "held at deploy by ..."), each with its audit record; the plans whose runs are held."""
    held = [p for p in plans if p.runs]
    for planned in held:
        action = Action(now, actor, "hold", planned.name, "", {"runs": len(planned.runs), "until": now.isoformat()})
        audited(store, action, partial(store.hold_catchup, Hold(planned.name, actor, now)))
    return held


def _as_said(row: Mapping[str, Any]) -> dict[str, Any]:
    """Compare a job of this checkout as the other release described its own: without a function if it gave none."""
    return {} if row.get("function") else {"function": None}


def _row(spec: JobSpec) -> dict[str, Any]:
    """A job of this checkout as `list --json` says one: what identifies it across a rename."""
    return {"file": spec.file, "function": function_of(spec), "schedule": spec.schedule.describe()}


def _monitor_change(before: Mapping[str, Any] | None, spec: JobSpec) -> str | None:
    """What becomes of the job's Sentry monitor: created, changed (its schedule), or nothing."""
    had = before.get("monitor") if before is not None else None
    if spec.monitor is None:
        return "left behind" if had else None
    if had is None or had != spec.monitor:
        return "created"
    return "changed" if before is not None and before.get("schedule") != spec.schedule.describe() else None


def describe(plans: Sequence[JobPlan], *, known: bool) -> list[str]:
    """The plan as a person reads it: a summary line, then a line or two a job that changes."""
    kinds = ("added", "removed", "renamed", "replaced", "rescheduled")
    count = {kind: sum(p.change == kind for p in plans) for kind in kinds}
    runs, gives_up = sum(len(p.runs) for p in plans), sum(len(p.missed) for p in plans)
    summary = ", ".join(f"{n} {kind}" for kind, n in count.items() if n) or "no job added, removed or changed"
    lines = [f"plan: {summary}; at the next start catch-up runs {runs} slot(s) and gives up {gives_up}"]
    if not known:
        lines.append("  (no --against: schedules are not compared, and removed jobs are those with history)")
    marks = {"added": "+", "removed": "-", "renamed": "~", "replaced": "!", "rescheduled": "!", "unchanged": " "}
    for p in plans:
        said = []
        if p.change == "added":
            said.append(f"added: {p.schedule}; first at {p.next_slots[0] if p.next_slots else 'no slot'}")
        elif p.change == "removed":
            said.append(f"removed (was {p.old_schedule or 'known from its history'}); its history is kept")
        elif p.change == "renamed":
            how = (
                "the same file and schedule: a guess, that release does not say its functions"
                if p.guessed
                else ("the same function")
            )
            said.append(f"renamed from {p.was} ({how}); its history stays under {p.was}")
        elif p.change == "replaced":
            said.append("now another function under the same name: the history of the old one becomes its")
        elif p.change == "rescheduled":
            said.append(f"rescheduled: {p.schedule} (was {p.old_schedule})")
        if p.rescheduled and p.change in ("renamed", "replaced", "rescheduled"):
            if p.change != "rescheduled":
                said.append(f"    and rescheduled: {p.schedule} (was {p.old_schedule})")
            said.append(
                f"    next slots: {', '.join(p.next_slots) or 'none'} (were: {', '.join(p.old_next_slots) or '?'})"
            )
        if p.runs:
            shown = ", ".join(p.runs[:SHOWN]) + (f" and {len(p.runs) - SHOWN} more" if len(p.runs) > SHOWN else "")
            said.append(f"    catch-up runs {len(p.runs)} slot(s) at the next start: {shown}")
        if p.missed:
            given_up = f"more than {len(p.missed)}" if p.uncounted else str(len(p.missed))
            first, reason = min(p.missed)
            said.append(f"    catch-up gives up {given_up} slot(s), from {first}: {reason}")
        if p.monitor is not None:
            said.append(f"    its Sentry monitor is {p.monitor}")
        if p.in_flight:
            said.append(
                f"    {len(p.in_flight)} run(s) going now (slot {', '.join(p.in_flight[:SHOWN])}) "
                "finish under the release they started in"
            )
        if said and said[0].startswith("    "):  # a job that stays as it was, with a catch-up to say
            lines.append(f"{marks[p.change]} {p.name}:")
            lines.extend(said)
        elif said:
            lines.append(f"{marks[p.change]} {p.name}: {said[0]}")
            lines.extend(said[1:])
    return lines
