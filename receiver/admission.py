"""Admission: may this address even try? Allow-lists and failure limits first, the source's budget last.

``admit`` runs before authentication, so a refused address costs no signature check;
it spends nothing but the address's own failure budget. The source's request budget
is charged (``charge``) only once authentication succeeded: a sender without
credentials cannot spend it and make a valid sender see 429. The client address is
the one resolved from trusted proxies (see ``client_address``), computed once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING

from receiver.errors import IpNotAllowedError, RateLimitedError
from receiver.limits import Budget, FailureLimiter, MinuteWindow

if TYPE_CHECKING:
    from receiver.sources import Source


class Admission:
    def __init__(self, sources: Mapping[str, Source], failure_limit_per_minute: int) -> None:
        self._failures = FailureLimiter(failure_limit_per_minute)
        self._windows: dict[str, MinuteWindow] = {}
        self.configure(sources)

    def configure(self, sources: Mapping[str, Source]) -> None:
        """(Re)build the per-source budgets; a source whose limit did not change keeps its count."""
        windows = {}
        for source in sources.values():
            limit = source.settings.rate_limit
            if limit is None:
                continue
            kept = self._windows.get(source.id)
            windows[source.id] = (
                kept if kept and kept.limit == limit.requests_per_minute else MinuteWindow(limit.requests_per_minute)
            )
        self._windows = windows

    def admit(self, source: Source, client_ip: str, now: float) -> Budget | None:
        """Raise when this address may not try; else the source's budget as it stands (nothing spent)."""
        networks = source.settings.allowed_ips
        if networks and not _inside(client_ip, networks):
            raise IpNotAllowedError("requests from this address are not accepted for this source")
        blocked = self._failures.blocked(source.id, limit_key(client_ip), now)
        if blocked is not None:
            msg = f"too many failed authentications from this address; retry in {blocked.reset} s"
            raise RateLimitedError(msg, blocked.reset)
        window = self._windows.get(source.id)
        return None if window is None else window.peek(now)

    def charge(self, source: Source, now: float) -> Budget | None:
        """Spend one request of the source's budget (an authenticated sender); raise 429 when it is spent."""
        window = self._windows.get(source.id)
        if window is None:
            return None
        allowed, budget = window.take(now)
        if not allowed:
            msg = f"this source's budget of {budget.limit} requests per minute is spent; retry in {budget.reset} s"
            raise RateLimitedError(msg, budget.reset, budget.headers())
        return budget

    def failed(self, source: Source, client_ip: str, now: float) -> None:
        """Count an authentication failure against the address (an IPv6 address counts for its /64)."""
        self._failures.failed(source.id, limit_key(client_ip), now)


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """An IP address, an IPv4-mapped IPv6 one as the IPv4 address it stands for; ``None`` if not one."""
    if text and text[0].isdigit() and "." in text and ":" not in text:
        # Dotted IPv4, the usual peer: the fast path (ipaddress parses it in microseconds).
        try:
            return ipaddress.IPv4Address(text)
        except ValueError:
            return None
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def limit_key(client: str) -> str:
    """What failure limits count by: the address, or for IPv6 its /64 (one host's usual share)."""
    if ":" not in client:
        return client  # IPv4 (client addresses are normalized once, when the request arrives)
    ip = parse_address(client)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return client


def _inside(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    ip = parse_address(address)
    return ip is not None and any(ip in network for network in networks)


def client_address(
    peer: str, forwarded_for: str | None, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client's address: ``X-Forwarded-For`` is believed only as far as trusted proxies reach.

    ``forwarded_for`` is every ``X-Forwarded-For`` line joined in order. Walking the list
    from the right, each hop added by a trusted proxy is skipped; the first address not in
    a trusted network is the client. An untrusted peer's header is ignored entirely, so a
    sender cannot choose its own address. Addresses are normalized (IPv4-mapped IPv6 as
    IPv4); a hop that is not an address ends the walk there.
    """
    if not trusted and ":" not in peer:
        return peer  # an IPv4 peer, nothing to normalize or to believe: the hot path
    peer_ip = parse_address(peer)
    own = str(peer_ip) if peer_ip is not None else peer
    if not trusted or forwarded_for is None or not _inside(own, trusted):
        return own
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        ip = parse_address(hop)
        if ip is None:
            return hop[:64]  # garbage a trusted proxy passed on: it matches no allow-list
        if not _inside(str(ip), trusted):
            return str(ip)
    first = parse_address(hops[0]) if hops else None
    return str(first) if first is not None else own
