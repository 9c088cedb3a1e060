"""A small HTTP client for the tests of the host's HTTP face, over real sockets."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import Deployment, HostProcess


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def base_url(process: HostProcess, timeout: float = 30) -> str:
    """Where the host serves HTTP, from its `http_listening` line (it may have picked the port)."""
    records = process.wait_for(
        lambda rs: any(r.get("event") == "http_listening" for r in rs), timeout, "the HTTP server"
    )
    line = next(r for r in records if r.get("event") == "http_listening")
    return f"http://{line['address']}"


def serving(deployment: Deployment, host: Callable[..., HostProcess], jobs: str, **env: str) -> tuple[HostProcess, str]:
    """A host of `jobs` serving HTTP on a free loopback port, once it has started; and where it serves."""
    deployment.write("work", jobs)
    process = host(JOBS_HTTP_ADDR="127.0.0.1:0", **env)
    url = base_url(process)
    process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), 30, "the host to start")
    return process, url


def call(
    url: str,
    method: str = "GET",
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return Answer(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())
