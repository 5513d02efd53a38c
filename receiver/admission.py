"""Admission: may this address even try? Allow-lists and failure limits first, the source's budget last.

``admit`` runs on the headers, before any body byte is read (``receiver.gate``), so a
refused address costs neither a body nor a signature check. An address over its
failure limit is not refused outright: a shared vendor egress address may be blocked
by a co-tenant's failures, so the block only refuses the checks that are expensive
(an Argon2 hash, a public-key signature not remembered); a cheap credential is still
checked and a valid one passes. The source's request budget is charged (``charge``)
only once authentication succeeded: a sender without credentials cannot spend it and
make a valid sender see 429. The client address is the one resolved from trusted
proxies (see ``client_address``), computed once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from receiver.errors import IpNotAllowedError, RateLimitedError

if TYPE_CHECKING:
    from receiver.limits import Budget
    from receiver.sources import Source
    from receiver.state import State


@dataclass(slots=True)  # per request: not frozen (see receiver.events)
class Admitted:
    """A request let in on its headers: its source, the source's budget, and the address's block if any."""

    source: Source
    budget: Budget | None
    blocked: RateLimitedError | None  # the answer to an expensive check (or a failure) while blocked


class Admission:
    """Allow-lists, failure limits and source budgets, counted in the receiver's ``State``."""

    def __init__(self, state: State, failure_limit_per_minute: int) -> None:
        self._state = state
        self._failure_limit = failure_limit_per_minute

    def admit(self, source: Source, client_ip: str, now: float) -> Admitted:
        """Raise when this address may not try at all; else what it may try (nothing spent)."""
        networks = source.settings.allowed_ips
        if networks and not _inside(client_ip, networks):
            raise IpNotAllowedError("requests from this address are not accepted for this source")
        refusal = None
        if self._failure_limit > 0:
            blocked = self._state.blocked(_failure_key(source, client_ip), self._failure_limit, now)
            if blocked is not None:
                msg = f"too many failed authentications from this address; retry in {blocked.reset} s"
                refusal = RateLimitedError(msg, blocked.reset)
        limit = source.settings.rate_limit
        budget = None if limit is None else self._state.budget(source.id, limit.requests_per_minute, now)
        return Admitted(source, budget, refusal)

    async def charge(self, source: Source, now: float) -> Budget | None:
        """Spend one request of the source's budget (an authenticated sender); raise 429 when it is spent."""
        limit = source.settings.rate_limit
        if limit is None:
            return None
        allowed, budget = await self._state.take(source.id, limit.requests_per_minute, now)
        if not allowed:
            msg = f"this source's budget of {budget.limit} requests per minute is spent; retry in {budget.reset} s"
            raise RateLimitedError(msg, budget.reset, budget.headers())
        return budget

    async def failed(self, source: Source, client_ip: str, now: float) -> None:
        """Count an authentication failure against the address (an IPv6 address counts for its /64)."""
        if self._failure_limit > 0:
            await self._state.failed(_failure_key(source, client_ip), self._failure_limit, now)


def _failure_key(source: Source, client_ip: str) -> str:
    return f"{source.id}:{limit_key(client_ip)}"


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
