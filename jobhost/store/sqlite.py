"""The SQLite state store: the embedded default, one file, write-ahead log."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from jobhost.descriptors import blind_in_children, forget
from jobhost.errors import StoreError
from jobhost.filelocks import LockHolders, flock_holders
from jobhost.store.sql import SQLStore

# 2: claims, resumes. Tables added since (run_lines) need no new version: a host of an earlier
# release ignores them, so a rollback or a rolling upgrade keeps working.
SCHEMA_VERSION = 2

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
    paused  INTEGER NOT NULL DEFAULT 0,
    resumes INTEGER NOT NULL DEFAULT 0  -- times resumed, for hosts to notice a short pause
);
CREATE TABLE IF NOT EXISTS claims (
    job         TEXT NOT NULL,
    slot        TEXT NOT NULL,
    slot_epoch  REAL NOT NULL,
    attempt     INTEGER NOT NULL,
    run_id      TEXT NOT NULL,          -- the run (or waiting record) the claim covers now
    host        TEXT NOT NULL,
    token       INTEGER NOT NULL,       -- fencing token, new at each claim and takeover
    lease_until REAL,                   -- POSIX seconds, NULL once the attempt has settled
    PRIMARY KEY (job, slot_epoch, attempt)
);
CREATE INDEX IF NOT EXISTS claims_held ON claims (lease_until) WHERE lease_until IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS claims_by_token ON claims (token);
CREATE TABLE IF NOT EXISTS run_lines (
    run_id  TEXT PRIMARY KEY,
    job     TEXT NOT NULL,
    kept_at TEXT NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0, -- earlier lines of the run not kept
    lines   TEXT NOT NULL               -- a JSON array of the run's last log lines
);
CREATE INDEX IF NOT EXISTS run_lines_by_age ON run_lines (kept_at);
"""


OPEN_TIMEOUT = 10.0  # seconds an open waits for another process's lock on the file


class SQLiteStore(SQLStore):
    """Run history and job state in one SQLite file (see StateStore for the methods)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock_fd: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=OPEN_TIMEOUT)
            self._use_wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot use the SQLite state file {str(path)!r}: {exc}") from exc

    def _use_wal(self) -> None:
        """Turn the file to write-ahead logging. Two processes opening a new file at once (the host
        and a `history` typed meanwhile) race for it, and SQLite answers the loser "database is
        locked" at once, without waiting: so wait here, as the connection's timeout would."""
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self) -> None:
        if self._current():  # nothing to write: a reader never waits for another process's write lock
            return
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
            elif row[0] < SCHEMA_VERSION:  # the statements above added the new tables; now the columns
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(job_state)")}
                if "resumes" not in columns:
                    self._db.execute("ALTER TABLE job_state ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0")
                self._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"the state file {str(self.path)!r} has schema version {row[0]}, newer than this "
                    f"jobhost's {SCHEMA_VERSION}; run a newer jobhost or point JOBS_STATE_URL elsewhere"
                )

    def _current(self) -> bool:
        try:
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.OperationalError:  # no such table: a new file, or not ours (told below)
            return False
        if row is None or row[0] != SCHEMA_VERSION:
            return False
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'run_lines'").fetchone() is not None

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        rows = self._db.execute(sql, params).fetchall()  # all: a RETURNING statement ends only when read out
        return rows[0] if rows else None

    def _do(self, sql: str, params: tuple = ()) -> int:
        return self._db.execute(sql, params).rowcount

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _next_seq(self) -> str:
        return "(SELECT COALESCE(MAX(seq), 0) + 1 FROM runs)"

    def _new_token(self) -> str:
        return "(SELECT COALESCE(MAX(token), 0) + 1 FROM claims)"  # one writer at a time: no race

    def _now(self) -> str:
        return "((julianday('now') - 2440587.5) * 86400.0)"

    def _time(self, value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    def _from_db(self, value: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value) if value is not None else None

    def lock_for_loop(self, pid: int, host: str = "") -> None:
        """One forever loop per state file on a machine: an exclusive flock() on the state file itself,
        so that every name of it (a hard link, a symlink, another path) meets the same lock.

        flock() and SQLite's own POSIX locks on the file do not interact on Linux; a POSIX lock of
        ours would, and would be dropped whenever any SQLite connection of this process closes.
        The lock is this process's alone: no process it forks keeps it (see `blind_in_children`).
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(f"cannot lock the SQLite state file {str(self.path)!r}: {exc.strerror}") from None
        # Closed only after the connection (see close), also when the lock is refused: closing a
        # descriptor of the file drops every POSIX lock this process holds on it, SQLite's too.
        self._lock_fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(_refusal(self.path, flock_holders(fd))) from None
        blind_in_children(fd)

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            forget(self._lock_fd)
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _refusal(path: Path, lock: LockHolders) -> str:
    """Why this loop may not start on `path`, naming what holds its lock: another loop, or a process
    that outlived the loop it was forked from (a job's daemon of a release before descriptors were
    let go of in runs)."""
    where = str(path)
    if lock.taker_holds_it:
        [loop] = [holder for holder in lock.holders if holder.pid == lock.taker]
        by = "" if loop.name == where else f" (as {loop.name!r}: the same file under another name)"
        return (
            f"another host loop (pid {loop.pid}) is running against {where!r}{by}; "
            "stop it first, or give this one its own JOBS_STATE_URL"
        )
    if lock.holders:
        pids = " ".join(str(holder.pid) for holder in lock.holders)
        who = "; ".join(f"pid {holder.pid}: {holder.command}" for holder in lock.holders)
        return (
            f"no host loop is running against {where!r}, but processes left behind by one (pid "
            f"{lock.taker}, gone) hold its lock: {who}; stop them (kill {pids}) and start again"
        )
    taker = f"pid {lock.taker}" if lock.taker else "a process this user cannot see"
    return f"the state file {where!r} is locked by {taker}; stop the host loop using it first"
