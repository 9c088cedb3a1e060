"""The state store: runs recorded per second, and `history NAME --limit 20` over a million runs.

A run recorded is its whole life in the store, as the loop writes it: claim, start, settle.
The million runs are spread over 100 jobs and written straight into the tables (the
loop would take hours); then `history` is timed twice: the store's query in-process,
and the whole command as a user types it (a new Python process, its imports, the query).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.claims import attempts_per_second
from benchmarks.measure import PYTHON, ROOT
from jobhost.store import open_store

RUNS = 1_000_000
JOBS = 100
QUERIES = 50
COMMANDS = 5

_SQLITE_FILL = f"""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {RUNS})
INSERT INTO runs (run_id, job, slot, slot_epoch, attempt, status, reason, started, ended, duration_ms, host, seq)
SELECT printf('%032x', i), 'job_' || (i % {JOBS}), '2026-01-01T00:00:00+00:00', 1767225600 + i, 1,
       'succeeded', '', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:01+00:00', 1000, 'bench', i
FROM n
"""

_POSTGRES_FILL = f"""
INSERT INTO jobhost_runs (run_id, job, slot, slot_epoch, attempt, status, reason, started, ended, duration_ms, host)
SELECT lpad(to_hex(i), 32, '0'), 'job_' || (i % {JOBS}), '2026-01-01T00:00:00+00:00', 1767225600 + i, 1,
       'succeeded', '', now(), now(), 1000, 'bench'
FROM generate_series(1, {RUNS}) AS i
"""


@dataclass
class StoreSpeed:
    runs_per_second: float
    query_ms: float  # the store's history query, median
    command_ms: float  # `jobs.py history job_7 --limit 20`, median, as a new process
    startup_ms: float  # `jobs.py --help`, the same process without the query
    others_ms: dict[str, float]  # the other read-only commands, each as a new process, median


def _fill_sqlite(path: Path) -> None:
    open_store(f"sqlite:///{path}", path.parent).close()  # the schema, as the host makes it
    with sqlite3.connect(path) as db:
        db.execute(_SQLITE_FILL)


def _fill_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(_POSTGRES_FILL)
        db.execute("ANALYZE jobhost_runs")


def _median_ms(call, times: int) -> float:
    took = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        took.append((time.perf_counter() - began) * 1000)
    return statistics.median(took)


def measure_store(url: str, work: Path) -> StoreSpeed:
    rate = attempts_per_second(url, work)
    if url.startswith("sqlite:///"):
        path = work / "million.sqlite3"
        _fill_sqlite(path)
        url = f"sqlite:///{path}"
    else:
        open_store(url, work).close()
        _fill_postgres(url)
    store = open_store(url, work)
    try:
        query = _median_ms(lambda: store.runs("job_7", 20), QUERIES)
    finally:
        store.close()
    env = {**os.environ, "JOBS_STATE_URL": url, "JOBS_DIR": str(ROOT / "benchmarks" / "history_jobs")}

    def command(*args: str, check: bool = True) -> None:
        subprocess.run([PYTHON, str(ROOT / "jobs.py"), *args], env=env, check=check, capture_output=True)

    others = {
        "list": lambda: command("list"),
        "next job_7": lambda: command("next", "job_7"),
        "health": lambda: command("health", check=False),  # no loop runs: exit 1, said in a line
    }
    return StoreSpeed(
        rate,
        query,
        _median_ms(lambda: command("history", "job_7", "--limit", "20"), COMMANDS),
        _median_ms(lambda: command("--help"), COMMANDS),
        {name: _median_ms(call, COMMANDS) for name, call in others.items()},
    )
