"""End to end: the SQLite state file failing under a real host. A full filesystem, a damaged
file and a file deleted under the loop lose no slot, run nothing twice, and are said once."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import Deployment, HostProcess, events, fill_filesystem

TICK = """
from jobhost import job, every

@job(every(1).seconds)
def tick():
    pass
"""

# A tick every second on SQLite: heartbeats, ticks and retries of the store every second.
FAST = {"JOBS_HEARTBEAT_INTERVAL": "1s", "JOBS_LEASE": "3s"}
# What a tick's slot may end as: run, missed by catch-up, or skipped behind a catch-up run still going.
FINAL = ("succeeded", "missed", "skipped")
PAGE = 4096  # SQLite's default page size
OUTAGE_SECONDS = 4.0  # how long the fault lasts: several slots fall due meanwhile


def _events(process: HostProcess, event: str) -> list[dict]:
    return [r for r in process.records() if r.get("event") == event]


def _store_lines(process: HostProcess) -> list[str]:
    return [json.dumps(r) for r in process.records() if str(r.get("event", "")).startswith("store_")]


def _slots(
    deployment: Deployment, first: dt.datetime, last: dt.datetime, job: str = "tick", **env: str
) -> list[dt.datetime]:
    """The slots of `job` in [first, last], as its schedule gives them."""
    start = (first - dt.timedelta(microseconds=1)).isoformat()
    count = str(int((last - first).total_seconds()) + 2)
    listed = deployment.cli("next", job, "--from", start, "--count", count, **env)
    assert listed.returncode == 0, listed.stderr
    return [slot for slot in map(dt.datetime.fromisoformat, listed.stdout.split()) if slot <= last]


def _by_slot(history: list[dict]) -> dict[dt.datetime, list[str]]:
    slots: dict[dt.datetime, list[str]] = collections.defaultdict(list)
    for record in history:
        slots[dt.datetime.fromisoformat(record["slot"])].append(record["status"])
    return slots


def _wait_for_history(
    deployment: Deployment, predicate, timeout: float = 30, job: str = "tick", **env: str
) -> list[dict]:
    """Poll the history of `job` (bounded) until `predicate(history)` holds."""
    deadline = time.monotonic() + timeout
    while not predicate(history := deployment.history(job, limit=100000, **env)):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout}s for the history to show {predicate}: {history[:20]}")
        time.sleep(0.5)
    return history


def _gaps(deployment: Deployment, history: list[dict], job: str = "tick", **env: str) -> list[dt.datetime]:
    """The slots of `job`, from the first recorded to the last, that have no record."""
    per_slot = _by_slot(history)
    return [slot for slot in _slots(deployment, min(per_slot), max(per_slot), job, **env) if slot not in per_slot]


def _assert_every_slot_once(
    deployment: Deployment, process: HostProcess, history: list[dict], job: str = "tick", **env: str
) -> None:
    """Every slot from the first to the last recorded has exactly one record, final, and none ran twice."""
    per_slot = _by_slot(history)
    gaps = _gaps(deployment, history, job, **env)
    doubled = {slot: statuses for slot, statuses in per_slot.items() if len(statuses) != 1}
    unfinished = {slot: statuses for slot, statuses in per_slot.items() if statuses[0] not in FINAL}
    started = collections.Counter(r["slot"] for r in _events(process, "run_started") if r["job"] == job)
    assert gaps == [], f"slots with no record: {gaps}"
    assert doubled == {} and unfinished == {}, (
        doubled,
        unfinished,
        [(r["slot"], r["status"], r["reason"]) for r in history],
    )
    assert [slot for slot, count in started.items() if count > 1] == []


def test_a_full_disk_holds_every_slot_and_is_said_once_with_its_end(deployment: Deployment, host, small_fs) -> None:
    deployment.write("ticks", TICK)
    url = {"JOBS_STATE_URL": f"sqlite:///{small_fs / 'state.sqlite3'}"}
    process = host(**url, **FAST)
    process.wait_for(lambda rs: len([r for r in rs if r.get("event") == "run_succeeded"]) >= 2, what="two runs")
    filler = fill_filesystem(small_fs)
    process.wait_for(lambda rs: any(r.get("event") == "store_failing" for r in rs), what="the disk full noticed")
    time.sleep(OUTAGE_SECONDS)  # the fault's length, not a synchronisation: slots fall due meanwhile
    freed = dt.datetime.now(dt.UTC)
    filler.unlink()
    process.wait_for(lambda rs: any(r.get("event") == "store_recovered" for r in rs), what="the store writable again")
    history = _wait_for_history(
        deployment,
        lambda h: any(dt.datetime.fromisoformat(r["slot"]) > freed + dt.timedelta(seconds=2) for r in h),
        **url,
    )
    assert process.stop() == 0
    history = deployment.history("tick", limit=100000, **url)
    [failing], [recovered] = _events(process, "store_failing"), _events(process, "store_recovered")
    assert "database or disk is full" in failing["message"] and failing["level"] == "ERROR", failing
    assert _events(process, "store_failed") == [], "no traceback per call: " + "\n".join(_store_lines(process))
    assert recovered["outage_ms"] >= OUTAGE_SECONDS * 1000
    _assert_every_slot_once(deployment, process, history, **url)
    missed = [r for r in history if r["status"] == "missed"]
    assert len(missed) >= OUTAGE_SECONDS - 1  # the outage's slots: missed by catchup="latest", with the reason
    assert all("superseded" in r["reason"] for r in missed)


def _state_with_history(path: Path, runs: int) -> None:
    """A state file with `runs` runs of tick in it, written by the store itself."""
    from jobhost.outcomes import RunStatus
    from jobhost.store import RunRecord
    from jobhost.store.sqlite import SQLiteStore

    store = SQLiteStore(path)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for index in range(runs):
        slot = start + dt.timedelta(seconds=index)
        store.add_run(RunRecord(f"run{index:06d}", "tick", slot, 1, RunStatus.SUCCEEDED, "", slot, slot, 3, "h"))
    store.close()  # the last connection: the write-ahead log goes into the file


def _garble(path: Path, pages: range) -> None:
    """Overwrite whole pages of the file with random bytes, as a failing disk would."""
    with path.open("r+b") as out:
        for page in pages:
            out.seek(page * PAGE)
            out.write(os.urandom(PAGE))


def test_a_damaged_state_file_is_refused_by_check_and_at_start(deployment: Deployment, host) -> None:
    deployment.write("ticks", TICK)
    state = deployment.tmp / "state.sqlite3"
    _state_with_history(state, 3000)
    pages = state.stat().st_size // PAGE
    _garble(state, range(pages - 6, pages - 2))  # runs and their indexes; the schema stays readable

    checked = deployment.cli("check")
    assert checked.returncode == 2, checked
    assert str(state) in checked.stderr and "damaged" in checked.stderr and "restore a backup" in checked.stderr
    assert "Traceback" not in checked.stderr

    process = host()
    assert process.proc.wait(60) == 2
    process.stop()
    [refused] = _events(process, "host_start_failed")
    assert str(state) in refused["message"] and "damaged" in refused["message"], refused
    said = deployment.cli("health")  # why the loop is not beating, in one line for a monitor
    assert said.returncode == 1 and "refused to start" in said.stdout and "damaged" in said.stdout, said.stdout
    assert said.stdout.count("\n") == 1, said.stdout
    assert _events(process, "run_started") == [] and _events(process, "host_started") == []


def test_a_damaged_state_file_fails_the_store_for_good_not_once_per_call(tmp_path: Path) -> None:
    """Met at run time (the file damaged after the start), the damage is a failure of the store
    until the host is restarted on a good file: it does not pass for working at the next read."""
    from jobhost.errors import StoreFailing
    from jobhost.store.sqlite import SQLiteStore

    state = tmp_path / "state.sqlite3"
    _state_with_history(state, 3000)
    pages = state.stat().st_size // PAGE
    _garble(state, range(pages - 6, pages - 2))
    store = SQLiteStore(state)  # opened without the check
    with pytest.raises(StoreFailing, match="is damaged") as first:
        store.runs(limit=100000)
    with pytest.raises(StoreFailing, match="is damaged") as second:
        store.heartbeat("h")  # a read that touches no damaged page: still refused
    assert str(first.value) == str(second.value) and "restore a backup" in str(first.value)
    store.close()


def test_a_state_file_deleted_under_the_host_is_said_and_not_written_into(deployment: Deployment, host) -> None:
    deployment.write("ticks", TICK)
    state = deployment.tmp / "state.sqlite3"
    process = host(**FAST)
    process.wait_for(lambda rs: len([r for r in rs if r.get("event") == "run_succeeded"]) >= 2, what="two runs")
    held = os.open(state, os.O_RDONLY)  # the deleted file stays readable here
    try:
        deleted = dt.datetime.now(dt.UTC)
        state.unlink()
        process.wait_for(lambda rs: any(r.get("event") == "store_failing" for r in rs), what="the deletion noticed")
        time.sleep(OUTAGE_SECONDS)  # the host runs on meanwhile, slots fall due
        assert process.proc.poll() is None, "the host stays up"
        assert process.stop() == 0
        [failing] = _events(process, "store_failing")
        assert failing["level"] == "ERROR" and str(state) in failing["message"] and "deleted" in failing["message"]
        assert "put it back" in failing["message"], failing
        assert _events(process, "store_failed") == [], "\n".join(_store_lines(process))
        assert not state.exists(), "the host made no new file behind the person's back"
        copy = deployment.tmp / "dead.sqlite3"
        with os.fdopen(held, "rb") as dead, copy.open("wb") as out:
            held = -1
            shutil.copyfileobj(dead, out)
        # What was written after the last checkpoint is in the write-ahead log, left at its path.
        shutil.copyfile(state.with_name(state.name + "-wal"), copy.with_name(copy.name + "-wal"))
    finally:
        if held >= 0:
            os.close(held)
    slots = [dt.datetime.fromisoformat(row[0]) for row in sqlite3.connect(copy).execute("SELECT slot FROM runs")]
    # Nothing went into the deleted file once it was gone: no slot a second after the deletion.
    late = [slot for slot in slots if slot > deleted + dt.timedelta(seconds=1)]
    assert slots and late == [], f"written into the deleted file after {deleted}: {late}"


def test_a_state_file_moved_away_and_back_loses_no_slot(deployment: Deployment, host) -> None:
    deployment.write("ticks", TICK)
    state = deployment.tmp / "state.sqlite3"
    aside = deployment.tmp / "state.aside"
    process = host(**FAST)
    process.wait_for(lambda rs: len([r for r in rs if r.get("event") == "run_succeeded"]) >= 2, what="two runs")
    state.rename(aside)
    process.wait_for(lambda rs: any(r.get("event") == "store_failing" for r in rs), what="the move noticed")
    time.sleep(OUTAGE_SECONDS)  # the fault's length: slots fall due meanwhile
    aside.rename(state)
    back = dt.datetime.now(dt.UTC)
    process.wait_for(lambda rs: any(r.get("event") == "store_recovered" for r in rs), what="the file back")
    _wait_for_history(
        deployment, lambda h: any(dt.datetime.fromisoformat(r["slot"]) > back + dt.timedelta(seconds=2) for r in h)
    )
    assert process.stop() == 0
    assert [len(_events(process, e)) for e in ("store_failing", "store_recovered", "store_failed")] == [1, 1, 0], (
        "\n".join(_store_lines(process))
    )
    _assert_every_slot_once(deployment, process, deployment.history("tick", limit=100000))


def test_a_host_that_cannot_open_its_file_on_a_full_disk_waits_for_it(deployment: Deployment, host, small_fs) -> None:
    deployment.write("ticks", TICK)
    url = {"JOBS_STATE_URL": f"sqlite:///{small_fs / 'state.sqlite3'}"}
    crashed = host(**url, **FAST)
    crashed.wait_for(lambda rs: any(r.get("event") == "run_succeeded" for r in rs), what="a run")
    crashed.proc.kill()  # no clean close: the write-ahead log holds what the file does not yet
    crashed.proc.wait(10)
    (small_fs / "state.sqlite3-shm").unlink()  # its index, which the next open makes anew: that needs space
    filler = fill_filesystem(small_fs)
    waiting = host(**url, **FAST)
    waiting.wait_for(lambda rs: any(r.get("event") == "store_failing" for r in rs), what="the full disk said")
    said = deployment.cli("health", **url)
    assert said.returncode == 1 and "the state store is failing" in said.stdout, said.stdout
    assert waiting.proc.poll() is None  # waiting, not refused: supervisord would give up on it
    filler.unlink()
    waiting.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), timeout=60, what="the start")
    waiting.wait_for(lambda rs: any(r.get("event") == "run_succeeded" for r in rs), what="a run after it")
    assert waiting.stop() == 0
    [failing], [recovered] = _events(waiting, "store_failing"), _events(waiting, "store_recovered")
    assert "cannot open the SQLite state file" in failing["message"], failing
    assert recovered["outage_ms"] > 0
    assert deployment.cli("health", **url).returncode == 1  # stopped cleanly: not beating
    assert [r for r in deployment.history("tick", limit=100000, **url) if r["status"] == "running"] == []


SLOW = """
import time
from jobhost import job, every

@job(every(1).seconds, timeout="5m")
def slow():
    time.sleep(300)
"""


def test_a_host_started_on_a_full_disk_settles_what_the_last_one_left_once_it_can_write(
    deployment: Deployment, host, small_fs
) -> None:
    deployment.write("slow", SLOW)
    url = {"JOBS_STATE_URL": f"sqlite:///{small_fs / 'state.sqlite3'}"}
    left = host(**url, **FAST)
    left.wait_for(lambda rs: any(r.get("event") == "run_started" for r in rs), what="a run of slow")
    [started] = [r for r in left.records() if r.get("event") == "run_started"]
    left.proc.kill()  # the host dies under its run: the run's record stays `running`
    left.proc.wait(10)
    [stale] = [r for r in deployment.history("slow", **url) if r["run_id"] == started["run_id"]]
    assert stale["status"] == "running"

    # A reader keeps the file open, as `history` in a terminal would: the next open finds the
    # write-ahead log's index made, and needs no space, so the host opens the file on a full disk.
    reader = sqlite3.connect(small_fs / "state.sqlite3")
    reader.execute("SELECT count(*) FROM runs").fetchall()
    try:
        filler = fill_filesystem(small_fs)
        starting = host(**url, **FAST)
        starting.wait_for(lambda rs: any(r.get("event") == "store_failing" for r in rs), what="the full disk noticed")
        [(status,)] = reader.execute("SELECT status FROM runs WHERE run_id = ?", (started["run_id"],)).fetchall()
        assert status == "running"  # nothing could be written yet
        filler.unlink()
        starting.wait_for(lambda rs: any(r.get("event") == "store_recovered" for r in rs), what="the store writable")
        starting.wait_for(
            lambda rs: any(r.get("event") == "run_abandoned" and r.get("run_id") == started["run_id"] for r in rs),
            what="the stale run settled",
        )
    finally:
        reader.close()
    assert starting.stop() == 0
    [settled] = [r for r in deployment.history("slow", **url) if r["run_id"] == started["run_id"]]
    assert settled["status"] == "abandoned", settled
    assert [r for r in deployment.history("slow", **url) if r["status"] == "running"] == []
    abandoned = [r for r in starting.records() if r.get("event") == "run_abandoned"]
    assert len(abandoned) == 1, abandoned  # said once, though the first try at the start failed
    assert _events(starting, "store_failed") == [], "no traceback per call: " + "\n".join(_store_lines(starting))


CAUGHT_UP = """
from jobhost import job, every

@job(every(1).seconds)
def tick():
    pass

@job(every(1).seconds, catchup="all", overlap="allow")  # a slot due while a late one runs is not skipped
def each():
    pass
"""


def test_a_disk_freed_in_part_then_full_again_still_leaves_no_slot_without_a_record(
    deployment: Deployment, host, small_fs
) -> None:
    deployment.write("ticks", CAUGHT_UP)
    url = {"JOBS_STATE_URL": f"sqlite:///{small_fs / 'state.sqlite3'}"}
    # The default lease: the loop catches up at its tick, every 10 s, long after the store is back.
    process = host(**url, JOBS_HEARTBEAT_INTERVAL="1s")
    process.wait_for(lambda rs: len(events(rs, "each", "run_succeeded")) >= 2, what="two runs")
    filler = fill_filesystem(small_fs)
    process.wait_for(lambda rs: len(_events(process, "store_failing")) == 1, what="the disk full noticed")
    time.sleep(OUTAGE_SECONDS)  # the fault's length, not a synchronisation: slots fall due meanwhile
    os.truncate(filler, filler.stat().st_size - 64 * 1024)  # room for a write or two, not for the catch-up
    process.wait_for(lambda rs: len(_events(process, "store_recovered")) == 1, what="the store writable a moment")
    fill_filesystem(small_fs)
    process.wait_for(lambda rs: len(_events(process, "store_failing")) == 2, what="the disk full again")
    time.sleep(OUTAGE_SECONDS)
    freed = dt.datetime.now(dt.UTC)
    for name in small_fs.glob("filler*"):
        name.unlink()
    process.wait_for(lambda rs: len(_events(process, "store_recovered")) == 2, what="the store writable again")
    for job in ("tick", "each"):  # caught up: a record for every slot, up to a while after the disk was freed
        _wait_for_history(
            deployment,
            lambda h, job=job: (
                _gaps(deployment, h, job, **url) == []
                and any(dt.datetime.fromisoformat(r["slot"]) > freed + dt.timedelta(seconds=2) for r in h)
            ),
            job=job,
            **url,
        )
    assert process.stop() == 0
    for job in ("tick", "each"):
        history = deployment.history(job, limit=100000, **url)
        _assert_every_slot_once(deployment, process, history, job=job, **url)
    ran = [r for r in deployment.history("each", limit=100000, **url) if r["status"] != "succeeded"]
    assert ran == [], ran  # catchup="all": every slot of the outages ran, late


def test_a_file_put_in_place_of_the_loops_is_not_opened_by_the_commands_and_nothing_is_lost(
    deployment: Deployment, host
) -> None:
    deployment.write("ticks", TICK)
    state = deployment.tmp / "state.sqlite3"
    other = deployment.tmp / "other.sqlite3"
    _state_with_history(other, 5)  # another state file, as a restore of the wrong backup would be
    aside = deployment.tmp / "state.aside"
    process = host(**FAST)
    process.wait_for(lambda rs: len([r for r in rs if r.get("event") == "run_succeeded"]) >= 2, what="two runs")
    state.rename(aside)
    other.rename(state)  # replaced under the loop: the write-ahead log beside it is still the loop's
    process.wait_for(lambda rs: any(r.get("event") == "store_failing" for r in rs), what="the replacement noticed")
    for command in (("history",), ("check",), ("run", "tick")):
        refused = deployment.cli(*command)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        said = refused.stdout + refused.stderr  # `run` logs it, on its JSON stream
        assert "is not the file the running loop" in said and "Traceback" not in said, said
    said = deployment.cli("health")
    assert said.returncode == 1 and "was replaced" in said.stdout, said.stdout
    state.rename(other)
    aside.rename(state)
    back = dt.datetime.now(dt.UTC)
    process.wait_for(lambda rs: any(r.get("event") == "store_recovered" for r in rs), what="the file back")
    _wait_for_history(
        deployment,
        lambda h: (
            _gaps(deployment, h) == []
            and any(dt.datetime.fromisoformat(r["slot"]) > back + dt.timedelta(seconds=2) for r in h)
        ),
    )
    assert process.stop() == 0
    assert deployment.cli("check").returncode == 0  # neither file was mixed with the other's log
    _assert_every_slot_once(deployment, process, deployment.history("tick", limit=100000))
    assert [r["run_id"] for r in deployment.history("tick", limit=100000) if r["run_id"].startswith("run0")] == []
