"""Probe: what one attacker on 127.0.0.1 costs a valid sender. Prints figures; asserts nothing.

Each scenario gets a fresh receiver (one worker, embedded store, audit on, default
limits: ``max_in_flight`` 256, ``failure_limit_per_minute`` 60, body deadline 15 s)
with three sources: ``iot`` (iotcomms, RS256 JWT), ``beam`` (Soracom, Beam signature)
and ``trk`` (tracker, static bearer token). While the attack runs, watcher threads
probe ``/healthz`` every 50 ms, sample the receiver's RSS every 50 ms and send one
valid iotcomms delivery a second from 127.0.0.2 (a Beam one from the attacker's own
127.0.0.1 for the co-tenant flood), each on a new connection. Every scenario ends by itself.

* ``slow-bodies``: 300 connections (more than ``max_in_flight``) send a POST with
  ``Content-Length: 100`` and one byte, half to ``/v1/callbacks/nosuchsource/x``, half
  to the iotcomms source without credentials, and hold it; one answered or closed is
  opened again a second later.
* ``endless-headers``: 3 clients stream one header value in 64 KiB chunks; one the
  server closes reconnects and starts again.
* ``batch-tracker``: one authenticated tracker push of 30,000 small items (~1 MiB).
* ``batch-newcall``: one authenticated iotcomms ``newCall`` of 40,001 ``{}`` items.
* ``co-tenant``: 100 Beam requests signed with another customer's key from 127.0.0.1,
  then the victim's correctly signed ones.

    uv run python bench/attacks.py                     # every scenario, 8 s each
    uv run python bench/attacks.py --only slow-bodies --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from rawhttp import exchange, read_answer, request_bytes
from watch import Watch, code_of

from tests.support.server import run_receiver

DOMAIN = "customer47.prod-eu-north-1.iotcomms.io"
BEARER = "attack-probe-tracker-token-0123456789"
VICTIM_KEY = "attack-probe-victim-beam-psk"
OTHER_KEY = "attack-probe-co-tenant-beam-psk"
VICTIM_IMSI = "295050910000001"


@dataclass(frozen=True)
class World:
    """What a scenario needs: the receiver's port and how to build valid requests."""

    port: int
    token: str
    seconds: float

    def valid_iotcomms(self, n: int) -> bytes:
        body = {"from": "sip:a@x", "to": "sip:b@y", "contentType": "text/plain", "body": f"valid-{n}", "replyId": "r"}
        headers = {"authorization": f"Bearer {self.token}"}
        return request_bytes("POST", "/v1/callbacks/iot/message", json.dumps(body).encode(), headers)


def beam_request(key: str, imsi: str, n: int) -> bytes:
    """A Beam delivery for ``imsi`` signed with ``key`` (the signature covers the identity and the timestamp)."""
    stamp = str(int(time.time() * 1000))
    signature = hashlib.sha256(f"{key}x-soracom-imsi={imsi}x-soracom-timestamp={stamp}".encode()).hexdigest()
    headers = {
        "x-soracom-imsi": imsi,
        "x-soracom-timestamp": stamp,
        "x-soracom-signature-version": "20151001",
        "x-soracom-signature": signature,
    }
    return request_bytes("POST", "/v1/push/beam/beam", json.dumps({"temp": 21.0, "n": n}).encode(), headers)


def write_config(work: Path) -> tuple[Path, str]:
    key = rsa.generate_private_key(65537, 2048)
    (work / "public.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    token = jwt.encode({"sub": DOMAIN, "iat": now, "exp": now + 3000}, key, algorithm="RS256")
    public, digest = work / "public.pem", hashlib.sha256(BEARER.encode()).hexdigest()
    config = {
        "server": {"log_level": "warning", "log_format": "json"},
        "store": {"path": str(work / "events.db")},
        "sources": {
            "iot": {"kind": "iotcomms", "domain": DOMAIN, "auth": [{"type": "jwt", "public_keys": [str(public)]}]},
            "beam": {"kind": "soracom", "auth": [{"type": "soracom_beam", "keys": [{"value": VICTIM_KEY}]}]},
            "trk": {"kind": "tracker", "auth": [{"type": "bearer", "tokens": [{"sha256": digest}]}]},
        },
    }  # fmt: skip
    path = work / "receiver.yaml"
    path.write_text(json.dumps(config))
    return path, token


# The attacks: each runs for about world.seconds (or until its answer) and returns a note.


async def slow_bodies(world: World, connections: int = 300) -> str:
    statuses: Counter[str] = Counter()
    opened = 0
    deadline = time.monotonic() + world.seconds

    async def hold(i: int) -> None:
        nonlocal opened
        path = "/v1/callbacks/nosuchsource/x" if i % 2 == 0 else "/v1/callbacks/iot/message"
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        head += "content-length: 100\r\n\r\n{"  # one byte of the hundred
        while (left := deadline - time.monotonic()) > 0:
            opened += 1
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(left):
                    reader, writer = await asyncio.open_connection("127.0.0.1", world.port)
                    writer.write(head.encode())
                    answer = await read_answer(reader)
                    statuses[f"{answer.status} {code_of(answer)}"] += 1
            except TimeoutError:
                return  # still held at the end: the attack worked for its whole length
            except (OSError, asyncio.IncompleteReadError) as exc:
                statuses[type(exc).__name__] += 1
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    await asyncio.gather(*(hold(i) for i in range(connections)))
    answered = ", ".join(f"{k} x{v}" for k, v in statuses.most_common(4)) or "none"
    return f"{connections} held, {opened} opened in all; attackers' answers: {answered}"


async def endless_headers(world: World, clients: int = 3) -> str:
    statuses: Counter[str] = Counter()
    sent = connections = 0
    chunk = b"a" * 65536
    deadline = time.monotonic() + world.seconds

    async def stream() -> None:
        nonlocal sent, connections
        while time.monotonic() < deadline:
            connections += 1
            reader, writer = await asyncio.open_connection("127.0.0.1", world.port)
            try:
                writer.write(b"POST /v1/callbacks/iot/message HTTP/1.1\r\nhost: 127.0.0.1\r\nx-endless: ")
                while time.monotonic() < deadline:
                    writer.write(chunk)
                    async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                        await writer.drain()
                    sent += len(chunk)
                statuses["still streaming at the end"] += 1
            except TimeoutError:
                statuses["still streaming at the end"] += 1  # the drain outlived the attack
            except OSError:
                try:
                    async with asyncio.timeout(1):
                        answer = await read_answer(reader)
                    statuses[f"{answer.status} {code_of(answer)}"] += 1
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                    statuses["closed without an answer"] += 1
            finally:
                writer.close()

    await asyncio.gather(*(stream() for _ in range(clients)))
    seen = ", ".join(f"{k} x{v}" for k, v in statuses.most_common(4))
    return f"{clients} clients, {connections} connections, {sent / 2**20:.0f} MiB of header sent; {seen}"


async def one_batch(world: World, path: str, body: bytes, headers: dict[str, str]) -> str:
    await asyncio.sleep(0.5)  # the watchers' baseline first
    answer, seconds, error = await exchange(world.port, request_bytes("POST", path, body, headers), 120)
    status = f"{answer.status} {code_of(answer)}".strip() if answer else error
    return f"{len(body) / 1024:.0f} KiB body answered {status} in {seconds * 1000:.0f} ms"


async def batch_tracker(world: World) -> str:
    items = ",".join(f'{{"deviceId":"d{i:05d}","group":"g"}}' for i in range(30_000))
    return await one_batch(world, "/v1/push/trk/push", f"[{items}]".encode(), {"authorization": f"Bearer {BEARER}"})


async def batch_newcall(world: World) -> str:
    body = ("[" + ",".join(["{}"] * 40_001) + "]").encode()
    return await one_batch(world, "/v1/callbacks/iot/newCall", body, {"authorization": f"Bearer {world.token}"})


async def co_tenant(world: World, failures: int = 100) -> str:
    statuses: Counter[str] = Counter()
    gate = asyncio.Semaphore(10)

    async def forged(n: int) -> None:
        async with gate:
            answer, _, error = await exchange(world.port, beam_request(OTHER_KEY, "295050910000999", n), 10)
            statuses[f"{answer.status} {code_of(answer)}" if answer else error] += 1

    await asyncio.gather(*(forged(n) for n in range(failures)))
    return f"{failures} forged first: " + ", ".join(f"{k} x{v}" for k, v in statuses.most_common(3))


Attack = Callable[[World], Coroutine[Any, Any, str]]
SCENARIOS: dict[str, Attack] = {
    "slow-bodies": slow_bodies,
    "endless-headers": endless_headers,
    "batch-tracker": batch_tracker,
    "batch-newcall": batch_newcall,
    "co-tenant": co_tenant,
}


@dataclass(frozen=True)
class Row:
    name: str
    watch: Watch
    note: str


def run_scenario(name: str, attack: Attack, config: Path, token: str, seconds: float) -> Row:
    with run_receiver(config, log=config.parent / f"{name}.log") as receiver:
        world = World(receiver.port, token, seconds)
        counter = itertools.count()
        # Warm: the JWT is verified once and cached, as it is for a sender that keeps its token.
        asyncio.run(exchange(receiver.port, world.valid_iotcomms(next(counter)), 10))
        beam = name == "co-tenant"
        victim: Callable[[], bytes] = (
            (lambda: beam_request(VICTIM_KEY, VICTIM_IMSI, next(counter)))
            if beam
            else (lambda: world.valid_iotcomms(next(counter)))
        )
        # The co-tenant shares the victim's address; every other attacker has an address of its own.
        sender = "127.0.0.1" if beam else "127.0.0.2"
        watch = Watch(
            receiver.port,
            receiver.process.pid,
            deliver=victim,
            deliver_after=None if beam else 1.0,
            deliver_from=sender,
        )
        with watch:
            time.sleep(0.3)
            note = uvloop.run(attack(world))
            if beam:  # the victim sends once the flood is over, for the rest of the scenario's time
                watch.begin_deliveries()
                time.sleep(seconds)
            time.sleep(0.5)
    print(f"\n== {name}: {note}\n   {watch.healthz_summary()}\n   {watch.deliveries_summary()}", flush=True)
    print(
        f"   RSS before {watch.rss_before:.0f} MiB, peak {watch.rss_peak:.0f} MiB, after {watch.rss_after:.0f} MiB",
        flush=True,
    )
    return Row(name, watch, note)


def table(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<16} {'RSS MiB before/peak/after':>25} {'healthz max ms':>14} {'>200ms':>6} {'failed':>6}"
        "  valid deliveries"
    )
    lines = [head, "-" * (len(head) + 24)]
    for row in rows:
        w = row.watch
        ok = sum(1 for d in w.deliveries if 200 <= d.status < 300)
        first = w.deliveries[0] if w.deliveries else None
        valid = (
            f"{ok}/{len(w.deliveries)} 2xx, first {first.status} {first.code} in {first.seconds * 1000:.0f} ms, "
            f"max {max(d.seconds for d in w.deliveries) * 1000:.0f} ms".replace("  ", " ")
            if first
            else "none sent"
        )
        rss = f"{w.rss_before:.0f}/{w.rss_peak:.0f}/{w.rss_after:.0f}"
        healthz_max = max(w.healthz, default=0.0) * 1000
        slow = sum(1 for s in w.healthz if s > 0.2)
        failed = w.healthz_failed
        lines.append(f"{row.name:<16} {rss:>25} {healthz_max:>14.0f} {slow:>6} {failed:>6}  {valid}")
    lines += ["", *(f"{row.name}: {row.note}" for row in rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", action="append", help="a scenario, or a prefix (batch); repeatable")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each timed attack lasts")
    args = parser.parse_args(argv)
    chosen = [n for n in SCENARIOS if not args.only or any(n.startswith(o) for o in args.only)]
    if not chosen:
        parser.error(f"--only: choose from {', '.join(SCENARIOS)}")
    print(f"load average {os.getloadavg()[0]:.2f}; scenarios: {', '.join(chosen)}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        config, token = write_config(Path(work))
        rows = [run_scenario(name, SCENARIOS[name], config, token, args.seconds) for name in chosen]
    print(f"\n{table(rows)}\nload average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
