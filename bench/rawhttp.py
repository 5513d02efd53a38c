"""HTTP/1.1 as bytes on sockets, for the probes: requests built once, answers parsed by hand.

A load generator written in Python is easily its own bottleneck, so the probes skip
client libraries: a request is a precomputed ``bytes``, an answer is read with asyncio
streams (or a blocking socket, from a watcher thread) and only its status line,
``content-length`` and ``connection`` header are looked at.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Answer:
    """One response: its status, its body, and whether the server keeps the connection open."""

    status: int
    body: bytes
    keep_alive: bool
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> object:
        return json.loads(self.body)


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 request with ``content-length`` (and a JSON content type when there is a body)."""
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    given = {k.lower(): v for k, v in (headers or {}).items()}
    if body and "content-type" not in given:
        given["content-type"] = "application/json"
    if method != "GET" or body:
        given["content-length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in given.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(status), headers, keep


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """Read one response from ``reader``; raises ``asyncio.IncompleteReadError`` if the server closed first."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, headers, keep = _head(head[:-4])
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Answer(status, body, keep, headers)


async def exchange(port: int, data: bytes, timeout: float) -> tuple[Answer | None, float, str]:  # noqa: ASYNC109
    """Send ``data`` on a fresh connection; (answer or None, seconds, error) within ``timeout``."""
    started = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            answer = await read_answer(reader)
    except TimeoutError:
        return None, time.perf_counter() - started, "timeout"
    except (OSError, asyncio.IncompleteReadError) as exc:
        return None, time.perf_counter() - started, type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    return answer, time.perf_counter() - started, ""


def blocking_exchange(
    port: int, data: bytes, timeout: float, source: str = "127.0.0.1"
) -> tuple[Answer | None, float, str]:
    """The same from a thread, with a plain socket, from ``source`` (any 127.0.0.0/8 address).

    A watcher thread never waits on the probe's event loop.
    """
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
            sock.sendall(data)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                sock.settimeout(max(0.001, timeout - (time.perf_counter() - started)))
                chunk = sock.recv(65536)
                if not chunk:
                    return None, time.perf_counter() - started, "closed"
                buffer += chunk
            head, _, body = buffer.partition(b"\r\n\r\n")
            status, headers, keep = _head(head)
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                sock.settimeout(max(0.001, timeout - (time.perf_counter() - started)))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        return None, time.perf_counter() - started, "timeout"
    except OSError as exc:
        return None, time.perf_counter() - started, type(exc).__name__
    return Answer(status, body, keep, headers), time.perf_counter() - started, ""


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` now, from /proc (NaN once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def pct_ms(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (seconds), in milliseconds; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] * 1000
