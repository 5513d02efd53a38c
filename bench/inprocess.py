"""Probe: the receiver's own CPU per delivery, in process: no network, no broker, no load generator.

Drives the ASGI app directly (the lifespan running, one cached RS256 JWT, a valid iotcomms
/message body, audit and metrics on) with a publisher that acknowledges at once, and
prints the median over ``--rounds`` rounds of CPU microseconds per request. What it
leaves out (socket I/O, uvicorn's parsing, aiokafka's sender) the full benchmark
(``bench/run.py``) measures; this one is steady enough to compare two versions of the
request path. It asserts nothing.

    uv run python bench/inprocess.py --requests 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver.app import create_app
from receiver.events import Record
from receiver.settings import build_settings

DOMAIN = "customer47.prod-eu-north-1.iotcomms.io"
BODY = json.dumps({
    "from": "sip:door@customer47.prod-eu-north-1.iotcomms.io", "to": "sip:desk@example.com",
    "contentType": "text/plain", "body": "door opened", "replyId": "r-81f2",
}).encode()  # fmt: skip


class AckAtOnce:
    """A publisher whose broker acknowledges everything at once."""

    name = "ack-at-once"

    async def publish(self, records: Sequence[Record]) -> None:
        del records

    async def check(self) -> str | None:
        return None


async def drive(app: Any, token: str, requests: int) -> tuple[float, float]:
    """CPU microseconds per request over ``requests`` deliveries, and the median wall time of one."""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    walls: list[float] = []
    started = time.process_time()
    for _ in range(requests):
        began = time.perf_counter()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/callbacks/customer47/message", "raw_path": b"/v1/callbacks/customer47/message",
            "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080), "state": {},
        }  # fmt: skip
        await app(scope, receive, send)
        walls.append(time.perf_counter() - began)
    took = time.process_time() - started
    if set(statuses) != {200}:
        msg = f"unexpected answers: {sorted(set(statuses))}"
        raise RuntimeError(msg)
    return took / requests * 1e6, statistics.median(walls) * 1e6


async def measure(
    requests: int, rounds: int, *, state_url: str | None, rate_limit: int | None, audit: bool = True
) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory() as work:
        key = rsa.generate_private_key(65537, 2048)
        public = Path(work) / "public.pem"
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        now = int(time.time())
        token = jwt.encode({"sub": DOMAIN, "iat": now, "exp": now + 3000}, key, algorithm="RS256")
        source: dict[str, Any] = {
            "kind": "iotcomms",
            "domain": DOMAIN,
            "auth": [{"type": "jwt", "public_keys": [str(public)], "max_lifetime_seconds": None}],
        }
        if rate_limit is not None:
            source["rate_limit"] = {"requests_per_minute": rate_limit}
        config: dict[str, Any] = {
            "server": {"log_level": "warning"},
            "audit": {"enabled": audit},
            "sources": {"customer47": source},
        }
        if state_url is not None:
            config["state"] = {"url": state_url, "key_prefix": f"bench{os.getpid()}:"}
        settings = build_settings(config, environ=False)
        app = create_app(settings, publisher=AckAtOnce())
        figures = []
        async with app.router.lifespan_context(app) as state:

            async def stateful(scope: Any, receive: Any, send: Any) -> None:
                scope["state"] = dict(state or {})
                await app(scope, receive, send)

            await drive(stateful, token, min(requests, 2000))  # warm-up: caches, JIT-less but allocator warm
            figures.extend([await drive(stateful, token, requests) for _ in range(rounds)])
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--state-url", help="shared state in this Redis (redis://127.0.0.1:6379/0); default: in process"
    )
    parser.add_argument("--rate-limit", type=int, help="give the source a budget (one state round trip per request)")
    parser.add_argument("--no-audit", action="store_true", help="turn the audit trail off")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}")
    figures = asyncio.run(
        measure(
            args.requests, args.rounds, state_url=args.state_url, rate_limit=args.rate_limit, audit=not args.no_audit
        )
    )
    cpu = [f[0] for f in figures]
    rounds = ", ".join(f"{f:.1f}" for f in cpu)
    wall = statistics.median(f[1] for f in figures)
    median = statistics.median(cpu)
    print(f"CPU per delivery, in process: median {median:.1f} us (rounds: {rounds}); wall p50 {wall:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
