"""The store a keeper reaches through a fresh process: what it writes is what the store holds,
under the claim's fence, and a store it cannot reach is an error, not a hang."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest

from jobhost.errors import StoreError
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, open_store
from jobhost.store.model import CancelRequest, PendingRetry, Settlement
from jobhost.store.piped import PipedStore

SLOT = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 12, 3, 10, 5, tzinfo=dt.UTC)


def test_a_settlement_through_the_pipe_is_the_stores_under_the_claim(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    store = open_store(url, tmp_path)
    token = store.claim("export", SLOT, 1, "r1", "vm", 60.0)
    assert token is not None
    store.add_run(RunRecord("r1", "export", SLOT, 1, RunStatus.RUNNING, started=SLOT, host="vm"))
    store.beat("vm", 4242, NOW)
    piped = PipedStore(url, tmp_path)
    try:
        command_line = Path(f"/proc/{piped._process.pid}/cmdline").read_bytes()
        assert b"sqlite" not in command_line  # a URL (a password) is not for every user's `ps`
        beat = piped.heartbeat("vm")
        assert beat is not None and (beat.pid, beat.stopped) == (4242, False)
        assert piped.heartbeat("elsewhere") is None
        assert piped.renew([token], 60.0) == {token}
        retry = PendingRetry(NOW + dt.timedelta(minutes=1), "export", SLOT, 2)
        settlement = Settlement("r1", "export", SLOT, 1, RunStatus.FAILED, "it broke", NOW, 1234, retry)
        assert piped.settle(settlement, token) is True
        assert piped.settle(settlement, token) is False  # the claim is released: a second end is fenced off
    finally:
        piped.close()
    run = store.run("r1")
    assert run is not None
    assert (run.status, run.reason, run.duration_ms) == (RunStatus.FAILED, "it broke", 1234)
    assert store.pending_retries() == [retry]


def test_a_cancel_asked_for_is_seen_through_the_pipe_once_until_it_is_done(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    store = open_store(url, tmp_path)
    store.ask_cancel(CancelRequest("r1", "export", "alice", NOW, "wrong input file"))
    piped = PipedStore(url, tmp_path)
    try:
        assert piped.cancel_requested("r2") is None
        assert piped.cancel_requested("r1") == "cancelled by alice: wrong input file"
        piped.cancels_done(["r1"], NOW)
        assert piped.cancel_requested("r1") is None
    finally:
        piped.close()
    assert store.cancel_requests() == []


def test_a_store_that_cannot_be_opened_is_an_error_naming_why(tmp_path: Path) -> None:
    piped = PipedStore("sqlite:///", tmp_path)  # names no file: the store's process refuses it
    try:
        with pytest.raises(StoreError, match="ended"):
            piped.heartbeat("vm")
    finally:
        piped.close()


def test_a_store_that_hangs_is_given_up_at_the_bound_not_waited_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    open_store(url, tmp_path)
    piped = PipedStore(url, tmp_path, answer_timeout=0.5)
    try:
        assert piped.heartbeat("vm") is None  # it answers
        os.kill(piped._process.pid, signal.SIGSTOP)  # then hangs, as a database out of reach can
        with pytest.raises(StoreError, match=r"did not answer within 0\.5s"):
            piped.heartbeat("vm")
        assert piped._process.poll() is not None  # ended, not left stopped
    finally:
        piped.close()
