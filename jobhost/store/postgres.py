"""The PostgreSQL state store: one database shared by several hosts (psycopg 3, a small pool).

The tables mirror the SQLite store's. The schema is created and migrated inside
a transaction holding an advisory lock, so hosts starting at once do it once.
A lost connection becomes StoreUnavailable within seconds, never a hang: the loop
calls the store between runs, so connections time out quickly (connect 3 s, a
pool checkout 2 s, unacknowledged data 5 s) and the pool reconnects by itself.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from jobhost.descriptors import blind_in_children, forget
from jobhost.errors import LoopRunning, StoreError, StoreUnavailable
from jobhost.store.sql import SQLStore

# 2: claims, resumes. What was added since (_ADDED) needs no new version: a host of the release
# before ignores it, so a rollback or a rolling upgrade keeps working (the rule: store/sql.py).
SCHEMA_VERSION = 2
_MIGRATION_LOCK = 0x6A6F6273  # "jobs": the advisory lock key held while the schema is made
# libpq parameters for every pooled connection: fail fast when the server is gone or cut off.
_FAIL_FAST: dict[str, Any] = {
    "connect_timeout": 3,
    "tcp_user_timeout": 5000,  # ms a sent packet may stay unacknowledged (a partition)
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    # The loop waits on each statement: none may hang it on a lock or a slow plan.
    "options": "-c statement_timeout=15000 -c lock_timeout=5000",
}
CHECKOUT_TIMEOUT = 2.0  # seconds a store call waits for a pooled connection

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS jobhost_schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS jobhost_runs (
        seq         BIGSERIAL PRIMARY KEY,
        run_id      TEXT NOT NULL UNIQUE,
        job         TEXT NOT NULL,
        slot        TEXT NOT NULL,
        slot_epoch  DOUBLE PRECISION NOT NULL,
        attempt     INTEGER NOT NULL,
        status      TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT '',
        started     TIMESTAMPTZ,
        ended       TIMESTAMPTZ,
        duration_ms BIGINT,
        host        TEXT NOT NULL DEFAULT '',
        pid         INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS jobhost_runs_by_job ON jobhost_runs (job, seq)",
    "CREATE INDEX IF NOT EXISTS jobhost_runs_by_slot ON jobhost_runs (job, slot_epoch)",
    "CREATE INDEX IF NOT EXISTS jobhost_runs_running ON jobhost_runs (host) WHERE status IN ('running', 'waiting')",
    """CREATE TABLE IF NOT EXISTS jobhost_heartbeats (
        host    TEXT PRIMARY KEY,
        pid     INTEGER NOT NULL,
        beat_at TIMESTAMPTZ NOT NULL,
        stopped BOOLEAN NOT NULL DEFAULT FALSE
    )""",
    """CREATE TABLE IF NOT EXISTS jobhost_retries (
        job        TEXT NOT NULL,
        slot       TEXT NOT NULL,
        slot_epoch DOUBLE PRECISION NOT NULL,
        attempt    INTEGER NOT NULL,
        due        TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (job, slot_epoch)
    )""",
    # A row per job, and the row '*' for the freeze: a pause of every job, made and ended as one.
    """CREATE TABLE IF NOT EXISTS jobhost_job_state (
        job    TEXT PRIMARY KEY,
        paused BOOLEAN NOT NULL DEFAULT FALSE
    )""",
    "ALTER TABLE jobhost_job_state ADD COLUMN IF NOT EXISTS resumes INTEGER NOT NULL DEFAULT 0",
    "CREATE SEQUENCE IF NOT EXISTS jobhost_claim_tokens",
    """CREATE TABLE IF NOT EXISTS jobhost_claims (
        job         TEXT NOT NULL,
        slot        TEXT NOT NULL,
        slot_epoch  DOUBLE PRECISION NOT NULL,
        attempt     INTEGER NOT NULL,
        run_id      TEXT NOT NULL,
        host        TEXT NOT NULL,
        token       BIGINT NOT NULL UNIQUE,
        lease_until DOUBLE PRECISION,
        PRIMARY KEY (job, slot_epoch, attempt)
    )""",
    "CREATE INDEX IF NOT EXISTS jobhost_claims_held ON jobhost_claims (lease_until) WHERE lease_until IS NOT NULL",
]

# Added to a current schema by themselves, without the DDL above (which takes table locks).
_ADDED = [
    """CREATE TABLE IF NOT EXISTS jobhost_run_lines (
        run_id  TEXT PRIMARY KEY,
        job     TEXT NOT NULL,
        kept_at TIMESTAMPTZ NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0,
        lines   TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jobhost_run_lines_by_age ON jobhost_run_lines (kept_at)",
    # Skipped while the job was paused: settles nothing. The paused skips recorded before the
    # column are marked by their reason, as every release before it read them.
    "ALTER TABLE jobhost_runs ADD COLUMN IF NOT EXISTS paused BOOLEAN NOT NULL DEFAULT FALSE",
    "UPDATE jobhost_runs SET paused = TRUE WHERE reason = 'paused' AND NOT paused",
    # A host of a release before the column writes a paused skip with the reason "paused" alone (a
    # rollback, a rolling upgrade): the database marks such a row paused itself.
    """CREATE OR REPLACE FUNCTION jobhost_runs_paused_by_reason() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.paused := TRUE;
        RETURN NEW;
    END $$""",
    """DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'jobhost_runs'::regclass
                       AND tgname = 'jobhost_runs_paused_by_reason') THEN
            CREATE TRIGGER jobhost_runs_paused_by_reason BEFORE INSERT ON jobhost_runs FOR EACH ROW
            WHEN (NEW.reason = 'paused') EXECUTE FUNCTION jobhost_runs_paused_by_reason();
        END IF;
    END $$""",
]
_ADDED += [
    # Operators' actions: who asked for a run by hand and with what, why and until when a job is paused.
    "ALTER TABLE jobhost_runs ADD COLUMN IF NOT EXISTS params TEXT",
    "ALTER TABLE jobhost_runs ADD COLUMN IF NOT EXISTS requested_by TEXT NOT NULL DEFAULT ''",
    # A run at an instant a person chose (`run --at`): no slot of the schedule, so it settles none.
    "ALTER TABLE jobhost_runs ADD COLUMN IF NOT EXISTS one_off BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE jobhost_job_state ADD COLUMN IF NOT EXISTS reason TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE jobhost_job_state ADD COLUMN IF NOT EXISTS paused_by TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE jobhost_job_state ADD COLUMN IF NOT EXISTS paused_at TIMESTAMPTZ",
    "ALTER TABLE jobhost_job_state ADD COLUMN IF NOT EXISTS paused_until TIMESTAMPTZ",
    """CREATE TABLE IF NOT EXISTS jobhost_audit (
        seq    BIGSERIAL PRIMARY KEY,
        at     TIMESTAMPTZ NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS jobhost_audit_by_time ON jobhost_audit (at)",
    """CREATE TABLE IF NOT EXISTS jobhost_cancels (
        run_id   TEXT PRIMARY KEY,
        job      TEXT NOT NULL,
        asked_by TEXT NOT NULL,
        asked_at TIMESTAMPTZ NOT NULL,
        done_at  TIMESTAMPTZ
    )""",
    "ALTER TABLE jobhost_cancels ADD COLUMN IF NOT EXISTS reason TEXT NOT NULL DEFAULT ''",
    """CREATE TABLE IF NOT EXISTS jobhost_one_offs (
        run_id       TEXT PRIMARY KEY,
        job          TEXT NOT NULL,
        slot         TEXT NOT NULL,
        slot_epoch   DOUBLE PRECISION NOT NULL,
        params       TEXT,
        requested_by TEXT NOT NULL,
        asked_at     TIMESTAMPTZ NOT NULL,
        state        TEXT NOT NULL DEFAULT 'pending'
    )""",
    "CREATE INDEX IF NOT EXISTS jobhost_one_offs_pending ON jobhost_one_offs (slot_epoch) WHERE state = 'pending'",
    """CREATE TABLE IF NOT EXISTS jobhost_catchup_holds (
        job     TEXT PRIMARY KEY,
        held_by TEXT NOT NULL,
        held_at TIMESTAMPTZ NOT NULL
    )""",
]
# Whether everything _ADDED makes is there (each table, the paused trigger, the newest columns).
_ADDED_THERE = (
    "SELECT to_regclass('jobhost_run_lines') IS NOT NULL "
    "AND to_regclass('jobhost_audit') IS NOT NULL AND to_regclass('jobhost_cancels') IS NOT NULL "
    "AND to_regclass('jobhost_one_offs_pending') IS NOT NULL AND to_regclass('jobhost_catchup_holds') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_trigger "
    "WHERE tgrelid = to_regclass('jobhost_runs') AND tgname = 'jobhost_runs_paused_by_reason') "
    "AND (SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND "
    "(table_name, column_name) IN (('jobhost_runs', 'params'), ('jobhost_runs', 'requested_by'), "
    "('jobhost_job_state', 'reason'), ('jobhost_job_state', 'paused_by'), ('jobhost_job_state', 'paused_at'), "
    "('jobhost_job_state', 'paused_until'), ('jobhost_cancels', 'reason'), ('jobhost_runs', 'one_off'))) = 8"
)


class PostgresStore(SQLStore):
    """Run history and job state in PostgreSQL (see StateStore for the methods)."""

    prefix = "jobhost_"  # the database may hold other applications' tables
    shared = True

    def __init__(self, url: str):
        self.url = url
        self._loop_conn: psycopg.Connection | None = None
        try:
            psycopg.connect(url, connect_timeout=10).close()  # fails at once with the server's own reason
            self._pool = self._new_pool()
            self._pool.wait(timeout=10)
            self._migrate()
        except PoolTimeout:  # before psycopg.Error, of which it is a kind
            self._close_pool()
            raise StoreUnavailable(f"cannot reach the PostgreSQL state store at {_safe(url)} within 10 s") from None
        except psycopg.OperationalError as exc:
            self._close_pool()
            kind = StoreError if _refused(str(exc)) else StoreUnavailable
            raise kind(f"cannot use the PostgreSQL state store at {_safe(url)}: {_first_line(exc, self.url)}") from None
        except (psycopg.Error, OSError) as exc:
            self._close_pool()
            raise StoreError(
                f"cannot use the PostgreSQL state store at {_safe(url)}: {_first_line(exc, self.url)}"
            ) from None
        except StoreError:
            self._close_pool()
            raise

    def _new_pool(self) -> ConnectionPool:
        return ConnectionPool(
            self.url,
            min_size=1,
            max_size=4,
            open=True,
            timeout=CHECKOUT_TIMEOUT,
            reconnect_timeout=24 * 3600,  # an outage is waited out, not given up on
            kwargs={"autocommit": True, **_FAIL_FAST},
        )

    _suspect = False  # a connection was lost: the next call checks the server before using the pool

    def _recover(self) -> None:
        """After a lost connection, reach the server directly and, once it answers, start a new pool:
        the old one's connections are dead, and its own reconnection backs off up to minutes."""
        psycopg.connect(self.url, autocommit=True, **_FAIL_FAST).close()
        old, self._pool = self._pool, self._new_pool()
        old.close(timeout=0)
        self._suspect = False

    def _migrate(self) -> None:
        with self._pool.connection() as conn:
            # Up to date (the usual case): no DDL at all. CREATE ... IF NOT EXISTS still takes table
            # locks, which deadlocked with the other hosts' loops when several started together.
            if conn.execute("SELECT to_regclass('jobhost_schema_version')").fetchone()[0] is not None:  # type: ignore[index]
                row = conn.execute("SELECT version FROM jobhost_schema_version").fetchone()
                if row is not None and row[0] == SCHEMA_VERSION:
                    if not conn.execute(_ADDED_THERE).fetchone()[0]:  # type: ignore[index]
                        self._add_tables()
                    return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            for statement in [*_SCHEMA, *_ADDED]:
                conn.execute(statement)
            row = conn.execute("SELECT version FROM jobhost_schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO jobhost_schema_version VALUES (%s)", (SCHEMA_VERSION,))
            elif row[0] < SCHEMA_VERSION:  # the statements above added what was new
                conn.execute("UPDATE jobhost_schema_version SET version = %s", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"the state database at {_safe(self.url)} has schema version {row[0]}, newer than this "
                    f"jobhost's {SCHEMA_VERSION}; run a newer jobhost on every host"
                )

    def _add_tables(self) -> None:
        """What was added since SCHEMA_VERSION, alone (under the migration lock)."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            for statement in _ADDED:
                conn.execute(statement)

    def _connection(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        """The transaction's connection inside `_transaction`, else one from the pool."""
        held = self._held
        return contextlib.nullcontext(held) if held is not None else self._pool.connection()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._held is not None:  # already inside one
            yield
            return
        with self._unavailable(), self._pool.connection() as conn, conn.transaction():
            self._held = conn
            try:
                yield
            finally:
                self._held = None

    _held: psycopg.Connection | None = None

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """A lost or refused connection, as StoreUnavailable naming the server (not its password)."""
        try:
            if self._suspect and self._held is None:
                self._recover()
            yield
        except psycopg.OperationalError as exc:  # PoolTimeout is one
            self._suspect = True
            raise StoreUnavailable(
                f"the PostgreSQL state store at {_safe(self.url)} is unreachable: {_first_line(exc, self.url)}"
            ) from None

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._unavailable(), self._connection() as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._unavailable(), self._connection() as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchone()

    def _do(self, sql: str, params: tuple = ()) -> int:
        with self._unavailable(), self._connection() as conn:
            return conn.execute(sql.replace("?", "%s"), params).rowcount

    def _next_seq(self) -> str:
        return ""  # BIGSERIAL

    def _new_token(self) -> str:
        return "nextval('jobhost_claim_tokens')"

    def _now(self) -> str:
        return "EXTRACT(EPOCH FROM clock_timestamp())::double precision"

    _skip_locked = " FOR UPDATE SKIP LOCKED"

    def verify(self) -> bool:
        return True  # the server checks its own pages (data checksums), not each client

    def lock_for_loop(self, pid: int, host: str = "") -> None:
        """One forever loop per host name: a session advisory lock on the name, held on a
        connection of its own for as long as the loop runs. (The name is the loop's identity
        in claims and heartbeats; two loops sharing one would take each other's runs for their own.)"""
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            locked = conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"jobhost-loop:{host}",)
            ).fetchone()
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot lock the PostgreSQL state store at {_safe(self.url)}: {_first_line(exc, self.url)}"
            ) from None
        if not locked or not locked[0]:
            conn.close()
            beat = self.heartbeat(host)
            holder = f"pid {beat.pid}" if beat is not None else "another process"
            raise LoopRunning(
                f"another host loop ({holder}) is running as host {host!r} against {_safe(self.url)}; "
                "stop it first, or give this one its own JOBS_HOST_NAME"
            )
        self._loop_conn = conn
        blind_in_children(conn.fileno())  # a process this one forks must not keep the session (and the lock) alive

    def close(self) -> None:
        if self._loop_conn is not None:
            forget(self._loop_conn.fileno())
            # Released here, not by the server as it notices the session gone (a moment later): a loop
            # started right after this one stopped must find the lock free.
            with contextlib.suppress(psycopg.Error):
                self._loop_conn.execute("SELECT pg_advisory_unlock_all()")
            self._loop_conn.close()
            self._loop_conn = None
        self._close_pool()

    def _close_pool(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()


def _safe(url: str) -> str:
    """The URL as written, without its password or query string, for messages. Parsed by hand, not
    by libpq: a password with an unencoded `/`, `#` or `@` must not land in the host part shown."""
    scheme, _, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    user = userinfo.partition(":")[0] if at else ""
    return f"{scheme}://{user + '@' if user else ''}{hostpart.partition('?')[0]}"


def _secrets(url: str) -> list[str]:
    """What of the URL must never be shown: the password, as written and decoded, and its pieces
    (a URL misread by libpq quotes pieces of it), and any password given as a parameter."""
    rest = url.partition("://")[2]
    userinfo, at, hostpart = rest.rpartition("@")
    found = [userinfo.partition(":")[2]] if at else []
    found += re.findall(r"(?:password|sslpassword)=([^&]*)", hostpart)
    pieces = {
        piece
        for secret in found
        for cut in (m.start() for m in re.finditer(r"[/#?@:%&]", secret))
        for piece in (secret[:cut], secret[cut + 1 :], *re.split(r"[/#?@:%&]", secret))
        if len(piece) >= 3
    }
    return sorted({*found, *(unquote(secret) for secret in found), *pieces} - {""}, key=len, reverse=True)


# A server that answers FATAL with one of these is starting, stopping or full: worth waiting for.
_TRANSIENT = ("starting up", "shutting down", "in recovery", "too many", "connection slots")


def _refused(message: str) -> bool:
    """The server answered and said no (wrong password, no such database, not allowed): waiting
    would not help. Otherwise it was not reached (down, refused, no route) or is busy."""
    if "password" in message:
        return True
    return "FATAL:" in message and not any(phrase in message for phrase in _TRANSIENT)


def _first_line(exc: BaseException, url: str) -> str:
    """The error's first line, with nothing of the URL's password in it."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in _secrets(url):
        line = line.replace(secret, "***")
    return line
