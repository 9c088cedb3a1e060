"""Serves the HTTP app from threads of the host, beside the loop and never in its way.

waitress (a production WSGI server, pure Python) runs in a daemon thread with a few
worker threads. Each worker opens a state store connection of its own, so nothing is
shared with the loop but thread-safe objects: the metrics, the kept log lines, and the
loop's request queue. The loop forks runs; every descriptor of the server is closed in
the forked child at once, so a job never holds a client's connection or the port open.
How long a connection may take over its request, and how many may be open, is
jobhost.web.connections'; which `Host` a request may name, jobhost.web.hosts'.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from jobhost.config import HttpConfig
from jobhost.errors import StoreError
from jobhost.observe.events import Reporter
from jobhost.observe.metrics import Metrics
from jobhost.observe.runlines import LineKeeper, RunLines
from jobhost.store import StateStore
from jobhost.web import connections
from jobhost.web.api import MAX_BODY
from jobhost.web.app import WebApp
from jobhost.web.hosts import AllowedHosts

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.host import Host

logger = logging.getLogger("jobhost.web")

WORKERS = 4  # requests served at once; a slow store query holds one worker, not the loop
GATE_WAIT = 0.2  # seconds a fork waits at most for the server's store calls going on
STOP_WAIT = 1.0  # seconds the requests being answered get to finish when the host stops


class ForkGate:
    """Keeps forks out of the state store's C code while server threads are in it.

    SQLite, libpq and OpenSSL run without the GIL and take locks of their own; a run forked
    while a server thread holds one would be born with it held, and hang at its first use
    of that library. Server threads pass the gate (shared) around each store call, and the
    loop's fork closes it (exclusive): a fork waits for at most the calls already going.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._closers = 0  # forks going on (a thread-isolated job may fork too)

    @contextlib.contextmanager
    def passing(self) -> Iterator[None]:
        with self._cond:
            while self._closers:
                self._cond.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                if not self._inside:
                    self._cond.notify_all()

    def close(self) -> None:
        """Before a fork: let no new call in, and wait for the calls going on, GATE_WAIT at most: a call
        waiting on the network or a busy lock holds no library-wide lock, and the run must start."""
        with self._cond:
            self._closers += 1
            self._cond.wait_for(lambda: not self._inside, timeout=GATE_WAIT)

    def open(self) -> None:
        """After a fork, in the host."""
        with self._cond:
            self._closers -= 1
            self._cond.notify_all()

    def reset(self) -> None:
        """After a fork, in the child: no server thread lives there."""
        self._cond = threading.Condition(threading.Lock())
        self._inside, self._closers = 0, 0


class ThreadStores:
    """One state store connection per server thread, opened when the thread first needs it; every
    call goes through the fork gate, and any failure of the store is a StoreError (an answer of 503)."""

    def __init__(self, open_store: Callable[[], StateStore], gate: ForkGate):
        self._open = open_store
        self._gate = gate
        self._local = threading.local()

    def __call__(self) -> StateStore:
        return cast(StateStore, self)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(StateStore, name, None)):
            raise AttributeError(name)  # only the store's methods: no attribute made up

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._gate.passing():
                try:
                    store = getattr(self._local, "store", None)
                    if store is None:
                        store = self._local.store = self._open()
                    return getattr(store, name)(*args, **kwargs)
                except StoreError:
                    raise
                except Exception as exc:  # the driver's own error (sqlite3, psycopg): the store failed
                    logger.debug("the state store failed in %s", name, exc_info=True)  # the answer says it
                    raise StoreError(f"{type(exc).__name__}: {exc}") from exc

        return call


class WebServer:
    """The status page, `/healthz`, `/metrics` and the API of one host."""

    def __init__(
        self,
        config: HttpConfig,
        jobs: Mapping[str, JobSpec],
        open_store: Callable[[], StateStore],
        zone: ZoneInfo,
    ):
        self.config = config
        self.zone = zone  # JOBS_TIMEZONE: of times a request gives without an offset, not a job's
        self.jobs = jobs
        self.metrics = Metrics()
        self.gate = ForkGate()
        self.stores = ThreadStores(open_store, self.gate)
        self.keeper = LineKeeper(self.stores())
        self.lines = RunLines(on_end=self.keeper.keep)
        self._server: object | None = None

    def observers(self) -> list[Reporter]:
        """What the host's lifecycle must tell (before it starts)."""
        return [self.metrics]

    def start(self, host: Host) -> None:
        """Bind and serve in the background; raises OSError if the address cannot be bound."""
        self.metrics.watch_loop(lambda: host.counts()[0], lambda: host.counts()[1], lambda: host.counts()[2])
        self.metrics.successes.store = self.stores
        self.metrics.running(host.status.release)
        sock = connections.listen(self.config.host, self.config.port)
        bound, port = sock.getsockname()[:2]
        hosts = AllowedHosts(self.config.host, port, self.config.names)
        app = WebApp(self.jobs, self.stores, host, self.config, self.metrics, self.lines, hosts, self.zone)
        server = connections.bounded_server(
            app,
            sock,
            WORKERS,
            ident="jobhost",
            max_request_body_size=MAX_BODY * 2,  # beyond the app's own limit, waitress answers 413 itself
            asyncore_use_poll=True,  # select() fails on descriptors above 1023, and a busy host has many
            clear_untrusted_proxy_headers=True,
        )
        self._server = server
        os.register_at_fork(before=self.gate.close, after_in_parent=self.gate.open, after_in_child=self._in_child)
        logging.getLogger().addHandler(self.lines)
        self.keeper.start()
        threading.Thread(target=server.run, name="jobhost-http", daemon=True).start()
        shown = f"[{bound}]:{port}" if ":" in bound else f"{bound}:{port}"
        logger.info(
            "serving the status page, health, metrics and API on http://%s/",
            shown,
            extra={"event": "http_listening", "address": shown, "writes": self.config.actions},
        )

    def _in_child(self) -> None:
        """In a forked run: close the server's sockets (listening, and every client connection) and
        its wake-up pipe, so a job never holds the port or a client's connection open."""
        self.gate.reset()
        server = self._server
        if server is None:
            return
        fds = set(server._map)  # type: ignore[attr-defined]
        fds.update(getattr(server.trigger, "_fds", ()))  # type: ignore[attr-defined]
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._server = None

    def stop(self) -> None:
        """The loop has ended: let the requests being answered finish (a second at most) and take no
        more, so no thread of the server writes a log line while the interpreter shuts down."""
        logging.getLogger().removeHandler(self.lines)
        self.keeper.stop(STOP_WAIT)
        server = self._server
        if server is not None:
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_WAIT)  # type: ignore[attr-defined]
