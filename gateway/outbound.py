"""The SSRF guard: outbound HTTP reaches only public addresses, unless conf allows more.

A webhook URL is written by whoever configures an endpoint; without this guard it could
point Tocsin at Redis on localhost, a LAN admin page or the cloud metadata service.
The check runs on the *resolved* address that the connection then uses (a resolver
wrapping the system's), so a DNS answer that changes between check and connect cannot
slip through; IP literals, which aiohttp never resolves, are checked before the request.
Channels never follow redirects, so every hop is a fresh, checked request.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from .errors import DeliveryError, PermanentError, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance metadata services hand out cloud credentials: refused even when allow-listed.
METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)


class OutboundRefused(OSError):
    """The address is not one Tocsin may connect to."""


#: A host made only of numbers and dots (decimal, octal or hex parts): what a URL parser
#: or ``inet_aton`` may read as an IPv4 address (``2130706433``, ``127.1``,
#: ``0251.0376.0251.0376``, ``169.254.169.254.``) although ``ipaddress`` does not.
_NUMERIC_HOST = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+))*\.?")


def noncanonical_ipv4(host: str) -> str | None:
    """Why a numeric host that is not a dotted-quad IPv4 address is refused, else ``None``.

    Such forms map onto an address the guard never saw written (``http://127.1/`` is
    loopback), and aiohttp refuses them outright: they are refused for good, in the same
    words at check time and at send time.
    """
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return f"invalid URL: {host} - is not a canonical IPv4 address"
    return None


def _normalize(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


class OutboundPolicy:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: list[Network] = []
        for text in allow:
            try:
                self.allow.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise ValueError(f"{text!r} is not a network such as 10.0.0.0/8: {exc}") from None

    def refusal(self, address: str) -> str | None:
        """Why connecting to this IP address is refused, or ``None`` if it is allowed."""
        try:
            ip = _normalize(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            return f"{address!r} is not an IP address"
        if ip in METADATA:
            return f"{ip} is a cloud metadata address"
        if any(ip in network for network in self.allow):
            return None
        if ip.is_multicast or not ip.is_global:
            kind = (
                "loopback"
                if ip.is_loopback
                else "link-local"
                if ip.is_link_local
                else "unspecified"
                if ip.is_unspecified
                else "multicast"
                if ip.is_multicast
                else "private or reserved"
            )
            return f"{ip} is a {kind} address (allow it with [outbound] allow = [...])"
        return None

    def check(self, address: str, host: str) -> None:
        reason = self.refusal(address)
        if reason is not None:
            raise OutboundRefused(f"refused to connect to {host}: {reason}")

    def url_refusal(self, url: str) -> str | None:
        """Why a URL whose host is an IP literal (or a number that would be read as one)
        is refused (names are checked when resolved, at connect time); ``None`` if it
        may be tried."""
        host = (yarl.URL(url).host or "").strip("[]")
        numeric = noncanonical_ipv4(host)
        if numeric is not None:
            return numeric
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        reason = self.refusal(host)
        return None if reason is None else f"refused to connect to {host}: {reason}"

    def client_session(
        self, *, literal_hosts_checked: bool = False, **kwargs: Any
    ) -> aiohttp.ClientSession:
        """An ``aiohttp.ClientSession`` that only connects where this policy allows.

        ``connector_limit`` sets the connection pool size; other keyword arguments go to
        ``ClientSession``. Requests must pass ``allow_redirects=False``. A channel that
        only ever calls URLs it checked with ``url_refusal`` (a fixed endpoint) passes
        ``literal_hosts_checked=True`` and saves a per-request hook.
        """
        limit = kwargs.pop("connector_limit", 100)
        connector = aiohttp.TCPConnector(limit=limit, resolver=GuardedResolver(self))
        if literal_hosts_checked:
            return aiohttp.ClientSession(connector=connector, **kwargs)
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._check_literal)
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace], **kwargs)

    async def _check_literal(
        self, _session: aiohttp.ClientSession, _ctx: SimpleNamespace, params: Any
    ) -> None:
        host = params.url.host or ""
        try:
            ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        self.check(host.strip("[]"), host)


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.refusal(r["host"]) is None]
        if not allowed:
            reasons = {self.policy.refusal(r["host"]) for r in results}
            raise OutboundRefused(
                f"refused to connect to {host}: {'; '.join(sorted(map(str, reasons)))}"
            )
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def delivery_error(exc: BaseException) -> DeliveryError:
    """The outcome of an aiohttp/OS error: refused by the guard or an invalid URL is for
    good; anything else (timeouts, connection errors) is retried."""
    if isinstance(exc, aiohttp.InvalidURL):
        return PermanentError(f"invalid URL: {exc}")
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OutboundRefused):
            return PermanentError(str(cause))
        cause = getattr(cause, "os_error", None) or cause.__cause__ or cause.__context__
    return TransientError(f"{type(exc).__name__}: {exc}")
