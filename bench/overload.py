"""Probe: what senders see under overload and during a broker outage. Prints figures; asserts nothing.

Runs a real broker and a real receiver (one worker), then drives an open-loop load:
requests arrive at a fixed rate whatever the answers, each on its own connection slot,
as vendor platforms send them.

* ``overload``: first a closed-loop run measures capacity; then ``--factor`` x that rate
  for ``--seconds``. Prints the shed rate (503/429 answered in how long), p50/p99 of the
  accepted requests, ``/healthz`` latency throughout, the receiver's RSS, and checks
  every 2xx id is in Kafka exactly once.
* ``outage``: ``--rate`` requests per second; after 5 s the broker is killed for
  ``--down`` seconds, then restarted. Prints answer latency while the broker is down,
  RSS, the time from the broker answering again to the first 2xx, and the same check.

    uv run python bench/overload.py overload              # 2x capacity for 60 s
    uv run python bench/overload.py outage --rate 300 --down 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker
from tests.support.server import Receiver, run_receiver

DOMAIN = "customer47.prod-eu-north-1.iotcomms.io"
PATH = "/v1/callbacks/customer47/message"


@dataclass
class Tally:
    accepted: list[tuple[float, float, str]] = field(default_factory=list)  # (sent at, seconds, id)
    refused: list[tuple[float, float, int]] = field(default_factory=list)  # (sent at, seconds, status)
    errors: int = 0
    healthz: list[float] = field(default_factory=list)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else 0.0


def setup(work: Path, broker: Broker) -> tuple[Path, str]:
    key = rsa.generate_private_key(65537, 2048)
    (work / "public.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    token = jwt.encode({"sub": DOMAIN, "iat": now, "exp": now + 3000}, key, algorithm="RS256")
    config = work / "receiver.yaml"
    config.write_text(
        json.dumps(
            {
                "server": {"log_level": "warning", "log_format": "json", "max_header_bytes": 16384},
                "kafka": {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "topic_prefix": "probe",
                    "topics": {"create": True},
                },
                "audit": {"enabled": False},
                "sources": {
                    "customer47": {
                        "kind": "iotcomms",
                        "domain": DOMAIN,
                        "auth": [
                            {"type": "jwt", "public_keys": [str(work / "public.pem")], "max_lifetime_seconds": None}
                        ],
                    }
                },
            }
        )
    )
    return config, token


async def drive(
    url: str,
    token: str,
    rate: float,
    seconds: float,
    tally: Tally,
    *,
    during: Callable[[], Coroutine[Any, Any, float]] | None = None,
) -> None:
    """Open loop: one request every 1/rate s for ``seconds`` (or, with ``during``, until ``seconds`` after it ends).

    /healthz is timed every 100 ms throughout.
    """
    limits = httpx.Limits(max_connections=2048, max_keepalive_connections=2048)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one(n: int) -> None:
            body = {"from": "sip:a@x", "to": "sip:b@y", "contentType": "text/plain", "body": f"n{n}", "replyId": "r"}
            sent = time.monotonic()
            try:
                answer = await client.post(PATH, json=body, headers=headers)
            except httpx.HTTPError:
                tally.errors += 1
                return
            took = time.monotonic() - sent
            if answer.status_code == 200:
                tally.accepted.append((sent, took, answer.json()["id"]))
            else:
                tally.refused.append((sent, took, answer.status_code))

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as own:
                while True:
                    started = time.monotonic()
                    await own.get("/healthz")
                    tally.healthz.append(time.monotonic() - started)
                    await asyncio.sleep(0.1)

        watcher = asyncio.create_task(probe())
        side: asyncio.Task[float] | None = asyncio.create_task(during()) if during else None
        started, tasks, n = time.monotonic(), set(), 0
        stop_at = started + seconds
        while True:
            now = time.monotonic()
            if side is not None and side.done():
                stop_at, side = side.result() + seconds, None
            if now >= stop_at and side is None:
                break
            elapsed = now - started
            due = int(elapsed * rate)
            while n < due:
                task = asyncio.create_task(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        watcher.cancel()


def verify(broker: Broker, tally: Tally) -> str:
    ids = [json.loads(r.value)["id"] for r in read_topic(broker, "probe.iotcomms.message")]
    counts: dict[str, int] = {}
    for event_id in ids:
        counts[event_id] = counts.get(event_id, 0) + 1
    missing = sum(1 for _, _, i in tally.accepted if counts.get(i, 0) == 0)
    twice = sum(1 for _, _, i in tally.accepted if counts.get(i, 0) > 1)
    return (
        f"2xx ids in Kafka: {len(tally.accepted) - missing} of {len(tally.accepted)}; missing {missing}; twice {twice}"
    )


_LUA = """-- written by bench/overload.py: unique bodies, status counts, a summary line
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer @TOKEN@"
local threads = {}
count, statuses = 0, {}
function setup(thread) thread:set("tid", #threads) table.insert(threads, thread) end
function request()
  count = count + 1
  return wrk.format(nil, nil, nil, string.format(
    '{"from":"sip:a@x","to":"sip:b@y","contentType":"text/plain","body":"@RUN@-%d-%d","replyId":"r"}', tid, count))
end
function response(status) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency)
  local ok, shed, other = 0, 0, 0
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do
      if code == 200 then ok = ok + n elseif code == 503 or code == 429 then shed = shed + n else other = other + n end
    end
  end
  io.write(string.format(
    'OVERLOAD {"seconds":%.2f,"ok":%d,"shed":%d,"other":%d,"errors":%d,"p50_ms":%.1f,"p99_ms":%.1f}\\n',
    summary.duration / 1e6, ok, shed, other, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk(url: str, token: str, connections: int, seconds: float, work: Path, run: str) -> dict[str, float]:  # noqa: PLR0917
    script = work / f"{run}.lua"
    script.write_text(_LUA.replace("@TOKEN@", token).replace("@RUN@", run))
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url + PATH]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("OVERLOAD ")), None)
    if line is None:
        msg = f"wrk failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        raise RuntimeError(msg)
    summary: dict[str, float] = json.loads(line.removeprefix("OVERLOAD "))
    return summary


def server_p99(url: str) -> float:
    """The p99 bucket bound (ms) of the receiver's own latency for the source: shed answers are not in it."""
    buckets: list[tuple[float, float]] = []
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("receiver_request_duration_seconds_bucket{") and 'source="customer47"' in line:
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0
    return next((bound * 1000 for bound, count in buckets if count >= 0.99 * total), float("nan"))


def overload(  # noqa: PLR0917
    receiver: Receiver, broker: Broker, token: str, factor: float, seconds: float, work: Path
) -> None:
    warm = wrk(receiver.url, token, 32, 5, work, "warm")
    capacity_connections = int(32 * factor * 8)  # closed loop: past max_in_flight in flight, the rest is shed
    print(f"capacity at 32 connections: {warm['ok'] / warm['seconds']:.0f} accepted/s, p99 {warm['p99_ms']:.1f} ms")
    print(f"overload: {capacity_connections} connections for {seconds:g} s (max_in_flight 256)")
    healthz: list[float] = []
    rss_before = rss_mib(receiver.process.pid)

    async def probe(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=receiver.url, timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                await client.get("/healthz")
                healthz.append(time.monotonic() - started)
                await asyncio.sleep(0.1)

    async def run() -> dict[str, float]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(probe(stop))
        result = await asyncio.to_thread(wrk, receiver.url, token, capacity_connections, seconds, work, "overload")
        stop.set()
        await watcher
        return result

    result = asyncio.run(run())
    took = result["seconds"]
    print(
        f"accepted {result['ok'] / took:.0f}/s, shed {result['shed'] / took:.0f}/s (503/429), other "
        f"{result['other']:.0f}, socket errors {result['errors']:.0f}; all answers p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms; accepted p99 (server side) <= {server_p99(receiver.url):.0f} ms\n"
        f"/healthz p50 {pct(healthz, 50):.1f} ms, max {pct(healthz, 100):.1f} ms; "
        f"RSS {rss_before:.0f} -> {rss_mib(receiver.process.pid):.0f} MiB"
    )
    records = [json.loads(r.value)["id"] for r in read_topic(broker, "probe.iotcomms.message")]
    accepted = warm["ok"] + result["ok"]
    distinct = len(set(records))
    print(f"Kafka: {distinct} distinct ids for {accepted:.0f} 2xx answers; {len(records) - distinct} written twice")


def outage(receiver: Receiver, broker: Broker, token: str, rate: float, down: float) -> None:
    marks: dict[str, float] = {}
    peak = [0.0]

    async def fault() -> float:
        await asyncio.sleep(5)
        if broker.process is None:
            msg = "the broker is not running"
            raise RuntimeError(msg)
        broker.process.kill()
        broker.process.wait()
        marks["killed"] = time.monotonic()
        until = time.monotonic() + down
        while time.monotonic() < until:
            peak[0] = max(peak[0], rss_mib(receiver.process.pid))
            await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.start)
        marks["back"] = time.monotonic()
        return marks["back"]

    tally = Tally()
    rss_before = rss_mib(receiver.process.pid)
    asyncio.run(drive(receiver.url, token, rate, 10, tally, during=fault))
    during = [r for r in tally.refused if marks["killed"] + 3 < r[0] < marks["back"]]
    first_ok = min((a[0] + a[1] for a in tally.accepted if a[0] > marks["back"]), default=float("nan"))
    print(
        f"{rate:g}/s; broker down {down:g} s. While down (after the first 3 s): {len(during)} answers, "
        f"p50 {pct([r[1] for r in during], 50):.1f} ms, p99 {pct([r[1] for r in during], 99):.1f} ms, "
        f"max {pct([r[1] for r in during], 100):.1f} ms, statuses {sorted({r[2] for r in during})}\n"
        f"RSS {rss_before:.0f} MiB before, peak {peak[0]:.0f} MiB while down; "
        f"first 2xx {first_ok - marks['back']:.2f} s after the broker was serving again; "
        f"/healthz max {pct(tally.healthz, 100):.1f} ms"
    )
    print(verify(broker, tally))
    after_outage(tally, marks["back"])


def after_outage(tally: Tally, back: float) -> None:
    late = sorted({r[2] for r in tally.refused if r[0] > back})
    accepted = sum(1 for a in tally.accepted if a[0] > back)
    print(f"answers after the broker was back: {accepted} 2xx, other statuses {late}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", choices=["overload", "outage"])
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--down", type=float, default=15.0)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as work:
        broker = Broker(workdir=Path(work) / "kafka").start()
        try:
            config, token = setup(Path(work), broker)
            with run_receiver(config) as receiver:
                if args.mode == "overload":
                    overload(receiver, broker, token, args.factor, args.seconds, Path(work))
                else:
                    outage(receiver, broker, token, args.rate, args.down)
        finally:
            broker.cleanup()
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
