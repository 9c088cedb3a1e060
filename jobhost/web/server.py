"""Serves the HTTP app from threads of the host, beside the loop and never in its way.

waitress (a production WSGI server, pure Python) runs in a daemon thread with a few
worker threads. Each worker opens a state store connection of its own, so nothing is
shared with the loop but thread-safe objects: the metrics, the kept log lines, and the
loop's request queue. The loop forks runs; every descriptor of the server is closed in
the forked child at once, so a job never holds a client's connection or the port open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from waitress.server import create_server

from jobhost.hostconfig import HttpConfig
from jobhost.lifecycle import Reporter
from jobhost.metrics import Metrics
from jobhost.runlines import RunLines
from jobhost.store import StateStore
from jobhost.web.app import MAX_BODY, WebApp

if TYPE_CHECKING:
    from jobhost.host import Host
    from jobhost.registry import JobSpec

logger = logging.getLogger("jobhost.web")

WORKERS = 4  # requests served at once; a slow store query holds one worker, not the loop
STOP_WAIT = 1.0  # seconds the requests being answered get to finish when the host stops


class ThreadStores:
    """One state store connection per server thread, opened when the thread first needs it."""

    def __init__(self, open_store: Callable[[], StateStore]):
        self._open = open_store
        self._local = threading.local()

    def __call__(self) -> StateStore:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._open()
        return store


class WebServer:
    """The status page, `/healthz`, `/metrics` and the API of one host."""

    def __init__(self, config: HttpConfig, jobs: Mapping[str, JobSpec], open_store: Callable[[], StateStore]):
        self.config = config
        self.jobs = jobs
        self.metrics = Metrics()
        self.lines = RunLines()
        self.stores = ThreadStores(open_store)
        self._server: object | None = None

    def observers(self) -> list[Reporter]:
        """What the host's lifecycle must tell (before it starts)."""
        return [self.metrics]

    def start(self, host: Host) -> None:
        """Bind and serve in the background; raises OSError if the address cannot be bound."""
        self.metrics.watch_loop(lambda: host.load()[0], lambda: host.load()[1], lambda: host.load()[2])
        self.metrics.successes.store = self.stores
        app = WebApp(self.jobs, self.stores, host, self.config, self.metrics, self.lines)
        server = create_server(
            app,
            host=self.config.host,
            port=self.config.port,
            threads=WORKERS,
            ident="jobhost",
            max_request_body_size=MAX_BODY * 16,  # beyond the app's own limit, waitress answers 413 itself
            asyncore_use_poll=True,  # select() fails on descriptors above 1023, and a busy host has many
            clear_untrusted_proxy_headers=True,
        )
        self._server = server
        os.register_at_fork(after_in_child=self._close_in_child)
        logging.getLogger().addHandler(self.lines)
        threading.Thread(target=server.run, name="jobhost-http", daemon=True).start()
        host_, port = server.effective_host, server.effective_port  # type: ignore[attr-defined]
        shown = f"[{host_}]:{port}" if ":" in str(host_) else f"{host_}:{port}"
        logger.info(
            "serving the status page, health, metrics and API on http://%s/",
            shown,
            extra={"event": "http_listening", "address": shown, "writes": self.config.token is not None},
        )

    def _close_in_child(self) -> None:
        """In a forked run: close the listening socket and every client connection of the server."""
        server = self._server
        if server is None:
            return
        for fd in list(server._map):  # type: ignore[attr-defined]
            with contextlib.suppress(OSError):
                os.close(fd)
        self._server = None

    def stop(self) -> None:
        """The loop has ended: let the requests being answered finish (a second at most) and take no
        more, so no thread of the server writes a log line while the interpreter shuts down."""
        logging.getLogger().removeHandler(self.lines)
        server = self._server
        if server is not None:
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_WAIT)  # type: ignore[attr-defined]
