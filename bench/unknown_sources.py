"""Probe: does anything grow with source names a sender makes up? Prints the receiver's RSS as they arrive.

Runs a real receiver (embedded store, audit trail on, no sources configured), then posts
``--requests`` callbacks, each to a fresh random source name, over ``--connections``
keep-alive connections, and prints the server process's resident memory every
``--step`` requests. Every answer must be 404 ``unknown_source``. It is not a test: it
prints figures and exits 1 only when the run itself went wrong.

    uv run python bench/unknown_sources.py                      # 100,000 names
    uv run python bench/unknown_sources.py --requests 20000 --step 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx2 as httpx

from tests.support.server import run_receiver


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def flood(url: str, pid: int, requests: int, connections: int, step: int) -> int:
    """Post ``requests`` callbacks to random source names; print RSS every ``step``; return wrong answers."""
    sent = wrong = 0
    lock = asyncio.Lock()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal sent, wrong
            while True:
                async with lock:
                    if sent >= requests:
                        return
                    sent += 1
                    if sent % step == 0:
                        print(f"{sent:>8} names   RSS {rss_mib(pid):7.1f} MiB", flush=True)
                answer = await client.post(f"/v1/push/{uuid.uuid4().hex[:16]}", content=b"{}")
                if answer.status_code != 404 or answer.json()["code"] != "unknown_source":
                    wrong += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--step", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "receiver.yaml"
        config.write_text(
            f"store: {{path: {Path(work) / 'events.db'}}}\nserver: {{log_level: warning}}\nsources: {{}}\n"
        )
        with run_receiver(config) as receiver:
            pid = receiver.process.pid
            print(f"load average {os.getloadavg()[0]:.2f}; receiver pid {pid}")
            print(f"{0:>8} names   RSS {rss_mib(pid):7.1f} MiB")
            started = time.monotonic()
            wrong = asyncio.run(flood(receiver.url, pid, args.requests, args.connections, args.step))
            elapsed = time.monotonic() - started
            print(
                f"{args.requests} requests in {elapsed:.1f} s; final RSS {rss_mib(pid):.1f} MiB; {wrong} wrong answers"
            )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
