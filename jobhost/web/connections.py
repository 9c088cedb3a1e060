"""Keeps the HTTP face answering while clients hold connections open without finishing a request.

waitress closes a connection only after `channel_timeout` seconds without a byte, so a client
that sends a byte now and then (a slowloris) holds it for ever; and once `connection_limit`
connections are open it stops accepting, so a health probe waits in the kernel's queue behind
them and its monitor pages for a healthy loop. Here, in the server's own thread:

- a connection gets REQUEST_TIME seconds from its opening (or the end of its last answer) to
  send a whole request, however it trickles in; then it is closed;
- at the limit, a new connection closes the one that has waited longest for its request
  instead of waiting itself, so a probe that sends its request at once is answered whatever
  the others do. Only when every connection is being answered does the server stop accepting.

Memory stays bounded: at most CONNECTIONS connections, each buffering HEADER_BYTES of request
head and the body waitress takes; no thread is added.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

logger = logging.getLogger("jobhost.web")

REQUEST_TIME = 10.0  # seconds a connection gets to send a whole request
CONNECTIONS = 200  # open at once; far above what monitors, scrapers and people need
HEADER_BYTES = 32 * 1024  # a request's line and headers (waitress answers 431 above)
IDLE_SEND = 30  # seconds an answer may wait for its client to read a byte more
BACKLOG = 1024  # connections the kernel queues while the server is not accepting


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound (OSError, naming the reason, if the address cannot be)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def bounded_server(app: Any, sock: socket.socket, threads: int, **adjustments: Any) -> BoundedServer:
    """waitress serving `app` on `sock` from `threads` workers, with the bounds above; `adjustments`:
    waitress' other options. Its `run()` is the server thread's loop."""
    adj = Adjustments(
        sockets=[sock],
        threads=threads,
        connection_limit=CONNECTIONS,
        cleanup_interval=1,  # seconds between two looks at every connection's time
        channel_timeout=IDLE_SEND,
        max_request_header_size=HEADER_BYTES,
        backlog=BACKLOG,
        **adjustments,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
    return BoundedServer(app, {}, _sock=sock, dispatcher=dispatcher, adj=adj, bind_socket=False, sockinfo=sockinfo)


class BoundedChannel(HTTPChannel):
    """A connection that knows since when it has been waiting for its next request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since = time.monotonic()

    def service(self) -> None:
        """Answer the requests received (in a worker thread); the wait for the next starts at the end."""
        self.waiting_since = time.monotonic()
        try:
            super().service()
        finally:
            self.waiting_since = time.monotonic()

    def waiting(self) -> bool:
        """Nothing being answered and nothing left to send: only the client's request is awaited."""
        return not (self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed)


class BoundedServer(TcpWSGIServer):
    """waitress' server with the bounds above, over a socket already bound (`listen`)."""

    channel_class = BoundedChannel
    next_channel_cleanup: float  # waitress' own, set in its __init__
    full = False  # the limit was reached and not yet left well behind (logged once a time)

    def readable(self) -> bool:
        """Called by the server thread's loop before each wait: the chores, then whether to accept."""
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        count = len(self.active_channels)
        if count >= self.adj.connection_limit and not self.full:
            self.full = True
            logger.warning(
                "%d HTTP connections are open, the limit: each new one closes the one waiting longest "
                "for its request (a client holding connections open?)",
                count,
                extra={"event": "http_connections_full", "connections": count},
            )
        elif count < self.adj.connection_limit // 2:
            self.full = False
        return count < self.adj.connection_limit or self._longest_waiting() is not None

    def handle_accept(self) -> None:
        if len(self.active_channels) >= self.adj.connection_limit:
            oldest = self._longest_waiting()
            if oldest is not None:
                oldest.handle_close()
        super().handle_accept()

    def maintenance(self, now: float) -> None:
        """Close each connection past its time for a request (and, as waitress does, each answer
        whose client has read nothing for `channel_timeout` seconds)."""
        super().maintenance(now)
        cutoff = time.monotonic() - REQUEST_TIME
        for channel in list(self.active_channels.values()):
            if channel.waiting() and channel.waiting_since < cutoff:
                channel.will_close = True

    def _longest_waiting(self) -> BoundedChannel | None:
        waiting = [channel for channel in self.active_channels.values() if channel.waiting()]
        return min(waiting, key=lambda channel: channel.waiting_since, default=None)
