"""End to end: `migrate-state` moves a host's history from SQLite to PostgreSQL."""

from __future__ import annotations

import json

from tests.conftest import Deployment


def test_history_and_state_move_from_sqlite_to_postgresql(deployment: Deployment, postgres) -> None:
    deployment.write(
        "two",
        """
        from jobhost import job, every

        @job(every(1).hours)
        def hourly():
            pass

        @job(every(1).hours)
        def flaky():
            raise RuntimeError("no")
        """,
    )
    assert deployment.cli("run", "hourly").returncode == 0
    assert deployment.cli("run", "flaky").returncode == 1
    assert deployment.cli("pause", "flaky").returncode == 0
    before = deployment.cli("history", "--json")
    url = postgres.new_database()

    moved = deployment.cli("migrate-state", url)
    assert moved.returncode == 0, moved.stderr
    assert "copied 2 runs, 0 pending retries and 1 paused jobs" in moved.stdout

    after = deployment.cli("history", "--json", JOBS_STATE_URL=url)
    assert json.loads(after.stdout) == json.loads(before.stdout)
    listed = json.loads(deployment.cli("list", "--json", JOBS_STATE_URL=url).stdout)
    assert {job["name"]: job["paused"] for job in listed} == {"hourly": False, "flaky": True}

    again = deployment.cli("migrate-state", url)
    assert again.returncode == 1 and "already holds run history" in again.stderr
