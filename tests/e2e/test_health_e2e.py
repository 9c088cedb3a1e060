"""End to end: `health` and `/healthz` tell the truth about a real loop: beating, stuck, gone
(killed), stopped, refused to start (a job module, a setting), the state store failing; and
importing job modules is bounded, every module's problem named by its file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, Deployment, HostProcess
from tests.support.http_client import base_url, call
from tests.support.sentry_servers import wait_until

IDLE = """
from jobhost import job, every

@job(every(1).hours)
def idle():
    pass
"""


def _started(process: HostProcess) -> None:
    process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the host to start")


def test_a_killed_loop_is_gone_and_a_stopped_one_stopped(deployment: Deployment, host) -> None:
    deployment.write("idle", IDLE)
    running = host(JOBS_HEARTBEAT_INTERVAL="1s")
    _started(running)
    beating = deployment.cli("health")
    assert (beating.returncode, beating.stdout.split(":")[0]) == (0, "healthy"), beating.stdout
    running.proc.kill()  # SIGKILL: no clean stop, while its last heartbeat is still fresh
    running.proc.wait(10)
    gone = deployment.cli("health")
    assert gone.returncode == 1
    assert f"the loop is gone: pid {running.proc.pid}" in gone.stdout and "crashed or killed" in gone.stdout

    again = host(JOBS_HEARTBEAT_INTERVAL="1s")
    _started(again)
    assert deployment.cli("health").returncode == 0
    assert again.stop() == 0
    stopped = deployment.cli("health")
    assert stopped.returncode == 1 and "stopped cleanly" in stopped.stdout and str(again.proc.pid) in stopped.stdout


def test_a_loop_killed_and_not_yet_reaped_does_not_speak_for_the_loop_after_it(deployment: Deployment, host) -> None:
    deployment.write("idle", IDLE)
    killed = host(JOBS_HEARTBEAT_INTERVAL="1s")
    _started(killed)
    killed.proc.kill()  # and not reaped: a zombie, as under a parent that waits late (a wrapper, no init)
    again = host(JOBS_HEARTBEAT_INTERVAL="1s")
    _started(again)
    said = deployment.cli("health")
    assert said.returncode == 0 and str(again.proc.pid) in said.stdout, said.stdout
    killed.proc.wait(10)  # reaped now: still the new loop's truth
    said = deployment.cli("health")
    assert said.returncode == 0 and str(again.proc.pid) in said.stdout, said.stdout
    assert again.stop() == 0
    stopped = deployment.cli("health")
    assert "stopped cleanly" in stopped.stdout and str(again.proc.pid) in stopped.stdout, stopped.stdout


def test_a_second_loop_refused_under_another_name_leaves_health_to_the_first(deployment: Deployment, host) -> None:
    deployment.write("idle", IDLE)
    running = host(JOBS_HEARTBEAT_INTERVAL="1s")
    _started(running)
    link = deployment.tmp / "link.sqlite3"
    link.hardlink_to(deployment.tmp / "state.sqlite3")
    other = {"JOBS_STATE_URL": f"sqlite:///{link}"}
    refused = host(JOBS_HEARTBEAT_INTERVAL="1s", **other)
    assert refused.proc.wait(60) == 2  # a file with two names is refused
    said = deployment.cli("health")  # the loop that runs is beating, not a process refused
    assert said.returncode == 0 and str(running.proc.pid) in said.stdout, said.stdout
    by_link = deployment.cli("health", **other)  # by the other name its heartbeat cannot be read: said so
    assert by_link.returncode == 1 and "has 2 names (hard links)" in by_link.stdout, by_link.stdout
    assert str(refused.proc.pid) in by_link.stdout and "refused to start" in by_link.stdout
    assert "gone" not in by_link.stdout and "crashed" not in by_link.stdout
    assert running.stop() == 0


def test_health_imports_no_job_module(deployment: Deployment, host) -> None:
    deployment.write("idle", IDLE)
    running = host()
    _started(running)
    marker = deployment.tmp / "imported"
    deployment.write("slow", f"import time\nopen({str(marker)!r}, 'w').close()\ntime.sleep(3600)\n")
    said = deployment.cli("health", timeout=30)
    assert said.returncode == 0, said.stdout + said.stderr
    assert not marker.exists()
    assert running.stop() == 0


def test_health_for_a_window_holds_only_while_the_same_loop_beats(deployment: Deployment, host) -> None:
    deployment.write("idle", IDLE)
    running = host(JOBS_HEARTBEAT_INTERVAL="1s")
    _started(running)
    steady = deployment.cli("health", "--for", "3")
    assert steady.returncode == 0, steady.stdout + steady.stderr
    assert re.fullmatch(
        rf"healthy for 3\.0 s: last heartbeat \d+s ago \(pid {running.proc.pid} on .+\)\n", steady.stdout
    )

    watching = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs.py"), "health", "--for", "600"],
        env=deployment.env,
        cwd=deployment.tmp,
        stdout=subprocess.PIPE,
        text=True,
    )
    running.proc.kill()  # a crash in the window: the watch ends at once, not at its end
    said, _ = watching.communicate(timeout=60)
    assert watching.returncode == 1
    assert re.fullmatch(
        rf"unhealthy \d+\.\d s into the 600\.0 s window: the loop is gone: pid {running.proc.pid} .*crashed or killed.*\n",
        said,
    ), said


def test_a_refused_start_is_what_health_says(deployment: Deployment) -> None:
    deployment.write("idle", IDLE)
    broken = deployment.write("broken", "import no_such_library_anywhere\n")
    refused = deployment.cli(timeout=60)
    assert refused.returncode == 1
    said = deployment.cli("health")
    assert said.returncode == 1
    assert "the host refused to start" in said.stdout and f"{deployment.package}/broken.py:1" in said.stdout
    assert "no_such_library_anywhere" in said.stdout

    broken.unlink()
    assert deployment.cli(JOBS_MAX_WORKERS="many", timeout=60).returncode == 2
    for env in ({}, {"JOBS_MAX_WORKERS": "many"}):  # health from a shell with or without the bad setting
        said = deployment.cli("health", **env)
        assert said.returncode == 1, said.stdout + said.stderr
        assert "the host refused to start" in said.stdout and "JOBS_MAX_WORKERS='many'" in said.stdout


def test_importing_is_bounded_and_every_module_is_named(deployment: Deployment) -> None:
    deployment.write("idle", IDLE)
    hangs = {
        "sleeps": "import time\ntime.sleep(10**6)\n",
        "spins": "while True:\n    pass\n",
        "reads": "import socket\nquiet, _ = socket.socketpair()\nquiet.recv(1)\n",
        "swallows": "import time\ntry:\n    time.sleep(10**6)\nexcept Exception:\n    pass\n",
    }
    exits = {"exits": "import sys\nsys.exit(3)\n", "ends": "import os\nos._exit(4)\n"}
    for module, source in {**hangs, **exits}.items():
        deployment.write(module, source)
    deployment.write("broken", "import no_such_library_anywhere\n")

    checked = deployment.cli("check", JOBS_IMPORT_TIMEOUT="1s", timeout=120)
    assert checked.returncode == 1 and "Traceback" not in checked.stdout + checked.stderr
    problems = [line for line in checked.stderr.splitlines() if line.startswith(deployment.package)]
    assert len(problems) == 7, checked.stderr
    for module in hangs:
        [line] = [p for p in problems if p.startswith(f"{deployment.package}/{module}.py:")]
        assert "did not finish within 1s (JOBS_IMPORT_TIMEOUT)" in line, line
    [line] = [p for p in problems if p.startswith(f"{deployment.package}/exits.py:2: ")]
    assert "called sys.exit(3)" in line
    [line] = [p for p in problems if p.startswith(f"{deployment.package}/ends.py:2: ")]
    assert "called os._exit(4)" in line

    forever = deployment.cli(JOBS_IMPORT_TIMEOUT="1s", timeout=120)
    assert forever.returncode == 1 and not forever.stderr
    records = [json.loads(line) for line in forever.stdout.splitlines()]
    assert len([r for r in records if r.get("event") == "job_invalid"]) == 7
    assert records[-1]["event"] == "host_start_failed"


@pytest.fixture
def own_cluster() -> Iterator[object]:
    from tests.conftest import require
    from tests.support.postgres_cluster import Cluster, server_bin

    require("PostgreSQL", server_bin() is not None, "install Debian's postgresql package (./dev test does as root)")
    cluster = Cluster(durable=True)  # crashed and started again: no commit may be lost
    yield cluster
    cluster.destroy()


def test_a_store_failing_under_the_loop_is_what_health_and_healthz_say(
    deployment: Deployment, host, own_cluster
) -> None:
    name = f"health-{uuid.uuid4().hex[:8]}"
    env = {"JOBS_STATE_URL": own_cluster.new_database(), "JOBS_HOST_NAME": name}
    deployment.write("idle", IDLE)
    running = host(JOBS_HEARTBEAT_INTERVAL="1s", JOBS_HTTP_ADDR="127.0.0.1:0", **env)
    url = base_url(running)
    _started(running)
    assert deployment.cli("health", **env).returncode == 0
    assert call(f"{url}/healthz").json()["state"] == "beating"

    own_cluster.stop()  # the database goes away under the running loop
    running.wait_for(lambda rs: any(r.get("event") == "store_unreachable" for r in rs), what="the outage")
    said = deployment.cli("health", **env)
    assert said.returncode == 1 and said.stdout.startswith("unhealthy: the state store is failing: ")
    answer = call(f"{url}/healthz")
    assert answer.status == 503 and answer.json()["state"] == "store_failing"
    assert answer.json()["message"].split(" (last status")[0] == said.stdout.split(" (last status")[0]

    own_cluster.start()
    running.wait_for(lambda rs: any(r.get("event") == "store_reachable" for r in rs), what="the store back")
    wait_until(lambda: call(f"{url}/healthz").status == 200, 30, "healthz to say beating again")
    back = deployment.cli("health", **env)
    assert back.returncode == 0 and back.stdout.startswith("healthy: "), back.stdout
    assert running.stop() == 0
