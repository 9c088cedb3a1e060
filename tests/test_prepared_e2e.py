"""End to end: a run is made ready before its slot and its job starts at the slot's instant.

The claim, the records and the fork happen `JOBS_PREPARE_AHEAD` before the slot; the
job's process then waits for the instant. It must never start early, announce itself
before its output, or, when the host stops (or dies) before the instant, leave the
slot claimed: the next start runs it as if nothing had happened.
"""

from __future__ import annotations

import datetime as dt
import signal

import pytest

from tests.conftest import Deployment, events

STAMPED = """
import time
from pathlib import Path
from jobhost import job, every

@job(every({seconds}).seconds)
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
    deployment.write("stamped", STAMPED.format(seconds=1))
    process = host(JOBS_PREPARE_AHEAD="300ms")
    process.wait_for(lambda rs: len(events(rs, "stamped", "run_succeeded")) >= 4, what="four runs")
    assert process.stop() == 0
    stamps = _stamps(deployment)
    assert len(stamps) >= 4
    early = [(slot, began) for slot, began in stamps if began < slot]
    assert not early, f"jobs began before their slot: {early}"
    records = process.records()
    for started in events(records, "stamped", "run_started"):
        assert started["lateness_ms"] >= 0
        lines = [r for r in records if r.get("run_id") == started["run_id"]]
        assert lines[0]["event"] == "run_started", "a run's first line must announce it"
    history = {r["run_id"]: r for r in deployment.history("stamped")}
    for started in events(records, "stamped", "run_started"):
        record = history[started["run_id"]]
        assert dt.datetime.fromisoformat(record["started"]) >= dt.datetime.fromisoformat(record["slot"])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_host_gone_before_the_instant_leaves_the_slot_to_its_next_start(
    deployment: Deployment, host, stop: signal.Signals
) -> None:
    deployment.write("stamped", STAMPED.format(seconds=20))
    process = host(JOBS_PREPARE_AHEAD="15s")

    def prepared() -> dict | None:
        """A run recorded as started at an instant still 5 s or more away (its job waits for it)."""
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        for record in deployment.history("stamped"):
            if record["status"] == "running" and dt.datetime.fromisoformat(record["started"]) > soon:
                return record
        return None

    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    while (record := prepared()) is None:
        assert dt.datetime.now(dt.UTC) < deadline, "no run was prepared ahead of its slot within 60 s"
        assert process.proc.poll() is None, "the host exited:\n" + "".join(process.lines[-20:])
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
