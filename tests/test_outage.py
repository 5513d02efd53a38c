"""Broker outages, as senders see them: 503 in milliseconds once the breaker opens, quick recovery, no 2xx lost.

Each test runs its own real broker, kills or freezes it (SIGKILL, SIGSTOP) and brings it
back. The figures are printed (``-s``); the assertions hold a wide margin against the
wrong behaviour (a wait for the publish timeout on every request).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.conftest import KeyPair, SettingsFactory, claims, message_body
from tests.support.kafka import read_topic
from tests.support.kafka_broker import Broker, free_port
from tests.support.proxy import TcpProxy
from tests.support.ready import wait_ready

pytestmark = pytest.mark.kafka

URL = "/v1/callbacks/customer47/message"


@pytest.fixture
def broker() -> Iterator[Broker]:
    own = Broker().start()
    try:
        yield own
    finally:
        if own.process is not None and own.process.poll() is None:
            os.kill(own.process.pid, signal.SIGCONT)
        own.cleanup()


def post(client: TestClient, token: str, n: int) -> tuple[int, float, dict[str, str], dict[str, str]]:
    """One callback, timed from the call to the answer (the token is signed beforehand)."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    answer = client.post(URL, json=message_body(body=f"m{n}"), headers=headers)
    return answer.status_code, time.perf_counter() - started, answer.json(), dict(answer.headers)


def outage(
    broker: Broker,
    make_settings: SettingsFactory,
    key: KeyPair,
    prefix: str,
    fail: Callable[[], None],
    heal: Callable[[], None],
    recovery_within: float = 2.0,
) -> None:
    """Accept, break the broker, watch the answers, heal it, watch recovery; every 2xx must be in Kafka once."""
    kafka = {
        "bootstrap_servers": broker.bootstrap_servers,
        "topic_prefix": prefix,
        "request_timeout_ms": 5000,
        "shutdown_timeout_seconds": 2,
    }
    accepted: list[str] = []
    token = key.token(claims(ttl=600))
    with TestClient(create_app(make_settings(kafka=kafka))) as client:
        wait_ready(client)
        n = 0
        for n in range(3):
            status, _, body, _ = post(client, token, n)
            assert status == 200, body
            accepted.append(body["id"])

        fail()
        broken_at = time.monotonic()
        waits: list[float] = []
        while time.monotonic() - broken_at < 15:  # until the breaker has opened: answers turn fast
            n += 1
            status, seconds, body, headers = post(client, token, n)
            if status == 200:
                accepted.append(body["id"])
            waits.append(seconds)
            if status == 503 and seconds < 0.1:
                break
        opened_after = time.monotonic() - broken_at
        fast = []
        for _ in range(20):
            n += 1
            status, seconds, body, headers = post(client, token, n)
            assert status == 503, body
            assert body["code"] == "kafka_unavailable"
            assert int(headers["retry-after"]) > 0
            fast.append(seconds)
        assert client.get("/readyz").status_code == 503
        assert "receiver_kafka_breaker_open 1.0" in client.get("/metrics").text

        heal()
        healed_at = time.monotonic()
        while True:
            n += 1
            status, _, body, _ = post(client, token, n)
            if status == 200:
                accepted.append(body["id"])
                break
            assert time.monotonic() - healed_at < 30, "never recovered"
            time.sleep(0.02)
        recovered_after = time.monotonic() - healed_at
    print(
        f"breaker open {opened_after:.2f} s after the fault (slowest answer meanwhile {max(waits):.2f} s); "
        f"answers while open: max {max(fast) * 1000:.1f} ms; "
        f"recovered {recovered_after:.2f} s after the broker answered"
    )
    assert opened_after < 8, "the breaker never opened"
    assert max(fast) < 0.1, f"a 503 took {max(fast):.3f} s while the breaker was open"
    assert recovered_after < recovery_within, f"recovery took {recovered_after:.2f} s"
    ids = [json.loads(r.value)["id"] for r in read_topic(broker, f"{prefix}.iotcomms.message")]
    assert all(ids.count(event_id) == 1 for event_id in accepted), "a 2xx event is missing or written twice"


def test_killed_broker(broker: Broker, make_settings: SettingsFactory, tenant_key: KeyPair, topic_prefix: str) -> None:
    """Broker killed (SIGKILL): fast 503s with Retry-After, recovery once it is back, no 2xx lost."""

    def kill() -> None:
        assert broker.process is not None
        broker.process.kill()
        broker.process.wait()

    def restart() -> None:
        broker.start()

    outage(broker, make_settings, tenant_key, topic_prefix, kill, restart)


def test_hung_broker(broker: Broker, make_settings: SettingsFactory, tenant_key: KeyPair, topic_prefix: str) -> None:
    """Broker frozen (SIGSTOP): once the breaker opens, 503s in milliseconds; SIGCONT, and it recovers."""
    assert broker.process is not None
    pid = broker.process.pid
    outage(
        broker,
        make_settings,
        tenant_key,
        topic_prefix,
        lambda: os.kill(pid, signal.SIGSTOP),
        lambda: os.kill(pid, signal.SIGCONT),
    )


@pytest.fixture
def proxied() -> Iterator[tuple[Broker, TcpProxy]]:
    """A broker that advertises a proxy in front of it: every client byte goes through the proxy."""
    port = free_port()
    with TcpProxy(port) as proxy:
        own = Broker(port=port, advertised_port=proxy.port).start()
        try:
            yield own, proxy
        finally:
            own.cleanup()


def test_slowed_network(
    proxied: tuple[Broker, TcpProxy], make_settings: SettingsFactory, tenant_key: KeyPair, topic_prefix: str
) -> None:
    """The network to the broker slows to 5 s per chunk: the breaker opens, 503s come fast, recovery follows."""
    broker, proxy = proxied

    def slow() -> None:
        proxy.delay = 5.0

    # Chunks the proxy is still holding back drain first: up to one delay more.
    outage(broker, make_settings, tenant_key, topic_prefix, slow, proxy.heal, recovery_within=6.0)


def test_cut_network(
    proxied: tuple[Broker, TcpProxy], make_settings: SettingsFactory, tenant_key: KeyPair, topic_prefix: str
) -> None:
    """Every connection to the broker is cut and refused: fast 503s, then recovery when the network heals."""
    broker, proxy = proxied
    outage(broker, make_settings, tenant_key, topic_prefix, proxy.cut, proxy.heal)
