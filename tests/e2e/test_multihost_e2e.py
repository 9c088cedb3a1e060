"""End to end: several real hosts on one real PostgreSQL. Each slot runs exactly once, a dead
or cut-off host's run is taken over once, and an outage of the database runs nothing twice."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Deployment, HostProcess, events, require
from tests.support import netns
from tests.support.postgres_cluster import Cluster, server_bin

FLEET_SECONDS = float(os.environ.get("JOBHOST_FLEET_SECONDS", "120"))  # how long three hosts share the work

FLEET_JOBS = """
import time
from jobhost import job, every

@job(every(1).seconds)
def tick():
    pass

@job(every(3).seconds)
def chunk():
    time.sleep(1)
"""

LONG_JOB = """
import time
from jobhost import job, every

@job(every(30).seconds, retries=1, retry_delay="1s", timeout="2m")
def long_job():
    print("working")
    time.sleep({seconds})
    print("done")
"""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A cluster of the test's own, free to be crashed (stopped, immediate) and started: durable,
    as a production server is, so a crash loses no committed claim."""
    require("PostgreSQL", server_bin() is not None, "install Debian's postgresql package (./dev test does as root)")
    own = Cluster(durable=True)
    yield own
    own.destroy()


def _fleet(host, url: str, names: list[str], lease: str = "6s", **env: str) -> list[HostProcess]:
    fleet = [host(JOBS_STATE_URL=url, JOBS_HOST_NAME=name, JOBS_LEASE=lease, **env) for name in names]
    for process in fleet:
        process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the host to start")
    return fleet


def _history(deployment: Deployment, url: str) -> list[dict]:
    listed = deployment.cli("history", "--limit", "1000000", "--json", JOBS_STATE_URL=url)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def _slots(deployment: Deployment, url: str, job: str, first: dt.datetime, last: dt.datetime) -> list[dt.datetime]:
    """The job's slots in [first, last], as its schedule gives them."""
    start = (first - dt.timedelta(microseconds=1)).isoformat()
    count = str(int((last - first).total_seconds()) + 2)
    listed = deployment.cli("next", job, "--from", start, "--count", count, JOBS_STATE_URL=url)
    assert listed.returncode == 0, listed.stderr
    slots = [dt.datetime.fromisoformat(line) for line in listed.stdout.split()]
    return [slot for slot in slots if slot <= last]


def _starts(fleet: list[HostProcess]) -> collections.Counter:
    """How many times each (job, slot) was started, over every host's log."""
    return collections.Counter(
        (r["job"], r["slot"]) for process in fleet for r in process.records() if r.get("event") == "run_started"
    )


def _by_slot(history: list[dict], job: str) -> dict[dt.datetime, list[dict]]:
    slots: dict[dt.datetime, list[dict]] = collections.defaultdict(list)
    for record in history:
        if record["job"] == job:
            slots[dt.datetime.fromisoformat(record["slot"])].append(record)
    return slots


@pytest.mark.timeout(FLEET_SECONDS + 120)
def test_three_hosts_run_every_slot_exactly_once(deployment: Deployment, postgres, host) -> None:
    deployment.write("fleet", FLEET_JOBS)
    url = postgres.new_database()
    fleet = _fleet(host, url, ["h1", "h2", "h3"])
    first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    time.sleep(FLEET_SECONDS)  # the experiment's length: nothing below depends on timing
    last = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)  # runs still going at the stop do not count
    for process in fleet:
        assert process.stop() == 0
    history = _history(deployment, url)
    starts = _starts(fleet)
    for job in ("tick", "chunk"):
        expected = _slots(deployment, url, job, first, last)
        recorded = _by_slot(history, job)
        succeeded = {slot: [r for r in recorded[slot] if r["status"] == "succeeded"] for slot in expected}
        duplicates = sum(max(0, len(runs) - 1) for runs in succeeded.values())
        duplicates += sum(count - 1 for (name, _), count in starts.items() if name == job and count > 1)
        missed = [slot for slot, runs in succeeded.items() if not runs]
        hosts = collections.Counter(runs[0]["host"] for runs in succeeded.values() if runs)
        print(
            f"{job}: {len(expected)} slots over {FLEET_SECONDS:g} s on 3 hosts: {duplicates} duplicates, "
            f"{len(missed)} missed; runs by host {dict(sorted(hosts.items()))}"
        )
        assert duplicates == 0
        assert missed == []
        assert len(expected) >= FLEET_SECONDS / (1 if job == "tick" else 3) - 6
        assert len(hosts) == 3, "every host should have won some claims"


CROSS_JOBS = """
import time
from pathlib import Path
from jobhost import job, every

MARKS = Path({marks!r})

@job(every(1).seconds)  # overlap="skip": never two runs at once, on any host
def slow():
    time.sleep(2.5)

@job(every(2).seconds)
def parent():
    time.sleep(0.5)

@job(every(2).seconds, after="parent")
def child():
    pass

@job(every(2).seconds, retries=2, retry_delay="1s")
def flaky(slot):
    mark = MARKS / slot.isoformat()
    if not mark.exists():  # each slot's first attempt fails, on whichever host
        mark.touch()
        raise RuntimeError("first attempt")
"""


def test_overlap_dependencies_and_retries_hold_across_hosts(deployment: Deployment, postgres, host, tmp_path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    deployment.write("cross", CROSS_JOBS.format(marks=str(marks)))
    url = postgres.new_database()
    fleet = _fleet(host, url, ["h1", "h2"])
    first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    time.sleep(25)  # the experiment's length
    last = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=8)
    for process in fleet:
        assert process.stop() == 0
    history = _history(deployment, url)
    at = dt.datetime.fromisoformat
    ran = sorted(
        (at(r["started"]), at(r["ended"]), r["host"])
        for r in history
        if r["job"] == "slow" and r["started"] and r["ended"]
    )
    assert len(ran) >= 5
    overlaps = [(a, b) for a, b in itertools.pairwise(ran) if b[0] < a[1]]
    assert overlaps == [], "two runs of slow overlapped"
    parents = {r["slot"]: r for r in history if r["job"] == "parent" and r["status"] == "succeeded"}
    children = [r for r in history if r["job"] == "child" and r["status"] == "succeeded"]
    assert len(children) >= 5
    for child in children:
        assert at(child["started"]) >= at(parents[child["slot"]]["ended"]), "a child ran before its parent ended"
    flaky = _by_slot(history, "flaky")
    window = _slots(deployment, url, "flaky", first, last)
    outcomes = {slot: sorted((r["attempt"], r["status"]) for r in flaky[slot]) for slot in window}
    assert all(attempts == [(1, "failed"), (2, "succeeded")] for attempts in outcomes.values()), outcomes
    moved = sum(1 for slot in window if len({r["host"] for r in flaky[slot]}) == 2)
    slow_hosts = dict(collections.Counter(host for _, _, host in ran))
    print(f"slow: {len(ran)} runs by host {slow_hosts}, none overlapping")
    print(f"flaky: {len(window)} slots, each failed once and succeeded once; {moved} retried on the other host")


def _is_store(record: dict) -> bool:
    return str(record.get("event", "")).startswith("store_")


def test_a_killed_hosts_run_is_taken_over_when_its_lease_runs_out(deployment: Deployment, postgres, host) -> None:
    deployment.write("long", LONG_JOB.format(seconds=4))
    url = postgres.new_database()
    fleet = _fleet(host, url, ["h1", "h2"], lease="3s")
    started = _first_start(fleet, "long_job")
    victim = fleet.index(started)
    survivor = fleet[1 - victim]
    [run] = [r for r in _history(deployment, url) if r["job"] == "long_job" and r["status"] == "running"]
    # The machine dies: its host and the run's process group, no chance to record anything.
    os.kill(started.proc.pid, signal.SIGKILL)
    os.killpg(run["pid"], signal.SIGKILL)
    records = survivor.wait_for(
        lambda rs: any(r.get("attempt") == 2 for r in events(rs, "long_job", "run_succeeded")),
        timeout=40,
        what="the survivor to take the run over and succeed",
    )
    [abandoned] = [r for r in records if r.get("run_id") == run["run_id"]]  # retried: the job has retries=1
    assert abandoned["event"] == "run_retrying" and f"host {run['host']} stopped renewing" in abandoned["message"]
    assert survivor.stop() == 0
    slot = [r for r in _history(deployment, url) if r["slot"] == run["slot"] and r["job"] == "long_job"]
    assert sorted((r["attempt"], r["status"], r["host"]) for r in slot) == [
        (1, "abandoned", run["host"]),
        (2, "succeeded", ["h1", "h2"][1 - victim]),
    ]


def test_a_run_cancelled_from_another_machine_is_stopped_by_the_host_that_runs_it(
    deployment: Deployment, postgres, host
) -> None:
    deployment.write("long", LONG_JOB.format(seconds=120))
    url = postgres.new_database()
    fleet = _fleet(host, url, ["h1", "h2"], lease="3s")
    started = _first_start(fleet, "long_job")
    [run] = [r for r in _history(deployment, url) if r["job"] == "long_job" and r["status"] == "running"]
    # From a machine of its own: no loop there to nudge, so the request reaches the run's host
    # through the database, at that host's next tick (a lease / 3).
    cancelled = deployment.cli("cancel", run["run_id"], JOBS_STATE_URL=url, JOBS_HOST_NAME="ops-laptop")
    assert cancelled.returncode == 0, (cancelled.stdout, cancelled.stderr)
    started.wait_for(
        lambda rs: any(r.get("run_id") == run["run_id"] for r in events(rs, "long_job", "run_cancelling")),
        what="the host that runs it to act on the request",
    )
    for process in fleet:
        assert process.stop() == 0
    slot = [r for r in _history(deployment, url) if r["slot"] == run["slot"] and r["job"] == "long_job"]
    assert [(r["attempt"], r["status"], r["host"]) for r in slot] == [(1, "cancelled", run["host"])]  # not retried


def test_a_run_at_a_later_time_runs_once_across_hosts(deployment: Deployment, postgres, host) -> None:
    deployment.write(
        "quick", "from jobhost import job, every\n\n@job(every().day.at('03:00'))\ndef quick():\n    pass\n"
    )
    url = postgres.new_database()
    fleet = _fleet(host, url, ["h1", "h2"], lease="3s")
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).isoformat()
    asked = deployment.cli("run", "quick", "--at", at, JOBS_STATE_URL=url, JOBS_HOST_NAME="ops-laptop")
    assert asked.returncode == 0, asked.stderr
    run_id = asked.stdout.split()[2]
    deadline = time.monotonic() + 30
    while not any(events(p.records(), "quick", "run_succeeded") for p in fleet) and time.monotonic() < deadline:
        time.sleep(0.1)  # a bounded poll over both hosts' logs
    for process in fleet:
        assert process.stop() == 0
    runs = [r for r in _history(deployment, url) if r["job"] == "quick"]
    assert [(r["run_id"], r["status"], r["one_off"]) for r in runs] == [(run_id, "succeeded", True)]
    assert sum(bool(events(p.records(), "quick", "run_started")) for p in fleet) == 1


def test_a_database_outage_runs_nothing_twice_and_is_reported_once(deployment: Deployment, cluster, host) -> None:
    deployment.write("fleet", FLEET_JOBS)
    url = cluster.new_database()
    fleet = _fleet(host, url, ["h1", "h2", "h3"])
    _wait_for_history(deployment, url, lambda rs: any(r["job"] == "chunk" and r["status"] == "succeeded" for r in rs))
    first_tick = min(dt.datetime.fromisoformat(r["slot"]) for r in _history(deployment, url) if r["job"] == "tick")
    cluster.stop()
    stopped = time.monotonic()
    for process in fleet:
        process.wait_for(lambda rs: _count(rs, "store_unreachable") >= 1, timeout=15, what="the outage noticed")
    time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))  # the outage lasts 20 s
    cluster.start()
    for process in fleet:
        process.wait_for(lambda rs: _count(rs, "store_reachable") >= 1, timeout=30, what="the store back")
    # Slots whose claim was made but not acted on when the store went away are taken over one
    # lease after it is back (so hosts cut off together renew theirs first): wait for them.
    back = dt.datetime.now(dt.UTC)
    _wait_for_history(deployment, url, lambda _: not _unrecorded(deployment, url, "tick", first_tick, back), 40)
    for process in fleet:
        assert process.stop() == 0
    said = [(_count(p.records(), "store_unreachable"), _count(p.records(), "store_reachable")) for p in fleet]
    store_lines = [(r["host"], r["timestamp"], r["message"]) for p in fleet for r in p.records() if _is_store(r)]
    assert said == [(1, 1)] * 3, f"each host reports the outage once, not once per slot: {store_lines}"
    starts = _starts(fleet)
    twice = [key for key, count in starts.items() if count > 1]
    assert twice == [], _who_started(fleet, twice)
    history = _history(deployment, url)
    ticks = _by_slot(history, "tick")
    slots = sorted(ticks)
    per_slot = {slot: sorted(r["status"] for r in ticks[slot]) for slot in slots}
    gaps = [slot for slot in _slots(deployment, url, "tick", slots[0], slots[-1]) if slot not in ticks]
    doubled = {slot: statuses for slot, statuses in per_slot.items() if len(statuses) != 1}
    missed = [slot for slot, statuses in per_slot.items() if statuses == ["missed"]]
    print(
        f"tick: {len(slots)} slots, {len(missed)} missed in the 20 s outage, {len(doubled)} doubled, {len(gaps)} gaps"
    )
    assert doubled == {} and gaps == []
    assert len(missed) >= 15  # the outage's slots: recorded missed by policy (catchup="latest"), not run late
    assert all("superseded" in ticks[slot][0]["reason"] for slot in missed)


def test_the_store_works_at_once_when_its_server_is_back(cluster, tmp_path) -> None:
    from jobhost.errors import StoreUnavailable
    from jobhost.store import open_store

    store = open_store(cluster.new_database(), tmp_path)
    store.beat("h1", 1, dt.datetime.now(dt.UTC))
    cluster.stop()
    down = time.monotonic()
    while time.monotonic() - down < 10:  # a 10 s outage, tried all along (the pool's backoff grows)
        with pytest.raises(StoreUnavailable, match="is unreachable"):
            store.heartbeat("h1")
        time.sleep(0.5)
    cluster.start()
    assert store.heartbeat("h1") is not None  # the first call after: no wait for the pool's own backoff
    store.close()


def test_a_host_started_before_its_database_waits_for_it(deployment: Deployment, cluster, host) -> None:
    deployment.write("fleet", FLEET_JOBS)
    url = cluster.new_database()
    cluster.stop()
    waiting = host(JOBS_STATE_URL=url)
    waiting.wait_for(lambda rs: _count(rs, "store_unreachable") == 1, what="the host to wait for its database")
    cluster.start()
    records = waiting.wait_for(lambda rs: events(rs, "tick", "run_succeeded"), what="runs once it is up")
    assert _count(records, "store_unreachable") == 1  # said once, not once per try
    assert waiting.stop() == 0


def test_a_partitioned_hosts_late_result_does_not_overwrite_the_takeover(deployment: Deployment, host) -> None:
    require("network namespaces", netns.available(), "run as root with iproute2 (`ip`) installed")
    require("PostgreSQL", server_bin() is not None, "install Debian's postgresql package (./dev test does as root)")
    deployment.write("long", LONG_JOB.format(seconds=10))
    network = netns.Partitionable()
    cluster = Cluster(also_listen=network.outer_address)
    try:
        url = cluster.new_database()
        inner_url = url.replace("127.0.0.1", network.outer_address)
        [cut_off] = _fleet(host, inner_url, ["inside"], lease="3s", prefix=tuple(network.command()))
        cut_off_run = _first_start([cut_off], "long_job")
        assert cut_off_run is cut_off
        [outside] = _fleet(host, url, ["outside"], lease="3s")
        network.cut()
        records = outside.wait_for(
            lambda rs: any(r.get("attempt") == 2 for r in events(rs, "long_job", "run_succeeded")),
            timeout=60,
            what="the host outside to take the run over and succeed",
        )
        [abandoned] = events(records, "long_job", "run_retrying")  # the run cut off, retried here
        cut_off.wait_for(lambda rs: events(rs, "long_job", "run_succeeded"), timeout=30, what="the late result")
        network.mend()
        lines = cut_off.wait_for(
            lambda rs: _count(rs, "run_result_discarded") == 1, timeout=60, what="the late result refused"
        )
        [discarded] = [r for r in lines if r.get("event") == "run_result_discarded"]
        assert discarded["lost_run_id"] == abandoned["run_id"]
        assert (discarded["host"], abandoned["host"]) == ("inside", "outside")  # every line says its host
        for process in (cut_off, outside):
            assert process.stop() == 0
        slot = [r for r in _history(deployment, url) if r["job"] == "long_job" and r["slot"] == abandoned["slot"]]
        assert sorted((r["attempt"], r["status"], r["host"]) for r in slot) == [
            (1, "abandoned", "inside"),
            (2, "succeeded", "outside"),
        ]
        assert _count(cut_off.records(), "store_unreachable") == 1
    finally:
        network.close()
        cluster.destroy()


def _first_start(fleet: list[HostProcess], job: str) -> HostProcess:
    """The host that starts the job's first run (bounded: the job runs every 30 s)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        for process in fleet:
            if events(process.records(), job, "run_started"):
                return process
        time.sleep(0.1)  # a bounded poll over several hosts' logs
    pytest.fail(f"no host started {job} within 40 s")


def _count(records: list[dict], event: str) -> int:
    return sum(1 for r in records if r.get("event") == event)


def _wait_for_history(deployment: Deployment, url: str, predicate, timeout: float = 30) -> None:
    """Poll the database (bounded) until `predicate(history)` holds."""
    deadline = time.monotonic() + timeout
    while not predicate(_history(deployment, url)):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout}s for the history to show {predicate}")
        time.sleep(0.5)


def _unrecorded(deployment: Deployment, url: str, job: str, first: dt.datetime, last: dt.datetime) -> list:
    """The job's slots in [first, last] with no record at all."""
    recorded = _by_slot(_history(deployment, url), job)
    return [slot for slot in _slots(deployment, url, job, first, last) if slot not in recorded]


def _who_started(fleet: list[HostProcess], keys: list[tuple[str, str]]) -> str:
    """The log lines of the runs of `keys`, from every host: what a failure needs to be understood."""
    lines = [
        f"host {index + 1}: {json.dumps(record)}"
        for index, process in enumerate(fleet)
        for record in process.records()
        if (record.get("job"), record.get("slot")) in keys or record.get("event", "").startswith("store_")
    ]
    return "\n".join(lines)
