"""Which release runs, as a real host shows it: `list` (this checkout's release and the running
loop's, and that they differ when a deploy has not restarted it), `/healthz`, `/metrics`, the status
page's header and the `host_started` line. Each release is a copy of the code with its REVISION
file, as a deploy makes it."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Deployment
from tests.support.http_client import call, serving

RUNNING = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
DEPLOYED = "0f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccdd"
JOBS = """
from jobhost import job, every

@job(every().day.at("03:00"))
def exports():
    pass
"""


def _release(tmp_path: Path, revision: str | None) -> Path:
    """A release directory: the code, and the REVISION file the role writes (None: none, and no git)."""
    directory = tmp_path / "releases" / (revision or "unnamed")
    for part in ("jobhost", "configuration"):
        shutil.copytree(ROOT / part, directory / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "jobs.py", directory)
    if revision is not None:
        (directory / "REVISION").write_text(revision + "\n")
    return directory


def _first_line(deployment: Deployment, *args: str) -> str:
    listed = deployment.cli("list", *args)
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.splitlines()[0]


def test_every_face_of_the_host_names_the_release_it_runs_and_since_when(deployment: Deployment, host) -> None:
    deployment.root = _release(deployment.tmp, RUNNING)
    process, url = serving(deployment, host, JOBS)
    pid = process.proc.pid

    health = call(f"{url}/healthz").json()
    assert health["release"] == RUNNING
    started = dt.datetime.fromisoformat(health["started_at"])
    metrics = {f.name: f for f in text_string_to_metric_families(call(f"{url}/metrics").body.decode())}
    [build] = metrics["jobhost_build_info"].samples
    assert build.labels["release"] == RUNNING and build.value == 1
    [start] = metrics["process_start_time_seconds"].samples
    assert abs(start.value - started.timestamp()) < 0.01  # one start, said alike by both
    assert [r["release"] for r in process.records() if r.get("event") == "host_started"] == [RUNNING]

    page = call(f"{url}/").body.decode()
    assert f"release <code>{RUNNING[:12]}</code>, up since {started:%Y-%m-%d %H:%M:%S} +00:00" in page
    assert f'title="release {RUNNING}, started {health["started_at"]}"' in page
    missing = call(f"{url}/jobs/nope/runs/x")  # an error page has the same header
    assert missing.status == 404 and f"<code>{RUNNING[:12]}</code>" in missing.body.decode()

    line = _first_line(deployment)
    assert line.startswith(f"release {RUNNING[:12]} (this checkout), run by the loop (pid {pid}) since ")
    assert f"{started.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" in line

    said = deployment.cli("health", "--json")  # the same body as /healthz, from the loop's status file
    assert said.returncode == 0, said.stderr
    by_cli = json.loads(said.stdout)
    assert {**by_cli, "message": ""} == {**call(f"{url}/healthz").json(), "message": ""}
    assert process.stop() == 0
    stopped = deployment.cli("health", "--json")
    assert stopped.returncode == 1
    assert json.loads(stopped.stdout) | {"message": ""} == {
        "healthy": False,
        "state": "stopped",
        "message": "",
        "release": RUNNING,  # the release it ran
        "started_at": health["started_at"],
    }


def test_list_says_when_the_loop_runs_another_release_than_the_deployed_one(deployment: Deployment, host) -> None:
    deployment.root = _release(deployment.tmp, RUNNING)
    process, _ = serving(deployment, host, JOBS)
    running_jobs = deployment.cli("list", "--json")
    deployment.root = _release(deployment.tmp, DEPLOYED)  # a deploy switched the code, and restarted nothing

    line = _first_line(deployment)
    assert line.startswith(f"release {DEPLOYED[:12]} (this checkout); the loop (pid {process.proc.pid}) runs ")
    assert line.endswith(
        f"release {RUNNING[:12]} since {line.split(' since ')[1].split(': ')[0]}: deployed but not restarted"
    )
    as_json = deployment.cli("list", "--json")
    assert json.loads(as_json.stdout) == json.loads(running_jobs.stdout)  # the array of jobs, as ever
    assert "deployed but not restarted" in as_json.stderr and "deployed" not in running_jobs.stderr

    assert process.stop() == 0
    assert _first_line(deployment) == f"release {DEPLOYED[:12]} (this checkout); no loop runs on this host"
    deployment.root = _release(deployment.tmp, None)
    assert _first_line(deployment) == "release unknown (this checkout); no loop runs on this host"
