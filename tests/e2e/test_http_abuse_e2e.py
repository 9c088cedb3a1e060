"""End to end: the HTTP face of a real host under abuse, over real sockets on loopback: clients
that hold connections open without finishing a request (a slowloris), requests naming another
site's `Host` (DNS rebinding), and numbers too long for int() to read."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator

from jobhost.web.connections import CONNECTIONS
from tests.conftest import Deployment, HostProcess
from tests.support.http_client import call, serving

JOBS = """
from jobhost import job, every

@job(every().day.at("03:00"))
def exports():
    pass
"""
HALF_A_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the blank line that ends it never comes
HELD = 300  # three times waitress' own connection limit, and past the host's (CONNECTIONS)
PROBES = 7


def _start(deployment: Deployment, host, **env: str) -> tuple[HostProcess, str]:
    return serving(deployment, host, JOBS, **env)


@contextlib.contextmanager
def _half_sent(url: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections to the host, each with the start of a request and never its end."""
    address, port = url.removeprefix("http://").rsplit(":", 1)
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((address, int(port)), timeout=30)
            sock.sendall(HALF_A_REQUEST)
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    """Whether the host has closed this connection (without waiting: its end is already here)."""
    readable, _, _ = select.select([sock], [], [], 0)
    try:
        return bool(readable) and not sock.recv(1024)
    except ConnectionResetError:
        return True


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _sockets(pid: int) -> int:
    """The sockets the process holds now; a descriptor closed while they are counted is not one."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def test_health_answers_while_connections_hold_half_sent_requests(deployment: Deployment, host) -> None:
    process, url = _start(deployment, host)
    threads = _threads(process.proc.pid)
    with _half_sent(url, HELD) as held:
        for _ in range(PROBES):  # each probe waits 30 s at most (the client's timeout)
            answer = call(f"{url}/healthz")
            assert answer.status == 200 and answer.json()["healthy"] is True
        # The probes queued behind every held connection, so the host has taken all of them in,
        # and holds a bounded number (the listening socket besides), with no thread more.
        assert _sockets(process.proc.pid) <= CONNECTIONS + 1
        assert sum(_closed(sock) for sock in held) >= HELD - CONNECTIONS
        assert _threads(process.proc.pid) == threads
    full = process.wait_for(
        lambda rs: any(r.get("event") == "http_connections_full" for r in rs), 30, "the warning of the limit"
    )
    assert len([r for r in full if r.get("event") == "http_connections_full"]) == 1  # once, not once a connection


def test_a_request_that_trickles_in_is_cut_off(deployment: Deployment, host) -> None:
    _process, url = _start(deployment, host)
    with _half_sent(url, 1) as (sock,):
        deadline = time.monotonic() + 60
        while True:  # a header line every half second: never idle, never done
            readable, _, _ = select.select([sock], [], [], 0.5)
            try:
                if readable and not sock.recv(1024):
                    break  # the host closed it
                sock.sendall(b"X-Trickle: 1\r\n")
            except (ConnectionResetError, BrokenPipeError):
                break
            assert time.monotonic() < deadline, "the host still held a request trickling in after 60 s"
    answer = call(f"{url}/healthz")
    assert answer.status == 200


def test_a_request_naming_another_host_is_refused(deployment: Deployment, host) -> None:
    process, url = _start(deployment, host, JOBS_HTTP_HOSTS="jobs.example.test")
    port = url.rsplit(":", 1)[1]
    # A page of evil.example whose name an attacker turned to 127.0.0.1 sends its own name.
    for path in ("/api/jobs", "/api/runs", "/healthz", "/metrics"):
        answer = call(f"{url}{path}", headers={"Host": f"evil.example:{port}"})
        assert answer.status == 400, path
        body = answer.json()
        assert body["header"] == "Host" and "evil.example" in body["error"] and "JOBS_HTTP_HOSTS" in body["error"]
    page = call(f"{url}/jobs/exports", headers={"Host": "evil.example"})
    assert page.status == 400 and b"Host" in page.body and b"exports" not in page.body

    for name in (f"127.0.0.1:{port}", f"localhost:{port}", "jobs.example.test", "JOBS.Example.test.:443"):
        assert call(f"{url}/api/jobs", headers={"Host": name}).status == 200, name

    # The job page's curl line gives the host's own address, whatever name the page was asked by.
    page = call(f"{url}/jobs/exports", headers={"Host": "jobs.example.test"})
    assert page.status == 200
    assert f"http://127.0.0.1:{port}/api/jobs/exports/run".encode() in page.body
    assert b"jobs.example.test/api" not in page.body
    assert not [r for r in process.records() if r.get("event") == "http_failed"]


def test_numbers_too_long_to_read_get_400_naming_the_parameter(deployment: Deployment, host) -> None:
    process, url = _start(deployment, host)
    huge = "9" * 5000  # int() refuses more than 4300 digits
    for path, param in [
        (f"/api/runs?limit={huge}", "limit"),
        (f"/api/jobs/exports/next?count={huge}", "count"),
        (f"/jobs/exports?limit={huge}", "limit"),
        (f"/?refresh={huge}", "refresh"),
        (f"/jobs/exports?refresh={huge}", "refresh"),
        ("/?refresh=0", "refresh"),
        ("/api/runs?limit=%D9%A3", "limit"),  # an Arabic-Indic three: decimal to str, not ours
        (f"/api/runs?limit={'0' * 30}7", None),  # seven, however written
    ]:
        answer = call(f"{url}{path}")
        if param is None:
            assert answer.status == 200, path
            continue
        assert answer.status == 400, path[:60]
        if path.startswith("/api"):
            body = answer.json()
            assert body["param"] == param and f"{param}: expected a whole number from 1 to" in body["error"]
            assert len(body["error"]) < 200  # the digits are not all repeated
        else:
            assert f"{param}: expected a whole number from 1 to".encode() in answer.body
    assert not [r for r in process.records() if r.get("event") == "http_failed"]


def test_a_body_nested_too_deep_to_read_gets_400_naming_it(deployment: Deployment, host) -> None:
    token = "t" * 32
    process, url = _start(deployment, host, JOBS_HTTP_TOKEN=token)
    answer = call(f"{url}/api/jobs/exports/run", "POST", token=token, body=b"[" * 60000)
    assert answer.status == 400 and answer.json()["param"] == "body", answer.body[:200]
    assert not [r for r in process.records() if r.get("event") == "http_failed"]
