"""Start lateness of a pinned job with Sentry off, refusing connections, and a black hole.

A real `python jobs.py` runs an every-second job beside one that fails every
second (so there is always an event to send) for SECONDS seconds per case;
the figures are the `lateness_ms` of the pinned job's `run_started` lines.
A host that waited on Sentry would be 30 s late per envelope with the black
hole (urllib3's timeout). Run: .venv/bin/python -m benchmarks.sentry_lateness
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from tests.conftest import Deployment
from tests.support.sentry_servers import BlackHole, refused_dsn

SECONDS = 20
JOBS = """
from jobhost import job, every

@job(every(1).seconds)
def pinned():
    pass

@job(every(1).seconds)
def failing():
    raise RuntimeError("one event a second")
"""


def lateness(dsn: str) -> tuple[list[int], float]:
    with tempfile.TemporaryDirectory() as tmp:
        deployment = Deployment(Path(tmp))
        deployment.write("bench", JOBS)
        host = deployment.start(SENTRY_DSN=dsn)
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.5)
        began = time.monotonic()
        host.stop()
        stop = time.monotonic() - began
        found = [r["lateness_ms"] for r in host.records() if r.get("job") == "pinned" and "lateness_ms" in r]
        return found, stop


def main() -> None:
    hole = BlackHole()
    try:
        cases = {"Sentry off": "", "connection refused": refused_dsn(), "black hole": hole.dsn}
        print(f"{'case':<20} {'runs':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'stop s':>7}")  # noqa: T201
        for name, dsn in cases.items():
            found, stop = lateness(dsn)
            p99 = statistics.quantiles(found, n=100, method="inclusive")[98] if len(found) > 1 else found[0]
            row = (
                f"{name:<20} {len(found):>5} {statistics.median(found):>7.0f} {p99:>7.0f} {max(found):>7} {stop:>7.1f}"
            )
            print(row)  # noqa: T201
    finally:
        hole.close()


if __name__ == "__main__":
    main()
