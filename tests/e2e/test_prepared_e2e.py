"""End to end: a run is made ready before its slot and its job starts at the slot's instant.

The claim, the records and the fork happen `JOBS_PREPARE_AHEAD` before the slot; the
job's process then waits for the instant. It must never start early, announce itself
before its output, or, when the host stops (or dies) before the instant, leave the
slot claimed: the next start runs it as if nothing had happened.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable

import pytest

from tests.conftest import Deployment, HostProcess, events

STAMPED = """
import time
from collections.abc import Callable
from pathlib import Path
from jobhost import job, every

@job(every({seconds}).seconds, overlap="{overlap}")
def stamped(slot):
    began = time.time()
    print("began", repr(began))
    with open(Path(__file__).with_name("stamps.txt"), "a") as stamps:
        stamps.write(f"{{slot.timestamp()!r}} {{began!r}}\\n")
"""


def _stamps(deployment: Deployment) -> list[tuple[float, float]]:
    path = deployment.jobs_dir / "stamps.txt"
    text = path.read_text() if path.exists() else ""
    return [(float(slot), float(began)) for slot, began in (line.split() for line in text.splitlines())]


def test_a_prepared_job_starts_at_its_instant_never_before_and_announces_itself_first(
    deployment: Deployment, host
) -> None:
    deployment.write("stamped", STAMPED.format(seconds=1, overlap="skip"))
    process = host(JOBS_PREPARE_AHEAD="300ms")
    process.wait_for(lambda rs: len(events(rs, "stamped", "run_succeeded")) >= 4, what="four runs")
    assert process.stop() == 0
    stamps = _stamps(deployment)
    assert len(stamps) >= 4
    early = [(slot, began) for slot, began in stamps if began < slot]
    assert not early, f"jobs began before their slot: {early}"
    records = process.records()
    started = events(records, "stamped", "run_started")
    for run in started:
        lines = [r for r in records if r.get("run_id") == run["run_id"]]
        assert lines[0]["event"] == "run_started", "a run's first line must announce it"
        assert lines[1]["message"].startswith("began"), "then comes what the job printed"
    # Prepared ahead, a run is recorded as started at its slot (a run started after its
    # instant is recorded when it was started): most runs here were prepared.
    history = {r["run_id"]: r for r in deployment.history("stamped")}
    at_slot = [
        r
        for r in (history[run["run_id"]] for run in started)
        if dt.datetime.fromisoformat(r["started"]) == dt.datetime.fromisoformat(r["slot"])
    ]
    assert len(at_slot) >= len(started) - 1, [(r["slot"], r["started"]) for r in history.values()]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_host_gone_before_the_instant_leaves_the_slot_to_its_next_start(
    deployment: Deployment, host, stop: signal.Signals
) -> None:
    deployment.write("stamped", STAMPED.format(seconds=20, overlap="skip"))
    process = host(JOBS_PREPARE_AHEAD="15s")

    def prepared() -> dict | None:
        """A run recorded as started at an instant still 10 s or more away (its job waits for it)."""
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
        for record in deployment.history("stamped"):
            if record["status"] == "running" and dt.datetime.fromisoformat(record["started"]) > soon:
                return record
        return None

    record = _wait_for_prepared(prepared, process)
    slot = dt.datetime.fromisoformat(record["slot"])
    process.proc.send_signal(stop)
    process.proc.wait(30)
    process._reader.join(5)
    if stop == signal.SIGTERM:
        assert process.proc.returncode == 0
        withdrawn = [r for r in process.records() if r.get("event") == "run_withdrawn"]
        assert [r["run_id"] for r in withdrawn] == [record["run_id"]]
    assert all(r.get("run_id") != record["run_id"] for r in events(process.records(), "stamped", "run_started"))
    assert slot.timestamp() not in [s for s, _ in _stamps(deployment)], "the job ran though its host was gone"

    again = host()
    again.wait_for(
        lambda rs: any(
            r.get("slot") and dt.datetime.fromisoformat(r["slot"]) == slot
            for r in events(rs, "stamped", "run_succeeded")
        ),
        timeout=40,
        what="the slot to run at its instant after the restart",
    )
    assert again.stop() == 0
    runs = [r for r in deployment.history("stamped") if dt.datetime.fromisoformat(r["slot"]) == slot]
    assert [(r["status"], r["attempt"]) for r in runs] == [("succeeded", 1)]
    assert [s for s, _ in _stamps(deployment)].count(slot.timestamp()) == 1


def _wait_for_prepared(prepared: Callable[[], dict | None], *watched: HostProcess) -> dict:
    """Look at history (bounded: 60 s) until a run is prepared for a slot still well ahead."""
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    while (record := prepared()) is None:
        assert dt.datetime.now(dt.UTC) < deadline, "no run was prepared ahead of its slot within 60 s"
        for process in watched:
            assert process.proc.poll() is None, "a host exited:\n" + "".join(process.lines[-20:])
        time.sleep(0.3)  # between two looks at history: not a wait for an outcome
    return record


def test_on_postgresql_another_host_runs_a_slot_whose_host_stopped_before_its_instant(
    deployment: Deployment, postgres, host
) -> None:
    deployment.write("stamped", STAMPED.format(seconds=20, overlap="allow"))  # prepared on a shared store
    url = postgres.new_database()
    env = {"JOBS_STATE_URL": url, "JOBS_LEASE": "3s", "JOBS_PREPARE_AHEAD": "15s"}
    hosts = {name: host(JOBS_HOST_NAME=name, **env) for name in ("h1", "h2")}
    for process in hosts.values():
        process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the host to start")

    def prepared() -> dict | None:
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
        for record in deployment.history("stamped", JOBS_STATE_URL=url):
            if record["status"] == "running" and dt.datetime.fromisoformat(record["started"]) > soon:
                return record
        return None

    record = _wait_for_prepared(prepared, *hosts.values())
    slot = dt.datetime.fromisoformat(record["slot"])
    holder = hosts[record["host"]]
    other = next(name for name in hosts if name != record["host"])
    assert holder.stop() == 0
    assert [r["run_id"] for r in holder.records() if r.get("event") == "run_withdrawn"] == [record["run_id"]]
    hosts[other].wait_for(
        lambda rs: any(dt.datetime.fromisoformat(r["slot"]) == slot for r in events(rs, "stamped", "run_succeeded")),
        timeout=40,
        what="the other host to run the slot",
    )
    assert hosts[other].stop() == 0
    runs = [
        r for r in deployment.history("stamped", JOBS_STATE_URL=url) if dt.datetime.fromisoformat(r["slot"]) == slot
    ]
    assert [(r["status"], r["attempt"], r["host"]) for r in runs] == [("succeeded", 1, other)]
    began = [at for s, at in _stamps(deployment) if s == slot.timestamp()]
    assert len(began) == 1 and began[0] >= slot.timestamp(), "run once, at its instant or after, never before"


def test_a_slot_due_within_the_lead_of_a_catch_up_run_not_yet_started_is_not_skipped_for_it(
    deployment: Deployment, host: Callable[..., HostProcess]
) -> None:
    deployment.write("stamped", STAMPED.format(seconds=1, overlap="skip"))
    lead = {"JOBS_PREPARE_AHEAD": "0.95s"}  # at most starts the next slot is within the lead
    first = host(**lead)
    first.wait_for(lambda rs: len(events(rs, "stamped", "run_succeeded")) >= 1, what="a run")
    assert first.stop() == 0
    time.sleep(2.5)  # the host is down for the fault's length: slots pass, and the next start catches up
    again = host(**lead)
    records = again.wait_for(lambda rs: len(events(rs, "stamped", "run_succeeded")) >= 3, what="runs after it")
    assert again.stop() == 0
    assert any(r.get("catch_up") for r in events(records, "stamped", "run_started"))
    # The catch-up run takes milliseconds; the next slot, prepared while that run only waited for a
    # worker, must not be skipped "behind" it. A slot whose instant came while the catch-up run was
    # really going (a slow fork on a loaded machine) is skipped by `overlap="skip"`, as it should be.
    history = deployment.history("stamped")
    started = {r["run_id"]: dt.datetime.fromisoformat(r["started"]) for r in history if r["started"]}
    skipped = [r for r in history if r["status"] == "skipped"]
    behind_unstarted = [
        r
        for r in skipped
        if (other := r["reason"].split("the previous run ")[-1].split()[0]) not in started
        or started[other] > dt.datetime.fromisoformat(r["ended"])
    ]
    assert behind_unstarted == [], behind_unstarted
    assert all(r["reason"].startswith("the previous run ") for r in skipped), skipped


def test_a_lead_longer_than_the_period_runs_every_slot_on_time(
    deployment: Deployment, host: Callable[..., HostProcess]
) -> None:
    deployment.write("stamped", STAMPED.format(seconds=1, overlap="allow"))
    process = host(JOBS_PREPARE_AHEAD="2.5s")  # three slots of an every-second job within the lead
    process.wait_for(lambda rs: len(events(rs, "stamped", "run_succeeded")) >= 6, what="six runs")
    assert process.stop() == 0
    history = deployment.history("stamped")
    started = dt.datetime.fromisoformat(
        next(r for r in process.records() if r.get("event") == "host_started")["timestamp"]
    )
    after = [r for r in history if dt.datetime.fromisoformat(r["slot"]) > started]
    assert after and {r["status"] for r in after} <= {"succeeded", "interrupted"}, after  # none missed
    assert all(began >= slot for slot, began in _stamps(deployment))  # none early
