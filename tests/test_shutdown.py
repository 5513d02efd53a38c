"""Graceful shutdown: SIGTERM under load loses no acknowledged event (real server, real broker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
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
        assert process.wait(timeout=30) == 0, "a clean SIGTERM exits 0"
    log = receiver.output()
    assert accepted, f"no request was accepted before shutdown:\n{log[-3000:]}"
    assert failed > 0, "the load did not run past the shutdown"
    written = {json.loads(r.value)["id"] for r in read_topic(kafka_broker, f"{topic_prefix}.iotcomms.message")}
    missing = set(accepted) - written
    assert not missing, f"{len(missing)} of {len(accepted)} acknowledged events are not in Kafka"
    assert "receiver.stopped" in log


def test_sigterm_with_the_broker_hung_exits_0_within_its_budget(
    tenant_key: KeyPair, topic_prefix: str, tmp_path: Path
) -> None:
    """Broker frozen, a request in flight, SIGTERM: exit 0 within drain + grace + Kafka shutdown (was: 23 s, killed)."""
    broker = Broker().start()
    try:
        grace, drain, kafka_shutdown = 3, 0, 2
        budget = grace + drain + kafka_shutdown
        server = {"log_format": "json", "shutdown_grace_seconds": grace, "drain_seconds": drain}
        kafka = {
            "bootstrap_servers": broker.bootstrap_servers,
            "topic_prefix": topic_prefix,
            "publish_timeout_seconds": 2,
            "shutdown_timeout_seconds": kafka_shutdown,
            "topics": {"create": True},
        }
        config = tmp_path / "receiver.yaml"
        source = {
            "kind": "iotcomms",
            "domain": DOMAIN,
            "auth": [{"type": "jwt", "public_keys": [str(tenant_key.public_path)]}],
        }
        config.write_text(json.dumps({"server": server, "kafka": kafka, "sources": {"customer47": source}}))
        with run_receiver(config) as receiver:
            url = f"{receiver.url}/v1/callbacks/customer47/message"
            headers = {"Authorization": f"Bearer {tenant_key.token(claims(ttl=600))}"}
            assert httpx.post(url, json=message_body(), headers=headers, timeout=10).status_code == 200
            assert broker.process is not None
            os.kill(broker.process.pid, signal.SIGSTOP)

            async def in_flight_then_sigterm() -> float:
                async with httpx.AsyncClient(timeout=30) as client:
                    pending = asyncio.create_task(client.post(url, json=message_body(body="late"), headers=headers))
                    await asyncio.sleep(0.5)
                    receiver.process.send_signal(signal.SIGTERM)
                    started = time.monotonic()
                    with contextlib.suppress(httpx.TransportError):
                        await pending
                    await asyncio.to_thread(receiver.process.wait, 60)
                    return time.monotonic() - started

            took = asyncio.run(in_flight_then_sigterm())
            code = receiver.process.returncode
        print(f"exit {code} after {took:.2f} s; documented budget {budget} s")
        assert code == 0
        assert took < budget + 2, f"shutdown took {took:.1f} s, over its {budget} s budget"
        assert "Traceback" not in receiver.output()
    finally:
        if broker.process is not None and broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGCONT)
        broker.cleanup()
