"""Real HTTP servers a host reports to in the tests: Bugsink (a Sentry-compatible server,
for events as Sentry stores and groups them), an envelope sink (Bugsink drops Crons
check-ins, so these are read off the wire) and a black hole (accepts, never answers)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sentry_sdk.envelope import Envelope

ROOT = Path(__file__).resolve().parents[2]  # the repository
BUGSINK = Path(os.environ.get("BUGSINK", ROOT / "var" / "test-tools" / "bugsink"))
if not BUGSINK.is_absolute():
    BUGSINK = ROOT / BUGSINK


class EnvelopeSink:
    """Accepts what the SDK posts and keeps each envelope item (events, check-ins) as JSON."""

    def __init__(self, status: int = 200) -> None:
        self.status = status  # what it answers: 200, or 401 for a Sentry that refuses the key
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._changed = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                elif self.headers.get("Content-Encoding") == "br":
                    import brotli  # only when the SDK found it installed

                    body = brotli.decompress(body)
                envelope = Envelope.deserialize(body)
                with sink._changed:
                    for item in envelope.items:
                        sink.items.append((item.type or "", json.loads(item.payload.get_bytes())))
                    sink._changed.notify_all()
                self.send_response(sink.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [payload for type_, payload in self.items if type_ == kind]

    def events(self) -> list[dict[str, Any]]:
        return self.of_type("event")

    def check_ins(self) -> list[dict[str, Any]]:
        return self.of_type("check_in")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """A TCP port that accepts connections and never answers: Sentry at its worst."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.held: list[socket.socket] = []
        self.dsn = f"http://publickey@127.0.0.1:{self.sock.getsockname()[1]}/42"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def refused_dsn() -> str:
    """A DSN whose port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://publickey@127.0.0.1:{port}/42"


def bugsink_installed() -> bool:
    return (BUGSINK / ".installed").exists()


class Bugsink:
    """A copy of the migrated Bugsink instance, served by gunicorn on a free loopback port."""

    def __init__(self, directory: Path):
        shutil.copytree(BUGSINK / "template", directory)
        with open(directory / "bugsink_conf.py", "a") as conf:  # a test session sends more than its quotas
            for quota in ("PER_PROJECT_PER_5_MINUTES", "PER_PROJECT_PER_HOUR", "PER_5_MINUTES", "PER_HOUR"):
                conf.write(f'BUGSINK["MAX_EVENTS_{quota}"] = 1_000_000\n')
        self.dir = directory
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        key = (directory / "dsn.txt").read_text().strip().split("//", 1)[1].split("@", 1)[0]
        self.dsn = f"http://{key}@127.0.0.1:{self.port}/1"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bugsink_conf", "PYTHONPATH": str(directory)}
        self.log = open(directory / "gunicorn.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(BUGSINK / "venv" / "bin" / "gunicorn"),
                "--no-control-socket",
                f"--bind=127.0.0.1:{self.port}",
                "--workers=1",
                "bugsink.wsgi",
            ],
            cwd=directory,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Bugsink did not start: {(directory / 'gunicorn.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/ready", timeout=2):
                return True
        except OSError:
            return False

    def query(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(f"file:{self.dir / 'db.sqlite3'}?mode=ro", uri=True) as db:
            return db.execute(sql, params).fetchall()

    def events(self) -> list[dict[str, Any]]:
        """Every stored event's full JSON, with the issue it was grouped into."""
        rows = self.query("select issue_id, data from events_event order by digested_at")
        return [{**json.loads(data), "_issue": issue} for issue, data in rows]

    def count(self, containing: str) -> int:
        """How many stored events have `containing` in their JSON (cheaper than reading them all)."""
        return self.query("select count(*) from events_event where data like ?", f"%{containing}%")[0][0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def wait_until(check: Any, timeout: float = 30, what: str = "") -> Any:
    """Poll `check()` (bounded) until it returns something true; raise naming `what` if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what or check}; last: {value!r}")
        time.sleep(0.05)


def iter_frames(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for value in (event.get("exception") or {}).get("values") or []:
        yield from (value.get("stacktrace") or {}).get("frames") or []
