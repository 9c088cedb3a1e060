"""Whether /healthz answers while clients hold connections open without finishing a request.

    python -m benchmarks.http_slowloris [--seconds 30] [--held 110 400 1000]

For each count, that many connections (loopback only) each send the start of a request and
then a header line every 2 s, never the blank line that ends it, and open again when the host
closes them; meanwhile /healthz is probed once a second, each probe given 5 s as a monitor
would. It reports the probes answered, how long they took, the connections the host closed,
and the host's threads and resident memory while held.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.http_load import _free_port
from benchmarks.measure import Running, jobhost_peer

START = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
TRICKLE = 2.0  # seconds between two header lines of a held connection
PROBE_TIMEOUT = 5.0


class Holder:
    """`count` connections trickling a request that never ends, each opened again once closed."""

    def __init__(self, port: int, count: int):
        self.port = port
        self.count = count
        self.closed = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hold)

    def _open(self) -> None:
        with contextlib.suppress(OSError):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            sock.sendall(START)
            self._socks.append(sock)

    def _hold(self) -> None:
        while not self._stop.wait(TRICKLE):
            for sock in list(self._socks):
                try:
                    sock.sendall(b"X-Trickle: 1\r\n")
                except OSError:
                    self._socks.remove(sock)
                    sock.close()
                    self.closed += 1
            while len(self._socks) < self.count and not self._stop.is_set():
                self._open()

    def __enter__(self) -> Holder:
        for _ in range(self.count):
            self._open()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for sock in self._socks:
            sock.close()


def probe(url: str) -> float | None:
    """Seconds /healthz took to answer, or None if it did not within PROBE_TIMEOUT."""
    began = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as answer:
            answer.read()
    except OSError:
        return None
    return time.monotonic() - began


def measure(work: Path, held: int, seconds: float) -> dict[str, float]:
    port = _free_port()
    peer = jobhost_peer("jobhost", work / f"stamps-{held}", work, "pinned", JOBS_HTTP_ADDR=f"127.0.0.1:{port}")
    running = Running(peer)
    try:
        running.wait_ready()
        url = f"http://127.0.0.1:{port}/healthz"
        threads_idle = running.tree.num_threads()
        taken: list[float | None] = []
        with Holder(port, held) as holder:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                taken.append(probe(url))
                time.sleep(1)  # one probe a second, as a monitor's interval
            threads, rss = running.tree.num_threads(), running.rss_mib()
        answered = [t for t in taken if t is not None]
        return {
            "probes": len(taken),
            "answered": len(answered),
            "p50_ms": 1000 * statistics.median(answered) if answered else float("nan"),
            "max_ms": 1000 * max(answered) if answered else float("nan"),
            "closed": holder.closed,
            "threads_idle": threads_idle,
            "threads": threads,
            "rss_mib": rss,
        }
    finally:
        running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--held", type=int, nargs="+", default=[110, 400, 1000])
    args = parser.parse_args()
    print(  # noqa: T201 - the benchmark's report
        "| connections held | probes answered | p50 ms | max ms | closed by the host | threads idle / held | RSS MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")  # noqa: T201
    with tempfile.TemporaryDirectory() as directory:
        for held in args.held:
            row = measure(Path(directory), held, args.seconds)
            print(  # noqa: T201
                f"| {held} | {row['answered']:.0f} of {row['probes']:.0f} | {row['p50_ms']:.1f} | "
                f"{row['max_ms']:.1f} | {row['closed']:.0f} | {row['threads_idle']:.0f} / {row['threads']:.0f} | "
                f"{row['rss_mib']:.1f} |"
            )


if __name__ == "__main__":
    main()
