"""End to end: the real `ansible-playbook deploy.yml` against a freshly made Debian
bookworm host booted with systemd-nspawn, its log shipped by rsyslog to a TCP
listener standing in for Logstash (`tcp { codec => json_lines }`)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, require
from tests.debian_host import ANSIBLE, DebianHost, missing
from tests.sentry_servers import wait_until

pytestmark = pytest.mark.e2e

PING = """
from jobhost import job, every


@job(every(2).seconds)
def ping():
    print("ping " + "x" * 20000)  # longer than rsyslog's default 8 KB message
"""
SECRET = f"s3cret-{uuid.uuid4().hex}"
VAULT_PASSWORD = "test-vault-password"


class Logstash:
    """A TCP listener that keeps each newline-terminated line it receives, as bytes."""

    def __init__(self, port: int = 0):
        self.lines: list[bytes] = []
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self.server.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            with self._lock:
                self.lines.extend(complete)

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.lines)

    def close(self) -> None:
        """Stop listening for real: shutdown wakes the thread blocked in accept(), which a bare
        close() would leave accepting on the old socket."""
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class Controller:
    """A checkout of this working tree (its own git repository) to deploy from."""

    def __init__(self, directory: Path, host: DebianHost, logstash_port: int):
        self.dir = directory / "checkout"
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\n")
        for name in filter(None, files):
            if (ROOT / name).is_file():
                target = self.dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
        (self.dir / "jobs" / "ping.py").write_text(PING)
        self.git("init", "-q")
        self.commit("the release under test, with a job every 2 s")
        inventory = directory / "inventory"
        (inventory / "group_vars" / "jobhost").mkdir(parents=True)
        shutil.copy(ROOT / "ansible/inventory/example/group_vars/jobhost/main.yml", inventory / "group_vars/jobhost/")
        # Host variables, to win over the example's group_vars.
        (inventory / "hosts.ini").write_text(
            f"[jobhost]\n{host.inventory_line()} jobhost_logstash_host=127.0.0.1 "
            f"jobhost_logstash_port={logstash_port} jobhost_start_timeout=20 "
            # Rotation every few seconds (the ping job writes 20 KB lines), so the tests see it.
            "jobhost_log_max_bytes=200KB jobhost_log_backups=50 "
            # The container shares this machine's network: a port of its own, found free.
            f"jobhost_http_addr=127.0.0.1:{_free_port()}\n"
        )
        self.password = directory / "vault-password"
        self.password.write_text(VAULT_PASSWORD)
        vault = inventory / "group_vars" / "jobhost" / "vault.yml"
        vault.write_text(
            f"vault_jobhost_http_token: {SECRET}\n"
            "vault_jobhost_secret_environment:\n"
            f"  SENTRY_DSN: http://{SECRET}@127.0.0.1:9/1\n"
            f"  PARTNER_API_TOKEN: {SECRET}\n"
        )
        self.ansible("ansible-vault", "encrypt", str(vault))
        self.inventory = inventory / "hosts.ini"

    def git(self, *args: str) -> None:
        env = {
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        subprocess.run(
            ["git", *args], cwd=self.dir, check=True, capture_output=True, env={**env, "PATH": "/usr/bin:/bin"}
        )

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=self.dir, capture_output=True, text=True, check=True
        ).stdout.strip()

    def ansible(self, tool: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ANSIBLE / "bin" / tool), "--vault-password-file", str(self.password), *args],
            cwd=self.dir / "ansible",
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": f"{ANSIBLE / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
        )

    def deploy(self) -> subprocess.CompletedProcess[str]:
        return self.ansible("ansible-playbook", "-i", str(self.inventory), "deploy.yml")


def recap(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if " : ok=" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    reason = missing()
    require("a bootable Debian container with Ansible", reason is None, reason or "")
    directory = tmp_path_factory.mktemp("deploy")
    host = DebianHost(directory, f"jobhost-{uuid.uuid4().hex[:8]}")
    logstash = [Logstash()]
    try:
        controller = Controller(directory, host, logstash[0].port)
        first = controller.deploy()
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
        controller.first_output = first.stdout + first.stderr  # type: ignore[attr-defined]
        yield host, controller, logstash
    finally:
        for listener in logstash:
            listener.close()
        host.stop()


def _program(host: DebianHost) -> tuple[str, int]:
    status = host.run("supervisorctl status jobs", check=False).stdout.split()
    pid = int(status[3].rstrip(",")) if len(status) > 3 and status[2] == "pid" else 0
    return status[1] if len(status) > 1 else "", pid


def _log_files(host: DebianHost) -> list[Path]:
    """The log and its rotated files, oldest first (jobs.log.2, jobs.log.1, jobs.log)."""
    directory = host.dir / "var/log/jobhost"
    rotated = sorted(directory.glob("jobs.log.*"), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, directory / "jobs.log"]


def _log_lines(host: DebianHost) -> list[bytes]:
    lines: list[bytes] = []
    for path in _log_files(host):
        lines.extend(path.read_bytes().split(b"\n")[:-1])
    return lines


def _pings(lines: list[bytes]) -> list[dict]:
    records = [json.loads(line) for line in lines]
    return [r for r in records if r.get("job") == "ping" and r.get("event") == "run_succeeded"]


def test_first_deploy_runs_the_jobs_as_the_job_user_and_ships_every_line(site):
    host, controller, logstash = site
    state, pid = _program(host)
    assert state == "RUNNING"
    uid = re.search(r"^Uid:\s+(\d+)", host.run(f"cat /proc/{pid}/status").stdout, re.M).group(1)
    assert host.run(f"getent passwd {uid}").stdout.split(":")[0] == "jobhost"
    assert host.run("getent passwd jobhost").stdout.strip().endswith(":/usr/sbin/nologin")

    wait_until(lambda: _pings(_log_lines(host)), timeout=30, what="a run of the ping job in the log")
    written = _log_lines(host)
    wait_until(lambda: len(logstash[0].received()) >= len(written), timeout=30, what="the lines at Logstash")
    assert logstash[0].received()[: len(written)] == written  # byte for byte, in order

    mode = host.run("stat -c '%a %U' /etc/jobhost/jobs.env").stdout.split()
    assert mode == ["600", "jobhost"]
    assert SECRET in host.read("/etc/jobhost/jobs.env")
    commands = host.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '", check=False).stdout
    assert "jobs.py" in commands and SECRET not in commands
    assert SECRET not in host.read("/etc/supervisor/conf.d/jobs.conf")
    assert SECRET not in controller.first_output
    assert (
        host.run("cat /opt/jobhost/current/REVISION").stdout.strip()
        == (host.run("readlink /opt/jobhost/current").stdout.strip().rsplit("/", 1)[1])
    )


def test_the_inventory_turns_the_status_page_and_api_on(site):
    host, controller, _ = site
    address = re.search(r"jobhost_http_addr=(\S+)", controller.inventory.read_text()).group(1)
    assert f"JOBS_HTTP_ADDR={json.dumps(address)}" in host.read("/etc/jobhost/jobs.env")
    health = wait_until(lambda: _get(f"http://{address}/healthz"), timeout=30, what="/healthz to answer 200")
    assert json.loads(health)["healthy"] is True
    assert "ping" in [job["name"] for job in json.loads(_get(f"http://{address}/api/jobs"))]
    assert b"jobhost_runs_total" in _get(f"http://{address}/metrics")
    # The vault's token opens the write endpoints; without it they stay shut.
    asked = urllib.request.Request(f"http://{address}/api/jobs/ping/run", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(asked, timeout=10)
    assert refused.value.code == 401
    asked.add_header("Authorization", f"Bearer {SECRET}")
    with urllib.request.urlopen(asked, timeout=10) as answer:
        assert answer.status == 202


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read() if answer.status == 200 else None
    except (OSError, urllib.error.HTTPError):
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_second_deploy_with_no_change_changes_nothing(site):
    host, controller, _ = site
    _, pid = _program(host)
    again = controller.deploy()
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0, again.stdout[-4000:]
    assert _program(host) == ("RUNNING", pid)


def test_a_deploy_repairs_a_program_that_is_not_running(site):
    host, controller, _ = site
    host.run("supervisorctl stop jobs")
    repaired = controller.deploy()
    assert repaired.returncode == 0, repaired.stdout[-4000:]
    assert _program(host)[0] == "RUNNING"


def test_lines_written_while_logstash_is_down_arrive_when_it_is_back_in_order(site):
    host, _, logstash = site
    port = logstash[0].port
    logstash[0].close()
    before = len(_log_lines(host))
    wait_until(lambda: len(_pings(_log_lines(host)[before:])) >= 3, timeout=30, what="3 pings while Logstash is down")
    logstash.append(Logstash(port))
    written = _log_lines(host)
    wait_until(lambda: len(logstash[-1].received()) >= 1, timeout=60, what="rsyslog to reconnect")
    wait_until(
        lambda: set(written) <= set(logstash[0].received() + logstash[-1].received()),
        timeout=60,
        what="every line written meanwhile",
    )
    everything = logstash[0].received() + logstash[-1].received()
    delivered = [line for line in everything if line in set(written)]
    # At a broken connection plain TCP can lose the line in flight, never reorder.
    assert sorted(delivered, key=written.index) == delivered
    assert set(written[before:]) <= set(delivered)


def test_rsyslog_follows_the_rotated_log_and_ships_each_line_once(site):
    host, _, logstash = site
    rotations = len(_log_files(host))
    wait_until(lambda: len(_log_files(host)) >= rotations + 2, timeout=90, what="two more rotations of the log")
    written = _log_lines(host)
    received = logstash[-1].received()
    wait_until(lambda: len(logstash[-1].received()) >= len(received) + 5, timeout=30, what="lines after rotation")
    received = logstash[-1].received()
    # Plain TCP has no acknowledgements: the line in flight when this listener took over may come
    # twice (rsyslog sends it again on the new connection). From then on, each line once.
    while len(received) > 1 and received[1] == received[0]:
        received = received[1:]
    start = written.index(received[0])  # the first line this listener got
    assert received[: len(written) - start] == written[start:]  # each line once, in order, across files


def test_a_release_that_fails_its_check_never_replaces_the_running_one(site):
    host, controller, _ = site
    running = host.run("readlink /opt/jobhost/current").stdout.strip()
    state, pid = _program(host)
    (controller.dir / "jobs" / "broken.py").write_text(
        'from jobhost import job, cron\n\n\n@job(cron("61 * * * *"))\ndef every_sixty_first_minute():\n    pass\n'
    )
    revision = controller.commit("a broken job")
    try:
        failed = controller.deploy()
        assert failed.returncode != 0
        assert "jobs/broken.py:4: job 'every_sixty_first_minute': cron('61 * * * *')" in failed.stdout
        assert host.run("readlink /opt/jobhost/current").stdout.strip() == running
        assert not (host.dir / f"opt/jobhost/releases/{revision}").exists()
        assert _program(host) == (state, pid)
        before = len(_pings(_log_lines(host)))
        wait_until(lambda: len(_pings(_log_lines(host))) > before, timeout=30, what="the old release still running")
    finally:
        (controller.dir / "jobs" / "broken.py").unlink()
        controller.commit("remove the broken job")


def test_a_release_that_does_not_come_up_is_rolled_back(site):
    host, controller, _ = site
    assert controller.deploy().returncode == 0  # the fixed release (same code, a new commit)
    running = host.run("readlink /opt/jobhost/current").stdout.strip()
    # Imports in `check`, but the loop dies at start: something only the running host meets.
    (controller.dir / "jobs" / "needs_config.py").write_text(
        "import sys\n\nif sys.argv[1:2] != ['check']:\n    raise RuntimeError('the partner config is missing')\n"
    )
    controller.commit("a job that cannot start")
    try:
        failed = controller.deploy()
        assert failed.returncode != 0
        assert "did not come up healthy" in failed.stdout and "rolled back to" in failed.stdout
        assert host.run("readlink /opt/jobhost/current").stdout.strip() == running
        wait_until(lambda: _program(host)[0] == "RUNNING", timeout=30, what="the previous release running again")
    finally:
        (controller.dir / "jobs" / "needs_config.py").unlink()
        controller.commit("remove the job that cannot start")


def test_the_role_passes_ansible_lint_at_the_production_profile():
    require("ansible-lint", (ANSIBLE / "bin" / "ansible-lint").exists(), "./dev test installs it")
    linted = subprocess.run(
        [str(ANSIBLE / "bin" / "ansible-lint"), "--profile", "production", "ansible/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{ANSIBLE / 'bin'}:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
