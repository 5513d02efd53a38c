"""The state backends against one contract, and Redis's sharing and failure policy against a real Redis."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from receiver.auth import SingleUse
from receiver.errors import (
    ConfigError,
    InvalidPayloadError,
    ReplayedRequestError,
    StateUnavailableError,
    UnavailableError,
)
from receiver.events import Accepted
from receiver.settings import StateSettings
from receiver.state import MemoryState, State, build_state
from receiver.state.redis import LISTEN_SILENCE, RedisState, check_version, decode_answer, encode_answer
from receiver.vendors.base import Answer
from tests.support.proxy import TcpProxy
from tests.support.redis_server import RedisServer

NOW = time.time()
BODY = b'{"temperature": 21.5}'
ONCE = SingleUse("msg_2Lx", NOW + 300, "this id was already used for another body")


def redis_state(url: str, prefix: str, *, timeout: float = 0.25, fallbacks: list[str] | None = None) -> RedisState:
    settings = StateSettings(url=url, key_prefix=prefix, timeout_seconds=timeout)
    state = build_state(settings, lease_seconds=2.0, on_fallback=(fallbacks if fallbacks is not None else []).append)
    assert isinstance(state, RedisState)
    return state


def run(scenario: Callable[..., Awaitable[Any]], *states: State) -> Any:
    """Start the states, run the scenario with them, close them: all on one event loop."""

    async def main() -> Any:
        for state in states:
            await state.start()
        try:
            return await scenario(*states)
        finally:
            for state in states:
                await state.close()

    return asyncio.run(main())


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, redis_server: RedisServer, key_prefix: str) -> Callable[[], State]:
    """A factory of states that share what they keep: one memory, or Redis clients on one prefix."""
    if request.param == "memory":
        memory = MemoryState()
        return lambda: memory
    return lambda: redis_state(redis_server.url, key_prefix)


def test_single_use_first_copy_and_forgery(backend: Callable[[], State]) -> None:
    """The first copy holds the id; a copy with the same body gets the first's kept answer; another body is refused."""
    accepted = Accepted(event_id="ev-1", topics=["iot.x"], answer=Answer(200, {"ok": True}))

    async def scenario(a: State, b: State) -> None:
        first = await a.reserve("src:wh:1", ONCE, NOW, BODY, fail_open=False)
        assert first.first
        first.settle(accepted)
        await asyncio.sleep(0.05)  # Redis: the settle is written in the background
        copy = await b.reserve("src:wh:1", ONCE, NOW + 1, BODY, fail_open=False)
        assert not copy.first
        earlier = await copy.earlier_answer()
        assert isinstance(earlier, Accepted)
        assert (earlier.event_id, list(earlier.topics), earlier.answer) == (
            "ev-1",
            ["iot.x"],
            Answer(200, {"ok": True}),
        )
        with pytest.raises(ReplayedRequestError, match="another body"):
            await b.reserve("src:wh:1", ONCE, NOW + 2, b'{"temperature": 99}', fail_open=False)

    one = backend()
    run(scenario, one, backend() if isinstance(one, RedisState) else one)


def test_single_use_released_starts_afresh(backend: Callable[[], State]) -> None:
    """A first copy that was not durably handled releases the id: the sender's retry is handled afresh."""

    async def scenario(a: State) -> None:
        first = await a.reserve("src:wh:2", ONCE, NOW, BODY, fail_open=False)
        first.release(UnavailableError("broker down"))
        await asyncio.sleep(0.05)
        again = await a.reserve("src:wh:2", ONCE, NOW + 1, BODY, fail_open=False)
        assert again.first

    run(scenario, backend())


def test_copy_waits_for_the_first_answer_across_processes(redis_server: RedisServer, key_prefix: str) -> None:
    """A copy arriving at another replica while the first runs waits and gets the first one's answer."""
    accepted = Accepted(event_id="ev-9", topics=["iot.y"])

    async def scenario(a: State, b: State) -> None:
        first = await a.reserve("src:wh:3", ONCE, NOW, BODY, fail_open=False)
        copy = await b.reserve("src:wh:3", ONCE, NOW, BODY, fail_open=False)
        assert first.first
        assert not copy.first
        waiting = asyncio.ensure_future(copy.earlier_answer())
        await asyncio.sleep(0.1)
        assert not waiting.done()
        first.settle(accepted)
        earlier = await asyncio.wait_for(waiting, 5)
        assert isinstance(earlier, Accepted)
        assert earlier.event_id == "ev-9"

    run(scenario, redis_state(redis_server.url, key_prefix), redis_state(redis_server.url, key_prefix))


def test_budget_is_one_across_processes(backend: Callable[[], State]) -> None:
    """Two processes spend one budget: 5 per minute in all, not 5 each."""

    async def scenario(a: State, b: State) -> list[bool]:
        allowed = []
        for i in range(8):
            ok, _budget = await (a if i % 2 else b).take("src", 5, NOW)
            allowed.append(ok)
        return allowed

    one = backend()
    allowed = run(scenario, one, backend() if isinstance(one, RedisState) else one)
    assert allowed == [True] * 5 + [False] * 3


def test_failure_limit_blocks_in_every_process(redis_server: RedisServer, key_prefix: str) -> None:
    """Failures counted on two replicas add up; past the limit both refuse the address before any check."""

    async def scenario(a: State, b: State) -> tuple[Any, Any, Any]:
        before = a.blocked("src:192.0.2.7", 3, NOW), b.blocked("src:192.0.2.7", 3, NOW)
        await a.failed("src:192.0.2.7", 3, NOW)
        await b.failed("src:192.0.2.7", 3, NOW)
        await a.failed("src:192.0.2.7", 3, NOW)  # the third: the limit
        deadline = time.monotonic() + 5
        while b.blocked("src:192.0.2.7", 3, NOW) is None and time.monotonic() < deadline:  # noqa: ASYNC110 - another client's view
            await asyncio.sleep(0.01)  # the notice crosses Redis's pub/sub
        return before, a.blocked("src:192.0.2.7", 3, NOW), b.blocked("src:192.0.2.7", 3, NOW)

    before, on_a, on_b = run(
        scenario, redis_state(redis_server.url, key_prefix), redis_state(redis_server.url, key_prefix)
    )
    assert before == (None, None)
    assert on_a is not None
    assert on_b is not None
    assert on_b.remaining == 0


def test_dedup_window_is_shared(backend: Callable[[], State]) -> None:
    """An event id remembered by one process is seen by the other within the window, and not after it."""

    async def scenario(a: State, b: State) -> tuple[set[str], set[str]]:
        a.remember(["ev-a"], NOW, 60)
        await asyncio.sleep(0.05)
        return await b.seen(["ev-a", "ev-b"], NOW + 1), await b.seen(["ev-a"], NOW + 61)

    one = backend()
    inside, _after = run(scenario, one, backend() if isinstance(one, RedisState) else one)
    assert inside == {"ev-a"}


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Accepted(event_id="e", topics=["t"], event_ids=["e", "f"]), id="batch"),
        pytest.param(Accepted(event_id="", topics=["dl"], status=202, code="invalid_payload"), id="accepted-202"),
        pytest.param(InvalidPayloadError("bad", [{"loc": "x", "msg": "m", "type": "t"}]), id="dead-lettered-422"),
    ],
)
def test_kept_answers_survive_the_trip(answer: Any) -> None:
    """What a copy is answered with is what the first copy was answered with."""
    back = decode_answer(encode_answer(answer))
    if isinstance(answer, Accepted):
        assert isinstance(back, Accepted)
        assert (back.event_id, back.topics, back.status, back.code, back.event_ids) == (
            answer.event_id, answer.topics, answer.status, answer.code, answer.event_ids,
        )  # fmt: skip
    else:
        assert isinstance(back, InvalidPayloadError)
        assert back.body() == answer.body()


def test_redis_down_policy(tmp_path: Any, key_prefix: str) -> None:
    """Redis gone: single-use ids fail closed (or use memory when opted in); budgets and dedup use memory."""
    server = RedisServer(workdir=tmp_path).start()
    fallbacks: list[str] = []
    state = redis_state(server.url, key_prefix, fallbacks=fallbacks)

    async def scenario(s: State) -> dict[str, Any]:
        assert await s.check() is None
        server.kill()
        started = time.monotonic()
        with pytest.raises(StateUnavailableError):
            await s.reserve("src:wh:9", ONCE, NOW, BODY, fail_open=False)
        refused_in = time.monotonic() - started
        local = await s.reserve("src:wh:9", ONCE, NOW, BODY, fail_open=True)
        budget = await s.take("src", 5, NOW)
        seen = await s.seen(["ev"], NOW)
        await s.failed("src:192.0.2.1", 1, NOW)
        problem = await s.check()
        server.start()
        deadline = time.monotonic() + 5
        while await s.check() is not None and time.monotonic() < deadline:  # noqa: ASYNC110 - a server coming back
            await asyncio.sleep(0.2)
        back = await s.reserve("src:wh:10", ONCE, NOW, BODY, fail_open=False)
        return {
            "refused_in": refused_in, "local": local.first, "budget": budget[0], "seen": seen,
            "blocked": s.blocked("src:192.0.2.1", 1, NOW), "problem": problem, "back": back.first,
        }  # fmt: skip

    try:
        result = run(scenario, state)
    finally:
        server.cleanup()
    assert result["refused_in"] < 2.0, "a dead Redis must be answered within the timeout, not waited for"
    assert result["local"]
    assert result["budget"]
    assert result["seen"] == set()
    assert result["blocked"] is not None, "failure counts fall back to this process's memory"
    assert result["problem"] is not None
    assert "redis" in result["problem"]
    assert "127.0.0.1" not in result["problem"], "/readyz shows the problem to anyone: no address in it"
    assert result["back"], "once Redis is back, single-use ids are held there again"
    assert set(fallbacks) >= {"single_use", "budget", "dedup", "failure_limit"}


def test_hung_redis_is_bounded_by_the_timeout(tmp_path: Any, key_prefix: str) -> None:
    """A Redis that accepts and never answers holds a request for the timeout only, then the policy answers."""
    server = RedisServer(workdir=tmp_path).start()
    state = redis_state(server.url, key_prefix, timeout=0.2)

    async def scenario(s: State) -> float:
        await s.check()  # a connection is open before the freeze
        server.pause()
        started = time.monotonic()
        with pytest.raises(StateUnavailableError):
            await s.reserve("src:wh:11", ONCE, NOW, BODY, fail_open=False)
        return time.monotonic() - started

    try:
        waited = run(scenario, state)
    finally:
        server.cleanup()
    assert waited < 2.0, f"held {waited:.2f} s by a hung Redis"


def test_password_from_a_file(tmp_path: Any, key_prefix: str) -> None:
    """The password comes from state.password_file; a wrong one is reported as unavailable, never echoed."""
    server = RedisServer(workdir=tmp_path, password="redis-pass-7f3c").start()
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("redis-pass-7f3c\n")
    wrong.write_text("not-the-password\n")
    for path in (right, wrong):
        path.chmod(0o600)

    def state(password_file: Any) -> State:
        settings = StateSettings(url=server.url, key_prefix=key_prefix, password_file=password_file)
        return build_state(settings, lease_seconds=2.0)

    async def check(s: State) -> str | None:
        return await s.check()

    try:
        assert run(check, state(right)) is None
        problem = run(check, state(wrong))
    finally:
        server.cleanup()
    assert problem is not None
    assert "not-the-password" not in problem


def test_block_notices_resume_after_a_silent_connection(redis_server: RedisServer, key_prefix: str) -> None:
    """A notice channel whose connection went silent (no reset) is found and reopened; notices arrive again."""
    with TcpProxy(redis_server.port) as proxy:
        listener = redis_state(f"redis://127.0.0.1:{proxy.port}/0", key_prefix)
        counter = redis_state(redis_server.url, key_prefix)

        async def scenario(b: State, a: State) -> Any:
            await asyncio.sleep(0.3)  # b is subscribed
            proxy.silence()  # b's connections now lead nowhere, and nothing tells it
            await asyncio.sleep(LISTEN_SILENCE + 2.5)  # b pings, hears nothing, reconnects
            for _ in range(3):
                await a.failed("src:198.51.100.4", 3, NOW)
            deadline = time.monotonic() + 5
            while b.blocked("src:198.51.100.4", 3, NOW) is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            return b.blocked("src:198.51.100.4", 3, NOW)

        blocked = run(scenario, listener, counter)
    assert blocked is not None, "the notice did not reach the process whose channel had gone silent"


def _tls_files(directory: Path) -> Path:
    """A CA, and a certificate it signed for 127.0.0.1, as Redis's TLS options want them."""
    now = datetime.now(UTC)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, *, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver test CA")])
    ca_cert = certificate("receiver test CA", ca_key, ca_name, ca_key, ca=True)
    cert = certificate("127.0.0.1", key, ca_name, ca_key, ca=False)
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "cert.pem").write_bytes(cert.public_bytes(pem))
    (directory / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory


def test_rediss_verifies_the_server(tmp_path: Path, key_prefix: str) -> None:
    """rediss:// speaks TLS and checks the server against state.tls_ca_file; an unknown CA is refused."""
    tls = _tls_files(tmp_path)
    server = RedisServer(workdir=tmp_path, tls=tls).start()

    def state(ca: Path | None) -> State:
        settings = StateSettings(url=server.url, key_prefix=key_prefix, tls_ca_file=ca)
        return build_state(settings, lease_seconds=2.0)

    async def check(s: State) -> str | None:
        return await s.check()

    try:
        assert server.url.startswith("rediss://")
        trusted = run(check, state(tls / "ca.pem"))
        untrusted = run(check, state(None))  # the system's CAs do not know the test CA
    finally:
        server.cleanup()
    assert trusted is None
    assert untrusted is not None


def test_a_restarted_redis_is_used_at_once(tmp_path: Any, key_prefix: str) -> None:
    """Redis restarted (empty, same port): the pooled connections are stale, yet the next calls all succeed."""
    server = RedisServer(workdir=tmp_path).start()
    state = redis_state(server.url, key_prefix)

    async def scenario(s: State) -> list[bool]:
        # Several connections in the pool: batches in flight together each take their own.
        await asyncio.gather(*(s.take(f"warm-{i}", 100, NOW) for i in range(8)))
        await asyncio.to_thread(server.kill)  # the loop sees the connections close
        await asyncio.to_thread(server.start)
        firsts = []
        for i in range(3):
            once = await s.reserve(f"src:wh:restart-{i}", ONCE, NOW, BODY, fail_open=False)
            firsts.append(once.first)
        return firsts

    try:
        firsts = run(scenario, state)
    finally:
        server.cleanup()
    assert firsts == [True, True, True]


@pytest.mark.parametrize(
    ("info", "taken"),
    [
        pytest.param({"redis_version": "7.0.15"}, True, id="redis-7.0"),
        pytest.param({"redis_version": "7.2.4", "valkey_version": "8.0.1"}, True, id="valkey-8"),
        pytest.param({"redis_version": "6.2.14"}, False, id="redis-6.2"),
        pytest.param({"redis_version": "5.0.7"}, False, id="redis-5"),
        pytest.param({}, False, id="no-version"),
        pytest.param({"redis_version": "x.y"}, False, id="garbage"),
    ],
)
def test_redis_older_than_7_is_refused_at_start(info: dict[str, Any], taken: bool) -> None:
    """SET NX GET needs Redis 7.0: an older server is refused with a clear error (was: 503 on every delivery)."""
    if taken:
        check_version(info)
        return
    with pytest.raises(ConfigError, match=r"Redis 7\.0\+"):
        check_version(info)


def test_the_running_redis_passes_the_version_check(tmp_path: Any, key_prefix: str) -> None:
    """The Redis the tests run (Debian's 7.0) starts the state; its version was read at start."""
    server = RedisServer(workdir=tmp_path).start()
    state = redis_state(server.url, key_prefix)

    async def scenario(s: RedisState) -> Any:
        return await s.check()

    try:
        assert run(scenario, state) is None
    finally:
        server.cleanup()


def test_a_lost_settle_write_is_tried_again(redis_server: RedisServer, key_prefix: str) -> None:
    """A settle that met a cut connection lands once Redis answers again: the id never becomes reusable (was: lost)."""
    accepted = Accepted(event_id="ev-lost", topics=["iot.z"])
    with TcpProxy(redis_server.port) as proxy:
        through_proxy = redis_state(f"redis://127.0.0.1:{proxy.port}/0", key_prefix)
        direct = redis_state(redis_server.url, key_prefix)

        async def scenario(settling: RedisState, checking: RedisState) -> tuple[bool, Any]:
            first = await settling.reserve("src:wh:lost", ONCE, NOW, BODY, fail_open=False)
            assert first.first
            proxy.cut()
            first.settle(accepted)  # its first try meets the cut connection
            await asyncio.sleep(0.5)  # the settle has failed at least once; it must not have given up
            proxy.heal()
            await settling.flush()
            again = await checking.reserve("src:wh:lost", ONCE, NOW, BODY, fail_open=False)
            return again.first, await again.earlier_answer()

        first, earlier = run(scenario, through_proxy, direct)
    assert not first, "the id was usable again: the lost settle was never written"
    assert isinstance(earlier, Accepted)
    assert earlier.event_id == "ev-lost"
