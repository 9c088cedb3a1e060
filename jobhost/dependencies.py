"""`after=`: which parent slot a child's slot waits for, and whether it has succeeded.

"The same slot" across two schedules means the newest parent slot not later
than the child's slot: a 03:00 export `after` a 02:30 build waits for that
night's 02:30 build; an hourly job after a daily one waits for today's run.
"""

from __future__ import annotations

import datetime as dt

from jobhost.definition.spec import JobSpec
from jobhost.store import StateStore


def parent_slots(spec: JobSpec, slot: dt.datetime, jobs: dict[str, JobSpec]) -> list[tuple[str, dt.datetime]]:
    """Each parent of `spec` with the slot of it that `slot` waits for (parents with none are left out)."""
    found = []
    for parent in spec.after:
        parent_spec = jobs.get(parent)
        parent_slot = parent_spec.schedule.latest_slot(slot) if parent_spec else None
        if parent_slot is not None:
            found.append((parent, parent_slot))
    return found


def unmet(
    spec: JobSpec, slot: dt.datetime, jobs: dict[str, JobSpec], store: StateStore
) -> list[tuple[str, dt.datetime]]:
    """The parent slots that have not succeeded yet."""
    return [
        (parent, parent_slot)
        for parent, parent_slot in parent_slots(spec, slot, jobs)
        if parent_slot.timestamp() not in store.succeeded_slots(parent, parent_slot, parent_slot)
    ]


def describe(missing: list[tuple[str, dt.datetime]]) -> str:
    return ", ".join(f"{parent} (slot {parent_slot.isoformat()})" for parent, parent_slot in missing)
