"""Claim latency and state-store operations per second: PostgreSQL against SQLite, same run.

For each backend:
- claim: one `claim()` of a new slot (what every host does at every slot), p50 and p99;
- attempt: the whole life of a run in the store (claim, start_run, settle), per second;
- contended: HOSTS threads, each with its own connection, claiming the same slots at once
  (what several hosts do at each slot), slots settled per second, and the winners per slot.

PostgreSQL is a throw-away cluster on 127.0.0.1 (fsync off, as in the tests: the figures
are the engine's and the driver's, not the disk's); SQLite is a file in a temp dir with
the store's own settings (WAL, synchronous=NORMAL).
Run: .venv/bin/python -m benchmarks.claims
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, open_store
from jobhost.store.model import Settlement
from tests.support.postgres_cluster import Cluster

CLAIMS = 2000
ATTEMPTS = 1000
HOSTS = 3
CONTENDED_SLOTS = 500
T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def claim_latency(url: str, base: Path) -> tuple[float, float]:
    store = open_store(url, base)
    took = []
    for i in range(CLAIMS):
        slot = T0 + dt.timedelta(seconds=i)
        began = time.perf_counter()
        store.claim("bench", slot, 1, uuid.uuid4().hex, "h1", 60)
        took.append((time.perf_counter() - began) * 1000)
    store.close()
    return statistics.median(took), statistics.quantiles(took, n=100)[98]


def attempts_per_second(url: str, base: Path) -> float:
    store = open_store(url, base)
    began = time.perf_counter()
    for i in range(ATTEMPTS):
        slot = T0 + dt.timedelta(days=1, seconds=i)
        run_id = uuid.uuid4().hex
        token = store.claim("cycle", slot, 1, run_id, "h1", 60)
        store.start_run(RunRecord(run_id, "cycle", slot, 1, RunStatus.RUNNING, started=slot, host="h1"), token)
        store.settle(Settlement(run_id, "cycle", slot, 1, RunStatus.SUCCEEDED, "", slot, 5), token)
    took = time.perf_counter() - began
    store.close()
    return ATTEMPTS / took


def contended(url: str, base: Path) -> tuple[float, float]:
    """Slots per second when HOSTS claim each one at once; the mean number of winners per slot."""
    stores = [open_store(url, base) if url.startswith("postgres") else None for _ in range(HOSTS)]
    wins = [0] * CONTENDED_SLOTS
    barrier = threading.Barrier(HOSTS)

    def host(index: int) -> None:
        store = stores[index] or open_store(url, base)  # SQLite: a connection per thread
        barrier.wait()
        for i in range(CONTENDED_SLOTS):
            slot = T0 + dt.timedelta(days=2, seconds=i)
            if store.claim("contended", slot, 1, uuid.uuid4().hex, f"h{index}", 60) is not None:
                wins[i] += 1
        store.close()

    threads = [threading.Thread(target=host, args=(i,)) for i in range(HOSTS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    return CONTENDED_SLOTS / took, sum(wins) / CONTENDED_SLOTS


def measure(name: str, url: str, base: Path, print_row: Callable[[str], None]) -> None:
    p50, p99 = claim_latency(url, base)
    cycles = attempts_per_second(url, base)
    slots, winners = contended(url, base)
    print_row(f"{name:<12} {p50:>9.3f} {p99:>9.3f} {cycles:>12.0f} {slots:>14.0f} {winners:>9.2f}")


def main() -> None:
    print(  # noqa: T201
        f"{'store':<12} {'claim p50':>9} {'claim p99':>9} {'attempts/s':>12} {f'slots/s ({HOSTS}h)':>14} "
        f"{'winners':>9}   (ms, one claim; claim+start+settle; {HOSTS} hosts claiming each slot)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        measure("sqlite", f"sqlite:///{base / 'state.sqlite3'}", base, print)
        cluster = Cluster()
        try:
            measure("postgresql", cluster.new_database(), base, print)
        finally:
            cluster.destroy()


if __name__ == "__main__":
    main()
