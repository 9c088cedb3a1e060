"""The few store calls a run's keeper makes, served by a fresh process over a pipe.

A keeper is a fork of the host. SQLite keeps what it knows of an open file for the whole
process (its locks, the mapping of the write-ahead log's index), so a connection opened in a
fork of a process that had the file open shares that stale state: it reads the file as it was
(a new host's heartbeat never shows) and could corrupt it with a write. A process started from
scratch has none of it; the keeper asks one (``python -m jobhost.store.piped``, told the URL on
its stdin, never on a command line every user can read), on any store, so that there is one way
it reaches the store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jobhost.errors import StoreError
from jobhost.outcomes import RunStatus
from jobhost.store.model import Heartbeat, PendingRetry, Settlement

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory jobhost is imported from
ANSWER_TIMEOUT = 5.0  # seconds a call may take (a database out of reach): then the process is ended


class PipedStore:
    """heartbeat, renew, settle and cancel requests, each answered by a store opened in a process of its own."""

    def __init__(self, url: str, base_dir: Path, answer_timeout: float = ANSWER_TIMEOUT):
        self.answer_timeout = answer_timeout
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "jobhost.store.piped"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._answers = b""
        assert self._process.stdin is not None
        with contextlib.suppress(OSError):  # gone at once: said at the first call
            self._process.stdin.write((json.dumps({"url": url, "base_dir": str(base_dir)}) + "\n").encode())
            self._process.stdin.flush()

    def heartbeat(self, host: str) -> Heartbeat | None:
        beat = self._ask({"call": "heartbeat", "host": host})
        if beat is None:
            return None
        return Heartbeat(host, beat["pid"], dt.datetime.fromisoformat(beat["at"]), beat["stopped"])

    def renew(self, tokens: list[int], lease: float) -> set[int]:
        return set(self._ask({"call": "renew", "tokens": tokens, "lease": lease}))

    def settle(self, settlement: Settlement, token: int | None) -> bool:
        return bool(self._ask({"call": "settle", "settlement": _settlement_json(settlement), "token": token}))

    def cancel_requested(self, run_id: str) -> str | None:
        """The reason a cancelled run is recorded with, if a person asked to cancel `run_id`."""
        return self._ask({"call": "cancel_requested", "run_id": run_id})

    def cancels_done(self, run_ids: list[str], at: dt.datetime) -> None:
        self._ask({"call": "cancels_done", "run_ids": run_ids, "at": at.isoformat()})

    def close(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _ask(self, request: dict[str, Any]) -> Any:
        """One call; a store that does not answer within `answer_timeout` is given up (the keeper must
        go on watching its run: its timeout, its pipes), and the process with it."""
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
            answer = self._read_line(self._process.stdout.fileno(), time.monotonic() + self.answer_timeout)
        except OSError as exc:
            raise StoreError(f"the store's process is gone: {exc}") from exc
        if answer is None:
            self._process.kill()
            self._process.wait()
            raise StoreError(f"the store did not answer within {self.answer_timeout:g}s")
        if not answer:
            raise StoreError(f"the store's process ended (exit status {self._process.poll()})")
        reply = json.loads(answer)
        if "error" in reply:
            raise StoreError(reply["error"])
        return reply["ok"]

    def _read_line(self, fd: int, deadline: float) -> bytes | None:
        """The next answer line; b"" if the process ended, None past `deadline`."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._answers:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
            data = os.read(fd, 65536)
            if not data:
                return b""
            self._answers += data
        line, self._answers = self._answers.split(b"\n", 1)
        return line


def _settlement_json(s: Settlement) -> dict[str, Any]:
    retry = s.retry
    return {
        "run_id": s.run_id,
        "job": s.job,
        "slot": s.slot.isoformat(),
        "attempt": s.attempt,
        "status": str(s.status),
        "reason": s.reason,
        "ended": s.ended.isoformat(),
        "duration_ms": s.duration_ms,
        "retry": None
        if retry is None
        else {"due": retry.due.isoformat(), "slot": retry.slot.isoformat(), "attempt": retry.attempt},
    }


def _settlement(data: dict[str, Any]) -> Settlement:
    retry = data["retry"]
    return Settlement(
        data["run_id"],
        data["job"],
        dt.datetime.fromisoformat(data["slot"]),
        data["attempt"],
        RunStatus(data["status"]),
        data["reason"],
        dt.datetime.fromisoformat(data["ended"]),
        data["duration_ms"],
        None
        if retry is None
        else PendingRetry(
            dt.datetime.fromisoformat(retry["due"]),
            data["job"],
            dt.datetime.fromisoformat(retry["slot"]),
            retry["attempt"],
        ),
    )


def serve() -> None:
    """Open the store the first line names, then answer the keeper's calls, one JSON line each,
    until its end of the pipe closes."""
    from jobhost.store import open_store

    where = json.loads(sys.stdin.readline() or "{}")
    store = open_store(where["url"], Path(where["base_dir"]))
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                answer = _answer(store, request)
            except Exception as exc:  # noqa: BLE001 - said to the keeper, which tries again or gives up
                reply: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
            else:
                reply = {"ok": answer}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        store.close()


def _answer(store: Any, request: dict[str, Any]) -> Any:
    call = request["call"]
    if call == "heartbeat":
        beat = store.heartbeat(request["host"])
        return None if beat is None else {"pid": beat.pid, "at": beat.at.isoformat(), "stopped": beat.stopped}
    if call == "renew":
        return sorted(store.renew(request["tokens"], request["lease"]))
    if call == "settle":
        return store.settle(_settlement(request["settlement"]), request["token"])
    if call == "cancel_requested":
        asked = next((r for r in store.cancel_requests() if r.run_id == request["run_id"]), None)
        return None if asked is None else asked.outcome_reason()
    if call == "cancels_done":
        return store.cancels_done(request["run_ids"], dt.datetime.fromisoformat(request["at"]))
    raise ValueError(f"unknown call {call!r}")


if __name__ == "__main__":
    serve()
