"""The SQLite state store: the embedded default, one file, write-ahead log."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import sqlite3
from pathlib import Path

from jobhost.errors import StoreError
from jobhost.outcomes import RunStatus
from jobhost.retries import PendingRetry
from jobhost.store.base import SETTLED, Heartbeat, RunRecord

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    job         TEXT NOT NULL,
    slot        TEXT NOT NULL,          -- ISO 8601 with the job's offset
    slot_epoch  REAL NOT NULL,          -- the same instant, for ordering and lookups
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    started     TEXT,
    ended       TEXT,
    duration_ms INTEGER,
    host        TEXT NOT NULL DEFAULT '',
    pid         INTEGER,
    seq         INTEGER NOT NULL        -- insertion order, newest last
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, seq);
CREATE INDEX IF NOT EXISTS runs_by_seq ON runs (seq);
CREATE INDEX IF NOT EXISTS runs_running ON runs (status) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS heartbeats (
    host    TEXT PRIMARY KEY,
    pid     INTEGER NOT NULL,
    beat_at TEXT NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0  -- 1 once the loop has stopped cleanly
);
CREATE TABLE IF NOT EXISTS retries (
    job     TEXT NOT NULL,
    slot    TEXT NOT NULL,
    slot_epoch REAL NOT NULL,
    attempt INTEGER NOT NULL,           -- the attempt still to make
    due     TEXT NOT NULL,
    PRIMARY KEY (job, slot_epoch)
);
CREATE TABLE IF NOT EXISTS job_state (
    job     TEXT PRIMARY KEY,
    paused  INTEGER NOT NULL DEFAULT 0
);
"""

_SETTLED_SQL = ",".join(f"'{status}'" for status in sorted(SETTLED))  # for IN (...)
_COLUMNS = "run_id, job, slot, attempt, status, reason, started, ended, duration_ms, host, pid"


class SQLiteStore:
    """Run history and job state in one SQLite file (see StateStore for the methods)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock_fd: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot use the SQLite state file {str(path)!r}: {exc}") from exc

    def _migrate(self) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "schema_version" not in tables:
                raise StoreError(
                    f"{str(self.path)!r} is an SQLite database but not a jobhost state file "
                    f"(it has tables {', '.join(sorted(tables))}); it was left untouched"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"the state file {str(self.path)!r} has schema version {row[0]}, newer than this "
                    f"jobhost's {SCHEMA_VERSION}; run a newer jobhost or point JOBS_STATE_URL elsewhere"
                )

    def add_run(self, record: RunRecord) -> None:
        self._db.execute(
            f"INSERT INTO runs ({_COLUMNS}, slot_epoch, seq) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM runs))",
            (
                record.run_id,
                record.job,
                record.slot.isoformat(),
                record.attempt,
                str(record.status),
                record.reason,
                _iso(record.started),
                _iso(record.ended),
                record.duration_ms,
                record.host,
                record.pid,
                record.slot.timestamp(),
            ),
        )

    def set_pid(self, run_id: str, pid: int) -> None:
        self._db.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (pid, run_id))

    def finish_run(
        self, run_id: str, status: RunStatus, reason: str, ended: dt.datetime, duration_ms: int | None
    ) -> None:
        self._db.execute(
            "UPDATE runs SET status = ?, reason = ?, ended = ?, duration_ms = ? WHERE run_id = ?",
            (str(status), reason, _iso(ended), duration_ms, run_id),
        )

    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        if job is None:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM runs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE job = ? ORDER BY seq DESC LIMIT ?", (job, limit)
            )
        return [_record(row) for row in rows]

    def add_retry(self, retry: PendingRetry) -> None:
        self._db.execute(
            "INSERT INTO retries (job, slot, slot_epoch, attempt, due) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (job, slot_epoch) DO UPDATE SET attempt = excluded.attempt, due = excluded.due",
            (retry.job, retry.slot.isoformat(), retry.slot.timestamp(), retry.attempt, _iso(retry.due)),
        )

    def drop_retry(self, job: str, slot: dt.datetime) -> None:
        self._db.execute("DELETE FROM retries WHERE job = ? AND slot_epoch = ?", (job, slot.timestamp()))

    def pending_retries(self) -> list[PendingRetry]:
        rows = self._db.execute("SELECT job, slot, attempt, due FROM retries ORDER BY due")
        return [
            PendingRetry(dt.datetime.fromisoformat(due), job, dt.datetime.fromisoformat(slot), attempt)
            for job, slot, attempt, due in rows
        ]

    def succeeded_slots(self, job: str, start: dt.datetime, end: dt.datetime) -> set[float]:
        rows = self._db.execute(
            "SELECT DISTINCT slot_epoch FROM runs WHERE job = ? AND status = 'succeeded' AND slot_epoch BETWEEN ? AND ?",
            (job, start.timestamp(), end.timestamp()),
        )
        return {row[0] for row in rows}

    def prune(self, before: dt.datetime, limit: int) -> int:
        # By when the run was recorded, not by its slot: a backfill of last year is recent history.
        cursor = self._db.execute(
            "DELETE FROM runs WHERE seq IN ("
            "  SELECT seq FROM runs WHERE COALESCE(ended, started) < ? AND status != 'running'"
            "  AND seq NOT IN (SELECT MAX(seq) FROM runs GROUP BY job)"
            f"  AND seq NOT IN (SELECT MAX(seq) FROM runs WHERE status IN ({_SETTLED_SQL}) GROUP BY job)"
            "  ORDER BY seq LIMIT ?)",
            (before.astimezone(dt.UTC).isoformat(), limit),
        )
        return cursor.rowcount

    def unsettled_slots(self, job: str, since: dt.datetime, before: dt.datetime) -> list[dt.datetime]:
        rows = self._db.execute(
            "SELECT MIN(slot), slot_epoch FROM runs WHERE job = ? AND slot_epoch >= ? AND slot_epoch < ? "
            "GROUP BY slot_epoch "
            f"HAVING SUM(CASE WHEN status IN ({_SETTLED_SQL}) AND reason != 'paused' THEN 1 ELSE 0 END) = 0 "
            "AND SUM(CASE WHEN status = 'running' OR (status = 'waiting' AND ended IS NULL) THEN 1 ELSE 0 END) = 0 "
            "ORDER BY slot_epoch",
            (job, since.timestamp(), before.timestamp()),
        )
        return [dt.datetime.fromisoformat(slot) for slot, _ in rows]

    def final_status(self, job: str, slot: dt.datetime) -> RunStatus | None:
        row = self._db.execute(
            f"SELECT status FROM runs WHERE job = ? AND slot_epoch = ? AND status IN ({_SETTLED_SQL}) "
            "AND reason != 'paused' ORDER BY seq DESC LIMIT 1",
            (job, slot.timestamp()),
        ).fetchone()
        return None if row is None else RunStatus(row[0])

    def settled_slots(self) -> dict[str, dt.datetime]:
        rows = self._db.execute(
            f"SELECT job, MAX(CASE WHEN status IN ({_SETTLED_SQL}) AND reason != 'paused' THEN slot_epoch END), "
            "MIN(slot_epoch) FROM runs GROUP BY job"
        )
        bases = {}
        for job, newest_settled, oldest in rows:
            # A job with runs but none settled (its first run was interrupted) starts before its oldest.
            epoch = newest_settled if newest_settled is not None else oldest - 1e-6
            bases[job] = dt.datetime.fromtimestamp(epoch, dt.UTC)
        return bases

    def last_statuses(self) -> dict[str, RunStatus]:
        rows = self._db.execute("SELECT job, status FROM runs WHERE seq IN (SELECT MAX(seq) FROM runs GROUP BY job)")
        return {job: RunStatus(status) for job, status in rows}

    def set_paused(self, job: str, paused: bool) -> None:
        self._db.execute(
            "INSERT INTO job_state (job, paused) VALUES (?, ?) ON CONFLICT (job) DO UPDATE SET paused = excluded.paused",
            (job, int(paused)),
        )

    def paused_jobs(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT job FROM job_state WHERE paused")}

    def running(self, host: str) -> list[RunRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE (status = 'running' OR (status = 'waiting' AND ended IS NULL)) "
            "AND host = ? ORDER BY seq",
            (host,),
        )
        return [_record(row) for row in rows]

    def beat(self, host: str, pid: int, at: dt.datetime, *, stopped: bool = False) -> None:
        self._db.execute(
            "INSERT INTO heartbeats (host, pid, beat_at, stopped) VALUES (?, ?, ?, ?) ON CONFLICT (host) "
            "DO UPDATE SET pid = excluded.pid, beat_at = excluded.beat_at, stopped = excluded.stopped",
            (host, pid, _iso(at), int(stopped)),
        )

    def heartbeat(self, host: str) -> Heartbeat | None:
        row = self._db.execute("SELECT pid, beat_at, stopped FROM heartbeats WHERE host = ?", (host,)).fetchone()
        return None if row is None else Heartbeat(host, row[0], dt.datetime.fromisoformat(row[1]), bool(row[2]))

    def lock_for_loop(self, pid: int) -> None:
        """One forever loop per state file on a machine: an exclusive lock on ``<file>.lock``."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"another host loop (pid {holder}) is running against {str(self.path)!r}; "
                "stop it first, or give this one its own JOBS_STATE_URL"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{pid}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value is not None else None


def _record(row: tuple) -> RunRecord:
    run_id, job, slot, attempt, status, reason, started, ended, duration_ms, host, pid = row
    return RunRecord(
        run_id=run_id,
        job=job,
        slot=dt.datetime.fromisoformat(slot),
        attempt=attempt,
        status=RunStatus(status),
        reason=reason,
        started=_parse(started),
        ended=_parse(ended),
        duration_ms=duration_ms,
        host=host,
        pid=pid,
    )
