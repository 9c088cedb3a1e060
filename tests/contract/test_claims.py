"""Claims, leases and fencing in the state store, run unchanged on SQLite and PostgreSQL.

Each attempt of each slot is claimed once; the claim's token fences every later
write, so a host whose lease was taken over records nothing over the new holder.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, StateStore, open_store
from jobhost.store.model import PendingRetry, Settlement

T0 = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)


def _running(run_id: str, host: str, attempt: int = 1, slot: dt.datetime = T0) -> RunRecord:
    return RunRecord(run_id, "sync", slot, attempt, RunStatus.RUNNING, started=slot, host=host)


def _ended(run_id: str, status: RunStatus = RunStatus.SUCCEEDED, attempt: int = 1, **extra: object) -> Settlement:
    return Settlement(run_id, "sync", T0, attempt, status, "", T0 + dt.timedelta(seconds=5), 5000, **extra)  # type: ignore[arg-type]


def test_each_attempt_of_a_slot_is_claimed_once(store: StateStore) -> None:
    token = store.claim("sync", T0, 1, "r1", "a", lease=30)
    assert token is not None
    assert store.claim("sync", T0, 1, "r2", "b", lease=30) is None  # the same attempt, another host
    assert store.claim("sync", T0, 1, "r3", "a", lease=30) is None  # ... or the same host again
    assert store.claim("sync", T0, 2, "r4", "b", lease=30) not in (None, token)  # the next attempt is free
    assert store.claim("sync", T0 + dt.timedelta(minutes=1), 1, "r5", "b", lease=30) is not None
    assert store.claim("other", T0, 1, "r6", "b", lease=30) is not None


def test_concurrent_claims_have_exactly_one_winner(store_url: str, tmp_path: Path) -> None:
    hosts = 4
    won: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(hosts)

    def contend(index: int) -> None:
        try:
            store = open_store(store_url, tmp_path)  # a connection of each host's own
            barrier.wait(timeout=60)
            for minute in range(25):
                slot = T0 + dt.timedelta(minutes=minute)
                if store.claim("sync", slot, 1, f"r{index}-{minute}", f"h{index}", lease=30) is not None:
                    won.append(minute)
            store.close()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
            barrier.abort()  # the others must not wait for this one

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(won) == list(range(25))


def test_a_run_starts_and_settles_under_its_claim(store: StateStore) -> None:
    token = store.claim("sync", T0, 1, "r1", "a", lease=30)
    assert store.start_run(_running("r1", "a"), token)
    retry = PendingRetry(T0 + dt.timedelta(minutes=1), "sync", T0, 2)
    assert store.settle(_ended("r1", RunStatus.FAILED, retry=retry), token)
    [record] = store.runs("sync")
    assert (record.status, record.duration_ms) == (RunStatus.FAILED, 5000)
    assert store.pending_retries() == [retry]
    assert store.renew([token], 30) == set()  # settled: nothing left to renew  # type: ignore[list-item]
    # The retry's own attempt settles, and its pending retry goes with it.
    second = store.claim("sync", T0, 2, "r2", "a", lease=30)
    assert store.start_run(_running("r2", "a", attempt=2), second)
    assert store.settle(_ended("r2", attempt=2), second)
    assert store.pending_retries() == []


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(store: StateStore) -> None:
    old = store.claim("sync", T0, 1, "r1", "a", lease=-1)  # as if host a stopped renewing a second ago
    assert store.start_run(_running("r1", "a"), old)
    assert store.claim("sync", T0, 1, "r2", "b", lease=30) is None  # expired, but still claimed
    assert store.take_over("b", ["other"], 30, T0) == []  # b only takes jobs it knows
    [taken] = store.take_over("b", ["sync"], 30, T0)
    assert (taken.run_id, taken.previous_host, taken.abandoned, taken.attempt) == ("r1", "a", True, 1)
    assert taken.token != old
    [record] = store.runs("sync")
    assert record.status == RunStatus.ABANDONED
    assert "host a stopped renewing" in record.reason and "b took the slot over" in record.reason
    assert store.take_over("c", ["sync"], 30, T0) == []  # b's lease is fresh
    # Host a comes back: it cannot renew, and its late result is not written.
    assert store.renew([old], 30) == set()  # type: ignore[list-item]
    assert not store.settle(_ended("r1", RunStatus.SUCCEEDED), old)
    assert store.runs("sync")[0].status == RunStatus.ABANDONED
    assert store.renew([taken.token], 30) == {taken.token}


def test_a_claim_whose_slot_never_started_is_taken_over_to_be_run(store: StateStore) -> None:
    store.claim("sync", T0, 1, "r1", "a", lease=-1)  # claimed, queued for a worker, then the host died
    [taken] = store.take_over("b", ["sync"], 30, T0)
    assert (taken.abandoned, taken.slot) == (False, T0)
    assert store.runs("sync") == []


def test_a_claim_already_recorded_as_ended_is_only_released(store: StateStore) -> None:
    token = store.claim("sync", T0, 1, "r1", "a", lease=-1)
    store.start_run(_running("r1", "a"), token)
    store.finish_run("r1", RunStatus.SUCCEEDED, "", T0, 10)  # recorded, but the claim never released
    assert store.take_over("b", ["sync"], 30, T0) == []
    assert store.runs("sync")[0].status == RunStatus.SUCCEEDED


def test_a_host_takes_back_its_own_claims_at_start_whatever_their_lease(store: StateStore) -> None:
    store.claim("sync", T0, 1, "r1", "a", lease=600)  # queued when host a was killed
    store.claim("sync", T0, 2, "r2", "b", lease=600)  # another host's: not a's to take
    [taken] = store.take_over("a", ["sync"], 30, T0, own=True)
    assert (taken.run_id, taken.attempt, taken.abandoned) == ("r1", 1, False)


def test_a_running_record_left_alive_is_not_taken_back(store: StateStore) -> None:
    token = store.claim("sync", T0, 1, "r1", "a", lease=600)
    store.start_run(_running("r1", "a"), token)
    assert store.take_over("a", ["sync"], 30, T0, own=True) == []


def test_a_lost_claim_records_nothing(store: StateStore) -> None:
    token = store.claim("sync", T0, 1, "r1", "a", lease=-1)
    store.take_over("b", ["sync"], 30, T0)
    assert not store.start_run(_running("r1", "a"), token)
    skipped = RunRecord("r1", "sync", T0, 1, RunStatus.SKIPPED, "paused", ended=T0, host="a")
    assert not store.record_unstarted(skipped, token)  # type: ignore[arg-type]
    assert store.runs("sync") == []


def test_slots_recorded_without_a_run_are_claimed_with_the_record(store: StateStore) -> None:
    missed = RunRecord("m1", "sync", T0, 1, RunStatus.MISSED, "late", ended=T0, host="a")
    assert store.claim_and_record(missed)
    assert not store.claim_and_record(RunRecord("m2", "sync", T0, 1, RunStatus.MISSED, "late", ended=T0, host="b"))
    assert [r.run_id for r in store.runs("sync")] == ["m1"]
    assert store.take_over("b", ["sync"], 30, T0 + dt.timedelta(days=1)) == []  # settled: no lease


def test_where_a_slot_stands_follows_claims_and_history(store: StateStore) -> None:
    from jobhost.store.model import SlotState

    assert store.slot_state("sync", T0) == SlotState(0, held=False, settled=False)
    token = store.claim("sync", T0, 1, "r1", "a", lease=30)
    assert store.slot_state("sync", T0) == SlotState(1, held=True, settled=False)
    store.add_run(RunRecord("old", "sync", T0, 3, RunStatus.INTERRUPTED, ended=T0))  # history from before claims
    store.record_unstarted(RunRecord("r1", "sync", T0, 1, RunStatus.SKIPPED, "paused", ended=T0), token)  # type: ignore[arg-type]
    assert store.slot_state("sync", T0) == SlotState(3, held=False, settled=False)  # a pause settles nothing
    store.claim_and_record(RunRecord("r4", "sync", T0, 4, RunStatus.FAILED, ended=T0))
    assert store.slot_state("sync", T0) == SlotState(4, held=False, settled=True)


def test_a_slot_claimed_now_is_no_orphan(store: StateStore) -> None:
    store.add_run(RunRecord("r1", "sync", T0, 1, RunStatus.INTERRUPTED, ended=T0))
    later = T0 + dt.timedelta(minutes=5)
    assert store.unsettled_slots("sync", T0, later) == [T0]
    store.claim("sync", T0, 2, "r2", "b", lease=30)  # another host is running it again
    assert store.unsettled_slots("sync", T0, later) == []


def test_runs_going_on_any_host_are_seen(store: StateStore) -> None:
    store.add_run(_running("r1", "a"))
    store.add_run(RunRecord("r2", "sync", T0, 1, RunStatus.SUCCEEDED, ended=T0, host="b"))
    assert [r.run_id for r in store.running_runs("sync")] == ["r1"]


def test_the_database_clock_is_read(store: StateStore) -> None:
    assert abs((store.database_time() - dt.datetime.now(dt.UTC)).total_seconds()) < 5


def test_a_store_made_before_claims_gets_them(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.sqlite3"
    open_store(f"sqlite:///{path}", tmp_path).close()
    with sqlite3.connect(path) as db:  # what version 1 had: no claims, no resume count
        db.execute("DROP TABLE claims")
        db.execute("DROP TABLE job_state")
        db.execute("CREATE TABLE job_state (job TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO job_state VALUES ('sync', 1)")
        db.execute("UPDATE schema_version SET version = 1")
    store = open_store(f"sqlite:///{path}", tmp_path)
    assert store.claim("sync", T0, 1, "r1", "a", lease=30) is not None
    assert store.paused_jobs() == {"sync"}
    store.set_paused("sync", False)
    assert store.resumes() == {"sync": 1}
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (2,)


@pytest.mark.parametrize("lease", [0.5])
def test_a_renewed_lease_is_not_taken(store: StateStore, lease: float) -> None:
    token = store.claim("sync", T0, 1, "r1", "a", lease=lease)
    assert store.renew([token], 600) == {token}  # type: ignore[list-item]
    assert store.take_over("b", ["sync"], 30, T0) == []


def test_every_resume_is_counted_even_between_two_looks(store: StateStore) -> None:
    store.set_paused("sync", True)
    assert store.resumes() == {}  # paused
    store.set_paused("sync", False)
    store.set_paused("sync", True)
    store.set_paused("sync", False)
    assert store.resumes() == {"sync": 2}
