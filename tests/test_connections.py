"""Slow and silent clients cost a bounded amount: header and body deadlines, a cap on connections (real server)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
from pathlib import Path

import httpx2 as httpx

from receiver.connections import OneWriteTransport
from tests.support.server import run_receiver

TOKEN = "connections-test-token"


def write_config(tmp_path: Path, **server: object) -> Path:
    config = tmp_path / "receiver.yaml"
    settings = {
        "store": {"path": str(tmp_path / "events.db")},
        "audit": {"enabled": False},
        "server": {"log_format": "json", **server},
        "sources": {
            "trk": {
                "kind": "tracker",
                "auth": [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}],
            }
        },
    }
    config.write_text(json.dumps(settings))
    return config


def read_until_closed(conn: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    conn.settimeout(within)
    received = b""
    with conn:
        while chunk := conn.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def valid(url: str) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.post(f"{url}/v1/push/trk", json={"deviceId": "d", "group": "g"}, headers=headers).status_code


def test_slowloris_headers_get_408_and_are_closed(tmp_path: Path) -> None:
    """Headers sent a byte at a time are cut off at the deadline with 408 and a JSON body (was: held forever)."""
    with run_receiver(write_config(tmp_path, header_timeout_seconds=1)) as receiver:
        slow = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(20)]
        for conn in slow:
            conn.sendall(b"POST /v1/push/trk HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert httpx.get(f"{receiver.url}/healthz").status_code == 200
        assert valid(receiver.url) == 200
        answers = [read_until_closed(conn, 5) for conn in slow]
    for answer, seconds in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(body)["code"] == "request_timeout"
        assert seconds < 3


def test_a_body_that_never_comes_gets_408(tmp_path: Path) -> None:
    """A declared body that stops halfway is answered 408 request_timeout and the connection closed (was: never)."""
    with run_receiver(write_config(tmp_path, body_timeout_seconds=1)) as receiver:
        conn = socket.create_connection(("127.0.0.1", receiver.port))
        conn.sendall(
            b"POST /v1/push/trk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"deviceId": '
        )
        answer, seconds = read_until_closed(conn, 5)
        assert valid(receiver.url) == 200
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["code"] == "request_timeout"
    assert seconds < 3


def test_idle_connections_past_the_cap_make_room(tmp_path: Path) -> None:
    """With more idle connections than the cap, idle ones are closed first: valid senders and probes still get in."""
    with run_receiver(write_config(tmp_path, max_connections=40, header_timeout_seconds=60)) as receiver:
        idle = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(80)]
        time.sleep(0.5)
        assert httpx.get(f"{receiver.url}/healthz").status_code == 200
        assert valid(receiver.url) == 200
        closed = 0
        for conn in idle:
            conn.settimeout(0.05)
            try:
                closed += conn.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
            conn.close()
    assert closed >= 40, f"only {closed} of 80 idle connections were closed under a cap of 40"


class _Recorder(asyncio.Transport):
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_response_head_and_body_go_out_in_one_write() -> None:
    """A response's head waits for its body and both leave in one write; a lone head still leaves next turn."""

    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes]]:
        loop = asyncio.get_running_loop()
        answer = _Recorder()
        one = OneWriteTransport(answer, loop)
        one.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        one.write(b"{}")
        proceed = _Recorder()
        lone = OneWriteTransport(proceed, loop)
        lone.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        held = list(proceed.writes)
        await asyncio.sleep(0)
        closing = _Recorder()
        closed = OneWriteTransport(closing, loop)
        closed.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        closed.close()
        return answer.writes, [*held, b"--next turn--", *proceed.writes], closing.writes

    answer, lone, closing = asyncio.run(scenario())
    assert answer == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert lone == [b"--next turn--", b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert closing == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"], "close sends what was held first"


def rss_mib(pid: int) -> float:
    """The process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = f"no VmRSS for process {pid}"
    raise AssertionError(msg)


def test_endless_headers_get_431_before_they_complete(tmp_path: Path) -> None:
    """Three clients streaming a header in 64 KiB chunks: 431 at once, memory and /healthz flat (was: buffered)."""
    with run_receiver(write_config(tmp_path)) as receiver:
        before = rss_mib(receiver.process.pid)
        streams = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(3)]
        chunk = b"a" * 65536
        sent = dict.fromkeys(range(3), 0)
        started = time.monotonic()
        slowest_probe = 0.0
        while time.monotonic() - started < 3 and any(sent[i] >= 0 for i in sent):
            for i, conn in enumerate(streams):
                if sent[i] < 0:
                    continue
                try:
                    conn.sendall(b"POST /v1/push/trk HTTP/1.1\r\nHost: x\r\nX-Endless: " if sent[i] == 0 else chunk)
                    sent[i] += 1
                except OSError:  # the receiver closed it
                    sent[i] = -1
            probe_started = time.monotonic()
            assert httpx.get(f"{receiver.url}/healthz", timeout=5).status_code == 200
            slowest_probe = max(slowest_probe, time.monotonic() - probe_started)
        after = rss_mib(receiver.process.pid)
        answers = []
        for conn in streams:
            with contextlib.suppress(OSError):
                answers.append(read_until_closed(conn, 5)[0])
        assert valid(receiver.url) == 200
        log = receiver.output()
    assert all(sent[i] == -1 for i in sent), f"a stream of header bytes was never cut off: {sent}"
    assert time.monotonic() - started < 10
    assert after - before < 20, f"RSS grew from {before:.0f} to {after:.0f} MiB while headers streamed"
    assert slowest_probe < 0.5, f"/healthz took {slowest_probe:.2f} s while headers streamed"
    heads = [answer.partition(b"\r\n\r\n") for answer in answers if answer]
    assert heads, "no client read the 431 before the connection closed"
    for head, _, body in heads:
        assert head.startswith(b"HTTP/1.1 431"), head
        assert json.loads(body)["code"] == "headers_too_large"
    assert '"code": "headers_too_large"' in log or '"code":"headers_too_large"' in log, "the 431 was not logged"


def test_a_header_timeout_is_logged_and_counted(tmp_path: Path) -> None:
    """The 408 for headers too slow goes through the request log and the metrics like every answer (was: neither)."""
    with run_receiver(write_config(tmp_path, header_timeout_seconds=1)) as receiver:
        conn = socket.create_connection(("127.0.0.1", receiver.port))
        conn.sendall(b"POST /v1/push/trk HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer, _ = read_until_closed(conn, 5)
        metrics = httpx.get(f"{receiver.url}/metrics").text
        log = receiver.output()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 'code="request_timeout"' in metrics, "the 408 is missing from receiver_requests_total"
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{") and "request_timeout" in line]
    assert any(line.get("status") == 408 for line in lines), "the 408 has no log line"


def test_websocket_upgrades_are_not_served(tmp_path: Path) -> None:
    """An Upgrade: websocket request never gets 101: WebSockets would bypass the edge (was: uvicorn's auto)."""
    with run_receiver(write_config(tmp_path)) as receiver:
        conn = socket.create_connection(("127.0.0.1", receiver.port))
        conn.sendall(
            b"GET /v1/push/trk HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        conn.settimeout(5)
        answer = conn.recv(65536)
        conn.close()
    assert answer.startswith(b"HTTP/1.1 "), answer
    assert not answer.startswith(b"HTTP/1.1 101"), answer
