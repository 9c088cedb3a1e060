"""What the SQL stores share: every query of the StateStore interface, written once.

A backend supplies the connection (`_all`, `_one`, `_do` with `?` placeholders),
its table prefix, how it keeps a timestamp, and how a run gets its place in
insertion order. SQLite and PostgreSQL differ in nothing else.

How the schema changes, so that a rollback keeps working: a release refuses a
store whose SCHEMA_VERSION is newer than its own, so the version is raised only for
a change the release before cannot live with. A change it can ignore keeps the
version: a new table, or a new column with a default (every query names its
columns, so an older release neither reads nor fills it). Each backend adds what
is missing when it opens a store of its own version, marks the rows recorded before
the change as the older releases read them, and makes the store itself complete
what an older release still writes (a trigger), so rows written during a rollback
or a rolling upgrade read right to both releases. What an older release reads
keeps being written too: a paused skip still has the reason "paused", the one
thing releases before `runs.paused` know it by.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from jobhost.horizon import READABLE_EPOCHS
from jobhost.outcomes import RunStatus
from jobhost.store.model import (
    LEASE_EXPIRED,
    Heartbeat,
    PendingRetry,
    RunRecord,
    Settlement,
    SlotState,
    StateDump,
    TakenOver,
)
from jobhost.store.rows import STATUSES, SetAside, Unreadable, slot_of, status_of

# Outcomes that settle a slot (RunStatus.settles), for IN (...).
SETTLED_SQL = ",".join(f"'{status}'" for status in sorted(status for status in RunStatus if status.settles))
COLUMNS = "run_id, job, slot, attempt, status, reason, started, ended, duration_ms, host, pid, paused"
# A record that settles its slot: a settled outcome, and not a slot skipped while its job was paused
# (catch-up runs that one after the resume).
SETTLES = f"(status IN ({SETTLED_SQL}) AND NOT paused)"
# A run or a waiting slot still open: what a dead host leaves behind.
_OPEN = "(status = 'running' OR (status = 'waiting' AND ended IS NULL))"
# A record the engine can interpret, as far as SQL can tell (the rest is checked as rows are read).
_READABLE = (
    f"(status IN ({','.join(repr(s) for s in sorted(STATUSES))}) "
    f"AND slot_epoch >= {READABLE_EPOCHS[0]:.0f} AND slot_epoch < {READABLE_EPOCHS[1]:.0f})"
)


class SQLStore:
    """The queries; subclasses provide the connection and the few things that differ."""

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

    def _from_db(self, value: Any) -> dt.datetime | None:
        return value

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Everything inside is written at once or not at all."""
        raise NotImplementedError
        yield

    def _q(self, sql: str) -> str:
        return sql.replace("{t}", self.prefix)

    # -- the interface ---------------------------------------------------

    def add_run(self, record: RunRecord) -> None:
        seq = self._next_seq()
        self._do(
            self._q(
                f"INSERT INTO {{t}}runs ({COLUMNS}, slot_epoch{', seq' if seq else ''}) "
                f"VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?{', ' + seq if seq else ''})"
            ),
            (
                record.run_id,
                record.job,
                record.slot.isoformat(),
                record.attempt,
                str(record.status),
                record.reason,
                self._time(record.started),
                self._time(record.ended),
                record.duration_ms,
                record.host,
                record.pid,
                record.paused,
                record.slot.timestamp(),
            ),
        )

    def set_pid(self, run_id: str, pid: int) -> None:
        self._do(self._q("UPDATE {t}runs SET pid = ? WHERE run_id = ?"), (pid, run_id))

    def finish_run(
        self, run_id: str, status: RunStatus, reason: str, ended: dt.datetime, duration_ms: int | None
    ) -> None:
        self._do(
            self._q("UPDATE {t}runs SET status = ?, reason = ?, ended = ?, duration_ms = ? WHERE run_id = ?"),
            (str(status), reason, self._time(ended), duration_ms, run_id),
        )

    def runs(self, job: str | None = None, limit: int = 20, status: RunStatus | None = None) -> list[RunRecord]:
        where, params = [], []
        if job is not None:
            where.append("job = ?")
            params.append(job)
        if status is not None:
            where.append("status = ?")
            params.append(str(status))
        condition = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._all(
            self._q(f"SELECT {COLUMNS} FROM {{t}}runs {condition}ORDER BY seq DESC LIMIT ?"), (*params, limit)
        )
        return self._records(rows)

    def run(self, run_id: str) -> RunRecord | None:
        row = self._one(self._q(f"SELECT {COLUMNS} FROM {{t}}runs WHERE run_id = ?"), (run_id,))
        return None if row is None else self._record(row)

    def keep_lines(self, run_id: str, job: str, at: dt.datetime, lines: list[dict[str, Any]], dropped: int) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}run_lines (run_id, job, kept_at, dropped, lines) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET kept_at = excluded.kept_at, dropped = excluded.dropped, "
                "lines = excluded.lines"
            ),
            (run_id, job, self._time(at.astimezone(dt.UTC)), dropped, json.dumps(lines, ensure_ascii=False)),
        )

    def prune_lines(self, before: dt.datetime, limit: int) -> int:
        return self._do(
            self._q(
                "DELETE FROM {t}run_lines WHERE run_id IN "
                "(SELECT run_id FROM {t}run_lines WHERE kept_at < ? ORDER BY kept_at LIMIT ?)"
            ),
            (self._time(before.astimezone(dt.UTC)), limit),
        )

    def kept_lines(self, run_id: str) -> tuple[list[dict[str, Any]], int] | None:
        row = self._one(self._q("SELECT lines, dropped FROM {t}run_lines WHERE run_id = ?"), (run_id,))
        return None if row is None else (json.loads(row[0]), row[1])

    def add_retry(self, retry: PendingRetry) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}retries (job, slot, slot_epoch, attempt, due) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (job, slot_epoch) DO UPDATE SET attempt = excluded.attempt, due = excluded.due"
            ),
            (retry.job, retry.slot.isoformat(), retry.slot.timestamp(), retry.attempt, self._time(retry.due)),
        )

    def drop_retry(self, job: str, slot: dt.datetime) -> None:
        self._do(self._q("DELETE FROM {t}retries WHERE job = ? AND slot_epoch = ?"), (job, slot.timestamp()))

    def pending_retries(self) -> list[PendingRetry]:
        rows = self._all(self._q("SELECT job, slot, attempt, due FROM {t}retries ORDER BY due"))
        retries = []
        for job, slot, attempt, due in rows:
            try:
                retries.append(PendingRetry(self._stored_time("due", due), job, slot_of(slot), attempt))  # type: ignore[arg-type]
            except Unreadable as exc:
                self._set_aside.report("pending retry", f"{job}@{slot}", job, str(exc))
        return retries

    def succeeded_slots(self, job: str, start: dt.datetime, end: dt.datetime) -> set[float]:
        rows = self._all(
            self._q(
                "SELECT DISTINCT slot_epoch FROM {t}runs WHERE job = ? AND status = 'succeeded' "
                "AND slot_epoch BETWEEN ? AND ?"
            ),
            (job, start.timestamp(), end.timestamp()),
        )
        return {row[0] for row in rows}

    def prune(self, before: dt.datetime, limit: int) -> int:
        self.prune_lines(before, limit)  # the status page's lines go no later than the runs
        # By when the run was recorded, not by its slot: a backfill of last year is recent history.
        return self._do(
            self._q(
                "DELETE FROM {t}runs WHERE seq IN ("
                "  SELECT seq FROM {t}runs WHERE COALESCE(ended, started) < ? AND status != 'running'"
                "  AND seq NOT IN (SELECT MAX(seq) FROM {t}runs GROUP BY job)"
                f"  AND seq NOT IN (SELECT MAX(seq) FROM {{t}}runs WHERE status IN ({SETTLED_SQL}) GROUP BY job)"
                "  ORDER BY seq LIMIT ?)"
            ),
            (self._time(before.astimezone(dt.UTC)), limit),
        )

    def unsettled_slots(self, job: str, since: dt.datetime, before: dt.datetime) -> list[dt.datetime]:
        rows = self._all(
            self._q(
                f"SELECT MIN(slot), slot_epoch FROM {{t}}runs WHERE job = ? AND {_READABLE} "
                "AND slot_epoch >= ? AND slot_epoch < ? "
                "AND slot_epoch NOT IN (SELECT slot_epoch FROM {t}claims WHERE job = ? AND lease_until IS NOT NULL) "
                "GROUP BY slot_epoch "
                f"HAVING SUM(CASE WHEN {SETTLES} THEN 1 ELSE 0 END) = 0 "
                f"AND SUM(CASE WHEN {_OPEN} THEN 1 ELSE 0 END) = 0 "
                "ORDER BY slot_epoch"
            ),
            (job, since.timestamp(), before.timestamp(), job),
        )
        slots = []
        for slot, _ in rows:
            try:
                slots.append(slot_of(slot))
            except Unreadable as exc:
                self._set_aside.report("slot", str(slot), job, str(exc))
        return slots

    def final_status(self, job: str, slot: dt.datetime) -> RunStatus | None:
        row = self._one(
            self._q(
                f"SELECT status FROM {{t}}runs WHERE job = ? AND slot_epoch = ? AND {SETTLES} ORDER BY seq DESC LIMIT 1"
            ),
            (job, slot.timestamp()),
        )
        return None if row is None else RunStatus(row[0])

    def settled_slots(self) -> dict[str, dt.datetime]:
        rows = self._all(
            self._q(
                f"SELECT job, MAX(CASE WHEN {SETTLES} THEN slot_epoch END), "
                f"MIN(slot_epoch) FROM {{t}}runs WHERE {_READABLE} GROUP BY job"
            )
        )
        bases = {}
        for job, newest_settled, oldest in rows:
            # A job with runs but none settled (its first run was interrupted) starts before its oldest.
            epoch = newest_settled if newest_settled is not None else oldest - 1e-6
            bases[job] = dt.datetime.fromtimestamp(epoch, dt.UTC)
        return bases

    def last_statuses(self) -> dict[str, RunStatus]:
        rows = self._all(
            self._q(
                f"SELECT job, status FROM {{t}}runs WHERE seq IN "
                f"(SELECT MAX(seq) FROM {{t}}runs WHERE {_READABLE} GROUP BY job)"
            )
        )
        return {job: RunStatus(status) for job, status in rows}

    def set_paused(self, job: str, paused: bool) -> None:
        resumed = 0 if paused else 1  # counted, so a pause and resume between two looks is still seen
        self._do(
            self._q(
                "INSERT INTO {t}job_state (job, paused, resumes) VALUES (?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET paused = excluded.paused, "
                "resumes = {t}job_state.resumes + excluded.resumes"
            ),
            (job, paused, resumed),
        )

    def resumes(self) -> dict[str, int]:
        rows = self._all(self._q("SELECT job, resumes FROM {t}job_state WHERE NOT paused"))
        return {job: count for job, count in rows}

    def paused_jobs(self) -> set[str]:
        return {row[0] for row in self._all(self._q("SELECT job FROM {t}job_state WHERE paused"))}

    def running(self, host: str) -> list[RunRecord]:
        rows = self._all(self._q(f"SELECT {COLUMNS} FROM {{t}}runs WHERE {_OPEN} AND host = ? ORDER BY seq"), (host,))
        return self._records(rows)

    def beat(self, host: str, pid: int, at: dt.datetime, *, stopped: bool = False) -> None:
        self._do(
            self._q(
                "INSERT INTO {t}heartbeats (host, pid, beat_at, stopped) VALUES (?, ?, ?, ?) ON CONFLICT (host) "
                "DO UPDATE SET pid = excluded.pid, beat_at = excluded.beat_at, stopped = excluded.stopped"
            ),
            (host, pid, self._time(at), stopped),
        )

    def heartbeat(self, host: str) -> Heartbeat | None:
        row = self._one(self._q("SELECT pid, beat_at, stopped FROM {t}heartbeats WHERE host = ?"), (host,))
        if row is None:
            return None
        return Heartbeat(host, row[0], self._from_db(row[1]), bool(row[2]))  # type: ignore[arg-type]

    # -- claims ------------------------------------------------------------

    def claim(
        self, job: str, slot: dt.datetime, attempt: int, run_id: str, host: str, lease: float | None
    ) -> int | None:
        lease_sql = "NULL" if lease is None else f"{self._now()} + ?"
        row = self._one(
            self._q(
                "INSERT INTO {t}claims (job, slot, slot_epoch, attempt, run_id, host, token, lease_until) "
                f"VALUES (?, ?, ?, ?, ?, ?, {self._new_token()}, {lease_sql}) "
                "ON CONFLICT (job, slot_epoch, attempt) DO NOTHING RETURNING token"
            ),
            (job, slot.isoformat(), slot.timestamp(), attempt, run_id, host) + (() if lease is None else (lease,)),
        )
        return None if row is None else row[0]

    def claim_and_record(self, record: RunRecord) -> bool:
        with self._transaction():
            if self.claim(record.job, record.slot, record.attempt, record.run_id, record.host, None) is None:
                return False
            self.add_run(record)
        return True

    def _release(self, token: int) -> bool:
        """Settle a held claim; False if `token` no longer holds it."""
        return (
            self._do(
                self._q("UPDATE {t}claims SET lease_until = NULL WHERE token = ? AND lease_until IS NOT NULL"), (token,)
            )
            == 1
        )

    def start_run(self, record: RunRecord, token: int | None) -> bool:
        if token is None:
            self.add_run(record)
            return True
        with self._transaction():
            held = self._do(
                self._q("UPDATE {t}claims SET run_id = ? WHERE token = ? AND lease_until IS NOT NULL"),
                (record.run_id, token),
            )
            if held != 1:
                return False
            self.add_run(record)
        return True

    def settle(self, settlement: Settlement, token: int | None) -> bool:
        s = settlement
        with self._transaction():
            if token is not None and not self._release(token):
                return False
            self.finish_run(s.run_id, s.status, s.reason, s.ended, s.duration_ms)
            self._do(
                self._q("DELETE FROM {t}retries WHERE job = ? AND slot_epoch = ? AND attempt <= ?"),
                (s.job, s.slot.timestamp(), s.attempt),
            )
            if s.retry is not None:
                self.add_retry(s.retry)
        return True

    def record_unstarted(self, record: RunRecord, token: int) -> bool:
        with self._transaction():
            if not self._release(token):
                return False
            self.add_run(record)
        return True

    def withdraw(self, run_id: str, token: int | None) -> bool:
        with self._transaction():
            if token is not None:  # the claim is let go at once: another host (or the next start) takes it over
                expired = self._do(
                    self._q(
                        f"UPDATE {{t}}claims SET lease_until = {self._now()} - 1 "
                        "WHERE token = ? AND run_id = ? AND lease_until IS NOT NULL"
                    ),
                    (token, run_id),
                )
                if expired != 1:
                    return False
            self._do(self._q("DELETE FROM {t}runs WHERE run_id = ? AND status = 'running'"), (run_id,))
        return True

    def renew(self, tokens: list[int], lease: float) -> set[int]:
        if not tokens:
            return set()
        marks = ", ".join("?" * len(tokens))
        rows = self._all(
            self._q(
                f"UPDATE {{t}}claims SET lease_until = {self._now()} + ? "
                f"WHERE token IN ({marks}) AND lease_until IS NOT NULL RETURNING token"
            ),
            (lease, *tokens),
        )
        return {row[0] for row in rows}

    def take_over(
        self, host: str, jobs: list[str], lease: float, now: dt.datetime, *, own: bool = False
    ) -> list[TakenOver]:
        if not jobs:
            return []
        marks = ", ".join("?" * len(jobs))
        which = "host = ?" if own else f"lease_until < {self._now()}"
        taken = []
        with self._transaction():
            rows = self._all(
                self._q(
                    "SELECT job, slot, attempt, run_id, host, token FROM {t}claims "
                    f"WHERE lease_until IS NOT NULL AND {which} AND job IN ({marks}) "
                    f"ORDER BY lease_until LIMIT 100{self._skip_locked}"
                ),
                ((host,) if own else ()) + tuple(jobs),
            )
            for job, slot, attempt, run_id, previous, token in rows:
                run = self._one(self._q("SELECT status, ended FROM {t}runs WHERE run_id = ?"), (run_id,))
                try:
                    slot_at = slot_of(slot)
                    status = None if run is None else status_of(run[0])
                except Unreadable as exc:
                    self._set_aside.report("claim", f"{job}@{slot} attempt {attempt}", job, str(exc))
                    continue
                if status == RunStatus.RUNNING and own:
                    continue  # its process is still alive (recovery left it): not ours to take
                if status not in (None, RunStatus.RUNNING, RunStatus.WAITING):
                    self._release(token)  # already recorded as ended; only the release was lost
                    continue
                row = self._one(
                    self._q(
                        f"UPDATE {{t}}claims SET host = ?, token = {self._new_token()}, "
                        f"lease_until = {self._now()} + ? WHERE token = ? RETURNING token"
                    ),
                    (host, lease, token),
                )
                reason = LEASE_EXPIRED.format(previous=previous, taker=host)
                if status == RunStatus.RUNNING:
                    self.finish_run(run_id, RunStatus.ABANDONED, reason, now, None)
                elif status == RunStatus.WAITING:  # closed if still open; the slot is looked at anew
                    self._do(
                        self._q("UPDATE {t}runs SET reason = ?, ended = ? WHERE run_id = ? AND ended IS NULL"),
                        (reason, self._time(now), run_id),
                    )
                abandoned = status == RunStatus.RUNNING
                taken.append(TakenOver(job, slot_at, attempt, run_id, previous, row[0], abandoned))  # type: ignore[index]
        return taken

    def slot_state(self, job: str, slot: dt.datetime) -> SlotState:
        epoch = slot.timestamp()
        row = self._one(
            self._q(
                "SELECT (SELECT MAX(attempt) FROM {t}claims WHERE job = ? AND slot_epoch = ?), "
                "(SELECT MAX(attempt) FROM {t}runs WHERE job = ? AND slot_epoch = ?), "
                "EXISTS (SELECT 1 FROM {t}claims WHERE job = ? AND slot_epoch = ? AND lease_until IS NOT NULL), "
                f"EXISTS (SELECT 1 FROM {{t}}runs WHERE job = ? AND slot_epoch = ? AND {SETTLES})"
            ),
            (job, epoch) * 4,
        )
        claimed, recorded, held, settled = row  # type: ignore[misc]
        return SlotState(max(claimed or 0, recorded or 0), bool(held), bool(settled))

    def running_runs(self, job: str) -> list[RunRecord]:
        rows = self._all(
            self._q(f"SELECT {COLUMNS} FROM {{t}}runs WHERE job = ? AND status = 'running' ORDER BY seq"), (job,)
        )
        return self._records(rows)

    def database_time(self) -> dt.datetime:
        row = self._one(f"SELECT {self._now()}")
        return dt.datetime.fromtimestamp(row[0], dt.UTC)  # type: ignore[index]

    def probe(self) -> None:
        with self._transaction():  # changed and changed back: a page is written (an equal value is not)
            for _ in range(2):
                self._do(self._q("UPDATE {t}schema_version SET version = -version"))

    def dump(self) -> StateDump:
        """Everything a move to another store needs: runs in the order recorded, pending retries,
        paused jobs."""
        rows = self._all(self._q(f"SELECT {COLUMNS} FROM {{t}}runs ORDER BY seq"))
        return StateDump(self._records(rows), self.pending_retries(), self.paused_jobs())

    def load(self, dump: StateDump) -> None:
        """Add a dump's contents (to an empty store), all or nothing: a load that fails part way
        leaves the store as empty as it was, so it can simply be run again."""
        with self._transaction():
            for record in dump.runs:
                self.add_run(record)
            for retry in dump.retries:
                self.add_retry(retry)
            for job in dump.paused:
                self.set_paused(job, True)

    def report_unreadable(self, limit: int = 100) -> int:
        rows = self._all(
            self._q(f"SELECT run_id, job, slot, status FROM {{t}}runs WHERE NOT {_READABLE} ORDER BY seq LIMIT ?"),
            (limit,),
        )
        for run_id, job, slot, status in rows:
            try:
                status_of(status)
                slot_of(slot)
                problem = f"slot {slot!r} and its epoch disagree"
            except Unreadable as exc:
                problem = str(exc)
            self._set_aside.report("run", run_id, job, problem)
        return len(rows)

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
        run_id, job, slot, attempt, status, reason, started, ended, duration_ms, host, pid, paused = row
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
            )
        except Unreadable as exc:
            self._set_aside.report("run", run_id, job, str(exc))
            return None
