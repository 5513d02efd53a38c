"""The event loop never stalls on what arrives: slow checks leave it, aborted bodies are the client's (real server)."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
from pathlib import Path

import httpx2 as httpx

from receiver.auth.basic import hash_password
from tests.support.server import Receiver, run_receiver

PASSWORD = "the-right-password"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "receiver.yaml"
    config.write_text(
        f"""
store: {{path: {tmp_path / "events.db"}}}
audit: {{enabled: false}}
server: {{failure_limit_per_minute: 0, log_format: json}}
sources:
  trk:
    kind: tracker
    auth:
      - type: basic
        username: pusher
        password_hash: '{hash_password(PASSWORD)}'
"""
    )
    return config


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"pusher:{password}".encode()).decode()}


async def healthz_while_wrong_passwords(url: str, wrong: int) -> tuple[float, list[int]]:
    """The slowest /healthz answer while ``wrong`` wrong-password requests are checked at once."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"deviceId": "d", "group": "g"}
        floods = [
            asyncio.create_task(client.post("/v1/push/trk", json=body, headers=basic(f"wrong-{n}")))
            for n in range(wrong)
        ]
        slowest = 0.0
        while not all(f.done() for f in floods):
            started = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.01)
        return slowest, [(await f).status_code for f in floods]


def test_wrong_passwords_do_not_stall_the_loop(tmp_path: Path) -> None:
    """Sixteen concurrent wrong Basic passwords (Argon2) leave /healthz fast (was: stalled for all of them, ~1.3 s)."""
    with run_receiver(write_config(tmp_path)) as receiver:
        slowest, statuses = asyncio.run(healthz_while_wrong_passwords(receiver.url, 16))
        right = httpx.post(f"{receiver.url}/v1/push/trk", json={"deviceId": "d", "group": "g"}, headers=basic(PASSWORD))
    print(f"slowest /healthz during 16 Argon2 failures: {slowest * 1000:.1f} ms")
    assert statuses == [401] * 16
    assert right.status_code == 200
    assert slowest < 0.3, f"/healthz took {slowest:.3f} s while passwords were checked"


def abort_mid_body(receiver: Receiver) -> None:
    """Send half of a declared body, then close the connection."""
    with socket.create_connection(("127.0.0.1", receiver.port)) as conn:
        head = (
            "POST /v1/push/trk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: {basic(PASSWORD)['Authorization']}\r\nContent-Length: 1000\r\n\r\n"
        )
        conn.sendall(head.encode() + b'{"deviceId": "d", ')
        time.sleep(0.2)


def test_client_abort_is_the_clients_not_a_5xx(tmp_path: Path) -> None:
    """A client that closes mid-body is counted as client_closed, with no traceback and no 5xx (was: 500)."""
    with run_receiver(write_config(tmp_path)) as receiver:
        for _ in range(3):
            abort_mid_body(receiver)
        deadline = time.monotonic() + 10
        metrics = ""
        while time.monotonic() < deadline and 'code="client_closed"' not in metrics:
            time.sleep(0.1)
            metrics = httpx.get(f"{receiver.url}/metrics").text
        log = receiver.output()
    counted = re.findall(r'receiver_requests_total\{[^}]*code="client_closed"[^}]*status="(\d+)"\} (\S+)', metrics)
    assert counted == [("499", "3.0")], metrics
    assert 'status="500"' not in metrics
    assert "Traceback" not in log
    assert "internal_error" not in log
