"""Which `Host` a request may name, so that no web page can read the API through DNS rebinding.

A page of evil.example whose name an attacker turns to 127.0.0.1 reaches the port, but its
requests say `Host: evil.example`: only the bound address, loopback's names on a loopback
address, and the names the operator lists are answered. An address given as digits can only
come from a page of that very address, so on a wildcard bind (0.0.0.0, ::), which is every
address of the machine, any address is the bound one. The port is not compared: behind a
proxy it is the proxy's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

NAME = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*")
LOOPBACK_NAMES = ("localhost",)


def host_name(text: str) -> str:
    """A host name or address as `Host` may carry it, folded to compare (ValueError if it is none)."""
    folded = text.strip().lower().removesuffix(".")
    address = _address(folded)
    if address is not None:
        return str(address)
    if len(folded) > 253 or not NAME.fullmatch(folded):
        raise ValueError(text)
    return folded


class AllowedHosts:
    """The names this server answers to, and the address it gives for itself."""

    def __init__(self, bound: str, port: int, names: Iterable[str] = ()):
        self.bound = _address(bound)
        self.port = port
        allowed = {host_name(name) for name in names}
        if self.bound is None:  # bound to a name, such as localhost
            allowed.add(host_name(bound))
        elif not self.bound.is_unspecified:
            allowed.add(str(self.bound))
        if self.bound is not None and (self.bound.is_loopback or self.bound.is_unspecified):
            allowed.update(LOOPBACK_NAMES)
        self.names = frozenset(allowed)
        self._own = host_name(bound) if self.bound is None else str(self.bound)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this `Host` header (None: none sent) is answered."""
        if header is None:
            return True  # HTTP/1.0 without it: no browser sends such a request
        name = _name_of(header)
        if name is None:
            return False
        if name in self.names:
            return True
        return self.bound is not None and self.bound.is_unspecified and _address(name) is not None

    def base_url(self) -> str:
        """Where this server is, from its own address (a wildcard shown as loopback), never a request's."""
        host = self._own
        if self.bound is not None and self.bound.is_unspecified:
            host = "127.0.0.1" if self.bound.version == 4 else "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def _name_of(header: str) -> str | None:
    """`Host`'s name or address without the port, folded; None if it is not a host at all."""
    text = header.strip()
    if text.startswith("["):  # [::1]:8377
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return None
        address = _address(inside)
        return str(address) if address is not None and address.version == 6 else None
    name, _, port = text.partition(":")
    if port and not re.fullmatch(r"[0-9]{1,5}", port):
        return None
    try:
        return host_name(name)
    except ValueError:
        return None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
