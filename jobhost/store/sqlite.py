"""The SQLite state store: the embedded default, one file, write-ahead log.

A fault of the file (a full or read-only disk, an I/O error, a damaged file, the file
deleted or replaced under the host) is raised as StoreFailing, so the loop holds what it
cannot write, as for an unreachable database. A damaged file stays refused until the host
is restarted on a good one; a file deleted or replaced is refused until the path holds it
again, so nothing is written into a file nobody will read.
"""

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
from jobhost.errors import LoopRunning, StoreError, StoreFailing
from jobhost.filelocks import LockHolders, flock_holders
from jobhost.store.sql import SQLStore

# 2: claims, resumes. What was added since (_ADDED_TABLES, _ADDED_COLUMNS) needs no new version: a host of
# the release before ignores it, so a rollback keeps working (the rule: store/sql.py).
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
    paused      INTEGER NOT NULL DEFAULT 0, -- 1: skipped while the job was paused, settles nothing
    params      TEXT,                   -- a JSON object of the keyword arguments given by hand, or NULL
    requested_by TEXT NOT NULL DEFAULT '', -- who asked for the run by hand, '' for the schedule
    one_off     INTEGER NOT NULL DEFAULT 0, -- 1: a run at an instant a person chose, settles no slot
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
    job     TEXT PRIMARY KEY,           -- a job, or '*': the freeze, a pause of every job
    paused  INTEGER NOT NULL DEFAULT 0,
    resumes INTEGER NOT NULL DEFAULT 0, -- times resumed, for hosts to notice a short pause
    reason  TEXT NOT NULL DEFAULT '',   -- why it is paused
    paused_by TEXT NOT NULL DEFAULT '',
    paused_at TEXT,
    paused_until TEXT                   -- when it resumes by itself, or NULL
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
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,              -- the OS user of a command, the token's name over HTTP
    action  TEXT NOT NULL,              -- run, cancel, pause, resume, freeze, thaw, backfill
    target  TEXT NOT NULL,              -- a job, a run id, or '*' for every job
    reason  TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT '{}'  -- a JSON object: the slot, the parameters, the until
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at);
CREATE TABLE IF NOT EXISTS cancels (
    run_id    TEXT PRIMARY KEY,         -- the run (or one-off) to cancel
    job       TEXT NOT NULL,
    asked_by  TEXT NOT NULL,
    asked_at  TEXT NOT NULL,
    done_at   TEXT,                     -- when the host running it acted on it
    reason    TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS catchup_holds (
    job      TEXT PRIMARY KEY,          -- its catch-up runs at the next start are given up
    held_by  TEXT NOT NULL,
    held_at  TEXT NOT NULL              -- slots up to this instant
);
CREATE TABLE IF NOT EXISTS one_offs (
    run_id       TEXT PRIMARY KEY,      -- the id its run will have
    job          TEXT NOT NULL,
    slot         TEXT NOT NULL,         -- the instant it runs at, ISO 8601
    slot_epoch   REAL NOT NULL,
    params       TEXT,                  -- a JSON object of keyword arguments, or NULL
    requested_by TEXT NOT NULL,
    asked_at     TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending' -- pending, taken (a host claimed it), cancelled
);
CREATE INDEX IF NOT EXISTS one_offs_pending ON one_offs (slot_epoch) WHERE state = 'pending';
"""

# Columns added to the tables of SCHEMA_VERSION since, each with a default an older release never
# needs to fill (every query names its columns): (table, column, declaration).
_ADDED_COLUMNS = [
    ("runs", "paused", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "params", "TEXT"),  # a JSON object of the keyword arguments given by hand, or NULL
    ("runs", "requested_by", "TEXT NOT NULL DEFAULT ''"),  # who asked for it by hand; '' for the schedule
    ("job_state", "reason", "TEXT NOT NULL DEFAULT ''"),  # why it is paused
    ("job_state", "paused_by", "TEXT NOT NULL DEFAULT ''"),
    ("job_state", "paused_at", "TEXT"),
    ("job_state", "paused_until", "TEXT"),  # when it resumes by itself, or NULL
    ("cancels", "reason", "TEXT NOT NULL DEFAULT ''"),  # why, as the person gave it
    ("runs", "one_off", "INTEGER NOT NULL DEFAULT 0"),  # a run at an instant a person chose: settles no slot
]
_ADDED_TABLES = ("run_lines", "audit", "cancels", "one_offs", "catchup_holds")

# A release before runs.paused writes a paused skip with the reason "paused" alone (and reads it so):
# the file marks such a row paused itself, so what it writes after a rollback reads right here too.
_PAUSED_BY_REASON = """
CREATE TRIGGER IF NOT EXISTS runs_paused_by_reason AFTER INSERT ON runs
WHEN NEW.reason = 'paused' AND NOT NEW.paused
BEGIN
    UPDATE runs SET paused = 1 WHERE run_id = NEW.run_id;
END
"""


OPEN_TIMEOUT = 10.0  # seconds an open waits for another process's lock on the file
VERIFY_SECONDS = 10.0  # seconds SQLite's own check of the file may take at `check` and the loop's start

# SQLite's primary result codes for a fault of the file rather than of a query, with what to do.
_FAULTS = {
    5: "another process holds its write lock",  # SQLITE_BUSY, after OPEN_TIMEOUT
    8: "make the file and its directory writable again",  # SQLITE_READONLY
    10: "look at the disk and the kernel log",  # SQLITE_IOERR
    13: "free space on its filesystem",  # SQLITE_FULL
    14: "its directory or its -wal file is gone or unreadable",  # SQLITE_CANTOPEN
}
_CORRUPT = 11  # SQLITE_CORRUPT
_DAMAGED = {_CORRUPT, 26}  # and SQLITE_NOTADB, met in a file that was one: a file that does not mend by itself
_INTERRUPTED = 9  # SQLITE_INTERRUPT: the progress handler cut a statement short
RESTORE = "restore a backup, or move the file aside to start an empty history"


class SQLiteStore(SQLStore):
    """Run history and job state in one SQLite file (see StateStore for the methods)."""

    shared = False  # one host loop per file (lock_for_loop): its claims are never contended

    def __init__(self, path: Path):
        self.path = path
        self._lock_fd: int | None = None
        self._damaged: str | None = None  # why the file is refused for good, once a damage was met
        self._moved: str | None = None  # why it is refused while its path holds another file, or none
        _one_name(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=OPEN_TIMEOUT)
            self._use_wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self._identity = _identity(path)  # the file this store writes, to notice it deleted or replaced
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            code = _code(exc)
            if code == _CORRUPT:  # (a file that is no database at all is told as such, below)
                raise StoreError(f"the SQLite state file {str(path)!r} is damaged ({exc}): {RESTORE}") from None
            if code in _FAULTS:  # a full disk, say: the loop waits for it as for a database out of reach
                raise StoreFailing(f"cannot open the SQLite state file {str(path)!r}: {exc}; {_FAULTS[code]}") from exc
            raise StoreError(f"cannot use the SQLite state file {str(path)!r}: {exc}") from exc
        except (OSError, sqlite3.Error) as exc:
            self._close_quietly()
            raise StoreError(f"cannot use the SQLite state file {str(path)!r}: {exc}") from exc

    def _close_quietly(self) -> None:
        """An open that failed part way lets go of its connection (the loop may try again and again)."""
        db = getattr(self, "_db", None)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

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
                if "resumes" not in self._columns("job_state"):
                    self._db.execute("ALTER TABLE job_state ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0")
                self._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"the state file {str(self.path)!r} has schema version {row[0]}, newer than this "
                    f"jobhost's {SCHEMA_VERSION}; run a newer jobhost or point JOBS_STATE_URL elsewhere"
                )
            self._add_columns()

    def _add_columns(self) -> None:
        """Give the tables of an older file the columns added since, marking the paused skips recorded
        before runs.paused by their reason (as every release before it read them)."""
        had_paused = "paused" in self._columns("runs")
        for table, column, declaration in _ADDED_COLUMNS:
            if column not in self._columns(table):
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        if not had_paused:
            self._db.execute("UPDATE runs SET paused = 1 WHERE reason = 'paused'")
        self._db.execute(_PAUSED_BY_REASON)

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def _current(self) -> bool:
        try:
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.OperationalError:  # no such table: a new file, or not ours (told below)
            return False
        if row is None or row[0] != SCHEMA_VERSION:
            return False
        names = (*_ADDED_TABLES, "runs_paused_by_reason")
        marks = ", ".join("?" * len(names))
        found = self._db.execute(f"SELECT COUNT(*) FROM sqlite_master WHERE name IN ({marks})", names).fetchone()
        if found != (len(names),):
            return False
        return all(column in self._columns(table) for table, column, _ in _ADDED_COLUMNS)

    def verify(self, seconds: float = VERIFY_SECONDS) -> bool:
        """SQLite's own check of every page (PRAGMA quick_check), cut short after `seconds`: a damaged
        file is refused with StoreError before anything runs on it. False if the check was cut short."""
        deadline = time.monotonic() + seconds
        self._db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)").fetchall()]
        except sqlite3.DatabaseError as exc:
            if _code(exc) == _INTERRUPTED:
                return False
            problems = [str(exc)]
        finally:
            self._db.set_progress_handler(None, 0)
        if problems != ["ok"]:
            found = "; ".join(problems)
            raise StoreError(f"the SQLite state file {str(self.path)!r} is damaged ({found}): {RESTORE}")
        return True

    @contextlib.contextmanager
    def _faults(self) -> Iterator[None]:
        """Run statements on the file; a fault of the file comes out as StoreFailing saying what to do."""
        if self._damaged is not None:
            raise StoreFailing(self._damaged)
        if self._moved is not None:
            self._check_file()
        try:
            yield
        except sqlite3.Error as exc:
            code = _code(exc)
            if code in _DAMAGED:
                self._damaged = (
                    f"the SQLite state file {str(self.path)!r} is damaged ({exc}); stop the host, then {RESTORE}"
                )
                raise StoreFailing(self._damaged) from exc
            if code not in _FAULTS:
                raise
            raise StoreFailing(f"the SQLite state file {str(self.path)!r} failed: {exc}; {_FAULTS[code]}") from exc

    def _check_file(self) -> None:
        """Refuse to write on (StoreFailing) while the path no longer holds the file this store has open."""
        try:
            here = _identity(self.path)
        except OSError:
            here = None
        if here == self._identity:
            self._moved = None
            return
        what = "was deleted" if here is None else "was replaced by another file"
        self._moved = (
            f"the SQLite state file {str(self.path)!r} {what} while the host had it open; nothing more is "
            "written into it: put it back at that path, or restart the host to go on with the file there then "
            "(an empty history if there is none)"
        )
        raise StoreFailing(self._moved)

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._faults():
            return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._faults():
            rows = self._db.execute(sql, params).fetchall()  # all: a RETURNING statement ends only when read out
        return rows[0] if rows else None

    def _do(self, sql: str, params: tuple = ()) -> int:
        with self._faults():
            return self._db.execute(sql, params).rowcount

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._check_file()
        with self._faults():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                # A full disk or an I/O error may have rolled the transaction back already.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def claim(
        self, job: str, slot: dt.datetime, attempt: int, run_id: str, host: str, lease: float | None
    ) -> int | None:
        self._check_file()  # before each slot's first write: nothing goes into a file deleted meanwhile
        return super().claim(job, slot, attempt, run_id, host, lease)

    def beat(self, host: str, pid: int, at: dt.datetime, *, stopped: bool = False) -> None:
        self._check_file()  # each heartbeat too, for a host whose runs are long and few
        super().beat(host, pid, at, stopped=stopped)

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
            holders = flock_holders(fd)
            refusal = _refusal(self.path, holders)
            raise (LoopRunning(refusal) if holders.taker_holds_it else StoreError(refusal)) from None
        blind_in_children(fd)

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            forget(self._lock_fd)
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _one_name(path: Path) -> None:
    """Refuse a state file that has hard links: SQLite keeps a write-ahead log per name, so what
    the loop writes by one name is not seen by another, and a write by another corrupts the file."""
    try:
        names = os.stat(path).st_nlink
    except OSError:  # none yet (it is made), or unreadable (said when it is opened)
        return
    if names > 1:
        raise StoreError(
            f"the SQLite state file {str(path)!r} has {names} names (hard links): SQLite keeps a write-ahead "
            "log per name, so a reader by one name misses what is written by another, and a writer by another "
            "corrupts the file; remove the other names (find / -samefile PATH) and use this one"
        )


def _identity(path: Path) -> tuple[int, int]:
    """Which file `path` names now: its device and inode."""
    found = os.stat(path)
    return found.st_dev, found.st_ino


def _code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (None for one raised by the sqlite3 module itself)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


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
