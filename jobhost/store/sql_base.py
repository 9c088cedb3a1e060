"""The seam between the SQL stores' queries and a backend: what a backend provides, the fragments the
queries share, and how a row becomes a record.

A backend supplies the connection (`_all`, `_one`, `_do` with `?` placeholders),
its table prefix, how it keeps a timestamp, and how a run gets its place in
insertion order. SQLite and PostgreSQL differ in nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

from jobhost.horizon import READABLE_EPOCHS
from jobhost.outcomes import RunStatus
from jobhost.store.model import RunRecord
from jobhost.store.rows import STATUSES, SetAside, Unreadable, params_of, slot_of, status_of

# Outcomes that settle a slot (RunStatus.settles), for IN (...).
SETTLED_SQL = ",".join(f"'{status}'" for status in sorted(status for status in RunStatus if status.settles))
COLUMNS = (
    "run_id, job, slot, attempt, status, reason, started, ended, duration_ms, host, pid, paused, params, "
    "requested_by, one_off"
)
# A record that settles its slot: a settled outcome, and not a slot skipped while its job was paused
# (catch-up runs that one after the resume), nor a run at an instant a person chose (no slot of the
# schedule: it leaves catch-up where it was).
SETTLES = f"(status IN ({SETTLED_SQL}) AND NOT paused AND NOT one_off)"
# A run or a waiting slot still open: what a dead host leaves behind.
OPEN = "(status = 'running' OR (status = 'waiting' AND ended IS NULL))"
# A record the engine can interpret, as far as SQL can tell (the rest is checked as rows are read).
READABLE = (
    f"(status IN ({','.join(repr(s) for s in sorted(STATUSES))}) "
    f"AND slot_epoch >= {READABLE_EPOCHS[0]:.0f} AND slot_epoch < {READABLE_EPOCHS[1]:.0f})"
)


class SQLBase:
    """The connection and the few things that differ, which a backend provides; reading rows back."""

    prefix = ""  # table name prefix
    shared: bool  # several hosts may use it at once (claims are then contended, leases taken over)

    # -- what a backend provides -----------------------------------------

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        raise NotImplementedError

    def _do(self, sql: str, params: tuple = ()) -> int:
        raise NotImplementedError

    def _next_seq(self) -> str:
        """SQL for the new run's place in insertion order ('' when the column fills itself)."""
        raise NotImplementedError

    def _now(self) -> str:
        """SQL for the database's clock in POSIX seconds: leases are timed by one clock for all hosts."""
        raise NotImplementedError

    def _new_token(self) -> str:
        """SQL for a fencing token never given before."""
        raise NotImplementedError

    _skip_locked = ""  # what makes concurrent takers of expired claims pass each other by

    def _time(self, value: dt.datetime | None) -> Any:
        """A timestamp as the database keeps it."""
        return value

    def _utc(self, value: dt.datetime | None) -> Any:
        """A timestamp in UTC as the database keeps it: what is compared in SQL compares alike."""
        return self._time(value.astimezone(dt.UTC) if value is not None else None)

    def _from_db(self, value: Any) -> dt.datetime | None:
        return value

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Everything inside is written at once or not at all."""
        raise NotImplementedError
        yield

    def _q(self, sql: str) -> str:
        return sql.replace("{t}", self.prefix)

    # -- reading rows back --------------------------------------------------

    @property
    def _set_aside(self) -> SetAside:
        if "_aside" not in self.__dict__:
            self._aside = SetAside()
        return self._aside

    def _stored_time(self, field: str, value: Any) -> dt.datetime | None:
        try:
            return self._from_db(value)
        except (ValueError, TypeError):
            raise Unreadable(f"{field} {value!r} is not an ISO 8601 time") from None

    def _records(self, rows: list[tuple[Any, ...]]) -> list[RunRecord]:
        return [record for record in map(self._record, rows) if record is not None]

    def _record(self, row: tuple[Any, ...]) -> RunRecord | None:
        """The run a row holds, or None (reported once) if the engine cannot interpret it."""
        run_id, job, slot, attempt, status, reason, started, ended, duration_ms, host, pid, paused, params, by, one = (
            row
        )
        try:
            return RunRecord(
                run_id=run_id,
                job=job,
                slot=slot_of(slot),
                attempt=attempt,
                status=status_of(status),
                reason=reason,
                started=self._stored_time("started", started),
                ended=self._stored_time("ended", ended),
                duration_ms=duration_ms,
                host=host,
                pid=pid,
                paused=bool(paused),
                params=params_of(params),
                requested_by=by,
                one_off=bool(one),
            )
        except Unreadable as exc:
            self._set_aside.report("run", run_id, job, str(exc))
            return None
