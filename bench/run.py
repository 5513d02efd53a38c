"""Benchmark the receiver against its floors, with a real Kafka broker, in one run.

Not a test: it prints figures. One run starts a single-node KRaft broker
(``tests/support/kafka_broker.py``) and every target in ``bench/targets.py`` (a raw ASGI
hello, a bare Starlette app, a Python floor that awaits one aiokafka ``acks=all`` send,
and the receiver four ways: full path, audit off, a token-cache miss on every request,
two workers). It loads them with wrk in interleaved rounds, reports the medians, counts
the records per produce batch in the broker's segments, and checks that Kafka holds a
record for every 2xx answer. Everything listens on 127.0.0.1 and is stopped on exit,
Ctrl-C or error.

    uv run python bench/run.py --rounds 3 --duration 10
    uv run python bench/run.py --targets bare,receiver --profile receiver
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import kafka_records
import loadgen
import pyspy
import targets
from servers import BenchError, http_call, wait_for

from tests.support import kafka_broker, redis_server  # the editable install puts the repository root on sys.path

if TYPE_CHECKING:
    from types import FrameType

PROFILES = targets.ROOT / ".cache" / "bench"


def say(text: str = "") -> None:
    print(text, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl-C, so the finally blocks stop every process we started."""
    del signum, frame
    raise KeyboardInterrupt


@dataclass(frozen=True)
class Measurement:
    """One measured run of one target: the load generator's figures and the server tree's CPU."""

    load: loadgen.LoadResult
    cpu_us: float  # server CPU per answered request

    @classmethod
    def median(cls, runs: list[Measurement]) -> dict[str, float]:
        return {
            "rps": statistics.median(r.load.rps for r in runs),
            "p50": statistics.median(r.load.p50_ms for r in runs),
            "p99": statistics.median(r.load.p99_ms for r in runs),
            "cpu": statistics.median(r.cpu_us for r in runs),
            "low": min(r.load.rps for r in runs),
            "high": max(r.load.rps for r in runs),
        }


def smoke(target: targets.Target) -> str:
    """One request before any load, so a misconfigured run fails with the server's own answer."""
    request = target.request
    status, answer = http_call(request.port, "POST", request.path, request.body, request.headers)
    text = answer.decode(errors="replace")
    if status != 200:
        msg = f"{target.key}: POST {request.path} answered {status}: {text[:500]}"
        raise BenchError(msg)
    target.answered_2xx["smoke"] = 1
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


class Runner:
    """Runs the load generator against a target and measures the CPU its server tree used meanwhile."""

    def __init__(
        self, args: argparse.Namespace, wrk: str | None, workdir: Path, all_targets: list[targets.Target]
    ) -> None:
        self.args = args
        self.wrk = wrk
        self.workdir = workdir
        self.all_targets = all_targets

    def run(self, target: targets.Target, phase: str, seconds: float) -> Measurement:
        server = target.server
        cpu_before = server.cpu_seconds()
        if self.wrk is not None:
            result = loadgen.run_wrk(
                self.wrk, target.request, self.workdir, f"{target.key}-{phase}", threads=self.args.threads,
                connections=self.args.connections, seconds=seconds, timeout=self.args.timeout,
            )  # fmt: skip
        else:
            result = asyncio.run(loadgen.python_load(target.request, self.args.connections, seconds, self.args.timeout))
        cpu = server.cpu_seconds() - cpu_before
        for other in self.all_targets:
            other.server.check_alive()
        target.answered_2xx[phase] = result.ok
        return Measurement(result, cpu / result.requests * 1e6 if result.requests else float("nan"))


def rounds(runner: Runner, chosen: list[targets.Target], args: argparse.Namespace) -> dict[str, list[Measurement]]:
    """Every target once a round, each round starting one target later, so none always follows the same one.

    Only the first round warms up: the servers stay up between rounds, so the caches,
    the producers' connections and metadata, and the allocator stay as warm-up left them;
    each run opens fresh connections anyway.
    """
    measured: dict[str, list[Measurement]] = {t.key: [] for t in chosen}
    for index in range(args.rounds):
        shift = index % len(chosen)
        order = chosen[shift:] + chosen[:shift]
        say(f"round {index + 1}/{args.rounds}: {', '.join(t.key for t in order)}")
        for target in order:
            if index == 0 and args.warmup > 0:
                runner.run(target, "warmup", args.warmup)
            m = runner.run(target, f"round{index + 1}", args.duration)
            measured[target.key].append(m)
            trouble = f"  {m.load.non_2xx} non-2xx, {m.load.socket_errors} socket errors" if not clean(m) else ""
            say(
                f"  {target.key:<17} {m.load.rps:>8.0f} req/s  p50 {m.load.p50_ms:6.2f} ms"
                f"  p99 {m.load.p99_ms:7.2f} ms  {m.cpu_us:6.0f} us CPU/req{trouble}"
            )
    return measured


def clean(m: Measurement) -> bool:
    return not (m.load.non_2xx or m.load.socket_errors)


def profile(runner: Runner, target: targets.Target, seconds: float) -> Path:
    """One more measured run, not in the medians (py-spy slows the server), with py-spy attached."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    out = PROFILES / f"profile-{target.key}-{time.strftime('%Y%m%d-%H%M%S')}.speedscope.json"
    spy = pyspy.start(target.server.pid, seconds, out)
    try:
        time.sleep(0.5)  # let py-spy attach before the load starts
        m = runner.run(target, "profiled", seconds)
    finally:
        pyspy.finish(spy, out, timeout=seconds + 60)
    say(f"profiled run of {target.key} (py-spy attached, not in the medians): {m.load.rps:.0f} req/s")
    total, top = pyspy.top_functions(out)
    if not total:
        say("py-spy took no samples of a busy thread")
        return out
    say(f"top {len(top)} functions by own samples ({total} samples over all threads and processes):")
    for name, samples in top:
        say(f"  {100 * samples / total:5.1f}%  {samples:>6}  {name}")
    return out


def report(
    chosen: list[targets.Target], measured: dict[str, list[Measurement]], batches: dict[str, kafka_records.Batches]
) -> dict[str, dict[str, float]]:
    medians = {key: Measurement.median(runs) for key, runs in measured.items()}
    header = (
        f"{'target':<17} {'req/s':>8} {'(min-max)':>13} {'p50 ms':>7} {'p99 ms':>8} {'CPU us/req':>10} {'rec/batch':>9}"
    )
    say(header)
    say("-" * len(header))
    for target in chosen:
        m = medians[target.key]
        topic = target.spec.topic
        per_batch = f"{batches[topic].mean:9.2f}" if topic in batches else f"{'-':>9}"
        spread = f"({m['low']:.0f}-{m['high']:.0f})"
        say(
            f"{target.key:<17} {m['rps']:>8.0f} {spread:>13} {m['p50']:>7.2f} {m['p99']:>8.2f} {m['cpu']:>10.0f}"
            f" {per_batch}"
        )
    say()
    ratios = [
        ("receiver / bare, throughput", "receiver", "bare", "rps"),
        ("receiver / floor, CPU per request", "receiver", "floor", "cpu"),
        ("receiver / floor, throughput", "receiver", "floor", "rps"),
        ("2 workers / 1 worker, throughput", "receiver-2w", "receiver", "rps"),
        ("bare / hello, throughput", "bare", "hello", "rps"),
        ("budget in Redis / in process, throughput", "receiver-redis", "receiver-budget", "rps"),
    ]
    for label, top, bottom, figure in ratios:
        if top in medians and bottom in medians and medians[bottom][figure]:
            say(f"{label}: {medians[top][figure] / medians[bottom][figure]:.2f}x")
    if "receiver-redis" in medians and "receiver-budget" in medians:
        redis, local = medians["receiver-redis"], medians["receiver-budget"]
        say(
            f"budget in Redis against in process: CPU {redis['cpu'] - local['cpu']:+.0f} us per request,"
            f" p50 {redis['p50'] - local['p50']:+.2f} ms"
        )
    return medians


def kafka_check(bootstrap: str, chosen: list[targets.Target], event_id: str) -> bool:
    """Every 2xx answer of a target with a topic has its record there: smoke, warm-up, rounds, profile."""
    ok = True
    for target in chosen:
        topic = target.spec.topic
        if topic is None:
            continue
        # The receiver derives the event id from source, callback and body, and every request
        # posts the same body, so every record of a receiver target carries the smoke's id.
        marker = targets.BODY if target.spec.kind == "floor" else f'"id":"{event_id}"'.encode()
        count = asyncio.run(kafka_records.count_records(bootstrap, topic, marker))
        answered = sum(target.answered_2xx.values())
        good = count.matching >= answered and count.by_offsets >= answered
        ok = ok and good
        verdict = "OK" if good else "FAILED, fewer records than 2xx answers"
        say(
            f"kafka {topic}: {count.matching} matching of {count.read} read ({count.by_offsets} by offsets)"
            f" >= {answered} 2xx answers: {verdict}"
        )
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per target and round (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per target, first round (3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: the machine has 2 cores)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (10)")
    parser.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for readiness (90)")
    parser.add_argument("--targets", default=",".join(targets.KEYS), help=f"comma-separated subset of {targets.KEYS}")
    parser.add_argument("--profile", choices=targets.KEYS, help="one more run of this target under py-spy")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, keys, logs, broker data)")
    args = parser.parse_args(argv)
    args.chosen = [key.strip() for key in args.targets.split(",") if key.strip()]
    unknown = sorted(set(args.chosen) - set(targets.KEYS))
    if unknown or not args.chosen:
        parser.error(f"--targets: unknown {unknown}; choose from {', '.join(targets.KEYS)}")
    if args.profile and args.profile not in args.chosen:
        parser.error("--profile names a target that --targets leaves out")
    if args.connections < args.threads or args.threads < 1 or args.rounds < 1:
        parser.error("--connections must be at least --threads, and --threads and --rounds at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_all(chosen: list[targets.Target], timeout: float) -> None:
    for target in chosen:
        target.server.start()
    for target in chosen:
        request = target.request
        if target.spec.kind == "receiver":
            wait_for(target.server, request.port, method="GET", path="/readyz", body=None, timeout=timeout)
        else:  # a POST: the floor's first one also creates its topic
            wait_for(target.server, request.port, method="POST", path=request.path, body=request.body, timeout=timeout)


def bench(
    args: argparse.Namespace,
    workdir: Path,
    broker: kafka_broker.Broker,
    redis: redis_server.RedisServer,
    chosen: list[targets.Target],
) -> int:
    """The run itself; the caller owns cleanup, so every exit path here may simply raise."""
    wrk = None if args.loadgen == "python" else ensure_wrk()
    if wrk is None and args.loadgen == "wrk":
        raise BenchError("--loadgen wrk, but wrk is not available")
    if wrk is not None:
        generator = f"wrk {loadgen.wrk_version(wrk)}, {args.threads} thread(s)"
    else:
        generator = f"python {loadgen.http_client().__name__} (fallback; the generator itself limits throughput)"
    v = versions()
    say(
        f"settings: {generator}, {args.connections} connections, {args.rounds} round(s) of {args.duration:g} s"
        f" per target, {args.warmup:g} s warm-up in the first, request timeout {args.timeout:g} s"
    )
    say(
        f"stack: kafka {kafka_broker.KAFKA_VERSION} (KRaft single node), python {platform.python_version()},"
        f" uvicorn {v['uvicorn']} (uvloop {v['uvloop']}, httptools {v['httptools']}, no access log),"
        f" starlette {v['starlette']}, aiokafka {v['aiokafka']}; {os.cpu_count()} CPU cores shared by all"
    )
    say(f"load average at start: {_load_average()}")
    say(f"work dir: {workdir}")

    started = time.monotonic()
    broker.start()
    say(f"kafka serving on {broker.bootstrap_servers} ({time.monotonic() - started:.1f} s)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}  # the YAML alone decides
    specs = [spec for spec in targets.SPECS if spec.key in args.chosen]
    redis_url = None
    if any(spec.redis for spec in specs):
        redis.workdir.mkdir(parents=True, exist_ok=True)
        redis_url = redis.start().url
        say(f"redis serving on {redis_url}")
    chosen.extend(targets.build(specs, workdir, broker.bootstrap_servers, env, kafka_broker.free_port, redis_url))
    start_all(chosen, args.ready_timeout)
    event_id = ""
    for target in chosen:
        answer = smoke(target)
        if target.spec.kind == "receiver":
            event_id = str(json.loads(answer)["id"])
    say(f"ready and answering: {', '.join(f'{t.key} :{t.request.port}' for t in chosen)}")

    runner = Runner(args, wrk, workdir, chosen)
    measured = rounds(runner, chosen, args)
    profile_path = None
    if args.profile:
        profile_path = profile(runner, next(t for t in chosen if t.key == args.profile), args.duration)

    # Stop the servers before counting: their shutdown flushes whatever was still in flight.
    for target in chosen:
        target.server.stop()
    say()
    ok = kafka_check(broker.bootstrap_servers, chosen, event_id)
    topics = [t.spec.topic for t in chosen if t.spec.topic is not None]
    batches = kafka_records.batch_sizes(kafka_broker.fetch(), broker.workdir / "data", topics)
    say()
    say(f"medians of {args.rounds} round(s); rec/batch: records per produce batch in the topic's segments, all runs")
    report(chosen, measured, batches)
    say(f"load average at end: {_load_average()}")
    if profile_path is not None:
        say(f"profile: {profile_path}")
    problems = sum(not clean(m) for runs in measured.values() for m in runs)
    if problems:
        where = workdir if args.keep else "the logs (rerun with --keep)"
        say(f"note: {problems} measured run(s) had non-2xx answers or socket errors; see {where}")
    return 0 if ok and not problems else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored (a background job), and
    # SIGTERM does the same, so the finally block below always stops what was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
    broker = kafka_broker.Broker(workdir=workdir / "kafka")
    redis = redis_server.RedisServer(workdir=workdir / "redis")
    chosen: list[targets.Target] = []
    code = 1
    try:
        code = bench(args, workdir, broker, redis, chosen)
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
        for target in chosen:
            with contextlib.suppress(Exception):
                target.server.stop()
        with contextlib.suppress(Exception):
            redis.stop()
        with contextlib.suppress(Exception):
            if args.keep:
                broker.stop()
            else:
                broker.cleanup()
        if args.keep:
            say(f"kept {workdir} (configs, keys, tokens, server logs, wrk scripts and output, broker data)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
