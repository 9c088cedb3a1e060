"""What the HTTP server costs the loop: an every-second job's lateness with the server idle and
while clients ask for the status page, the API and /metrics as fast as they can; the
requests answered a second; resident memory with the server off and on.

    python -m benchmarks.http_load [--seconds 30] [--clients 4]

The lateness figures are this host's own, with and without load in the same run; the
peers have no HTTP face to compare with.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.measure import Running, jobhost_peer
from benchmarks.peers.stamp import read_stamps
from benchmarks.timing import lateness

PATHS = ("/", "/api/runs?limit=100", "/metrics", "/api/jobs", "/healthz")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _hammer(base: str, stop: threading.Event, answered: list[int]) -> None:
    count = 0
    while not stop.is_set():
        for path in PATHS:
            with urllib.request.urlopen(base + path, timeout=30) as answer:
                answer.read()
            count += 1
    answered.append(count)


def measure(work: Path, seconds: float, clients: int, *, http: bool, load: bool, **settings: str) -> dict[str, float]:
    """One run of the every-second job for `seconds`, with the server off, idle or loaded."""
    out = work / f"stamps-{http}-{load}-{time.monotonic_ns()}"
    port = _free_port()
    env = {"JOBS_HTTP_ADDR": f"127.0.0.1:{port}"} if http else {}
    env.update(settings)
    peer = jobhost_peer("jobhost", out, work, "pinned", **env)
    running = Running(peer)
    stop, answered = threading.Event(), []  # type: ignore[var-annotated]
    try:
        running.wait_ready()
        time.sleep(3)  # past the start's own work
        rss = running.rss_mib()
        threads = [
            threading.Thread(target=_hammer, args=(f"http://127.0.0.1:{port}", stop, answered)) for _ in range(clients)
        ]
        began = time.monotonic()
        if load:
            for thread in threads:
                thread.start()
        time.sleep(seconds)  # the measurement's length
        stop.set()
        for thread in threads if load else []:
            thread.join(60)
        elapsed = time.monotonic() - began
    finally:
        running.stop()
    late = sorted(lateness([at for _, at in read_stamps(out)]))
    return {
        "p50": statistics.median(late),
        "p99": late[min(len(late) - 1, round(0.99 * (len(late) - 1)))],
        "max": late[-1],
        "runs": len(late),
        "requests_per_s": sum(answered) / elapsed if load else 0.0,
        "rss_mib": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        rows = [
            ("server off", measure(work, args.seconds, args.clients, http=False, load=False)),
            ("server on, idle", measure(work, args.seconds, args.clients, http=True, load=False)),
            (f"server on, {args.clients} clients", measure(work, args.seconds, args.clients, http=True, load=True)),
            # Without prepare-ahead the loop forks at the instant, sharing the GIL with the server.
            (
                f"server on, {args.clients} clients, JOBS_PREPARE_AHEAD=0",
                measure(work, args.seconds, args.clients, http=True, load=True, JOBS_PREPARE_AHEAD="0"),
            ),
            (
                "server off, JOBS_PREPARE_AHEAD=0",
                measure(work, args.seconds, args.clients, http=False, load=False, JOBS_PREPARE_AHEAD="0"),
            ),
        ]
    print("| host | lateness p50 ms | p99 ms | max ms | runs | requests/s | RSS MiB before load |")  # noqa: T201
    print("| --- | --- | --- | --- | --- | --- | --- |")  # noqa: T201
    for name, row in rows:
        print(  # noqa: T201 - the benchmark's report
            f"| {name} | {row['p50']:.2f} | {row['p99']:.2f} | {row['max']:.2f} | {row['runs']:.0f} | "
            f"{row['requests_per_s']:.0f} | {row['rss_mib']:.1f} |"
        )


if __name__ == "__main__":
    main()
