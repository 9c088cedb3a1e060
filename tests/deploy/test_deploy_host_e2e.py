"""End to end, on a booted Debian host deployed by the real play: what an operator meets on the
host itself. The `jobhost` command, per-host settings over the group's, the stop grace in both
the settings and supervisord's program, a release of only what the host runs, and a deploy
whose job module is slow or stuck at import failing at the check's bound; last, a deploy in the
middle of a long run letting it finish in the release it started in."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import select
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.debian_host import DebianHost
from tests.support.deploy_site import SECRET, Controller, Logstash, deploy_site, get, log_lines, program
from tests.support.sentry_servers import wait_until

pytestmark = pytest.mark.timeout(600)  # a deploy on a busy machine can take minutes

SLEEPY = """
import time

from jobhost import cron, job


@job(cron("0 0 1 1 *"), catchup="none", timeout="10m")
def sleepy():
    print("sleepy started", flush=True)
    time.sleep(120)
"""
STEADY = """
import os
import subprocess
import time

from jobhost import cron, job


@job(cron("0 0 1 1 *"), catchup="none", timeout="15m")
def steady():
    subprocess.Popen(["sleep", "900"])  # a grandchild, in the run's process group
    print("steady started", flush=True)
    step = 0
    while not os.path.exists("/tmp/steady-may-end"):  # the test says when: after the deploy
        print("steady step", step, flush=True)
        step += 1
        time.sleep(1)
    print("steady done", flush=True)
"""


HOST_SECRET = f"host-only-{SECRET}"
CHECK_TIMEOUT = 5
HOST_VARS = (
    # The group (the example's group_vars) sets JOBS_MAX_WORKERS=4, JOBS_TIMEZONE and SENTRY_ENVIRONMENT.
    """jobhost_host_environment='{"JOBS_MAX_WORKERS": "2", "JOBS_HISTORY_DAYS": "30"}' """
    f"""jobhost_host_secret_environment='{{"HOST_ONLY_TOKEN": "{HOST_SECRET}"}}' """
    f"jobhost_stop_grace=7 jobhost_check_timeout={CHECK_TIMEOUT}"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    with deploy_site(tmp_path_factory, host_vars=HOST_VARS, jobs={"sleepy": SLEEPY, "steady": STEADY}) as built:
        yield built


def settings(host: DebianHost) -> dict[str, str]:
    lines = [line for line in host.read("/etc/jobhost/jobs.env").splitlines() if line and not line.startswith("#")]
    return {name: json.loads(value) for name, value in (line.split("=", 1) for line in lines)}


def release(host: DebianHost) -> str:
    return host.run("readlink /opt/jobhost/current").stdout.strip()


def jobhost(host: DebianHost, *args: str, user: str = "root", cwd: str = "/") -> subprocess.CompletedProcess[str]:
    """`jobhost ARGS` on the host as `user`, from `cwd`, with no terminal."""
    command = shlex.join(["jobhost", *args])
    as_user = command if user == "root" else f"runuser -u {user} -- {command}"
    return host.run(f"cd {cwd} && {as_user}", check=False, timeout=120)


FIND_PROCESSES = """
import os, sys, pwd
uid = pwd.getpwnam("jobhost").pw_uid
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
        words = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    if owner == uid and sys.argv[1].encode() in b" ".join(words):
        print(pid)
"""


def processes(host: DebianHost, text: str) -> list[int]:
    """The job user's processes whose command line has `text` (the host has no pgrep), oldest first."""
    found = host.run(f"python3 -c {shlex.quote(FIND_PROCESSES)} {shlex.quote(text)}").stdout.split()
    return sorted(int(pid) for pid in found)


def test_the_command_runs_the_cli_as_the_job_user_with_the_deployed_settings(site):
    host, _, _ = site
    healthy = wait_until(lambda: jobhost(host, "health").returncode == 0, timeout=30, what="jobhost health to say 0")
    assert healthy
    listed = jobhost(host, "list", "--json", cwd="/root")  # root's home, which the job user cannot read
    assert listed.returncode == 0, listed.stderr
    assert {"ping", "sleepy"} <= {job["name"] for job in json.loads(listed.stdout)}
    ran = jobhost(host, "run", "ping")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr
    history = json.loads(jobhost(host, "history", "ping", "--limit", "50", "--json").stdout)
    assert any(run["status"] == "succeeded" and run["pid"] for run in history)
    # Arguments with spaces and quotes arrive whole: a --from with a space, a job name with a quote.
    nexts = jobhost(host, "next", "sleepy", "--count", "1", "--from", "2030-06-01 12:00")
    assert nexts.returncode == 0 and "2031-01-01" in nexts.stdout, nexts.stdout + nexts.stderr
    unknown = jobhost(host, "run", "it's not a job")
    assert unknown.returncode == 2 and "it's not a job" in unknown.stderr, unknown.stderr
    # The job user itself runs it directly; anyone else is told what to do.
    assert jobhost(host, "health", user="jobhost").returncode == 0
    refused = jobhost(host, "health", user="nobody")
    assert refused.returncode == 77 and "run it with sudo" in refused.stderr, refused.stderr


def test_ctrl_c_at_a_terminal_stops_the_run_in_the_release_it_started_in(site):
    host, _, _ = site
    running = release(host)
    pid, terminal = pty.fork()
    if pid == 0:  # a terminal of its own for the command, as an operator's ssh session has
        os.execvp(
            "nsenter", ["nsenter", "--target", str(host.leader), "--all", "--wd=/", "--", "jobhost", "run", "sleepy"]
        )
    said = b""

    def started() -> bool:
        nonlocal said
        while select.select([terminal], [], [], 0.2)[0]:
            said += os.read(terminal, 65536)
        return b"sleepy started" in said

    try:
        wait_until(started, timeout=60, what=f"the run to start at the terminal; it said {said[-2000:]!r}")
        cli = processes(host, "jobs.py run sleepy")[0]
        # Started from `current`, but in the release itself: a deploy switching `current` changes nothing.
        assert host.run(f"readlink /proc/{cli}/cwd").stdout.strip() == running
        assert f"{running}/jobs.py" in host.run(f"tr '\\0' ' ' < /proc/{cli}/cmdline").stdout
        os.write(terminal, b"\x03")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not select.select([terminal], [], [], 0.5)[0]:
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            said += chunk
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 1, said[-3000:]
    [last] = json.loads(jobhost(host, "history", "sleepy", "--limit", "1", "--json").stdout)
    assert last["status"] == "interrupted" and "SIGINT" in last["reason"], last
    assert processes(host, "sleepy") == []


def test_host_settings_add_to_the_groups_and_the_stop_grace_reaches_supervisord(site):
    host, controller, _ = site
    deployed = settings(host)
    # The group's settings and secrets stay; the host's override or add, name by name.
    assert deployed["JOBS_TIMEZONE"] == "Europe/London" and deployed["SENTRY_ENVIRONMENT"] == "production"
    assert deployed["JOBS_MAX_WORKERS"] == "2" and deployed["JOBS_HISTORY_DAYS"] == "30"
    assert deployed["PARTNER_API_TOKEN"] == SECRET and deployed["HOST_ONLY_TOKEN"] == HOST_SECRET
    assert HOST_SECRET not in controller.first_output
    # stopwaitsecs: the grace, the host's 5-s kill of what is left, and 25 s to record it.
    assert deployed["JOBS_STOP_GRACE"] == "7s"
    assert re.search(r"^stopwaitsecs=37$", host.read("/etc/supervisor/conf.d/jobs.conf"), re.M)


def test_a_release_holds_only_what_the_host_runs_and_the_job_user_cannot_change_it(site):
    host, controller, _ = site
    root = host.dir / release(host).lstrip("/")
    shipped = ["configuration", "deploy", "jobhost", "jobs", "jobs.py", "requirements.txt"]
    made_on_the_host = [".complete", ".venv", ".wheels", "REVISION"]
    assert sorted(path.name for path in root.iterdir()) == sorted(shipped + made_on_the_host)
    assert sorted(str(path.relative_to(root)) for path in (root / "deploy").rglob("*")) == [
        "deploy/supervisor",
        "deploy/supervisor/jobs.conf.j2",
    ]
    here = release(host)
    writable = host.run(f"find {here} -perm /022 ! -type l", timeout=120).stdout
    assert writable == "", writable[:2000]
    unreadable = host.run(f"runuser -u jobhost -- find {here} ! -readable", check=False, timeout=120).stdout
    assert unreadable == "", unreadable[:2000]
    # What jobhost/ reads at run time came along: the status page's templates and styles.
    address = re.search(r"jobhost_http_addr=(\S+)", controller.inventory.read_text()).group(1)
    page = wait_until(lambda: get(f"http://{address}/"), timeout=30, what="the status page")
    assert b"ping" in page and b"<html" in page.lower()


def test_a_job_stop_grace_in_the_environment_that_disagrees_is_refused(site):
    host, controller, _ = site
    running, state = release(host), program(host)
    refused = controller.deploy("-e", json.dumps({"jobhost_host_environment": {"JOBS_STOP_GRACE": "2m"}}))
    assert refused.returncode != 0
    assert "JOBS_STOP_GRACE=2m in the environment maps conflicts with jobhost_stop_grace (7 s)" in refused.stdout
    assert release(host) == running and program(host) == state


def test_a_slow_import_fails_the_deploy_at_the_checks_bound_naming_the_module(site):
    host, controller, _ = site
    running, state = release(host), program(host)
    (controller.dir / "jobs" / "slow_import.py").write_text("import time\n\ntime.sleep(600)\n")
    revision = controller.commit("a job module that takes 10 minutes to import")
    try:
        began = time.monotonic()
        failed = controller.deploy()
        print(f"a deploy with a 600-s import failed after {time.monotonic() - began:.1f} s")
        assert failed.returncode != 0
        assert (
            f"jobs/slow_import.py:3: importing jobs.slow_import did not finish within {CHECK_TIMEOUT}s" in failed.stdout
        )
        assert f"jobhost_check_timeout, {CHECK_TIMEOUT} s" in failed.stdout
        assert release(host) == running and program(host) == state
        assert not (host.dir / f"opt/jobhost/releases/{revision}").exists()
    finally:
        (controller.dir / "jobs" / "slow_import.py").unlink()
        controller.commit("remove the slow job module")


def test_an_import_stuck_in_native_code_is_stopped_with_the_check(site):
    host, controller, _ = site
    running, state = release(host), program(host)
    # os.system waits in C, where the import timeout's signal cannot raise.
    (controller.dir / "jobs" / "stuck_import.py").write_text('import os\n\nos.system("sleep 600")\n')
    controller.commit("a job module whose import waits in native code")
    try:
        began = time.monotonic()
        failed = controller.deploy()
        print(f"a deploy with an import stuck in os.system failed after {time.monotonic() - began:.1f} s")
        assert failed.returncode != 0
        assert f"did not finish within {CHECK_TIMEOUT + 15} s" in failed.stdout and "was stopped" in failed.stdout
        assert release(host) == running and program(host) == state
        assert processes(host, "sleep 600") == []
    finally:
        (controller.dir / "jobs" / "stuck_import.py").unlink()
        controller.commit("remove the stuck job module")


# Last: it deploys a new release, which the tests above do not expect.
def _records(host: DebianHost) -> list[dict]:
    return [json.loads(line) for line in log_lines(host)]


def _steady(host: DebianHost) -> list[dict]:
    listed = jobhost(host, "history", "steady", "--limit", "10", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


NAMES = """
import os, pwd
uid = pwd.getpwnam("jobhost").pw_uid
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat(f"/proc/{pid}").st_uid == uid:
            print(open(f"/proc/{pid}/comm").read().strip())
    except OSError:
        pass
"""


def _names(host: DebianHost) -> list[str]:
    """What the job user's processes are called (`ps -o comm`; the host has no ps)."""
    return host.run(f"python3 -c {shlex.quote(NAMES)}").stdout.split()


def test_a_deploy_in_the_middle_of_a_long_run_lets_it_finish_in_its_release(site) -> None:
    host, controller, _ = site
    running = host.run("readlink /opt/jobhost/current").stdout.strip()
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).isoformat()
    planned = jobhost(host, "run", "steady", "--at", at)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    run = wait_until(
        lambda: next((r for r in _steady(host) if r["status"] == "running"), None), timeout=60, what="the run"
    )
    wait_until(
        lambda: any(r.get("message") == "steady step 1" for r in _records(host)), timeout=30, what="the run going"
    )
    (controller.dir / "jobs" / "notes.py").write_text("# a change of code: a new release\n")
    revision = controller.commit("a release in the middle of a long run")
    deployed = controller.deploy()
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    assert host.run("readlink /opt/jobhost/current").stdout.strip() == f"/opt/jobhost/releases/{revision}"
    assert host.run("readlink /opt/jobhost/current").stdout.strip() != running
    [going] = [r for r in _steady(host) if r["run_id"] == run["run_id"]]
    assert going["status"] == "running", going  # not interrupted by the deploy
    assert {"sleep", "keep:steady", "job:steady"} <= set(_names(host)), _names(host)  # the run, whole
    restarted = [r for r in _records(host) if r.get("event") == "host_started"][-1]
    host.run("touch /tmp/steady-may-end")
    ended = wait_until(
        lambda: next((r for r in _steady(host) if r["run_id"] == run["run_id"] and r["status"] != "running"), None),
        timeout=60,
        what="the kept run to end",
    )
    assert ended["status"] == "succeeded", ended
    assert [r for r in _steady(host) if r["slot"] == run["slot"]] == [ended]
    lines = [r["message"] for r in _records(host) if r.get("run_id") == run["run_id"] and r.get("stream") == "stdout"]
    steps = [line for line in lines if line.startswith("steady step")]
    assert lines[0] == "steady started" and lines[-1] == "steady done"
    assert steps == [f"steady step {n}" for n in range(len(steps))]  # every line, once, in order
    assert [r["event"] for r in _records(host) if r.get("run_id") == run["run_id"] and r.get("event")].count(
        "run_succeeded"
    ) == 1
    # The new release ran the other job's slots while the kept run went on.
    pings = [
        r
        for r in _records(host)
        if r.get("job") == "ping" and r.get("event") == "run_succeeded" and r["timestamp"] > restarted["timestamp"]
    ]
    assert pings
    wait_until(
        lambda: not {"sleep", "keep:steady", "job:steady"} & set(_names(host)),
        timeout=30,
        what="the run's keeper, job and grandchild gone once it ended",
    )
