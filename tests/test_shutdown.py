"""Graceful shutdown: SIGTERM under load loses no acknowledged event (real server, real broker)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import DOMAIN, KeyPair, claims, message_body
from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker
from tests.support.server import run_receiver

pytestmark = pytest.mark.kafka


async def drive(port: int, token: str, stop_after: float) -> tuple[list[str], int, int]:
    """Post callbacks from 8 concurrent senders until the server stops answering."""
    accepted: list[str] = []
    refused = 0
    failed = 0
    deadline = time.monotonic() + stop_after

    async def sender(n: int, client: httpx.AsyncClient) -> None:
        nonlocal refused, failed
        i = 0
        while time.monotonic() < deadline:
            i += 1
            body = message_body(body=f"sender {n} message {i}")
            try:
                response = await client.post(
                    f"http://127.0.0.1:{port}/v1/callbacks/customer47/message",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError:
                failed += 1
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                accepted.append(response.json()["id"])
            else:
                refused += 1

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(*(sender(n, client) for n in range(8)))
    return accepted, refused, failed


def test_sigterm_under_load_loses_no_acknowledged_event(
    kafka_broker: Broker, tenant_key: KeyPair, topic_prefix: str, tmp_path: Path
) -> None:
    """SIGTERM mid-load: readiness turns 503, the process exits in time, every 200 is in Kafka."""
    config = tmp_path / "receiver.yaml"
    config.write_text(
        json.dumps(
            {
                "server": {
                    "log_level": "info",
                    "log_format": "json",
                    "shutdown_grace_seconds": 10,
                    "drain_seconds": 1,
                },
                "kafka": {
                    "bootstrap_servers": kafka_broker.bootstrap_servers,
                    "topic_prefix": topic_prefix,
                    "topics": {"create": True},
                },
                "sources": {
                    "customer47": {
                        "kind": "iotcomms",
                        "domain": DOMAIN,
                        "auth": [{"type": "jwt", "public_keys": [str(tenant_key.public_path)]}],
                    }
                },
            }
        )
    )
    with run_receiver(config) as receiver:
        process, port = receiver.process, receiver.port
        token = tenant_key.token(claims(ttl=600))

        async def scenario() -> tuple[list[str], int, int, int]:
            load = asyncio.create_task(drive(port, token, stop_after=6))
            await asyncio.sleep(2)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(timeout=2) as client:
                ready = await client.get(f"http://127.0.0.1:{port}/readyz")
            accepted, refused, failed = await load
            return accepted, refused, failed, ready.status_code

        accepted, _refused, failed, ready_status = asyncio.run(scenario())
        assert ready_status == 503  # draining: still listening, no longer ready
        # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    log = receiver.output()
    assert accepted, f"no request was accepted before shutdown:\n{log[-3000:]}"
    assert failed > 0, "the load did not run past the shutdown"
    written = {json.loads(r.value)["id"] for r in read_topic(kafka_broker, f"{topic_prefix}.iotcomms.message")}
    missing = set(accepted) - written
    assert not missing, f"{len(missing)} of {len(accepted)} acknowledged events are not in Kafka"
    assert "receiver.stopped" in log
