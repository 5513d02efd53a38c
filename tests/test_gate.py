"""The edge's order on a running server: admission on the headers, slots for whole bodies, time rules at body end.

Raw sockets hold bodies back, as a slow or hostile sender would; a valid delivery sent
meanwhile must still be answered 2xx, and refusals must come at once (seconds of margin).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.app import create_app
from receiver.connections import ARRIVED
from receiver.settings import build_settings
from tests.support.server import Receiver, run_receiver

TOKEN = "gate-test-token"
ADMIN = "gate-dry-run-admin-token"
BEAM_KEY = "gate-test-beam-psk"
CO_TENANT_KEY = "another-customers-beam-psk"
BEAM_WINDOW = 3  # seconds: the source's replay_window_seconds
TRACKER_BODY = json.dumps({"deviceId": "d", "group": "g"}).encode()


def write_config(tmp_path: Path, **server: object) -> Path:
    config = tmp_path / "receiver.yaml"
    bearer = [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}]
    beam = [{"type": "soracom_beam", "keys": [{"value": BEAM_KEY}], "replay_window_seconds": BEAM_WINDOW}]
    settings = {
        "store": {"path": str(tmp_path / "events.db")},
        "audit": {"enabled": False},
        "server": {"log_format": "json", **server},
        "dry_run": {"enabled": True, "token_sha256": hashlib.sha256(ADMIN.encode()).hexdigest()},
        "sources": {"trk": {"kind": "tracker", "auth": bearer}, "beam": {"kind": "soracom", "auth": beam}},
    }
    config.write_text(json.dumps(settings))
    return config


def beam_headers(*, signed_ago: float = 0.0, key: str = BEAM_KEY, imsi: str = "295050910000001") -> dict[str, str]:
    stamp = str(int((time.time() - signed_ago) * 1000))
    signature = hashlib.sha256(f"{key}x-soracom-imsi={imsi}x-soracom-timestamp={stamp}".encode()).hexdigest()
    return {
        "Content-Type": "application/json",
        "x-soracom-imsi": imsi,
        "x-soracom-timestamp": stamp,
        "x-soracom-signature-version": "20151001",
        "x-soracom-signature": signature,
    }


def start(
    receiver: Receiver, path: str, headers: dict[str, str], body: bytes, *, declared: int, source: str = "127.0.0.1"
) -> socket.socket:
    """A POST whose headers declare ``declared`` body bytes, of which only ``body`` is sent (for now)."""
    conn = socket.create_connection(("127.0.0.1", receiver.port), source_address=(source, 0))
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{lines}Content-Length: {declared}\r\n\r\n"
    conn.sendall(head.encode() + body)
    return conn


def answer(conn: socket.socket, within: float) -> tuple[int, dict[str, Any], dict[str, str], float]:
    """The status, JSON body, headers of the first response, and how long it took to come."""
    started = time.monotonic()
    conn.settimeout(within)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        assert chunk, f"closed without an answer: {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    while len(rest) < int(headers.get("content-length", "0")):
        chunk = conn.recv(65536)
        assert chunk, "closed in the middle of the answer"
        rest += chunk
    return int(status_line.split()[1]), json.loads(rest) if rest else {}, headers, time.monotonic() - started


def closed_within(conn: socket.socket, within: float) -> bool:
    """Does the server close the connection within ``within`` seconds (and send nothing more)?"""
    conn.settimeout(within)
    with conn:
        try:
            return conn.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def valid(receiver: Receiver) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    return httpx.post(f"{receiver.url}/v1/push/trk", content=TRACKER_BODY, headers=headers).status_code


def test_slow_bodies_to_an_unknown_source_are_refused_on_their_headers(tmp_path: Path) -> None:
    """Why 1: five one-byte bodies to no source get 404 at once, take no slot; a valid delivery gets 200 (was: 503)."""
    with run_receiver(write_config(tmp_path, max_in_flight=4)) as receiver:
        slow = [start(receiver, "/v1/callbacks/nosuchsource/x", {}, b"{", declared=100) for _ in range(5)]
        assert valid(receiver) == 200
        answers = [answer(conn, 5) for conn in slow]
        closed = [closed_within(conn, 2) for conn in slow]
    for status, body, _, seconds in answers:
        assert (status, body["code"]) == (404, "unknown_source")
        assert seconds < 2
    assert all(closed), "a refused request's connection stayed open for the rest of its body"


def test_bodies_still_arriving_take_no_delivery_slot(tmp_path: Path) -> None:
    """Held-back bodies to a real source count as reading, not in flight: a valid delivery still gets 200."""
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with run_receiver(write_config(tmp_path, max_in_flight=4)) as receiver:
        slow = [start(receiver, "/v1/push/trk", auth, b"{", declared=100) for _ in range(8)]
        time.sleep(0.3)  # let the server see every one of them start its body
        assert valid(receiver) == 200
        assert httpx.get(f"{receiver.url}/healthz").status_code == 200
        for conn in slow:
            conn.close()


def test_one_address_holds_at_most_its_share_of_reading_slots(tmp_path: Path) -> None:
    """Past max_reading_per_address, that address's next body is refused 503 at once; another address gets in."""
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with run_receiver(write_config(tmp_path, max_reading_per_address=2)) as receiver:
        held = [start(receiver, "/v1/push/trk", auth, b"{", declared=100) for _ in range(2)]
        time.sleep(0.3)  # both are reading now
        over = start(receiver, "/v1/push/trk", auth, b"{", declared=100)
        status, body, headers, seconds = answer(over, 5)
        other = start(receiver, "/v1/push/trk", auth, TRACKER_BODY, declared=len(TRACKER_BODY), source="127.0.0.2")
        other_status = answer(other, 5)[0]
        assert httpx.get(f"{receiver.url}/healthz").status_code == 200
        for conn in [*held, over, other]:
            conn.close()
    assert (status, body["code"]) == (503, "overloaded")
    assert headers["retry-after"] == "1"
    assert seconds < 2
    assert other_status == 200


def test_a_held_back_body_does_not_stretch_the_signature_window(tmp_path: Path) -> None:
    """Why 3: a Beam signature inside its window when the headers came, outside it when the body did: 401 (was: 200)."""
    body = json.dumps({"temp": 21.0}).encode()
    with run_receiver(write_config(tmp_path)) as receiver:
        with start(receiver, "/v1/push/beam/beam", beam_headers(signed_ago=1), body, declared=len(body)) as fresh:
            assert answer(fresh, 5)[0] == 200  # the same age, the body at once: inside the window
        held = start(receiver, "/v1/push/beam/beam", beam_headers(signed_ago=1), body[:3], declared=len(body))
        time.sleep(BEAM_WINDOW)  # the signature is now 1 s + the window old
        held.sendall(body[3:])
        status, answer_body, _, _ = answer(held, 5)
        held.close()
    assert (status, answer_body["code"]) == (401, "signature_expired")


def test_a_co_tenant_cannot_lock_a_valid_beam_sender_out(tmp_path: Path) -> None:
    """Why 7: five deliveries signed with another customer's key from the address, then the victim's: 200 (was: 429)."""
    body = json.dumps({"temp": 21.0}).encode()
    with run_receiver(write_config(tmp_path, failure_limit_per_minute=4)) as receiver:
        url = f"{receiver.url}/v1/push/beam/beam"
        for _ in range(5):
            forged = httpx.post(url, content=body, headers=beam_headers(key=CO_TENANT_KEY))
            assert forged.status_code == 401, forged.text
        victim = httpx.post(url, content=body, headers=beam_headers())
    assert victim.status_code == 200, victim.text


def test_dry_run_token_guesses_count_against_the_address(tmp_path: Path) -> None:
    """Wrong admin tokens are failures of the address: past the limit, 429 with Retry-After (was: 401 forever)."""
    with run_receiver(write_config(tmp_path, failure_limit_per_minute=3)) as receiver:
        url = f"{receiver.url}/v1/dry-run/trk/push"
        guesses = [httpx.post(url, content=TRACKER_BODY, headers={"X-Dry-Run-Token": f"guess-{n}"}) for n in range(5)]
    assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
    assert guesses[-1].json()["code"] == "rate_limited"
    assert "retry-after" in guesses[-1].headers


class Waited:
    """Stamps each request as having arrived ``seconds`` ago, as ``receiver.connections`` stamps a late one."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[ARRIVED] = asyncio.get_running_loop().time() - self.seconds
        await self.app(scope, receive, send)


@pytest.fixture
def late_client(tmp_path: Path) -> Iterator[TestClient]:
    bearer = [{"type": "bearer", "tokens": [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}]
    settings = build_settings(
        {
            "store": {"path": str(tmp_path / "events.db")},
            "audit": {"enabled": False},
            "server": {"max_wait_ms": 500},
            "sources": {"trk": {"kind": "tracker", "auth": bearer}},
        },
        environ=False,
    )
    with TestClient(Waited(create_app(settings), 2.0)) as client:
        yield client


def test_a_delivery_that_waited_too_long_is_shed_at_once(late_client: TestClient) -> None:
    """Past server.max_wait_ms between its headers and the app, a delivery gets 503 overloaded; probes do not."""
    shed = late_client.post("/v1/push/trk", content=TRACKER_BODY, headers={"Authorization": f"Bearer {TOKEN}"})
    assert (shed.status_code, shed.json()["code"]) == (503, "overloaded")
    assert shed.headers["retry-after"] == "1"
    assert late_client.get("/healthz").status_code == 200
    assert late_client.get("/readyz").status_code == 200
    assert "receiver_shed_total 1.0" in late_client.get("/metrics").text


def funnel_body(imsi: str) -> bytes:
    envelope = {"operatorId": "OP0012345678", "payloads": {"temp": 21.5}, "timestamp": 1653891795421, "imsi": imsi}
    return json.dumps(envelope).encode()


def test_a_beam_signature_vouches_for_its_own_sim_only(tmp_path: Path) -> None:
    """A Funnel body naming another SIM than the Beam-signed one is 403 (was: published as the victim's event)."""
    with run_receiver(write_config(tmp_path)) as receiver:
        url = f"{receiver.url}/v1/callbacks/beam/funnel"
        forged = httpx.post(url, content=funnel_body("295050919999999"), headers=beam_headers())
        own = httpx.post(url, content=funnel_body("295050910000001"), headers=beam_headers())
    assert forged.status_code == 403, forged.text
    assert forged.json()["code"] == "forbidden"
    assert own.status_code == 200, own.text
