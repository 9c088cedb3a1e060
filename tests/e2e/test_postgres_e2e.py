"""End to end: the real host on a real PostgreSQL database."""

from __future__ import annotations

import json

from tests.conftest import Deployment, events

EVERY_SECOND = """
from jobhost import job, every

@job(every(1).seconds)
def tick():
    print("tick")
"""


def test_the_host_runs_on_postgresql_and_keeps_its_history_there(deployment: Deployment, postgres, host):
    deployment.write("ticks", EVERY_SECOND)
    url = postgres.new_database()
    own = deployment.tmp / "host-files"  # a deployed release is root's: the host's files go elsewhere
    running = host(JOBS_STATE_URL=url, JOBS_HOST_DIR=str(own))
    records = running.wait_for(lambda rs: len(events(rs, "tick", "run_succeeded")) >= 3, what="3 runs")
    second = deployment.cli(JOBS_STATE_URL=url, timeout=60)  # a second loop on the same database
    assert second.returncode == 1 and "another host loop" in second.stdout
    assert deployment.cli("health", JOBS_STATE_URL=url, JOBS_HOST_DIR=str(own)).returncode == 0
    kept = sorted(path.name for path in own.iterdir())
    assert len(kept) == 2 and kept[0] == "jobhost.runs" and kept[1].endswith(".status"), kept
    assert running.stop() == 0
    listed = deployment.cli("history", "tick", "--json", JOBS_STATE_URL=url)
    assert listed.returncode == 0
    recorded = {r["run_id"] for r in json.loads(listed.stdout) if r["status"] == "succeeded"}
    assert {r["run_id"] for r in events(records, "tick", "run_succeeded")} <= recorded
