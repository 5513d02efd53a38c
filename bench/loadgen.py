"""Load generators: wrk with a Lua script that reports exact figures, or a slow Python fallback.

A target either sends one fixed request, or cycles through a file of bearer tokens, one
per request, so that every request costs the receiver a full signature check.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import math
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import BenchError

# wrk calls done() once at the end; it prints one JSON line with exact counts and
# microsecond percentiles, so nothing has to be parsed out of wrk's rounded text.
_LUA = """-- written by bench/run.py: one POST, and a machine-readable summary at the end
wrk.method = "POST"
wrk.body = @BODY@
wrk.headers["Content-Type"] = "application/json"
@HEADERS@
@TOKENS@
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_SUMMARY {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

# Each thread starts its own share of the way into the list, so two uses of one token are
# always about a whole list apart, however many threads there are.
_LUA_TOKENS = """local tokens, index, counter = {}, 0, 0
function setup(thread)
  thread:set("share", counter)
  counter = counter + 1
end
function init(args)
  for line in io.lines(@PATH@) do tokens[#tokens + 1] = line end
  index = math.floor((share or 0) * #tokens / @THREADS@)
end
function request()
  index = index % #tokens + 1
  wrk.headers["Authorization"] = "Bearer " .. tokens[index]
  return wrk.format(nil, nil, nil, nil)
end
"""


@dataclass(frozen=True)
class Request:
    """What a target is sent: the same body and headers every time, or one token of a file each time."""

    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    tokens: Path | None = None  # one bearer token a line, cycled through

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


def lua_script(request: Request, threads: int) -> str:
    headers = "\n".join(
        f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}"  # spaces: `[[[` would open a long string
        for k, v in request.headers.items()
        if k.lower() != "content-type"
    )
    tokens = ""
    if request.tokens is not None:
        tokens = _LUA_TOKENS.replace("@PATH@", _lua_string(str(request.tokens))).replace("@THREADS@", str(threads))
    return (
        _LUA.replace("@BODY@", _lua_string(request.body.decode()))
        .replace("@HEADERS@", headers)
        .replace("@TOKENS@", tokens)
    )


def run_wrk(
    wrk: str, request: Request, workdir: Path, label: str, *, threads: int, connections: int, seconds: float,
    timeout: float,
) -> LoadResult:  # fmt: skip
    """Run wrk once against ``request``; its script and raw output are kept next to the server logs."""
    script = workdir / f"{label}.lua"
    script.write_text(lua_script(request, threads))
    argv = [
        wrk, "--threads", str(threads), "--connections", str(connections), "--duration", f"{seconds:g}s",
        "--timeout", f"{timeout:g}s", "--latency", "--script", str(script), request.url,
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + timeout + 60)
    (workdir / f"{label}.wrk.txt").write_text(result.stdout + result.stderr)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_SUMMARY ")), None)
    if result.returncode != 0 or line is None:
        msg = f"wrk failed (exit {result.returncode}) against {request.url}:\n{result.stdout}{result.stderr}"
        raise BenchError(msg)
    s: dict[str, Any] = json.loads(line.removeprefix("BENCH_SUMMARY "))
    if s["duration_us"] < 0.9 * seconds * 1e6:  # wrk stops early, with a normal summary, on SIGINT
        msg = f"wrk stopped after {s['duration_us'] / 1e6:.1f} s of {seconds:g} s; was it interrupted?"
        raise BenchError(msg)
    return LoadResult(
        requests=int(s["requests"]),
        non_2xx=int(s["status"]),  # wrk counts statuses above 399; these apps never answer 1xx/3xx
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


def http_client() -> Any:
    """The dev group's async HTTP client: httpx2 now, httpx before it; both share one API."""
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            return importlib.import_module(name)
    raise BenchError("neither wrk nor httpx2/httpx is available: run `uv sync` or install wrk")


async def python_load(request: Request, connections: int, seconds: float, request_timeout: float) -> LoadResult:
    """The fallback: ``connections`` keep-alive clients in a closed loop, per-request latency."""
    httpx = http_client()
    tokens = request.tokens.read_text().split() if request.tokens is not None else []
    latencies: list[float] = []
    non_2xx = errors = sent_count = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout) as client:
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            nonlocal non_2xx, errors, sent_count
            while time.perf_counter() < stop_at:
                headers = request.headers
                if tokens:
                    headers = {**headers, "Authorization": f"Bearer {tokens[sent_count % len(tokens)]}"}
                sent_count += 1
                sent = time.perf_counter()
                try:
                    response = await client.post(request.url, content=request.body, headers=headers)
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
