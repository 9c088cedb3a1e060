"""The state store's schema across releases: what an older store gains, and what a rollback still reads.

A release refuses a store of a newer schema version, so what is added without a
new version must be ignorable by the release before, and what that release writes
after a rollback must read right to this one (the rule: jobhost/store/sql.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from jobhost.errors import StoreError
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, open_store

T0 = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(minutes=10)
# The release before runs.paused: a paused skip is known by its reason alone.
SETTLED_BEFORE = "status IN ('crashed','failed','missed','skipped','succeeded','timed_out') AND reason != 'paused'"


def _sql(url: str, *statements: str) -> list[tuple]:
    """Run statements straight on the store's database (`{t}`: its table prefix); the last one's rows."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            return [db.execute(statement.replace("{t}", "")).fetchall() for statement in statements][-1]
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursors = [conn.execute(statement.replace("{t}", "jobhost_")) for statement in statements]
        return cursors[-1].fetchall() if cursors[-1].description else []


def _as_the_release_before_records(url: str, run_id: str, slot: dt.datetime, status: str, reason: str) -> str:
    """A run's INSERT as the release before runs.paused writes it: the column not named."""
    seq = ("", "") if not url.startswith("sqlite:") else (", seq", ", (SELECT COALESCE(MAX(seq), 0) + 1 FROM runs)")
    return (
        f"INSERT INTO {{t}}runs (run_id, job, slot, slot_epoch, attempt, status, reason, host{seq[0]}) "
        f"VALUES ('{run_id}', 'job', '{slot.isoformat()}', {slot.timestamp()}, 1, '{status}', '{reason}', 'h1'{seq[1]})"
    )


def _back_to_the_release_before(url: str) -> None:
    """Take from the store what this release added to it: the paused column and its trigger."""
    if url.startswith("sqlite:"):
        _sql(url, "DROP TRIGGER runs_paused_by_reason", "ALTER TABLE runs DROP COLUMN paused")
    else:
        _sql(
            url,
            "DROP TRIGGER jobhost_runs_paused_by_reason ON jobhost_runs",
            "DROP FUNCTION jobhost_runs_paused_by_reason()",
            "ALTER TABLE jobhost_runs DROP COLUMN paused",
        )


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    open_store(f"sqlite:///{path}", tmp_path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(f"sqlite:///{path}", tmp_path)


def test_a_state_file_of_the_previous_release_gains_the_run_lines_and_keeps_its_version(tmp_path: Path) -> None:
    # The version stays 2, so a host of the release before (a rollback) still opens the file.
    path = tmp_path / "state.sqlite3"
    open_store(f"sqlite:///{path}", tmp_path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE run_lines")
    store = open_store(f"sqlite:///{path}", tmp_path)
    store.keep_lines("r1", "daily", T0, [{"message": "m"}], dropped=0)
    assert store.kept_lines("r1") == ([{"message": "m"}], 0)
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (2,)


def test_a_database_of_the_previous_release_gains_the_run_lines_and_keeps_its_version(postgres, tmp_path: Path) -> None:
    url = postgres.new_database()
    open_store(url, tmp_path).close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE jobhost_run_lines")
    store = open_store(url, tmp_path)
    store.keep_lines("r1", "daily", T0, [{"message": "m"}], dropped=0)
    assert store.kept_lines("r1") == ([{"message": "m"}], 0)
    store.close()
    assert postgres.query(url, "SELECT version FROM jobhost_schema_version") == [(2,)]


def test_the_paused_skips_of_an_older_store_stay_unsettled_when_it_gains_the_paused_flag(
    store_url: str, tmp_path: Path
) -> None:
    open_store(store_url, tmp_path).close()
    _back_to_the_release_before(store_url)
    _sql(
        store_url,
        _as_the_release_before_records(store_url, "p1", T0, "skipped", "paused"),
        _as_the_release_before_records(store_url, "s1", LATER, "succeeded", ""),
    )
    store = open_store(store_url, tmp_path)
    try:
        assert [(r.run_id, r.paused) for r in store.runs("job")] == [("s1", False), ("p1", True)]
        assert store.unsettled_slots("job", T0, LATER) == [T0]
        assert (store.slot_state("job", T0).settled, store.final_status("job", T0)) == (False, None)
    finally:
        store.close()
    assert _sql(store_url, "SELECT version FROM {t}schema_version") == [(2,)]  # the release before opens it


def test_the_release_before_reads_a_paused_skip_of_this_one_and_writes_one_this_one_reads(
    store_url: str, tmp_path: Path
) -> None:
    store = open_store(store_url, tmp_path)
    token = store.claim("job", T0, 1, "p1", "h1", lease=30)
    store.record_unstarted(RunRecord("p1", "job", T0, 1, RunStatus.SKIPPED, "paused", ended=T0, paused=True), token)  # type: ignore[arg-type]
    store.close()
    # A rollback: the release before accepts the version, knows the skip by its reason, and
    # writes its own paused skips without the column.
    assert _sql(store_url, "SELECT version FROM {t}schema_version") == [(2,)]
    assert _sql(store_url, f"SELECT COUNT(*) FROM {{t}}runs WHERE {SETTLED_BEFORE}") == [(0,)]
    _sql(store_url, _as_the_release_before_records(store_url, "p2", LATER, "skipped", "paused"))
    store = open_store(store_url, tmp_path)  # and forward again
    try:
        assert [(r.run_id, r.paused) for r in store.runs("job")] == [("p2", True), ("p1", True)]
        assert store.unsettled_slots("job", T0, LATER + dt.timedelta(minutes=1)) == [T0, LATER]
        assert store.settled_slots() == {"job": T0 - dt.timedelta(microseconds=1)}
    finally:
        store.close()
