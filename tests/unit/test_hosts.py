"""Which `Host` the HTTP face answers to, and the address it gives for itself (pure: no server)."""

from __future__ import annotations

import pytest

from jobhost.web.hosts import AllowedHosts


@pytest.mark.parametrize(
    ("bound", "names", "header", "allowed"),
    [
        ("127.0.0.1", (), "127.0.0.1:8377", True),
        ("127.0.0.1", (), "localhost:8377", True),
        ("127.0.0.1", (), "LocalHost.:8377", True),
        ("127.0.0.1", (), "127.0.0.1", True),  # the port is not compared: a proxy's differs
        ("127.0.0.1", (), "evil.example:8377", False),  # a page whose name was turned to 127.0.0.1
        ("127.0.0.1", (), "127.0.0.2:8377", False),
        ("127.0.0.1", (), "[::1]:8377", False),
        ("127.0.0.1", ("jobs.example.com",), "JOBS.example.com", True),
        ("127.0.0.1", ("jobs.example.com",), "www.jobs.example.com", False),
        ("::1", (), "[::1]:8377", True),
        ("::1", (), "[0:0::1]:8377", True),
        ("::1", (), "localhost:8377", True),
        ("10.1.2.3", (), "10.1.2.3:8377", True),
        ("10.1.2.3", (), "localhost:8377", False),  # not bound to loopback
        ("0.0.0.0", (), "10.9.8.7:8377", True),  # every address of the machine is bound
        ("0.0.0.0", (), "localhost:8377", True),
        ("0.0.0.0", (), "jobhost-1:8377", False),
        ("0.0.0.0", ("jobhost-1",), "jobhost-1:8377", True),
        ("localhost", (), "localhost:8377", True),
        ("127.0.0.1", (), None, True),  # HTTP/1.0 without Host: no browser sends it
        ("127.0.0.1", (), "", False),
        ("127.0.0.1", (), "127.0.0.1:8377:1", False),
        ("127.0.0.1", (), "127.0.0.1:http", False),
        ("127.0.0.1", (), "user@127.0.0.1", False),
        ("127.0.0.1", (), "a b", False),
        ("::1", (), "[::1", False),
        ("::1", (), "[::1]x", False),
        ("::1", (), "::1", False),
    ],
)
def test_only_the_bound_address_loopback_and_listed_names_are_allowed(bound, names, header, allowed):
    assert AllowedHosts(bound, 8377, names).allows(header) is allowed


@pytest.mark.parametrize(
    ("bound", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8377"),
        ("::1", "http://[::1]:8377"),
        ("0.0.0.0", "http://127.0.0.1:8377"),
        ("::", "http://[::1]:8377"),
        ("localhost", "http://localhost:8377"),
    ],
)
def test_the_address_given_is_the_servers_own(bound, url):
    assert AllowedHosts(bound, 8377, ("jobs.example.com",)).base_url() == url
