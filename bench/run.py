"""Benchmark the receiver's callback path against a bare Starlette app, with a real Kafka broker.

Not a test: it prints figures. One run starts a single-node KRaft broker
(``tests/support/kafka_broker.py``), the receiver (JWT auth, validation, CloudEvent, Kafka
``acks=all``) and a bare Starlette app served by uvicorn with the same options, loads
each with wrk (or a Python fallback), and finally checks with a consumer that Kafka
holds a record for every 2xx the receiver answered. Everything listens on 127.0.0.1
and is stopped on exit, Ctrl-C or error.

    uv run python bench/run.py --connections 32 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.support import kafka_broker  # the editable install puts the repository root on sys.path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent

if TYPE_CHECKING:
    from types import FrameType

SOURCE = "customer47"
DOMAIN = "customer47.prod-eu-north-1.iotcomms.io"
TOPIC_PREFIX = "bench"
TOPIC = f"{TOPIC_PREFIX}.iotcomms.message"
CALLBACK_PATH = f"/v1/callbacks/{SOURCE}/message"
BARE_PATH = "/echo"
BODY = (
    b'{"from":"sip:alice@customer47.prod-eu-north-1.iotcomms.io","to":"sip:bob@example.com",'
    b'"contentType":"text/plain","body":"hello","replyId":"r-123"}'
)
BARE_NAME = "bare starlette"
RECEIVER_NAME = "receiver (jwt+validate+kafka ack)"
KAFKA_READ_SECONDS = 60.0  # bound on reading the topic back at the end

# wrk calls done() once at the end; it prints one JSON line with exact counts and
# microsecond percentiles, so nothing has to be parsed out of wrk's rounded text.
_LUA = """-- written by bench/run.py: one fixed POST, and a machine-readable summary at the end
wrk.method = "POST"
wrk.body = @BODY@
wrk.headers["Content-Type"] = "application/json"
@AUTH@
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_SUMMARY {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


class BenchError(RuntimeError):
    """The benchmark could not run; the message says which step failed and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl-C, so the finally blocks stop every process we started."""
    del signum, frame
    raise KeyboardInterrupt


@dataclass(frozen=True)
class Target:
    """One endpoint under load: where it is and the exact request sent to it."""

    name: str
    port: int
    path: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


@dataclass(frozen=True)
class LoadResult:
    """What one load-generator run measured; ``requests`` counts answered requests."""

    requests: int
    non_2xx: int
    socket_errors: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class Server:
    """A uvicorn process in its own session, so Ctrl-C reaches only us and we stop it in order."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            msg = f"{self.name} exited with status {self.process.returncode}; its log ends:\n{self.tail()}"
            raise BenchError(msg)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM lets uvicorn run the lifespan shutdown (the receiver flushes its producer)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection; the standard library keeps this independent of the app."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(server: Server, port: int, *, method: str, path: str, body: bytes | None, timeout: float) -> None:
    """Poll until ``method path`` answers 200: the receiver's /readyz needs a connected producer."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            status, answer = http_call(port, method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last = f"{status} {answer.decode(errors='replace')[:300]}"
        time.sleep(0.25)
    msg = f"{server.name} was not ready within {timeout:.0f}s ({method} {path}: {last}); log:\n{server.tail()}"
    raise BenchError(msg)


def smoke(target: Target) -> str:
    """One request before any load, so a misconfigured run fails with the server's own answer."""
    status, answer = http_call(target.port, "POST", target.path, BODY, target.headers)
    text = answer.decode(errors="replace")
    if status != 200:
        msg = f"{target.name}: POST {target.path} answered {status}: {text[:500]}"
        raise BenchError(msg)
    return text


def versions() -> dict[str, str]:
    out = {}
    for package in ("uvicorn", "starlette", "uvloop", "httptools", "aiokafka"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def ensure_wrk() -> str | None:
    """wrk's path, installing the Debian package when missing; None means use the Python fallback."""
    found = shutil.which("wrk")
    if found is not None:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        say("wrk is not installed and cannot be installed here (needs apt-get as root)")
        return None
    say("installing wrk with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True, env=env, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        say(f"apt-get could not install wrk ({exc}); using the Python load generator")
        return None
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False, timeout=10)
    match = re.search(r"wrk (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal: no escaping, whatever the token or body holds."""
    level = 0
    while "]" + "=" * level + "]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def run_wrk(
    wrk: str, target: Target, workdir: Path, label: str, *, threads: int, connections: int, seconds: float,
    timeout: float,
) -> LoadResult:  # fmt: skip
    """Run wrk once against ``target``; its raw output is kept next to the server logs."""
    auth = "\n".join(
        f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}"  # spaces: `[[[` would open a long string
        for k, v in target.headers.items()
        if k.lower() != "content-type"
    )
    script = workdir / f"{label}.lua"
    script.write_text(_LUA.replace("@BODY@", _lua_string(BODY.decode())).replace("@AUTH@", auth))
    argv = [
        wrk, "--threads", str(threads), "--connections", str(connections), "--duration", f"{seconds:g}s",
        "--timeout", f"{timeout:g}s", "--latency", "--script", str(script), target.url,
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + timeout + 60)
    (workdir / f"{label}.wrk.txt").write_text(result.stdout + result.stderr)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_SUMMARY ")), None)
    if result.returncode != 0 or line is None:
        msg = f"wrk failed (exit {result.returncode}) against {target.url}:\n{result.stdout}{result.stderr}"
        raise BenchError(msg)
    s: dict[str, Any] = json.loads(line.removeprefix("BENCH_SUMMARY "))
    if s["duration_us"] < 0.9 * seconds * 1e6:  # wrk stops early, with a normal summary, on SIGINT
        msg = f"wrk stopped after {s['duration_us'] / 1e6:.1f} s of {seconds:g} s; was it interrupted?"
        raise BenchError(msg)
    return LoadResult(
        requests=int(s["requests"]),
        non_2xx=int(s["status"]),  # wrk counts statuses above 399; this app never answers 1xx/3xx
        socket_errors=int(s["connect"] + s["read"] + s["write"] + s["timeout"]),
        seconds=s["duration_us"] / 1e6,
        p50_ms=s["p50_us"] / 1000,
        p90_ms=s["p90_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        max_ms=s["max_us"] / 1000,
    )


def _percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _http_client() -> Any:
    """The dev group's async HTTP client: httpx2 now, httpx before it; both share one API."""
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            return importlib.import_module(name)
    raise BenchError("neither wrk nor httpx2/httpx is available: run `uv sync` or install wrk")


async def _python_load(target: Target, connections: int, seconds: float, request_timeout: float) -> LoadResult:
    """The fallback: ``connections`` keep-alive clients in a closed loop, per-request latency."""
    httpx = _http_client()

    latencies: list[float] = []
    non_2xx = 0
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout) as client:
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            nonlocal non_2xx, errors
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                try:
                    response = await client.post(target.url, content=BODY, headers=target.headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                if not 200 <= response.status_code < 300:
                    non_2xx += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return LoadResult(
        requests=len(ordered),
        non_2xx=non_2xx,
        socket_errors=errors,
        seconds=elapsed,
        p50_ms=_percentile(ordered, 50) * 1000,
        p90_ms=_percentile(ordered, 90) * 1000,
        p99_ms=_percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] if ordered else 0.0) * 1000,
    )


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partition ids from the cluster metadata; none when the topic does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - only needed at the very end

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="receiver-bench")
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"] for t in described if t["topic"] == topic and t["error_code"] == 0 for p in t["partitions"]
    )


async def _kafka_counts(bootstrap: str, topic: str, event_id: str) -> tuple[int, int, int]:
    """(records by offsets, records read, records carrying ``event_id``) in ``topic``, from the start.

    The receiver derives the event id from source, callback and body, so every record of
    this benchmark, which posts one fixed body, carries the id the smoke request got back.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 - only needed at the very end

    async with asyncio.timeout(KAFKA_READ_SECONDS):
        tps = [TopicPartition(topic, p) for p in await _partitions(bootstrap, topic)]
        if not tps:
            return 0, 0, 0
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="receiver-bench",
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            first = await consumer.beginning_offsets(tps)
            last = await consumer.end_offsets(tps)
            by_offsets = sum(last[tp] - first[tp] for tp in tps)
            for tp in tps:  # an explicit offset, set now: no background reset can race the reads below
                consumer.seek(tp, first[tp])
            read = matching = 0
            expected = f'"id":"{event_id}"'.encode()  # structured mode: the id is in the envelope
            pending = [tp for tp in tps if last[tp] > first[tp]]
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=20000)
                for records in batch.values():
                    for record in records:
                        read += 1
                        matching += expected in record.value
                pending = [tp for tp in pending if await consumer.position(tp) < last[tp]]
            return by_offsets, read, matching
        finally:
            await consumer.stop()


def make_keys_and_token(workdir: Path) -> tuple[Path, str]:
    """Key pair and token come from the receiver's own CLI, exactly as an operator would make them."""
    keys = workdir / "keys"
    cli = [sys.executable, "-m", "receiver"]
    subprocess.run([*cli, "keygen", "--out", str(keys)], check=True, capture_output=True, timeout=60, cwd=ROOT)
    token = subprocess.run(
        [*cli, "token", "--key", str(keys / "private.pem"), "--sub", DOMAIN, "--ttl", "3000"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    ).stdout.strip()
    if token.count(".") != 2:
        msg = f"`receiver token` printed no JWT: {token[:200]!r}"
        raise BenchError(msg)
    return keys / "public.pem", token


def write_config(workdir: Path, port: int, bootstrap: str, public_key: Path) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": TOPIC_PREFIX, "topics": {"create": True}},
        "sources": {
            SOURCE: {
                "kind": "iotcomms",
                "domain": DOMAIN,
                "auth": [{"type": "jwt", "algorithms": ["RS256"], "public_keys": [str(public_key)]}],
            }
        },
    }
    path = workdir / "receiver.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cpu_seconds(server: Server) -> float:
    """User + system CPU the server process has used so far (Linux /proc), for cost per request."""
    if server.process is None:
        return 0.0
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_table(results: dict[str, LoadResult]) -> None:
    header = (
        f"{'':<34} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'answered':>9} {'non-2xx':>8} {'sock err':>8}"
    )
    say(header)
    say("-" * len(header))
    for name, r in results.items():
        say(
            f"{name:<34} {r.rps:>9.1f} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
            f" {r.requests:>9} {r.non_2xx:>8} {r.socket_errors:>8}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (32)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per target (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first (3)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: the machine has 2 cores)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (10)")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for /readyz (60)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, keys, logs, broker data)")
    args = parser.parse_args(argv)
    if args.connections < args.threads or args.threads < 1:
        parser.error("--connections must be at least --threads, and --threads at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def bench(args: argparse.Namespace, workdir: Path, broker: kafka_broker.Broker, servers: list[Server]) -> int:
    """The run itself; the caller owns cleanup, so every exit path here may simply raise."""
    wrk = None if args.loadgen == "python" else ensure_wrk()
    if wrk is None and args.loadgen == "wrk":
        raise BenchError("--loadgen wrk, but wrk is not available")
    if wrk is not None:
        loadgen = f"wrk {wrk_version(wrk)}, {args.threads} thread(s)"
    else:
        loadgen = f"python {_http_client().__name__} (fallback; the generator itself limits throughput)"
    v = versions()
    say(
        f"settings: {loadgen}, {args.connections} connections, {args.duration:g} s measured after"
        f" {args.warmup:g} s warm-up, request timeout {args.timeout:g} s"
    )
    say(
        f"stack: kafka {kafka_broker.KAFKA_VERSION} (KRaft single node), python {platform.python_version()},"
        f" uvicorn {v['uvicorn']} (uvloop {v['uvloop']}, httptools {v['httptools']}, 1 worker,"
        " no access log),"
        f" starlette {v['starlette']}, aiokafka {v['aiokafka']}; {os.cpu_count()} CPU cores shared by all"
    )
    say(f"work dir: {workdir}")

    started = time.monotonic()
    say("starting kafka ...")
    broker.start()
    say(f"kafka serving on {broker.bootstrap_servers} ({time.monotonic() - started:.1f} s)")

    public_key, token = make_keys_and_token(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}  # the YAML alone decides
    receiver_port, bare_port = kafka_broker.free_port(), kafka_broker.free_port()
    config = write_config(workdir, receiver_port, broker.bootstrap_servers, public_key)
    receiver = Server(
        RECEIVER_NAME,
        [sys.executable, "-m", "receiver", "serve", "--config", str(config)],
        workdir / "receiver.log",
        env,
    )
    bare = Server(
        BARE_NAME,
        [
            sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(BENCH),
            "--host", "127.0.0.1", "--port", str(bare_port), "--workers", "1", "--log-level", "warning",
            "--no-access-log", "--no-proxy-headers", "--no-server-header",
        ],
        workdir / "bare.log",
        env,
    )  # fmt: skip
    servers.extend([receiver, bare])
    receiver.start()
    bare.start()
    wait_for(bare, bare_port, method="POST", path=BARE_PATH, body=BODY, timeout=args.ready_timeout)
    wait_for(receiver, receiver_port, method="GET", path="/readyz", body=None, timeout=args.ready_timeout)
    say(f"receiver ready on 127.0.0.1:{receiver_port}, bare app on 127.0.0.1:{bare_port}")

    targets = [
        Target(BARE_NAME, bare_port, BARE_PATH, {"Content-Type": "application/json"}),
        Target(
            RECEIVER_NAME,
            receiver_port,
            CALLBACK_PATH,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ),
    ]
    smoke(targets[0])
    answer = smoke(targets[1])
    event_id = str(json.loads(answer)["id"])
    say(f"smoke: receiver answered 200 {answer}")
    receiver_2xx = {"smoke": 1}

    results: dict[str, LoadResult] = {}
    cpu_per_request: dict[str, float] = {}
    for index, target in enumerate(targets):
        label = "receiver" if target.name == RECEIVER_NAME else "bare"
        runs = [("warmup", args.warmup)] if args.warmup > 0 else []
        runs.append(("measured", args.duration))
        for phase, seconds in runs:
            say(f"[{index + 1}/{len(targets)}] {target.name}: {phase} {seconds:g} s ...")
            server_under_load = receiver if label == "receiver" else bare
            cpu_before = cpu_seconds(server_under_load)
            if wrk is not None:
                result = run_wrk(
                    wrk, target, workdir, f"{label}-{phase}", threads=args.threads,
                    connections=args.connections, seconds=seconds, timeout=args.timeout,
                )  # fmt: skip
            else:
                result = asyncio.run(_python_load(target, args.connections, seconds, args.timeout))
            for server in servers:
                server.check_alive()
            if label == "receiver":
                receiver_2xx[phase] = result.ok
            if phase == "measured":
                results[target.name] = result
                cpu = cpu_seconds(server_under_load) - cpu_before
                cpu_per_request[target.name] = cpu / result.requests * 1e6 if result.requests else float("nan")
            if result.non_2xx or result.socket_errors:
                say(f"    {result.non_2xx} non-2xx answers, {result.socket_errors} socket errors")

    # Stop the receiver before counting: its shutdown flushes whatever requests were still in flight.
    receiver.stop()
    bare.stop()
    by_offsets, read, matching = asyncio.run(_kafka_counts(broker.bootstrap_servers, TOPIC, event_id))

    bare_r, recv_r = results[BARE_NAME], results[RECEIVER_NAME]
    say()
    print_table(results)
    say()
    tput = recv_r.rps / bare_r.rps if bare_r.rps else float("nan")
    p50 = recv_r.p50_ms / bare_r.p50_ms if bare_r.p50_ms else float("nan")
    say(f"receiver / bare: throughput {tput:.2f}x, p50 latency {p50:.2f}x")
    cost_bare, cost_recv = cpu_per_request[BARE_NAME], cpu_per_request[RECEIVER_NAME]
    say(
        f"server CPU per request: bare {cost_bare:.0f} us, receiver {cost_recv:.0f} us"
        f" (cost ratio {cost_recv / cost_bare:.2f}x; the broker's own CPU is not counted)"
    )
    say()
    answered = sum(receiver_2xx.values())
    parts = " + ".join(f"{k} {n}" for k, n in receiver_2xx.items())
    say(f"kafka topic {TOPIC}: {read} records read, {by_offsets} by offsets, {matching} with id {event_id}")
    say(f"receiver 2xx answers counted by the load generator: {answered} ({parts})")
    ok = matching >= answered and by_offsets >= answered
    verdict = "OK, every 2xx answer has its record" if ok else "FAILED, fewer records than 2xx answers"
    say(f"kafka check: {verdict} ({matching} records >= {answered} answers: {ok})")
    problems = recv_r.non_2xx + recv_r.socket_errors + bare_r.non_2xx + bare_r.socket_errors
    if problems:
        where = workdir if args.keep else "the logs (rerun with --keep)"
        say(f"note: {problems} non-2xx answers or socket errors during the measured runs; see {where}")
    return 0 if ok and not problems else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored (a background job), and
    # SIGTERM does the same, so the finally block below always stops what was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    broker = kafka_broker.Broker(workdir=workdir / "kafka")
    servers: list[Server] = []
    code = 1
    try:
        code = bench(args, workdir, broker, servers)
    except KeyboardInterrupt:
        say("\ninterrupted; stopping everything")
        code = 130
    except (BenchError, kafka_broker.BrokerError) as exc:
        say(f"benchmark failed: {exc}")
    except subprocess.CalledProcessError as exc:
        say(f"benchmark failed: {exc}\n{exc.stdout or ''}{exc.stderr or ''}")
    except Exception:
        say("benchmark failed with an unexpected error:")
        traceback.print_exc(file=sys.stdout)
    finally:
        # A second Ctrl-C must not cut cleanup short; every step below is bounded in time.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        with contextlib.suppress(Exception):
            if args.keep:
                broker.stop()
            else:
                broker.cleanup()
        if args.keep:
            say(f"kept {workdir} (config, keys, server logs, wrk output, broker data)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
