"""The state shared by every worker and replica, in Redis (or Valkey): ``state.url: redis://...``.

Each operation is one atomic round trip, done on the Redis side: ``SET NX GET PX`` to
reserve a single-use id, a small Lua script for a window's count (``INCR`` and, the
first time, ``PEXPIRE``), ``MGET`` for the dedup window. Writes the answer does not wait
for (settling an id, remembering published ids) go in the background. Every key expires
by itself, so Redis holds at most the windows' worth of keys.

Failed authentications are counted in Redis, but the check before authentication is
local, so the hot path asks Redis nothing for it: the call that counts an address's
last allowed failure publishes a notice, and every process marks the address blocked
until the window ends. A process that missed the notice (it started later) learns on
that address's next failure.

When Redis does not answer within ``state.timeout_seconds`` (a broken connection is
first retried once on a fresh one), or failed and has not yet answered the background
probe (a PING each 0.1 s), each concern falls back as the README's policy says: single-use ids fail
closed (503 ``state_unavailable``) unless the source opted out, and then use this
process's memory; budgets, failure counts and the dedup window fall back to this
process's memory. Each fallback is counted (``receiver_state_fallbacks_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from receiver.errors import (
    ConfigError,
    ContentError,
    KafkaUnavailableError,
    ReplayedRequestError,
    RequestError,
    StateUnavailableError,
    error_classes,
)
from receiver.events import Accepted
from receiver.limits import WINDOW, Budget
from receiver.state.base import Once
from receiver.state.memory import MemoryState
from receiver.vendors.base import Answer

if TYPE_CHECKING:
    from receiver.auth import SingleUse
    from receiver.settings import StateSettings

log = logging.getLogger("receiver.state")

MAX_CONNECTIONS = 512
RETRY_AFTER_FAILURE = 1.0  # the notice channel waits this long before it reconnects
PROBE_SECONDS = 0.1  # while Redis is down, one PING this often finds it back; calls are refused meanwhile
LISTEN_SILENCE = 3.0  # seconds without even a PONG before the notice channel reconnects
POLL_SECONDS = 0.02  # how often a copy looks for the first copy's answer
_PENDING, _SETTLED = b"P", b"S"
_FINGERPRINT = 32  # sha256 digest bytes

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if ARGV[3] and n == tonumber(ARGV[2]) then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return n
"""
# Settle (ARGV[2] the answer) or release (ARGV[2] empty) the hold ARGV[1]. A settle also
# writes when the key is gone: a Redis that restarted empty must not make the id usable again.
_SETTLE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or (current == false and ARGV[2] ~= '') then
  if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 0
"""
SETTLE_RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0)  # between tries of a lost settle write, the last repeated

_FAILURES = (RedisError, OSError, TimeoutError)


class RedisOnce:
    """One request's hold on a single-use id kept in Redis."""

    __slots__ = ("_held", "_key", "_state", "_until", "first")

    def __init__(self, state: RedisState, key: str, held: bytes, until: float, *, first: bool) -> None:
        self._state, self._key, self._held, self._until = state, key, held, until
        self.first = first

    async def earlier_answer(self) -> Any:
        """Poll for the first copy's answer; it is bounded by the reservation's lease."""
        deadline = time.monotonic() + self._state.lease
        value: bytes | None = self._held
        while value is not None and value[:1] == _PENDING and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            try:
                value = await self._state.command("GET", self._key)
            except StateUnavailableError as exc:
                return exc
        if value is not None and value[:1] == _SETTLED:
            return decode_answer(value[1 + _FINGERPRINT :])
        return KafkaUnavailableError("an identical request was being handled and did not finish; retry")

    def settle(self, answer: Any) -> None:
        """Keep the answer for the id's window; a write Redis did not take is tried again until the window ends.

        The hold's lease is only seconds long: a settle lost to a broken connection or a
        Redis outage would let the id be used again once the lease ran out.
        """
        value = _SETTLED + self._held[1 : 1 + _FINGERPRINT] + encode_answer(answer)
        self._state.background(self._settle(value))

    async def _settle(self, value: bytes) -> None:
        for attempt in itertools.count():
            ttl = math.ceil((self._until - time.time()) * 1000)
            if ttl <= 0:
                return  # the window is over: nothing left to protect
            try:
                await self._state.script(_SETTLE, [self._key], [self._held, value, ttl])
            except StateUnavailableError:
                await asyncio.sleep(SETTLE_RETRY_SECONDS[min(attempt, len(SETTLE_RETRY_SECONDS) - 1)])
                continue
            return

    def release(self, answer: Any) -> None:
        del answer  # copies elsewhere see the key gone and are answered 503; later ones start afresh
        self._state.background(self._state.script(_SETTLE, [self._key], [self._held, b"", 0]))


MIN_VERSION = (7, 0)  # SET NX GET, which reserves a single-use id in one step; Valkey 7.2+ reports 7.2


def check_version(info: dict[str, Any]) -> None:
    """Refuse a Redis older than 7.0 (``INFO server``): every single-use delivery would fail on it."""
    text = str(info.get("redis_version", ""))
    try:
        found = tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        found = ()
    if len(found) < 2 or found < MIN_VERSION:
        server = "valkey" if "valkey_version" in info else "redis"
        msg = (
            f"state.url: {server} {text or '(no version)'} is too old; the shared state needs Redis 7.0+"
            " or Valkey 7.2+ (SET with NX and GET)"
        )
        raise ConfigError([msg])


class RedisState:
    """``base.State`` in Redis, with this process's memory as the fallback where the policy allows one."""

    shared = True

    def __init__(
        self,
        settings: StateSettings,
        *,
        password: str | None,
        lease_seconds: float,
        on_fallback: Callable[[str], None] = lambda _concern: None,
    ) -> None:
        self._prefix = settings.key_prefix
        self._timeout = settings.timeout_seconds
        self.lease = lease_seconds
        self._on_fallback = on_fallback
        self._local = MemoryState()
        self._blocked: dict[str, float] = {}  # failure key -> until, learnt from notices
        self._views: dict[str, tuple[int, int, float]] = {}  # budget key -> (limit, count, window end) last seen
        self._down = False
        self._closing = False
        self._probe: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._channel = f"{self._prefix}blocked"
        kwargs: dict[str, Any] = {}
        if settings.url is not None and settings.url.startswith("rediss://") and settings.tls_ca_file is not None:
            kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
        # A plain pool (cheaper per call than the blocking one): one connection per request
        # in flight at most, and past the cap a call fails as "unavailable" instead of waiting.
        # A connection that breaks (reset, closed: a Redis restarted or failed over leaves
        # every pooled connection stale) is reconnected and the batch sent once more, at
        # once, before the call counts as failed; a timeout is not retried (a hung Redis
        # would hold the request twice as long). See ``reserve`` for why a retry is safe.
        self._pool = aioredis.ConnectionPool.from_url(
            settings.url or "redis://127.0.0.1:6379/0",
            max_connections=MAX_CONNECTIONS,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            username=settings.username,
            password=password,
            **kwargs,
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._pipeline = _Pipeliner(self._redis)
        self._sha = {text: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest() for text in (_COUNT, _SETTLE)}
        self.where = (settings.url or "").partition("?")[0]  # for the log: never the query's options

    async def start(self) -> None:
        """Check the server's version (when it answers now), then listen for block notices."""
        try:
            info = await asyncio.wait_for(self._redis.info("server"), self._timeout * 4)
        except (*_FAILURES, TimeoutError):
            log.warning("receiver.state_unavailable", extra={"where": self.where, "error": "no answer at start"})
        else:
            check_version(info)
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="state-blocked-notices")

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        # redis-py's timed reads can swallow a cancellation (seen after a Redis restart):
        # ``_closing`` also ends the listener's loop, and the wait is bounded either way.
        self._closing = True
        left = [task for task in (*self._tasks, self._probe, self._listener) if task is not None]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=2.0)
        await self._redis.aclose()
        await self._pool.disconnect()

    async def check(self) -> str | None:
        try:
            await self.command("PING", fresh=True)
        except StateUnavailableError:
            return "redis does not answer"  # no address: /readyz is open to anyone
        return None

    async def command(self, *args: Any, fresh: bool = False, **options: Any) -> Any:
        """One command, sent with the others of this turn of the loop; ``StateUnavailableError`` when it fails.

        No asyncio.timeout here: the client bounds connect and every read by the timeout.
        """
        if self._down and not fresh:
            msg = "the shared state store is unavailable; retry in a few seconds"
            raise StateUnavailableError(msg)
        try:
            result = await self._pipeline.send(args, options)
        except NoScriptError:
            raise  # Redis answered: its script cache is empty (a restart), see ``script``
        except _FAILURES as exc:
            self._went_down(exc)
            msg = "the shared state store did not answer in time; retry in a few seconds"
            raise StateUnavailableError(msg) from exc
        self._came_back()
        return result

    def _went_down(self, exc: BaseException) -> None:
        """Refuse calls at once from now on, and PING in the background until Redis answers again.

        One probe at a time, so a hung Redis holds one PING for the timeout, never the
        requests; a Redis back after a restart is used again within ``PROBE_SECONDS``.
        """
        if not self._down:
            log.warning("receiver.state_unavailable", extra={"where": self.where, "error": type(exc).__name__})
            self._down = True
        if not self._closing and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._find_back(), name="state-probe")

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            log.info("receiver.state_available", extra={"where": self.where})

    async def _find_back(self) -> None:
        while self._down and not self._closing:
            await asyncio.sleep(PROBE_SECONDS)
            with contextlib.suppress(*_FAILURES):
                await self._pipeline.send(("PING",), {})
                self._came_back()

    async def script(self, text: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, and EVAL once when Redis lost its script cache (a restart)."""
        try:
            return await self.command("EVALSHA", self._sha[text], len(keys), *keys, *args)
        except NoScriptError:
            return await self.command("EVAL", text, len(keys), *keys, *args)

    async def flush(self) -> None:
        """Wait for the writes in the background (settles, releases) to land or give up (for tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def background(self, write: Coroutine[Any, Any, Any]) -> None:
        """Run a write the answer does not wait for; it is finished (bounded) before the process stops."""

        async def run() -> None:
            with contextlib.suppress(StateUnavailableError):
                await write

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- single-use ids

    async def reserve(self, key: str, single_use: SingleUse, now: float, body: bytes, *, fail_open: bool) -> Once:
        fingerprint = hashlib.sha256(body).digest()
        held = _PENDING + fingerprint + os.urandom(16)
        name = f"{self._prefix}once:{key}"
        until = single_use.until
        lease = max(1, math.ceil(min(self.lease, until - now) * 1000))
        try:
            existing: bytes | None = await self.command("SET", name, held, "NX", "GET", "PX", lease, get=True)
        except StateUnavailableError:
            if not fail_open:
                raise
            self._on_fallback("single_use")
            return await self._local.reserve(key, single_use, now, body, fail_open=True)
        # ``existing == held``: the batch was sent again after a broken connection, and the
        # first send had set the key before the answer was lost (``held`` is unique).
        if existing is None or existing == held:
            return RedisOnce(self, name, held, until, first=True)
        if existing[1 : 1 + _FINGERPRINT] != fingerprint:
            raise ReplayedRequestError(single_use.refusal)
        return RedisOnce(self, name, existing, until, first=False)

    # -- the dedup window

    async def seen(self, event_ids: Collection[str], now: float) -> set[str]:
        ids = list(event_ids)
        try:
            found = await self.command("MGET", *[f"{self._prefix}pub:{i}" for i in ids])
        except StateUnavailableError:
            self._on_fallback("dedup")
            return await self._local.seen(ids, now)
        return {i for i, hit in zip(ids, found, strict=True) if hit is not None}

    def remember(self, event_ids: Collection[str], now: float, window: float) -> None:
        self._local.remember(event_ids, now, window)
        ttl = max(1, int(window * 1000))
        for event_id in event_ids:
            self.background(self.command("SET", f"{self._prefix}pub:{event_id}", b"1", "PX", ttl))

    # -- budgets and failure counts: fixed one-minute windows, as in memory

    async def _counted(self, kind: str, key: str, limit: int, now: float, *, notice: str = "") -> tuple[int, float]:
        start = now - now % WINDOW
        name = f"{self._prefix}{kind}:{key}:{int(start)}"
        args: list[Any] = [int(WINDOW * 1000) + 1000, limit]
        if notice:
            args += [self._channel, notice]
        count = await self.script(_COUNT, [name], args)
        return int(count), start + WINDOW

    def budget(self, key: str, limit: int, now: float) -> Budget:
        view = self._views.get(key)
        if view is None or view[0] != limit or now >= view[2]:
            return self._local.budget(key, limit, now)
        return _budget(limit, view[1], view[2], now)

    async def take(self, key: str, limit: int, now: float) -> tuple[bool, Budget]:
        try:
            count, ends = await self._counted("budget", key, limit, now)
        except StateUnavailableError:
            self._on_fallback("budget")
            return await self._local.take(key, limit, now)
        if len(self._views) > 10_000:  # keys are configured sources: this is a backstop
            self._views.clear()
        self._views[key] = (limit, count, ends)
        return count <= limit, _budget(limit, count, ends, now)

    def blocked(self, key: str, limit: int, now: float) -> Budget | None:
        until = self._blocked.get(key)
        if until is not None and now < until:
            return _budget(limit, limit, until, now)
        if until is not None:
            del self._blocked[key]
        return self._local.blocked(key, limit, now)

    async def failed(self, key: str, limit: int, now: float) -> None:
        try:
            count, ends = await self._counted("fail", key, limit, now, notice=f"{ends_of(now)}\x00{key}")
        except StateUnavailableError:
            self._on_fallback("failure_limit")
            await self._local.failed(key, limit, now)
            return
        if count >= limit:
            self._block(key, ends)

    def _notice(self, data: bytes) -> None:
        until, _, key = data.decode("utf-8", "replace").partition("\x00")
        with contextlib.suppress(ValueError):
            self._block(key, float(until))

    def _block(self, key: str, until: float) -> None:
        if len(self._blocked) > 100_000:
            now = time.time()
            self._blocked = {k: u for k, u in self._blocked.items() if u > now}
            if len(self._blocked) > 100_000:
                self._blocked.clear()
        self._blocked[key] = until

    async def _listen(self) -> None:
        """Take block notices from the other processes; reconnect after Redis comes back.

        A subscription that went silent (Redis hung, a network cut without a reset) is
        found by a PING each idle second: no answer within ``LISTEN_SILENCE``, reconnect.
        """
        loop = asyncio.get_running_loop()
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                heard = loop.time()
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        heard = loop.time()
                        if message["type"] == "message":
                            self._notice(bytes(message["data"]))
                        continue
                    if loop.time() - heard > LISTEN_SILENCE:
                        msg = f"no answer on the notice channel for {LISTEN_SILENCE:g} s"
                        raise RedisConnectionError(msg)  # handled below like any lost connection
                    await pubsub.ping()
            except _FAILURES:
                await asyncio.sleep(RETRY_AFTER_FAILURE)
            finally:
                with contextlib.suppress(*_FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


class _Pipeliner:
    """Commands issued in one turn of the event loop go to Redis together: one write, one read.

    Concurrent requests each need a round trip; sent one by one, each costs its own
    syscalls and event-loop wake-ups. Queued and flushed as a pipeline at the end of the
    turn, they share them (Redis answers in order, each command on its own: no
    transaction). A command's error reaches only its own caller.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    def send(self, args: tuple[Any, ...], options: dict[str, Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush, loop)
        self._queue.append((args, options, future))
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queue = self._queue, []
        task = loop.create_task(self._run(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run(self, batch: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for args, options, _future in batch:
            pipe.execute_command(*args, **options)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure as its own
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # its request went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def ends_of(now: float) -> float:
    return now - now % WINDOW + WINDOW


def _budget(limit: int, count: int, ends: float, now: float) -> Budget:
    return Budget(limit, max(0, limit - count), max(1, math.ceil(ends - now)))


# -- the answers kept for copies of a request


def encode_answer(answer: Any) -> bytes:
    """What a copy of the request is answered with: an ``Accepted``, or a dead-lettered refusal."""
    if isinstance(answer, Accepted):
        vendor = answer.answer
        return json.dumps({
            "id": answer.event_id, "topics": list(answer.topics), "status": answer.status, "code": answer.code,
            "ids": None if answer.event_ids is None else list(answer.event_ids),
            "answer": None if vendor is None else [vendor.status, vendor.body],
        }, separators=(",", ":")).encode()  # fmt: skip
    if isinstance(answer, ContentError):
        return json.dumps({"refused": answer.code, **answer.body()}, separators=(",", ":")).encode()
    msg = f"no answer of type {type(answer).__name__} is kept"
    raise TypeError(msg)


def decode_answer(blob: bytes) -> Accepted | RequestError:
    data = json.loads(blob)
    code = data.get("refused")
    if code is not None:
        cls = next((c for c in error_classes(ContentError) if c.code == code), None)
        if cls is None:
            return KafkaUnavailableError("an identical request was refused; retry")
        error = cls.__new__(cls)
        ContentError.__init__(error, str(data.get("message", "")))
        if "errors" in data:
            error.errors = list(data["errors"])  # type: ignore[attr-defined]
        return error
    vendor = data.get("answer")
    return Accepted(
        event_id=data["id"],
        topics=data["topics"],
        status=data["status"],
        code=data["code"],
        event_ids=data["ids"],
        answer=None if vendor is None else Answer(vendor[0], vendor[1]),
    )
