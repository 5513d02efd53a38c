"""Admission: may this address even try? Allow-lists, the source's budget, failure limits.

Runs before authentication, so a refused address costs no signature check. The
client address is the one resolved from trusted proxies (see ``client_address``).
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
        """Raise when the request may not proceed; else the source's budget state, if it has one."""
        networks = source.settings.allowed_ips
        if networks and not _inside(client_ip, networks):
            raise IpNotAllowedError("requests from this address are not accepted for this source")
        blocked = self._failures.blocked(source.id, client_ip, now)
        if blocked is not None:
            msg = f"too many failed authentications from this address; retry in {blocked.reset} s"
            raise RateLimitedError(msg, blocked.reset)
        window = self._windows.get(source.id)
        if window is None:
            return None
        allowed, budget = window.take(now)
        if not allowed:
            msg = f"this source's budget of {budget.limit} requests per minute is spent; retry in {budget.reset} s"
            raise RateLimitedError(msg, budget.reset, budget.headers())
        return budget

    def failed(self, source: Source, client_ip: str, now: float) -> None:
        """Count an authentication failure against the address."""
        self._failures.failed(source.id, client_ip, now)


def _inside(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(
    peer: str, forwarded_for: str | None, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client's address: ``X-Forwarded-For`` is believed only as far as trusted proxies reach.

    Walking the list from the right, each hop added by a trusted proxy is skipped; the
    first address not in a trusted network is the client. An untrusted peer's header is
    ignored entirely, so a sender cannot choose its own address.
    """
    if not trusted or forwarded_for is None or not _inside(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _inside(hop, trusted):
            return hop
    return hops[0] if hops else peer
