"""The state store contract, run unchanged against every backend: SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobhost.errors import StoreError, StoreUnavailable
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, StateStore, open_store
from tests.conftest import ROOT

T0 = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)


def _run(run_id: str, job: str = "nightly", minutes: int = 0, **fields: object) -> RunRecord:
    values: dict = {
        "attempt": 1,
        "status": RunStatus.RUNNING,
        "started": T0 + dt.timedelta(minutes=minutes),
        "host": "h1",
    }
    values.update(fields)
    return RunRecord(run_id, job, T0 + dt.timedelta(minutes=minutes), **values)


def test_a_run_is_kept_from_start_to_end(store: StateStore) -> None:
    store.add_run(_run("r1"))
    store.set_pid("r1", 4242)
    [running] = store.runs("nightly")
    assert (running.status, running.pid, running.ended) == (RunStatus.RUNNING, 4242, None)
    ended = T0 + dt.timedelta(seconds=90)
    store.finish_run("r1", RunStatus.FAILED, "ValueError: boom", ended, 90_000)
    [done] = store.runs("nightly")
    assert (done.status, done.reason, done.ended, done.duration_ms) == (
        RunStatus.FAILED,
        "ValueError: boom",
        ended,
        90_000,
    )


def test_history_is_newest_first_filtered_and_limited(store: StateStore) -> None:
    for i in range(5):
        store.add_run(_run(f"a{i}", "a", minutes=i))
        store.add_run(_run(f"b{i}", "b", minutes=i))
    assert [r.run_id for r in store.runs("a", limit=3)] == ["a4", "a3", "a2"]
    assert [r.run_id for r in store.runs(limit=2)] == ["b4", "a4"]
    assert store.runs("nobody") == []


def test_slots_keep_their_offset(store: StateStore) -> None:
    london = dt.datetime(2026, 7, 1, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    store.add_run(RunRecord("r1", "summer", london, 1, RunStatus.SUCCEEDED))
    [record] = store.runs("summer")
    assert record.slot.isoformat() == "2026-07-01T02:30:00+01:00"
    assert record.as_json()["slot"] == "2026-07-01T02:30:00+01:00"


def test_last_status_per_job(store: StateStore) -> None:
    store.add_run(_run("a1", "a", status=RunStatus.FAILED))
    store.add_run(_run("a2", "a", minutes=1, status=RunStatus.SUCCEEDED))
    store.add_run(_run("b1", "b", status=RunStatus.TIMED_OUT))
    assert store.last_statuses() == {"a": RunStatus.SUCCEEDED, "b": RunStatus.TIMED_OUT}


def test_pause_and_resume(store: StateStore) -> None:
    store.set_paused("a", True)
    store.set_paused("b", True)
    store.set_paused("a", False)
    assert store.paused_jobs() == {"b"}


def test_running_lists_only_this_hosts_unfinished_runs(store: StateStore) -> None:
    store.add_run(_run("mine"))
    store.add_run(_run("done", status=RunStatus.SUCCEEDED))
    store.add_run(_run("theirs", host="h2"))
    assert [r.run_id for r in store.running("h1")] == ["mine"]


def test_history_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    first = open_store(url, tmp_path)
    first.add_run(_run("r1"))
    first.set_paused("nightly", True)
    first.close()
    second = open_store(url, tmp_path)
    assert [r.run_id for r in second.runs()] == ["r1"]
    assert second.paused_jobs() == {"nightly"}
    second.close()


def test_sqlite_uses_a_write_ahead_log_and_relative_paths(tmp_path: Path) -> None:
    store = open_store("sqlite:///var/state.sqlite3", tmp_path)
    store.close()
    path = tmp_path / "var" / "state.sqlite3"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot use the SQLite state file"):
        open_store(f"sqlite:///{tmp_path / 'file' / 'state.sqlite3'}", tmp_path)
    with pytest.raises(StoreError, match="unknown state store 'mysql'"):
        open_store("mysql://db/x", tmp_path)


def test_a_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="not a jobhost state file"):
        open_store(f"sqlite:///{path}", tmp_path)
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert tables == {"invoices"}


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database, just some notes" * 100)
    with pytest.raises(StoreError, match="cannot use the SQLite state file"):
        open_store(f"sqlite:///{path}", tmp_path)
    assert path.read_bytes() == b"not a database, just some notes" * 100


def test_heartbeat_is_kept_per_host(store: StateStore) -> None:
    assert store.heartbeat("h1") is None
    store.beat("h1", 10, T0)
    store.beat("h1", 11, T0 + dt.timedelta(seconds=30))
    store.beat("h2", 20, T0)
    beat = store.heartbeat("h1")
    assert beat is not None and (beat.pid, beat.at, beat.stopped) == (11, T0 + dt.timedelta(seconds=30), False)
    store.beat("h1", 11, T0 + dt.timedelta(seconds=40), stopped=True)
    assert store.heartbeat("h1").stopped  # type: ignore[union-attr]


def test_only_one_loop_per_state_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    first, second = open_store(url, tmp_path), open_store(url, tmp_path)
    first.lock_for_loop(4242)
    with pytest.raises(StoreError, match=rf"another host loop \(pid {os.getpid()}\) is running"):
        second.lock_for_loop(5353)
    first.close()
    second.lock_for_loop(5353)  # released with the first store
    second.close()


def test_pending_retries_are_kept_one_per_slot(store: StateStore) -> None:
    from jobhost.store.model import PendingRetry

    store.add_retry(PendingRetry(T0 + dt.timedelta(minutes=2), "a", T0, 2))
    store.add_retry(PendingRetry(T0 + dt.timedelta(minutes=4), "a", T0, 3))  # replaces the first
    store.add_retry(PendingRetry(T0 + dt.timedelta(minutes=1), "b", T0, 2))
    assert [(r.job, r.attempt) for r in store.pending_retries()] == [("b", 2), ("a", 3)]
    store.drop_retry("a", T0)
    assert [r.job for r in store.pending_retries()] == ["b"]


def test_settled_slots_skip_unfinished_and_paused_ones(store: StateStore) -> None:
    store.add_run(_run("a1", "a", minutes=0, status=RunStatus.SUCCEEDED))
    store.add_run(_run("a2", "a", minutes=10, status=RunStatus.INTERRUPTED))
    store.add_run(_run("b1", "b", minutes=0, status=RunStatus.FAILED))
    store.add_run(_run("b2", "b", minutes=10, status=RunStatus.SKIPPED, reason="paused"))
    store.add_run(_run("c1", "c", minutes=5, status=RunStatus.MISSED))
    store.add_run(_run("d1", "d", minutes=7, status=RunStatus.INTERRUPTED))  # nothing settled yet
    assert store.settled_slots() == {
        "a": T0,
        "b": T0,
        "c": T0 + dt.timedelta(minutes=5),
        "d": T0 + dt.timedelta(minutes=7) - dt.timedelta(microseconds=1),
    }


def test_prune_removes_old_runs_in_batches_but_keeps_each_jobs_newest(store: StateStore) -> None:
    for i in range(10):
        store.add_run(_run(f"old{i}", "daily", minutes=i, status=RunStatus.SUCCEEDED))
    store.add_run(_run("rare", "yearly", minutes=0, status=RunStatus.SUCCEEDED))
    store.add_run(_run("new", "daily", minutes=500, status=RunStatus.INTERRUPTED))
    cutoff = T0 + dt.timedelta(minutes=100)
    assert store.prune(cutoff, limit=4) == 4
    assert store.prune(cutoff, limit=4) == 4
    assert store.prune(cutoff, limit=4) == 1
    assert store.prune(cutoff, limit=4) == 0
    # Kept: daily's newest run, daily's newest settled run (catch-up starts after it),
    # and a yearly job's only run, however old.
    assert {r.run_id for r in store.runs(limit=100)} == {"new", "old9", "rare"}


def test_the_log_lines_of_a_run_are_kept_and_pruned_by_age(store: StateStore) -> None:
    lines = [{"message": "exported 3 rows, naïvely", "level": "INFO"}, {"message": "done", "level": "INFO"}]
    store.keep_lines("r1", "daily", T0, lines, dropped=7)
    store.keep_lines("r2", "daily", T0 + dt.timedelta(days=2), lines[:1], dropped=0)
    assert store.kept_lines("r1") == (lines, 7)
    assert store.kept_lines("nope") is None
    store.keep_lines("r1", "daily", T0, lines[1:], dropped=8)  # kept again: the newer lines win
    assert store.kept_lines("r1") == (lines[1:], 8)
    store.prune(T0 + dt.timedelta(days=1), limit=100)
    assert store.kept_lines("r1") is None and store.kept_lines("r2") == (lines[:1], 0)


def test_unsettled_slots_older_than_a_settled_one_are_found(store: StateStore) -> None:
    store.add_run(_run("p1", "job", minutes=0, status=RunStatus.SKIPPED, reason="paused"))
    store.add_run(_run("p2", "job", minutes=5, status=RunStatus.INTERRUPTED))
    store.add_run(_run("ok", "job", minutes=10, status=RunStatus.SUCCEEDED))
    store.add_run(_run("r2", "job", minutes=15, status=RunStatus.INTERRUPTED))
    store.add_run(_run("r2b", "job", minutes=15, status=RunStatus.MISSED))  # settled afterwards
    found = store.unsettled_slots("job", T0 - dt.timedelta(hours=1), T0 + dt.timedelta(minutes=30))
    assert found == [T0, T0 + dt.timedelta(minutes=5)]
    assert store.final_status("job", T0 + dt.timedelta(minutes=15)) == RunStatus.MISSED
    assert store.final_status("job", T0) is None


def test_a_slot_skipped_while_its_job_was_paused_settles_nothing(store: StateStore) -> None:
    later = T0 + dt.timedelta(minutes=5)
    token = store.claim("job", T0, 1, "p1", "h1", lease=30)
    paused = RunRecord("p1", "job", T0, 1, RunStatus.SKIPPED, "paused", ended=T0, host="h1", paused=True)
    assert store.record_unstarted(paused, token)  # type: ignore[arg-type]
    # The flag says it, whatever the words: a release may tell the reader more one day.
    store.claim_and_record(RunRecord("p2", "job", later, 1, RunStatus.SKIPPED, "on hold", ended=later, paused=True))
    store.claim_and_record(RunRecord("o1", "other", T0, 1, RunStatus.SKIPPED, "overlap", ended=T0))  # settles
    assert [r.paused for r in store.runs("job")] == [True, True]
    assert (store.slot_state("job", T0).settled, store.final_status("job", T0)) == (False, None)
    assert store.unsettled_slots("job", T0, T0 + dt.timedelta(hours=1)) == [T0, later]
    assert store.settled_slots() == {"job": T0 - dt.timedelta(microseconds=1), "other": T0}
    assert "paused" not in paused.as_json()  # history --json as before: the reason says it


def test_prune_goes_by_when_a_run_was_recorded_not_by_its_slot(store: StateStore) -> None:
    backfilled = _run("bf", "job", minutes=-500_000, status=RunStatus.SUCCEEDED)  # a slot a year ago...
    backfilled.started = backfilled.ended = T0 + dt.timedelta(days=1)  # ...run yesterday
    store.add_run(backfilled)
    store.add_run(_run("newest", "job", minutes=10, status=RunStatus.SUCCEEDED))
    assert store.prune(T0, limit=100) == 0
    assert {r.run_id for r in store.runs("job")} == {"bf", "newest"}


def test_an_unreachable_database_is_a_store_error_without_the_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailable) as info:  # worth waiting for: it may be starting
        open_store(f"postgresql://jobs:hunter2@127.0.0.1:{port}/jobs", tmp_path)
    assert f"postgresql://jobs@127.0.0.1:{port}/jobs" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("password", ["zq/xv9k", "zqxv9k%zz", "zq@xv#w9/k7%1", "zq?xv9k"])
def test_a_password_libpq_misreads_is_not_shown_either(password: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError) as info:
        open_store(f"postgresql://jobs:{password}@127.0.0.1:{port}/jobs", tmp_path)
    message = str(info.value)
    assert f"postgresql://jobs@127.0.0.1:{port}/jobs" in message
    for piece in ("xv9k", "k7%1", "w9/k", "xv#", password):
        assert piece not in message, message


def test_a_database_that_answers_no_is_not_waited_for(postgres, tmp_path: Path) -> None:
    missing = postgres.url("no_such_database")
    with pytest.raises(StoreError, match="no_such_database") as info:
        open_store(missing, tmp_path)
    assert not isinstance(info.value, StoreUnavailable)


def test_hosts_starting_at_once_create_the_schema_once(postgres, tmp_path: Path) -> None:
    import threading

    url = postgres.new_database()
    opened: list[StateStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(open_store(url, tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(opened) == 5
    opened[0].add_run(_run("r1"))
    assert [r.run_id for r in opened[4].runs()] == ["r1"]
    for store in opened:
        store.close()


def test_one_loop_per_host_name_on_a_shared_database(postgres, tmp_path: Path) -> None:
    url = postgres.new_database()
    first, second, other = (open_store(url, tmp_path) for _ in range(3))
    first.beat("web-1", 111, T0)
    first.lock_for_loop(111, "web-1")
    other.lock_for_loop(333, "web-2")  # another host: welcome
    with pytest.raises(StoreError, match=r"another host loop \(pid 111\) is running as host 'web-1'"):
        second.lock_for_loop(222, "web-1")
    first.close()
    second.lock_for_loop(222, "web-1")  # the lock went with the first loop
    second.close()
    other.close()


def test_a_dump_loaded_into_another_store_keeps_everything(store: StateStore, tmp_path: Path) -> None:
    from jobhost.store.model import PendingRetry

    store.add_run(_run("r1", minutes=0, status=RunStatus.SUCCEEDED, ended=T0, duration_ms=5))
    store.add_run(_run("r2", minutes=10, status=RunStatus.FAILED, reason="ValueError: x", ended=T0, duration_ms=7))
    store.add_retry(PendingRetry(T0 + dt.timedelta(minutes=11), "nightly", T0 + dt.timedelta(minutes=10), 2))
    store.set_paused("weekly", True)
    other = open_store(f"sqlite:///{tmp_path / 'other.sqlite3'}", tmp_path)
    other.load(store.dump())
    assert other.runs() == store.runs()
    assert other.pending_retries() == store.pending_retries()
    assert other.paused_jobs() == {"weekly"}
    other.close()


def test_a_load_that_fails_part_way_leaves_the_store_empty(store: StateStore) -> None:
    from jobhost.store.model import StateDump

    broken = StateDump([_run("same"), _run("same", minutes=10)], [], set())  # a run id twice
    with pytest.raises(Exception):  # noqa: B017 - each database names the duplicate key its own way
        store.load(broken)
    assert store.runs() == []
    store.add_run(_run("after"))  # and the store is still usable
    assert [r.run_id for r in store.runs()] == ["after"]


_OPEN_AT = """
import sys, time
from pathlib import Path
from jobhost.store.sqlite import SQLiteStore
at = float(sys.argv[2])
while time.time() < at:
    pass
SQLiteStore(Path(sys.argv[1])).close()
"""


def test_two_processes_opening_a_new_state_file_at_once_both_get_it(tmp_path: Path) -> None:
    """The host starting while someone types `history`: the loser of SQLite's race to turn the
    new file to WAL was told "database is locked" at once, and the host exited."""
    for round_ in range(8):
        path, at = tmp_path / f"state-{round_}.sqlite3", time.time() + 0.5
        openers = [
            subprocess.Popen([sys.executable, "-c", _OPEN_AT, str(path), repr(at)], cwd=ROOT, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        failures = [p.stderr.read().decode() for p in openers if p.wait(30) != 0]  # type: ignore[union-attr]
        assert not failures, failures[0]


def test_a_run_asked_for_by_hand_keeps_who_asked_and_its_parameters(store: StateStore) -> None:
    params = {"day": "2026-11-20", "limit": 3, "dry_run": True, "name": "naïve"}
    store.add_run(_run("m1", params=params, requested_by="alice"))
    store.add_run(_run("s1", minutes=1))
    assert store.run("m1").params == params and store.run("m1").requested_by == "alice"
    assert (store.run("s1").params, store.run("s1").requested_by) == (None, "")
    assert store.run("m1").as_json()["params"] == params and store.run("s1").as_json()["requested_by"] == ""


def test_the_audit_trail_keeps_each_action_newest_first_and_prunes_with_the_runs(store: StateStore) -> None:
    from jobhost.store.model import Action

    first = Action(T0, "alice", "pause", "nightly", "disk full on the target", {"until": "2026-11-23T08:00:00+00:00"})
    second = Action(T0 + dt.timedelta(hours=2), "ops-bot", "run", "nightly", "", {"params": {"day": "x"}})
    store.add_action(first)
    store.add_action(second)
    assert store.actions() == [second, first]
    assert store.actions(since=T0 + dt.timedelta(hours=1)) == [second]
    assert store.actions(limit=1) == [second]
    store.prune(T0 + dt.timedelta(hours=1), limit=100)
    assert store.actions() == [second]


def test_what_is_written_atomically_is_all_kept_or_none_of_it(store: StateStore) -> None:
    from jobhost.store.model import Action

    with pytest.raises(RuntimeError), store.atomic():
        store.set_paused("nightly", True)
        store.add_action(Action(T0, "alice", "pause", "nightly"))
        raise RuntimeError("the audit record could not be written")
    assert store.paused_jobs() == set() and store.actions() == []


def test_a_pause_keeps_why_who_since_and_until_and_a_resume_forgets_them(store: StateStore) -> None:
    from jobhost.store.model import Pause

    pause = Pause("the warehouse is being migrated", "alice", T0, T0 + dt.timedelta(hours=2))
    store.set_paused("nightly", True, pause)
    store.set_paused("hourly", True)
    assert store.pauses() == {"nightly": pause, "hourly": Pause()}
    store.set_paused("nightly", False)
    assert store.pauses() == {"hourly": Pause()} and store.paused_jobs() == {"hourly"}


def test_a_pause_that_has_ended_is_resumed_once_counted_and_audited(store: StateStore) -> None:
    from jobhost.store.model import Pause

    store.set_paused("nightly", True, Pause("deploy window", "alice", T0, T0 + dt.timedelta(hours=1)))
    store.set_paused("hourly", True, Pause("incident", "bob", T0))  # until resumed by hand
    before = store.resumes().get("nightly", 0)
    assert store.end_pauses(T0 + dt.timedelta(minutes=59)) == []
    assert store.end_pauses(T0 + dt.timedelta(hours=1)) == ["nightly"]
    assert store.end_pauses(T0 + dt.timedelta(hours=2)) == []  # once, whoever looks next
    assert store.paused_jobs() == {"hourly"} and store.resumes()["nightly"] == before + 1
    [action] = store.actions()
    assert (action.actor, action.action, action.target) == ("jobhost", "resume", "nightly")
    assert "deploy window" in action.reason


def test_a_freeze_is_a_pause_of_every_job_that_ends_as_a_thaw(store: StateStore) -> None:
    from jobhost.store.model import EVERY_JOB, Pause

    store.set_paused("hourly", True, Pause("incident", "bob", T0))
    freeze = Pause("deploy window", "alice", T0, T0 + dt.timedelta(hours=1))
    store.set_paused(EVERY_JOB, True, freeze)
    assert store.paused_jobs() == {"hourly", EVERY_JOB} and store.pauses()[EVERY_JOB] == freeze
    assert store.end_pauses(T0 + dt.timedelta(hours=1)) == [EVERY_JOB]
    assert store.paused_jobs() == {"hourly"}  # its own pause outlives the freeze
    assert store.resumes()[EVERY_JOB] == 1  # how hosts see a freeze end between two looks
    [action] = store.actions()
    assert (action.actor, action.action, action.target) == ("jobhost", "thaw", EVERY_JOB)
    assert action.reason == "the freeze ended as set (deploy window)"


def test_a_cancel_request_is_kept_once_until_the_host_acts_on_it(store: StateStore) -> None:
    from jobhost.store.model import CancelRequest

    first = CancelRequest("r1", "nightly", "alice", T0, "wrong input file")
    assert store.ask_cancel(first) == first
    assert store.ask_cancel(CancelRequest("r1", "nightly", "bob", T0 + dt.timedelta(minutes=1))) == first
    store.ask_cancel(CancelRequest("r2", "hourly", "bob", T0 + dt.timedelta(minutes=2)))
    assert [r.run_id for r in store.cancel_requests()] == ["r1", "r2"]
    store.cancels_done(["r1"], T0 + dt.timedelta(minutes=3))
    assert [r.run_id for r in store.cancel_requests()] == ["r2"]
    assert first.outcome_reason() == "cancelled by alice: wrong input file"
    store.prune(T0 + dt.timedelta(hours=1), limit=100)  # one no host acted on goes with the history
    assert store.cancel_requests() == []


def test_a_one_off_run_is_taken_once_or_cancelled_before_and_settles_no_slot(store: StateStore) -> None:
    from jobhost.store.model import OneOff

    later = OneOff("o1", "nightly", T0 + dt.timedelta(hours=2), "alice", T0, {"limit": 5})
    sooner = OneOff("o2", "nightly", T0 + dt.timedelta(hours=1), "bob", T0)
    store.add_one_off(later)
    store.add_one_off(sooner)
    assert store.pending_one_offs() == [sooner, later]
    assert store.take_one_off("o2") and not store.take_one_off("o2")  # one host takes it
    assert not store.cancel_one_off("o2")  # too late: it has been taken
    assert store.cancel_one_off("o1") and not store.take_one_off("o1")
    assert store.pending_one_offs() == [] and store.one_off("o1").state == "cancelled"  # type: ignore[union-attr]
    store.add_run(_run("settled", minutes=0, status=RunStatus.SUCCEEDED))
    store.add_run(_run("o2", minutes=60, status=RunStatus.SUCCEEDED, one_off=True))
    assert store.settled_slots()["nightly"] == T0  # catch-up goes on from the schedule's slot, not the one-off
    store.add_run(_run("o3", minutes=90, status=RunStatus.INTERRUPTED, one_off=True))
    assert store.unsettled_slots("nightly", T0 - dt.timedelta(days=1), T0 + dt.timedelta(days=1)) == []
    assert store.run("o2").one_off  # type: ignore[union-attr]


def test_the_slots_blocked_by_a_failed_parent_are_found_until_one_settles(store: StateStore) -> None:
    waiting, ended = RunStatus.WAITING, T0 + dt.timedelta(hours=1)
    store.add_run(_run("b1", "export", 0, status=waiting, reason="blocked: build failed for slot ...", ended=ended))
    store.add_run(_run("b2", "export", 60, status=waiting, reason="blocked: build failed for slot ...", ended=ended))
    store.add_run(_run("w3", "export", 120, status=waiting, reason="waiting for build (slot ...) to succeed"))
    store.add_run(_run("i4", "export", 180, status=RunStatus.INTERRUPTED, ended=ended))
    store.add_run(_run("s2", "export", 60, attempt=2, status=RunStatus.SUCCEEDED, ended=ended))  # run since
    assert store.blocked_slots("export", T0 - dt.timedelta(days=1)) == [T0]
    assert store.blocked_slots("export", T0 + dt.timedelta(minutes=1)) == []


def test_a_left_run_is_finished_only_while_its_record_still_says_running(store: StateStore) -> None:
    """Recovery read a run as running; its keeper recorded the end before recovery wrote: kept."""
    slot = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
    store.add_run(RunRecord("going", "export", slot, 1, RunStatus.RUNNING, started=slot, host="vm"))
    store.add_run(RunRecord("done", "export", slot, 2, RunStatus.RUNNING, started=slot, host="vm"))
    store.finish_run("done", RunStatus.SUCCEEDED, "", slot, 1000)
    assert store.finish_left_run("going", RunStatus.ABANDONED, "the host died", slot) is True
    assert store.finish_left_run("done", RunStatus.ABANDONED, "the host died", slot) is False
    assert [(r.run_id, r.status) for r in sorted(store.runs("export"), key=lambda r: r.run_id)] == [
        ("done", RunStatus.SUCCEEDED),
        ("going", RunStatus.ABANDONED),
    ]
